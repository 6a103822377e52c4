import Dispatch
import Foundation
import Logging
import Wire

/// Asks a running `WorkerService` to stop at its next poll (within `WorkerService.pollInterval`).
/// Safe to trigger from any thread or signal handler queue.
public final class WorkerStopSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var requested = false
    // Dispatch signal sources must stay alive as long as they should fire.
    private var signalSources: [DispatchSourceSignal] = []

    public init() {}

    public func requestStop() {
        lock.withLock { requested = true }
    }

    public var isStopRequested: Bool {
        lock.withLock { requested }
    }

    /// Routes SIGTERM and SIGINT to `requestStop()` instead of killing the process, so the
    /// service loop closes its socket and returns (what systemd and the router expect).
    public func stopOnTerminationSignals() {
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { [weak self] in self?.requestStop() }
            source.resume()
            lock.withLock { signalSources.append(source) }
        }
    }
}

/// Why the worker's service loop returned.
public enum WorkerExitReason: Sendable, Equatable {
    case shutdownRequested
    case stopSignal
    /// The process that spawned the worker is gone (see `parentProcessID`).
    case parentExited
    /// A collective of the tensor-parallel group failed: the group must start afresh.
    case groupBroken(String)
}

/// The worker's request loop: binds its endpoint and answers the router's messages one at a time
/// on the calling thread. Health checks are answered between steps; while a step runs, a
/// heartbeat thread of its own (the compute pool cannot block it) tells the router every
/// `heartbeatInterval` that the worker is alive and how far the step's operations have got.
public final class WorkerService {
    public let rank: Int
    public let worldSize: Int
    public let endpoint: String
    public let stopSignal: WorkerStopSignal
    /// How often the loop wakes while idle to look at `stopSignal`.
    public var pollInterval: Duration = .milliseconds(100)
    public private(set) var stepsExecuted: UInt64 = 0
    /// When set, the loop ends once this is no longer the worker's parent process: a router that
    /// dies without a chance to shut its workers down does not leave them running.
    public var parentProcessID: Int32?
    /// How often a Heartbeat goes to the router while a step runs (announced in the handshake);
    /// nil: none (for loops that drive `handle` themselves).
    public var heartbeatInterval: Duration? = .milliseconds(250)
    /// Called at every turn of the loop (at least every `pollInterval` while idle) and, while a
    /// step runs, at each heartbeat whose compute progress moved since the last: a service
    /// manager's watchdog fed from here starves when the loop or the compute is stuck.
    public var alive: @Sendable () -> Void = {}
    /// CURVE (`--curve-keys`): the router link is encrypted, and only the router's key gets in.
    public var curveKeys: CurveKeys?

    private let executor: any StepExecuting
    /// The running sequences' state the steps extend.
    private var book = SequenceBook()
    private let context: ZeroMQContext
    private var logger: Logger
    private let replyTimeout: Duration = .seconds(5)

    public init(executor: any StepExecuting, rank: Int, worldSize: Int, endpoint: String,
                logger: Logger, context: ZeroMQContext? = nil, stopSignal: WorkerStopSignal = WorkerStopSignal()) throws
    {
        self.executor = executor
        self.rank = rank
        self.worldSize = worldSize
        self.endpoint = endpoint
        self.context = try context ?? ZeroMQContext()
        self.stopSignal = stopSignal
        self.logger = logger
        self.logger[metadataKey: "rank"] = "\(rank)"
    }

