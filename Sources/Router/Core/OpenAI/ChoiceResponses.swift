import Tokenizers

// What chat and legacy completions responses share: the response envelope, how an event
// advances a choice's text, and how a stream ends.

/// The identity of one response: every body and stream chunk of it starts with these members.
protocol ResponseContext: Sendable {
    var id: String { get }
    var created: Int { get }
    var model: String { get }
}

extension ResponseContext {
    /// `{id, object, created, model, choices}`.
    func body(object: String, choices: [JSONValue]) -> JSONValue {
        .object(members(object: object, choices: choices))
    }

    /// The same with `usage` last.
    func body(object: String, choices: [JSONValue], usage: JSONValue) -> JSONValue {
        .object(members(object: object, choices: choices) + [("usage", usage)])
    }

    private func members(object: String, choices: [JSONValue]) -> [(String, JSONValue)] {
        [("id", .string(id)), ("object", .string(object)), ("created", .int(created)), ("model", .string(model)),
         ("choices", .array(choices))]
    }
}

extension CompletionContext: ResponseContext {}
extension ChatContext: ResponseContext {}

extension ChoiceRun {
    /// Feeds a sampled token or the end of its sequence to a choice's text. A stop string that
    /// finishes the choice stops its sequence at once. Returns the text released and whether the
    /// choice just finished; nil when the choice had already finished (later events change nothing).
    func advance(_ output: inout ChoiceOutput, choice: Int, with event: SequenceEvent) async -> (text: String, finished: Bool)? {
        guard !output.isFinished else { return nil }
        switch event {
        case .promptLogprobs:
            return ("", false)
        case .prefixCacheHit(let tokens):
            output.cachedPromptTokens = tokens
            return ("", false)
        case .token(let sampled):
            let text = output.accept(sampled)
            if output.isFinished { await stop(choice: choice) }
            return (text, output.isFinished)
        case .finished(let reason):
            return (output.finish(reason), true)
        }
    }
}

extension APIError {
    /// The events of a choice ran out before it finished (a worker or the scheduler gave up on it).
    static func choiceNotFinished(_ index: Int) -> APIError {
        .workersUnavailable("choice \(index) ended without finishing")
    }
}

extension OpenAIEndpoints {
    /// Hands each choice's events to `handle` until they run out and returns true; on the first
    /// failure sends it as the stream's last chunk, finishes the stream and returns false.
    func relayEvents(of run: ChoiceRun, to continuation: AsyncStream<JSONValue>.Continuation,
                     _ handle: (_ choice: Int, _ event: SequenceEvent) async -> Void) async -> Bool {
        for await item in run.events {
            switch item.event {
            case .failure(let error):
                continuation.yield(Self.apiError(from: error).json)
                continuation.finish()
                return false
            case .success(let event):
                await handle(item.choice, event)
            }
        }
        return true
    }
}

/// Ends a stream of chunks whose events ran out: with an error when a choice never finished,
/// otherwise with the usage chunk when the client asked for one.
func closeStream(_ continuation: AsyncStream<JSONValue>.Continuation, unfinishedChoice: Int?, includeUsage: Bool,
                 usageChunk: () -> JSONValue) {
    if let unfinishedChoice {
        continuation.yield(APIError.choiceNotFinished(unfinishedChoice).json)
    } else if includeUsage {
        continuation.yield(usageChunk())
    }
    continuation.finish()
}
