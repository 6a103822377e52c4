import Tokenizers

/// A completion prompt as the client sent it.
public enum PromptInput: Sendable, Equatable {
    case text(String)
    case tokens([TokenID])
}

/// Generation parameters shared by `/v1/completions` and `/v1/chat/completions`.
public struct GenerationOptions: Sendable, Equatable {
    /// nil: the endpoint's default (16 for completions, the rest of the context for chat).
    public var maxTokens: Int?
    public var temperature: Float = 1
    public var topP: Float = 1
    public var topK: Int = 0
    /// nil: a random seed is drawn for the request.
    public var seed: UInt64?
    public var stop: [String] = []
    /// Extra token ids that end generation (vLLM's `stop_token_ids`).
    public var stopTokenIDs: [TokenID] = []
    public var n: Int = 1
    /// vLLM's `priority` (lower first); only allowed under `--scheduling-policy priority`.
    public var priority: Int = 0
    public var presencePenalty: Float = 0
    public var frequencyPenalty: Float = 0
    public var repetitionPenalty: Float = 1
    public var ignoreEOS = false
    public var skipSpecialTokens = true
    public var stream = false
    public var includeUsage = false

    public init() {}
}

public struct CompletionRequest: Sendable, Equatable {
    public var model: String?
    public var prompts: [PromptInput]
    public var options: GenerationOptions
    public var echo = false
    /// Legacy logprobs: nil = off, k = sampled token plus k alternatives.
    public var logprobs: Int?
}

public struct ChatCompletionRequest: Sendable, Equatable {
    public var model: String?
    /// The messages, content flattened to strings, every other key as sent.
    public var messages: [JSONValue]
    public var tools: [JSONValue]?
    public var options: GenerationOptions
    public var logprobs = false
    public var topLogprobs = 0
    public var addGenerationPrompt = true
    /// Extra variables for the template (vLLM's `chat_template_kwargs`).
    public var templateArguments: [(String, JSONValue)] = []

    public static func == (lhs: ChatCompletionRequest, rhs: ChatCompletionRequest) -> Bool {
        lhs.model == rhs.model && lhs.messages == rhs.messages && lhs.tools == rhs.tools && lhs.options == rhs.options
            && lhs.logprobs == rhs.logprobs && lhs.topLogprobs == rhs.topLogprobs
            && lhs.addGenerationPrompt == rhs.addGenerationPrompt
            && JSONValue.object(lhs.templateArguments) == JSONValue.object(rhs.templateArguments)
    }
}

/// Most alternatives a client may ask for per token, as OpenAI allows.
let maximumLogprobs = 20

// MARK: - Parsing

/// Reads typed fields from a request object, throwing OpenAI-shaped 400s that name the field.
struct RequestFields {
    let object: JSONValue

    init(body: JSONValue) throws(APIError) {
        guard case .object = body else {
            throw APIError.invalidRequest("the request body must be a JSON object, got \(body.typeName)")
        }
        object = body
    }

    /// The value of `key`, nil when absent or null.
    func value(_ key: String) -> JSONValue? {
        guard let value = object[key], !value.isNull else { return nil }
        return value
    }

    func string(_ key: String) throws(APIError) -> String? {
        guard let value = value(key) else { return nil }
        guard case .string(let text) = value else { throw .invalidType(key, expected: "a string", got: value) }
        return text
    }

    func bool(_ key: String) throws(APIError) -> Bool? {
        guard let value = value(key) else { return nil }
        guard case .bool(let flag) = value else { throw .invalidType(key, expected: "a boolean", got: value) }
        return flag
    }

    func int(_ key: String) throws(APIError) -> Int? {
        guard let value = value(key) else { return nil }
        switch value {
        case .int(let number): return number
        case .double(let number) where number == number.rounded() && abs(number) < 9e15: return Int(number)
        default: throw .invalidType(key, expected: "an integer", got: value)
        }
    }

    func number(_ key: String) throws(APIError) -> Double? {
        guard let value = value(key) else { return nil }
        switch value {
        case .int(let number): return Double(number)
        case .double(let number): return number
        default: throw .invalidType(key, expected: "a number", got: value)
        }
    }
}

extension GenerationOptions {
    /// A number as the 32-bit float the worker computes with, refused when narrowing makes it
    /// infinite (1e39) — the bounds are then checked on this value, so 1e-50 becomes 0 first.
    private static func float(_ key: String, _ value: Double) throws(APIError) -> Float {
        let narrowed = Float(value)
        guard narrowed.isFinite else { throw .invalidValue(key, "must be a finite 32-bit number, got \(value)") }
        return narrowed
    }

