import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
@testable import RouterCore
#if canImport(Glibc)
import Glibc
#endif

/// A bare TCP client, so a test can hang up in the middle of a response.
private struct RawHTTPConnection {
    let descriptor: Int32

    init(port: Int) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if result != 0 { throw POSIXError(.ECONNREFUSED) }
    }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, 0) }
    }

    /// Reads until `marker` has arrived (or the peer closes), on a thread of its own.
    func read(until marker: String) async -> String {
        await offThePool { blockingRead(until: marker) }
    }

    /// See `blockingSecondsUntilClosed`; on a thread of its own.
    func secondsUntilClosed(timeout: Double) async -> Double? {
        await offThePool { blockingSecondsUntilClosed(timeout: timeout) }
    }

    private func blockingRead(until marker: String) -> String {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !String(decoding: received, as: UTF8.self).contains(marker) {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received += buffer[0..<count]
        }
        return String(decoding: received, as: UTF8.self)
    }

    func close() { _ = Glibc.close(descriptor) }

    /// Reads (and drops) what arrives until the server closes the connection; the time that took,
    /// or nil if it was still open after `timeout`.
    private func blockingSecondsUntilClosed(timeout: Double) -> Double? {
        let started = ContinuousClock.now
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let left = timeout - (ContinuousClock.now - started).timeInterval
            if left <= 0 { return nil }
            var descriptorSet = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            if poll(&descriptorSet, 1, Int32(left * 1000)) > 0 {
                if recv(descriptor, &buffer, buffer.count, 0) <= 0 { return (ContinuousClock.now - started).timeInterval }
            }
        }
    }
}

/// Runs a blocking call on a new thread: a test's recv or poll must not hold one of the few
/// cooperative threads that the server under test runs on.
private func offThePool<Value: Sendable>(_ body: @escaping @Sendable () -> Value) async -> Value {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: body()) }.start()
    }
}

