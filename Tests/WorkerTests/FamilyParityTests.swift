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

    @Test("each family's config reads its knobs")
    func knobs() throws {
        func config(_ name: String) throws -> DecoderConfig {
            let checkpoint = try ModelCheckpoint.open(try Fixtures.url("families/\(name)").path)
            let registration = try ArchitectureRegistry.builtIn.registration(for: checkpoint)
            let family = try #require([Qwen2Architecture.family, Qwen3Architecture.family, MistralArchitecture.family,
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
        let phi3 = try config("tiny-phi3")
        #expect(phi3.rotaryDimensions == 8 && phi3.headDimension == 16 && phi3.layers.allSatisfy { $0.window == 8 })
    }
}
