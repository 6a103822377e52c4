import ModelFormats

/// Mistral: Llama's graph where every layer attends over a sliding window when
/// `sliding_window` is set. llama.cpp writes Mistral checkpoints as `llama` GGUF files, which
/// the Llama family reads.
public enum MistralArchitecture {
    public static let family = DecoderFamily(
        name: "mistral", huggingFaceClassNames: ["MistralForCausalLM"], ggufArchitectures: [],
        weightNames: .llama, ggufRotaryLayout: .interleaved,
        huggingFaceConfig: { json in
            try DecoderConfig(huggingFace: json, layerTypes: try LayerType.everyLayerSliding(json))
        },
        ggufConfig: nil)

    public static let registration = family.registration
}
