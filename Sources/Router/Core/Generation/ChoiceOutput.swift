import Tokenizers

/// The text side of one generated sequence: bytes of each token → UTF-8-safe text → stop
/// strings. Tokens that end the sequence as stop tokens add no text, as in vLLM.
public struct ChoiceOutput: Sendable {
    public let tokenizer: any Tokenizer
    public let skipSpecialTokens: Bool
    public let stopTokenIDs: Set<TokenID>
    private var decoder = UTF8StreamDecoder()
    private var matcher: StopStringMatcher
    /// The text released so far.
    public private(set) var text = ""
    public private(set) var tokens: [SampledToken] = []
    public private(set) var finishReason: FinishReason?
    /// True once a stop string ended the text; later tokens add nothing.
    public var stoppedByString: Bool { matcher.stopped }

    public init(tokenizer: any Tokenizer, stopStrings: [String], stopTokenIDs: Set<TokenID>, skipSpecialTokens: Bool) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
        self.stopTokenIDs = stopTokenIDs
        matcher = StopStringMatcher(stopStrings: stopStrings)
    }

    public var tokenCount: Int { tokens.count }
    public var isFinished: Bool { finishReason != nil }

    /// Takes one sampled token; returns the text it releases. A stop string found here
    /// finishes the choice with `stop`.
    public mutating func accept(_ token: SampledToken) -> String {
        guard finishReason == nil else { return "" }
        tokens.append(token)
        if stopTokenIDs.contains(token.token) { return "" }
        let piece = decoder.append(tokenizer.pieceBytes(token.token, skipSpecialTokens: skipSpecialTokens))
        return release(piece)
    }

    /// The scheduler ended the sequence; returns the last text held back. A stop string found
    /// earlier keeps its `stop`.
    public mutating func finish(_ reason: FinishReason) -> String {
        guard finishReason == nil else { return "" }
        var rest = release(decoder.flush())
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
