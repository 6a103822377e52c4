/// Why a model could not be loaded; every case names the file and what was wrong.
public enum ModelLoadError: Error, CustomStringConvertible, Equatable {
    case unknownArchitecture(file: String, key: String, value: String, known: [String])
    case missingArchitecture(file: String, key: String)
    case invalidConfig(file: String, detail: String)
    case missingTensor(file: String, tensor: String)
    case shapeMismatch(file: String, tensor: String, expected: [Int], found: [Int])
    case unsupportedEncoding(file: String, tensor: String, encoding: String)
    case invalidRank(rank: Int, worldSize: Int)
    case missingGroup(worldSize: Int)
    case invalidCacheSize(tokens: Int, detail: String)
    /// `--max-model-len` asks for more positions than the model has.
    case contextTooLong(file: String, requested: Int, model: Int)

    public var description: String {
        switch self {
        case .unknownArchitecture(let file, let key, let value, let known):
            "\(file): \(key) '\(value)' is not a supported architecture (supported: \(known.joined(separator: ", ")))"
        case .missingArchitecture(let file, let key):
            "\(file): '\(key)' is missing, so the model architecture is unknown"
        case .invalidConfig(let file, let detail):
            "\(file): \(detail)"
        case .missingTensor(let file, let tensor):
            "\(file): tensor '\(tensor)' is missing"
        case .shapeMismatch(let file, let tensor, let expected, let found):
            "\(file): tensor '\(tensor)' has shape \(found), expected \(expected)"
        case .unsupportedEncoding(let file, let tensor, let encoding):
            "\(file): tensor '\(tensor)' is stored as \(encoding), which this architecture cannot load"
        case .missingGroup(let worldSize):
            "a world size of \(worldSize) needs a group to meet in (--group)"
        case .invalidRank(let rank, let worldSize):
            "rank \(rank) is outside 0..<\(worldSize)"
        case .invalidCacheSize(let tokens, let detail):
            "KV cache of \(tokens) tokens: \(detail)"
        case .contextTooLong(let file, let requested, let model):
            "\(file): --max-model-len \(requested) is longer than the model's context of \(model) tokens"
        }
    }
}
