import Wire

/// One sequence's share of a step: tokens to run at `startPosition ..<`, the cache blocks that
/// hold (or will hold) its positions, and whether to sample after the last token.
public struct SequenceWork: Sendable {
    public var id: UInt64
    public var tokens: [Int32]
    public var startPosition: Int
    public var blockTable: [Int32]
    public var sampling: SamplingParameters
    /// How many alternatives to report with each logprob (0 = none).
    public var topLogprobs: Int
    /// Report the sampled token's logprob (log-softmax of the raw logits).
    public var wantLogprobs: Bool
    /// Structured output: the tokens allowed next, one bit per token id, or nil (no constraint).
    public var allowedTokens: TokenMask?
    public var sample: Bool
    public var wantPromptLogprobs: Bool
    /// Which sample of the request this is (for n > 1); part of the random stream's key.
    public var sampleIndex: Int
    /// Tokens generated so far, for the repetition, presence and frequency penalties.
    public var generatedTokens: [Int32]
    /// The prompt, for the repetition penalty (which counts prompt tokens as seen, as vLLM does).
    public var promptTokens: [Int32]
    /// Decode passes in this step: after the first, each sampled token is the next pass's one
    /// input token (one position on), until this many are sampled. More than one only for a
    /// decode (one token, sampled, no mask, no prompt logprobs), its block table covering them all.
    public var decodeSteps: Int

    public init(id: UInt64, tokens: [Int32], startPosition: Int, blockTable: [Int32],
                sampling: SamplingParameters = .greedy, topLogprobs: Int = 0, wantLogprobs: Bool = false,
                allowedTokens: TokenMask? = nil, sample: Bool = true, wantPromptLogprobs: Bool = false,
                sampleIndex: Int = 0, generatedTokens: [Int32] = [], promptTokens: [Int32] = [], decodeSteps: Int = 1) {
        self.decodeSteps = decodeSteps
        self.id = id
        self.tokens = tokens
        self.startPosition = startPosition
        self.blockTable = blockTable
        self.sampling = sampling
        self.topLogprobs = topLogprobs
        self.wantLogprobs = wantLogprobs
        self.allowedTokens = allowedTokens
        self.sample = sample
        self.wantPromptLogprobs = wantPromptLogprobs
        self.sampleIndex = sampleIndex
        self.generatedTokens = generatedTokens
        self.promptTokens = promptTokens
    }
}

public struct TokenChoice: Sendable, Equatable {
    public var token: Int32
    public var logprob: Float

    public init(token: Int32, logprob: Float) {
        self.token = token
        self.logprob = logprob
    }
}

/// A token with its logprob and the most likely alternatives at its position: a prompt token
/// scored (prompt logprobs), or a token sampled by a later decode pass of a step.
public struct ScoredToken: Sendable, Equatable {
    public var chosen: TokenChoice
    public var top: [TokenChoice]

    public init(chosen: TokenChoice, top: [TokenChoice]) {
        self.chosen = chosen
        self.top = top
    }
}

public struct SequenceOutcome: Sendable, Equatable {
    public var id: UInt64
    /// The sampled token, when `sample` was set, with its logprob (log-softmax of the raw
    /// logits) when the sampling config wants logprobs (else 0: the router reads it only then).
    public var sampled: TokenChoice?
    /// The most likely alternatives at the sampled position, when logprobs were asked for.
    public var topLogprobs: [TokenChoice]
    /// For `tokens[1...]` when `startPosition == 0`, else for all tokens given the cache.
    public var promptLogprobs: [ScoredToken]
    /// With `decodeSteps > 1`: the tokens the passes after the first sampled, in order (their
    /// logprob 0 unless the sampling config wants logprobs, as `sampled`'s).
    public var following: [ScoredToken]
    /// Why the sequence could not run (it was left out of the step; the others ran).
    public var error: String?

    public init(id: UInt64, sampled: TokenChoice? = nil, topLogprobs: [TokenChoice] = [],
                promptLogprobs: [ScoredToken] = [], following: [ScoredToken] = [], error: String? = nil) {
        self.id = id
        self.following = following
        self.error = error
        self.sampled = sampled
        self.topLogprobs = topLogprobs
        self.promptLogprobs = promptLogprobs
    }
}

public struct ModelInfo: Sendable, Equatable {
    public var architecture: String
    public var vocabSize: Int
    public var maxContextLength: Int
    public var fingerprint: String
    public var kvBlockCount: Int
    public var kvBlockSize: Int
    /// Per KV group (`KVCacheGroups.windows`): the positions its layers attend back over.
    public var kvGroupWindows: [Int]

    public init(architecture: String, vocabSize: Int, maxContextLength: Int, fingerprint: String,
                kvBlockCount: Int, kvBlockSize: Int, kvGroupWindows: [Int] = [0]) {
        self.architecture = architecture
        self.vocabSize = vocabSize
        self.maxContextLength = maxContextLength
        self.fingerprint = fingerprint
        self.kvBlockCount = kvBlockCount
        self.kvBlockSize = kvBlockSize
        self.kvGroupWindows = kvGroupWindows
    }

    /// Positions every layer attends back over (0: some layer sees the whole context).
    public var attentionWindow: Int { kvGroupWindows.contains(0) ? 0 : kvGroupWindows.max() ?? 0 }
}
