import CKernels
import Foundation
import Wire

/// Picks tokens from logit rows through a chain of logits processors, each in one place and in
/// this order: penalties, logit bias, the allowed-token mask, then greedy argmax, or temperature,
/// min-p, top-k / top-p and a draw keyed by (seed, sample index, position). Logprobs are always
/// the log-softmax of the raw logits, before any processor, as vLLM reports them by default.
/// Scratch is allocated once for the vocabulary; one sampler serves one thread.
public final class TokenSampler: @unchecked Sendable {
    public let vocabSize: Int
    private let adjusted: FloatBuffer
    private let order: UnsafeMutablePointer<Int32>
    private let counts: UnsafeMutablePointer<Int32>

    /// The first partial selection top-p tries.
    static let topPInitialSelection = 64

    public init(vocabSize: Int) {
        self.vocabSize = vocabSize
        adjusted = FloatBuffer(count: vocabSize)
        order = .allocate(capacity: vocabSize)
        counts = .allocate(capacity: vocabSize)
        counts.initialize(repeating: 0, count: vocabSize)
    }

    deinit {
        order.deallocate()
        counts.deallocate()
    }

    // MARK: Logprobs

    /// `log Σ exp(logits)`, shifted by the maximum for stability.
    public func logSumExp(_ logits: UnsafePointer<Float>) -> Float {
        let maximum = tk_max(logits, vocabSize)
        guard maximum.isFinite else { return maximum }
        return maximum + Float(log(tk_exp_sum(logits, vocabSize, maximum)))
    }

    /// The `count` most likely tokens, best first (ties: lower id first), with logprobs.
    public func topChoices(_ logits: UnsafePointer<Float>, count: Int, logSumExp: Float) -> [TokenChoice] {
        let count = min(count, vocabSize)
        guard count > 0 else { return [] }
        var best: [Int32] = []
        best.reserveCapacity(count + 1)
        for i in 0..<vocabSize {
            let value = logits[i]
            if best.count == count, value <= logits[Int(best[count - 1])] { continue }
            var slot = best.count
            while slot > 0, logits[Int(best[slot - 1])] < value { slot -= 1 }
            best.insert(Int32(i), at: slot)
            if best.count > count { best.removeLast() }
        }
        return best.map { TokenChoice(token: $0, logprob: logits[Int($0)] - logSumExp) }
    }

    // MARK: Sampling

    /// The next token for one sequence. `position` is the position the token will occupy.
    /// Every path is O(vocabulary): greedy is an argmax, plain temperature sampling a softmax
    /// and one scan, top-k a selection of k, top-p a selection grown until it holds the mass.
    public func sample(_ logits: UnsafePointer<Float>, parameters: SamplingParameters, allowed: TokenMask? = nil,
                       prompt: [Int32] = [], generated: [Int32], sampleIndex: Int, position: Int) -> Int32 {
        let values = adjusted.pointer
        values.update(from: logits, count: vocabSize)
        applyPenalties(values, parameters: parameters, prompt: prompt, generated: generated)
        applyLogitBias(values, parameters.logitBias)
        if let allowed { applyMask(values, allowed) }

        if parameters.temperature == 0 || parameters.topK == 1 {
            return argmax(values)
        }
        tk_scale(values, 1 / parameters.temperature, vocabSize)
        if parameters.minP > 0 { applyMinP(values, parameters.minP) }
        let random = CounterRandom(seed: parameters.seed)
            .uniform(stream: UInt64(truncatingIfNeeded: sampleIndex), counter: UInt64(truncatingIfNeeded: position))
        let restricted = (parameters.topK > 0 && parameters.topK < vocabSize) || parameters.topP < 1
        guard restricted else {
            // The whole vocabulary: probabilities in token order, then one scan.
            tk_softmax(values, vocabSize)
            var cumulative: Double = 0
            for i in 0..<vocabSize {
                cumulative += Double(values[i])
                if cumulative > random { return Int32(i) }
            }
            return argmax(values)  // rounding left the draw past the last token's share
        }
        let candidates = rankedCandidates(values, topK: parameters.topK, topP: parameters.topP)
        // Softmax over the candidates (best first).
        let maximum = values[Int(order[0])]
        var total: Double = 0
        for i in 0..<candidates { total += Double(expf(values[Int(order[i])] - maximum)) }
        var kept = candidates, keptMass = total
        if parameters.topP < 1 {
            var cumulative: Double = 0
            for i in 0..<candidates {
                cumulative += Double(expf(values[Int(order[i])] - maximum))
                if cumulative / total >= Double(parameters.topP) {
                    kept = i + 1
                    keptMass = cumulative
                    break
                }
            }
        }
        let target = random * keptMass
        var cumulative: Double = 0
        for i in 0..<kept {
            cumulative += Double(expf(values[Int(order[i])] - maximum))
            if cumulative > target { return order[i] }
        }
        // Rounding left the draw past the last share: the last kept token that can be chosen
        // (a masked or min-p-dropped one has no share).
        var last = kept - 1
        while last > 0, values[Int(order[last])] == -.infinity { last -= 1 }
        return order[last]
    }

