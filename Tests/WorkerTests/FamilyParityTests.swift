import Foundation
import Testing
@testable import WorkerCore

/// The tiny random checkpoints of every family from scripts/fixtures/family_reference.py
/// (float32 and bfloat16 files) against transformers' fp32 forward: each family's knobs (biases,
/// Q/K norms, windows, softcaps, two rotary bases, sandwich norms) in the shared graph.
@Suite("Model families against transformers (tiny checkpoints)")
struct FamilyParityTests {
    static let families = ["qwen2", "qwen3", "mistral", "gemma2", "gemma3", "phi3"]
    static let variants = families.flatMap { ["tiny-\($0)", "tiny-\($0)-bf16"] }

    @Test("next-token logits within 1e-3 relative and 16 greedy tokens equal", arguments: variants)
    func parity(name: String) throws {
        let model = try ModelExecutor.load(model: try Fixtures.url("families/\(name)").path, kvCacheTokens: 1024, activations: .f32)
        for (index, item) in try Fixtures.reference("families/\(name).expected.json").cases.enumerated() {
            let error = relativeError(try model.promptLogits(item.prompt, id: UInt64(index)), try #require(item.logits))
            print("\(name) prompt \(index): max|a-b|/max|b| = \(error)")
            #expect(error < 1e-3, "\(name) prompt \(index): relative error \(error)")
            #expect(try model.greedy(item.prompt, count: item.greedy.count) == item.greedy, "\(name) prompt \(index)")
        }
    }

    /// scripts/fixtures/family_gguf.py: the same float32 weights as llama.cpp's converter writes
    /// each family (names, metadata, fused tensors, Gemma's norms with the 1 added in).
    @Test("the GGUF conversions give the same logits and greedy tokens", arguments: ["qwen2", "qwen3", "gemma3", "phi3"])
    func ggufParity(family: String) throws {
        let model = try ModelExecutor.load(model: try Fixtures.url("families/tiny-\(family).gguf").path, kvCacheTokens: 1024,
                                           activations: .f32)
        for (index, item) in try Fixtures.reference("families/tiny-\(family).expected.json").cases.enumerated() {
            let error = relativeError(try model.promptLogits(item.prompt, id: UInt64(index)), try #require(item.logits))
            #expect(error < 1e-3, "tiny-\(family).gguf prompt \(index): relative error \(error)")
            #expect(try model.greedy(item.prompt, count: item.greedy.count) == item.greedy, "tiny-\(family).gguf prompt \(index)")
        }
    }

    /// LongRoPE and dynamic NTK build their frequencies for the context served: the model's own
    /// (LongRoPE's long factors past its original 32 positions; dynamic NTK's base for 64), or
    /// 32 with `--max-model-len 32` (the short factors; the plain base).
    @Test("context-dependent rotary embeddings follow the served context",
          arguments: ["tiny-phi3-longrope", "tiny-phi3-longrope.gguf", "tiny-llama-dynamic"])
    func contextDependentRotary(name: String) throws {
        let reference = name.replacingOccurrences(of: ".gguf", with: "")
        for (limit, expected) in [(nil, reference), (32, "\(reference)-short")] as [(Int?, String)] {
            let options = EngineOptions(activations: .f32, kvCacheTokens: 1024, maxModelLength: limit)
            let model = try ModelExecutor.load(model: try Fixtures.url("families/\(name)").path, options: options,
                                               pool: try ComputePool(threads: 2))
            #expect(model.info.maxContextLength == limit ?? (reference == "tiny-llama-dynamic" ? 64 : 128))
            for (index, item) in try Fixtures.reference("families/\(expected).expected.json").cases.enumerated() {
                let error = relativeError(try model.promptLogits(item.prompt, id: UInt64(index)), try #require(item.logits))
                #expect(error < 1e-3, "\(name) as \(expected) prompt \(index): relative error \(error)")
                #expect(try model.greedy(item.prompt, count: item.greedy.count) == item.greedy, "\(name) as \(expected) prompt \(index)")
            }
        }
    }

    @Test("--max-model-len past the model's context is refused, naming the file")
    func contextLimit() throws {
        let options = EngineOptions(activations: .f32, kvCacheTokens: 1024, maxModelLength: 129)
        #expect {
            try ModelExecutor.load(model: try Fixtures.url("families/tiny-phi3-longrope").path, options: options,
                                   pool: try ComputePool(threads: 1))
        } throws: { error in
            "\(error)".hasSuffix("config.json: --max-model-len 129 is longer than the model's context of 128 tokens")
        }
    }

    @Test("each family's config reads its knobs")
    func knobs() throws {
        func config(_ name: String) throws -> DecoderConfig {
            let checkpoint = try ModelCheckpoint.open(try Fixtures.url("families/\(name)").path)
            let registration = try ArchitectureRegistry.builtIn.registration(for: checkpoint)
            let family = try #require([LlamaArchitecture.family, Qwen2Architecture.family, Qwen3Architecture.family, MistralArchitecture.family,
                                       Gemma2Architecture.family, Gemma3Architecture.family, Phi3Architecture.family].first { $0.name == registration.name })
            return try family.config(for: checkpoint)
        }
        let qwen2 = try config("tiny-qwen2")
        #expect(qwen2.attentionBias && !qwen2.queryKeyNorm && qwen2.layers.allSatisfy { $0.window == 0 })
        let qwen3 = try config("tiny-qwen3")
        #expect(qwen3.queryKeyNorm && qwen3.headDimension == 32 && qwen3.hiddenSize == 64)
        #expect(qwen3.layers[0].rotary.scaling == .yarn(factor: 4, originalMaxPositions: 16, betaFast: 32, betaSlow: 1,
                                                         attentionFactor: 0.1 * log(4.0) + 1, truncate: true))
        #expect(try config("tiny-mistral").layers.allSatisfy { $0.window == 8 })
        let gemma2 = try config("tiny-gemma2")
        #expect(gemma2.layers.map(\.window) == [8, 0, 8])
        #expect(gemma2.attentionSoftcap == 5 && gemma2.finalLogitSoftcap == 3 && gemma2.normWeightOffset == 1)
        #expect(abs(try #require(gemma2.attentionScale) - 1 / Float(24).squareRoot()) < 1e-7 && gemma2.embeddingScale == 8)
        #expect(gemma2.activation == .geluTanh && gemma2.sandwichNorms)
        let gemma3 = try config("tiny-gemma3")
        #expect(gemma3.layers.map(\.window) == [8, 8, 0])
        #expect(gemma3.layers.map(\.rotary) == [RotaryParameters(base: 10000), RotaryParameters(base: 10000),
                                                RotaryParameters(base: 1_000_000, scaling: .linear(factor: 2))])
        #expect(gemma3.queryKeyNorm && gemma3.attentionSoftcap == 0)
        let longRope = try config("tiny-phi3-longrope").layers[0].rotary.scaling
        #expect(longRope == .longRope(short: [1.0, 1.1, 1.2, 1.3], long: [2, 5, 8, 11], originalMaxPositions: 32,
                                      attentionFactor: (1 + log(4.0) / log(32.0)).squareRoot()))
        let dynamic = try config("tiny-llama-dynamic")
        #expect(dynamic.layers[0].rotary.scaling == .dynamicNTK(factor: 2, originalMaxPositions: 32) && dynamic.maxPositionEmbeddings == 64)
        let phi3 = try config("tiny-phi3")
        #expect(phi3.rotaryDimensions == 8 && phi3.headDimension == 16 && phi3.layers.allSatisfy { $0.window == 8 })
    }
}
