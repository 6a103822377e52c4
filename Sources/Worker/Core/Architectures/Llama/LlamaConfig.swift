import Foundation
import ModelFormats

/// Llama hyper-parameters, read from a Hugging Face `config.json` or from GGUF metadata, with
/// the family's defaults for absent keys.
public struct LlamaConfig: Codable, Sendable, Equatable {
    public var hiddenSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDimension: Int
    public var intermediateSize: Int
    public var vocabSize: Int
    public var rmsNormEpsilon: Double
    public var ropeTheta: Double
    public var ropeScaling: RotaryScaling
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]

    public init(hiddenSize: Int, layerCount: Int, headCount: Int, kvHeadCount: Int, headDimension: Int,
                intermediateSize: Int, vocabSize: Int, rmsNormEpsilon: Double, ropeTheta: Double,
                ropeScaling: RotaryScaling, maxPositionEmbeddings: Int, tieWordEmbeddings: Bool,
                bosTokenId: Int?, eosTokenIds: [Int]) throws {
        self.hiddenSize = hiddenSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headDimension = headDimension
        self.intermediateSize = intermediateSize
        self.vocabSize = vocabSize
        self.rmsNormEpsilon = rmsNormEpsilon
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
        try validate()
    }

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case layerCount = "num_hidden_layers"
        case headCount = "num_attention_heads"
        case kvHeadCount = "num_key_value_heads"
        case headDimension = "head_dim"
        case intermediateSize = "intermediate_size"
        case vocabSize = "vocab_size"
        case rmsNormEpsilon = "rms_norm_eps"
        case ropeTheta = "rope_theta"
        case ropeScaling = "rope_scaling"
        case ropeParameters = "rope_parameters"
        case maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case bosTokenId = "bos_token_id"
        case eosTokenId = "eos_token_id"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
    }

    /// `rope_scaling` (and, since transformers 5, `rope_parameters`, which also carries the theta).
    struct RopeParameters: Codable {
        var type: String?
        var ropeType: String?
        var factor: Double?
        var lowFreqFactor: Double?
        var highFreqFactor: Double?
        var originalMaxPositionEmbeddings: Int?
        var ropeTheta: Double?

        enum CodingKeys: String, CodingKey {
            case type
            case ropeType = "rope_type"
            case factor
            case lowFreqFactor = "low_freq_factor"
            case highFreqFactor = "high_freq_factor"
            case originalMaxPositionEmbeddings = "original_max_position_embeddings"
            case ropeTheta = "rope_theta"
        }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        layerCount = try c.decode(Int.self, forKey: .layerCount)
        headCount = try c.decode(Int.self, forKey: .headCount)
        kvHeadCount = try c.decodeIfPresent(Int.self, forKey: .kvHeadCount) ?? headCount
        headDimension = try c.decodeIfPresent(Int.self, forKey: .headDimension)
            ?? hiddenSize / max(headCount, 1)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        rmsNormEpsilon = try c.decodeIfPresent(Double.self, forKey: .rmsNormEpsilon) ?? 1e-6
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        bosTokenId = try c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        if let single = try? c.decodeIfPresent(Int.self, forKey: .eosTokenId) {
            eosTokenIds = [single]
        } else {
            eosTokenIds = try c.decodeIfPresent([Int].self, forKey: .eosTokenId) ?? []
        }

        let activation = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        guard activation == "silu" else {
            throw LlamaConfigError.unsupported(key: "hidden_act", value: activation, expected: "silu")
        }
        for key in [CodingKeys.attentionBias, .mlpBias] where try c.decodeIfPresent(Bool.self, forKey: key) == true {
            throw LlamaConfigError.unsupported(key: key.rawValue, value: "true", expected: "false (biases are not implemented)")
        }

        let scaling = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeScaling)
        let parameters = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters)
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? parameters?.ropeTheta ?? 10000
        ropeScaling = try Self.scaling(from: scaling ?? parameters)
        try validate()
    }

    private static func scaling(from parameters: RopeParameters?) throws -> RotaryScaling {
        guard let parameters else { return .none }
        let kind = parameters.ropeType ?? parameters.type ?? "default"
        func required<T>(_ value: T?, _ key: String) throws -> T {
            guard let value else { throw LlamaConfigError.missing(key: "rope_scaling.\(key)", context: "rope type \(kind)") }
            return value
        }
        switch kind {
        case "default":
            return .none
        case "linear":
            return .linear(factor: try required(parameters.factor, "factor"))
        case "llama3":
            return .llama3(factor: try required(parameters.factor, "factor"),
                           lowFrequencyFactor: try required(parameters.lowFreqFactor, "low_freq_factor"),
                           highFrequencyFactor: try required(parameters.highFreqFactor, "high_freq_factor"),
                           originalMaxPositions: try required(parameters.originalMaxPositionEmbeddings,
                                                              "original_max_position_embeddings"))
        default:
            throw LlamaConfigError.unsupported(key: "rope_scaling.rope_type", value: kind,
                                               expected: "default, linear or llama3")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(layerCount, forKey: .layerCount)
        try c.encode(headCount, forKey: .headCount)
        try c.encode(kvHeadCount, forKey: .kvHeadCount)
        try c.encode(headDimension, forKey: .headDimension)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(rmsNormEpsilon, forKey: .rmsNormEpsilon)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
        try c.encode(eosTokenIds, forKey: .eosTokenId)
        switch ropeScaling {
        case .none, .frequencyDivisors:
            break
        case .linear(let factor):
            try c.encode(RopeParameters(ropeType: "linear", factor: factor), forKey: .ropeScaling)
        case .llama3(let factor, let low, let high, let original):
            try c.encode(RopeParameters(ropeType: "llama3", factor: factor, lowFreqFactor: low,
                                        highFreqFactor: high, originalMaxPositionEmbeddings: original),
                         forKey: .ropeScaling)
        }
    }

    /// Reads GGUF `llama.*` metadata. `ropeFrequencyDivisors` is the `rope_freqs.weight` tensor
    /// (llama3 scaling as llama.cpp stores it); `hasOutputWeight` false means tied embeddings.
    public init(gguf metadata: GGUFMetadata, ropeFrequencyDivisors: [Float]?, hasOutputWeight: Bool) throws {
        let prefix = (try metadata.optionalString("general.architecture")) ?? "llama"
        func key(_ name: String) -> String { "\(prefix).\(name)" }
        hiddenSize = try metadata.int(key("embedding_length"))
        layerCount = try metadata.int(key("block_count"))
        headCount = try metadata.int(key("attention.head_count"))
        kvHeadCount = try metadata.optionalInt(key("attention.head_count_kv")) ?? headCount
        headDimension = try metadata.optionalInt(key("attention.key_length"))
            ?? metadata.optionalInt(key("rope.dimension_count"))
            ?? hiddenSize / max(headCount, 1)
        intermediateSize = try metadata.int(key("feed_forward_length"))
        if let count = try metadata.optionalInt(key("vocab_size")) {
            vocabSize = count
        } else {
            vocabSize = try metadata.stringArray("tokenizer.ggml.tokens").count
        }
        rmsNormEpsilon = try metadata.optionalDouble(key("attention.layer_norm_rms_epsilon")) ?? 1e-5
        ropeTheta = try metadata.optionalDouble(key("rope.freq_base")) ?? 10000
        maxPositionEmbeddings = try metadata.optionalInt(key("context_length")) ?? 2048
        tieWordEmbeddings = !hasOutputWeight
        bosTokenId = try metadata.optionalInt("tokenizer.ggml.bos_token_id")
        eosTokenIds = (try metadata.optionalInt("tokenizer.ggml.eos_token_id")).map { [$0] } ?? []
        if let divisors = ropeFrequencyDivisors {
            ropeScaling = .frequencyDivisors(divisors)
        } else {
            switch try metadata.optionalString(key("rope.scaling.type")) ?? "none" {
            case "none":
                ropeScaling = .none
            case "linear":
                ropeScaling = .linear(factor: try metadata.double(key("rope.scaling.factor")))
            case let other:
                throw LlamaConfigError.unsupported(key: key("rope.scaling.type"), value: other,
                                                   expected: "none or linear (llama3 comes as rope_freqs.weight)")
            }
        }
        try validate()
    }

    /// Query heads per KV head.
    public var groupSize: Int { headCount / kvHeadCount }

    func validate() throws {
        func positive(_ value: Int, _ key: String) throws {
            guard value > 0 else { throw LlamaConfigError.invalid(key: key, value: "\(value)", reason: "must be positive") }
        }
        try positive(hiddenSize, "hidden_size")
        try positive(layerCount, "num_hidden_layers")
        try positive(headCount, "num_attention_heads")
        try positive(kvHeadCount, "num_key_value_heads")
        try positive(headDimension, "head_dim")
        try positive(intermediateSize, "intermediate_size")
        try positive(vocabSize, "vocab_size")
        try positive(maxPositionEmbeddings, "max_position_embeddings")
        guard headCount % kvHeadCount == 0 else {
            throw LlamaConfigError.invalid(key: "num_key_value_heads", value: "\(kvHeadCount)",
                                           reason: "must divide num_attention_heads (\(headCount))")
        }
        guard headDimension % 2 == 0 else {
            throw LlamaConfigError.invalid(key: "head_dim", value: "\(headDimension)", reason: "rotary embedding needs an even head dimension")
        }
        guard rmsNormEpsilon > 0, rmsNormEpsilon.isFinite else {
            throw LlamaConfigError.invalid(key: "rms_norm_eps", value: "\(rmsNormEpsilon)", reason: "must be a positive number")
        }
        guard ropeTheta > 0, ropeTheta.isFinite else {
            throw LlamaConfigError.invalid(key: "rope_theta", value: "\(ropeTheta)", reason: "must be a positive number")
        }
        switch ropeScaling {
        case .none:
            break
        case .linear(let factor):
            guard factor > 0 else {
                throw LlamaConfigError.invalid(key: "rope_scaling.factor", value: "\(factor)", reason: "must be positive")
            }
        case .llama3(let factor, let low, let high, let original):
            guard factor > 0, original > 0 else {
                throw LlamaConfigError.invalid(key: "rope_scaling", value: "factor \(factor), original_max_position_embeddings \(original)",
                                               reason: "must be positive")
            }
            guard high > low, low > 0 else {
                throw LlamaConfigError.invalid(key: "rope_scaling", value: "low_freq_factor \(low), high_freq_factor \(high)",
                                               reason: "need 0 < low_freq_factor < high_freq_factor")
            }
        case .frequencyDivisors(let divisors):
            guard divisors.count == headDimension / 2, divisors.allSatisfy({ $0 > 0 }) else {
                throw LlamaConfigError.invalid(key: "rope_freqs.weight", value: "\(divisors.count) values",
                                               reason: "expected \(headDimension / 2) positive divisors")
            }
        }
    }
}

public enum LlamaConfigError: Error, CustomStringConvertible, Equatable {
    case missing(key: String, context: String)
    case invalid(key: String, value: String, reason: String)
    case unsupported(key: String, value: String, expected: String)

    public var description: String {
        switch self {
        case .missing(let key, let context): "'\(key)' is required (\(context))"
        case .invalid(let key, let value, let reason): "'\(key)' = \(value) is invalid: \(reason)"
        case .unsupported(let key, let value, let expected): "'\(key)' = \(value) is not supported (expected \(expected))"
        }
    }
}
