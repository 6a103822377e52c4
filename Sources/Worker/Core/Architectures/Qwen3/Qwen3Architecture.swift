import ModelFormats

/// Qwen3: Llama's graph with an RMSNorm over each query and key head before the rotary
/// embedding, and an explicit head dimension.
public enum Qwen3Architecture {
    public static let family = DecoderFamily(
        name: "qwen3", huggingFaceClassNames: ["Qwen3ForCausalLM"], ggufArchitectures: ["qwen3"],
        weightNames: WeightNameTable.llama.adding(WeightNameTable.queryKeyNorms), ggufRotaryLayout: .rotateHalf,
        huggingFaceConfig: { json in
            if try json.optionalBool("attention_bias") == true {
                throw ModelConfigError.unsupported(key: "attention_bias", value: "true", expected: "false (Qwen3 biases are not implemented)")
            }
            var config = try DecoderConfig(huggingFace: json, layerTypes: try Qwen2Architecture.layerTypes(json))
            config.queryKeyNorm = true
            return config
        },
        ggufConfig: { metadata, store in
            var config = try DecoderConfig(gguf: metadata,
                                           hasOutputWeight: store.descriptor("output.weight") != nil)
            config.queryKeyNorm = true
            return config
        })

    public static let registration = family.registration
}
