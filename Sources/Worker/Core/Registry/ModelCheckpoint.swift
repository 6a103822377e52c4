import Foundation
import ModelFormats

public enum CheckpointFormat: Sendable, Equatable {
    case huggingFace
    case gguf
}

/// A resolved `--model`: where its configuration and weights are, and which architecture name
/// the file declares.
public struct ModelCheckpoint: Sendable {
    public let format: CheckpointFormat
    /// The file or directory, for messages.
    public let path: String
    /// The file that names the architecture (config.json or the .gguf), for messages.
    public let architectureFile: String
    /// `architectures[0]` of config.json, or GGUF `general.architecture`.
    public let architectureName: String
    public let weights: any WeightStore
    /// config.json bytes (Hugging Face layout only).
    public let configJSON: Data?
    /// The GGUF file (GGUF only): metadata, and raw blocks for kernels that read them directly.
    public let ggufFile: GGUFFile?
    public var ggufMetadata: GGUFMetadata? { ggufFile?.metadata }
    public let fingerprint: String

    /// Resolves a path to a .gguf file, a Hugging Face directory, or a cache entry `org/name`.
    public static func open(_ model: String) throws -> ModelCheckpoint {
        let source = try ModelSource.resolve(model)
        switch source.kind {
        case .gguf(let url):
            let store = try GGUFWeightStore(url: url)
            let key = "general.architecture"
            guard let name = try store.file.metadata.optionalString(key) else {
                throw ModelLoadError.missingArchitecture(file: url.path, key: key)
            }
            return ModelCheckpoint(format: .gguf, path: url.path, architectureFile: url.path,
                                   architectureName: name, weights: store,
                                   configJSON: nil, ggufFile: store.file, fingerprint: source.fingerprint)
        case .huggingFace(let directory):
            let configPath = directory.appendingPathComponent(ModelSource.configFileName).path
            let data = try source.configData()
            struct Architectures: Decodable { var architectures: [String]? }
            let declared: [String]?
            do {
                declared = try JSONDecoder().decode(Architectures.self, from: data).architectures
            } catch {
                throw ModelLoadError.invalidConfig(file: configPath, detail: "not a valid config: \(error)")
            }
            guard let name = declared?.first else {
                throw ModelLoadError.missingArchitecture(file: configPath, key: "architectures")
            }
            return ModelCheckpoint(format: .huggingFace, path: directory.path, architectureFile: configPath,
                                   architectureName: name, weights: try source.openWeights(),
                                   configJSON: data, ggufFile: nil, fingerprint: source.fingerprint)
        }
    }
}
