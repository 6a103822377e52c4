import CKernels
import Foundation

/// Picks tokens from logit rows: penalties, then greedy or temperature / top-k / top-p sampling
/// with randomness keyed by (seed, sample index, position). Logprobs are always the log-softmax
/// of the raw logits, before penalties and temperature, as vLLM reports them.
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
    public func sample(_ logits: UnsafePointer<Float>, config: SamplingConfig, generated: [Int32],
                       sampleIndex: Int, position: Int) -> Int32 {
        let values = adjusted.pointer
        values.update(from: logits, count: vocabSize)
        applyPenalties(values, config: config, generated: generated)

        if config.temperature == 0 || config.topK == 1 {
            return argmax(values)
        }
        tk_scale(values, 1 / config.temperature, vocabSize)
        let random = CounterRandom(seed: config.seed)
            .uniform(stream: UInt64(truncatingIfNeeded: sampleIndex), counter: UInt64(truncatingIfNeeded: position))

        let restricted = (config.topK > 0 && config.topK < vocabSize) || config.topP < 1
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
        let candidates = rankedCandidates(values, topK: config.topK, topP: config.topP)
        // Softmax over the candidates (best first).
        let maximum = values[Int(order[0])]
        var total: Double = 0
        for i in 0..<candidates { total += Double(expf(values[Int(order[i])] - maximum)) }
        var kept = candidates, keptMass = total
        if config.topP < 1 {
            var cumulative: Double = 0
            for i in 0..<candidates {
                cumulative += Double(expf(values[Int(order[i])] - maximum))
                if cumulative / total >= Double(config.topP) {
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
        return order[kept - 1]
    }

    /// Repetition penalty (divides positive logits, multiplies negative ones) on tokens seen, and
    /// presence/frequency penalties subtracted per generated token, as OpenAI and vLLM define them.
    private func applyPenalties(_ values: UnsafeMutablePointer<Float>, config: SamplingConfig, generated: [Int32]) {
        let repetition = config.repetitionPenalty != 1
        let additive = config.presencePenalty != 0 || config.frequencyPenalty != 0
        guard repetition || additive, !generated.isEmpty else { return }
        for token in generated where token >= 0 && Int(token) < vocabSize { counts[Int(token)] += 1 }
        for token in generated where token >= 0 && Int(token) < vocabSize {
            let index = Int(token)
            let count = counts[index]
            guard count > 0 else { continue }  // already applied for this token
            if repetition {
                values[index] = values[index] > 0 ? values[index] / config.repetitionPenalty
                                                  : values[index] * config.repetitionPenalty
            }
            values[index] -= config.presencePenalty + config.frequencyPenalty * Float(count)
            counts[index] = 0
        }
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