    /// Reads the parameters both endpoints share, checking each value.
    init(fields: RequestFields, maxTokensKeys: [String]) throws(APIError) {
        self.init()
        for key in maxTokensKeys {
            if let value = try fields.int(key) {
                guard value >= 1 else { throw .invalidValue(key, "must be at least 1, got \(value)") }
                maxTokens = value
                break
            }
        }
        if let value = try fields.number("temperature") {
            let narrowed = try Self.float("temperature", value)
            guard narrowed >= 0 else { throw .invalidValue("temperature", "must be 0 or more, got \(value)") }
            temperature = narrowed
        }
        if let value = try fields.number("top_p") {
            let narrowed = try Self.float("top_p", value)
            guard narrowed > 0, narrowed <= 1 else { throw .invalidValue("top_p", "must be in (0, 1] as a 32-bit float, got \(value)") }
            topP = narrowed
        }
        if let value = try fields.int("top_k") {
            guard value >= -1 else { throw .invalidValue("top_k", "must be -1 (off), 0 (off) or positive, got \(value)") }
            topK = max(0, value)
        }
        if let value = fields.value("seed") {
            guard case .int(let number) = value else { throw .invalidType("seed", expected: "an integer", got: value) }
            seed = UInt64(bitPattern: Int64(number))
        }
        if let value = fields.value("stop") {
            switch value {
            case .string(let text): stop = text.isEmpty ? [] : [text]
            case .array(let items):
                stop = []
                for item in items {
                    guard case .string(let text) = item else { throw .invalidType("stop", expected: "a string or a list of strings", got: item) }
                    if !text.isEmpty { stop.append(text) }
                }
            default: throw .invalidType("stop", expected: "a string or a list of strings", got: value)
            }
        }
        if let value = fields.value("stop_token_ids") {
            guard case .array(let items) = value else { throw .invalidType("stop_token_ids", expected: "a list of integers", got: value) }
            stopTokenIDs = []
            for item in items {
                guard case .int(let id) = item, let token = TokenID(exactly: id) else {
                    throw .invalidType("stop_token_ids", expected: "a list of integers", got: item)
                }
                stopTokenIDs.append(token)
            }
        }
        if let value = try fields.int("n") {
            guard value >= 1 else { throw .invalidValue("n", "must be at least 1, got \(value)") }
            guard value <= 128 else { throw .invalidValue("n", "must be at most 128, got \(value)") }
            n = value
        }
        if let value = try fields.int("priority") {
            priority = value
        }
        for (key, keyPath) in [("presence_penalty", \GenerationOptions.presencePenalty), ("frequency_penalty", \.frequencyPenalty)] {
            if let value = try fields.number(key) {
                let narrowed = try Self.float(key, value)
                guard narrowed >= -2, narrowed <= 2 else { throw .invalidValue(key, "must be in [-2, 2], got \(value)") }
                self[keyPath: keyPath] = narrowed
            }
        }
        if let value = try fields.number("repetition_penalty") {
            let narrowed = try Self.float("repetition_penalty", value)
            guard narrowed > 0 else {
                throw .invalidValue("repetition_penalty", "must be greater than 0 as a 32-bit float, got \(value)")
            }
            repetitionPenalty = narrowed
        }
        ignoreEOS = try fields.bool("ignore_eos") ?? false
        skipSpecialTokens = try fields.bool("skip_special_tokens") ?? true
        stream = try fields.bool("stream") ?? false
        if let value = fields.value("stream_options") {
            guard case .object = value else { throw .invalidType("stream_options", expected: "an object", got: value) }
            guard stream else { throw .invalidValue("stream_options", "is only allowed when 'stream' is true") }
            let options = try RequestFields(body: value)
            do {
                includeUsage = try options.bool("include_usage") ?? false
            } catch {
                throw .invalidType("stream_options.include_usage", expected: "a boolean", got: value["include_usage"] ?? .null)
            }
        }
    }
}

extension CompletionRequest {
    /// Parses and checks a `/v1/completions` body.
    public init(body: JSONValue) throws(APIError) {
        let fields = try RequestFields(body: body)
        model = try fields.string("model")
        guard let prompt = fields.value("prompt") else { throw .missing("prompt") }
        prompts = try Self.parsePrompt(prompt)
        options = try GenerationOptions(fields: fields, maxTokensKeys: ["max_tokens"])
        echo = try fields.bool("echo") ?? false
        if let value = fields.value("logprobs") {
            guard case .int(let count) = value else { throw .invalidType("logprobs", expected: "an integer", got: value) }
            guard count >= 0, count <= maximumLogprobs else {
                throw .invalidValue("logprobs", "must be between 0 and \(maximumLogprobs), got \(count)")
            }
            logprobs = count
        }
        if fields.value("suffix") != nil { throw .invalidValue("suffix", "is not supported") }
    }

