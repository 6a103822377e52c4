import Foundation
import ModelFormats

/// A Hugging Face `config.json`, read key by key: `null` counts as absent, and every error
/// names the key (with its path inside nested objects).
public struct HuggingFaceConfig: Sendable {
    private let values: [String: ModelJSON]
    private let path: String

    public init(data: Data) throws {
        guard case .object(let values) = try? ModelJSON.parse(data, source: "config.json") else {
            throw ModelConfigError.invalid(key: "config.json", value: "(not a JSON object)", reason: "cannot be parsed")
        }
        self.init(values: values, path: "")
    }

    private init(values: [String: ModelJSON], path: String) {
        self.values = values
        self.path = path
    }

    private func name(_ key: String) -> String { path + key }

    private func value(_ key: String) -> ModelJSON? {
        guard let value = values[key], value != .null else { return nil }
        return value
    }

    private func invalid(_ key: String, _ value: ModelJSON, _ reason: String) -> ModelConfigError {
        .invalid(key: name(key), value: "\(value)", reason: reason)
    }

    public func optionalInt(_ key: String) throws -> Int? {
        switch value(key) {
        case nil: return nil
        case .integer(let number)?: return Int(number)
        case .number(let number)? where number == number.rounded() && abs(number) < 1e15: return Int(number)
        case let other?: throw invalid(key, other, "must be an integer")
        }
    }

    public func int(_ key: String) throws -> Int {
        guard let value = try optionalInt(key) else { throw ModelConfigError.missing(key: name(key), context: "config.json") }
        return value
    }

    public func optionalDouble(_ key: String) throws -> Double? {
        switch value(key) {
        case nil: return nil
        case .integer(let number)?: return Double(number)
        case .number(let number)?: return number
        case let other?: throw invalid(key, other, "must be a number")
        }
    }

    public func optionalBool(_ key: String) throws -> Bool? {
        switch value(key) {
        case nil: return nil
        case .bool(let flag)?: return flag
        case let other?: throw invalid(key, other, "must be true or false")
        }
    }

    public func optionalString(_ key: String) throws -> String? {
        switch value(key) {
        case nil: return nil
        case .string(let string)?: return string
        case let other?: throw invalid(key, other, "must be a string")
        }
    }

    public func optionalStringArray(_ key: String) throws -> [String]? {
        guard let value = value(key) else { return nil }
        guard case .array(let items) = value else { throw invalid(key, value, "must be a list of strings") }
        return try items.map { item in
            guard case .string(let string) = item else { throw invalid(key, value, "must be a list of strings") }
            return string
        }
    }

    public func optionalDoubleArray(_ key: String) throws -> [Double]? {
        guard let value = value(key) else { return nil }
        guard case .array(let items) = value else { throw invalid(key, value, "must be a list of numbers") }
        return try items.map { item in
            switch item {
            case .integer(let number): return Double(number)
            case .number(let number): return number
            default: throw invalid(key, value, "must be a list of numbers")
            }
        }
    }

    /// An integer or a list of integers (`eos_token_id`), as a list.
    public func intList(_ key: String) throws -> [Int] {
        guard let value = value(key) else { return [] }
        guard case .array(let items) = value else { return [try int(key)] }
        return try items.map { item in
            guard case .integer(let number) = item else { throw invalid(key, value, "must be an integer or a list of integers") }
            return Int(number)
        }
    }

    public func optionalObject(_ key: String) throws -> HuggingFaceConfig? {
        guard let value = value(key) else { return nil }
        guard case .object(let members) = value else { throw invalid(key, value, "must be an object") }
        return HuggingFaceConfig(values: members, path: name(key) + ".")
    }

    /// Every key, for the rope parameters keyed by layer type.
    var keys: [String] { Array(values.keys) }
}

/// The layer kinds of `layer_types` (transformers ≥ 4.53 writes one per layer).
public enum LayerType: String, Sendable {
    case fullAttention = "full_attention"
    case slidingAttention = "sliding_attention"

