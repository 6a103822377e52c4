import Foundation
import ModelFormats

/// A decoder-only family: only what sets it apart from the shared graph — how its config
/// reads (config.json and GGUF metadata), its weight names, and its GGUF files' rotary layout.
/// Serving, KV, parallelism, weight loading and sharding come with `registration`.
public struct DecoderFamily: Sendable {
    public let name: String
    /// `architectures` class names in config.json.
    public let huggingFaceClassNames: [String]
    /// `general.architecture` values in GGUF.
    public let ggufArchitectures: [String]
    public let weightNames: WeightNameTable
    public let huggingFaceConfig: @Sendable (HuggingFaceConfig) throws -> DecoderConfig
    /// The GGUF metadata and the file's tensors (some families' configs depend on which exist);
    /// nil for a family llama.cpp writes under another family's name.
    public let ggufConfig: (@Sendable (GGUFMetadata, any WeightStore) throws -> DecoderConfig)?
    /// llama.cpp's converter permutes Q/K rows for pairwise rotation only in the families it
    /// runs with "normal" rope (Llama); NEOX-rope families' files keep Hugging Face's order.
    public let ggufRotaryLayout: RotaryLayout

    public init(name: String, huggingFaceClassNames: [String], ggufArchitectures: [String], weightNames: WeightNameTable,
                ggufRotaryLayout: RotaryLayout,
                huggingFaceConfig: @escaping @Sendable (HuggingFaceConfig) throws -> DecoderConfig,
                ggufConfig: (@Sendable (GGUFMetadata, any WeightStore) throws -> DecoderConfig)?) {
        self.name = name
        self.huggingFaceClassNames = huggingFaceClassNames
        self.ggufArchitectures = ggufArchitectures
        self.weightNames = weightNames
        self.ggufRotaryLayout = ggufRotaryLayout
        self.huggingFaceConfig = huggingFaceConfig
        self.ggufConfig = ggufConfig
    }

    /// Encodings the loader accepts: those with kernels are used as stored; the other ggml
    /// block encodings are converted to Q8_0 at load.
    public static let supportedEncodings: Set<TensorEncoding> = [
        .f32, .f16, .bf16,
        .ggml(.q4_0), .ggml(.q4_1), .ggml(.q5_0), .ggml(.q5_1), .ggml(.q8_0),
        .ggml(.q2_K), .ggml(.q3_K), .ggml(.q4_K), .ggml(.q5_K), .ggml(.q6_K),
    ]

    public var registration: ArchitectureRegistration {
        let family = self
        return ArchitectureRegistration(
            name: name, huggingFaceClassNames: huggingFaceClassNames, ggufArchitectures: ggufArchitectures,
            supportedEncodings: Self.supportedEncodings, sharding: DecoderSharding.table,
            load: { checkpoint, context in try family.load(checkpoint, context: context) })
    }

    /// Reads and checks the config from the checkpoint (config.json or GGUF metadata); errors
    /// name the file and the key.
    public func config(for checkpoint: ModelCheckpoint) throws -> DecoderConfig {
        do {
            let config: DecoderConfig
            switch checkpoint.format {
            case .huggingFace:
                guard let data = checkpoint.configJSON else {
                    throw ModelLoadError.invalidConfig(file: checkpoint.architectureFile, detail: "config.json is missing")
                }
                config = try huggingFaceConfig(try HuggingFaceConfig(data: data))
            case .gguf:
                guard let metadata = checkpoint.ggufMetadata, let ggufConfig else {
                    throw ModelLoadError.invalidConfig(file: checkpoint.architectureFile, detail: "GGUF metadata is missing")
                }
                config = try ggufConfig(metadata, checkpoint.weights)
            }
            try config.validate()
            return config
        } catch let error as ModelConfigError {
            throw ModelLoadError.invalidConfig(file: checkpoint.architectureFile, detail: error.description)
        } catch let error as GGUFError {
            throw ModelLoadError.invalidConfig(file: checkpoint.architectureFile, detail: "\(error)")
        }
    }

    func load(_ checkpoint: ModelCheckpoint, context: ModelLoadContext) throws -> DecoderModel {
        var config = try config(for: checkpoint)
        // A shorter served context (a longer one is refused once the model is built).
        if let limit = context.options.maxModelLength, limit < config.maxPositionEmbeddings {
            config.maxPositionEmbeddings = limit
        }
        let shard: DecoderShard
        do { shard = try DecoderShard(config: config, plan: context.plan) } catch let error as TensorParallelError {
            throw ModelLoadError.invalidConfig(file: checkpoint.architectureFile, detail: error.description)
        }
        let adapter = DecoderWeightAdapter(
            format: checkpoint.format, loader: context.weightLoader(checkpoint, supportedEncodings: Self.supportedEncodings),
            config: config, names: weightNames, kernels: context.kernels, sharding: DecoderSharding.table, shard: shard)
        let widest = max(config.hiddenSize, config.intermediateSize, config.headCount * config.headDimension)
        let chunk = context.options.chunkTokens
        let engine = MatmulEngine(pool: context.pool, maxRows: chunk, maxColumns: widest)
        let weights = try adapter.load()
        // The largest collective: a chunk's hidden states, or the LM head's rows of logits.
        let collective = max(chunk * config.hiddenSize,
                             DecoderModel.logitRowsPerGather * TensorParallelPlan.units(of: config.vocabSize, rank: 0, worldSize: context.plan.worldSize).count)
        let group = try context.joinGroup(slotBytes: collective * MemoryLayout<Float>.stride,
                                          fingerprint: "\(checkpoint.fingerprint) \(config.hiddenSize) \(chunk)")
        let layout: RotaryLayout = checkpoint.format == .gguf ? ggufRotaryLayout : .rotateHalf
        return DecoderModel(config: config, weights: weights, rotaryLayout: layout, engine: engine, group: group)
    }
}
