import ArgumentParser
import Collectives
import Foundation
import Logging
import WorkerCore

/// `worker`: one rank of a Tessel cluster. Loads its shard of the model and serves the router's
/// steps on one ZeroMQ endpoint until told to shut down or sent SIGTERM.
@main
struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Serve one shard of a model to a Tessel router over ZeroMQ.",
        discussion: """
            Normally started by `router --workers N`. To run workers under systemd or on other hosts,
            start one per rank and point `router --worker-endpoints` at their --listen endpoints.
            """)

    @Option(help: "This worker's rank, 0 ..< world size.")
    var rank: Int

    @Option(help: ArgumentHelp("This process's slice of the model, as RANK/WORLD (e.g. 0/2). RANK must equal --rank.",
                               valueName: "rank/world"))
    var shard: String

    @Option(help: "Model to load: a .gguf file, a Hugging Face model directory, or an org/name cache entry.")
    var model: String

    @Option(help: "ZeroMQ endpoint to bind, e.g. ipc:///run/tessel/rank0.sock or tcp://0.0.0.0:5600.")
    var listen: String

    @Option(name: .customLong("kv-cache-tokens"),
            help: "KV cache capacity in tokens (default: the model layer's choice from available memory).")
    var kvCacheTokens: Int?

    @Option(help: "BLAS threads for this worker (default: OPENBLAS_NUM_THREADS, else all cores).")
    var threads: Int?

    @Option(name: .customLong("parent-pid"),
            help: "Exit when this process is no longer the parent (set by a router that spawns its workers).")
    var parentPID: Int32?

    mutating func validate() throws {
        let parts = shard.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let shardRank = Int(parts[0]), let world = Int(parts[1]) else {
            throw ValidationError("--shard must be RANK/WORLD, e.g. 0/1; got '\(shard)'")
        }
        guard world >= 1 else { throw ValidationError("--shard \(shard): world size must be at least 1") }
        guard (0..<world).contains(rank) else {
            throw ValidationError("--rank \(rank) is outside 0..<\(world) given by --shard \(shard)")
        }
        guard shardRank == rank else {
            throw ValidationError("--shard \(shard) names rank \(shardRank) but --rank is \(rank)")
        }
        if let kvCacheTokens, kvCacheTokens <= 0 {
            throw ValidationError("--kv-cache-tokens must be positive; got \(kvCacheTokens)")
        }
        if let threads, threads <= 0 {
            throw ValidationError("--threads must be positive; got \(threads)")
        }
    }

    var worldSize: Int {
        Int(shard.split(separator: "/")[1])!
    }

    func run() throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = ProcessInfo.processInfo.environment["TESSEL_LOG_LEVEL"]
                .flatMap(Logger.Level.init(rawValue:)) ?? .info
            return handler
        }
        let logger = Logger(label: "tessel.worker")
        pinToNUMANode(logger: logger)
        if let threads { ComputeThreads.set(threads) }

        let stopSignal = WorkerStopSignal()
        stopSignal.stopOnTerminationSignals()

        let executor: ModelExecutor
        do {
            executor = try ModelExecutor.load(model: model, rank: rank, worldSize: worldSize,
                                              kvCacheTokens: kvCacheTokens)
        } catch {
            exitWithError("worker rank \(rank): cannot load model \(model): \(error)")
        }
        logger.info("model loaded", metadata: [
            "model": "\(model)", "architecture": "\(executor.info.architecture)",
            "kv_blocks": "\(executor.info.kvBlockCount)", "blas_threads": "\(ComputeThreads.current)",
        ])
        do {
            let service = try WorkerService(executor: executor, rank: rank, worldSize: worldSize, endpoint: listen,
                                            logger: logger, stopSignal: stopSignal)
            service.parentProcessID = parentPID
            try service.run()
        } catch {
            exitWithError("worker rank \(rank): \(error)")
        }
    }

    /// Each rank runs on (and allocates from) the NUMA node its rank is dealt, before the
    /// weights are touched, so its shard's pages land on that node. Pinning is an optimisation:
    /// where hwloc cannot do it the worker says so and runs unpinned.
    private func pinToNUMANode(logger: Logger) {
        do {
            let topology = try Topology()
            let node = topology.numaNode(forRank: rank)
            try topology.bindProcess(toNUMANode: node)
            logger.info("pinned", metadata: [
                "numa_node": "\(node)", "numa_nodes": "\(topology.numaNodeCount)",
                "cores": "\(topology.coreCount(ofNUMANode: node))",
            ])
        } catch {
            logger.warning("running unpinned: \(error)")
        }
    }

    /// One line on stderr, non-zero status: what the router shows when a worker fails to start.
    private func exitWithError(_ message: String) -> Never {
        FileHandle.standardError.write(Data((message.replacingOccurrences(of: "\n", with: " ") + "\n").utf8))
        Foundation.exit(1)
    }
}
