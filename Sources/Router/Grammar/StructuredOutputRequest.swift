import JSON

/// What the output must match (structured output): OpenAI's `response_format` and vLLM's
/// `structured_outputs` extension.
public enum StructuredOutputRequest: Sendable, Equatable {
    /// Any JSON object (`{"type": "json_object"}`).
    case jsonObject
    /// A JSON document valid under the schema (`json_schema`, or vLLM's `json`).
    case jsonSchema(name: String?, schema: JSONValue)
    /// Text matching the regular expression (vLLM's `regex`).
    case regex(String)
    /// Exactly one of the strings (vLLM's `choice`).
    case choice([String])
}

extension StructuredOutputRequest: CustomStringConvertible {
    /// The request as its source text, which names its grammar.
    public var description: String {
        switch self {
        case .jsonObject: return "json_object"
        case .jsonSchema(_, let schema): return "json_schema \(schema.serialized)"
        case .regex(let pattern): return "regex \(pattern)"
        case .choice(let choices): return "choice \(JSONValue.array(choices.map { .string($0) }).serialized)"
        }
    }
}
