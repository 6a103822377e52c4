import Foundation
import Testing
import Wire
@testable import WorkerCore

@Suite("Sampling")
struct SamplingTests {
    /// Logits with a clear order and a long tail, for a 300-token vocabulary.
    static func logits(seed: UInt64 = 7) -> [Float] {
        let random = CounterRandom(seed: seed)
        return (0..<300).map { Float(random.uniform(stream: 0, counter: UInt64($0)) * 8 - 4) }
    }

    func sample(_ logits: [Float], _ config: SamplingParameters, allowed: TokenMask? = nil, sampleIndex: Int = 0,
                position: Int = 10, prompt: [Int32] = [], generated: [Int32] = []) -> Int32 {
        let sampler = TokenSampler(vocabSize: logits.count)
        return logits.withUnsafeBufferPointer {
            sampler.sample($0.baseAddress!, parameters: config, allowed: allowed, prompt: prompt, generated: generated,
                           sampleIndex: sampleIndex, position: position)
        }
    }

    /// The ids of the `count` largest logits.
    static func best(_ values: [Float], _ count: Int) -> [Int32] {
        values.indices.sorted { values[$0] > values[$1] }.prefix(count).map { Int32($0) }
    }

    var argmax: Int32 {
        let values = Self.logits()
        return Int32(values.indices.max { values[$0] < values[$1] }!)
    }

    @Test("temperature 0 picks the largest logit")
    func greedy() {
        #expect(sample(Self.logits(), .greedy) == argmax)
    }

    @Test("top-k 1 at temperature 1 equals greedy, for any seed")
    func topKOne() {
        for seed in 0..<20 as Range<UInt64> {
            #expect(sample(Self.logits(), SamplingParameters(temperature: 1, topK: 1, seed: seed)) == argmax)
        }
    }

    @Test("the same seed, sample index and position give the same token; others vary")
    func determinism() {
        let config = SamplingParameters(temperature: 1.5, seed: 42)
        let first = (0..<32).map { sample(Self.logits(), config, position: $0) }
        let again = (0..<32).map { sample(Self.logits(), config, position: $0) }
        let otherSeed = (0..<32).map { sample(Self.logits(), SamplingParameters(temperature: 1.5, seed: 43), position: $0) }
        let otherIndex = (0..<32).map { sample(Self.logits(), config, sampleIndex: 1, position: $0) }
        #expect(first == again)
        #expect(first != otherSeed)
        #expect(first != otherIndex)
        #expect(Set(first).count > 4, "temperature 1.5 over 300 tokens should not collapse to a few tokens")
    }

    @Test("top-k keeps only the k best tokens")
    func topK() {
        let values = Self.logits()
        let best5 = Set(values.indices.sorted { values[$0] > values[$1] }.prefix(5).map { Int32($0) })
        for position in 0..<200 {
            #expect(best5.contains(sample(values, SamplingParameters(temperature: 5, topK: 5, seed: 1), position: position)))
        }
    }

    @Test("top-p keeps the smallest set holding p of the probability")
    func topP() {
        // Probabilities 0.5, 0.3, 0.2 (up to float rounding): top_p 0.7 keeps the first two.
        let values: [Float] = [log(0.5), log(0.3), log(0.2)]
        var seen = Set<Int32>()
        for position in 0..<300 {
            seen.insert(sample(values, SamplingParameters(temperature: 1, topP: 0.7, seed: 3), position: position))
        }
        #expect(seen == [0, 1])
    }

    @Test("sampled frequencies follow the softmax")
    func frequencies() {
        let values: [Float] = [log(0.6), log(0.3), log(0.1)]
        var counts = [0, 0, 0]
        for position in 0..<3000 {
            counts[Int(sample(values, SamplingParameters(temperature: 1, seed: 9), position: position))] += 1
        }
        #expect(abs(Double(counts[0]) / 3000 - 0.6) < 0.04)
        #expect(abs(Double(counts[1]) / 3000 - 0.3) < 0.04)
        #expect(abs(Double(counts[2]) / 3000 - 0.1) < 0.03)
    }

    @Test("repetition and frequency penalties move greedy off a repeated token")
    func penalties() {
        let values: [Float] = [2.0, 1.9, -1]
        #expect(sample(values, .greedy, generated: [0]) == 0)
        #expect(sample(values, SamplingParameters(temperature: 0, repetitionPenalty: 1.2), generated: [0]) == 1)
        #expect(sample(values, SamplingParameters(temperature: 0, frequencyPenalty: 0.06), generated: [0, 0]) == 1)
        #expect(sample(values, SamplingParameters(temperature: 0, presencePenalty: 0.2), generated: [0]) == 1)
        // The repetition penalty counts prompt tokens as seen (vLLM); presence and frequency only output.
        #expect(sample(values, SamplingParameters(temperature: 0, repetitionPenalty: 1.2), prompt: [0]) == 1)
        #expect(sample(values, SamplingParameters(temperature: 0, presencePenalty: 2), prompt: [0]) == 0)
        // Seen twice is penalised once: 2.0 / 1.2 = 1.67 stays above 1.9 / 1.2 = 1.58.
        #expect(sample(values, SamplingParameters(temperature: 0, repetitionPenalty: 1.2), prompt: [0, 1], generated: [0]) == 0)
    }

