import Foundation
import Synchronization
import Testing
import Wire
import ModelFormats
import CKernels
@testable import WorkerCore

@Suite("Architecture registry, config and step validation")
struct RegistryAndValidationTests {
    func temporaryModel(config: String) throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tessel-llama-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Fixtures.url("tiny-llama").appendingPathComponent("model.safetensors"),
                                         to: directory.appendingPathComponent("model.safetensors"))
        try Data(config.utf8).write(to: directory.appendingPathComponent("config.json"))
        return directory
    }

    func tinyConfig(_ edit: (inout [String: Any]) -> Void) throws -> String {
        let data = try Data(contentsOf: Fixtures.url("tiny-llama").appendingPathComponent("config.json"))
        var object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        edit(&object)
        return String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }

    @Test("the registry maps LlamaForCausalLM and GGUF 'llama' to the Llama registration")
    func lookups() throws {
        let registry = ArchitectureRegistry.builtIn
        #expect(registry.registrations.contains { $0.huggingFaceClassNames.contains("LlamaForCausalLM") && $0.ggufArchitectures.contains("llama") })
    }

    @Test("an unknown architecture names the file and the value")
    func unknownArchitecture() throws {
        let directory = try temporaryModel(config: try tinyConfig { $0["architectures"] = ["MambaForCausalLM"] })
        defer { try? FileManager.default.removeItem(at: directory) }
        do {
            _ = try ModelExecutor.load(model: directory.path, rank: 0, worldSize: 1, kvCacheTokens: 64)
            Issue.record("loading an unknown architecture succeeded")
        } catch let error as ModelLoadError {
            #expect(error.description.contains("config.json"))
            #expect(error.description.contains("MambaForCausalLM"))
        }
    }

    @Test("an unknown GGUF general.architecture names the file and the value")
    func unknownGGUFArchitecture() throws {
        var bytes = try Data(contentsOf: Fixtures.url("tiny-llama-q.gguf"))
        let key = Data("general.architecture".utf8)
        let keyRange = try #require(bytes.range(of: key))
        // The value follows: type (u32), length (u64), then the five bytes "llama".
        let valueStart = keyRange.upperBound + 4 + 8
        #expect(bytes[valueStart..<(valueStart + 5)] == Data("llama".utf8))
        bytes.replaceSubrange(valueStart..<(valueStart + 5), with: Data("mamba".utf8))
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tessel-\(UUID().uuidString).gguf")
        try bytes.write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        do {
            _ = try ModelExecutor.load(model: url.path, rank: 0, worldSize: 1, kvCacheTokens: 64)
            Issue.record("loading GGUF architecture 'mamba' succeeded")
        } catch let error as ModelLoadError {
            #expect(error == .unknownArchitecture(file: url.path, key: "general.architecture", value: "mamba", known: ArchitectureRegistry.builtIn.registrations.flatMap(\.ggufArchitectures)))
        }
    }

    @Test("a missing tensor or a wrong shape names the file and the tensor")
    func tensorErrors() throws {
        let moreLayers = try temporaryModel(config: try tinyConfig { $0["num_hidden_layers"] = 3 })
        defer { try? FileManager.default.removeItem(at: moreLayers) }
        #expect(throws: ModelLoadError.missingTensor(file: moreLayers.path, tensor: "model.layers.2.input_layernorm.weight")) {
            try ModelExecutor.load(model: moreLayers.path, rank: 0, worldSize: 1, kvCacheTokens: 64)
        }
        let narrower = try temporaryModel(config: try tinyConfig { $0["intermediate_size"] = 96 })
        defer { try? FileManager.default.removeItem(at: narrower) }
        #expect(throws: ModelLoadError.shapeMismatch(file: narrower.path, tensor: "model.layers.0.mlp.gate_proj.weight",
                                                     expected: [96, 64], found: [128, 64])) {
            try ModelExecutor.load(model: narrower.path, rank: 0, worldSize: 1, kvCacheTokens: 64)
        }
    }

    @Test("a world above 1 needs a group to meet in; ranks outside the world are refused")
    func tensorParallel() throws {
        #expect(throws: ModelLoadError.missingGroup(worldSize: 2)) {
            try ModelExecutor.load(model: Fixtures.url("tiny-llama").path, rank: 1, worldSize: 2, kvCacheTokens: 64)
        }
        #expect(throws: ModelLoadError.invalidRank(rank: 3, worldSize: 2)) { try TensorParallelPlan(rank: 3, worldSize: 2) }
        #expect(try TensorParallelPlan(rank: 0, worldSize: 1).units(of: 9) == 0..<9)
    }

    @Test("heads split in runs of query heads: 9/3 over 2 ranks is 4 + 5 query heads sharing KV head 1, 32/8 over 4 falls on the KV groups")
    func attentionSplit() throws {
        func shard(_ rank: Int, _ world: Int, _ heads: Int, _ kvHeads: Int) throws -> AttentionShard {
            try TensorParallelPlan(rank: rank, worldSize: world).attentionHeads(queryHeads: heads, kvHeads: kvHeads)
        }
        // Attention weights (Q + output per query head, K + V per KV head): 12 and 14 against 16
        // and 8 for a cut on the KV groups (6 + 3); rank 0 takes the lighter side.
        #expect(try shard(0, 2, 9, 3) == AttentionShard(queryHeads: 0..<4, kvHeads: 0..<2, group: 3))
        #expect(try shard(1, 2, 9, 3) == AttentionShard(queryHeads: 4..<9, kvHeads: 1..<3, group: 3))
        #expect(try shard(0, 2, 9, 3).queryRuns == [0..<3, 3..<4])
        #expect(try shard(1, 2, 9, 3).queryRuns == [0..<2, 2..<5])
        #expect(try shard(0, 4, 9, 3) == AttentionShard(queryHeads: 0..<1, kvHeads: 0..<1, group: 3))
        #expect(try shard(1, 4, 9, 3) == AttentionShard(queryHeads: 1..<3, kvHeads: 0..<1, group: 3))
        #expect(try shard(2, 4, 9, 3) == AttentionShard(queryHeads: 3..<6, kvHeads: 1..<2, group: 3))
        #expect(try shard(3, 4, 9, 3) == AttentionShard(queryHeads: 6..<9, kvHeads: 2..<3, group: 3))
        // As many KV heads per rank: nothing is held twice.
        for rank in 0..<4 {
            #expect(try shard(rank, 4, 32, 8) == AttentionShard(queryHeads: rank * 8..<rank * 8 + 8,
                                                                kvHeads: rank * 2..<rank * 2 + 2, group: 4))
        }
        // One KV head over two ranks: both hold it, the query heads split 3 + 3.
        #expect(try shard(1, 2, 6, 1) == AttentionShard(queryHeads: 3..<6, kvHeads: 0..<1, group: 6))
        #expect(try shard(1, 2, 6, 1).queryRuns == [0..<3])
        #expect(throws: TensorParallelError.tooFewQueryHeads(queryHeads: 2, ranks: 4)) { try shard(0, 4, 2, 1) }
        #expect(throws: TensorParallelError.headsNotGrouped(queryHeads: 9, kvHeads: 2)) { try shard(0, 2, 9, 2) }
        #expect(TensorParallelPlan.units(of: 9, rank: 1, worldSize: 2) == 5..<9)
        #expect((0..<4).map { TensorParallelPlan.units(of: 6, rank: $0, worldSize: 4) } == [0..<2, 2..<4, 4..<5, 5..<6])
        #expect(LlamaArchitecture.registration.sharding["query"] == .outputRows(.queryHeads))
        #expect(LlamaArchitecture.registration.sharding["key"] == .outputRows(.kvHeads))
        #expect(LlamaArchitecture.registration.sharding["down"] == .inputColumns(.mlpColumns))
        #expect(LlamaArchitecture.registration.sharding["embedding"] == .outputRows(.vocabulary))
    }

    @Test("config errors name the key and the value")
    func configErrors() throws {
        let bad = try tinyConfig { $0["num_key_value_heads"] = 3 }
        let directory = try temporaryModel(config: bad)
        defer { try? FileManager.default.removeItem(at: directory) }
        do {
            _ = try ModelExecutor.load(model: directory.path, rank: 0, worldSize: 1, kvCacheTokens: 64)
            Issue.record("3 KV heads for 4 query heads was accepted")
        } catch let error as ModelLoadError {
            #expect(error.description.contains("num_key_value_heads"))
            #expect(error.description.contains("config.json"))
        }
        func llama(_ text: String) throws -> DecoderConfig {
            try LlamaArchitecture.family.huggingFaceConfig(try HuggingFaceConfig(data: Data(text.utf8)))
        }
        #expect(throws: ModelConfigError.self) { try llama(try tinyConfig { $0["rope_parameters"] = ["rope_type": "longrope", "factor": 2.0] }) }
        #expect(throws: ModelConfigError.self) { try llama(try tinyConfig { $0["hidden_act"] = "gelu" }) }
        #expect(throws: ModelConfigError.unsupported(key: "attention_bias", value: "true",
                                                     expected: "false (Llama biases are not implemented)")) {
            try llama(try tinyConfig { $0["attention_bias"] = true })
        }
        #expect(throws: ModelConfigError.invalid(key: "hidden_size", value: "64.5", reason: "must be an integer")) {
            try llama(try tinyConfig { $0["hidden_size"] = 64.5 })
        }
    }

    @Test("both rope spellings parse: rope_parameters (transformers 5) and rope_theta + rope_scaling")
    func ropeSpellings() throws {
        func config(_ name: String) throws -> DecoderConfig {
            try LlamaArchitecture.family.config(for: try ModelCheckpoint.open(Fixtures.url(name).path))
        }
        let modern = try config("tiny-llama"), classic = try config("tiny-llama-tied")
        let expected = RotaryParameters(
            base: 10000, scaling: .llama3(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalMaxPositions: 64))
        #expect(modern.layers.allSatisfy { $0 == LayerAttention(window: 0, rotary: expected) })
        #expect(classic.layers == modern.layers)
        #expect(!modern.tieWordEmbeddings && classic.tieWordEmbeddings)
        #expect(modern.kvHeadCount == 2 && modern.headDimension == 16)
    }

    @Test("a bad sequence is refused alone, with an error that says what is wrong")
    func stepValidation() throws {
        let model = try ModelExecutor.load(model: Fixtures.url("tiny-llama").path, rank: 0, worldSize: 1, kvCacheTokens: 256)
        #expect(model.info.kvBlockCount == 16)
        // A cache size whose byte count overflows is refused at load, not trapped on.
        #expect(throws: ModelLoadError.self) {
            try ModelExecutor.load(model: Fixtures.url("tiny-llama").path, rank: 0, worldSize: 1, kvCacheTokens: Int.max / 2)
        }
        func refusal(_ work: SequenceWork) -> String? { model.execute([work])[0].error }
        #expect(refusal(SequenceWork(id: 1, tokens: [1, 300], startPosition: 0, blockTable: [0]))
                == ExecutionError.tokenOutOfRange(id: 1, index: 1, token: 300, vocabSize: 300).description)
        #expect(refusal(SequenceWork(id: 1, tokens: [1], startPosition: 16, blockTable: [0]))
                == ExecutionError.blockTableTooShort(id: 1, blocks: 1, groups: 1, blockSize: 16, needed: 17).description)
        #expect(refusal(SequenceWork(id: 1, tokens: [1], startPosition: 0, blockTable: [16]))
                == ExecutionError.blockOutOfRange(id: 1, index: 0, block: 16, blockCount: 16).description)
        #expect(refusal(SequenceWork(id: 1, tokens: [1], startPosition: 512, blockTable: Array(repeating: 0, count: 33)))
                == ExecutionError.contextOverflow(id: 1, endPosition: 513, maxContext: 512).description)
        #expect(refusal(SequenceWork(id: 2, tokens: [1, 2], startPosition: Int.max, blockTable: [0]))
                == ExecutionError.contextOverflow(id: 2, endPosition: Int.max, maxContext: 512).description)
        #expect(refusal(SequenceWork(id: 4, tokens: [], startPosition: 0, blockTable: [0]))
                == ExecutionError.emptySequence(id: 4).description)
        #expect(refusal(SequenceWork(id: 1, tokens: [1], startPosition: 0, blockTable: [0],
                                     sampling: SamplingParameters(temperature: -1)))?.contains("temperature") == true)
        #expect(refusal(SequenceWork(id: 7, tokens: [1], startPosition: 5, blockTable: [0], wantPromptLogprobs: true))
                == ExecutionError.missingPromptContext(id: 7, position: 5).description)
        #expect(refusal(SequenceWork(id: 8, tokens: [1, 2], startPosition: 0, blockTable: [0])) == nil)
        let error = ExecutionError.blockTableTooShort(id: 1, blocks: 1, groups: 1, blockSize: 16, needed: 17)
        #expect(error.description.contains("block table"))
    }

    @Test("poisoned sequences in a batch fail alone; their batch-mates sample what they sample alone")
    func poisonedSequenceFailsAlone() throws {
        let model = try ModelExecutor.load(model: Fixtures.url("tiny-llama").path, rank: 0, worldSize: 1, kvCacheTokens: 256)
        let seeded = SamplingParameters(temperature: 0.8, topP: 0.9, seed: 42)
        let honest = [
            SequenceWork(id: 1, tokens: [1, 5, 9, 13], startPosition: 0, blockTable: [0], sampling: seeded),
            SequenceWork(id: 2, tokens: [1, 7, 8], startPosition: 0, blockTable: [1]),
        ]
        let alone = honest.map { model.execute([$0])[0] }
        let poisoned = [
            SequenceWork(id: 3, tokens: [1, 2], startPosition: 0, blockTable: [2], sampling: SamplingParameters(temperature: .infinity)),
            SequenceWork(id: 4, tokens: [1, 2], startPosition: 0, blockTable: [2], sampling: SamplingParameters(repetitionPenalty: 0)),
            SequenceWork(id: 5, tokens: [1, 9999], startPosition: 0, blockTable: [3]),
        ]
        let together = model.execute([poisoned[0], honest[0], poisoned[1], honest[1], poisoned[2]])
        #expect(together.map(\.id) == [3, 1, 4, 2, 5])
        for index in [0, 2, 4] {
            #expect(together[index].error != nil && together[index].sampled == nil, "sequence \(together[index].id) should fail")
        }
        #expect(together[1] == alone[0])
        #expect(together[3] == alone[1])
        #expect(alone.allSatisfy { $0.error == nil && $0.sampled != nil })
    }

    @Test("releasing a sequence drops the hidden state its prompt-logprob chunk carried, and only its own")
    func releaseDropsCarriedState() throws {
        let model = try ModelExecutor.load(model: Fixtures.url("tiny-llama").path, rank: 0, worldSize: 1, kvCacheTokens: 256)
        func firstChunk(_ id: UInt64, block: Int32) throws {
            let outcome = model.execute([SequenceWork(id: id, tokens: [1, 2, 3], startPosition: 0, blockTable: [block],
                                                          sample: false, wantPromptLogprobs: true)])
            #expect(outcome[0].promptLogprobs.count == 2)
        }
        func secondChunk(_ id: UInt64, block: Int32) throws -> [SequenceOutcome] {
            model.execute([SequenceWork(id: id, tokens: [4, 5], startPosition: 3, blockTable: [block],
                                            wantPromptLogprobs: true)])
        }
        // Released elsewhere: sequence 9 keeps its carried state and its next chunk scores token 4 with it.
        try firstChunk(9, block: 0)
        model.releaseSequences([10, 12])
        let kept = try secondChunk(9, block: 0)
        #expect(kept[0].promptLogprobs.map(\.chosen.token) == [4, 5])
        // Released itself: the carried state is gone, so a next chunk has no context to score against.
        try firstChunk(11, block: 1)
        model.releaseSequences([11])
        #expect(try secondChunk(11, block: 1)[0].error == ExecutionError.missingPromptContext(id: 11, position: 3).description)
        // Through the service protocol the executor's own release is the one used, not the no-op default.
        try firstChunk(13, block: 2)
        (model as any StepExecuting).releaseSequences([13])
        #expect(try secondChunk(13, block: 2)[0].error == ExecutionError.missingPromptContext(id: 13, position: 3).description)
    }

    @Test("a tensor in an encoding the architecture does not accept is refused, naming the file and the tensor")
    func unsupportedEncoding() throws {
        let checkpoint = try ModelCheckpoint.open(Fixtures.url("tiny-llama").path)
        let loader = WeightLoader(store: checkpoint.weights, supportedEncodings: [.f16], floatConversion: nil, log: { _ in })
        #expect(throws: ModelLoadError.unsupportedEncoding(file: checkpoint.weights.path, tensor: "model.norm.weight", encoding: "F32")) {
            try loader.vector("model.norm.weight", count: 64)
        }
    }

    @Test("--dtype converts float weights once at load, logging each tensor, and the model still agrees")
    func dtypeConversion() throws {
        let messages = Mutex<[String]>([])
        let exact = try ModelExecutor.load(model: Fixtures.url("tiny-llama").path, kvCacheTokens: 256, activations: .f32)
        let converted = try ModelExecutor.load(model: Fixtures.url("tiny-llama").path,
                                               options: EngineOptions(activations: .f32, kvCacheTokens: 256, weightDType: .bf16),
                                               pool: try ComputePool(threads: 1),
                                               log: { line in messages.withLock { $0.append(line) } })
        #expect(exact.model.weightEncoding == .f32 && converted.model.weightEncoding == .bf16)
        #expect(messages.withLock { $0.contains { $0.contains("model.layers.0.self_attn.q_proj.weight") && $0.contains("BF16") } })
        let prompt: [Int32] = [1, 5, 9, 33, 70]
        let a = try exact.lastLogits([SequenceWork(id: 1, tokens: prompt, startPosition: 0, blockTable: [0], sample: false)])[0]
        let b = try converted.lastLogits([SequenceWork(id: 1, tokens: prompt, startPosition: 0, blockTable: [0], sample: false)])[0]
        let scale = a.map(abs).max()!
        #expect(zip(a, b).allSatisfy { abs($0 - $1) <= 0.05 * scale })
    }

    @Test("default KV pool: a quarter of the free memory, at most 4 GiB; --kv-cache-memory sizes it in bytes")
    func defaultCacheSize() throws {
        #expect(ModelExecutor.defaultCacheBytes(available: 8 << 30) == 2 << 30)
        #expect(ModelExecutor.defaultCacheBytes(available: 64 << 30) == 4 << 30)
        let smol = KVCacheShape(layers: 30, kvHeads: 3, headDimension: 64)
        #expect(smol.bytesPerToken(.f16) == 23040 && smol.bytesPerToken(.f32) == 46080)
        let options = EngineOptions(kvCacheMemoryBytes: 1 << 20)
        let model = try ModelExecutor.load(model: Fixtures.url("tiny-llama").path, options: options,
                                           pool: try ComputePool(threads: 1))
        // tiny-llama: 2 layers × 2 KV heads × 16 dims, f16 by default: 256 bytes a token.
        #expect(model.cache.dtype == .f16)
        #expect(model.info.kvBlockCount == (1 << 20) / 256 / ModelExecutor.kvBlockSize)
        #expect(throws: ModelLoadError.self) {
            try ModelExecutor.load(model: Fixtures.url("tiny-llama").path, options: EngineOptions(kvCacheMemoryBytes: 1000),
                                   pool: try ComputePool(threads: 1))
        }
    }
}