/// A live server over a scripted runner (5 ms a step) with Tessel's connection handlers.
private func withLiveServer(maxBatchedTokens: Int = 512, contextLength: Int = 1024, blockCount: Int = 300,
                            settings: HTTPServerSettings = HTTPServerSettings(),
                            _ body: @escaping @Sendable (Scheduler, ScriptedStepRunner, Int) async throws -> Void) async throws {
    let runner = ScriptedStepRunner(contextLength: contextLength, blockCount: blockCount, blockSize: 4, delay: .milliseconds(5))
    let scheduler = Scheduler(configuration: SchedulerConfiguration(maxBatchedTokens: maxBatchedTokens),
                              limits: SchedulerModelLimits(maxContextLength: contextLength, kvBlockCount: blockCount, kvBlockSize: 4))
    let model = ServedModel(name: "m", tokenizer: ByteTokenizer(), chatTemplate: nil, maxContextLength: contextLength,
                            vocabularySize: 258)
    let loop = StepLoop(scheduler: scheduler, runner: runner)
    let loopTask = Task { try await loop.run() }
    defer { loopTask.cancel() }
    let app = Application(router: OpenAIServer.makeRouter(endpoints: OpenAIEndpoints(model: model, scheduler: scheduler),
                                                          health: { true }),
                          server: OpenAIServer.server(settings: settings),
                          configuration: ApplicationConfiguration(address: .hostname("127.0.0.1", port: 0)))
    try await app.test(.live) { client in
        try await body(scheduler, runner, try #require(client.port))
    }
}

@Suite("Client disconnects")
struct DisconnectTests {
    @Test("a client hanging up mid-stream cancels its sequence and frees its KV blocks")
    func hangUpMidStream() async throws {
        try await withLiveServer { scheduler, runner, port in
            let connection = try RawHTTPConnection(port: port)
            let body = #"{"prompt":"hi","max_tokens":900,"stream":true}"#
            connection.send("POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            let start = await connection.read(until: "data: {")
            #expect(start.contains("text/event-stream"))
            #expect(await scheduler.statistics.running == 1)
            connection.close()
            for _ in 0..<400 {
                let statistics = await scheduler.statistics
                if statistics.running == 0, statistics.usedBlocks == 0 { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            let statistics = await scheduler.statistics
            #expect(statistics.running == 0)
            #expect(statistics.usedBlocks == 0)
            #expect(runner.steps.count < 400, "generation stopped long before max_tokens")
        }
    }

    /// Sends `body`, hangs up `after` it was sent, and checks the scheduler lets go of the
    /// request's sequences and blocks within a second, long before generation would have ended.
    private func hangUp(body: String, after delay: Duration, maxBatchedTokens: Int = 512) async throws {
        try await withLiveServer(maxBatchedTokens: maxBatchedTokens, contextLength: 4096, blockCount: 1100) { scheduler, runner, port in
            let connection = try RawHTTPConnection(port: port)
            connection.send("POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            // Hang up once the request has run for `delay` (the whole suite may be loading the machine).
            let sent = ContinuousClock.now
            while await scheduler.statistics.running == 0, ContinuousClock.now - sent < .seconds(10) {
                try await Task.sleep(for: .milliseconds(5))
            }
            try await Task.sleep(for: delay)
            #expect(await scheduler.statistics.running >= 1, "the request should be running when its client hangs up")
            connection.close()
            let closed = ContinuousClock.now
            var statistics = await scheduler.statistics
            while statistics.running + statistics.waiting > 0 || statistics.usedBlocks > 0,
                  ContinuousClock.now - closed < .seconds(3) {
                try await Task.sleep(for: .milliseconds(10))
                statistics = await scheduler.statistics
            }
            #expect(statistics.running == 0 && statistics.waiting == 0 && statistics.usedBlocks == 0)
            #expect(ContinuousClock.now - closed < .seconds(1), "let go after \(ContinuousClock.now - closed)")
            #expect(runner.steps.count < 300, "generation stopped long before its end")
        }
    }

    @Test("a non-streaming client hanging up during decode cancels its sequence within a second")
    func hangUpWaitingForJSON() async throws {
        try await hangUp(body: #"{"prompt":"hi","max_tokens":2000}"#, after: .milliseconds(300))
    }

    @Test("a client hanging up during a chunked prefill (non-streaming, streaming, n=4) is let go at the next step")
    func hangUpDuringPrefill() async throws {
        let prompt = String(repeating: "a", count: 3000)
        for options in [#""stream":false"#, #""stream":true"#, #""stream":false,"n":4"#] {
            try await hangUp(body: #"{"prompt":"\#(prompt)","max_tokens":100,\#(options)}"#, after: .milliseconds(200),
                             maxBatchedTokens: 8)
        }
    }

    @Test("connection clocks: idle keep-alive, headers from their first byte, body from the head; a long response is never cut")
    func connectionClocks() async throws {
        let settings = HTTPServerSettings(idleTimeout: .milliseconds(300), requestReadTimeout: .milliseconds(800))
        try await withLiveServer(settings: settings) { _, _, port in
            // Idle: nothing sent.
            let idle = try RawHTTPConnection(port: port)
            let idleSeconds = try #require(await idle.secondsUntilClosed(timeout: 3))
            #expect(idleSeconds >= 0.25 && idleSeconds < 2.5, "idle closed after \(idleSeconds)")
            idle.close()

            // Headers trickling a byte every 100 ms: activity does not extend the header clock.
            let slow = try RawHTTPConnection(port: port)
            let started = ContinuousClock.now
            // The trickle would last 10 s or more; the header clock must cut it long before.
            var closed = false
            for byte in ("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + String(repeating: "a", count: 100)).map(String.init) {
                slow.send(byte)
                if await slow.secondsUntilClosed(timeout: 0.1) != nil { closed = true; break }
            }
            let slowSeconds = (ContinuousClock.now - started).timeInterval
            #expect(closed && slowSeconds >= 0.7 && slowSeconds < 8, "trickled headers closed after \(slowSeconds)")
            slow.close()

            // A head whose body never completes.
            let stalled = try RawHTTPConnection(port: port)
            stalled.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\"")
            let stalledSeconds = try #require(await stalled.secondsUntilClosed(timeout: 3))
            #expect(stalledSeconds >= 0.7 && stalledSeconds < 3, "stalled body closed after \(stalledSeconds)")
            stalled.close()

            // A response that takes longer than both clocks (400 steps of 5 ms) arrives whole; then
            // the connection is idle again and closed by the keep-alive clock.
            let patient = try RawHTTPConnection(port: port)
            let body = #"{"prompt":"hi","max_tokens":400}"#
            patient.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            let answer = await patient.read(until: "\"usage\"")
            #expect(answer.hasPrefix("HTTP/1.1 200"))
            let afterSeconds = try #require(await patient.secondsUntilClosed(timeout: 3))
            #expect(afterSeconds < 2.5, "kept idle for \(afterSeconds)")
            patient.close()

            // The next request read before the last response's end was written (a client sends
            // as soon as it has the body; here both are sent at once): that end does not start
            // the idle clock under the long answer now owed.
            let eager = try RawHTTPConnection(port: port)
            eager.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                       + "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            let both = await eager.read(until: "\"usage\"")
            #expect(both.hasPrefix("HTTP/1.1 200") && both.components(separatedBy: "HTTP/1.1 200").count == 3,
                    "the second answer was cut: \(both.prefix(300))")
            eager.close()
        }
    }
}
