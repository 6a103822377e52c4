import Foundation
import ModelFormats

/// The Llama family's registration: config, graph, weight adapter, encodings and sharding.
public enum LlamaArchitecture {
    /// Encodings the loader accepts: those with kernels are used as stored; the other ggml
    /// block encodings are converted to Q8_0 at load.
    public static let supportedEncodings: Set<TensorEncoding> = [
        .f32, .f16, .bf16,
        .ggml(.q4_0), .ggml(.q4_1), .ggml(.q5_0), .ggml(.q5_1), .ggml(.q8_0),
        .ggml(.q2_K), .ggml(.q3_K), .ggml(.q4_K), .ggml(.q5_K), .ggml(.q6_K),
    ]

    public static let registration = ArchitectureRegistration(
        name: "llama",
        huggingFaceClassNames: ["LlamaForCausalLM"],
        ggufArchitectures: ["llama"],
        supportedEncodings: supportedEncodings,
        sharding: [
            LlamaWeightName.query.rawValue: .outputRows(.queryHeads),
            LlamaWeightName.key.rawValue: .outputRows(.kvHeads),
            LlamaWeightName.value.rawValue: .outputRows(.kvHeads),
            LlamaWeightName.output.rawValue: .inputColumns(.queryHeads),
            LlamaWeightName.gate.rawValue: .outputRows(.mlpColumns),
            LlamaWeightName.up.rawValue: .outputRows(.mlpColumns),
            LlamaWeightName.down.rawValue: .inputColumns(.mlpColumns),
            LlamaWeightName.embedding.rawValue: .outputRows(.vocabulary),
            LlamaWeightName.attentionNorm.rawValue: .replicated,
            LlamaWeightName.mlpNorm.rawValue: .replicated,
            LlamaWeightName.finalNorm.rawValue: .replicated,
            LlamaWeightName.lmHead.rawValue: .outputRows(.vocabulary),
        ],
        load: { checkpoint, context in try LlamaArchitecture.load(checkpoint, context: context) })

    /// Reads the config from the checkpoint (config.json or GGUF metadata).
    public static func config(for checkpoint: ModelCheckpoint) throws -> LlamaConfig {
        do {
            switch checkpoint.format {
            case .huggingFace:
                guard let data = checkpoint.configJSON else {
                    throw ModelLoadError.invalidConfig(file: checkpoint.architectureFile, detail: "config.json is missing")
                }
                return try JSONDecoder().decode(LlamaConfig.self, from: data)
            case .gguf:
                guard let metadata = checkpoint.ggufMetadata else {
                    throw ModelLoadError.invalidConfig(file: checkpoint.architectureFile, detail: "GGUF metadata is missing")
                }
                let store = checkpoint.weights
                let divisors = store.descriptor("rope_freqs.weight") == nil ? nil : try store.floats("rope_freqs.weight", rows: nil)
                return try LlamaConfig(gguf: metadata, ropeFrequencyDivisors: divisors,
                                       hasOutputWeight: store.descriptor(LlamaWeightAdapter.ggufNames[.lmHead]!) != nil)
            }
        } catch let error as LlamaConfigError {
            throw ModelLoadError.invalidConfig(file: checkpoint.architectureFile, detail: error.description)
        } catch let error as DecodingError {
            throw ModelLoadError.invalidConfig(file: checkpoint.architectureFile, detail: Self.describe(error))
        }
    }

    static func load(_ checkpoint: ModelCheckpoint, context: ModelLoadContext) throws -> LlamaModel {
        let config = try config(for: checkpoint)
        let shard: LlamaShard
        do { shard = try LlamaShard(config: config, plan: context.plan) } catch let error as TensorParallelError {
            throw ModelLoadError.invalidConfig(file: checkpoint.architectureFile, detail: error.description)
        }
        let adapter = LlamaWeightAdapter(format: checkpoint.format, loader: context.weightLoader(checkpoint, supportedEncodings: supportedEncodings),
                                         config: config, kernels: context.kernels, sharding: registration.sharding, shard: shard)
        let widest = max(config.hiddenSize, config.intermediateSize, config.headCount * config.headDimension)
        let chunk = context.options.chunkTokens
        let engine = MatmulEngine(pool: context.pool, maxRows: chunk, maxColumns: widest)
        let weights = try adapter.load()
        // The largest collective: a chunk's hidden states, or the LM head's rows of logits.
        let collective = max(chunk * config.hiddenSize, LlamaModel.logitRowsPerGather * TensorParallelPlan.units(of: config.vocabSize, rank: 0, worldSize: context.plan.worldSize).count)
        let group = try context.joinGroup(slotBytes: collective * MemoryLayout<Float>.stride,
                                          fingerprint: "\(checkpoint.fingerprint) \(config.hiddenSize) \(chunk)")
        return LlamaModel(config: config, weights: weights, rotaryLayout: adapter.rotaryLayout, engine: engine, group: group)
    }

    private static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, _): "'\(key.stringValue)' is required"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            "'\(context.codingPath.map(\.stringValue).joined(separator: "."))': \(context.debugDescription)"
        @unknown default: "\(error)"
        }
    }
}
