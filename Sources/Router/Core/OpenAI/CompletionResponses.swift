import Tokenizers

/// Per-choice state while a completions request runs.
private struct CompletionChoiceState {
    var output: ChoiceOutput
    var legacy = LogprobFormatter.Legacy()
    var promptLogprobs: [PromptTokenLogprob]?
    var echoSent = false
}

extension OpenAIEndpoints {
    private func completionStates(_ run: ChoiceRun, context: CompletionContext) -> [CompletionChoiceState] {
        run.plans.map { CompletionChoiceState(output: makeOutput(for: $0, options: context.request.options)) }
    }

    /// Adds the echoed prompt's tokens to the legacy logprobs (the first one with a null logprob).
    private func appendPromptLogprobs(_ state: inout CompletionChoiceState, prompt: [TokenID]) {
        if let entries = state.promptLogprobs {
            for entry in entries {
                formatter.append(token: entry.token, logprob: entry.logprob, alternatives: entry.topLogprobs, to: &state.legacy)
            }
        } else {
            for (position, token) in prompt.enumerated() {
                formatter.append(token: token, logprob: position == 0 ? nil : Float.nan, alternatives: [], to: &state.legacy)
            }
        }
    }

    private func completionChoice(index: Int, text: String, logprobs: JSONValue, finishReason: FinishReason?) -> JSONValue {
        .object([
            ("index", .int(index)),
            ("text", .string(text)),
            ("logprobs", logprobs),
            ("finish_reason", finishReason.map { .string($0.rawValue) } ?? .null),
        ])
    }

    private func completionUsage(_ states: [CompletionChoiceState], context: CompletionContext) -> JSONValue {
        usageJSON(promptTokens: context.prompts.reduce(0) { $0 + $1.count },
                  completionTokens: states.reduce(0) { $0 + $1.output.tokenCount })
    }

    /// Applies one event to a choice; returns the text it releases and the logprobs of its token.
    private func apply(_ event: SequenceEvent, to state: inout CompletionChoiceState, choice: Int, run: ChoiceRun,
                       wantsLogprobs: Bool) async -> (text: String, finished: Bool) {
        switch event {
        case .promptLogprobs(let entries):
            state.promptLogprobs = entries
            return ("", false)
        case .token(let sampled):
            guard !state.output.isFinished else { return ("", false) }
            let text = state.output.accept(sampled)
            if wantsLogprobs {
                formatter.append(token: sampled.token, logprob: sampled.logprob, alternatives: sampled.topLogprobs, to: &state.legacy)
            }
            if state.output.isFinished {
                await run.stop(choice: choice)
                return (text, true)
            }
            return (text, false)
        case .finished(let reason):
            guard !state.output.isFinished else { return ("", false) }
            return (state.output.finish(reason), true)
        }
    }

    func collectCompletion(_ run: ChoiceRun, context: CompletionContext) async throws(APIError) -> JSONValue {
        var states = completionStates(run, context: context)
        let wantsLogprobs = context.request.logprobs != nil
        for await item in run.events {
            switch item.event {
            case .failure(let error):
                throw Self.apiError(from: error)
            case .success(let event):
                _ = await apply(event, to: &states[item.choice], choice: item.choice, run: run, wantsLogprobs: wantsLogprobs)
            }
        }
        var choices: [JSONValue] = []
        for (index, state) in states.enumerated() {
            guard let reason = state.output.finishReason else {
                throw .workersUnavailable("choice \(index) ended without finishing")
            }
            let plan = run.plans[index]
            var text = state.output.text
            var logprobs = JSONValue.null
            if wantsLogprobs {
                var withPrompt = state
                if context.request.echo {
                    withPrompt.legacy = LogprobFormatter.Legacy()
                    appendPromptLogprobs(&withPrompt, prompt: context.prompts[plan.promptIndex])
                    for sampled in state.output.tokens {
                        formatter.append(token: sampled.token, logprob: sampled.logprob, alternatives: sampled.topLogprobs,
                                         to: &withPrompt.legacy)
                    }
                }
                logprobs = withPrompt.legacy.json
            }
            if context.request.echo { text = context.promptTexts[plan.promptIndex] + text }
            choices.append(completionChoice(index: plan.index, text: text, logprobs: logprobs, finishReason: reason))
        }
        return .object([
            ("id", .string(context.id)),
            ("object", "text_completion"),
            ("created", .int(context.created)),
            ("model", .string(context.model)),
            ("choices", .array(choices)),
            ("usage", completionUsage(states, context: context)),
        ])
    }

