import Tokenizers

/// The text side of one generated sequence: token ids → UTF-8-safe text (the tokenizer's
/// incremental detokenizer, so the streamed text adds up to the concatenated token pieces, the
/// text that follows the prompt) → stop strings.
/// Tokens that end the sequence as stop tokens add no text, as in vLLM.
public struct ChoiceOutput: Sendable {
    public var tokenizer: any Tokenizer { detokenizer.tokenizer }
    public var skipSpecialTokens: Bool { detokenizer.skipSpecialTokens }
    public let stopTokenIDs: Set<TokenID>
    private var detokenizer: IncrementalDetokenizer
    private var matcher: StopStringMatcher
    /// The text released so far.
    public private(set) var text = ""
    public private(set) var tokens: [SampledToken] = []
    public private(set) var finishReason: FinishReason?
    /// True once a stop string ended the text; later tokens add nothing.
    public var stoppedByString: Bool { matcher.stopped }

    public init(tokenizer: any Tokenizer, stopStrings: [String], stopTokenIDs: Set<TokenID>, skipSpecialTokens: Bool) {
        // Generated text continues the prompt: a SentencePiece "▁Paris" streams as " Paris".
        detokenizer = IncrementalDetokenizer(tokenizer: tokenizer, skipSpecialTokens: skipSpecialTokens,
                                             continuingText: true)
        self.stopTokenIDs = stopTokenIDs
        matcher = StopStringMatcher(stopStrings: stopStrings)
    }

    public var tokenCount: Int { tokens.count }
    /// Prompt tokens whose KV came from the prefix cache.
    public var cachedPromptTokens = 0
    public var isFinished: Bool { finishReason != nil }

    /// Takes one sampled token; returns the text it releases. A stop string found here
    /// finishes the choice with `stop`.
    public mutating func accept(_ token: SampledToken) -> String {
        guard finishReason == nil else { return "" }
        tokens.append(token)
        if stopTokenIDs.contains(token.token) { return "" }
        return release(detokenizer.append(token.token))
    }

    /// The scheduler ended the sequence; returns the last text held back. A stop string found
    /// earlier keeps its `stop`.
    public mutating func finish(_ reason: FinishReason) -> String {
        guard finishReason == nil else { return "" }
        var rest = release(detokenizer.finish())
        if finishReason == nil {
            let held = matcher.flush()
            text += held
            rest += held
            finishReason = reason
        }
        return rest
    }

    private mutating func release(_ piece: String) -> String {
        guard !piece.isEmpty else { return "" }
        let outcome = matcher.feed(piece)
        if outcome.stopped { finishReason = .stop }
        text += outcome.text
        return outcome.text
    }
}
