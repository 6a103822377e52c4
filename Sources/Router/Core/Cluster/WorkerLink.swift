import Foundation
import Logging
import Wire

/// The router's connection to one worker rank. A dedicated thread owns the DEALER socket (ZeroMQ
/// sockets are single-threaded, and blocking waits must stay off Swift's cooperative pool); async
/// callers queue requests and are resumed with the reply. While idle and ready, the thread sends
/// a health check every `healthInterval`; one unanswered for `healthTimeout` marks the link failed.
/// A failure (also reported from outside, e.g. the process exited) fails the request in flight at
/// once and every later step until the supervisor re-handshakes and calls `markReady()`. During a
/// step, a worker that announced heartbeats is failed when they stop (`heartbeatLost`) or when
/// they show no progress for `stallTimeout` (`workerStuck`).
/// Which process, in which group formation, answers for a rank.
struct WorkerIdentity: Sendable, Equatable {
    var pid: UInt32
    var groupID: UInt64

    init(pid: UInt32, groupID: UInt64) {
        self.pid = pid
        self.groupID = groupID
    }

    init(_ reply: Tessel_Wire_HandshakeReply) {
        self.init(pid: reply.pid, groupID: reply.groupID)
    }
}

final class WorkerLink: @unchecked Sendable {
    enum State: Sendable {
        case connecting
        case ready
        case failed(ClusterError)
        case closed
    }

    private struct PendingRequest {
        var message: RouterMessage
        var operation: String
        var timeout: Duration
        var requireReady: Bool
        var reply: ReplySlot
    }

    let rank: Int
    let endpoint: String
    private let context: ZeroMQContext
    private let healthInterval: Duration
    private let healthTimeout: Duration
    private let stallTimeout: Duration
    private let logger: Logger
    private let onFailure: @Sendable (Int, ClusterError) -> Void

    // Everything below is guarded by `condition`.
    private let condition = NSCondition()
    private var state: State = .connecting
    private var queue: [PendingRequest] = []
    private var failureGeneration: UInt64 = 0
    private var socketResetRequested = false
    private var lastContact = ContinuousClock.now
    private var readySince = ContinuousClock.now
    /// From the worker's handshake; zero: it sends no heartbeats.
    private var heartbeatInterval: Duration = .zero
    /// From the worker's handshake: its process and group formation, which its health replies
    /// must keep reporting.
    private var identity = WorkerIdentity(pid: 0, groupID: 0)
    private var threadFinished = false

    /// CURVE: the workers' public key and the router's pair (nil: the link is plain).
    private let curveKeys: CurveKeys?

    init(rank: Int, endpoint: String, context: ZeroMQContext, healthInterval: Duration, healthTimeout: Duration,
         stallTimeout: Duration, curveKeys: CurveKeys? = nil, logger: Logger,
         onFailure: @escaping @Sendable (Int, ClusterError) -> Void)
    {
        self.rank = rank
        self.curveKeys = curveKeys
        self.endpoint = endpoint
        self.context = context
        self.healthInterval = healthInterval
        self.healthTimeout = healthTimeout
        self.stallTimeout = stallTimeout
        self.logger = logger
        self.onFailure = onFailure
        let thread = Thread { [self] in self.serve() }
        thread.name = "tessel-link-\(rank)"
        thread.start()
    }

    var currentState: State {
        condition.withLock { state }
    }

    var isReady: Bool {
        if case .ready = currentState { return true }
        return false
    }

    /// How long the link has been ready, or nil if it is not.
    var readyDuration: Duration? {
        condition.withLock {
            if case .ready = state { return ContinuousClock.now - readySince }
            return nil
        }
    }

    /// The group formation the worker reported at its handshake, while the link is ready.
    var readyGroupID: UInt64? {
        condition.withLock {
            if case .ready = state { return identity.groupID }
            return nil
        }
    }

    func markReady(heartbeatIntervalMilliseconds: UInt32 = 0, identity: WorkerIdentity = WorkerIdentity(pid: 0, groupID: 0)) {
        condition.withLock {
            guard case .closed = state else {
                self.identity = identity
                heartbeatInterval = .milliseconds(Int(heartbeatIntervalMilliseconds))
                state = .ready
                lastContact = .now
                readySince = .now
                condition.broadcast()
                return
            }
        }
    }

