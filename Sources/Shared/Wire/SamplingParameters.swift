/// How the next token of one sequence is chosen: the one definition the router's request parsing,
/// its scheduler and the worker's sampler share. The worker applies the parameters as a chain of
/// logits processors in this order (each in one place, `TokenSampler`): penalties, logit bias,
/// the allowed-token mask, then greedy argmax or temperature, min-p, top-k, top-p and the draw.
public struct SamplingParameters: Sendable, Equatable {
    /// 0 = greedy.
    public var temperature: Float
    /// 1 = off.
    public var topP: Float
    /// 0 = off.
    public var topK: Int
    /// Tokens less likely than `minP` × the most likely token's probability (after temperature)
    /// are dropped. 0 = off.
    public var minP: Float
    /// Every sequence the router sends carries a seed (the client's or a random one), so a run
    /// can be replayed.
    public var seed: UInt64
    /// 1 = off. Divides positive logits and multiplies negative ones of tokens seen so far.
    public var repetitionPenalty: Float
    /// Subtracted once from the logit of every token generated so far.
    public var presencePenalty: Float
    /// Subtracted from a generated token's logit once per time it was generated.
    public var frequencyPenalty: Float
    /// Added to the logits of these tokens (OpenAI's `logit_bias`; -100 bans, +100 forces).
    public var logitBias: [Int32: Float]

    public init(temperature: Float = 1, topP: Float = 1, topK: Int = 0, minP: Float = 0, seed: UInt64 = 0,
                repetitionPenalty: Float = 1, presencePenalty: Float = 0, frequencyPenalty: Float = 0,
                logitBias: [Int32: Float] = [:]) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.minP = minP
        self.seed = seed
        self.repetitionPenalty = repetitionPenalty
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.logitBias = logitBias
    }

    /// Always the most likely token (after penalties, bias and mask).
    public static let greedy = SamplingParameters(temperature: 0)

    /// The penalties need the tokens generated so far.
    public var usesPenalties: Bool { repetitionPenalty != 1 || presencePenalty != 0 || frequencyPenalty != 0 }

    /// Largest bias magnitude OpenAI accepts.
    public static let maximumLogitBias: Float = 100

    /// The first parameter out of range, named as the OpenAI request names it, or nil when all
    /// are valid for a vocabulary of `vocabularySize` tokens.
    public func problem(vocabularySize: Int) -> SamplingParameterProblem? {
        func problem(_ field: String, _ detail: String) -> SamplingParameterProblem { .init(field: field, detail: detail) }
        if !(temperature.isFinite && temperature >= 0) { return problem("temperature", "must be 0 or more, got \(temperature)") }
        if !(topP > 0 && topP <= 1) { return problem("top_p", "must be in (0, 1], got \(topP)") }
        if topK < 0 { return problem("top_k", "must be -1 (off), 0 (off) or positive, got \(topK)") }
        if !(minP >= 0 && minP <= 1) { return problem("min_p", "must be in [0, 1], got \(minP)") }
        if !(repetitionPenalty.isFinite && repetitionPenalty > 0) {
            return problem("repetition_penalty", "must be greater than 0, got \(repetitionPenalty)")
        }
        if !(presencePenalty >= -2 && presencePenalty <= 2) { return problem("presence_penalty", "must be in [-2, 2], got \(presencePenalty)") }
        if !(frequencyPenalty >= -2 && frequencyPenalty <= 2) { return problem("frequency_penalty", "must be in [-2, 2], got \(frequencyPenalty)") }
        for (token, bias) in logitBias.sorted(by: { $0.key < $1.key }) {
            guard token >= 0, Int(token) < vocabularySize else {
                return problem("logit_bias", "token id \(token) is outside the vocabulary (0..<\(vocabularySize))")
            }
            guard bias >= -Self.maximumLogitBias, bias <= Self.maximumLogitBias else {
                return problem("logit_bias", "the bias of token \(token) must be in [-100, 100], got \(bias)")
            }
        }
        return nil
    }
}

/// A sampling parameter out of range: which (as the OpenAI request names it) and why.
public struct SamplingParameterProblem: Error, Sendable, Equatable, CustomStringConvertible {
    public var field: String
    public var detail: String

    public var description: String { "\(field) \(detail)" }
}

// MARK: - Wire encoding

extension SamplingParameters {
    /// The parameters as a step carries them, with what the worker should report back.
    public func wire(topLogprobs: Int, wantLogprobs: Bool) -> Tessel_Wire_SamplingParameters {
        var wire = Tessel_Wire_SamplingParameters()
        wire.temperature = temperature
        wire.topP = topP
        // Any top_k at or above the vocabulary size means "off"; a client may send one past Int32.
        wire.topK = Int32(clamping: topK)
        wire.minP = minP
        wire.seed = seed
        wire.hasSeed_p = true
        wire.repetitionPenalty = repetitionPenalty
        wire.presencePenalty = presencePenalty
        wire.frequencyPenalty = frequencyPenalty
        wire.logitBias = logitBias.sorted(by: { $0.key < $1.key }).map { token, bias in
            var entry = Tessel_Wire_TokenBias()
            entry.token = token
            entry.bias = bias
            return entry
        }
        wire.topLogprobs = UInt32(max(0, topLogprobs))
        wire.wantLogprobs = wantLogprobs
        return wire
    }

    /// Decodes a step's parameters. `unseeded` supplies the seed when the sender gave none.
    public init(wire: Tessel_Wire_SamplingParameters, unseeded: () -> UInt64) {
        var bias: [Int32: Float] = [:]
        for entry in wire.logitBias { bias[entry.token] = entry.bias }
        self.init(temperature: wire.temperature, topP: wire.topP, topK: Int(wire.topK), minP: wire.minP,
                  seed: wire.hasSeed_p ? wire.seed : unseeded(), repetitionPenalty: wire.repetitionPenalty,
                  presencePenalty: wire.presencePenalty, frequencyPenalty: wire.frequencyPenalty, logitBias: bias)
    }
}
