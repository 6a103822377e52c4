import Foundation
import Jinja
import Tokenizers

/// What an endpoint answers: one JSON body, or a stream of JSON chunks sent as server-sent
/// events (the HTTP layer adds the `data: [DONE]` line).
public enum EndpointResponse: Sendable {
    case json(JSONValue)
    case stream(AsyncStream<JSONValue>)
}

/// The OpenAI API over the scheduler, free of HTTP: parse and check a request, tokenize it,
/// submit one sequence per choice, and turn their tokens into OpenAI's response shapes.
public struct OpenAIEndpoints: Sendable {
    public let model: ServedModel
    public let scheduler: Scheduler
    let formatter: LogprobFormatter

    public init(model: ServedModel, scheduler: Scheduler) {
        self.model = model
        self.scheduler = scheduler
        formatter = LogprobFormatter(tokenizer: model.tokenizer)
    }

    // MARK: /v1/models

    public func models() -> JSONValue {
        .object([("object", "list"), ("data", .array([modelObject]))])
    }

    /// `GET /v1/models/{id}`: the served model, or a 404 naming the id.
    public func model(id: String) throws(APIError) -> JSONValue {
        guard id == model.name else { throw .modelNotFound(id) }
        return modelObject
    }

    private var modelObject: JSONValue {
        .object([
            ("id", .string(model.name)),
            ("object", "model"),
            ("created", .int(model.created)),
            ("owned_by", "tessel"),
            ("root", .string(model.name)),
            ("parent", .null),
            ("max_model_len", .int(model.maxContextLength)),
        ])
    }

    // MARK: /v1/completions

    public func completions(body: Data, record: RequestRecord? = nil) async throws(APIError) -> EndpointResponse {
        let request = try CompletionRequest(body: try Self.parseBody(body))
        try checkModel(request.model)
        try checkLimits(request.options)
        if let user = request.options.user { record?.user(user) }
        var prompts: [[TokenID]] = []
        for prompt in request.prompts {
            switch prompt {
            case .text(let text):
                prompts.append(promptTokens(text))
            case .tokens(let tokens):
                if let bad = tokens.first(where: { Int($0) >= model.vocabularySize }) {
                    throw .invalidValue("prompt", "contains token id \(bad), outside the vocabulary of \(model.vocabularySize) tokens")
                }
                prompts.append(tokens)
            }
        }
        let promptLogprobs = request.echo ? request.logprobs : nil
        let constraint = try request.options.structuredOutput.map { structured throws(APIError) in
            try outputConstraint(structured, field: request.options.structuredOutputField)
        }
        var plans: [ChoicePlan] = []
        for (promptIndex, tokens) in prompts.enumerated() {
            let maxTokens = try maxNewTokens(promptCount: tokens.count, requested: request.options.maxTokens, default: 16)
            for choice in 0..<request.options.n {
                plans.append(ChoicePlan(
                    index: promptIndex * request.options.n + choice, promptIndex: promptIndex,
                    request: sequenceRequest(tokens, options: request.options, maxTokens: maxTokens,
                                             logprobs: request.logprobs, promptLogprobs: promptLogprobs,
                                             sampleIndex: choice, constraint: constraint)))
            }
        }
        let run = try await submit(plans, seed: request.options.seed, record: record)
        let context = CompletionContext(
            id: makeResponseID(prefix: "cmpl-"), created: Int(Date().timeIntervalSince1970), model: model.name,
            request: request, prompts: prompts, promptTexts: request.prompts.map { prompt in
                switch prompt {
                case .text(let text): text
                case .tokens(let tokens): model.tokenizer.decode(tokens, skipSpecialTokens: false)
                }
            })
        record?.prompted(tokens: context.promptTokenCount)
        if request.options.stream {
            return .stream(streamCompletion(run, context: context))
        }
        return .json(try await collectCompletion(run, context: context))
    }

    // MARK: /v1/chat/completions

