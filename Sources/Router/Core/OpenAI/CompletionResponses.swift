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

    private func completionUsage(_ states: [CompletionChoiceState], run: ChoiceRun, context: CompletionContext) -> JSONValue {
        usageJSON(promptTokens: context.promptTokenCount,
                  completionTokens: states.reduce(0) { $0 + $1.output.tokenCount },
                  cachedTokens: cachedPromptTokens(states.map(\.output), plans: run.plans))
    }

    /// Applies one event to a choice; returns the text it releases and whether the choice just
    /// finished. Prompt logprobs are kept for the echo; a token's logprobs join the legacy lists.
    private func apply(_ event: SequenceEvent, to state: inout CompletionChoiceState, choice: Int, run: ChoiceRun,
                       wantsLogprobs: Bool) async -> (text: String, finished: Bool) {
        if case .promptLogprobs(let entries) = event {
            state.promptLogprobs = entries
            return ("", false)
        }
        guard let step = await run.advance(&state.output, choice: choice, with: event) else { return ("", false) }
        if wantsLogprobs, case .token(let sampled) = event {
            formatter.append(token: sampled.token, logprob: sampled.logprob, alternatives: sampled.topLogprobs, to: &state.legacy)
        }
        return step
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
            guard let reason = state.output.finishReason else { throw .choiceNotFinished(index) }
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
        return context.body(object: "text_completion", choices: choices, usage: completionUsage(states, run: run, context: context))
    }

    func streamCompletion(_ run: ChoiceRun, context: CompletionContext) -> AsyncStream<JSONValue> {
        let (stream, continuation) = AsyncStream.makeStream(of: JSONValue.self)
        let includeUsage = context.request.options.includeUsage
        let wantsLogprobs = context.request.logprobs != nil
        func chunk(_ choices: [JSONValue], usage: JSONValue? = nil) -> JSONValue {
            includeUsage ? context.body(object: "text_completion", choices: choices, usage: usage ?? .null)
                : context.body(object: "text_completion", choices: choices)
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
            let ranOut = await relayEvents(of: run, to: continuation) { choice, event in
                if case .promptLogprobs = event {
                    _ = await apply(event, to: &states[choice], choice: choice, run: run, wantsLogprobs: wantsLogprobs)
                    sendEcho(choice)
                    return
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
                guard !text.isEmpty || finished || hasLogprobs else { return }
                continuation.yield(chunk([completionChoice(
                    index: run.plans[choice].index, text: text, logprobs: logprobs,
                    finishReason: finished ? states[choice].output.finishReason : nil)]))
            }
            guard ranOut else { return }
            if Task.isCancelled { continuation.finish(); return }
            closeStream(continuation, unfinishedChoice: states.firstIndex(where: { !$0.output.isFinished }),
                        includeUsage: includeUsage) {
                chunk([], usage: completionUsage(states, run: run, context: context))
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}
