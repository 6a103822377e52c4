import Foundation
import Logging
import Testing
import Wire
@testable import WorkerCore

/// A model that answers "last token + 1"; a step containing a negative token fails.
final class ArithmeticExecutor: StepExecuting, @unchecked Sendable {
    struct NegativeToken: Error, CustomStringConvertible {
        var sequenceID: UInt64
        var description: String { "sequence \(sequenceID) has a negative token" }
    }

    let info = ModelInfo(architecture: "arithmetic", vocabSize: 100, maxContextLength: 512,
                         fingerprint: "arith-1", kvBlockCount: 32, kvBlockSize: 16)
    let progress = ProgressCounter()
    private(set) var received: [[SequenceWork]] = []
    private(set) var released: [UInt64] = []

    func execute(_ work: [SequenceWork]) throws -> [SequenceOutcome] {
        received.append(work)
        return try work.map { sequence in
            if let bad = sequence.tokens.first(where: { $0 < 0 }) {
                _ = bad
                throw NegativeToken(sequenceID: sequence.id)
            }
            let next = (sequence.tokens.last! + 1) % 100
            let prompt = sequence.wantPromptLogprobs
                ? sequence.tokens.dropFirst().map {
                    ScoredToken(chosen: TokenChoice(token: $0, logprob: -1), top: [TokenChoice(token: 0, logprob: -0.5)])
                }
                : []
            return SequenceOutcome(
                id: sequence.id,
                sampled: sequence.sample ? TokenChoice(token: next, logprob: -0.1) : nil,
                topLogprobs: sequence.topLogprobs > 0 ? [TokenChoice(token: next, logprob: -0.1)] : [],
                promptLogprobs: prompt)
        }
    }

    func releaseSequences(_ ids: [UInt64]) {
        released += ids
    }
}

func handshakeMessage(rank: UInt32, world: UInt32, version: UInt32 = WireProtocol.version) -> RouterMessage {
    var handshake = Tessel_Wire_Handshake()
    handshake.protocolVersion = version
    handshake.worldSize = world
    handshake.expectedRank = rank
    var message = RouterMessage()
    message.handshake = handshake
    message.requestID = 1
    return message
}

func stepMessage(id: UInt64, sequences: [(UInt64, [Int32], Bool)]) -> RouterMessage {
    var step = Tessel_Wire_Step()
    step.stepID = id
    step.sequences = sequences.map { sequenceID, tokens, sample in
        var sequence = Tessel_Wire_SequenceStep()
        sequence.sequenceID = sequenceID
        sequence.tokens = tokens
        sequence.sample = sample
        sequence.blockTable = [3, 4]
        sequence.startPosition = 5
        sequence.sampling.temperature = 0.7
        sequence.sampling.topK = 40
        sequence.sampling.topP = 0.9
        sequence.sampling.seed = 1234
        sequence.sampling.hasSeed_p = true
        sequence.sampling.topLogprobs = 2
        sequence.sampling.wantLogprobs = true
        sequence.sampleIndex = 1
        sequence.generatedTokens = [8]
        return sequence
    }
    var message = RouterMessage()
    message.step = step
    message.requestID = id + 100
    return message
}

@Suite("Worker service")
struct WorkerServiceTests {
    let logger = Logger(label: "test")

    @Test("handshake reports rank, world size, model info and protocol version")
    func handshake() throws {
        let service = try WorkerService(executor: ArithmeticExecutor(), rank: 1, worldSize: 2, endpoint: "inproc://x",
                                        logger: logger)
        let (reply, exit) = service.handle(handshakeMessage(rank: 1, world: 2))
        #expect(!exit)
        #expect(reply.requestID == 1)
        guard case .handshakeReply(let answer) = reply.body else {
            Issue.record("expected a handshake reply, got \(reply)")
            return
        }
        #expect(answer.rank == 1 && answer.worldSize == 2)
        #expect(answer.protocolVersion == WireProtocol.version)
        #expect(answer.modelFingerprint == "arith-1" && answer.architecture == "arithmetic")
        #expect(answer.vocabSize == 100 && answer.maxContextLength == 512)
        #expect(answer.kvBlockCount == 32 && answer.kvBlockSize == 16)
        #expect(answer.pid == UInt32(getpid()))
    }

    @Test("handshake with the wrong rank, world size or protocol version is answered with an error")
    func handshakeMismatch() throws {
        let service = try WorkerService(executor: ArithmeticExecutor(), rank: 0, worldSize: 1, endpoint: "inproc://x",
                                        logger: logger)
        let cases: [(RouterMessage, String)] = [
            (handshakeMessage(rank: 1, world: 1), "rank mismatch"),
            (handshakeMessage(rank: 0, world: 2), "world size mismatch"),
            (handshakeMessage(rank: 0, world: 1, version: 999), "protocol mismatch"),
        ]
        for (message, expected) in cases {
            guard case .error(let error) = service.handle(message).reply.body else {
                Issue.record("expected an error for \(expected)")
                continue
            }
            #expect(error.message.contains(expected), "\(error.message)")
        }
    }