@Suite("Kernels")
struct KernelTests {
    @Test("dispatched dot and axpy agree with the portable C on odd lengths")
    func dispatch() {
        let random = CounterRandom(seed: 5)
        for n in [1, 7, 16, 33, 64, 100, 1000] {
            let a = (0..<n).map { Float(random.uniform(stream: 1, counter: UInt64($0))) - 0.5 }
            let b = (0..<n).map { Float(random.uniform(stream: 2, counter: UInt64($0))) - 0.5 }
            let fast = tk_dot(a, b, n), portable = tk_dot_portable(a, b, n)
            #expect(abs(fast - portable) < 1e-4, "n=\(n) on \(VectorKernels.instructionSet)")
            var y1 = b, y2 = b
            tk_axpy(0.3, a, &y1, n)
            tk_axpy_portable(0.3, a, &y2, n)
            #expect(zip(y1, y2).allSatisfy { abs($0 - $1) < 1e-6 })
        }
    }

    @Test("KV groups: layers of one window share a page; Gemma 3's 5 local : 1 global layers make 6 groups of 3")
    func kvGroups() {
        let gemma3 = KVCacheGroups(layerWindows: (0..<18).map { ($0 + 1) % 6 == 0 ? 0 : 512 })
        #expect(gemma3.count == 6 && gemma3.layersPerPage == 3)
        #expect(gemma3.windows.filter { $0 == 0 }.count == 1 && gemma3.windows.filter { $0 == 512 }.count == 5)
        for group in 0..<6 {
            let layers = (0..<18).filter { gemma3.layerGroup[$0] == group }
            #expect(layers.count == 3 && Set(layers.map { gemma3.layerSlot[$0] }) == [0, 1, 2])
            #expect(layers.allSatisfy { (($0 + 1) % 6 == 0 ? 0 : 512) == gemma3.windows[group] })
        }
        let llama = KVCacheGroups(layerWindows: Array(repeating: 0, count: 30))
        #expect(llama.windows == [0] && llama.layersPerPage == 30 && llama.layerSlot == Array(0..<30))
        #expect(KVCacheGroups(layerWindows: [8, 8, 8]).windows == [8])
        let gemma2 = KVCacheGroups(layerWindows: [8, 0, 8, 0])
        #expect(gemma2.windows == [8, 0] && gemma2.layerGroup == [0, 1, 0, 1] && gemma2.layerSlot == [0, 0, 1, 1])
    }

