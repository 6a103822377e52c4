import Tokenizers
import Wire

/// A completion prompt as the client sent it.
public enum PromptInput: Sendable, Equatable {
    case text(String)
    case tokens([TokenID])
}

/// Generation parameters shared by `/v1/completions` and `/v1/chat/completions`.
public struct GenerationOptions: Sendable, Equatable {
    /// nil: the endpoint's default (16 for completions, the rest of the context for chat).
    public var maxTokens: Int?
    /// How each token is picked; its seed is set at submission (`seed`, or a random one).
    public var sampling = SamplingParameters()
    /// nil: a random seed is drawn for the request.
    public var seed: UInt64?
    public var stop: [String] = []
    /// Extra token ids that end generation (vLLM's `stop_token_ids`).
    public var stopTokenIDs: [TokenID] = []
    public var n: Int = 1
    /// vLLM's `priority` (lower first); only allowed under `--scheduling-policy priority`.
    public var priority: Int = 0
    /// OpenAI's `user`: accepted and written to the request's log line.
    public var user: String?
    /// What the output must match (`response_format` or `structured_outputs`).
    public var structuredOutput: StructuredOutputRequest?
    /// The field it came from, named in errors.
    public var structuredOutputField = "response_format"
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

/// Whether and which tool the model must call (OpenAI's `tool_choice`).
public enum ToolChoice: Sendable, Equatable {
    /// The model decides; its calls are parsed.
    case auto
    /// No calls: the tools are not rendered and the output is not parsed.
    case none
    /// At least one call, enforced by the grammar.
    case required
    /// This function, enforced by the grammar.
    case function(String)
}

public struct ChatCompletionRequest: Sendable, Equatable {
    public var model: String?
    /// The messages, content flattened to strings, every other key as sent (an assistant
    /// message's tool-call arguments as objects, as templates read them).
    public var messages: [JSONValue]
    public var tools: [JSONValue]?
    /// `.none` without tools, `.auto` with them unless the client chose.
    public var toolChoice: ToolChoice = .none
    public var parallelToolCalls = true
    /// Continue the last (assistant) message instead of opening a new turn (vLLM's extension).
    public var continueFinalMessage = false
    public var options: GenerationOptions
    public var logprobs = false
    public var topLogprobs = 0
    public var addGenerationPrompt = true
    /// Extra variables for the template (vLLM's `chat_template_kwargs`).
    public var templateArguments: [(String, JSONValue)] = []

    public static func == (lhs: ChatCompletionRequest, rhs: ChatCompletionRequest) -> Bool {
        lhs.model == rhs.model && lhs.messages == rhs.messages && lhs.tools == rhs.tools && lhs.options == rhs.options
            && lhs.toolChoice == rhs.toolChoice && lhs.parallelToolCalls == rhs.parallelToolCalls
            && lhs.continueFinalMessage == rhs.continueFinalMessage
            && lhs.logprobs == rhs.logprobs && lhs.topLogprobs == rhs.topLogprobs
            && lhs.addGenerationPrompt == rhs.addGenerationPrompt
            && JSONValue.object(lhs.templateArguments) == JSONValue.object(rhs.templateArguments)
    }
}

/// Most alternatives a client may ask for per token, as OpenAI allows.
let maximumLogprobs = 20

// MARK: - Parsing

/// Reads typed fields from a request object, throwing OpenAI-shaped 400s that name the field.
/// It remembers which keys were read, so a request can refuse every field nothing read: no
/// field is ever accepted and ignored.
final class RequestFields {
    let object: JSONValue
    private var read: Set<String> = []

    init(body: JSONValue) throws(APIError) {
        guard case .object = body else {
            throw APIError.invalidRequest("the request body must be a JSON object, got \(body.typeName)")
        }
        object = body
    }

    /// The value of `key`, nil when absent or null.
    func value(_ key: String) -> JSONValue? {
        read.insert(key)
        guard let value = object[key], !value.isNull else { return nil }
        return value
    }