    public func chatCompletions(body: Data, now: Date = Date(), record: RequestRecord? = nil) async throws(APIError) -> EndpointResponse {
        var request = try ChatCompletionRequest(body: try Self.parseBody(body))
        try checkModel(request.model)
        try checkLimits(request.options)
        if let user = request.options.user { record?.user(user) }
        let toolCalls = try toolCallFormat(for: request)
        let forced = forcedToolCall(for: request)
        var constraint: OutputConstraint?
        if let (_, structured) = forced {
            guard request.options.structuredOutput == nil else {
                throw .invalidRequest("tool_choice 'required' or a named function already fixes the output's shape; send it without \(request.options.structuredOutputField)",
                                      param: "tool_choice", code: "invalid_value")
            }
            constraint = try outputConstraint(structured, field: "tools")
        } else if let structured = request.options.structuredOutput {
            constraint = try outputConstraint(structured, field: request.options.structuredOutputField)
        }
        // The markers of some families are special tokens: the parser must see them.
        if toolCalls?.needsSpecialTokens == true { request.options.skipSpecialTokens = false }
        let tokens = try chatPromptTokens(request, now: now)
        let maxTokens = try maxNewTokens(promptCount: tokens.count, requested: request.options.maxTokens, default: nil)
        let logprobs: Int? = request.logprobs ? request.topLogprobs : nil
        var plans: [ChoicePlan] = []
        for choice in 0..<request.options.n {
            plans.append(ChoicePlan(index: choice, promptIndex: 0,
                                    request: sequenceRequest(tokens, options: request.options, maxTokens: maxTokens,
                                                             logprobs: logprobs, promptLogprobs: nil, sampleIndex: choice,
                                                             constraint: constraint)))
        }
        let run = try await submit(plans, seed: request.options.seed, record: record)
        let context = ChatContext(id: makeResponseID(prefix: "chatcmpl-"), created: Int(now.timeIntervalSince1970),
                                  model: model.name, request: request, promptTokenCount: tokens.count, toolCalls: toolCalls,
                                  forcedToolCall: forced?.0)
        record?.prompted(tokens: context.promptTokenCount)
        if request.options.stream {
            return .stream(streamChat(run, context: context))
        }
        return .json(try await collectChat(run, context: context))
    }

    /// A text prompt's tokens as generation encodes them: the tokenizer's special tokens added,
    /// special-token text in the prompt read as those tokens.
    func promptTokens(_ text: String, addSpecialTokens: Bool = true) -> [TokenID] {
        model.tokenizer.encode(text, addSpecialTokens: addSpecialTokens, parseSpecial: true)
    }

    /// A chat request's prompt tokens: its template's text, which writes its own special tokens.
    func chatPromptTokens(_ request: ChatCompletionRequest, now: Date = Date(),
                          addSpecialTokens: Bool = false) throws(APIError) -> [TokenID] {
        promptTokens(try renderChat(request, now: now), addSpecialTokens: addSpecialTokens)
    }

    /// The format the output's tool calls are parsed in, nil when the request lets the model
    /// call none; refused when the model has no tool-call format.
    func toolCallFormat(for request: ChatCompletionRequest) throws(APIError) -> ToolCallFormat? {
        guard request.tools != nil, request.toolChoice != .none else { return nil }
        guard let format = model.toolCallFormat else {
            throw .invalidRequest(
                "'tools' needs a tool-call format, and the model's chat template writes none this server can parse; start the router with --tool-call-parser (hermes, llama3_json or mistral), or send tool_choice 'none'",
                param: "tools", code: "tool_calls_unavailable")
        }
        return format
    }

    /// The call `tool_choice` forces and the grammar that forces it: for a named function its
    /// arguments under the tool's `parameters`; for "required" a list of `{"name", "parameters"}`
    /// (just one when `parallel_tool_calls` is false). Nil when the model may answer freely.
    func forcedToolCall(for request: ChatCompletionRequest) -> (ForcedToolCall, StructuredOutputRequest)? {
        let tools = request.tools ?? []
        func parameters(_ tool: JSONValue) -> JSONValue {
            tool["function"]?["parameters"] ?? .object([("type", "object"), ("properties", .object([])), ("additionalProperties", false)])
        }
        func name(_ tool: JSONValue) -> String? {
            guard case .string(let name)? = tool["function"]?["name"] else { return nil }
            return name
        }
        switch request.toolChoice {
        case .auto, .none:
            return nil
        case .function(let wanted):
            guard let tool = tools.first(where: { name($0) == wanted }) else { return nil }
            return (.function(wanted), .jsonSchema(name: wanted, schema: parameters(tool)))
        case .required:
            let calls: [JSONValue] = tools.compactMap { tool in
                guard let name = name(tool) else { return nil }
                return .object([("type", "object"),
                                ("properties", .object([("name", .object([("const", .string(name))])), ("parameters", parameters(tool))])),
                                ("required", .array(["name", "parameters"]))])
            }
            var list: [(String, JSONValue)] = [("type", "array"), ("items", .object([("anyOf", .array(calls))])), ("minItems", 1)]
            if !request.parallelToolCalls { list.append(("maxItems", 1)) }
            return (.anyTool, .jsonSchema(name: "tool_calls", schema: .object(list)))
        }
    }