    /// Every layer slides when config.json sets `sliding_window` (Mistral, Phi-3), else none does.
    public static func everyLayerSliding(_ json: HuggingFaceConfig) throws -> (Int) -> LayerType {
        let sliding = try json.optionalInt("sliding_window") != nil
        return { _ in sliding ? .slidingAttention : .fullAttention }
    }
}

extension DecoderConfig {
    /// The keys every Llama-like `config.json` shares, with the family's defaults for the
    /// absent ones. Each layer gets `window(layer)` and the rotary embedding of its type.
    public init(huggingFace json: HuggingFaceConfig, tiedByDefault: Bool = false, defaultEpsilon: Double = 1e-6,
                activationKey: String = "hidden_act",
                layerTypes defaultLayerTypes: (Int) -> LayerType = { _ in .fullAttention }) throws {
        let hidden = try json.int("hidden_size")
        let layerCount = try json.int("num_hidden_layers")
        let heads = try json.int("num_attention_heads")
        let headDimension = try json.optionalInt("head_dim") ?? hidden / max(heads, 1)
        var types = (0..<max(layerCount, 0)).map(defaultLayerTypes)
        if let names = try json.optionalStringArray("layer_types") {
            types = try names.map { name in
                guard let type = LayerType(rawValue: name) else {
                    throw ModelConfigError.unsupported(key: "layer_types", value: name, expected: "full_attention or sliding_attention")
                }
                return type
            }
        }
        let window = try json.optionalInt("sliding_window") ?? 0
        if window == 0, types.contains(.slidingAttention) {
            throw ModelConfigError.missing(key: "sliding_window", context: "layer_types has sliding_attention layers")
        }
        var rotaryByType: [LayerType: RotaryParameters] = [:]
        for type in Set(types) { rotaryByType[type] = try Self.rotary(json, layerType: type) }
        let layers = types.map { LayerAttention(window: $0 == .slidingAttention ? window : 0, rotary: rotaryByType[$0]!) }
        let partial = try json.optionalDouble("partial_rotary_factor") ?? 1
        // Dynamic NTK stretches the context by its factor (vLLM's reading; transformers sets no bound).
        var context = try json.optionalInt("max_position_embeddings") ?? 2048
        for layer in layers {
            if case .dynamicNTK(let factor, let original) = layer.rotary.scaling {
                context = max(context, Int(Double(original) * factor))
            }
        }
        self.init(hiddenSize: hidden, layerCount: layerCount, headCount: heads,
                  kvHeadCount: try json.optionalInt("num_key_value_heads") ?? heads, headDimension: headDimension,
                  intermediateSize: try json.int("intermediate_size"), vocabSize: try json.int("vocab_size"),
                  rmsNormEpsilon: try json.optionalDouble("rms_norm_eps") ?? defaultEpsilon,
                  maxPositionEmbeddings: context,
                  tieWordEmbeddings: try json.optionalBool("tie_word_embeddings") ?? tiedByDefault,
                  bosTokenId: try json.optionalInt("bos_token_id"), eosTokenIds: try json.intList("eos_token_id"),
                  layers: layers, rotaryDimensions: Int((Double(headDimension) * partial).rounded()))
        let activation = try json.optionalString(activationKey) ?? "silu"
        switch activation {
        case "silu", "swish": self.activation = .silu
        case "gelu_pytorch_tanh", "gelu_tanh", "gelu_new": self.activation = .geluTanh
        default: throw ModelConfigError.unsupported(key: activationKey, value: activation, expected: "silu or gelu_pytorch_tanh")
        }
        if try json.optionalBool("mlp_bias") == true {
            throw ModelConfigError.unsupported(key: "mlp_bias", value: "true", expected: "false (MLP biases are not implemented)")
        }
    }

