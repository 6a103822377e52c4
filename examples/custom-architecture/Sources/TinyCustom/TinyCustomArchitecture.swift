import WorkerCore

/// A renamed copy of the Qwen2 family: the shared decoder graph with Q/K/V biases, registered
/// under the class name `TinyCustomForCausalLM`. A new family is only this: how its config
/// reads, its weight names, its GGUF rotary layout; serving, KV, tensor parallelism and weight
/// loading come from Tessel.
public enum TinyCustomArchitecture {
    public static let family = DecoderFamily(
        name: "tiny-custom", huggingFaceClassNames: ["TinyCustomForCausalLM"], ggufArchitectures: ["tiny-custom"],
        weightNames: WeightNameTable.llama.adding(WeightNameTable.attentionBiases), ggufRotaryLayout: .rotateHalf,
        huggingFaceConfig: { json in
            var config = try DecoderConfig(huggingFace: json)
            config.attentionBias = true
            return config
        },
        ggufConfig: { metadata, store in
            var config = try DecoderConfig(gguf: metadata,
                                           hasOutputWeight: store.descriptor("output.weight") != nil)
            config.attentionBias = true
            return config
        })
}

/// The plugin ABI this library was compiled against (emitted here at compile time).
@_cdecl("tessel_plugin_abi_version")
public func tesselPluginABIVersion() -> Int32 { ArchitecturePluginABI.version }

/// Registers this library's architectures with the loading worker.
@_cdecl("tessel_register_architectures")
public func tesselRegisterArchitectures(_ registrar: UnsafeMutableRawPointer) {
    ArchitecturePluginRegistrar.from(registrar).register(TinyCustomArchitecture.family.registration)
}