    /// The constraint a request's output is held to (compiled once per distinct grammar); a
    /// schema the engine cannot hold to is a 400 naming the field and the keyword.
    func outputConstraint(_ structured: StructuredOutputRequest, field: String) throws(APIError) -> OutputConstraint {
        let tables: GrammarMaskTables
        do {
            tables = try model.grammars.tables(for: structured)
        } catch {
            let what: String
            switch structured {
            case .jsonSchema(let name, _): what = "schema for \(field)" + (name.map { " '\($0)'" } ?? "")
            case .jsonObject, .regex, .choice: what = field
            }
            throw .invalidRequest("Invalid \(what): \(error)", param: field, code: "invalid_schema")
        }
        return OutputConstraint(description: structured.description) { GrammarMatcher(tables: tables) }
    }

    /// The prompt text of a chat request, by the model's template. Tools are rendered unless
    /// `tool_choice` is "none"; `continue_final_message` ends the text with the last message's
    /// content, so generation continues it.
    public func renderChat(_ request: ChatCompletionRequest, now: Date = Date()) throws(APIError) -> String {
        guard let template = model.chatTemplate else {
            throw .invalidRequest("the model has no chat template; start the router with --chat-template FILE",
                                  param: "messages", code: "chat_template_missing")
        }
        let text: String
        do {
            text = try template.render(
                messages: .array(request.messages.map(\.jinjaValue)),
                tools: request.toolChoice == .none ? nil : request.tools.map { .array($0.map(\.jinjaValue)) },
                addGenerationPrompt: request.addGenerationPrompt,
                bosToken: model.tokenizer.bosToken ?? "",
                eosToken: model.tokenizer.eosToken ?? "",
                extra: Dictionary(request.templateArguments.map { ($0.0, $0.1.jinjaValue) }, uniquingKeysWith: { $1 }),
                now: now)
        } catch {
            throw .invalidRequest("chat template error: \(error)", param: "messages", code: "chat_template_error")
        }
        guard request.continueFinalMessage else { return text }
        // As vLLM does: cut the rendering after the last place the final content appears.
        guard case .string(let content)? = request.messages.last?["content"], !content.isEmpty else { return text }
        for candidate in [content, content.trimmingCharacters(in: .whitespacesAndNewlines)] where !candidate.isEmpty {
            if let range = text.range(of: candidate, options: .backwards) { return String(text[..<range.upperBound]) }
        }
        throw .invalidRequest("continue_final_message: the chat template does not write the final message's content as sent, so it cannot be continued",
                              param: "continue_final_message", code: "chat_template_error")
    }

    // MARK: Shared steps

    static func parseBody(_ body: Data) throws(APIError) -> JSONValue {
        do {
            return try JSONValue.parse(body)
        } catch {
            throw .invalidRequest("the request body is not valid JSON: \(error)", code: "invalid_json")
        }
    }

    func checkModel(_ requested: String?) throws(APIError) {
        if let requested, requested != model.name { throw .modelNotFound(requested) }
    }

    /// What the scheduler's configuration allows: `n` choices are `n` sequences, which must fit in
    /// one batch (`--max-num-seqs`) as separate requests would; `priority` needs the priority policy.
    func checkLimits(_ options: GenerationOptions) throws(APIError) {
        let configuration = scheduler.configuration
        if options.n > configuration.maxSequences {
            throw .invalidValue("n", "must be at most \(configuration.maxSequences) (the server's --max-num-seqs), got \(options.n)")
        }
        if let queue = configuration.maxWaitingSequences, options.n > queue {
            throw .invalidValue("n", "must be at most \(queue) (the server's --max-queued-requests), got \(options.n)")
        }
        if let problem = options.sampling.problem(vocabularySize: model.vocabularySize) {
            throw .invalidValue(problem.field, problem.detail)
        }
        if options.priority != 0, configuration.policy != .priority {
            throw .invalidValue("priority", "needs the server started with --scheduling-policy priority, got \(options.priority)")
        }
    }

    /// The token limit of each choice, checked against the context as vLLM does.
    func maxNewTokens(promptCount: Int, requested: Int?, default defaultCount: Int?) throws(APIError) -> Int {
        let room = model.maxContextLength - promptCount
        guard room > 0 else {
            throw .invalidRequest(
                "This model's maximum context length is \(model.maxContextLength) tokens. However, your request has \(promptCount) input tokens. Please reduce the length of the input.",
                param: "messages", code: "context_length_exceeded")
        }
        if let requested {
            guard requested <= room else {
                throw .invalidRequest(
                    "This model's maximum context length is \(model.maxContextLength) tokens. However, you requested \(promptCount + requested) tokens (\(promptCount) in the input, \(requested) in the completion). Please reduce the length of the input or the completion.",
                    param: "max_tokens", code: "context_length_exceeded")
            }
            return requested
        }
        return min(defaultCount ?? room, room)
    }