    /// The rotary embedding of one layer type: `rope_theta` + `rope_scaling` (transformers 4),
    /// or `rope_parameters`, flat or keyed by layer type (transformers 5). Gemma 3's local
    /// layers read `rope_local_base_freq` without scaling in the transformers 4 spelling.
    static func rotary(_ json: HuggingFaceConfig, layerType: LayerType) throws -> RotaryParameters {
        var parameters = try json.optionalObject("rope_parameters")
        if let byType = parameters, byType.keys.contains(where: { LayerType(rawValue: $0) != nil }) {
            parameters = try byType.optionalObject(layerType.rawValue)
        }
        if layerType == .slidingAttention, parameters == nil, let local = try json.optionalDouble("rope_local_base_freq") {
            return RotaryParameters(base: local)
        }
        let base = try json.optionalDouble("rope_theta") ?? parameters?.optionalDouble("rope_theta") ?? 10000
        let scaling = try json.optionalObject("rope_scaling") ?? parameters
        let context = try json.optionalInt("max_position_embeddings") ?? 2048
        return RotaryParameters(base: base, scaling: try scaling.map {
            try Self.scaling($0, context: context, original: try json.optionalInt("original_max_position_embeddings"))
        } ?? .none)
    }

    /// YaRN's `mscale` (its paper's eq. 21).
    static func yarnScale(_ factor: Double, _ mscale: Double = 1) -> Double {
        factor <= 1 ? 1 : 0.1 * mscale * log(factor) + 1
    }

    /// `original`: config.json's top-level `original_max_position_embeddings` (Phi-3 writes it
    /// there in the transformers 4 spelling).
    private static func scaling(_ parameters: HuggingFaceConfig, context: Int, original topOriginal: Int?) throws -> RotaryScaling {
        let kind = try parameters.optionalString("rope_type") ?? parameters.optionalString("type") ?? "default"
        func required(_ key: String) throws -> Double {
            guard let value = try parameters.optionalDouble(key) else {
                throw ModelConfigError.missing(key: "rope_scaling.\(key)", context: "rope type \(kind)")
            }
            return value
        }
        switch kind {
        case "default":
            return .none
        case "linear":
            return .linear(factor: try required("factor"))
        case "llama3":
            return .llama3(factor: try required("factor"), lowFrequencyFactor: try required("low_freq_factor"),
                           highFrequencyFactor: try required("high_freq_factor"),
                           originalMaxPositions: Int(try required("original_max_position_embeddings")))
        case "yarn":
            let original = try parameters.optionalInt("original_max_position_embeddings") ?? context
            let factor = try parameters.optionalDouble("factor") ?? Double(context) / Double(max(original, 1))
            var attention = try parameters.optionalDouble("attention_factor")
            if attention == nil, let mscale = try parameters.optionalDouble("mscale"), mscale != 0,
               let all = try parameters.optionalDouble("mscale_all_dim"), all != 0 {
                attention = yarnScale(factor, mscale) / yarnScale(factor, all)
            }
            return .yarn(factor: factor, originalMaxPositions: original,
                         betaFast: try parameters.optionalDouble("beta_fast") ?? 32,
                         betaSlow: try parameters.optionalDouble("beta_slow") ?? 1,
                         attentionFactor: attention ?? yarnScale(factor), truncate: try parameters.optionalBool("truncate") ?? true)
        case "dynamic":
            return .dynamicNTK(factor: try required("factor"), originalMaxPositions: context)
        case "longrope", "su":
            guard let original = try parameters.optionalInt("original_max_position_embeddings") ?? topOriginal else {
                throw ModelConfigError.missing(key: "original_max_position_embeddings", context: "rope type \(kind)")
            }
            func factors(_ key: String) throws -> [Double] {
                guard let values = try parameters.optionalDoubleArray(key) else {
                    throw ModelConfigError.missing(key: "rope_scaling.\(key)", context: "rope type \(kind)")
                }
                return values
            }
            // Without `factor`, the ratio of the contexts sets the attention scaling (as transformers does for Phi-3).
            let factor = try parameters.optionalDouble("factor") ?? Double(context) / Double(max(original, 1))
            let attention = try parameters.optionalDouble("attention_factor")
                ?? (factor <= 1 ? 1 : (1 + log(factor) / log(Double(original))).squareRoot())
            return .longRope(short: try factors("short_factor"), long: try factors("long_factor"),
                             originalMaxPositions: original, attentionFactor: attention)
        default:
            throw ModelConfigError.unsupported(key: "rope_scaling.rope_type", value: kind,
                                               expected: "default, linear, dynamic, llama3, yarn or longrope")
        }
    }