    /// Fields clients send that this server does not honour (yet), with what to do instead.
    static let unsupported: [String: String] = [
        "functions": "the deprecated 'functions' field is not supported; use 'tools'",
        "function_call": "the deprecated 'function_call' field is not supported; use 'tool_choice'",
        "best_of": "best_of is not supported; use n",
        "guided_json": "the guided_* fields are vLLM's old names; use structured_outputs {\"json\": …}",
        "guided_regex": "the guided_* fields are vLLM's old names; use structured_outputs {\"regex\": …}",
        "guided_choice": "the guided_* fields are vLLM's old names; use structured_outputs {\"choice\": …}",
        "guided_grammar": "grammars other than JSON schema, regex and choice are not supported",
    ]

    /// Throws for the first non-null field (in the body's order) that nothing read; `prefix`
    /// names the object the fields are in (`stream_options.`).
    func refuseUnread(prefix: String = "") throws(APIError) {
        guard case .object(let members) = object else { return }
        for (name, value) in members where !value.isNull && !read.contains(name) {
            let key = prefix + name
            if let reason = Self.unsupported[key] {
                throw .invalidRequest("'\(key)' is not supported: \(reason)", param: key, code: "unsupported_parameter")
            }
            throw .invalidRequest("Unrecognized request argument supplied: \(key)", param: key, code: "unrecognized_argument")
        }
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
        if let value = try fields.number("temperature") { sampling.temperature = try Self.float("temperature", value) }
        if let value = try fields.number("top_p") { sampling.topP = try Self.float("top_p", value) }
        if let value = try fields.int("top_k") {
            // -1 is vLLM's "off", as 0 is.
            sampling.topK = value == -1 ? 0 : value
        }
        if let value = try fields.number("min_p") { sampling.minP = try Self.float("min_p", value) }
        for (key, keyPath) in [("presence_penalty", \SamplingParameters.presencePenalty), ("frequency_penalty", \.frequencyPenalty),
                               ("repetition_penalty", \.repetitionPenalty)] {
            if let value = try fields.number(key) { sampling[keyPath: keyPath] = try Self.float(key, value) }
        }
        if let value = fields.value("logit_bias") {
            guard case .object(let members) = value else {
                throw .invalidType("logit_bias", expected: "an object mapping token ids to biases", got: value)
            }
            for (key, biasValue) in members {
                guard let token = Int32(key), token >= 0 else {
                    throw .invalidValue("logit_bias", "keys must be token ids (non-negative integers as strings), got '\(key)'")
                }
                let bias: Double
                switch biasValue {
                case .int(let number): bias = Double(number)
                case .double(let number): bias = number
                default: throw .invalidType("logit_bias", expected: "numbers as biases", got: biasValue)
                }
                sampling.logitBias[token] = try Self.float("logit_bias", bias)
            }
        }
        // Every range is checked where the worker checks it; the token ids of logit_bias again
        // against the model's vocabulary once the endpoint knows it.
        if let problem = sampling.problem(vocabularySize: Int(Int32.max)) {
            throw .invalidValue(problem.field, problem.detail)
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
        user = try fields.string("user")
        if let value = fields.value("response_format") { structuredOutput = try Self.responseFormat(value) }
        if let value = fields.value("structured_outputs") {
            guard structuredOutput == nil else {
                throw .invalidRequest("send either 'response_format' or 'structured_outputs', not both", param: "structured_outputs")
            }
            structuredOutput = try Self.structuredOutputs(value)
            structuredOutputField = "structured_outputs"
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
            try options.refuseUnread(prefix: "stream_options.")
        }
    }
}

extension GenerationOptions {
    /// OpenAI's `response_format`: `text`, `json_object`, or `json_schema` with `{name, schema, strict}`.
    static func responseFormat(_ value: JSONValue) throws(APIError) -> StructuredOutputRequest? {
        guard case .object = value else { throw .invalidType("response_format", expected: "an object", got: value) }
        let fields = try RequestFields(body: value)
        guard let type = try fields.string("type") else { throw .missing("response_format.type") }
        switch type {
        case "text":
            try fields.refuseUnread(prefix: "response_format.")
            return nil
        case "json_object":
            try fields.refuseUnread(prefix: "response_format.")
            return .jsonObject
        case "json_schema":
            guard let inner = fields.value("json_schema") else { throw .missing("response_format.json_schema") }
            let schemaFields: RequestFields
            do { schemaFields = try RequestFields(body: inner) } catch {
                throw .invalidType("response_format.json_schema", expected: "an object", got: inner)
            }
            let name: String?
            do { name = try schemaFields.string("name") } catch {
                throw .invalidType("response_format.json_schema.name", expected: "a string", got: inner["name"] ?? .null)
            }
            // `strict` asks for what is always done here: the output is held to the schema.
            _ = schemaFields.value("strict")
            _ = schemaFields.value("description")
            guard let schema = schemaFields.value("schema") else { throw .missing("response_format.json_schema.schema") }
            try schemaFields.refuseUnread(prefix: "response_format.json_schema.")
            try fields.refuseUnread(prefix: "response_format.")
            return .jsonSchema(name: name, schema: schema)
        default:
            throw .invalidValue("response_format.type", "must be 'text', 'json_object' or 'json_schema', got '\(type)'")
        }
    }

