import Foundation
import Testing
@testable import WorkerCore

/// The tiny random Llamas from scripts/fixtures/llama_reference.py against transformers' fp32
/// forward. Metric: max |a − b| / max |b| over the vocabulary at the last position.
@Suite("Llama parity with transformers (tiny safetensors models)")
struct TinyLlamaParityTests {
    static let variants = ["tiny-llama", "tiny-llama-tied"]

    func executor(_ name: String) throws -> ModelExecutor {
        try ModelExecutor.load(model: Fixtures.url(name).path, kvCacheTokens: 1024, activations: .f32)
    }

    @Test("next-token logits match transformers within 1e-3 relative", arguments: variants)
    func logitsMatch(name: String) throws {
        let model = try executor(name)
        let reference = try Fixtures.reference("\(name).expected.json")
        for (index, item) in reference.cases.enumerated() {
            let logits = try model.promptLogits(item.prompt, id: UInt64(index))
            let error = relativeError(logits, try #require(item.logits))
            print("\(name) prompt \(index): max|a-b|/max|b| = \(error)")
            #expect(error < 1e-3, "\(name) prompt \(index): relative error \(error)")
        }
    }

    @Test("32 greedy tokens match transformers exactly", arguments: variants)
    func greedyMatches(name: String) throws {
        let model = try executor(name)
        for item in try Fixtures.reference("\(name).expected.json").cases {
            #expect(try model.greedy(item.prompt, count: 32) == item.greedy)
        }
    }

    @Test("a prompt prefilled in two chunks gives the one-shot logits")
    func chunkedPrefill() throws {
        let model = try executor("tiny-llama")
        let prompt = try Fixtures.reference("tiny-llama.expected.json").cases[2].prompt
        let oneShot = try model.promptLogits(prompt, id: 1, firstBlock: 0)
        let table = blockTable(first: 20, tokens: prompt.count)
        let split = 29  // not a block boundary
        let first = SequenceWork(id: 2, tokens: Array(prompt[..<split]), startPosition: 0, blockTable: table, sample: false)
        _ = model.execute([first])
        let second = SequenceWork(id: 2, tokens: Array(prompt[split...]), startPosition: split, blockTable: table, sample: false)
        let chunked = try model.lastLogits([second])[0]
        #expect(relativeError(chunked, oneShot) < 1e-5)
    }

    @Test("two sequences in one step give their one-shot logits")
    func batchOfTwo() throws {
        let model = try executor("tiny-llama")
        let cases = try Fixtures.reference("tiny-llama.expected.json").cases
        let a = cases[0].prompt, b = cases[1].prompt
        let expectedA = try model.promptLogits(a, id: 1, firstBlock: 0)
        let expectedB = try model.promptLogits(b, id: 2, firstBlock: 10)
        let together = try model.lastLogits([
            SequenceWork(id: 3, tokens: a, startPosition: 0, blockTable: blockTable(first: 30, tokens: a.count), sample: false),
            SequenceWork(id: 4, tokens: b, startPosition: 0, blockTable: blockTable(first: 40, tokens: b.count), sample: false),
        ])
        #expect(relativeError(together[0], expectedA) < 1e-5)
        #expect(relativeError(together[1], expectedB) < 1e-5)
    }

    @Test("blocks given out of order and scattered still give the same logits")
    func scatteredBlocks() throws {
        let model = try executor("tiny-llama")
        let prompt = try Fixtures.reference("tiny-llama.expected.json").cases[2].prompt
        let oneShot = try model.promptLogits(prompt)
        let scattered: [Int32] = [17, 3, 42, 9, 60]
        let logits = try model.lastLogits([SequenceWork(id: 9, tokens: prompt, startPosition: 0, blockTable: scattered, sample: false)])[0]
        #expect(relativeError(logits, oneShot) < 1e-6)
    }
}

/// A tiny GGUF written the way llama.cpp's converter writes Llama (Q/K rows permuted for the
/// pairwise rotary layout; Q8_0 and Q4_1 blocks), against transformers reading the same file.
/// Covers the GGUF adapter's un-permutation and the quantized decode kernels without the
/// default model.
@Suite("Llama parity with transformers (tiny quantized GGUF)")
struct TinyGGUFParityTests {
    func executor() throws -> ModelExecutor {
        try ModelExecutor.load(model: Fixtures.url("tiny-llama-q.gguf").path, kvCacheTokens: 1024, activations: .f32)
    }

    @Test("GGUF metadata gives the tiny config, untied, without rope scaling")
    func config() throws {
        let checkpoint = try ModelCheckpoint.open(Fixtures.url("tiny-llama-q.gguf").path)
        let config = try LlamaArchitecture.family.config(for: checkpoint)
        #expect(config.hiddenSize == 64 && config.layerCount == 2 && config.headCount == 4 && config.kvHeadCount == 2)
        #expect(config.headDimension == 16 && config.intermediateSize == 128 && config.vocabSize == 300)
        #expect(!config.tieWordEmbeddings)
        #expect(config.layers.allSatisfy { $0.rotary == RotaryParameters(base: 10000) && $0.window == 0 })
        #expect(config.bosTokenId == 1 && config.eosTokenIds == [2])
    }

    @Test("next-token logits match within 1e-3 relative and 32 greedy tokens match exactly")
    func parity() throws {
        let model = try executor()
        for (index, item) in try Fixtures.reference("tiny-llama-q.expected.json").cases.enumerated() {
            let error = relativeError(try model.promptLogits(item.prompt, id: UInt64(index)), try #require(item.logits))
            print("tiny-llama-q prompt \(index): max|a-b|/max|b| = \(error)")
            #expect(error < 1e-3, "prompt \(index): relative error \(error)")
            #expect(try model.greedy(item.prompt, count: 32) == item.greedy)
        }
    }
}
