import ModelFormats

/// Qwen2 and Qwen2.5: Llama's graph with biases on the Q, K and V projections; sliding-window
/// layers only when `use_sliding_window` says so (from `max_window_layers` on).
public enum Qwen2Architecture {
    public static let family = DecoderFamily(
        name: "qwen2", huggingFaceClassNames: ["Qwen2ForCausalLM"], ggufArchitectures: ["qwen2"],
        weightNames: WeightNameTable.llama.adding(WeightNameTable.attentionBiases), ggufRotaryLayout: .rotateHalf,
        huggingFaceConfig: { json in
            var config = try DecoderConfig(huggingFace: json, layerTypes: try layerTypes(json))
            config.attentionBias = true
            return config
        },
        ggufConfig: { metadata, store in
            var config = try DecoderConfig(gguf: metadata,
                                           hasOutputWeight: store.descriptor("output.weight") != nil)
            config.attentionBias = true
            return config
        })

    public static let registration = family.registration

    /// Qwen's layer kinds before `layer_types` existed: sliding from `max_window_layers` on,
    /// when `use_sliding_window` is set.
    static func layerTypes(_ json: HuggingFaceConfig) throws -> (Int) -> LayerType {
        let sliding = try json.optionalBool("use_sliding_window") ?? false
        let firstSliding = try json.optionalInt("max_window_layers") ?? 0
        return { layer in sliding && layer >= firstSliding ? .slidingAttention : .fullAttention }
    }
}
