import Foundation
import Jinja
import Tokenizers

/// The model as the API presents it: its public name, tokenizer, chat template and limits.
public struct ServedModel: Sendable {
    public var name: String
    public var tokenizer: any Tokenizer
    /// The compiled chat template (from `--chat-template` or the model file); nil: chat is refused.
    public var chatTemplate: ChatTemplate?
    public var maxContextLength: Int
    public var vocabularySize: Int
    /// How the model writes tool calls: `--tool-call-parser`, else read from the chat template;
    /// nil: requests that let the model call tools are refused.
    public var toolCallFormat: ToolCallFormat?
    /// Unix time the server started, reported as the model's `created`.
    public var created: Int
    /// Compiled structured-output grammars, shared by the requests that send the same one.
    public let grammars: GrammarCache

    public init(name: String, tokenizer: any Tokenizer, chatTemplate: ChatTemplate?, maxContextLength: Int,
                vocabularySize: Int, toolCallFormat: ToolCallFormat? = nil, created: Int = Int(Date().timeIntervalSince1970)) {
        self.toolCallFormat = toolCallFormat ?? chatTemplate.flatMap { ToolCallFormat.detect(template: $0.source) }
        self.name = name
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
        self.maxContextLength = maxContextLength
        self.vocabularySize = vocabularySize
        self.created = created
        grammars = GrammarCache(tokenizer: tokenizer, endTokens: Self.stopTokenIDs(of: tokenizer))
    }

    /// The ids that end generation unless `ignore_eos`: eos, eot and the model's other stop ids.
    public var stopTokenIDs: Set<TokenID> { Self.stopTokenIDs(of: tokenizer) }

    public static func stopTokenIDs(of tokenizer: any Tokenizer) -> Set<TokenID> {
        var ids = tokenizer.specialTokens.stop
        if let eos = tokenizer.specialTokens.eos { ids.insert(eos) }
        if let eot = tokenizer.specialTokens.eot { ids.insert(eot) }
        return ids
    }
}

extension JSONValue {
    /// The same value as a template sees it.
    public var jinjaValue: JinjaValue {
        switch self {
        case .null: return .none
        case .bool(let value): return .bool(value)
        case .int(let value): return .int(value)
        case .double(let value): return .double(value)
        case .string(let value): return .string(value)
        case .array(let values): return .array(values.map(\.jinjaValue))
        case .object(let members): return .object(OrderedObject(members.map { ($0.0, $0.1.jinjaValue) }))
        }
    }
}
