import ArgumentParser
import Collectives
import Foundation
import CKernels
import Logging
import ModelFormats
import ServiceNotify
import Wire
import WorkerCore

/// `worker`: one rank of a Tessel cluster. Loads its shard of the model and serves the router's
/// steps on one ZeroMQ endpoint until told to shut down or sent SIGTERM.
@main
struct Worker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "A Tessel worker: serve one shard of a model (the default), or measure the kernels.",
        subcommands: [WorkerCommand.self, BenchKernels.self, BenchModel.self, BenchCollectives.self],
        defaultSubcommand: WorkerCommand.self)
}

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
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
            help: "KV cache capacity in tokens (wins over --kv-cache-memory).")
    var kvCacheTokens: Int?

    @Option(name: .customLong("kv-cache-memory"), help: ArgumentHelp(
        "KV cache size in bytes, e.g. 2GiB or 512MiB. Default: a quarter of the memory available at load, at most 4 GiB.",
        valueName: "size"))
    var kvCacheMemory: String?

    @Option(name: .customLong("kv-cache-dtype"), help: ArgumentHelp(
        "Element type of cached keys and values: auto, f32, f16 or bf16. auto: f32 with --activations f32, bf16 for a bf16 model, else f16.",
        valueName: "type"))
    var kvCacheDType: String = "auto"

    @Option(help: ArgumentHelp(
        "How activations meet quantised weights: q8 (8-bit, integer dot products; the default) or f32 (exact).",
        valueName: "q8|f32"))
    var activations: String = "q8"

    @Option(help: ArgumentHelp(
        "Convert float checkpoint weights once at load: auto (keep the stored dtype), f32, f16 or bf16. Quantised weights keep their encoding.",
        valueName: "type"))
    var dtype: String = "auto"

    @Option(name: .long, help: ArgumentHelp(
        "Context to serve, in tokens: at most the model's own (default). Dynamic-NTK and LongRoPE rotary embeddings are built for it.",
        valueName: "tokens"))
    var maxModelLen: Int?

    @Option(help: "Compute threads (default: one per physical core of this rank's NUMA node, or of --cpus).")
    var threads: Int?

    @Option(help: ArgumentHelp(
        "OS processor numbers to run on, e.g. 0-3,8 (default: the cores of this rank's NUMA node). One thread per listed processor unless --threads says otherwise.",
        valueName: "list"))
    var cpus: String?

    @Option(help: ArgumentHelp(
        "Shared-memory name where the ranks of one host meet (e.g. tessel-llama; the same on every rank). A world size above 1 needs this or --peers; spawned workers get one from the router. With --peers: the ranks whose endpoints name one host meet in shared memory, and each host's first rank meets the others' over TCP.",
        valueName: "name"))
    var group: String?

    @Option(help: ArgumentHelp(
        "Where every rank meets the others over TCP, in rank order, e.g. tcp://10.0.0.1:7100,tcp://10.0.0.2:7100 (the same list on every rank; this rank listens on its own entry). For ranks on several hosts.",
        valueName: "endpoints"))
    var peers: String?

    @Option(name: .customLong("collective-timeout"), help: ArgumentHelp(
        "Seconds a rank waits at a collective for a peer that is alive but has not arrived; a dead peer fails it at once. Then the step fails and the worker exits.",
        valueName: "seconds"))
    var collectiveTimeout: Double = 10

    @Option(name: .customLong("numa-node"),
            help: "NUMA node to bind threads and memory to (default: rank modulo the host's node count).")
    var numaNode: Int?

    @Option(name: .customLong("curve-keys"), help: ArgumentHelp(
        "Directory of the cluster's CURVE keys (`router keygen DIR`; this host needs worker.key and router.pub): the router link is encrypted and only the router's key gets in, and the TCP collectives are encrypted with a key derived from worker.key.",
        valueName: "dir"))
    var curveKeys: String?

    @Option(name: .customLong("custom-architectures"), help: ArgumentHelp(
        "Architecture plugins to load before the model: dynamic libraries built against Tessel's TesselWorkerCore product, comma-separated (see examples/custom-architecture).",
        valueName: "paths"))
    var customArchitectures: String?

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
        if world > 1, group == nil, peers == nil {
            throw ValidationError("--shard \(shard): a world size above 1 needs --group (ranks on one host) or --peers (over TCP)")
        }
        if let peers {
            let endpoints: [CollectiveEndpoint]
            do { endpoints = try CollectiveEndpoint.list(peers) } catch { throw ValidationError("--peers: \(error)") }
            guard endpoints.count == world else {
                throw ValidationError("--peers lists \(endpoints.count) endpoints but --shard \(shard) has \(world) ranks")
            }
            if group != nil {
                do { _ = try HostLayout(endpoints: endpoints) } catch { throw ValidationError("--peers: \(error)") }
            }
        }
        if let group, group.isEmpty || group.contains("/") || group.utf8.count > 200 {
            throw ValidationError("--group must be a short name without '/'; got '\(group)'")
        }
        guard collectiveTimeout > 0 else {
            throw ValidationError("--collective-timeout must be positive; got \(collectiveTimeout)")
        }
        _ = try engineOptions()
        if let cpus { _ = try Self.processorList(cpus) }
    }

    /// The numeric and memory choices, validated.
    func engineOptions() throws -> EngineOptions {
        guard let precision = ActivationPrecision(rawValue: activations) else {
            throw ValidationError("--activations must be q8 or f32; got '\(activations)'")
        }
        var options = EngineOptions(activations: precision, kvCacheTokens: kvCacheTokens)
        if let maxModelLen {
            guard maxModelLen >= 1 else { throw ValidationError("--max-model-len must be at least 1; got \(maxModelLen)") }
            options.maxModelLength = maxModelLen
        }
        if kvCacheDType != "auto" {
            guard let type = KVCacheDType(rawValue: kvCacheDType) else {
                throw ValidationError("--kv-cache-dtype must be auto, f32, f16 or bf16; got '\(kvCacheDType)'")
            }
            options.kvCacheDType = type
        }
        if let kvCacheMemory {
            guard let size = ByteSize(parsing: kvCacheMemory), size.bytes > 0 else {
                throw ValidationError("--kv-cache-memory must be a size such as 2GiB or 512MiB; got '\(kvCacheMemory)'")
            }
            options.kvCacheMemoryBytes = size.bytes
        }
        switch dtype {
        case "auto": break
        case "f32", "float32": options.weightDType = .f32
        case "f16", "float16", "half": options.weightDType = .f16
        case "bf16", "bfloat16": options.weightDType = .bf16
        default: throw ValidationError("--dtype must be auto, f32, f16 or bf16; got '\(dtype)'")
        }
        return options
    }

    /// `0-3,8` → [0, 1, 2, 3, 8].
    static func processorList(_ text: String) throws -> [Int] {
        var result: [Int] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
            switch (bounds.count, bounds.first ?? nil, bounds.last ?? nil) {
            case (1, let single?, _) where single >= 0: result.append(single)
            case (2, let low?, let high?) where low >= 0 && low <= high: result += Array(low...high)
            default: throw ValidationError("--cpus must list processor numbers like 0-3,8; got '\(text)'")
            }
        }
        return result
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
        let options: EngineOptions
        do { options = try engineOptions() } catch { exitWithError("worker rank \(rank): \(error)") }
        let registry: ArchitectureRegistry
        do {
            let plugins = customArchitectures?.split(separator: ",").map(String.init) ?? []
            registry = try ArchitectureRegistry.builtIn.loadingPlugins(plugins)
            for path in plugins { logger.info("architecture plugin loaded", metadata: ["path": "\(path)"]) }
        } catch { exitWithError("worker rank \(rank): \(error)") }
        let pool = makePool(logger: logger)

        let stopSignal = WorkerStopSignal()
        stopSignal.stopOnTerminationSignals()
        // Under systemd (Type=notify): READY once the weights are loaded and the group has met,
        // the start-up timeout extended while that takes, the watchdog fed from the step loop.
        let notifier = ServiceNotifier()
        notifier.status("rank \(rank) of \(worldSize): loading \(model)")

        let keys: CurveKeys?
        do { keys = try curveKeys.map { try CurveKeys.load(directory: URL(fileURLWithPath: $0), role: .worker) } } catch {
            exitWithError("worker rank \(rank): \(error)")
        }

        let executor: ModelExecutor
        do {
            let timeout = Duration.milliseconds(Int(collectiveTimeout * 1000))
            var settings: GroupSettings?
            switch (peers, group) {
            case (let peers?, let group?):
                settings = GroupSettings(try .byHost(CollectiveEndpoint.list(peers), sharedMemoryName: "/\(group)"), timeout: timeout)
            case (let peers?, nil):
                settings = GroupSettings(.tcp(try CollectiveEndpoint.list(peers)), timeout: timeout)
            case (nil, let group):
                settings = group.map { GroupSettings(.sharedMemory(name: "/\($0)"), timeout: timeout) }
            }
            // The TCP collectives are sealed with the workers' secret (every rank holds it).
            settings?.key = keys.flatMap { CollectiveKey(bytes: $0.own.secretKey.bytes) }
            executor = try notifier.extendingTimeout {
                try ModelExecutor.load(model: model, rank: rank, worldSize: worldSize, group: settings,
                                       options: options, pool: pool, registry: registry, log: { message in
                                           logger.notice("\(message)")
                                           notifier.status("rank \(rank) of \(worldSize): \(message)")
                                       })
            }
        } catch {
            exitWithError("worker rank \(rank): cannot load model \(model): \(error)")
        }
        logger.info("model loaded", metadata: [
            "model": "\(model)", "architecture": "\(executor.info.architecture)",
            "weights": "\(executor.model.weightEncoding), \(ByteSize(bytes: executor.model.weightBytes))",
            "activations": "\(options.resolvedActivations.rawValue)",
            "kernels": "\(String(cString: tk_level_name(tk_cpu_level())))",
            "kv_cache": "\(executor.cache.dtype.rawValue), \(executor.info.kvBlockCount) blocks of \(executor.info.kvBlockSize) (\(ByteSize(bytes: executor.cache.byteCount)))",
            "threads": "\(pool.threadCount)",
        ])
        do {
            let service = try WorkerService(executor: executor, rank: rank, worldSize: worldSize, endpoint: listen,
                                            logger: logger, stopSignal: stopSignal)
            service.parentProcessID = parentPID
            service.curveKeys = keys
            service.alive = { notifier.watchdogIfDue() }
            notifier.ready(status: "rank \(rank) of \(worldSize): serving \(executor.info.architecture) on \(listen)")
            let exit = try service.run()
            notifier.stopping(status: "rank \(rank) of \(worldSize): stopping (\(exit))")
            if case .groupBroken(let reason) = exit {
                exitWithError("worker rank \(rank): \(reason)")
            }
        } catch {
            exitWithError("worker rank \(rank): \(error)")
        }
    }

    /// The compute pool: one thread per physical core of this rank's NUMA node (or per
    /// processor of --cpus), each bound to its core, with the process's memory bound to the
    /// node before the weights are touched. Pinning is an optimisation: where hwloc cannot do
    /// it the worker says so and runs unpinned.
    private func makePool(logger: Logger) -> ComputePool {
        let topology: Topology?
        var sets: [[Int]]?
        do {
            let found = try Topology()
            let node = numaNode ?? found.numaNode(forRank: rank)
            try found.bindProcess(toNUMANode: node)
            if let cpus {
                sets = try Self.processorList(cpus).map { [$0] }
            } else {
                sets = found.cores(ofNUMANode: node)
            }
            topology = found
        } catch {
            logger.warning("running unpinned: \(error)")
            topology = nil
        }
        let count = threads ?? max(1, sets?.count ?? ProcessInfo.processInfo.activeProcessorCount)
        do {
            let pool = try ComputePool(threads: count, processorSets: sets, topology: topology)
            logger.info("compute pool", metadata: ["threads": "\(count)", "placement": "\(pool.placement)"])
            return pool
        } catch {
            exitWithError("worker rank \(rank): \(error)")
        }
    }

    /// One line on stderr, non-zero status: what the router shows when a worker fails to start.
    private func exitWithError(_ message: String) -> Never {
        FileHandle.standardError.write(Data((message.replacingOccurrences(of: "\n", with: " ") + "\n").utf8))
        Foundation.exit(1)
    }
}