    /// Fails the request in flight (if any) and every step until the next `markReady()`.
    func markFailed(_ error: ClusterError) {
        let changed: Bool = condition.withLock {
            if case .closed = state { return false }
            failureGeneration &+= 1
            socketResetRequested = true
            let wasFailed: Bool
            if case .failed = state { wasFailed = true } else { wasFailed = false }
            state = .failed(error)
            condition.broadcast()
            return !wasFailed
        }
        if changed { onFailure(rank, error) }
    }

    /// Sends `message` and waits for the reply to it. With `requireReady`, a link that is not
    /// ready fails at once with `.workerUnavailable`.
    func request(_ message: RouterMessage, operation: String, timeout: Duration,
                 requireReady: Bool) async throws -> WorkerMessage
    {
        try await enqueue(message, operation: operation, timeout: timeout, requireReady: requireReady).value()
    }

    /// Queues `message` without waiting: requests leave in the order they were enqueued, which
    /// lets the cluster give every rank its steps in the same order.
    func enqueue(_ message: RouterMessage, operation: String, timeout: Duration, requireReady: Bool) -> ReplySlot {
        let slot = ReplySlot()
        let rejection: ClusterError? = condition.withLock {
            switch state {
            case .closed:
                return .shutDown
            case .failed(let error) where requireReady:
                return .workerUnavailable(rank: rank, reason: error.description)
            case .connecting where requireReady:
                return .workerUnavailable(rank: rank, reason: "not yet handshaken")
            default:
                queue.append(PendingRequest(message: message, operation: operation, timeout: timeout,
                                            requireReady: requireReady, reply: slot))
                condition.broadcast()
                return nil
            }
        }
        if let rejection { slot.fulfil(.failure(rejection)) }
        return slot
    }

    /// Stops the thread (after the request in flight), fails queued requests, closes the socket.
    func close() {
        let abandoned: [PendingRequest] = condition.withLock {
            state = .closed
            failureGeneration &+= 1
            let pending = queue
            queue.removeAll()
            condition.broadcast()
            return pending
        }
        for request in abandoned { request.reply.fulfil(.failure(ClusterError.shutDown)) }
    }

    /// Whether the link thread has closed its socket and ended (some time after `close()`).
    var isThreadFinished: Bool {
        condition.withLock { threadFinished }
    }

    // MARK: - The link thread

    private enum Work {
        case request(PendingRequest)
        case healthCheck
        /// Only the socket reset that came with it.
        case none
        case stop
    }

    private func serve() {
        var socket: ZeroMQSocket? = nil
        var nextRequestID: UInt64 = 1
        var nextNonce: UInt64 = 1
        defer {
            socket?.close()
            condition.withLock {
                threadFinished = true
                condition.broadcast()
            }
        }
        while true {
            let (work, resetSocket, generation) = nextWork()
            if resetSocket {
                socket?.close()
                socket = nil
            }
            if case .stop = work { return }
            if case .none = work { continue }
            if socket == nil {
                do {
                    socket = try openSocket()
                } catch {
                    let failure = ClusterError.transport(rank: rank, endpoint: endpoint, reason: "\(error)")
                    if case .request(let pending) = work { pending.reply.fulfil(.failure(failure)) }
                    markFailed(failure)
                    continue
                }
            }
            switch work {
            case .request(let pending):
                var message = pending.message
                message.requestID = nextRequestID
                nextRequestID &+= 1
                do {
                    let reply = try exchange(message, on: socket!, operation: pending.operation,
                                             timeout: pending.timeout, generation: generation)
                    pending.reply.fulfil(.success(reply))
                } catch {
                    pending.reply.fulfil(.failure(error))
                    // A worker that swallowed a step (or a release) is hung or gone.
                    if pending.requireReady, let error = error as? ClusterError {
                        switch error {
                        case .workerSilent, .transport, .heartbeatLost, .workerStuck: markFailed(error)
                        default: break
                        }
                    }
                }
            case .healthCheck:
                var message = RouterMessage()
                var check = Tessel_Wire_HealthCheck()
                check.nonce = nextNonce
                nextNonce &+= 1
                message.health = check
                message.requestID = nextRequestID
                nextRequestID &+= 1
                do {
                    let reply = try exchange(message, on: socket!, operation: "a health check",
                                             timeout: healthTimeout, generation: generation)
                    guard case .healthReply(let health) = reply.body, health.nonce == check.nonce else {
                        throw ClusterError.unexpectedReply(rank: rank, expected: "a health reply",
                                                           got: describe(reply))
                    }
                    let known = condition.withLock { identity }
                    let answering = WorkerIdentity(pid: health.pid, groupID: health.groupID)
                    if known.pid != 0, answering.pid != 0, answering != known {
                        throw ClusterError.workerRestarted(rank: rank, endpoint: endpoint, detail:
                            "pid \(known.pid) → \(answering.pid), group \(known.groupID) → \(answering.groupID)")
                    }
                } catch let error as ClusterError {
                    if case .workerSilent = error { markFailed(error) }
                    else if case .transport = error { markFailed(error) }
                    else if case .unexpectedReply = error { markFailed(error) }
                    else if case .workerRestarted = error { markFailed(error) }
                } catch {
                    markFailed(.transport(rank: rank, endpoint: endpoint, reason: "\(error)"))
                }
            case .none, .stop:
                return
            }
        }
    }

