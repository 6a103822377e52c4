import Foundation
import Testing
@testable import Wire

@Suite("ZeroMQ wrapper")
struct ZeroMQTests {
    @Test("a multipart message goes dealer -> router and the reply comes back to the dealer")
    func roundTrip() throws {
        let context = try ZeroMQContext()
        let server = try context.socket(.router)
        try server.bind("inproc://round-trip")
        let client = try context.socket(.dealer)
        try client.connect("inproc://round-trip")

        try client.send([[1, 2, 3], [], Array("tail".utf8)], timeout: .seconds(1))
        let received = try #require(try server.receive(timeout: .seconds(2)))
        #expect(received.count == 4)  // peer identity + three frames
        #expect(Array(received.dropFirst()) == [[1, 2, 3], [], Array("tail".utf8)])

        try server.send([received[0], [9, 9]], timeout: .seconds(1))
        #expect(try client.receive(timeout: .seconds(2)) == [[9, 9]])
    }

    @Test("receive with nothing to read returns nil after the timeout instead of blocking")
    func receiveTimesOut() throws {
        let context = try ZeroMQContext()
        let socket = try context.socket(.dealer)
        try socket.connect("ipc:///tmp/tessel-nobody-listens-\(getpid()).sock")
        let started = ContinuousClock.now
        let received = try socket.receive(timeout: .milliseconds(150))
        let elapsed = ContinuousClock.now - started
        #expect(received == nil)
        #expect(elapsed >= .milliseconds(140))
        #expect(elapsed < .seconds(2))
    }

    @Test("send with no peer to take the message throws sendTimedOut after the timeout")
    func sendTimesOut() throws {
        let context = try ZeroMQContext()
        let socket = try context.socket(.dealer)  // never connected: no pipe to queue into
        let started = ContinuousClock.now
        #expect(throws: ZeroMQError.sendTimedOut(endpoint: "(unconnected)", after: .milliseconds(100))) {
            try socket.send([[1]], timeout: .milliseconds(100))
        }
        #expect(ContinuousClock.now - started < .seconds(2))
    }

    @Test("a closed socket refuses use with socketClosed, and close is idempotent")
    func closedSocket() throws {
        let context = try ZeroMQContext()
        let socket = try context.socket(.dealer)
        try socket.bind("inproc://closed")
        socket.close()
        socket.close()
        #expect(socket.isClosed)
        #expect(throws: ZeroMQError.socketClosed(endpoint: "inproc://closed")) {
            try socket.send([[1]], timeout: .milliseconds(10))
        }
        #expect(throws: ZeroMQError.socketClosed(endpoint: "inproc://closed")) {
            _ = try socket.receive(timeout: .milliseconds(10))
        }
    }

    @Test("sockets dropped without close() are closed, so their context terminates")
    func socketsClosedOnDeinit() throws {
        // zmq_ctx_term blocks while any socket of the context is open: a leaked socket would
        // make this hang, so it runs on a thread with a deadline.
        let finished = DispatchSemaphore(value: 0)
        let thread = Thread {
            do {
                let context = try ZeroMQContext()
                let server = try context.socket(.router)
                try server.bind("inproc://dropped")
                let client = try context.socket(.dealer)
                try client.connect("inproc://dropped")
                try client.send([[7]], timeout: .seconds(1))  // unsent/unread data: linger 0 drops it
                _ = server
            } catch {
                Issue.record("setup failed: \(error)")
            }
            finished.signal()
        }
        thread.start()
        #expect(finished.wait(timeout: .now() + 5) == .success)
    }

    @Test("binding an endpoint that is taken throws bindFailed naming the endpoint")
    func bindConflict() throws {
        let context = try ZeroMQContext()
        let first = try context.socket(.router)
        try first.bind("inproc://taken")
        let second = try context.socket(.router)
        #expect {
            try second.bind("inproc://taken")
        } throws: { error in
            guard case ZeroMQError.bindFailed(let endpoint, _) = error else { return false }
            return endpoint == "inproc://taken" && "\(error)".contains("inproc://taken")
        }
    }

    @Test("router and worker envelopes survive framing, request id included")
    func framing() throws {
        let context = try ZeroMQContext()
        let worker = try context.socket(.router)
        try worker.bind("inproc://framing")
        let router = try context.socket(.dealer)
        try router.connect("inproc://framing")

        var step = Tessel_Wire_Step()
        step.stepID = 42
        var sequence = Tessel_Wire_SequenceStep()
        sequence.sequenceID = 7
        sequence.tokens = [1, 2, 3]
        sequence.blockTable = [0, 5]
        step.sequences = [sequence]
        var request = RouterMessage()
        request.step = step
        request.requestID = 99
        try router.send(request, timeout: .seconds(1))

        let incoming = try #require(try worker.receiveRouterMessage(timeout: .seconds(2)))
        #expect(incoming.message == request)

        var reply = WorkerMessage()
        reply.requestID = incoming.message.requestID
        var result = Tessel_Wire_StepResult()
        result.stepID = 42
        reply.stepResult = result
        try worker.send(reply, to: incoming.peer, timeout: .seconds(1))
        #expect(try router.receiveWorkerMessage(timeout: .seconds(2)) == reply)
    }

    @Test("a frame that is not a protobuf envelope throws malformedMessage")
    func malformedFrame() throws {
        let context = try ZeroMQContext()
        let worker = try context.socket(.router)
        try worker.bind("inproc://garbage")
        let router = try context.socket(.dealer)
        try router.connect("inproc://garbage")
        try router.send([[0xFF, 0xFF, 0xFF]], timeout: .seconds(1))
        #expect {
            _ = try worker.receiveRouterMessage(timeout: .seconds(2))
        } throws: { error in
            guard case WireError.malformedMessage(let expected, _, _) = error else { return false }
            return expected == "RouterMessage"
        }
    }
}