    /// Binds `endpoint` and serves until a Shutdown message (answered first) or the stop signal.
    /// Throws only if the endpoint cannot be bound or the socket fails; a failing step is reported
    /// to the router as a WorkerError and the loop goes on.
    @discardableResult
    public func run() throws -> WorkerExitReason {
        let authenticator = try curveKeys.map { keys in
            try CurveAuthenticator(context: context, allowed: [keys.peer]) { [logger] refusal in
                logger.warning("\(refusal)")
            }
        }
        defer { authenticator?.stop() }
        let socket = SharedSocket(try context.socket(.router))
        try socket.withSocket { socket in
            if let curveKeys { try socket.makeCurveServer(secretKey: curveKeys.own.secretKey) }
            try socket.bind(endpoint)
        }
        let heartbeat = heartbeatInterval.map { interval in
            Heartbeat(socket: socket, interval: interval, rank: rank, progress: executor.progress, logger: logger,
                      alive: alive)
        }
        defer {
            heartbeat?.stop()
            socket.withSocket { $0.close() }
        }
        logger.info("worker listening", metadata: ["endpoint": "\(endpoint)", "world_size": "\(worldSize)"])
        while !stopSignal.isStopRequested {
            alive()
            if let parentProcessID, getppid() != parentProcessID {
                logger.warning("the parent process is gone; exiting", metadata: ["parent_pid": "\(parentProcessID)"])
                return .parentExited
            }
            let incoming: IncomingRouterMessage
            do {
                guard let received = try socket.withSocket({ try $0.receiveRouterMessage(timeout: pollInterval) })
                else {
                    executor.checkGroup()
                    if let broken = brokenGroup() { return broken }
                    continue
                }
                incoming = received
            } catch let error as WireError {
                // A garbled message loses only itself; there is no request id to answer it with.
                logger.error("dropping unreadable message", metadata: ["error": "\(error)"])
                continue
            }
            if case .step(let step) = incoming.message.body {
                heartbeat?.begin(StepInFlight(peer: incoming.peer, requestID: incoming.message.requestID, stepID: step.stepID))
            }
            let (reply, exit) = handle(incoming.message)
            heartbeat?.end()
            do {
                try socket.withSocket { try $0.send(reply, to: incoming.peer, timeout: replyTimeout) }
            } catch {
                logger.warning("could not deliver reply", metadata: ["error": "\(error)"])
            }
            if exit {
                logger.info("shutting down at the router's request")
                return .shutdownRequested
            }
            if let broken = brokenGroup() { return broken }
        }
        logger.info("stopping on signal")
        return .stopSignal
    }

    /// The loop's exit once the executor's group is broken (logged), else nil. A peer that
    /// leaves while this worker is stopping too (a whole group stopped at once) is no failure.
    private func brokenGroup() -> WorkerExitReason? {
        guard let failure = executor.groupFailure else { return nil }
        if stopSignal.isStopRequested {
            logger.info("stopping on signal; the group's other ranks are stopping too")
            return .stopSignal
        }
        logger.error("the tensor-parallel group is broken; exiting so it can start afresh", metadata: ["error": "\(failure)"])
        return .groupBroken(failure)
    }

    /// Answers one message. Returns the reply and whether the loop should end after sending it.
    public func handle(_ message: RouterMessage) -> (reply: WorkerMessage, exit: Bool) {
        var reply = WorkerMessage()
        var exit = false
        switch message.body {
        case .handshake(let handshake):
            switch handshakeReply(handshake) {
            case .success(let answer): reply.handshakeReply = answer
            case .failure(let error): reply.error = workerError(stepID: 0, message: error.description)
            }
        case .step(let step):
            reply = runStep(step)
        case .health(let check):
            reply.healthReply = healthReply(nonce: check.nonce)
        case .shutdown:
            var answer = Tessel_Wire_ShutdownReply()
            answer.rank = UInt32(rank)
            reply.shutdownReply = answer
            exit = true
        case nil:
            reply.error = workerError(stepID: 0, message: "message without a body (newer router?)")
        }
        reply.requestID = message.requestID
        return (reply, exit)
    }

    /// Who answers: a router that sees another pid or group formation than it handshook with
    /// knows the worker was restarted behind its back.
    private func healthReply(nonce: UInt64) -> Tessel_Wire_HealthReply {
        var health = Tessel_Wire_HealthReply()
        health.nonce = nonce
        health.rank = UInt32(rank)
        health.stepsExecuted = stepsExecuted
        health.pid = UInt32(bitPattern: ProcessInfo.processInfo.processIdentifier)
        health.groupID = executor.groupID
        return health
    }