    @Test("dynamic NTK raises the base only past the original context; LongRoPE picks its factors by the context")
    func contextDependentFrequencies() {
        let dynamic = RotaryScaling.dynamicNTK(factor: 2, originalMaxPositions: 32)
        let plain = RotaryScaling.none.inverseFrequencies(base: 10000, dimensions: 16, context: 64)
        #expect(dynamic.inverseFrequencies(base: 10000, dimensions: 16, context: 32) == plain)
        // θ' = θ · (2 · 64 / 32 − 1)^(16/14).
        let raised = RotaryScaling.none.inverseFrequencies(base: 10000 * pow(3.0, 16.0 / 14.0), dimensions: 16, context: 64)
        #expect(zip(dynamic.inverseFrequencies(base: 10000, dimensions: 16, context: 64), raised).allSatisfy { abs($0 - $1) < 1e-15 })
        let longRope = RotaryScaling.longRope(short: [1, 2], long: [4, 8], originalMaxPositions: 32, attentionFactor: 1.2)
        let four = RotaryScaling.none.inverseFrequencies(base: 100, dimensions: 4, context: 32)
        #expect(longRope.inverseFrequencies(base: 100, dimensions: 4, context: 32) == [four[0], four[1] / 2])
        #expect(longRope.inverseFrequencies(base: 100, dimensions: 4, context: 33) == [four[0] / 4, four[1] / 8])
        #expect(longRope.attentionFactor == 1.2)
    }

    @Test("llama3 rope scaling keeps high frequencies, divides low ones by the factor")
    func llama3Frequencies() {
        let scaling = RotaryScaling.llama3(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalMaxPositions: 64)
        let plain = RotaryScaling.none.inverseFrequencies(base: 10000, dimensions: 16, context: 64)
        let scaled = scaling.inverseFrequencies(base: 10000, dimensions: 16, context: 64)
        #expect(scaled[0] == plain[0])  // wavelength 2π < 16
        #expect(abs(scaled[7] - plain[7] / 8) < 1e-12)  // wavelength ≫ 64
    }
}
