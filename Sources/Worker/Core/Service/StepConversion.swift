import Wire

/// A step whose fields do not fit the model layer's types.
public enum StepConversionError: Error, CustomStringConvertible, Equatable {
    case blockIDOutOfRange(sequenceID: UInt64, blockID: UInt32)
    /// The step continues a sequence this worker holds nothing of.
    case unknownSequence(sequenceID: UInt64)

    public var description: String {
        switch self {
        case .blockIDOutOfRange(let sequenceID, let blockID):
            return "sequence \(sequenceID): KV block id \(blockID) is out of range"
        case .unknownSequence(let sequenceID):
            return "sequence \(sequenceID) continues an earlier step, but this worker holds nothing of it (was it restarted?)"
        }
    }
}

/// Protobuf <-> model-layer types. The model layer never sees protobuf; it validates the
/// contents itself (token ranges, positions, block tables).
public enum StepConversion {
    /// The model layer's view of a step, with each sequence's state completed from (and kept
    /// in) `book`. `unseeded` supplies the seed of sequences the request gave none (only rank 0
    /// samples, so ranks need not agree on it).
    public static func work(from step: Tessel_Wire_Step, book: inout SequenceBook,
                            unseeded: () -> UInt64 = { UInt64.random(in: .min ... .max) }) throws
        -> [SequenceWork]
    {
        try step.sequences.map { sequence in
            let held = try book.apply(sequence)
            let parameters = sequence.sampling
            let sampling = SamplingParameters(wire: parameters, unseeded: unseeded)
            return SequenceWork(
                id: sequence.sequenceID,
                tokens: sequence.tokens,
                startPosition: Int(sequence.startPosition),
                blockTable: held.blockTable,
                sampling: sampling,
                topLogprobs: Int(parameters.topLogprobs),
                wantLogprobs: parameters.wantLogprobs,
                allowedTokens: sequence.allowedTokens.isEmpty ? nil : TokenMask(wireBytes: sequence.allowedTokens),
                sample: sequence.sample,
                wantPromptLogprobs: sequence.wantPromptLogprobs,
                sampleIndex: Int(sequence.sampleIndex),
                generatedTokens: held.generatedTokens,
                promptTokens: held.promptTokens,
                decodeSteps: max(1, Int(sequence.decodeSteps)))
        }
    }

    public static func result(stepID: UInt64, rank: Int, outcomes: [SequenceOutcome],
                              computeSeconds: Double) -> Tessel_Wire_StepResult
    {
        var result = Tessel_Wire_StepResult()
        result.stepID = stepID
        result.rank = UInt32(rank)
        result.computeSeconds = computeSeconds
        result.sequences = outcomes.map { outcome in
            var sequence = Tessel_Wire_SequenceResult()
            sequence.sequenceID = outcome.id
            if let error = outcome.error { sequence.error = error }
            if let sampled = outcome.sampled {
                sequence.sampled = true
                sequence.token = sampled.token
                sequence.logprob = sampled.logprob
            }
            sequence.topLogprobs = outcome.topLogprobs.map(tokenLogprob)
            sequence.promptLogprobs = outcome.promptLogprobs.map(scoredToken)
            sequence.followingTokens = outcome.following.map(scoredToken)
            return sequence
        }
        return result
    }

    private static func scoredToken(_ scored: ScoredToken) -> Tessel_Wire_ScoredToken {
        var entry = Tessel_Wire_ScoredToken()
        entry.token = scored.chosen.token
        entry.logprob = scored.chosen.logprob
        entry.topLogprobs = scored.top.map(tokenLogprob)
        return entry
    }

    private static func tokenLogprob(_ choice: TokenChoice) -> Tessel_Wire_TokenLogprob {
        var entry = Tessel_Wire_TokenLogprob()
        entry.token = choice.token
        entry.logprob = choice.logprob
        return entry
    }
}
