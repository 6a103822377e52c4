import Foundation
import Logging
import Wire

/// Knobs of worker supervision. The defaults suit local workers on one host.
public struct WorkerClusterOptions: Sendable {
    /// Compute threads per spawned worker (passed as --threads); default: the machine's cores
    /// divided by the number of workers.
    public var threadsPerWorker: Int?
    /// Passed to spawned workers as --kv-cache-tokens.
    public var kvCacheTokens: Int?
    /// Engine options passed through to spawned workers as they are (`--activations f32`,
    /// `--kv-cache-dtype f16`, `--kv-cache-memory 2GiB`, `--dtype bf16`); workers validate them.
    public var engineArguments: [String] = []
    /// How long a worker may take from start (or restart) to answering the handshake: model load.
    public var startupTimeout: Duration = .seconds(300)
    /// How long an attached worker that is back may take to answer a re-handshake.
    public var handshakeTimeout: Duration = .seconds(10)
    /// An idle worker is asked for its health this often ...
    public var healthInterval: Duration = .seconds(1)
    /// ... and declared failed if it does not answer within this.
    public var healthTimeout: Duration = .seconds(3)
    /// A step's deadline is this much plus `stepTimePerToken` for each token it computes, scaled
    /// by the context the token attends to (1 + context / 1024). A spawned worker that exits is
    /// noticed at once regardless, and a stuck one by its heartbeats (below).
    public var stepTimeout: Duration = .seconds(30)
    public var stepTimePerToken: Duration = .milliseconds(10)
    /// A worker whose heartbeats show no progress of its compute for this long during a step is
    /// declared stuck, failed and restarted. A worker that sends no heartbeat for 8 of its
    /// announced intervals (at least 2 s) is declared down.
    public var stallTimeout: Duration = .seconds(5)
    /// First wait before restarting (or re-handshaking) a failed worker; doubles on each
    /// consecutive failure up to `maxRestartBackoff`.
    public var restartBackoff: Duration = .milliseconds(500)
    public var maxRestartBackoff: Duration = .seconds(30)
    /// Where each rank's step compute time is recorded (`/metrics`); nil: nowhere.
    public var metrics: ServingMetrics?
    /// CURVE keys (`--curve-keys`): the link to every worker is encrypted, and each worker must
    /// prove the workers' key. Spawned workers get the same directory.
    public var curveKeys: CurveKeys?
    /// Extra environment variables for spawned workers.
    public var environment: [String: String] = [:]
    /// Per spawned rank, the OS processors it runs on (its `--cpus`), e.g. disjoint cores of
    /// one NUMA node; nil: each worker takes the cores of its rank's NUMA node.
    public var rankProcessors: [[Int]]?

    public init() {}
}

/// The router's side of the workers: starts or attaches to one process per rank, checks they all
/// serve the same model, sends every step to every rank (SPMD) and returns rank 0's result.
/// Supervises them: a worker that exits or stops answering is noticed within seconds, steps then
/// fail with a clear error (never hang), and the worker is restarted (if spawned) or re-handshaken
/// (if attached) with backoff.
public final class WorkerCluster: StepRunner, @unchecked Sendable {
    /// The endpoint of each rank.
    public let endpoints: [String]
    public var worldSize: Int { endpoints.count }

    private let options: WorkerClusterOptions
    private let logger: Logger
    private let context: ZeroMQContext
    private let spawnPlan: SpawnPlan?
    private let links: [WorkerLink]

    /// Held while a step is queued on every link.
    private let submission = NSLock()
    // Guarded by `lock`.
    private let lock = NSLock()
    private var modelInfo: ClusterModelInfo?
    private var reference: Tessel_Wire_HandshakeReply?
    private var processes: [WorkerProcess?]
    private var spawnGenerations: [UInt64]
    private var supervisors: [Task<Void, Never>] = []
    private var isShutDown = false
    private var recoveryCount: UInt64 = 0
    /// The group formation that last broke: its surviving ranks are not taken back (they leave
    /// it on their own once their peers are gone, and come back in a new formation).
    private var brokenGroupID: UInt64?