    /// Blocks until there is something to do; returns it with whether the socket must be rebuilt
    /// and the failure generation the work starts in.
    private func nextWork() -> (Work, Bool, UInt64) {
        condition.withLock {
            while true {
                let reset = socketResetRequested
                socketResetRequested = false
                if case .closed = state { return (.stop, reset, failureGeneration) }
                if !queue.isEmpty {
                    let pending = queue.removeFirst()
                    if pending.requireReady, case .failed(let error) = state {
                        pending.reply.fulfil(.failure(ClusterError.workerUnavailable(rank: rank, reason: error.description)))
                        continue
                    }
                    return (.request(pending), reset, failureGeneration)
                }
                if case .ready = state {
                    let due = lastContact + healthInterval
                    if ContinuousClock.now >= due { return (.healthCheck, reset, failureGeneration) }
                    if reset { return (.healthCheck, reset, failureGeneration) }
                    _ = condition.wait(until: Date().addingTimeInterval((due - ContinuousClock.now).timeInterval))
                } else {
                    if reset {
                        // Drop the old socket now, so stale messages to a dead worker go with it.
                        return (.none, true, failureGeneration)
                    }
                    condition.wait()
                }
            }
        }
    }

    private func openSocket() throws -> ZeroMQSocket {
        let socket = try context.socket(.dealer)
        if let curveKeys { try socket.makeCurveClient(serverKey: curveKeys.peer, keys: curveKeys.own) }
        try socket.setReconnectInterval(.milliseconds(100))
        try socket.connect(endpoint)
        return socket
    }

    /// One request/reply exchange. Replies to earlier (abandoned) requests are dropped. Waits in
    /// short slices so a failure reported from outside ends the wait at once. Heartbeats for the
    /// request are taken in while waiting.
    private func exchange(_ message: RouterMessage, on socket: ZeroMQSocket, operation: String,
                          timeout: Duration, generation: UInt64) throws -> WorkerMessage
    {
        let deadline = ContinuousClock.now + timeout
        var watch: StepWatch?
        if case .step = message.body {
            let interval = condition.withLock { heartbeatInterval }
            if interval > .zero {
                watch = StepWatch(silenceLimit: max(.seconds(2), interval * 8), stallLimit: stallTimeout)
            }
        }
        do {
            try socket.send(message, timeout: min(timeout, .seconds(5)))
        } catch ZeroMQError.sendTimedOut {
            throw ClusterError.workerSilent(rank: rank, endpoint: endpoint, operation: operation, after: timeout)
        } catch {
            throw ClusterError.transport(rank: rank, endpoint: endpoint, reason: "\(error)")
        }
        while true {
            if let failure = failure(since: generation) { throw failure }
            let now = ContinuousClock.now
            if now >= deadline {
                throw ClusterError.workerSilent(rank: rank, endpoint: endpoint, operation: operation, after: timeout)
            }
            switch watch?.verdict(at: now) {
            case .silent(let after):
                throw ClusterError.heartbeatLost(rank: rank, endpoint: endpoint, operation: operation, after: after)
            case .stuck(let after):
                throw ClusterError.workerStuck(rank: rank, endpoint: endpoint, operation: operation, after: after)
            case .healthy, nil:
                break
            }
            let reply: WorkerMessage?
            do {
                reply = try socket.receiveWorkerMessage(timeout: min(.milliseconds(50), deadline - now))
            } catch {
                throw ClusterError.transport(rank: rank, endpoint: endpoint, reason: "\(error)")
            }
            guard let reply else { continue }
            if reply.requestID != message.requestID {
                logger.debug("dropping a late reply", metadata: ["rank": "\(rank)", "request_id": "\(reply.requestID)"])
                continue
            }
            if case .heartbeat(let beat) = reply.body {
                watch?.record(progress: beat.progress, at: ContinuousClock.now)
                continue
            }
            condition.withLock { lastContact = .now }
            return reply
        }
    }