    static func parsePrompt(_ value: JSONValue) throws(APIError) -> [PromptInput] {
        let expected = "a string, a list of strings, a list of token ids or a list of token-id lists"
        func tokenList(_ items: [JSONValue]) throws(APIError) -> [TokenID] {
            var tokens: [TokenID] = []
            tokens.reserveCapacity(items.count)
            for item in items {
                guard case .int(let id) = item, let token = TokenID(exactly: id), token >= 0 else {
                    throw .invalidType("prompt", expected: expected, got: item)
                }
                tokens.append(token)
            }
            return tokens
        }
        switch value {
        case .string(let text):
            return [.text(text)]
        case .array(let items):
            guard let first = items.first else { throw .invalidValue("prompt", "must not be an empty list") }
            switch first {
            case .string:
                var prompts: [PromptInput] = []
                for item in items {
                    guard case .string(let text) = item else { throw .invalidType("prompt", expected: expected, got: item) }
                    prompts.append(.text(text))
                }
                return prompts
            case .int:
                return [.tokens(try tokenList(items))]
            case .array:
                var prompts: [PromptInput] = []
                for item in items {
                    guard case .array(let inner) = item else { throw .invalidType("prompt", expected: expected, got: item) }
                    guard !inner.isEmpty else { throw .invalidValue("prompt", "must not contain an empty token list") }
                    prompts.append(.tokens(try tokenList(inner)))
                }
                return prompts
            default:
                throw .invalidType("prompt", expected: expected, got: first)
            }
        default:
            throw .invalidType("prompt", expected: expected, got: value)
        }
    }
}

extension ChatCompletionRequest {
    /// Parses and checks a `/v1/chat/completions` body.
    public init(body: JSONValue) throws(APIError) {
        let fields = try RequestFields(body: body)
        model = try fields.string("model")
        guard let messagesValue = fields.value("messages") else { throw .missing("messages") }
        guard case .array(let items) = messagesValue else {
            throw .invalidType("messages", expected: "a list of messages", got: messagesValue)
        }
        guard !items.isEmpty else { throw .invalidValue("messages", "must contain at least one message") }
        var messages: [JSONValue] = []
        for (index, item) in items.enumerated() {
            messages.append(try Self.normalizeMessage(item, index: index))
        }
        self.messages = messages
        if let value = fields.value("tools") {
            guard case .array(let tools) = value else { throw .invalidType("tools", expected: "a list of tools", got: value) }
            for tool in tools {
                guard case .object = tool else { throw .invalidType("tools", expected: "a list of tool objects", got: tool) }
            }
            self.tools = tools.isEmpty ? nil : tools
        } else {
            tools = nil
        }
        options = try GenerationOptions(fields: fields, maxTokensKeys: ["max_completion_tokens", "max_tokens"])
        logprobs = try fields.bool("logprobs") ?? false
        if let count = try fields.int("top_logprobs") {
            guard count >= 0, count <= maximumLogprobs else {
                throw .invalidValue("top_logprobs", "must be between 0 and \(maximumLogprobs), got \(count)")
            }
            guard logprobs || count == 0 else { throw .invalidValue("top_logprobs", "requires 'logprobs' to be true") }
            topLogprobs = count
        }
        addGenerationPrompt = try fields.bool("add_generation_prompt") ?? true
        if let value = fields.value("chat_template_kwargs") {
            guard case .object(let members) = value else {
                throw .invalidType("chat_template_kwargs", expected: "an object", got: value)
            }
            templateArguments = members
        }
    }

    /// Checks one message and flattens content-part arrays to a string (text parts joined by newlines).
    static func normalizeMessage(_ message: JSONValue, index: Int) throws(APIError) -> JSONValue {
        let param = "messages[\(index)]"
        guard case .object(var members) = message else {
            throw .invalidType(param, expected: "an object", got: message)
        }
        guard let role = message["role"] else { throw .missing("\(param).role") }
        guard case .string = role else { throw .invalidType("\(param).role", expected: "a string", got: role) }
        guard let contentIndex = members.lastIndex(where: { $0.0 == "content" }) else {
            return message
        }
        switch members[contentIndex].1 {
        case .string, .null:
            return message
        case .array(let parts):
            var texts: [String] = []
            for (partIndex, part) in parts.enumerated() {
                let partParam = "\(param).content[\(partIndex)]"
                guard case .object = part else { throw .invalidType(partParam, expected: "a content part object", got: part) }
                guard case .string(let type)? = part["type"] else { throw .missing("\(partParam).type") }
                guard type == "text" else {
                    throw .invalidValue("\(partParam).type", "'\(type)' is not supported; only 'text' content parts are")
                }
                guard case .string(let text)? = part["text"] else { throw .missing("\(partParam).text") }
                texts.append(text)
            }
            members[contentIndex].1 = .string(texts.joined(separator: "\n"))
            return .object(members)
        default:
            throw .invalidType("\(param).content", expected: "a string or a list of content parts", got: members[contentIndex].1)
        }
    }
}