    @Test("logit_bias: -100 bans the greedy token, +100 forces a weak one, at any temperature")
    func logitBias() {
        let values = Self.logits()
        let ranked = Self.best(values, 300)
        #expect(sample(values, SamplingParameters(temperature: 0, logitBias: [argmax: -100])) == ranked[1])
        for position in 0..<50 {
            let forced = sample(values, SamplingParameters(temperature: 1, seed: 4, logitBias: [ranked[299]: 100]), position: position)
            #expect(forced == ranked[299])
            #expect(sample(values, SamplingParameters(temperature: 2, seed: 4, logitBias: [argmax: -100]), position: position) != argmax)
        }
    }

    @Test("min_p keeps exactly the tokens at least min_p as likely as the best, after temperature")
    func minP() {
        // Probabilities 0.4, 0.3, 0.19, 0.11: min_p 0.5 keeps the first two at temperature 1;
        // at temperature 2 the ratios are square roots (0.87, 0.69, 0.52), so all four stay.
        let values: [Float] = [log(0.4), log(0.3), log(0.19), log(0.11)]
        var seen = Set<Int32>(), hot = Set<Int32>()
        for position in 0..<400 {
            seen.insert(sample(values, SamplingParameters(temperature: 1, minP: 0.5, seed: 8), position: position))
            hot.insert(sample(values, SamplingParameters(temperature: 2, minP: 0.5, seed: 8), position: position))
        }
        #expect(seen == [0, 1])
        #expect(hot == [0, 1, 2, 3])
    }

    @Test("the allowed-token mask is obeyed by greedy, plain, top-k, top-p and min-p sampling")
    func mask() {
        let values = Self.logits()
        let ranked = Self.best(values, 300)
        // Three weak tokens, one in each 64-bit word region, none among the 20 best.
        let allowed: [Int32] = [ranked[150], ranked[200], ranked[299]]
        var mask = TokenMask(vocabularySize: 300)
        for token in allowed { mask.insert(token) }
        #expect(sample(values, .greedy, allowed: mask) == ranked.first { allowed.contains($0) })
        let configs = [SamplingParameters(temperature: 1, seed: 2), SamplingParameters(temperature: 1, topK: 20, seed: 2),
                       SamplingParameters(temperature: 1, topP: 0.5, seed: 2), SamplingParameters(temperature: 3, minP: 0.01, seed: 2)]
        for config in configs {
            var seen = Set<Int32>()
            for position in 0..<300 { seen.insert(sample(values, config, allowed: mask, position: position)) }
            #expect(seen.isSubset(of: Set(allowed)), "\(config)")
            #expect(!seen.isEmpty)
        }
        var single = TokenMask(vocabularySize: 300)
        single.insert(ranked[250])
        #expect(sample(values, SamplingParameters(temperature: 1, topK: 5, seed: 1), allowed: single) == ranked[250])
    }

    @Test("a token mask survives its wire encoding; an empty mask is not 'no mask'")
    func maskWire() {
        var mask = TokenMask(vocabularySize: 1000)
        for token: Int32 in [0, 63, 64, 500, 999] { mask.insert(token) }
        let decoded = TokenMask(wireBytes: mask.wireBytes)
        #expect((0..<1000).allSatisfy { decoded.contains(Int32($0)) == mask.contains(Int32($0)) })
        #expect(decoded.count == 5 && decoded.count(below: 999) == 4)
        #expect(mask.wireBytes.count == 125)
        let empty = TokenMask(vocabularySize: 1000)
        #expect(!empty.wireBytes.isEmpty)
        #expect(TokenMask(wireBytes: empty.wireBytes).count == 0)
    }

    @Test("logprobs of the whole vocabulary sum to 1 and top alternatives are sorted")
    func logprobs() {
        let values = Self.logits()
        let sampler = TokenSampler(vocabSize: values.count)
        values.withUnsafeBufferPointer { buffer in
            let lse = sampler.logSumExp(buffer.baseAddress!)
            let total = values.reduce(0.0) { $0 + exp(Double($1 - lse)) }
            #expect(abs(total - 1) < 1e-5)
            let top = sampler.topChoices(buffer.baseAddress!, count: 5, logSumExp: lse)
            #expect(top.count == 5)
            #expect(top.first?.token == argmax)
            #expect(zip(top, top.dropFirst()).allSatisfy { $0.logprob >= $1.logprob })
            #expect(top.allSatisfy { $0.logprob <= 0 })
        }
    }

    @Test("Philox draws are uniform-looking and a pure function of the counter")
    func philox() {
        let random = CounterRandom(seed: 1234)
        let draws = (0..<10_000).map { random.uniform(stream: 3, counter: UInt64($0)) }
        #expect(draws.allSatisfy { $0 >= 0 && $0 < 1 })
        let mean = draws.reduce(0, +) / Double(draws.count)
        #expect(abs(mean - 0.5) < 0.02)
        #expect(random.uniform(stream: 3, counter: 77) == CounterRandom(seed: 1234).uniform(stream: 3, counter: 77))
        #expect(random.uniform(stream: 3, counter: 77) != random.uniform(stream: 4, counter: 77))
    }
}