    private struct SpawnPlan: Sendable {
        var executable: URL
        var model: String
        var threads: Int
        var socketDirectory: String
        /// The shared-memory name the ranks meet under (the same across restarts: a restarted
        /// group meets in a fresh segment of that name).
        var group: String
    }

    public var model: ClusterModelInfo {
        lock.withLock { modelInfo! }
    }

    /// Incremented each time a failed rank is back in service. A restarted worker's KV cache is
    /// empty: whoever caches KV contents across steps (prefix cache, running sequences) must
    /// drop them when this changes.
    public var recoveries: UInt64 {
        lock.withLock { recoveryCount }
    }

    /// Whether every rank is currently handshaken and answering, all in one group formation.
    public var isHealthy: Bool {
        groupUnavailability() == nil
    }

    /// Why a step cannot go to every rank now (a rank down, or ranks of different formations
    /// of the group), or nil if it can.
    private func groupUnavailability() -> ClusterError? {
        let formations = links.map(\.readyGroupID)
        if let down = formations.firstIndex(where: { $0 == nil }) {
            if case .failed(let error) = links[down].currentState {
                return .workerUnavailable(rank: down, reason: error.description)
            }
            return .workerUnavailable(rank: down, reason: "not yet handshaken")
        }
        guard worldSize > 1, let first = formations[0] else { return nil }
        if let other = formations.firstIndex(where: { $0 != first }) {
            return .workerUnavailable(rank: other, reason: "the tensor-parallel group is re-forming: rank \(other) is not yet in rank 0's group")
        }
        return nil
    }

    /// Process ids of the spawned workers (nil for a rank that is down or attached).
    public var workerProcessIDs: [Int32?] {
        lock.withLock { processes.map { $0?.isRunning == true ? $0?.pid : nil } }
    }

    private init(endpoints: [String], spawnPlan: SpawnPlan?, options: WorkerClusterOptions, logger: Logger) throws {
        self.endpoints = endpoints
        self.spawnPlan = spawnPlan
        self.options = options
        self.logger = logger
        let context = try ZeroMQContext()
        self.context = context
        self.processes = Array(repeating: nil, count: endpoints.count)
        self.spawnGenerations = Array(repeating: 0, count: endpoints.count)
        let relay = FailureRelay()
        self.links = endpoints.enumerated().map { rank, endpoint in
            WorkerLink(rank: rank, endpoint: endpoint, context: context, healthInterval: options.healthInterval,
                       healthTimeout: options.healthTimeout, stallTimeout: options.stallTimeout, curveKeys: options.curveKeys,
                       logger: logger,
                       onFailure: { rank, error in
                           logger.error("worker failed", metadata: ["rank": "\(rank)", "error": "\(error)"])
                           relay.cluster?.rankFailed(rank)
                       })
        }
        relay.cluster = self
    }

    /// Hands link failures to the cluster, which exists only after its links.
    private final class FailureRelay: @unchecked Sendable {
        weak var cluster: WorkerCluster?
    }

    /// One rank failed: in a group, the others cannot compute without it, so the whole group is
    /// failed and brought back as a unit (respawned, or awaited in a new formation).
    private func rankFailed(_ rank: Int) {
        guard worldSize > 1 else { return }
        let formation = links.compactMap(\.readyGroupID).first
        lock.withLock { if let formation, formation != 0 { brokenGroupID = formation } }
        let cause: String
        if case .failed(let error) = links[rank].currentState { cause = error.description } else { cause = "it failed" }
        for link in links where link.rank != rank && link.isReady {
            link.markFailed(.groupBroken(rank: rank, cause: cause))
        }
    }

    // MARK: - Starting