    /// vLLM's `structured_outputs`: exactly one of `json` (a schema), `regex` or `choice`.
    static func structuredOutputs(_ value: JSONValue) throws(APIError) -> StructuredOutputRequest {
        guard case .object(let members) = value else {
            throw .invalidType("structured_outputs", expected: "an object", got: value)
        }
        let given = members.filter { !$0.1.isNull }
        guard given.count == 1, let (key, inner) = given.first else {
            throw .invalidValue("structured_outputs", "must hold exactly one of 'json', 'regex' or 'choice'")
        }
        switch (key, inner) {
        case ("json", .object): return .jsonSchema(name: nil, schema: inner)
        case ("json", .string(let text)):
            guard let schema = try? JSONValue.parse(text) else {
                throw .invalidValue("structured_outputs.json", "is a string that is not a JSON schema")
            }
            return .jsonSchema(name: nil, schema: schema)
        case ("regex", .string(let pattern)): return .regex(pattern)
        case ("choice", .array(let items)):
            var choices: [String] = []
            for item in items {
                guard case .string(let text) = item else {
                    throw .invalidType("structured_outputs.choice", expected: "a list of strings", got: item)
                }
                choices.append(text)
            }
            guard !choices.isEmpty else { throw .invalidValue("structured_outputs.choice", "must not be empty") }
            return .choice(choices)
        case ("json", _), ("regex", _), ("choice", _):
            throw .invalidType("structured_outputs.\(key)", expected: key == "choice" ? "a list of strings" : key == "regex" ? "a string" : "a schema object",
                               got: inner)
        default:
            throw .invalidRequest("'structured_outputs.\(key)' is not supported: only 'json', 'regex' and 'choice' are",
                                  param: "structured_outputs.\(key)", code: "unsupported_parameter")
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
        try fields.refuseUnread()
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
        try self.init(fields: fields)
        try fields.refuseUnread()
    }

    /// Parses the chat fields of `fields`; the caller refuses what is left unread.
    init(fields: RequestFields) throws(APIError) {
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
        continueFinalMessage = try fields.bool("continue_final_message") ?? false
        if continueFinalMessage {
            guard !addGenerationPrompt else {
                throw .invalidValue("continue_final_message", "needs 'add_generation_prompt' set to false: the last message is continued, not followed by a new turn")
            }
            guard case .string("assistant")? = messages.last?["role"] else {
                throw .invalidValue("continue_final_message", "needs the last message to be the assistant's")
            }
        }
        if let value = fields.value("tool_choice") {
            toolChoice = try Self.toolChoice(value, tools: tools ?? [])
        } else if tools != nil {
            toolChoice = .auto
        }
        parallelToolCalls = try fields.bool("parallel_tool_calls") ?? true
        if let value = fields.value("chat_template_kwargs") {
            guard case .object(let members) = value else {
                throw .invalidType("chat_template_kwargs", expected: "an object", got: value)
            }
            templateArguments = members
        }
    }

    /// OpenAI's `tool_choice`: "none", "auto", "required" or `{"type": "function", "function": {"name"}}`
    /// naming one of `tools`.
    static func toolChoice(_ value: JSONValue, tools: [JSONValue]) throws(APIError) -> ToolChoice {
        let names = tools.compactMap { tool -> String? in
            guard case .string(let name)? = tool["function"]?["name"] else { return nil }
            return name
        }
        switch value {
        case .string("none"): return .none
        case .string("auto"), .string("required"):
            let required = value == .string("required")
            guard !tools.isEmpty else { throw .invalidValue("tool_choice", "'\(required ? "required" : "auto")' needs 'tools'") }
            return required ? .required : .auto
        case .object:
            guard case .string("function")? = value["type"], case .string(let name)? = value["function"]?["name"] else {
                throw .invalidType("tool_choice", expected: #"{"type": "function", "function": {"name": …}}"#, got: value)
            }
            guard names.contains(name) else {
                throw .invalidValue("tool_choice", "names function '\(name)', which is not among 'tools'")
            }
            return .function(name)
        default:
            throw .invalidType("tool_choice", expected: "'none', 'auto', 'required' or a function object", got: value)
        }
    }

    /// Checks one message and flattens content-part arrays to a string (text parts joined by
    /// newlines). An assistant message's tool calls get their JSON-text arguments as objects
    /// and a null content as "", as templates expect (vLLM does the same).
    static func normalizeMessage(_ message: JSONValue, index: Int) throws(APIError) -> JSONValue {
        let param = "messages[\(index)]"
        guard case .object(var members) = message else {
            throw .invalidType(param, expected: "an object", got: message)
        }
        guard let role = message["role"] else { throw .missing("\(param).role") }
        guard case .string = role else { throw .invalidType("\(param).role", expected: "a string", got: role) }
        if let callsIndex = members.firstIndex(where: { $0.0 == "tool_calls" }), !members[callsIndex].1.isNull {
            members[callsIndex].1 = try normalizeToolCalls(members[callsIndex].1, param: "\(param).tool_calls")
            if let contentIndex = members.lastIndex(where: { $0.0 == "content" }) {
                if members[contentIndex].1.isNull { members[contentIndex].1 = .string("") }
            } else {
                members.append(("content", .string("")))
            }
        }
        guard let contentIndex = members.lastIndex(where: { $0.0 == "content" }) else {
            return .object(members)
        }
        switch members[contentIndex].1 {
        case .string, .null:
            return .object(members)
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

    /// `[{"id", "type": "function", "function": {"name", "arguments": JSON text}}]` with each
    /// `arguments` parsed into the object it encodes.
    static func normalizeToolCalls(_ value: JSONValue, param: String) throws(APIError) -> JSONValue {
        guard case .array(var calls) = value else { throw .invalidType(param, expected: "a list of tool calls", got: value) }
        for (index, call) in calls.enumerated() {
            let callParam = "\(param)[\(index)]"
            guard case .object(var members) = call else { throw .invalidType(callParam, expected: "a tool call object", got: call) }
            guard let functionIndex = members.firstIndex(where: { $0.0 == "function" }),
                  case .object(var function) = members[functionIndex].1 else { throw .missing("\(callParam).function") }
            guard case .string? = call["function"]?["name"] else { throw .missing("\(callParam).function.name") }
            if let argumentsIndex = function.firstIndex(where: { $0.0 == "arguments" }),
               case .string(let text) = function[argumentsIndex].1 {
                guard let parsed = try? JSONValue.parse(text), case .object = parsed else {
                    throw .invalidValue("\(callParam).function.arguments", "must be a JSON object encoded as a string, got \(text)")
                }
                function[argumentsIndex].1 = parsed
            }
            members[functionIndex].1 = .object(function)
            calls[index] = .object(members)
        }
        return .array(calls)
    }
}
