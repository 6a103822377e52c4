import ModelFormats

/// Everything Tessel knows about one model family: the names files use for it, the encodings
/// its weights may come in, how it shards, and how to build its graph from a checkpoint.
public struct ArchitectureRegistration: Sendable {
    public let name: String
    /// `architectures` class names in config.json.
    public let huggingFaceClassNames: [String]
    /// `general.architecture` values in GGUF.
    public let ggufArchitectures: [String]
    public let supportedEncodings: Set<TensorEncoding>
    /// Per graph weight, how tensor parallelism divides it.
    public let sharding: [String: ShardAxis]
    /// Parses the config, adapts the weights, and builds the graph for this rank.
    public let load: @Sendable (ModelCheckpoint, ModelLoadContext) throws -> any CausalLanguageModel
}

/// The table from the architecture name in a model file to its registration.
public struct ArchitectureRegistry: Sendable {
    public let registrations: [ArchitectureRegistration]

    public init(_ registrations: [ArchitectureRegistration]) {
        self.registrations = registrations
    }

    /// Every architecture this build can run. Adding one is a folder plus a line here.
    public static let builtIn = ArchitectureRegistry([
        LlamaArchitecture.registration,
        Qwen2Architecture.registration,
        Qwen3Architecture.registration,
        MistralArchitecture.registration,
        Gemma2Architecture.registration,
        Gemma3Architecture.registration,
        Phi3Architecture.registration,
    ])

    public func registration(for checkpoint: ModelCheckpoint) throws -> ArchitectureRegistration {
        switch checkpoint.format {
        case .huggingFace:
            if let match = registrations.first(where: { $0.huggingFaceClassNames.contains(checkpoint.architectureName) }) {
                return match
            }
            throw ModelLoadError.unknownArchitecture(
                file: checkpoint.architectureFile, key: "architectures", value: checkpoint.architectureName,
                known: registrations.flatMap(\.huggingFaceClassNames))
        case .gguf:
            if let match = registrations.first(where: { $0.ggufArchitectures.contains(checkpoint.architectureName) }) {
                return match
            }
            throw ModelLoadError.unknownArchitecture(
                file: checkpoint.architectureFile, key: "general.architecture", value: checkpoint.architectureName,
                known: registrations.flatMap(\.ggufArchitectures))
        }
    }

    public func loadModel(_ checkpoint: ModelCheckpoint, context: ModelLoadContext) throws -> (ArchitectureRegistration, any CausalLanguageModel) {
        let registration = try registration(for: checkpoint)
        return (registration, try registration.load(checkpoint, context))
    }
}
