import ModelFormats

/// Gemma 3 (text): Gemma 2's graph with per-head Q/K norms and no softcaps; five local
/// (sliding-window) layers to each global one, the local layers with a rotary base of their
/// own (`rope_local_base_freq`, 10000) and no scaling.
public enum Gemma3Architecture {
    public static let family = DecoderFamily(
        name: "gemma3", huggingFaceClassNames: ["Gemma3ForCausalLM"], ggufArchitectures: ["gemma3"],
        weightNames: WeightNameTable.llama.adding(WeightNameTable.sandwichNorms).adding(WeightNameTable.queryKeyNorms),
        ggufRotaryLayout: .rotateHalf,
        huggingFaceConfig: { json in
            for key in ["attention_bias", "use_bidirectional_attention"] where try json.optionalBool(key) == true {
                throw ModelConfigError.unsupported(key: key, value: "true", expected: "false (a causal decoder without biases)")
            }
            let pattern = try json.optionalInt("sliding_window_pattern") ?? 6
            var config = try DecoderConfig(huggingFace: json, tiedByDefault: true, activationKey: "hidden_activation") {
                isLocal($0, pattern: pattern) ? .slidingAttention : .fullAttention
            }
            try config.gemma(huggingFace: json)
            config.queryKeyNorm = true
            config.attentionSoftcap = Float(try json.optionalDouble("attn_logit_softcapping") ?? 0)
            config.finalLogitSoftcap = Float(try json.optionalDouble("final_logit_softcapping") ?? 0)
            return config
        },
        ggufConfig: { metadata, store in
            let window = try metadata.optionalInt("gemma3.attention.sliding_window") ?? 4096
            let pattern = try metadata.optionalInt("gemma3.attention.sliding_window_pattern") ?? 6
            var config = try DecoderConfig(
                gguf: metadata, hasOutputWeight: store.descriptor("output.weight") != nil,
                window: { isLocal($0, pattern: pattern) ? window : 0 },
                rotary: { layer, global in isLocal(layer, pattern: pattern) ? RotaryParameters(base: localBase) : global })
            config.gemmaFromGGUF()
            config.queryKeyNorm = true
            return config
        })

    public static let registration = family.registration

    /// llama.cpp's fixed base for the local layers of GGUF files, which do not store it.
    static let localBase = 10000.0

    /// Every `pattern`-th layer is global; the others slide.
    static func isLocal(_ layer: Int, pattern: Int) -> Bool { pattern > 0 && (layer + 1) % pattern != 0 }
}
