/// How to pick the next token of one sequence.
public struct SamplingConfig: Sendable, Equatable {
    /// 0 = greedy.
    public var temperature: Float
    /// 1 = off.
    public var topP: Float
    /// 0 = off.
    public var topK: Int
    public var seed: UInt64
    /// How many alternatives to report with each logprob (0 = none).
    public var topLogprobs: Int
    public var wantLogprobs: Bool
    /// 1 = off.
    public var repetitionPenalty: Float
    public var presencePenalty: Float
    public var frequencyPenalty: Float

    public init(temperature: Float = 0, topP: Float = 1, topK: Int = 0, seed: UInt64 = 0,
                topLogprobs: Int = 0, wantLogprobs: Bool = false, repetitionPenalty: Float = 1,
                presencePenalty: Float = 0, frequencyPenalty: Float = 0) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.seed = seed
        self.topLogprobs = topLogprobs
        self.wantLogprobs = wantLogprobs
        self.repetitionPenalty = repetitionPenalty
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
    }

    public static let greedy = SamplingConfig()
}

/// One sequence's share of a step: tokens to run at `startPosition ..<`, the cache blocks that
/// hold (or will hold) its positions, and whether to sample after the last token.
public struct SequenceWork: Sendable {
    public var id: UInt64
    public var tokens: [Int32]
    public var startPosition: Int
    public var blockTable: [Int32]
    public var sampling: SamplingConfig
    public var sample: Bool
    public var wantPromptLogprobs: Bool
    /// Which sample of the request this is (for n > 1); part of the random stream's key.
    public var sampleIndex: Int
    /// Tokens generated so far, for the repetition, presence and frequency penalties.
    public var generatedTokens: [Int32]

    public init(id: UInt64, tokens: [Int32], startPosition: Int, blockTable: [Int32],
                sampling: SamplingConfig = .greedy, sample: Bool = true, wantPromptLogprobs: Bool = false,
                sampleIndex: Int = 0, generatedTokens: [Int32] = []) {
        self.id = id
        self.tokens = tokens
        self.startPosition = startPosition
        self.blockTable = blockTable
        self.sampling = sampling
        self.sample = sample
        self.wantPromptLogprobs = wantPromptLogprobs
        self.sampleIndex = sampleIndex
        self.generatedTokens = generatedTokens
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

public struct PromptTokenLogprob: Sendable, Equatable {
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
    public var promptLogprobs: [PromptTokenLogprob]
    /// Why the sequence could not run (it was left out of the step; the others ran).
    public var error: String?

    public init(id: UInt64, sampled: TokenChoice? = nil, topLogprobs: [TokenChoice] = [],
                promptLogprobs: [PromptTokenLogprob] = [], error: String? = nil) {
        self.id = id
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

    public init(architecture: String, vocabSize: Int, maxContextLength: Int, fingerprint: String,
                kvBlockCount: Int, kvBlockSize: Int) {
        self.architecture = architecture
        self.vocabSize = vocabSize
        self.maxContextLength = maxContextLength
        self.fingerprint = fingerprint
        self.kvBlockCount = kvBlockCount
        self.kvBlockSize = kvBlockSize
    }
}
