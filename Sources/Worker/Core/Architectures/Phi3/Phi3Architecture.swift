import ModelFormats

/// Phi-3 (and Phi-4-mini): Llama's graph read from fused tensors (Q | K | V in `qkv_proj`,
/// gate | up in `gate_up_proj`), a partial rotary embedding where `partial_rotary_factor` says
/// so, and a sliding window on every layer when `sliding_window` is set. LongRoPE (the 128k
/// checkpoints' `rope_scaling`, GGUF `rope_factors_long`) is refused with an error naming it.
public enum Phi3Architecture {
    static let fusedNames: [DecoderWeight: CheckpointNames] = [
        .queryKeyValue: CheckpointNames(huggingFace: "model.layers.{layer}.self_attn.qkv_proj.weight", gguf: "blk.{layer}.attn_qkv.weight"),
        .gateUp: CheckpointNames(huggingFace: "model.layers.{layer}.mlp.gate_up_proj.weight", gguf: "blk.{layer}.ffn_up.weight"),
    ]

    public static let family = DecoderFamily(
        name: "phi3", huggingFaceClassNames: ["Phi3ForCausalLM"], ggufArchitectures: ["phi3"],
        weightNames: WeightNameTable.llama.removing([.query, .key, .value, .gate, .up]).adding(fusedNames),
        ggufRotaryLayout: .rotateHalf,
        huggingFaceConfig: { json in
            try DecoderConfig(huggingFace: json, layerTypes: try LayerType.everyLayerSliding(json))
        },
        ggufConfig: { metadata, store in
            if store.descriptor("rope_factors_long.weight") != nil {
                throw ModelConfigError.unsupported(key: "rope_factors_long.weight", value: "present (LongRoPE)",
                                                   expected: "a Phi-3 file without LongRoPE factors")
            }
            let window = try metadata.optionalInt("phi3.attention.sliding_window") ?? 0
            return try DecoderConfig(gguf: metadata, ropeFrequencyDivisors: nil,
                                     hasOutputWeight: store.descriptor("output.weight") != nil, window: { _ in window })
        })

    public static let registration = family.registration
}
