import ModelFormats

/// Phi-3 (and Phi-4-mini): Llama's graph read from fused tensors (Q | K | V in `qkv_proj`,
/// gate | up in `gate_up_proj`), a partial rotary embedding where `partial_rotary_factor` says
/// so, a sliding window on every layer when `sliding_window` is set, and LongRoPE (the 128k
/// checkpoints' `rope_scaling`, GGUF `rope_factors_long`/`_short`) chosen by the served context.
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
            let window = try metadata.optionalInt("phi3.attention.sliding_window") ?? 0
            return try DecoderConfig(gguf: metadata, tensorScaling: try longRope(metadata, store),
                                     hasOutputWeight: store.descriptor("output.weight") != nil, window: { _ in window })
        })

    /// LongRoPE as llama.cpp's converter writes it: the factors as `rope_factors_long.weight` and
    /// `rope_factors_short.weight`, the pretraining context as `phi3.rope.scaling.original_context_length`
    /// and the attention scaling as `phi3.rope.scaling.attn_factor`; nil for a file without them.
    static func longRope(_ metadata: GGUFMetadata, _ store: any WeightStore) throws -> RotaryScaling? {
        let names = ["rope_factors_short.weight", "rope_factors_long.weight"]
        let present = names.filter { store.descriptor($0) != nil }
        guard !present.isEmpty else { return nil }
        guard present.count == 2 else {
            throw ModelConfigError.missing(key: names.first { store.descriptor($0) == nil }!, context: "LongRoPE needs both factor tensors")
        }
        let short = try store.floats(names[0]).map(Double.init), long = try store.floats(names[1]).map(Double.init)
        let context = try metadata.optionalInt("phi3.context_length") ?? 2048
        return .longRope(short: short, long: long,
                         originalMaxPositions: try metadata.optionalInt("phi3.rope.scaling.original_context_length") ?? context,
                         attentionFactor: try metadata.optionalDouble("phi3.rope.scaling.attn_factor") ?? 1)
    }

    public static let registration = family.registration
}
