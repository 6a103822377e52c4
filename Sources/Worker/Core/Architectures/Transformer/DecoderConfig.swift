import Foundation

/// The activation of the gated MLP: `act(gate(x)) * up(x)`.
public enum GatedActivation: String, Sendable, Equatable {
    /// SiLU (Llama, Qwen, Mistral, Phi).
    case silu
    /// GELU with the tanh approximation (Gemma's `gelu_pytorch_tanh`).
    case geluTanh
}

/// Rotary position embedding of a layer: the base of its frequencies and their scaling.
public struct RotaryParameters: Sendable, Equatable {
    public var base: Double
    public var scaling: RotaryScaling

    public init(base: Double, scaling: RotaryScaling = .none) {
        self.base = base
        self.scaling = scaling
    }
}

/// How one layer's attention sees the context.
public struct LayerAttention: Sendable, Equatable {
    /// Positions a token attends back over, itself included (0: the whole context).
    public var window: Int
    public var rotary: RotaryParameters

    public init(window: Int = 0, rotary: RotaryParameters) {
        self.window = window
        self.rotary = rotary
    }
}

/// A decoder-only transformer's hyper-parameters and the knobs that tell the families apart
/// (as MAX's `Llama3Config` does): every family's config parser fills one of these, and the
/// shared graph (`DecoderModel`) is built from it.
public struct DecoderConfig: Sendable, Equatable {
    public var hiddenSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDimension: Int
    public var intermediateSize: Int
    public var vocabSize: Int
    public var rmsNormEpsilon: Double
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]
    /// Per layer: its window and rotary embedding (`layerCount` entries).
    public var layers: [LayerAttention]
    /// Leading dimensions of each head that rotate (the head dimension unless partial).
    public var rotaryDimensions: Int

    /// RMSNorm scales by `w + normWeightOffset`: 0 for `w`, 1 for Gemma's Hugging Face
    /// checkpoints, which store `w - 1` (llama.cpp's converter adds the 1 into GGUF files).
    public var normWeightOffset: Int32 = 0
    /// Q, K and V projections carry biases (Qwen2).
    public var attentionBias = false
    /// An RMSNorm over each query and key head before the rotary embedding (Qwen3, Gemma 3).
    public var queryKeyNorm = false
    /// Norms on the attention and MLP outputs as well, before each residual add (Gemma 2, 3).
    public var sandwichNorms = false
    public var activation: GatedActivation = .silu
    /// Embeddings are multiplied by this on lookup (Gemma: √hidden).
    public var embeddingScale: Float = 1
    /// Scores are `q·k × attentionScale` (nil: 1/√headDimension).
    public var attentionScale: Float?
    /// Scores become `cap·tanh(score/cap)` (0: off; Gemma 2).
    public var attentionSoftcap: Float = 0
    /// Logits become `cap·tanh(logit/cap)` (0: off; Gemma 2).
    public var finalLogitSoftcap: Float = 0

    public init(hiddenSize: Int, layerCount: Int, headCount: Int, kvHeadCount: Int, headDimension: Int,
                intermediateSize: Int, vocabSize: Int, rmsNormEpsilon: Double, maxPositionEmbeddings: Int,
                tieWordEmbeddings: Bool, bosTokenId: Int?, eosTokenIds: [Int], layers: [LayerAttention],
                rotaryDimensions: Int? = nil) {
        self.hiddenSize = hiddenSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headDimension = headDimension
        self.intermediateSize = intermediateSize
        self.vocabSize = vocabSize
        self.rmsNormEpsilon = rmsNormEpsilon
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
        self.layers = layers
        self.rotaryDimensions = rotaryDimensions ?? headDimension
    }

    /// The scale attention applies to `q·k`.
    public var resolvedAttentionScale: Float { attentionScale ?? 1 / Float(headDimension).squareRoot() }

    /// The distinct rotary embeddings the layers use, in first-use order.
    public var rotaries: [RotaryParameters] {
        var seen: [RotaryParameters] = []
        for layer in layers where !seen.contains(layer.rotary) { seen.append(layer.rotary) }
        return seen
    }

    public func validate() throws {
        func positive(_ value: Int, _ key: String) throws {
            guard value > 0 else { throw ModelConfigError.invalid(key: key, value: "\(value)", reason: "must be positive") }
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
            throw ModelConfigError.invalid(key: "num_key_value_heads", value: "\(kvHeadCount)",
                                           reason: "must divide num_attention_heads (\(headCount))")
        }
        guard rotaryDimensions % 2 == 0, rotaryDimensions > 0, rotaryDimensions <= headDimension else {
            throw ModelConfigError.invalid(key: "head_dim", value: "\(headDimension) (rotary \(rotaryDimensions))",
                                           reason: "rotary embedding needs an even number of dimensions within the head")
        }
        guard rmsNormEpsilon > 0, rmsNormEpsilon.isFinite else {
            throw ModelConfigError.invalid(key: "rms_norm_eps", value: "\(rmsNormEpsilon)", reason: "must be a positive number")
        }
        guard layers.count == layerCount else {
            throw ModelConfigError.invalid(key: "layer_types", value: "\(layers.count) entries",
                                           reason: "expected one per layer (\(layerCount))")
        }
        for (index, layer) in layers.enumerated() {
            guard layer.window >= 0 else {
                throw ModelConfigError.invalid(key: "sliding_window", value: "\(layer.window)", reason: "must not be negative (layer \(index))")
            }
        }
        for cap in [("attn_logit_softcapping", attentionSoftcap), ("final_logit_softcapping", finalLogitSoftcap)] {
            guard cap.1 >= 0, cap.1.isFinite else {
                throw ModelConfigError.invalid(key: cap.0, value: "\(cap.1)", reason: "must be a positive number")
            }
        }
        for rotary in rotaries { try validate(rotary) }
    }

    private func validate(_ rotary: RotaryParameters) throws {
        guard rotary.base > 0, rotary.base.isFinite else {
            throw ModelConfigError.invalid(key: "rope_theta", value: "\(rotary.base)", reason: "must be a positive number")
        }
        switch rotary.scaling {
        case .none:
            break
        case .linear(let factor):
            guard factor > 0 else {
                throw ModelConfigError.invalid(key: "rope_scaling.factor", value: "\(factor)", reason: "must be positive")
            }
        case .llama3(let factor, let low, let high, let original):
            guard factor > 0, original > 0 else {
                throw ModelConfigError.invalid(key: "rope_scaling", value: "factor \(factor), original_max_position_embeddings \(original)",
                                               reason: "must be positive")
            }
            guard high > low, low > 0 else {
                throw ModelConfigError.invalid(key: "rope_scaling", value: "low_freq_factor \(low), high_freq_factor \(high)",
                                               reason: "need 0 < low_freq_factor < high_freq_factor")
            }
        case .yarn(let factor, let original, let betaFast, let betaSlow, let attention, _):
            guard factor > 0, original > 0, betaFast > 0, betaSlow > 0, attention > 0 else {
                throw ModelConfigError.invalid(key: "rope_scaling", value: "yarn factor \(factor), original_max_position_embeddings \(original), beta_fast \(betaFast), beta_slow \(betaSlow), attention_factor \(attention)",
                                               reason: "must be positive")
            }
        case .dynamicNTK(let factor, let original):
            guard factor >= 1, original > 0 else {
                throw ModelConfigError.invalid(key: "rope_scaling", value: "dynamic factor \(factor), max_position_embeddings \(original)",
                                               reason: "need factor ≥ 1 and a positive context")
            }
        case .longRope(let short, let long, let original, let attention):
            for (key, factors) in [("short_factor", short), ("long_factor", long)] {
                guard factors.count == rotaryDimensions / 2, factors.allSatisfy({ $0 > 0 && $0.isFinite }) else {
                    throw ModelConfigError.invalid(key: "rope_scaling.\(key)", value: "\(factors.count) values",
                                                   reason: "expected \(rotaryDimensions / 2) positive factors (half the rotary dimensions)")
                }
            }
            guard original > 0, attention > 0 else {
                throw ModelConfigError.invalid(key: "rope_scaling", value: "original_max_position_embeddings \(original), attention_factor \(attention)",
                                               reason: "must be positive")
            }
        case .frequencyDivisors(let divisors):
            guard divisors.count == rotaryDimensions / 2, divisors.allSatisfy({ $0 > 0 }) else {
                throw ModelConfigError.invalid(key: "rope_freqs.weight", value: "\(divisors.count) values",
                                               reason: "expected \(rotaryDimensions / 2) positive divisors")
            }
        }
    }
}

/// What is wrong with a model's config, naming the key (config.json or GGUF metadata).
public enum ModelConfigError: Error, CustomStringConvertible, Equatable {
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