@Suite("Executor sampling and logprobs (tiny model)")
struct ExecutorSamplingTests {
    func executor() throws -> ModelExecutor {
        try ModelExecutor.load(model: Fixtures.url("tiny-llama").path, kvCacheTokens: 1024, activations: .f32)
    }

    func generate(_ model: ModelExecutor, _ config: SamplingParameters, count: Int, sampleIndex: Int = 0) throws -> [Int32] {
        let prompt: [Int32] = [1, 17, 42, 250, 99, 5]
        var work = SequenceWork(id: 1, tokens: prompt, startPosition: 0,
                                blockTable: blockTable(tokens: prompt.count + count), sampling: config, sampleIndex: sampleIndex)
        var output: [Int32] = []
        for _ in 0..<count {
            let token = try #require(model.execute([work])[0].sampled).token
            output.append(token)
            work.startPosition += work.tokens.count
            work.tokens = [token]
            work.generatedTokens.append(token)
        }
        return output
    }

    @Test("same seed gives the same tokens; top-k 1 equals greedy")
    func seeded() throws {
        let model = try executor()
        let config = SamplingParameters(temperature: 1.0, topP: 0.95, seed: 2024)
        let first = try generate(model, config, count: 24)
        #expect(try generate(model, config, count: 24) == first)
        #expect(try generate(model, SamplingParameters(temperature: 1.0, topP: 0.95, seed: 2025), count: 24) != first)
        let greedy = try generate(model, .greedy, count: 24)
        #expect(try generate(model, SamplingParameters(temperature: 0.8, topK: 1, seed: 5), count: 24) == greedy)
    }

    @Test("sampled logprob and alternatives come from the raw logits")
    func sampledLogprobs() throws {
        let model = try executor()
        let prompt: [Int32] = [1, 17, 42, 250, 99, 5]
        let raw = try model.promptLogits(prompt)
        let config = SamplingParameters(temperature: 0.7, seed: 1)
        let outcome = model.execute([SequenceWork(id: 2, tokens: prompt, startPosition: 0, blockTable: blockTable(tokens: 8),
                                                  sampling: config, topLogprobs: 3, wantLogprobs: true)])[0]
        let sampled = try #require(outcome.sampled)
        let lse = log(raw.reduce(0.0) { $0 + exp(Double($1)) })
        #expect(abs(Double(sampled.logprob) - (Double(raw[Int(sampled.token)]) - lse)) < 1e-4)
        #expect(outcome.topLogprobs.count == 3)
        let best = Int32(raw.indices.max { raw[$0] < raw[$1] }!)
        #expect(outcome.topLogprobs.first?.token == best)
    }

    @Test("prompt logprobs cover tokens[1...], also when the prompt comes in two chunks")
    func promptLogprobs() throws {
        let model = try executor()
        let prompt = try Fixtures.reference("tiny-llama.expected.json").cases[1].prompt
        let table = blockTable(tokens: prompt.count + 1)
        let whole = model.execute([SequenceWork(id: 1, tokens: prompt, startPosition: 0, blockTable: table,
                                                    sampling: .greedy, topLogprobs: 2, wantPromptLogprobs: true)])[0]
        #expect(whole.promptLogprobs.count == prompt.count - 1)
        #expect(whole.promptLogprobs.map(\.chosen.token) == Array(prompt.dropFirst()))
        #expect(whole.promptLogprobs.allSatisfy { $0.top.count == 2 && $0.chosen.logprob <= 0 })

        // Position i+1's logprob from one-shot logits of prompt[...i].
        let check = 12
        let raw = try model.promptLogits(Array(prompt[...check]), id: 9, firstBlock: 20)
        let lse = log(raw.reduce(0.0) { $0 + exp(Double($1)) })
        let expected = Double(raw[Int(prompt[check + 1])]) - lse
        #expect(abs(Double(whole.promptLogprobs[check].chosen.logprob) - expected) < 1e-4)

        let split = 17
        let first = model.execute([SequenceWork(id: 3, tokens: Array(prompt[..<split]), startPosition: 0, blockTable: table,
                                                    topLogprobs: 2, sample: false, wantPromptLogprobs: true)])[0]
        let second = model.execute([SequenceWork(id: 3, tokens: Array(prompt[split...]), startPosition: split, blockTable: table,
                                                     sampling: .greedy, topLogprobs: 2, wantPromptLogprobs: true)])[0]
        let joined = first.promptLogprobs + second.promptLogprobs
        #expect(joined.count == prompt.count - 1)
        for (a, b) in zip(joined, whole.promptLogprobs) {
            #expect(a.chosen.token == b.chosen.token)
            #expect(abs(a.chosen.logprob - b.chosen.logprob) < 1e-4)
        }
        #expect(second.sampled?.token == whole.sampled?.token)
    }
}