    func streamCompletion(_ run: ChoiceRun, context: CompletionContext) -> AsyncStream<JSONValue> {
        let (stream, continuation) = AsyncStream.makeStream(of: JSONValue.self)
        let includeUsage = context.request.options.includeUsage
        let wantsLogprobs = context.request.logprobs != nil
        func chunk(_ choices: [JSONValue], usage: JSONValue? = nil) -> JSONValue {
            var members: [(String, JSONValue)] = [
                ("id", .string(context.id)),
                ("object", "text_completion"),
                ("created", .int(context.created)),
                ("model", .string(context.model)),
                ("choices", .array(choices)),
            ]
            if includeUsage { members.append(("usage", usage ?? .null)) }
            return .object(members)
        }
        let task = Task {
            var states = completionStates(run, context: context)
            // Echo without logprobs can go out at once; with logprobs it waits for the prompt's logprobs.
            func sendEcho(_ choice: Int) {
                guard context.request.echo, !states[choice].echoSent else { return }
                states[choice].echoSent = true
                let plan = run.plans[choice]
                var logprobs = JSONValue.null
                if wantsLogprobs {
                    var prompt = CompletionChoiceState(output: states[choice].output)
                    appendPromptLogprobs(&prompt, prompt: context.prompts[plan.promptIndex])
                    states[choice].legacy.offset = prompt.legacy.offset
                    logprobs = prompt.legacy.json
                }
                continuation.yield(chunk([completionChoice(index: plan.index, text: context.promptTexts[plan.promptIndex],
                                                           logprobs: logprobs, finishReason: nil)]))
            }
            if !wantsLogprobs { for choice in states.indices { sendEcho(choice) } }
            for await item in run.events {
                switch item.event {
                case .failure(let error):
                    continuation.yield(Self.apiError(from: error).json)
                    continuation.finish()
                    return
                case .success(let event):
                    let choice = item.choice
                    if case .promptLogprobs = event {
                        _ = await apply(event, to: &states[choice], choice: choice, run: run, wantsLogprobs: wantsLogprobs)
                        sendEcho(choice)
                        continue
                    }
                    sendEcho(choice)
                    let before = states[choice].legacy
                    let (text, finished) = await apply(event, to: &states[choice], choice: choice, run: run,
                                                       wantsLogprobs: wantsLogprobs)
                    var logprobs = JSONValue.null
                    if wantsLogprobs {
                        // Only the entries this event added.
                        let after = states[choice].legacy
                        var delta = LogprobFormatter.Legacy()
                        delta.tokens = Array(after.tokens[before.tokens.count...])
                        delta.tokenLogprobs = Array(after.tokenLogprobs[before.tokenLogprobs.count...])
                        delta.topLogprobs = Array(after.topLogprobs[before.topLogprobs.count...])
                        delta.textOffsets = Array(after.textOffsets[before.textOffsets.count...])
                        logprobs = delta.json
                    }
                    let hasLogprobs = wantsLogprobs && states[choice].legacy.tokens.count > before.tokens.count
                    guard !text.isEmpty || finished || hasLogprobs else { continue }
                    continuation.yield(chunk([completionChoice(
                        index: run.plans[choice].index, text: text, logprobs: logprobs,
                        finishReason: finished ? states[choice].output.finishReason : nil)]))
                }
            }
            if Task.isCancelled { continuation.finish(); return }
            if let unfinished = states.firstIndex(where: { !$0.output.isFinished }) {
                continuation.yield(APIError.workersUnavailable("choice \(unfinished) ended without finishing").json)
            } else if includeUsage {
                continuation.yield(chunk([], usage: completionUsage(states, context: context)))
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}