    private func failure(since generation: UInt64) -> ClusterError? {
        condition.withLock {
            guard failureGeneration != generation else { return nil }
            switch state {
            case .failed(let error): return error
            case .closed: return .shutDown
            default: return nil
            }
        }
    }
}

/// What a step's heartbeats say about the worker: alive (a heartbeat within `silenceLimit`) and
/// moving (its progress changed within `stallLimit`).
struct StepWatch: Sendable {
    enum Verdict: Equatable, Sendable {
        case healthy
        case silent(after: Duration)
        case stuck(after: Duration)
    }

    let silenceLimit: Duration
    let stallLimit: Duration
    private var lastHeartbeat: ContinuousClock.Instant
    private var lastProgress: UInt64?
    private var progressSince: ContinuousClock.Instant

    init(silenceLimit: Duration, stallLimit: Duration, start: ContinuousClock.Instant = .now) {
        self.silenceLimit = silenceLimit
        self.stallLimit = stallLimit
        lastHeartbeat = start
        progressSince = start
    }

    mutating func record(progress: UInt64, at now: ContinuousClock.Instant) {
        lastHeartbeat = now
        if progress != lastProgress {
            lastProgress = progress
            progressSince = now
        }
    }

    func verdict(at now: ContinuousClock.Instant) -> Verdict {
        if now - lastHeartbeat > silenceLimit { return .silent(after: silenceLimit) }
        if now - progressSince > stallLimit { return .stuck(after: stallLimit) }
        return .healthy
    }
}

/// Where a worker's reply (or the reason there is none) lands; awaited by the requester.
final class ReplySlot: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<WorkerMessage, any Error>?
    private var waiter: CheckedContinuation<WorkerMessage, any Error>?
    private var cancelled = false

    /// Called exactly once per slot.
    func fulfil(_ outcome: Result<WorkerMessage, any Error>) {
        let waiting: CheckedContinuation<WorkerMessage, any Error>? = lock.withLock {
            if let waiter {
                self.waiter = nil
                return waiter
            }
            result = outcome
            return nil
        }
        waiting?.resume(with: outcome)
    }

    /// The reply; a cancelled waiter stops waiting (the reply, when it comes, is dropped).
    func value() async throws -> WorkerMessage {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let ready: Result<WorkerMessage, any Error>? = lock.withLock {
                    if let result { return result }
                    if cancelled { return .failure(CancellationError()) }
                    waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            let waiting: CheckedContinuation<WorkerMessage, any Error>? = lock.withLock {
                cancelled = true
                defer { waiter = nil }
                return waiter
            }
            waiting?.resume(throwing: CancellationError())
        }
    }
}

func describe(_ reply: WorkerMessage) -> String {
    switch reply.body {
    case .handshakeReply: return "a handshake reply"
    case .stepResult: return "a step result"
    case .healthReply: return "a health reply"
    case .error(let error): return "an error (\(error.message))"
    case .shutdownReply: return "a shutdown reply"
    case .heartbeat: return "a heartbeat"
    case nil: return "an empty message"
    }
}

extension Duration {
    var timeInterval: TimeInterval {
        Double(components.seconds) + Double(components.attoseconds) * 1e-18
    }
}