    /// The keys every Llama-like GGUF file shares (`<arch>.*`), with llama.cpp's defaults.
    /// `tensorScaling` is rotary scaling a family reads from tensors (llama3's `rope_freqs.weight`,
    /// Phi-3's LongRoPE factors), in place of `rope.scaling.*`; `hasOutputWeight` false means tied
    /// embeddings. Each layer gets `window(layer)` (0: full) and `rotary(layer, global)` (default:
    /// the file's one rotary embedding).
    public init(gguf metadata: GGUFMetadata, tensorScaling: RotaryScaling? = nil, hasOutputWeight: Bool,
                window: (Int) -> Int = { _ in 0 }, rotary: ((Int, RotaryParameters) -> RotaryParameters)? = nil) throws {
        let prefix = (try metadata.optionalString("general.architecture")) ?? "llama"
        func key(_ name: String) -> String { "\(prefix).\(name)" }
        let hidden = try metadata.int(key("embedding_length"))
        let layerCount = try metadata.int(key("block_count"))
        let heads = try metadata.int(key("attention.head_count"))
        // As llama.cpp: the key length, else hidden / heads; rope.dimension_count is the rotary
        // part of a head (less than all of it in partial-rotary files such as Phi-4-mini's).
        let headDimension = try metadata.optionalInt(key("attention.key_length")) ?? hidden / max(heads, 1)
        let vocabSize = try metadata.optionalInt(key("vocab_size")) ?? metadata.stringArray("tokenizer.ggml.tokens").count
        let scaling: RotaryScaling
        if let tensorScaling {
            scaling = tensorScaling
        } else {
            switch try metadata.optionalString(key("rope.scaling.type")) ?? "none" {
            case "none": scaling = .none
            case "linear": scaling = .linear(factor: try metadata.double(key("rope.scaling.factor")))
            case "yarn":
                let factor = try metadata.double(key("rope.scaling.factor"))
                scaling = .yarn(factor: factor, originalMaxPositions: try metadata.int(key("rope.scaling.original_context_length")),
                                betaFast: try metadata.optionalDouble(key("rope.scaling.yarn_beta_fast")) ?? 32,
                                betaSlow: try metadata.optionalDouble(key("rope.scaling.yarn_beta_slow")) ?? 1,
                                attentionFactor: Self.yarnScale(factor), truncate: true)
            case let other:
                throw ModelConfigError.unsupported(key: key("rope.scaling.type"), value: other,
                                                   expected: "none, linear or yarn (llama3 comes as rope_freqs.weight)")
            }
        }
        let global = RotaryParameters(base: try metadata.optionalDouble(key("rope.freq_base")) ?? 10000, scaling: scaling)
        let layers = (0..<max(layerCount, 0)).map { layer in
            LayerAttention(window: window(layer), rotary: rotary?(layer, global) ?? global)
        }
        self.init(hiddenSize: hidden, layerCount: layerCount, headCount: heads,
                  kvHeadCount: try metadata.optionalInt(key("attention.head_count_kv")) ?? heads, headDimension: headDimension,
                  intermediateSize: try metadata.int(key("feed_forward_length")), vocabSize: vocabSize,
                  rmsNormEpsilon: try metadata.optionalDouble(key("attention.layer_norm_rms_epsilon")) ?? 1e-5,
                  maxPositionEmbeddings: try metadata.optionalInt(key("context_length")) ?? 2048,
                  tieWordEmbeddings: !hasOutputWeight, bosTokenId: try metadata.optionalInt("tokenizer.ggml.bos_token_id"),
                  eosTokenIds: (try metadata.optionalInt("tokenizer.ggml.eos_token_id")).map { [$0] } ?? [],
                  layers: layers, rotaryDimensions: try metadata.optionalInt(key("rope.dimension_count")))
    }
}
