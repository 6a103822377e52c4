import ModelFormats

/// Llama (and the checkpoints that reuse its class: SmolLM2, Llama 3.x, Mistral-as-llama GGUFs):
/// the shared graph as it is, pre-norm with SiLU, no biases.
public enum LlamaArchitecture {
    public static let family = DecoderFamily(
        name: "llama", huggingFaceClassNames: ["LlamaForCausalLM"], ggufArchitectures: ["llama"],
        weightNames: .llama, ggufRotaryLayout: .interleaved,
        huggingFaceConfig: { json in
            for key in ["attention_bias", "mlp_bias"] where try json.optionalBool(key) == true {
                throw ModelConfigError.unsupported(key: key, value: "true", expected: "false (Llama biases are not implemented)")
            }
            return try DecoderConfig(huggingFace: json)
        },
        ggufConfig: { metadata, store in
            let divisors = store.descriptor("rope_freqs.weight") == nil ? nil : try store.floats("rope_freqs.weight", rows: nil)
            return try DecoderConfig(gguf: metadata, tensorScaling: divisors.map { .frequencyDivisors($0) },
                                     hasOutputWeight: store.descriptor("output.weight") != nil)
        })

    public static let registration = family.registration
}
