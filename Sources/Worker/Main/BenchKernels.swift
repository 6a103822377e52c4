import ArgumentParser
import CKernels
import Foundation
import WorkerCore

/// `worker bench-kernels`: GB/s of weight bytes per core for each encoding and input-row count,
/// beside this machine's single-core read bandwidth.
struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-kernels",
        abstract: "Measure the matmul kernels: GB/s of weight bytes read per core, per encoding and row count.")

    @Option(help: "Encodings, comma-separated (default: all).")
    var encodings: String = WeightEncoding.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "Input rows per product, comma-separated: 1 is a decode step, larger a batch or prefill tile.")
    var rows: String = "1,2,4,8,16,64"

    @Option(help: "Weight megabytes cycled per encoding (above the last-level cache, like a model's layers).")
    var megabytes: Int = 256

    @Option(help: "Matrix shape, OUTxIN (IN a multiple of 256).")
    var shape: String = "2048x2048"

    @Option(help: "Seconds measured per figure (the median of the repeats is reported).")
    var seconds: Double = 0.5

    @Option(help: "Activations: q8 (integer kernels) or f32 (the exact path).")
    var activations: String = "q8"

    @Option(help: "Instruction-set level: 0 portable, 1 AVX2, 2 AVX-VNNI, 3 AVX-512 (default: the best this CPU has).")
    var level: Int?

    func run() throws {
        let chosen = try encodings.split(separator: ",").map { name -> WeightEncoding in
            guard let encoding = WeightEncoding.allCases.first(where: { $0.rawValue.lowercased() == name.lowercased() }) else {
                throw ValidationError("unknown encoding '\(name)'; known: \(WeightEncoding.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return encoding
        }
        let counts = try rows.split(separator: ",").map { text -> Int in
            guard let value = Int(text), value > 0 else { throw ValidationError("--rows: '\(text)' is not a positive count") }
            return value
        }
        let dims = shape.split(separator: "x").compactMap { Int($0) }
        guard dims.count == 2, dims[0] > 0, dims[1] % 256 == 0, dims[1] > 0 else {
            throw ValidationError("--shape must be OUTxIN with IN a multiple of 256; got '\(shape)'")
        }
        guard let precision = ActivationPrecision(rawValue: activations) else {
            throw ValidationError("--activations must be q8 or f32")
        }
        let cpuLevel = Int(tk_cpu_level())
        var chosenLevel = min(level ?? cpuLevel, cpuLevel)
        if tk_level_runs(Int32(chosenLevel)) == 0 { chosenLevel = Int(TK_LEVEL_AVX2) }
        let benchmark = KernelBenchmark(encodings: chosen, inputRows: counts, totalBytes: megabytes << 20,
                                        rows: dims[0], columns: dims[1], seconds: seconds, activations: precision)
        let bandwidth = benchmark.readBandwidth()
        print(String(format: "read bandwidth, 1 core, %d MB: %.1f GB/s", megabytes, bandwidth))
        print("kernels: \(String(cString: tk_level_name(Int32(chosenLevel)))), activations \(precision.rawValue), matrices \(shape)")
        print("encoding  rows   GB/s  of-read  GMAC/s  layout")
        benchmark.run(level: chosenLevel) { figure in
            // Multiply-adds per second: weight elements read per second times the input rows.
            let elementsPerByte = Double(dims[1]) / Double(figure.encoding.byteCount(elements: dims[1]))
            let macs = figure.gigabytesPerSecond * elementsPerByte * Double(figure.inputRows)
            print(String(format: "%-8@ %5d %6.1f  %6.0f%%  %6.1f  %@", figure.encoding.rawValue as NSString, figure.inputRows,
                         figure.gigabytesPerSecond, 100 * figure.gigabytesPerSecond / bandwidth, macs,
                         figure.layout.description as NSString))
        }
    }
}

/// `worker bench-model`: prefill and decode speed of a model on this worker's engine, no HTTP.
struct BenchModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-model",
        abstract: "Time prefill and batched decode of a model in-process (no router, no HTTP).")

    @Option(help: "Model: a .gguf file, a Hugging Face directory, or org/name.")
    var model: String

    @Option(help: "Prompt tokens per sequence.")
    var prompt: Int = 512

    @Option(help: "Decode steps.")
    var steps: Int = 64

    @Option(help: "Sequences decoded together, comma-separated (one run each).")
    var batch: String = "1,16"

    @Option(help: "Activations: q8 or f32.")
    var activations: String = "q8"

    @Option(help: "Compute threads (default: this machine's processors).")
    var threads: Int?

    @Option(help: "Repeats per figure (the median is printed).")
    var runs: Int = 3

    func run() throws {
        guard let precision = ActivationPrecision(rawValue: activations) else {
            throw ValidationError("--activations must be q8 or f32")
        }
        let batches = try batch.split(separator: ",").map { text -> Int in
            guard let value = Int(text), value > 0 else { throw ValidationError("--batch: '\(text)' is not a positive count") }
            return value
        }
        let pool = try ComputePool(threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
        let executor = try ModelExecutor.load(model: model, options: EngineOptions(activations: precision, kvCacheMemoryBytes: 1 << 30),
                                              pool: pool)
        print("\(model): \(executor.model.weightEncoding), \(executor.model.weightBytes / 1_000_000) MB of weights, "
              + "\(pool.threadCount) threads, kernels \(String(cString: tk_level_name(tk_cpu_level()))), activations \(precision.rawValue)")
        for size in batches {
            let benchmark = ModelBenchmark(promptTokens: prompt, decodeSteps: steps, batch: size)
            _ = try benchmark.run(executor)  // warm-up
            let results = try (0..<max(runs, 1)).map { _ in try benchmark.run(executor) }
            let prefill = results.map(\.prefillTokensPerSecond).sorted()[results.count / 2]
            let decode = results.map(\.decodeTokensPerSecond).sorted()[results.count / 2]
            print(String(format: "batch %3d: prefill %7.1f tok/s (%d-token prompts), decode %7.1f tok/s total, %6.1f per sequence",
                         size, prefill, prompt, decode, decode / Double(size)))
        }
    }
}