    private func handshakeReply(_ handshake: Tessel_Wire_Handshake) -> Result<Tessel_Wire_HandshakeReply, HandshakeMismatch> {
        if handshake.protocolVersion != WireProtocol.version {
            return .failure(.protocolVersion(router: handshake.protocolVersion, worker: WireProtocol.version))
        }
        if Int(handshake.worldSize) != worldSize {
            return .failure(.worldSize(router: Int(handshake.worldSize), worker: worldSize))
        }
        if Int(handshake.expectedRank) != rank {
            return .failure(.rank(router: Int(handshake.expectedRank), worker: rank))
        }
        let info = executor.info
        var reply = Tessel_Wire_HandshakeReply()
        reply.protocolVersion = WireProtocol.version
        reply.rank = UInt32(rank)
        reply.worldSize = UInt32(worldSize)
        reply.modelFingerprint = info.fingerprint
        reply.architecture = info.architecture
        reply.vocabSize = UInt32(clamping: info.vocabSize)
        reply.maxContextLength = UInt32(clamping: info.maxContextLength)
        reply.kvBlockCount = UInt32(clamping: info.kvBlockCount)
        reply.kvBlockSize = UInt32(clamping: info.kvBlockSize)
        reply.attentionWindow = UInt32(clamping: info.attentionWindow)
        reply.kvGroupWindows = info.kvGroupWindows.map { UInt32(clamping: $0) }
        reply.pid = UInt32(bitPattern: ProcessInfo.processInfo.processIdentifier)
        reply.groupID = executor.groupID
        reply.heartbeatIntervalMs = heartbeatInterval.map { UInt32(clamping: Int($0 / .milliseconds(1))) } ?? 0
        return .success(reply)
    }

    private func runStep(_ step: Tessel_Wire_Step) -> WorkerMessage {
        var reply = WorkerMessage()
        let started = ContinuousClock.now
        // Finished sequences go first, whatever becomes of the step.
        if !step.finishedSequences.isEmpty {
            book.forget(step.finishedSequences)
            executor.releaseSequences(step.finishedSequences)
        }
        do {
            let work = try StepConversion.work(from: step, book: &book)
            let outcomes = try executor.execute(work)
            if let failure = executor.groupFailure { throw StepFailure.groupBroken(failure) }
            stepsExecuted += 1
            let elapsed = ContinuousClock.now - started
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
            reply.stepResult = StepConversion.result(stepID: step.stepID, rank: rank, outcomes: outcomes,
                                                     computeSeconds: seconds)
        } catch {
            logger.error("step failed", metadata: ["step_id": "\(step.stepID)", "error": "\(error)"])
            reply.error = workerError(stepID: step.stepID, message: "\(error)")
            reply.error.groupBroken = executor.groupFailure != nil
        }
        return reply
    }

    private func workerError(stepID: UInt64, message: String) -> Tessel_Wire_WorkerError {
        var error = Tessel_Wire_WorkerError()
        error.stepID = stepID
        error.rank = UInt32(rank)
        error.message = message
        return error
    }
}

/// The worker's ROUTER socket, used by the service loop and by the heartbeat thread: ZeroMQ sockets
/// may change threads only across a full memory barrier, which the lock gives.
final class SharedSocket: @unchecked Sendable {
    private let lock = NSLock()
    private let socket: ZeroMQSocket

    init(_ socket: ZeroMQSocket) { self.socket = socket }

    func withSocket<Value>(_ body: (ZeroMQSocket) throws -> Value) rethrows -> Value {
        try lock.withLock { try body(socket) }
    }
}

/// The step being answered, as the heartbeat names it.
struct StepInFlight: Sendable {
    var peer: [UInt8]
    var requestID: UInt64
    var stepID: UInt64
}

