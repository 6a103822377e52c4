import ArgumentParser
import Foundation
import Jinja
import Logging
import ModelFormats
import RouterCore
import ServiceLifecycle
import ServiceNotify
import Tokenizers
import Wire

@main
struct Router: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "router",
        abstract: "Tessel's router: the OpenAI-compatible HTTP API in front of the model workers.",
        version: TesselVersion.current,
        subcommands: [Serve.self, Tokenize.self, Detokenize.self, ChatTemplateCommand.self, Keygen.self, BenchTokenizer.self,
                      BenchGrammar.self],
        defaultSubcommand: Serve.self)

    /// `router --help` is the help of what `router` alone does, serving, with the other
    /// commands listed after it (ArgumentParser would list only the commands).
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard arguments == ["--help"] || arguments == ["-h"] || arguments == ["help"] else {
            await main(arguments)
            return
        }
        let others = configuration.subcommands.filter { $0 != Serve.self }.map { command in
            let name = command._commandName
            return "  router \(name)".padding(toLength: 26, withPad: " ", startingAt: 0) + command.configuration.abstract
        }
        print(helpMessage(for: Serve.self).replacingOccurrences(of: "USAGE: router serve", with: "USAGE: router [serve]"))
        print("OTHER COMMANDS (router COMMAND --help for each):\n" + others.joined(separator: "\n"))
    }
}

/// What can stop the router before it serves, each naming what was wrong and where.
enum RouterStartupError: Error, CustomStringConvertible {
    case defaultModelMissing(path: String)
    case modelUnreadable(path: String, reason: String)
    case chatTemplateUnreadable(path: String, reason: String)
    case workersUnavailable(reason: String)
    case contextTooLong(requested: Int, model: Int)
    case invalidKeys(reason: String)