    @Test("a step is converted to the model's types and the outcomes back to protobuf")
    func step() throws {
        let executor = ArithmeticExecutor()
        let service = try WorkerService(executor: executor, rank: 0, worldSize: 1, endpoint: "inproc://x", logger: logger)
        var message = stepMessage(id: 7, sequences: [(11, [1, 2, 3], true), (12, [40], false)])
        message.step.sequences[0].wantPromptLogprobs = true
        let (reply, _) = service.handle(message)
        #expect(reply.requestID == 107)
        guard case .stepResult(let result) = reply.body else {
            Issue.record("expected a step result, got \(reply)")
            return
        }
        #expect(result.stepID == 7 && result.rank == 0)
        #expect(result.sequences.map(\.sequenceID) == [11, 12])
        #expect(result.sequences[0].sampled && result.sequences[0].token == 4)
        #expect(result.sequences[0].logprob == -0.1)
        #expect(result.sequences[0].topLogprobs.map(\.token) == [4])
        #expect(result.sequences[0].promptLogprobs.map(\.token) == [2, 3])
        #expect(result.sequences[0].promptLogprobs[0].topLogprobs.map(\.token) == [0])
        #expect(!result.sequences[1].sampled)
        #expect(result.computeSeconds >= 0)

        let work = try #require(executor.received.first?.first)
        #expect(work.id == 11 && work.tokens == [1, 2, 3] && work.startPosition == 5)
        #expect(work.blockTable == [3, 4] && work.sample && work.wantPromptLogprobs)
        #expect(work.sampling.temperature == 0.7 && work.sampling.topK == 40 && work.sampling.topP == 0.9)
        #expect(work.sampling.seed == 1234 && work.topLogprobs == 2 && work.wantLogprobs)
        #expect(work.sampleIndex == 1 && work.generatedTokens == [8])
        #expect(service.stepsExecuted == 1)
    }

    @Test("an executor error becomes a WorkerError for that step and the next step still runs")
    func executorError() throws {
        let service = try WorkerService(executor: ArithmeticExecutor(), rank: 0, worldSize: 1, endpoint: "inproc://x",
                                        logger: logger)
        guard case .error(let error) = service.handle(stepMessage(id: 3, sequences: [(1, [-5], true)])).reply.body else {
            Issue.record("expected an error")
            return
        }
        #expect(error.stepID == 3 && error.message.contains("negative token"))
        guard case .stepResult(let result) = service.handle(stepMessage(id: 4, sequences: [(1, [5], true)])).reply.body
        else {
            Issue.record("expected a result after the failed step")
            return
        }
        #expect(result.sequences.first?.token == 6)
    }

    @Test("a block id beyond Int32 is rejected with a WorkerError, not executed")
    func blockIDOutOfRange() throws {
        let executor = ArithmeticExecutor()
        let service = try WorkerService(executor: executor, rank: 0, worldSize: 1, endpoint: "inproc://x", logger: logger)
        var message = stepMessage(id: 2, sequences: [(9, [1], true)])
        message.step.sequences[0].blockTable = [UInt32.max]
        guard case .error(let rangeError) = service.handle(message).reply.body else {
            Issue.record("expected an error for a block id out of range")
            return
        }
        #expect(rangeError.stepID == 2)
        #expect(rangeError.message == "sequence 9: KV block id \(UInt32.max) is out of range")
        #expect(executor.received.isEmpty)
    }

    @Test("a sequence without a seed gets one from the fallback; a seeded one keeps its own")
    func seeds() throws {
        var message = stepMessage(id: 1, sequences: [(1, [1], true), (2, [2], true)])
        message.step.sequences[1].sampling.hasSeed_p = false
        var book = SequenceBook()
        let work = try StepConversion.work(from: message.step, book: &book, unseeded: { 555 })
        #expect(work.map(\.sampling.seed) == [1234, 555])
    }

    @Test("a continuing sequence extends what the worker holds; finished ones are dropped first; an unknown one fails")
    func continuingSequences() throws {
        let executor = ArithmeticExecutor()
        let service = try WorkerService(executor: executor, rank: 0, worldSize: 1, endpoint: "inproc://x", logger: logger)
        var first = stepMessage(id: 1, sequences: [(11, [1, 2], true)])
        first.step.sequences[0].blockTable = [3]
        first.step.sequences[0].generatedTokens = [8]
        first.step.sequences[0].promptTokens = [1, 2]
        _ = service.handle(first)
        var next = stepMessage(id: 2, sequences: [(11, [3], true)])
        next.step.sequences[0].startPosition = 2
        next.step.sequences[0].continues = true
        next.step.sequences[0].blockTable = [9]
        next.step.sequences[0].generatedTokens = [3]
        _ = service.handle(next)
        let work = try #require(executor.received.last?.first)
        #expect(work.blockTable == [3, 9] && work.generatedTokens == [8, 3] && work.promptTokens == [1, 2])
        // Finished: dropped before the step runs, so continuing it now is an error naming it.
        var after = next
        after.step.stepID = 3
        after.step.finishedSequences = [11]
        guard case .error(let error) = service.handle(after).reply.body else {
            Issue.record("expected an error for a sequence the worker no longer holds")
            return
        }
        #expect(error.message.contains("sequence 11 continues an earlier step"), "\(error.message)")
        #expect(executor.released == [11])
    }

