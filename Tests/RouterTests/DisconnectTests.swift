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

    /// Reads until `marker` has arrived (or the peer closes).
    func read(until marker: String) -> String {
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
}

@Suite("Client disconnects")
struct DisconnectTests {
    @Test("a client hanging up mid-stream cancels its sequence and frees its KV blocks")
    func hangUpMidStream() async throws {
        let runner = ScriptedStepRunner(contextLength: 1024, blockCount: 300, blockSize: 4, delay: .milliseconds(5))
        let scheduler = Scheduler(configuration: SchedulerConfiguration(),
                                  limits: SchedulerModelLimits(maxContextLength: 1024, kvBlockCount: 300, kvBlockSize: 4))
        let model = ServedModel(name: "m", tokenizer: ByteTokenizer(), chatTemplate: nil, maxContextLength: 1024,
                                vocabularySize: 258)
        let loop = StepLoop(scheduler: scheduler, runner: runner)
        let loopTask = Task { try await loop.run() }
        defer { loopTask.cancel() }
        let app = Application(router: OpenAIServer.makeRouter(endpoints: OpenAIEndpoints(model: model, scheduler: scheduler),
                                                              health: { true }),
                              configuration: ApplicationConfiguration(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let connection = try RawHTTPConnection(port: port)
            let body = #"{"prompt":"hi","max_tokens":900,"stream":true}"#
            connection.send("POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            let start = connection.read(until: "data: {")
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
}