    var description: String {
        switch self {
        case .defaultModelMissing(let path):
            return "default model not found: \(path); run scripts/fetch-model to download it, or pass --model PATH"
        case .modelUnreadable(let path, let reason):
            return "cannot load model \(path): \(reason)"
        case .chatTemplateUnreadable(let path, let reason):
            return "cannot use chat template \(path): \(reason)"
        case .workersUnavailable(let reason):
            return "workers did not start: \(reason)"
        case .contextTooLong(let requested, let model):
            return "--max-model-len \(requested) is longer than the model's context of \(model) tokens"
        case .invalidKeys(let reason):
            return "--curve-keys: \(reason)"
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a model over the OpenAI API (the default command).",
        discussion: """
            Spawns the workers (or attaches to --worker-endpoints), then serves a chat page at /, \
            /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics, /version, /tokenize and /detokenize. SIGTERM or SIGINT stops taking requests, \
            finishes the running ones, and shuts the workers down.
            """)

    @Option(name: .long, help: ArgumentHelp(
        "The model: a .gguf file, a Hugging Face model directory, or org/name from the Hugging Face cache.",
        discussion: "Default: $TESSEL_MODEL_CACHE (default ~/.cache/tessel/models)/SmolLM2-135M-Instruct.Q4_1.gguf.",
        valueName: "path"))
    var model: String?

    @Option(name: .long, help: "Number of local worker processes to spawn: the model is split over them (tensor parallelism), each on its own NUMA node or its own cores.")
    var workers: Int = 1

    @Option(name: .customLong("worker-threads"), help: ArgumentHelp(
        "Compute threads per spawned worker (default: one per core it is given).", valueName: "count"))
    var workerThreads: Int?

    @Option(name: .long, help: ArgumentHelp(
        "Comma-separated endpoints of workers started elsewhere, rank 0 first (e.g. tcp://10.0.0.2:5555); no workers are spawned.",
        valueName: "e1,e2,..."))
    var workerEndpoints: String?

    @Option(name: .long, help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(name: .long, help: "TCP port to listen on.")
    var port: Int = 8000

    @Option(name: .long, help: ArgumentHelp(
        "The model name clients send and /v1/models reports.",
        discussion: "Default: the model file's name without .gguf, the directory's name, or org/name."))
    var servedModelName: String?

    @Option(name: .long, help: ArgumentHelp(
        "A Jinja chat template file to use instead of the one in the model.", valueName: "file"))
    var chatTemplate: String?

    @Option(name: .long, help: ArgumentHelp(
        "How the model writes tool calls: hermes, llama3_json or mistral (default: read from the chat template's markers).",
        valueName: "format"))
    var toolCallParser: ToolCallFormat?

    @Option(name: .long, help: ArgumentHelp(
        "Longest context (prompt plus completion) a request may use, in tokens; at most the model's own. Default: the model's.",
        valueName: "tokens"))
    var maxModelLen: Int?

    @Option(name: .long, help: "Most sequences in one batch step.")
    var maxNumSeqs: Int = 64

    @Option(name: .long, help: "Most tokens in one batch step: decode tokens plus prefill chunks (chunked prefill).")
    var maxNumBatchedTokens: Int = 512

    @Option(name: .long, help: ArgumentHelp(
        "Decode passes the workers run per step while every running sequence is decoding and none waits (multi-step scheduling): the router's round trip is paid once per this many tokens, which reach clients this many at a time; a request arriving meanwhile waits for the step to end. 1 turns it off.",
        valueName: "n"))
    var numSchedulerSteps: Int = 8

    @Option(name: .long, help: ArgumentHelp(
        "Seconds a step carrying prompt chunks should take, by the step cost learned from the workers: long prompts advance in chunks that fit, so requests arriving meanwhile are not held back; 0 turns it off.",
        valueName: "seconds"))
    var stepTimeTarget: Double = 0.2

    @Option(name: .long, help: ArgumentHelp(
        "fcfs (arrival order) or priority (by each request's `priority`, lower first, then arrival; preemption takes the highest value first).",
        valueName: "policy"))
    var schedulingPolicy: SchedulingPolicy = .fcfs

    @Option(name: .long, help: ArgumentHelp(
        "Most requests waiting for their first step (each of n choices counts); more are answered 429 with Retry-After. Default: no bound.",
        valueName: "n"))
    var maxQueuedRequests: Int?

    @Option(name: .long, help: ArgumentHelp(
        "KV cache size per worker, in tokens (rounded to whole blocks). Default: the worker's own default.",
        valueName: "tokens"))
    var kvCacheTokens: Int?

    @Option(name: .long, help: ArgumentHelp(
        "KV cache size per worker in bytes, e.g. 2GiB. Default: a quarter of the memory available at load, at most 4 GiB.",
        valueName: "size"))
    var kvCacheMemory: String?

    @Option(name: .long, help: ArgumentHelp(
        "Element type of cached keys and values: auto, f32, f16, bf16 (auto: f32 with --activations f32, bf16 for bf16 models, else f16).",
        valueName: "type"))
    var kvCacheDtype: String?

    @Option(name: .long, help: ArgumentHelp(
        "How activations meet quantised weights: q8 (8-bit activations, integer kernels; default) or f32 (exact).",
        valueName: "q8|f32"))
    var activations: String?

    @Option(name: .long, help: ArgumentHelp(
        "Convert float checkpoint weights once at load: auto (as stored), f32, f16 or bf16.", valueName: "type"))
    var dtype: String?

    @Option(name: .long, help: ArgumentHelp(
        "Architecture plugins the spawned workers load before the model: dynamic libraries built against Tessel's TesselWorkerCore product, comma-separated (see examples/custom-architecture).",
        valueName: "paths"))
    var customArchitectures: String?

    @Option(name: .long, help: ArgumentHelp(
        "Directory of the cluster's CURVE keys (`router keygen DIR`; the router needs router.key and worker.pub): the link to every worker is encrypted, and the workers must hold the workers' key. Spawned workers get the same directory.",
        valueName: "dir"))
    var curveKeys: String?

    @Option(name: .long, help: ArgumentHelp(
        "Seconds to wait for every worker to load the model and answer its handshake.",
        discussion: "Attached workers (--worker-endpoints) may still be starting under systemd; spawned ones load the model first."))
    var workerStartupTimeout: Int = 300

    @Flag(name: .long, help: "Do not reuse the KV cache of identical prompt prefixes.")
    var noPrefixCaching = false

    @Option(name: .long, help: ArgumentHelp(
        "Largest request body accepted, e.g. 32MiB; a larger one is a 413.", valueName: "size"))
    var maxRequestBytes: String = "32MiB"

    @Option(name: .long, help: ArgumentHelp(
        "Seconds an idle keep-alive connection may wait for the first byte of its next request before it is closed (0: never).",
        valueName: "seconds"))
    var keepAliveTimeout: Double = 10

    @Option(name: .long, help: ArgumentHelp(
        "Seconds a request's headers may take from its first byte, and its body from its headers; a connection that overruns is closed (0: no limit).",
        valueName: "seconds"))
    var requestReadTimeout: Double = 10

    @Option(name: .long, help: "Open HTTP connections served at once; requests on connections beyond it get a 503.")
    var maxConnections: Int = 1000

    @Option(name: .long, help: ArgumentHelp(
        "A key every /v1 request must send as `Authorization: Bearer KEY` (401 otherwise); /health, /metrics, /version, /tokenize and /detokenize stay open.",
        discussion: "Default: $TESSEL_API_KEY when set and not empty; without either, no key is asked for.",
        valueName: "key"))
    var apiKey: String?

    @Flag(name: .long, help: "Write no access-log line per request.")
    var disableLogRequests = false

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        if workers < 1 { throw ValidationError("--workers must be at least 1") }
        if let workerThreads, workerThreads < 1 { throw ValidationError("--worker-threads must be at least 1") }
        if !(1...65535).contains(port) { throw ValidationError("--port must be between 1 and 65535") }
        if maxNumSeqs < 1 { throw ValidationError("--max-num-seqs must be at least 1") }
        if numSchedulerSteps < 1 { throw ValidationError("--num-scheduler-steps must be at least 1") }
        if let maxModelLen, maxModelLen < 1 { throw ValidationError("--max-model-len must be at least 1") }
        if let maxQueuedRequests, maxQueuedRequests < 1 { throw ValidationError("--max-queued-requests must be at least 1") }
        if maxNumBatchedTokens < 1 { throw ValidationError("--max-num-batched-tokens must be at least 1") }
        try Self.checkSeconds(stepTimeTarget, "--step-time-target", zero: "off")
        if let kvCacheTokens, kvCacheTokens < 1 { throw ValidationError("--kv-cache-tokens must be at least 1") }
        if workerStartupTimeout < 1 { throw ValidationError("--worker-startup-timeout must be at least 1 second") }
        if let activations, !["q8", "f32"].contains(activations) {
            throw ValidationError("--activations must be q8 or f32; got '\(activations)'")
        }
        if let kvCacheDtype, !["auto", "f32", "f16", "bf16"].contains(kvCacheDtype) {
            throw ValidationError("--kv-cache-dtype must be auto, f32, f16 or bf16; got '\(kvCacheDtype)'")
        }
        if let dtype, !["auto", "f32", "f16", "bf16", "float32", "float16", "half", "bfloat16"].contains(dtype) {
            throw ValidationError("--dtype must be auto, f32, f16 or bf16; got '\(dtype)'")
        }
        if let apiKey, apiKey.isEmpty { throw ValidationError("--api-key must not be empty") }
        if customArchitectures != nil, workerEndpoints != nil {
            throw ValidationError("--custom-architectures is for spawned workers; pass it to the workers behind --worker-endpoints")
        }
        if maxConnections < 1 { throw ValidationError("--max-connections must be at least 1") }
        if Logger.Level(rawValue: logLevel) == nil {
            throw ValidationError("--log-level must be trace, debug, info, notice, warning, error or critical; got '\(logLevel)'")
        }
        if (ByteSize(parsing: maxRequestBytes)?.bytes ?? 0) <= 0 {
            throw ValidationError("--max-request-bytes must be a size such as 32MiB; got '\(maxRequestBytes)'")
        }
        try Self.checkSeconds(keepAliveTimeout, "--keep-alive-timeout", zero: "never")
        try Self.checkSeconds(requestReadTimeout, "--request-read-timeout", zero: "no limit")
        if let kvCacheMemory, (ByteSize(parsing: kvCacheMemory)?.bytes ?? 0) <= 0 {
            throw ValidationError("--kv-cache-memory must be a size such as 2GiB or 512MiB; got '\(kvCacheMemory)'")
        }
    }

    /// A seconds option: finite and 0 or more, where 0 means `zero`.
    private static func checkSeconds(_ value: Double, _ flag: String, zero: String) throws {
        guard value.isFinite, value >= 0 else {
            throw ValidationError("\(flag) must be 0 (\(zero)) or a number of seconds; got \(value)")
        }
    }

    /// A seconds option as a duration; 0 is nil (never, no limit, off).
    private static func duration(seconds: Double) -> Duration? {
        seconds > 0 ? .milliseconds(Int64(seconds * 1000)) : nil
    }

    /// --api-key, else a non-empty $TESSEL_API_KEY (as vLLM reads VLLM_API_KEY).
    var effectiveAPIKey: String? {
        if let apiKey { return apiKey }
        guard let key = ProcessInfo.processInfo.environment["TESSEL_API_KEY"], !key.isEmpty else { return nil }
        return key
    }

    /// The engine options spawned workers get, as worker flags.
    var engineArguments: [String] {
        var arguments: [String] = []
        if let activations { arguments += ["--activations", activations] }
        if let kvCacheDtype { arguments += ["--kv-cache-dtype", kvCacheDtype] }
        if let kvCacheMemory { arguments += ["--kv-cache-memory", kvCacheMemory] }
        if let dtype { arguments += ["--dtype", dtype] }
        // The workers build context-dependent rotary embeddings (dynamic NTK, LongRoPE) for it.
        if let maxModelLen { arguments += ["--max-model-len", String(maxModelLen)] }
        if let curveKeys {
            arguments += ["--curve-keys", URL(fileURLWithPath: curveKeys).standardizedFileURL.path]
        }
        if let customArchitectures {
            // Absolute paths: the workers need not share the router's working directory.
            let paths = customArchitectures.split(separator: ",").map {
                URL(fileURLWithPath: String($0)).standardizedFileURL.path
            }
            arguments += ["--custom-architectures", paths.joined(separator: ",")]
        }
        return arguments
    }

    func run() async throws {
        var logger = Logger(label: "tessel.router")
        logger.logLevel = Logger.Level(rawValue: logLevel)!  // checked in validate()
        do {
            try await serve(logger: logger)
        } catch let error as RouterStartupError {
            // One line, naming the file, and a non-zero exit.
            FileHandle.standardError.write(Data("router: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }

    /// A logger for one part of the router at the level `--log-level` gave.
    private static func logger(_ label: String, like router: Logger) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = router.logLevel
        return logger
    }

    private func serve(logger: Logger) async throws {
        let endpoints = workerEndpoints.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

        let source = try resolveModel()
        let tokenizer: any Tokenizer
        do {
            tokenizer = try TokenizerLoader.load(source: source)
        } catch {
            throw RouterStartupError.modelUnreadable(path: source.specifier, reason: "\(error)")
        }
        let template = try loadChatTemplate(tokenizer: tokenizer)

        // Owned here and handed to what observes it: the cluster (step times) and the scheduler.
        let metrics = ServingMetrics()
        var options = WorkerClusterOptions()
        options.metrics = metrics
        options.kvCacheTokens = kvCacheTokens
        options.threadsPerWorker = workerThreads
        options.engineArguments = engineArguments
        options.startupTimeout = .seconds(workerStartupTimeout)
        if let curveKeys {
            do {
                options.curveKeys = try CurveKeys.load(directory: URL(fileURLWithPath: curveKeys), role: .router)
            } catch {
                throw RouterStartupError.invalidKeys(reason: "\(error)")
            }
        }
        if endpoints == nil, workers > 1 {
            let placement = WorkerPlacement(workers: workers)
            options.rankProcessors = placement.processorSets
            logger.info("worker placement", metadata: ["placement": "\(placement.summary)"])
        }
        let clusterLogger = Self.logger("tessel.cluster", like: logger)
        let notifier = ServiceNotifier()
        let cluster: WorkerCluster
        do {
            cluster = try await notifier.extendingTimeout {
                if let endpoints {
                    notifier.status("waiting for the workers at \(endpoints.joined(separator: ","))")
                    return try await WorkerCluster.attach(endpoints: endpoints, options: options, logger: clusterLogger)
                }
                notifier.status("starting \(workers) worker\(workers == 1 ? "" : "s")")
                return try await WorkerCluster.launch(model: source.ggufURL?.path ?? source.directory.path,
                                                      workers: workers, options: options, logger: clusterLogger)
            }
        } catch {
            throw RouterStartupError.workersUnavailable(reason: "\(error)")
        }
        let info = cluster.model
        var contextLength = info.maxContextLength
        if let maxModelLen {
            guard maxModelLen <= info.maxContextLength else {
                await cluster.shutdown()
                throw RouterStartupError.contextTooLong(requested: maxModelLen, model: info.maxContextLength)
            }
            contextLength = maxModelLen
        }
        logger.info("workers ready", metadata: [
            "architecture": "\(info.architecture)", "context": "\(contextLength)",
            "kv_blocks": "\(info.kvBlockCount)", "kv_block_size": "\(info.kvBlockSize)",
            "kv_group_windows": "\(info.kvGroupWindows)",
        ])

        let scheduler = Scheduler(
            configuration: SchedulerConfiguration(maxSequences: maxNumSeqs, maxBatchedTokens: maxNumBatchedTokens,
                                                  prefixCaching: !noPrefixCaching,
                                                  targetStepSeconds: stepTimeTarget > 0 ? stepTimeTarget : nil,
                                                  policy: schedulingPolicy, maxWaitingSequences: maxQueuedRequests,
                                                  decodeSteps: numSchedulerSteps),
            limits: SchedulerModelLimits(maxContextLength: contextLength, kvBlockCount: info.kvBlockCount,
                                         kvBlockSize: info.kvBlockSize, groupWindows: info.kvGroupWindows),
            metrics: metrics)
        let served = ServedModel(name: servedModelName ?? source.displayName, tokenizer: tokenizer, chatTemplate: template,
                                 maxContextLength: contextLength, vocabularySize: info.vocabSize,
                                 toolCallFormat: toolCallParser)
        let endpointsAPI = OpenAIEndpoints(model: served, scheduler: scheduler)
        let stepLoop = StepLoop(scheduler: scheduler, runner: cluster, logger: Self.logger("tessel.steps", like: logger),
                                kvEpoch: { cluster.recoveries })
        let host = self.host
        let port = self.port
        let httpLogger = logger
        let application = OpenAIServer.makeApplication(
            endpoints: endpointsAPI,
            settings: HTTPServerSettings(host: host, port: port, maxRequestBytes: ByteSize(parsing: maxRequestBytes)!.bytes,
                                         idleTimeout: Self.duration(seconds: keepAliveTimeout),
                                         requestReadTimeout: Self.duration(seconds: requestReadTimeout),
                                         maxConnections: maxConnections, apiKey: effectiveAPIKey,
                                         logRequests: !disableLogRequests),
            health: { cluster.isHealthy }, logger: logger,
            onServerRunning: { _ in
                httpLogger.info("serving \(served.name) on http://\(host):\(port)")
                notifier.ready(status: "serving \(served.name) on http://\(host):\(port) with \(cluster.worldSize) worker rank\(cluster.worldSize == 1 ? "" : "s")")
            })
        // Shutdown runs in reverse: the HTTP server drains first, then the step loop finishes
        // the sequences it has, then the workers are told to exit.
        let group = ServiceGroup(
            services: [WatchdogService(notifier: notifier), WorkerShutdownService(cluster: cluster), stepLoop,
                       AnnouncedShutdown(service: application, notifier: notifier)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        do {
            try await group.run()
        } catch {
            await cluster.shutdown()
            throw error
        }
        await cluster.shutdown()
    }

    /// --model as ModelSource resolves it (a .gguf file, an HF directory, or org/name in the
    /// Hugging Face cache); without --model, the default model in the Tessel model cache.
    func resolveModel() throws -> ModelSource {
        let specifier: String
        if let model {
            specifier = model
        } else {
            let cache = ProcessInfo.processInfo.environment["TESSEL_MODEL_CACHE"]
                ?? (NSHomeDirectory() + "/.cache/tessel/models")
            specifier = (cache as NSString).appendingPathComponent("SmolLM2-135M-Instruct.Q4_1.gguf")
            guard FileManager.default.fileExists(atPath: specifier) else {
                throw RouterStartupError.defaultModelMissing(path: specifier)
            }
        }
        do {
            return try ModelSource.resolve(specifier)
        } catch {
            throw RouterStartupError.modelUnreadable(path: specifier, reason: "\(error)")
        }
    }

    func loadChatTemplate(tokenizer: any Tokenizer) throws -> ChatTemplate? {
        if let chatTemplate {
            let source: String
            do {
                source = try String(contentsOfFile: chatTemplate, encoding: .utf8)
            } catch {
                throw RouterStartupError.chatTemplateUnreadable(path: chatTemplate, reason: "cannot read the file")
            }
            do {
                return try ChatTemplate(source: source)
            } catch {
                throw RouterStartupError.chatTemplateUnreadable(path: chatTemplate, reason: "\(error)")
            }
        }
        guard let source = tokenizer.chatTemplate else { return nil }
        do {
            return try ChatTemplate(source: source)
        } catch {
            throw RouterStartupError.chatTemplateUnreadable(path: "(the model's own template)", reason: "\(error)")
        }
    }
}

/// Feeds the service manager's watchdog (`WatchdogSec`) from the router's own task pool, so a
/// router whose tasks no longer run is restarted. First in the group, it stops last: the
/// watchdog is fed through the drain.
struct WatchdogService: Service {
    let notifier: ServiceNotifier

    func run() async throws {
        guard let interval = notifier.watchdogInterval else { return try await gracefulShutdown() }
        while !Task.isShuttingDownGracefully, (try? await Task.sleep(for: min(interval / 4, .milliseconds(500)))) != nil {
            notifier.watchdogIfDue()
        }
    }
}

/// The HTTP server, telling the service manager STOPPING=1 when its drain begins (it is the
/// first service the shutdown reaches).
struct AnnouncedShutdown: Service {
    let service: any Service
    let notifier: ServiceNotifier

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await service.run()
        } onGracefulShutdown: {
            notifier.stopping(status: "draining: finishing the requests in flight")
        }
    }
}

/// Waits for the shutdown signal, then stops the workers (it runs last in the shutdown order).
struct WorkerShutdownService: Service {
    let cluster: WorkerCluster

    func run() async throws {
        try? await gracefulShutdown()
        await cluster.shutdown()
    }
}

/// `--scheduling-policy fcfs|priority`.
extension SchedulingPolicy: ExpressibleByArgument {}

extension ToolCallFormat: ExpressibleByArgument {}