    /// Spawns `workers` local worker processes serving `model` and handshakes with each.
    /// `workerExecutable` defaults to the `worker` binary next to the running executable.
    /// Any rank failing to come up (exit, rejected handshake, silence past `startupTimeout`)
    /// stops the others and throws `.startupFailed` carrying the worker's own error line.
    public static func launch(model: String, workers: Int, workerExecutable: URL? = nil,
                              options: WorkerClusterOptions = WorkerClusterOptions(),
                              logger: Logger = Logger(label: "tessel.cluster")) async throws -> WorkerCluster
    {
        guard workers >= 1 else { throw ClusterError.invalidWorkerCount(workers) }
        let executable = try workerExecutable ?? defaultWorkerExecutable()
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw ClusterError.workerExecutableNotFound(path: executable.path)
        }
        let directory = try makePrivateSocketDirectory()
        let endpoints = (0..<workers).map { "ipc://\(directory)/rank-\($0).sock" }
        if let sets = options.rankProcessors {
            precondition(sets.count == workers && !sets.contains(where: \.isEmpty), "one non-empty processor set per rank")
        }
        let threads = options.threadsPerWorker ?? max(1, ProcessInfo.processInfo.activeProcessorCount / workers)
        let group = "tessel-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let plan = SpawnPlan(executable: executable, model: model, threads: threads, socketDirectory: directory,
                             group: group)
        let cluster: WorkerCluster
        do {
            cluster = try WorkerCluster(endpoints: endpoints, spawnPlan: plan, options: options, logger: logger)
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        try await cluster.start()
        return cluster
    }

    /// Connects to workers started elsewhere (systemd units, other hosts); `endpoints[r]` must be
    /// rank r's --listen endpoint.
    public static func attach(endpoints: [String], options: WorkerClusterOptions = WorkerClusterOptions(),
                              logger: Logger = Logger(label: "tessel.cluster")) async throws -> WorkerCluster
    {
        guard !endpoints.isEmpty else { throw ClusterError.invalidWorkerCount(0) }
        let cluster = try WorkerCluster(endpoints: endpoints, spawnPlan: nil, options: options, logger: logger)
        try await cluster.start()
        return cluster
    }

    /// Spawns every rank (when the cluster spawns its workers), handshakes them all and starts
    /// supervising; if any rank fails to come up, stops the others and rethrows.
    private func start() async throws {
        do {
            if spawnPlan != nil {
                for rank in 0..<worldSize { try spawn(rank: rank) }
            }
            try await handshakeAll(timeout: options.startupTimeout)
        } catch {
            await shutdown()
            throw error
        }
        startSupervision()
    }

    /// The `worker` binary in the directory of the running executable.
    public static func defaultWorkerExecutable() throws -> URL {
        guard let running = Bundle.main.executableURL else {
            throw ClusterError.workerExecutableNotFound(path: "(cannot locate the running executable)")
        }
        return running.resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("worker")
    }

    private static func makePrivateSocketDirectory() throws -> String {
        // mkdtemp makes the directory 0700: other users cannot reach the workers' sockets.
        var template = Array((NSTemporaryDirectory() + "tessel-XXXXXX").utf8CString)
        guard let created = mkdtemp(&template) else {
            throw ClusterError.spawnFailed(rank: 0, executable: "", reason:
                "cannot create a socket directory in \(NSTemporaryDirectory()): errno \(errno)")
        }
        return String(cString: created)
    }

    private func spawn(rank: Int) throws {
        guard let plan = spawnPlan else { return }
        var arguments = ["--rank", "\(rank)", "--shard", "\(rank)/\(worldSize)", "--model", plan.model,
                         "--listen", endpoints[rank], "--parent-pid", "\(getpid())"]
        if let processors = options.rankProcessors?[rank] {
            arguments += ["--cpus", processors.map(String.init).joined(separator: ","),
                          "--threads", "\(options.threadsPerWorker ?? processors.count)"]
        } else {
            arguments += ["--threads", "\(plan.threads)"]
        }
        if worldSize > 1 { arguments += ["--group", plan.group] }
        if let tokens = options.kvCacheTokens { arguments += ["--kv-cache-tokens", "\(tokens)"] }
        arguments += options.engineArguments
        var environment = ProcessInfo.processInfo.environment
        environment.merge(options.environment) { _, new in new }
        let generation: UInt64 = lock.withLock {
            spawnGenerations[rank] += 1
            return spawnGenerations[rank]
        }
        let process = try WorkerProcess(
            rank: rank, executable: plan.executable, arguments: arguments, environment: environment,
            onExit: { [weak self] pid, status, lastOutput in
                self?.workerExited(rank: rank, generation: generation, pid: pid, status: status, lastOutput: lastOutput)
            })
        lock.withLock { processes[rank] = process }
        logger.info("started worker", metadata: ["rank": "\(rank)", "pid": "\(process.pid)",
                                                 "endpoint": "\(endpoints[rank])", "arguments": "\(arguments.joined(separator: " "))"])
    }

    private func workerExited(rank: Int, generation: UInt64, pid: Int32, status: String, lastOutput: String) {
        // Exits we caused (restart of a hung worker, shutdown) are expected.
        let current = lock.withLock { spawnGenerations[rank] == generation && !isShutDown }
        guard current else { return }
        links[rank].markFailed(.workerExited(rank: rank, pid: pid, status: status, lastOutput: lastOutput))
    }

    private func handshakeAll(timeout: Duration) async throws {
        let replies = try await withThrowingTaskGroup(of: (Int, Tessel_Wire_HandshakeReply).self) { group in
            for rank in 0..<worldSize {
                group.addTask {
                    do {
                        return (rank, try await self.handshake(rank: rank, timeout: timeout))
                    } catch let error as ClusterError {
                        throw ClusterError.startupFailed(rank: rank, reason: error.description)
                    }
                }
            }
            var replies = [Tessel_Wire_HandshakeReply?](repeating: nil, count: worldSize)
            for try await (rank, reply) in group { replies[rank] = reply }
            return replies.map { $0! }
        }
        let reference = replies[0]
        for (rank, reply) in replies.enumerated() {
            try Self.checkConsistent(reply, rank: rank, reference: reference)
        }
        let info = ClusterModelInfo(
            architecture: reference.architecture, vocabSize: Int(reference.vocabSize),
            maxContextLength: Int(reference.maxContextLength), fingerprint: reference.modelFingerprint,
            kvBlockCount: Int(replies.map(\.kvBlockCount).min()!), kvBlockSize: Int(reference.kvBlockSize),
            worldSize: worldSize, kvGroupWindows: Self.groupWindows(reference))
        lock.withLock {
            self.reference = reference
            self.modelInfo = info
        }
        if worldSize > 1, let other = replies.firstIndex(where: { $0.groupID != reference.groupID }) {
            throw ClusterError.inconsistentWorkers(rank: other, field: "the tensor-parallel group", expected: "\(reference.groupID)",
                                                   found: "\(replies[other].groupID) (it met other ranks than rank 0 did)")
        }
        for (link, reply) in zip(links, replies) {
            link.markReady(heartbeatIntervalMilliseconds: reply.heartbeatIntervalMs, identity: WorkerIdentity(reply))
        }
        logger.info("workers ready", metadata: [
            "world_size": "\(worldSize)", "architecture": "\(info.architecture)",
            "fingerprint": "\(info.fingerprint)", "kv_blocks": "\(info.kvBlockCount)",
        ])
    }

    private func handshake(rank: Int, timeout: Duration) async throws -> Tessel_Wire_HandshakeReply {
        var handshake = Tessel_Wire_Handshake()
        handshake.protocolVersion = WireProtocol.version
        handshake.worldSize = UInt32(worldSize)
        handshake.expectedRank = UInt32(rank)
        var message = RouterMessage()
        message.handshake = handshake
        let reply = try await links[rank].request(message, operation: "the handshake", timeout: timeout,
                                                  requireReady: false)
        switch reply.body {
        case .handshakeReply(let answer):
            guard answer.protocolVersion == WireProtocol.version else {
                throw ClusterError.handshakeRejected(rank: rank, endpoint: endpoints[rank], message:
                    "worker speaks wire protocol \(answer.protocolVersion), router \(WireProtocol.version)")
            }
            guard Int(answer.rank) == rank, Int(answer.worldSize) == worldSize else {
                throw ClusterError.handshakeRejected(rank: rank, endpoint: endpoints[rank], message:
                    "worker reports rank \(answer.rank) of \(answer.worldSize)")
            }
            try Self.checkUsable(answer, rank: rank, endpoint: endpoints[rank])
            return answer
        case .error(let error):
            throw ClusterError.handshakeRejected(rank: rank, endpoint: endpoints[rank], message: error.message)
        default:
            throw ClusterError.unexpectedReply(rank: rank, expected: "a handshake reply", got: describe(reply))
        }
    }

    /// The scheduler cannot plan with an empty KV cache, context or vocabulary: such a worker is
    /// refused at the handshake instead of tripping the block manager's preconditions.
    static func checkUsable(_ reply: Tessel_Wire_HandshakeReply, rank: Int, endpoint: String) throws {
        let sizes: [(String, UInt32)] = [
            ("a KV block count", reply.kvBlockCount), ("a KV block size", reply.kvBlockSize),
            ("a context length", reply.maxContextLength), ("a vocabulary size", reply.vocabSize),
        ]
        for (field, value) in sizes where value == 0 {
            throw ClusterError.handshakeRejected(rank: rank, endpoint: endpoint, message: "worker reports \(field) of 0")
        }
    }

    /// The KV groups' windows a worker reports; a worker that names none has one group.
    static func groupWindows(_ reply: Tessel_Wire_HandshakeReply) -> [Int] {
        reply.kvGroupWindows.isEmpty ? [Int(reply.attentionWindow)] : reply.kvGroupWindows.map { Int($0) }
    }

    private static func checkConsistent(_ reply: Tessel_Wire_HandshakeReply, rank: Int,
                                        reference: Tessel_Wire_HandshakeReply) throws
    {
        let fields: [(String, String, String)] = [
            ("the model fingerprint", reference.modelFingerprint, reply.modelFingerprint),
            ("the architecture", reference.architecture, reply.architecture),
            ("the vocabulary size", "\(reference.vocabSize)", "\(reply.vocabSize)"),
            ("the maximum context length", "\(reference.maxContextLength)", "\(reply.maxContextLength)"),
            ("the KV block size", "\(reference.kvBlockSize)", "\(reply.kvBlockSize)"),
            ("the KV groups' windows", "\(groupWindows(reference))", "\(groupWindows(reply))"),
        ]
        for (field, expected, found) in fields where expected != found {
            throw ClusterError.inconsistentWorkers(rank: rank, field: field, expected: expected, found: found)
        }
    }

    // MARK: - Supervision

    private func startSupervision() {
        let tasks = (0..<worldSize).map { rank in
            Task<Void, Never> { [weak self] in await self?.supervise(rank: rank) }
        }
        lock.withLock { supervisors = tasks }
    }

    /// Waits for rank `rank` to fail, then brings it back: restart (spawned) or re-handshake
    /// (attached), with exponential backoff while it keeps failing.
    private func supervise(rank: Int) async {
        let link = links[rank]
        var consecutiveFailures = 0
        var lastUptime: Duration = .zero
        while !Task.isCancelled {
            while let uptime = link.readyDuration {
                lastUptime = uptime
                try? await Task.sleep(for: .milliseconds(100))
                if Task.isCancelled || shuttingDown { return }
            }
            if shuttingDown { return }
            // A worker that ran fine for a while before failing starts the backoff afresh.
            if lastUptime > options.maxRestartBackoff { consecutiveFailures = 0 }
            lastUptime = .zero
            let backoff = min(options.maxRestartBackoff, options.restartBackoff * (1 << min(consecutiveFailures, 20)))
            consecutiveFailures += 1
            try? await Task.sleep(for: backoff)
            if Task.isCancelled || shuttingDown { return }
            do {
                let timeout: Duration
                if spawnPlan != nil {
                    await retireProcess(rank: rank)
                    try spawn(rank: rank)
                    timeout = options.startupTimeout
                } else {
                    timeout = options.handshakeTimeout
                }
                let reply = try await handshake(rank: rank, timeout: timeout)
                let (reference, info, broken) = lock.withLock { (self.reference!, self.modelInfo!, brokenGroupID) }
                if worldSize > 1, reply.groupID == broken { throw ClusterError.staleGroup(rank: rank) }
                try Self.checkConsistent(reply, rank: rank, reference: reference)
                guard Int(reply.kvBlockCount) >= info.kvBlockCount else {
                    throw ClusterError.inconsistentWorkers(rank: rank, field: "the KV block count",
                                                           expected: "at least \(info.kvBlockCount)",
                                                           found: "\(reply.kvBlockCount)")
                }
                if shuttingDown { return }
                lock.withLock { recoveryCount += 1 }
                link.markReady(heartbeatIntervalMilliseconds: reply.heartbeatIntervalMs, identity: WorkerIdentity(reply))
                logger.notice("worker is back", metadata: ["rank": "\(rank)", "pid": "\(reply.pid)"])
            } catch ClusterError.staleGroup {
                // Not a failure of its own: look again shortly, without backing off.
                consecutiveFailures = 0
                logger.debug("worker still in the broken group", metadata: ["rank": "\(rank)"])
            } catch {
                logger.error("worker did not come back", metadata: ["rank": "\(rank)", "error": "\(error)",
                                                                   "retry_after": "\(backoff * 2)"])
                link.markFailed(error as? ClusterError
                    ?? .transport(rank: rank, endpoint: endpoints[rank], reason: "\(error)"))
            }
        }
    }

    private var shuttingDown: Bool {
        lock.withLock { isShutDown }
    }

    /// Stops rank `rank`'s current process (if any) without reporting its exit as a new failure.
    private func retireProcess(rank: Int) async {
        let process: WorkerProcess? = lock.withLock {
            spawnGenerations[rank] += 1
            defer { processes[rank] = nil }
            return processes[rank]
        }
        await process?.stop(grace: .seconds(2))
    }

    // MARK: - Steps

    /// Runs `step` on every rank; returns rank 0's result. Throws at once if a rank is down, and
    /// within seconds if one dies during the step.
    public func run(_ step: Tessel_Wire_Step) async throws -> Tessel_Wire_StepResult {
        if shuttingDown { throw ClusterError.shutDown }
        let message = RouterMessage.with { $0.step = step }
        // Every rank must see the steps in the same order (they meet in collectives), so the
        // step is queued on all links under one lock before anything is awaited; and it goes to
        // all ranks or none (a rank computing alone would wait in its collectives for nobody).
        let slots = try submission.withLock {
            if let unavailable = groupUnavailability() { throw unavailable }
            return links.map { $0.enqueue(message, operation: "step \(step.stepID)", timeout: stepDeadline(for: step),
                                          requireReady: true) }
        }
        if slots.count == 1 {
            return try stepResult(try await slots[0].value(), rank: 0, stepID: step.stepID)
        }
        // The first rank to fail fails the step: the others may be waiting for it in a collective.
        // A rank failed only because another one did (the group broke) waits for that one's
        // error, which says what happened.
        return try await withThrowingTaskGroup(of: (Int, Tessel_Wire_StepResult).self) { group in
            for (rank, slot) in slots.enumerated() {
                group.addTask { (rank, try self.stepResult(try await slot.value(), rank: rank, stepID: step.stepID)) }
            }
            var first: Tessel_Wire_StepResult?
            var consequence: (any Error)?
            while let next = await group.nextResult() {
                switch next {
                case .success(let (rank, result)):
                    if rank == 0 { first = result }
                case .failure(ClusterError.groupBroken(let rank, let cause)):
                    consequence = consequence ?? ClusterError.groupBroken(rank: rank, cause: cause)
                case .failure(let error):
                    throw error
                }
            }
            if let consequence { throw consequence }
            return first!
        }
    }

    /// How long `step` may take at most, from its size.
    func stepDeadline(for step: Tessel_Wire_Step) -> Duration {
        let weighted = step.sequences.reduce(0.0) { total, sequence in
            let context = Double(sequence.startPosition) + Double(sequence.tokens.count)
            return total + Double(sequence.tokens.count) * (1 + context / 1024)
        }
        return options.stepTimeout + options.stepTimePerToken * weighted
    }

    private func stepResult(_ reply: WorkerMessage, rank: Int, stepID: UInt64) throws -> Tessel_Wire_StepResult {
        switch reply.body {
        case .stepResult(let result):
            options.metrics?.step(rank: rank, seconds: result.computeSeconds)
            return result
        case .error(let error):
            let failure = ClusterError.stepFailed(rank: rank, stepID: stepID, message: error.message)
            // The rank is leaving its broken group: no further step may go to any rank of it.
            if error.groupBroken { links[rank].markFailed(failure) }
            throw failure
        default:
            throw ClusterError.unexpectedReply(rank: rank, expected: "a step result", got: describe(reply))
        }
    }

    // MARK: - Stopping

    /// Asks every spawned worker to shut down and reaps it (SIGTERM, then SIGKILL after a grace
    /// period), closes the sockets and removes the socket directory. Attached workers are left
    /// running: they belong to their own service manager, and a router that restarts attaches to
    /// them again. Idempotent.
    public func shutdown() async {
        let (alreadyDown, tasks) = lock.withLock {
            let was = isShutDown
            isShutDown = true
            for rank in spawnGenerations.indices { spawnGenerations[rank] += 1 }
            return (was, supervisors)
        }
        if alreadyDown { return }
        for task in tasks { task.cancel() }
        let message = RouterMessage.with { $0.shutdown = Tessel_Wire_Shutdown() }
        // Ready workers are asked to exit; failed or busy ones get SIGTERM (spawned) right away.
        let answered = await withTaskGroup(of: (Int, Bool).self) { group in
            for link in links {
                group.addTask {
                    var didAnswer = false
                    if link.isReady, self.spawnPlan != nil {
                        // Bounded as a whole: the request may queue behind a long step.
                        let reply = link.enqueue(message, operation: "shutdown", timeout: .seconds(2),
                                                 requireReady: true)
                        didAnswer = (try? await withDeadline(.seconds(2)) { try await reply.value() }) != nil
                    }
                    link.close()
                    return (link.rank, didAnswer)
                }
            }
            var answered = [Bool](repeating: false, count: links.count)
            for await (rank, didAnswer) in group { answered[rank] = didAnswer }
            return answered
        }
        let children = lock.withLock { processes.compactMap { $0 } }
        await withTaskGroup(of: Void.self) { group in
            for child in children {
                group.addTask {
                    if answered[child.rank], await child.waitForExit(polling: .seconds(3)) { return }
                    await child.stop(grace: .seconds(2))
                }
            }
        }
        for link in links {
            let deadline = ContinuousClock.now + .seconds(5)
            while !link.isThreadFinished && ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        lock.withLock { processes = processes.map { _ in nil } }
        if let directory = spawnPlan?.socketDirectory {
            try? FileManager.default.removeItem(atPath: directory)
        }
        logger.info("workers stopped")
    }

    deinit {
        // Last resort if shutdown() was never called: do not leave orphan workers behind.
        for process in processes.compactMap({ $0 }) { process.forceKill() }
        for link in links { link.close() }
    }
}

/// Runs `operation`, giving up (nil) after `timeout`; `operation` must honour cancellation.
func withDeadline<Value: Sendable>(_ timeout: Duration, _ operation: @escaping @Sendable () async throws -> Value)
    async throws -> Value?
{
    try await withThrowingTaskGroup(of: Value?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        let first = try await group.next()!
        group.cancelAll()
        return first
    }
}