    /// The repetition penalty (divides positive logits, multiplies negative ones) on every token
    /// seen in the prompt or the output, as vLLM defines it; then the presence and frequency
    /// penalties subtracted per generated token, as OpenAI defines them.
    private func applyPenalties(_ values: UnsafeMutablePointer<Float>, parameters: SamplingParameters,
                                prompt: [Int32], generated: [Int32]) {
        if parameters.repetitionPenalty != 1 {
            let penalty = parameters.repetitionPenalty
            func penalise(_ tokens: [Int32]) {
                for token in tokens where token >= 0 && Int(token) < vocabSize && counts[Int(token)] == 0 {
                    let index = Int(token)
                    counts[index] = 1  // seen: penalised once however often it appears
                    values[index] = values[index] > 0 ? values[index] / penalty : values[index] * penalty
                }
            }
            func clear(_ tokens: [Int32]) {
                for token in tokens where token >= 0 && Int(token) < vocabSize { counts[Int(token)] = 0 }
            }
            penalise(prompt)
            penalise(generated)
            clear(prompt)
            clear(generated)
        }
        guard parameters.presencePenalty != 0 || parameters.frequencyPenalty != 0, !generated.isEmpty else { return }
        for token in generated where token >= 0 && Int(token) < vocabSize { counts[Int(token)] += 1 }
        for token in generated where token >= 0 && Int(token) < vocabSize {
            let index = Int(token)
            let count = counts[index]
            guard count > 0 else { continue }  // already applied for this token
            values[index] -= parameters.presencePenalty + parameters.frequencyPenalty * Float(count)
            counts[index] = 0
        }
    }

    /// OpenAI's `logit_bias`: added to the logits of the named tokens.
    private func applyLogitBias(_ values: UnsafeMutablePointer<Float>, _ bias: [Int32: Float]) {
        for (token, amount) in bias where token >= 0 && Int(token) < vocabSize { values[Int(token)] += amount }
    }

    /// Structured output: every token outside the mask becomes impossible.
    private func applyMask(_ values: UnsafeMutablePointer<Float>, _ mask: TokenMask) {
        mask.withWords { words in
            for wordIndex in 0..<(vocabSize + 63) / 64 {
                let word = wordIndex < words.count ? words[wordIndex] : 0
                guard word != .max else { continue }
                let base = wordIndex * 64
                for bit in 0..<min(64, vocabSize - base) where word & (1 << UInt64(bit)) == 0 {
                    values[base + bit] = -.infinity
                }
            }
        }
    }

    /// Min-p on temperature-scaled logits: p_i < minP · p_max ⇔ v_i < v_max + ln(minP).
    private func applyMinP(_ values: UnsafeMutablePointer<Float>, _ minP: Float) {
        let threshold = tk_max(values, vocabSize) + logf(minP)
        for i in 0..<vocabSize where values[i] < threshold { values[i] = -.infinity }
    }

    private func argmax(_ values: UnsafePointer<Float>) -> Int32 {
        // Ties go to the lowest id, as a stable sort would.
        var best = 0
        for i in 1..<vocabSize where values[i] > values[best] { best = i }
        return Int32(best)
    }

    /// Fills `order` with the candidate tokens, best first, and returns how many there are.
    /// Top-p without top-k grows a partial selection (64, 256, …) until it holds `topP` of the
    /// probability, so only the tokens that can be chosen are ever sorted.
    private func rankedCandidates(_ values: UnsafePointer<Float>, topK: Int, topP: Float) -> Int {
        for i in 0..<vocabSize { order[i] = Int32(i) }
        var count = vocabSize
        if topK > 0, topK < vocabSize {
            select(values, best: topK)
            count = topK
        } else {
            let maximum = tk_max(values, vocabSize)
            let total = tk_exp_sum(values, vocabSize, maximum)
            var size = Self.topPInitialSelection
            while size < vocabSize {
                select(values, best: size)
                var mass: Double = 0
                for i in 0..<size { mass += Double(expf(values[Int(order[i])] - maximum)) }
                if mass >= Double(topP) * total { break }
                size *= 4
            }
            count = min(size, vocabSize)
        }
        var ranked = UnsafeMutableBufferPointer(start: order, count: count)
        ranked.sort { (a: Int32, b: Int32) -> Bool in
            let x = values[Int(a)], y = values[Int(b)]
            return x > y || (x == y && a < b)
        }
        return count
    }

    /// Quickselect: moves the `best` largest values' ids to `order[0..<best]` (unordered).
    private func select(_ values: UnsafePointer<Float>, best: Int) {
        var low = 0, high = vocabSize - 1
        while low < high {
            let pivot = values[Int(order[(low + high) / 2])]
            var i = low, j = high
            while i <= j {
                while values[Int(order[i])] > pivot { i += 1 }
                while values[Int(order[j])] < pivot { j -= 1 }
                if i <= j {
                    order.swapAt(i, j)
                    i += 1
                    j -= 1
                }
            }
            if best - 1 <= j { high = j } else if best - 1 >= i { low = i } else { return }
        }
    }
}

private extension UnsafeMutablePointer where Pointee == Int32 {
    func swapAt(_ a: Int, _ b: Int) {
        let t = self[a]
        self[a] = self[b]
        self[b] = t
    }
}
