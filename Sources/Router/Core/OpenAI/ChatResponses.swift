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
            choices.append(.object([
                ("index", .int(index)),
                ("message", .object([("role", "assistant"), ("content", .string(output.text))])),
                ("logprobs", wantsLogprobs ? .object([("content", .array(logprobs[index]))]) : .null),
                ("finish_reason", .string(reason.rawValue)),
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
        func choice(_ index: Int, delta: JSONValue, logprobs: JSONValue, finishReason: FinishReason?) -> JSONValue {
            .object([
                ("index", .int(index)),
                ("delta", delta),
                ("logprobs", logprobs),
                ("finish_reason", finishReason.map { .string($0.rawValue) } ?? .null),
            ])
        }
        let task = Task {
            var outputs = run.plans.map { makeOutput(for: $0, options: context.request.options) }
            // Every choice opens with the assistant role, as OpenAI's stream does.
            for index in outputs.indices {
                continuation.yield(chunk([choice(index, delta: .object([("role", "assistant"), ("content", "")]),
                                                 logprobs: .null, finishReason: nil)]))
            }
            let ranOut = await relayEvents(of: run, to: continuation) { index, event in
                let (text, entries, finished) = await apply(event, to: &outputs[index], choice: index, run: run,
                                                            wantsLogprobs: wantsLogprobs)
                guard !text.isEmpty || finished || !entries.isEmpty else { return }
                let delta: JSONValue = text.isEmpty && finished ? .object([]) : .object([("content", .string(text))])
                let logprobs: JSONValue = wantsLogprobs && !entries.isEmpty ? .object([("content", .array(entries))]) : .null
                continuation.yield(chunk([choice(index, delta: delta, logprobs: logprobs,
                                                 finishReason: finished ? outputs[index].finishReason : nil)]))
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
