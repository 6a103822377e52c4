/// Why a response format cannot be compiled into a grammar. The request layer turns it into an
/// HTTP 400; the message names the keyword and where in the schema it was found.
public enum GrammarError: Error, CustomStringConvertible, Equatable {
    /// A JSON Schema keyword (or a value of `type`/`format`) the engine does not constrain.
    case unsupportedKeyword(String, path: String)
    /// A keyword whose value has the wrong shape (`minItems: "3"`, `required: 1`).
    case invalidValue(keyword: String, path: String, reason: String)
    /// `$ref` to something other than `#`, `#/$defs/…` or `#/definitions/…`, or to a missing entry.
    case unresolvedReference(String, path: String)
    /// A `pattern` or regex the engine cannot compile, with the construct and its offset.
    case unsupportedRegex(String, pattern: String, offset: Int)
    /// Bounds, lengths or item counts no value can satisfy, or a `choice` with no strings.
    case unsatisfiable(String, path: String)
    /// The compiled grammar would be larger than the engine allows (huge maxLength/maxItems).
    case tooLarge(path: String)

    public var description: String {
        switch self {
        case .unsupportedKeyword(let keyword, let path):
            return "unsupported keyword '\(keyword)' at \(path)"
        case .invalidValue(let keyword, let path, let reason):
            return "invalid value for '\(keyword)' at \(path): \(reason)"
        case .unresolvedReference(let reference, let path):
            return "cannot resolve $ref '\(reference)' at \(path)"
        case .unsupportedRegex(let construct, let pattern, let offset):
            return "unsupported regex construct \(construct) at offset \(offset) in '\(pattern)'"
        case .unsatisfiable(let reason, let path):
            return "unsatisfiable schema at \(path): \(reason)"
        case .tooLarge(let path):
            return "schema too large to compile at \(path)"
        }
    }
}