/// A thread that, while a step is in flight, sends the router a Heartbeat every `interval` with
/// the compute pool's progress. It only sleeps and sends, so a busy or stuck pool cannot stop it;
/// a stopped (or dead) process stops it, which is how the router tells the two apart. It wakes on
/// its own clock, every half interval: starting a step wakes no thread (on a worker with one core,
/// that wake-up preempted the step's first operation, about 40 µs of every step).
final class Heartbeat: @unchecked Sendable {
    private let socket: SharedSocket
    private let interval: Duration
    private let rank: Int
    private let progress: ProgressCounter
    private let logger: Logger
    private let alive: @Sendable () -> Void
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var current: StepInFlight?
    /// When `current` is next reported: one interval after it began, then after each beat.
    private var nextBeatAt = ContinuousClock.now
    private var stopping = false
    private var finished = false

    init(socket: SharedSocket, interval: Duration, rank: Int, progress: ProgressCounter, logger: Logger,
         alive: @escaping @Sendable () -> Void) {
        self.alive = alive
        self.socket = socket
        self.interval = interval
        self.rank = rank
        self.progress = progress
        self.logger = logger
        let thread = Thread { [self] in self.beat() }
        thread.name = "tessel-heartbeat"
        thread.start()
    }

    func begin(_ step: StepInFlight) {
        condition.withLock {
            current = step
            nextBeatAt = .now + interval
        }
    }

    func end() {
        condition.withLock { current = nil }
    }

    /// Ends the thread and waits for it, so the socket can be closed after.
    func stop() {
        condition.withLock {
            stopping = true
            condition.broadcast()
            while !finished { condition.wait() }
        }
    }

    /// The step to report once an interval has passed with it in flight (one interval into the
    /// step, then every interval while it lasts, each up to half an interval late); nil once
    /// stopping.
    private func nextBeat() -> StepInFlight? {
        condition.withLock {
            while true {
                if stopping { return nil }
                _ = condition.wait(until: Date().addingTimeInterval(interval / .seconds(2)))
                if stopping { return nil }
                let now = ContinuousClock.now
                if let current, now >= nextBeatAt {
                    nextBeatAt = now + interval
                    return current
                }
            }
        }
    }

    private func beat() {
        var lastProgress = progress.value
        while let step = nextBeat() {
            let now = progress.value
            if now != lastProgress { alive() }
            lastProgress = now
            var message = WorkerMessage()
            var heartbeat = Tessel_Wire_Heartbeat()
            heartbeat.stepID = step.stepID
            heartbeat.rank = UInt32(rank)
            heartbeat.progress = progress.value
            message.heartbeat = heartbeat
            message.requestID = step.requestID
            do {
                try socket.withSocket { try $0.send(message, to: step.peer, timeout: .seconds(1)) }
            } catch {
                logger.warning("could not send a heartbeat", metadata: ["error": "\(error)"])
            }
        }
        condition.withLock {
            finished = true
            condition.broadcast()
        }
    }
}

/// The router's view of the cluster disagrees with this worker's command line.
enum HandshakeMismatch: Error, CustomStringConvertible {
    case protocolVersion(router: UInt32, worker: UInt32)
    case worldSize(router: Int, worker: Int)
    case rank(router: Int, worker: Int)

    var description: String {
        switch self {
        case .protocolVersion(let router, let worker):
            return "wire protocol mismatch: router speaks version \(router), this worker version \(worker)"
        case .worldSize(let router, let worker):
            return "world size mismatch: router expects \(router) ranks, this worker was started with --shard …/\(worker)"
        case .rank(let router, let worker):
            return "rank mismatch: router expected rank \(router) at this endpoint, this worker is rank \(worker)"
        }
    }
}

/// A step that could not complete as a whole.
enum StepFailure: Error, CustomStringConvertible {
    case groupBroken(String)

    var description: String {
        switch self {
        case .groupBroken(let detail): "\(detail); the worker exits and its group restarts"
        }
    }
}