    func sequenceRequest(_ tokens: [TokenID], options: GenerationOptions, maxTokens: Int, logprobs: Int?,
                         promptLogprobs: Int?, sampleIndex: Int, constraint: OutputConstraint?) -> SequenceRequest {
        var stops = Set(options.stopTokenIDs)
        if !options.ignoreEOS { stops.formUnion(model.stopTokenIDs) }
        return SequenceRequest(
            promptTokens: tokens,
            sampling: options.sampling, logprobs: logprobs,
            maxNewTokens: maxTokens, stopTokenIDs: stops, promptLogprobs: promptLogprobs, sampleIndex: sampleIndex,
            priority: options.priority, constraint: constraint)
    }

    /// Submits every choice, or none: a choice refused by the scheduler cancels the others.
    func submit(_ plans: [ChoicePlan], seed: UInt64?, record: RequestRecord?) async throws(APIError) -> ChoiceRun {
        let seed = seed ?? UInt64.random(in: 0...UInt64.max)
        var submitted: [(id: UInt64, events: AsyncThrowingStream<SequenceEvent, any Error>)] = []
        for plan in plans {
            var request = plan.request
            request.sampling.seed = seed
            request.requestID = record?.id
            do {
                submitted.append(try await scheduler.submit(request))
            } catch {
                for entry in submitted { await scheduler.cancel(entry.id) }
                // At submission a prompt that does not fit is the client's: OpenAI names it so.
                if case .doesNotFit = error { throw .invalidRequest("\(error)", param: "prompt", code: "context_length_exceeded") }
                throw Self.apiError(from: error)
            }
        }
        return ChoiceRun(plans: plans, sequenceIDs: submitted.map(\.id), events: merge(submitted.map(\.events), record: record),
                         scheduler: scheduler)
    }

    /// One stream of (choice index, event) over all the choices' streams. Dropping it cancels
    /// every sequence still running.
    private func merge(_ streams: [AsyncThrowingStream<SequenceEvent, any Error>],
                       record: RequestRecord?) -> AsyncStream<ChoiceEvent> {
        let (merged, continuation) = AsyncStream.makeStream(of: ChoiceEvent.self)
        let task = Task {
            await withTaskGroup(of: Void.self) { group in
                for (index, stream) in streams.enumerated() {
                    group.addTask {
                        do {
                            for try await event in stream {
                                if case .token = event { record?.generatedToken() }
                                continuation.yield(ChoiceEvent(choice: index, event: .success(event)))
                            }
                        } catch {
                            continuation.yield(ChoiceEvent(choice: index, event: .failure(error)))
                        }
                    }
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return merged
    }

    func makeOutput(for plan: ChoicePlan, options: GenerationOptions) -> ChoiceOutput {
        ChoiceOutput(tokenizer: model.tokenizer, stopStrings: options.stop, stopTokenIDs: plan.request.stopTokenIDs,
                     skipSpecialTokens: options.skipSpecialTokens)
    }

    static func apiError(from error: any Error) -> APIError {
        if let error = error as? GenerationError {
            switch error {
            case .stepFailed, .missingResult: return .workersUnavailable("generation failed: \(error)")
            case .shuttingDown: return .workersUnavailable("\(error)")
            case .doesNotFit: return .invalidRequest("\(error)")
            case .sequenceRefused: return .internalError("\(error)")
            case .queueFull: return .queueFull("\(error)")
            }
        }
        if error is CancellationError { return .workersUnavailable("the request was cancelled") }
        return .internalError("\(error)")
    }
}

/// One choice to generate: its index in the response and its sequence.
struct ChoicePlan: Sendable {
    var index: Int
    var promptIndex: Int
    var request: SequenceRequest
}

struct ChoiceEvent: Sendable {
    var choice: Int
    var event: Result<SequenceEvent, any Error>
}

/// The sequences of one request in flight.
struct ChoiceRun: Sendable {
    var plans: [ChoicePlan]
    var sequenceIDs: [UInt64]
    var events: AsyncStream<ChoiceEvent>
    var scheduler: Scheduler

    /// Ends a choice early (its stop string was found).
    func stop(choice: Int) async {
        await scheduler.finishByStopString(sequenceIDs[choice])
    }
}

struct CompletionContext: Sendable {
    var id: String
    var created: Int
    var model: String
    var request: CompletionRequest
    var prompts: [[TokenID]]
    var promptTexts: [String]

    /// What usage reports: each prompt once, whatever `n` is.
    var promptTokenCount: Int { prompts.reduce(0) { $0 + $1.count } }
}

struct ChatContext: Sendable {
    var id: String
    var created: Int
    var model: String
    var request: ChatCompletionRequest
    var promptTokenCount: Int
    /// The format tool calls are parsed from the output in; nil: the output is all content.
    var toolCalls: ToolCallFormat?
    /// Set when `tool_choice` forces a call: the output is the server's JSON shape.
    var forcedToolCall: ForcedToolCall?
}