    @Test("health echoes the nonce and the worker's identity, shutdown ends the loop")
    func healthShutdown() throws {
        let executor = ArithmeticExecutor()
        let service = try WorkerService(executor: executor, rank: 0, worldSize: 1, endpoint: "inproc://x", logger: logger)
        var health = RouterMessage()
        health.health.nonce = 77
        guard case .healthReply(let answer) = service.handle(health).reply.body else {
            Issue.record("expected a health reply")
            return
        }
        #expect(answer.nonce == 77)
        #expect(answer.pid == UInt32(getpid()) && answer.groupID == 0)
        var shutdown = RouterMessage()
        shutdown.shutdown = Tessel_Wire_Shutdown()
        let (reply, exit) = service.handle(shutdown)
        #expect(exit)
        guard case .shutdownReply = reply.body else {
            Issue.record("expected a shutdown reply")
            return
        }
    }

    @Test("the service loop answers over ZeroMQ and returns after Shutdown")
    func loopOverSocket() throws {
        let context = try ZeroMQContext()
        let outcome = LoopOutcome()
        let logger = self.logger
        let thread = Thread {
            outcome.set(Result {
                try WorkerService(executor: ArithmeticExecutor(), rank: 0, worldSize: 1,
                                  endpoint: "inproc://service-loop", logger: logger, context: context).run()
            })
        }
        // `run` binds; inproc needs the bind before the connect.
        thread.start()
        let client = try context.socket(.dealer)
        Thread.sleep(forTimeInterval: 0.2)
        try client.connect("inproc://service-loop")

        try client.send(handshakeMessage(rank: 0, world: 1), timeout: .seconds(1))
        let handshake = try #require(try client.receiveWorkerMessage(timeout: .seconds(5)))
        #expect(handshake.requestID == 1)
        try client.send(stepMessage(id: 9, sequences: [(1, [10], true)]), timeout: .seconds(1))
        let step = try #require(try client.receiveWorkerMessage(timeout: .seconds(5)))
        #expect(step.stepResult.sequences.first?.token == 11)
        var shutdown = RouterMessage()
        shutdown.shutdown = Tessel_Wire_Shutdown()
        shutdown.requestID = 5
        try client.send(shutdown, timeout: .seconds(1))
        let bye = try #require(try client.receiveWorkerMessage(timeout: .seconds(5)))
        #expect(bye.requestID == 5)
        #expect(outcome.wait(timeout: 5) == .shutdownRequested)
    }

    @Test("the stop signal (what SIGTERM triggers) makes the loop return within a poll interval")
    func stopSignal() throws {
        let path = "/tmp/tessel-stop-\(getpid()).sock"
        defer { unlink(path) }
        let outcome = LoopOutcome()
        let stop = WorkerStopSignal()
        let logger = self.logger
        Thread {
            outcome.set(Result {
                try WorkerService(executor: ArithmeticExecutor(), rank: 0, worldSize: 1,
                                  endpoint: "ipc://\(path)", logger: logger,
                                  stopSignal: stop).run()
            })
        }.start()
        Thread.sleep(forTimeInterval: 0.2)
        stop.requestStop()
        #expect(outcome.wait(timeout: 3) == .stopSignal)
    }

    @Test("a worker whose parent process is gone leaves its loop")
    func parentGone() throws {
        let outcome = LoopOutcome()
        let logger = self.logger
        Thread {
            outcome.set(Result {
                let service = try WorkerService(executor: ArithmeticExecutor(), rank: 0, worldSize: 1,
                                                endpoint: "inproc://orphan", logger: logger)
                service.parentProcessID = getppid() + 1  // not our parent: as after the router died
                return try service.run()
            })
        }.start()
        #expect(outcome.wait(timeout: 3) == .parentExited)
    }

    @Test("a worker that cannot bind its endpoint throws bindFailed")
    func bindFailure() throws {
        let service = try WorkerService(executor: ArithmeticExecutor(), rank: 0, worldSize: 1,
                                        endpoint: "tcp://no-such-interface-xyz:1", logger: logger)
        #expect {
            try service.run()
        } throws: { error in
            if case ZeroMQError.bindFailed = error { return true }
            return false
        }
    }
}

/// The result of a service loop run on another thread.
final class LoopOutcome: @unchecked Sendable {
    private let condition = NSCondition()
    private var result: Result<WorkerExitReason, any Error>?

    func set(_ result: Result<WorkerExitReason, any Error>) {
        condition.withLock {
            self.result = result
            condition.broadcast()
        }
    }

    func wait(timeout: TimeInterval) -> WorkerExitReason? {
        let deadline = Date().addingTimeInterval(timeout)
        return condition.withLock {
            while result == nil {
                if !condition.wait(until: deadline) { break }
            }
            return try? result?.get()
        }
    }
}
