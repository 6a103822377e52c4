import Tokenizers

extension OpenAIEndpoints {
    private func chatUsage(_ outputs: [ChoiceOutput], run: ChoiceRun, context: ChatContext) -> JSONValue {
        usageJSON(promptTokens: context.promptTokenCount, completionTokens: outputs.reduce(0) { $0 + $1.tokenCount },
                  cachedTokens: cachedPromptTokens(outputs, plans: run.plans))
    }

    /// Applies one event to a choice; returns the released text, the logprob entries of the
    /// token, and whether the choice just finished.
    private func apply(_ event: SequenceEvent, to output: inout ChoiceOutput, choice: Int, run: ChoiceRun,
                       wantsLogprobs: Bool) async -> (text: String, logprobs: [JSONValue], finished: Bool) {
        guard let step = await run.advance(&output, choice: choice, with: event) else { return ("", [], false) }
        var entries: [JSONValue] = []
        if wantsLogprobs, case .token(let sampled) = event { entries = [formatter.chatEntry(sampled)] }
        return (step.text, entries, step.finished)
    }

    func collectChat(_ run: ChoiceRun, context: ChatContext) async throws(APIError) -> JSONValue {
        var outputs = run.plans.map { makeOutput(for: $0, options: context.request.options) }
        var logprobs = Array(repeating: [JSONValue](), count: outputs.count)
        let wantsLogprobs = context.request.logprobs
        for await item in run.events {
            switch item.event {
            case .failure(let error):
                throw Self.apiError(from: error)
            case .success(let event):
                let (_, entries, _) = await apply(event, to: &outputs[item.choice], choice: item.choice, run: run,
                                                  wantsLogprobs: wantsLogprobs)
                logprobs[item.choice] += entries
            }
        }
        var choices: [JSONValue] = []
        for (index, output) in outputs.enumerated() {
            guard let reason = output.finishReason else { throw .choiceNotFinished(index) }
            var message: [(String, JSONValue)] = [("role", "assistant"), ("content", .string(output.text))]
            var finish = reason.rawValue
            if let format = context.toolCalls {
                let parsed = ToolCallStream.parse(output.text, format: format, parallel: context.request.parallelToolCalls,
                                                  forced: context.forcedToolCall)
                if !parsed.calls.isEmpty {
                    let content = parsed.content.trimmingCharacters(in: .whitespacesAndNewlines)
                    message = [("role", "assistant"), ("content", content.isEmpty ? .null : .string(content)),
                               ("tool_calls", .array(parsed.calls.map(\.json)))]
                    if reason == .stop { finish = "tool_calls" }
                }
            }
            choices.append(.object([
                ("index", .int(index)),
                ("message", .object(message)),
                ("logprobs", wantsLogprobs ? .object([("content", .array(logprobs[index]))]) : .null),
                ("finish_reason", .string(finish)),
            ]))
        }
        return context.body(object: "chat.completion", choices: choices, usage: chatUsage(outputs, run: run, context: context))
    }

    func streamChat(_ run: ChoiceRun, context: ChatContext) -> AsyncStream<JSONValue> {
        let (stream, continuation) = AsyncStream.makeStream(of: JSONValue.self)
        let includeUsage = context.request.options.includeUsage
        let wantsLogprobs = context.request.logprobs
        func chunk(_ choices: [JSONValue], usage: JSONValue? = nil) -> JSONValue {
            includeUsage ? context.body(object: "chat.completion.chunk", choices: choices, usage: usage ?? .null)
                : context.body(object: "chat.completion.chunk", choices: choices)
        }
        func choice(_ index: Int, delta: JSONValue, logprobs: JSONValue, finishReason: String?) -> JSONValue {
            .object([
                ("index", .int(index)),
                ("delta", delta),
                ("logprobs", logprobs),
                ("finish_reason", finishReason.map { .string($0) } ?? .null),
            ])
        }
        let task = Task {
            var outputs = run.plans.map { makeOutput(for: $0, options: context.request.options) }
            var parsers = context.toolCalls.map { format in
                let parser = ToolCallStream(format: format, parallel: context.request.parallelToolCalls,
                                            forced: context.forcedToolCall)
                return Array(repeating: parser, count: outputs.count)
            }
            // Every choice opens with the assistant role, as OpenAI's stream does.
            for index in outputs.indices {
                continuation.yield(chunk([choice(index, delta: .object([("role", "assistant"), ("content", "")]),
                                                 logprobs: .null, finishReason: nil)]))
            }
            let ranOut = await relayEvents(of: run, to: continuation) { index, event in
                let (text, entries, finished) = await apply(event, to: &outputs[index], choice: index, run: run,
                                                            wantsLogprobs: wantsLogprobs)
                let logprobs: JSONValue = wantsLogprobs && !entries.isEmpty ? .object([("content", .array(entries))]) : .null
                if parsers != nil {
                    // Content streams as it is known; each call as OpenAI streams it: id, type
                    // and name once for its index, then its arguments.
                    var events = parsers![index].feed(text)
                    if finished { events += parsers![index].finish() }
                    var deltas: [JSONValue] = []
                    for parsed in events {
                        switch parsed {
                        case .content(let content):
                            deltas.append(.object([("content", .string(content))]))
                        case .call(let call):
                            let callIndex = JSONValue.int(parsers![index].calls.firstIndex(of: call) ?? 0)
                            deltas.append(.object([("tool_calls", .array([.object([
                                ("index", callIndex), ("id", .string(call.id)), ("type", "function"),
                                ("function", .object([("name", .string(call.name)), ("arguments", "")])),
                            ])]))]))
                            deltas.append(.object([("tool_calls", .array([.object([
                                ("index", callIndex), ("function", .object([("arguments", .string(call.arguments))])),
                            ])]))]))
                        }
                    }
                    if deltas.isEmpty, !entries.isEmpty || finished { deltas.append(.object([])) }
                    for (position, delta) in deltas.enumerated() {
                        let last = position == deltas.count - 1
                        var reason: String?
                        if last, finished, let finish = outputs[index].finishReason {
                            reason = finish == .stop && !parsers![index].calls.isEmpty ? "tool_calls" : finish.rawValue
                        }
                        continuation.yield(chunk([choice(index, delta: delta, logprobs: position == 0 ? logprobs : .null,
                                                         finishReason: reason)]))
                    }
                    return
                }
                guard !text.isEmpty || finished || !entries.isEmpty else { return }
                let delta: JSONValue = text.isEmpty && finished ? .object([]) : .object([("content", .string(text))])
                continuation.yield(chunk([choice(index, delta: delta, logprobs: logprobs,
                                                 finishReason: finished ? outputs[index].finishReason?.rawValue : nil)]))
            }
            guard ranOut else { return }
            if Task.isCancelled { continuation.finish(); return }
            closeStream(continuation, unfinishedChoice: outputs.firstIndex(where: { !$0.isFinished }),
                        includeUsage: includeUsage) {
                chunk([], usage: chatUsage(outputs, run: run, context: context))
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}
