import Tokenizers
import Wire

/// One sequence to generate: what the scheduler needs, nothing about text.
public struct SequenceRequest: Sendable, Equatable {
    public var promptTokens: [TokenID]
    /// How the workers pick each token; the seed is the client's or a random one.
    public var sampling: SamplingParameters
    /// nil: no logprobs; k: the sampled token's logprob and its k most likely alternatives.
    public var logprobs: Int?
    /// Generation ends with `length` after this many new tokens.
    public var maxNewTokens: Int
    /// Sampling one of these ends the sequence with `stop` (the token is still reported).
    public var stopTokenIDs: Set<TokenID>
    /// nil: no prompt logprobs; k: each prompt token's logprob with k alternatives (echo + logprobs).
    public var promptLogprobs: Int?
    /// Which of the request's `n` choices this is: distinct random streams for the same seed.
    public var sampleIndex: Int
    /// Structured output: what the generated tokens must match (nil: anything).
    public var constraint: OutputConstraint?
    /// Lower runs first under the `priority` scheduling policy (vLLM's request field).
    public var priority: Int
    /// The HTTP request it belongs to, for log lines.
    public var requestID: String?

    public init(promptTokens: [TokenID], sampling: SamplingParameters = SamplingParameters(), logprobs: Int? = nil,
                maxNewTokens: Int, stopTokenIDs: Set<TokenID> = [], promptLogprobs: Int? = nil, sampleIndex: Int = 0,
                priority: Int = 0, constraint: OutputConstraint? = nil) {
        self.logprobs = logprobs
        self.constraint = constraint
        self.priority = priority
        self.promptTokens = promptTokens
        self.sampling = sampling
        self.maxNewTokens = maxNewTokens
        self.stopTokenIDs = stopTokenIDs
        self.promptLogprobs = promptLogprobs
        self.sampleIndex = sampleIndex
    }
}

public struct TokenLogprob: Sendable, Equatable {
    public var token: TokenID
    public var logprob: Float
    public init(token: TokenID, logprob: Float) {
        self.token = token
        self.logprob = logprob
    }
}

/// A token the workers sampled, with its logprobs when they were asked for.
public struct SampledToken: Sendable, Equatable {
    public var token: TokenID
    public var logprob: Float?
    public var topLogprobs: [TokenLogprob]
    public init(token: TokenID, logprob: Float? = nil, topLogprobs: [TokenLogprob] = []) {
        self.token = token
        self.logprob = logprob
        self.topLogprobs = topLogprobs
    }
}

/// The logprob of one prompt token given the ones before it; nil for the first prompt token.
public struct PromptTokenLogprob: Sendable, Equatable {
    public var token: TokenID
    public var logprob: Float?
    public var topLogprobs: [TokenLogprob]
    public init(token: TokenID, logprob: Float?, topLogprobs: [TokenLogprob] = []) {
        self.token = token
        self.logprob = logprob
        self.topLogprobs = topLogprobs
    }
}

public enum FinishReason: String, Sendable, Equatable {
    /// EOS, a stop token or a stop string.
    case stop
    /// max_tokens, the context length or the KV cache capacity.
    case length
}

/// What a sequence's stream delivers, in order: a prefix-cache hit (when there was one), prompt
/// logprobs (when asked), tokens, one finish.
public enum SequenceEvent: Sendable, Equatable {
    /// At its first admission, this many prompt tokens came from the prefix cache (sent only when
    /// more than 0; `usage.prompt_tokens_details.cached_tokens`).
    case prefixCacheHit(tokens: Int)
    case promptLogprobs([PromptTokenLogprob])
    case token(SampledToken)
    case finished(FinishReason)
}

public enum GenerationError: Error, CustomStringConvertible, Equatable {
    /// The workers failed a step this sequence was part of.
    case stepFailed(String)
    /// The result of a step did not mention a sequence that was to sample.
    case missingResult(sequenceID: UInt64, stepID: UInt64)
    /// The server is shutting down and takes no new sequences.
    case shuttingDown
    /// The request does not fit the model (it was not validated against the context).
    case doesNotFit(String)
    /// The workers could not run this sequence (the others in its step ran): the reason they gave.
    case sequenceRefused(String)
    /// `limit` sequences are already waiting (`--max-queued-requests`).
    case queueFull(limit: Int)

    public var description: String {
        switch self {
        case .stepFailed(let reason): return "the workers failed the step: \(reason)"
        case .missingResult(let id, let step): return "step \(step) returned no result for sequence \(id)"
        case .shuttingDown: return "the server is shutting down"
        case .doesNotFit(let reason): return reason
        case .sequenceRefused(let reason): return "the worker could not run this request: \(reason)"
        case .queueFull(let limit):
            return "the server's queue is full (\(limit) requests waiting, its --max-queued-requests); retry later"
        }
    }
}
