import Foundation
import Tokenizers

/// Tessel's version, as `/version` and `router --version` report it.
public enum TesselVersion {
    public static let current = "0.1.0"
}

/// vLLM's `/tokenize`, `/detokenize` and `/version`, over the served model's tokenizer and chat
/// template (the same encoding the generating endpoints use).
extension OpenAIEndpoints {
    /// `/tokenize`: `{"prompt": text, "add_special_tokens": true}` encodes as `/v1/completions`
    /// does; `{"messages": […], "add_generation_prompt": true, "add_special_tokens": false}` renders
    /// the chat template first, as `/v1/chat/completions` does. `return_token_strs` adds each
    /// token's vocabulary string. Answers `{"count", "max_model_len", "tokens", "token_strs"}`.
    public func tokenize(body: Data) throws(APIError) -> JSONValue {
        let json = try Self.parseBody(body)
        let fields = try RequestFields(body: json)
        try checkModel(try fields.string("model"))
        let tokens: [TokenID]
        if fields.value("messages") != nil {
            if fields.value("prompt") != nil {
                throw .invalidRequest("send either 'prompt' or 'messages', not both", param: "prompt")
            }
            let request = try ChatCompletionRequest(fields: fields)
            tokens = try chatPromptTokens(request, addSpecialTokens: try fields.bool("add_special_tokens") ?? false)
        } else {
            guard let value = fields.value("prompt") else { throw .missing("prompt") }
            guard case .string(let prompt) = value else { throw .invalidType("prompt", expected: "a string", got: value) }
            tokens = promptTokens(prompt, addSpecialTokens: try fields.bool("add_special_tokens") ?? true)
        }
        let strings: JSONValue = try fields.bool("return_token_strs") == true
            ? .array(tokens.map { model.tokenizer.token(for: $0).map(JSONValue.string) ?? .null })
            : .null
        try fields.refuseUnread()
        return .object([
            ("count", .int(tokens.count)),
            ("max_model_len", .int(model.maxContextLength)),
            ("tokens", .array(tokens.map { .int(Int($0)) })),
            ("token_strs", strings),
        ])
    }

    /// `/detokenize`: `{"tokens": [ids]}` answers `{"prompt": text}`, special tokens kept.
    public func detokenize(body: Data) throws(APIError) -> JSONValue {
        let fields = try RequestFields(body: try Self.parseBody(body))
        try checkModel(try fields.string("model"))
        guard let value = fields.value("tokens") else { throw .missing("tokens") }
        guard case .array(let items) = value else { throw .invalidType("tokens", expected: "a list of token ids", got: value) }
        var tokens: [TokenID] = []
        tokens.reserveCapacity(items.count)
        for item in items {
            guard case .int(let id) = item, id >= 0, id < model.vocabularySize else {
                throw .invalidValue("tokens", "must be token ids in [0, \(model.vocabularySize)), got \(item.serialized)")
            }
            tokens.append(TokenID(id))
        }
        try fields.refuseUnread()
        return .object([("prompt", .string(model.tokenizer.decode(tokens, skipSpecialTokens: false)))])
    }

    /// `/version`.
    public func version() -> JSONValue { .object([("version", .string(TesselVersion.current))]) }
}
