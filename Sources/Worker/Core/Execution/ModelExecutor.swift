import Foundation
import Wire

/// Runs steps of a loaded model: owns the graph (weights and activation scratch), the KV pool,
/// and the sampler. `execute` must be called from one thread at a time.
public final class ModelExecutor: @unchecked Sendable {
    public let info: ModelInfo
    public let model: any CausalLanguageModel
    public let cache: KVCachePool
    public let pool: ComputePool
    /// Whether this rank samples: rank 0 of a tensor-parallel group (the others only compute).
    public let samples: Bool
    private let sampler: TokenSampler

    /// Final hidden states of the current chunk, then gathered rows and their logits.
    private let hidden: FloatBuffer
    private let gathered: FloatBuffer
    private let logitRows: FloatBuffer
    /// The tokens one decode pass sampled, shared from rank 0 before the next (one per sequence,
    /// as floats: exact for every id below 2^24; reused across steps).
    private var sampledTokens: [Float] = []
    /// Per-step token buffers, reused across steps (they grow only when a step is larger).
    private var chunkTokens: [Int32] = []
    private var chunkPositions: [Int32] = []
    private var chunkTableStarts: [Int32] = []
    private var blockTables: [Int32] = []
    private var sequenceTableStarts: [Int32] = []
    /// (sequence, token index) of each row of the current chunk, and of rows awaiting logits.
    private var chunkMembers: [(sequence: Int, index: Int)] = []
    private var pendingRows: [(sequence: Int, index: Int)] = []
    /// Last hidden state of sequences whose prompt chunk wanted prompt logprobs but did not
    /// sample: the next chunk's first token is scored against it.
    private var carriedHidden: [UInt64: (position: Int, hidden: [Float])] = [:]

    public static let kvBlockSize = 16
    /// KV groups of the model: block tables hold one page of each per position block.
    private var groupCount: Int { info.kvGroupWindows.count }
    static let logitRowsPerBatch = 16
    static let maxCarriedSequences = 1024
    /// Without `--kv-cache-memory` or `--kv-cache-tokens`: this share of the memory available
    /// at load, at most `defaultCacheCeilingBytes` (the pool's pages are only resident once used).
    static let defaultCacheShareOfFreeMemory = 0.25
    static let defaultCacheCeilingBytes = 4 << 30

    /// Loads `model` (a .gguf file, a Hugging Face directory, or a cache entry `org/name`) for
    /// this rank onto `pool`; the ranks of a group meet in `group` once their weights are loaded.
    /// `registry` holds the architectures it may be (the built-in ones and any plugins').
    public static func load(model: String, rank: Int = 0, worldSize: Int = 1, group: GroupSettings? = nil,
                            options: EngineOptions, pool: ComputePool, registry: ArchitectureRegistry = .builtIn,
                            log: @escaping @Sendable (String) -> Void = { _ in }) throws -> ModelExecutor {
        let plan = try TensorParallelPlan(rank: rank, worldSize: worldSize)
        let checkpoint = try ModelCheckpoint.open(model)
        let context = ModelLoadContext(plan: plan, options: options, pool: pool, group: group, log: log)
        let (registration, graph) = try registry.loadModel(checkpoint, context: context)
        if let limit = options.maxModelLength, limit > graph.maxContextLength {
            throw ModelLoadError.contextTooLong(file: checkpoint.architectureFile, requested: limit, model: graph.maxContextLength)
        }
        return try ModelExecutor(model: graph, architecture: registration.name, fingerprint: checkpoint.fingerprint,
                                 options: options, pool: pool, samples: rank == 0)
    }

    /// For tools and tests: a pool of `threads` unpinned threads.
    public static func load(model: String, rank: Int = 0, worldSize: Int = 1, kvCacheTokens: Int?,
                            activations: ActivationPrecision? = nil, kvCacheDType: KVCacheDType? = nil,
                            threads: Int = 2) throws -> ModelExecutor {
        let options = EngineOptions(activations: activations, kvCacheDType: kvCacheDType, kvCacheTokens: kvCacheTokens)
        return try load(model: model, rank: rank, worldSize: worldSize, options: options,
                        pool: try ComputePool(threads: threads))
    }

    public init(model: any CausalLanguageModel, architecture: String, fingerprint: String, options: EngineOptions,
                pool: ComputePool, samples: Bool = true) throws {
        let shape = model.cacheShape, groups = model.cacheGroups
        let dtype = options.resolvedKVCacheDType(weights: model.weightEncoding)
        // A token's keys and values over every layer: one page position in each group.
        let bytesPerToken = shape.bytesPerToken(dtype) * groups.count
        let tokens: Int
        if let requested = options.kvCacheTokens {
            tokens = requested
        } else {
            let budget = options.kvCacheMemoryBytes ?? Self.defaultCacheBytes(available: Self.availableMemoryBytes())
            tokens = budget / max(bytesPerToken, 1)
        }
        guard tokens >= Self.kvBlockSize else {
            throw ModelLoadError.invalidCacheSize(tokens: tokens, detail: "must hold at least one block of \(Self.kvBlockSize) tokens (\(bytesPerToken) bytes per token in \(dtype))")
        }
        guard !tokens.multipliedReportingOverflow(by: bytesPerToken).overflow else {
            throw ModelLoadError.invalidCacheSize(tokens: tokens, detail: "\(bytesPerToken) bytes per token overflow the address space")
        }
        // As many pages as `tokens` positions in every group; a group with a window gives its
        // passed pages back to the others.
        let blocks = tokens / Self.kvBlockSize * groups.count
        self.model = model
        self.pool = pool
        self.samples = samples
        cache = KVCachePool(shape: shape, dtype: dtype, blockCount: blocks, blockSize: Self.kvBlockSize)
        sampler = TokenSampler(vocabSize: model.vocabSize)
        hidden = FloatBuffer(count: model.maxChunkTokens * model.hiddenSize)
        gathered = FloatBuffer(count: Self.logitRowsPerBatch * model.hiddenSize)
        logitRows = FloatBuffer(count: Self.logitRowsPerBatch * model.vocabSize)
        info = ModelInfo(architecture: architecture, vocabSize: model.vocabSize,
                         maxContextLength: min(model.maxContextLength, options.maxModelLength ?? .max),
                         fingerprint: fingerprint, kvBlockCount: blocks, kvBlockSize: Self.kvBlockSize,
                         kvGroupWindows: groups.windows)
    }

    /// The default KV budget out of `available` bytes of free memory.
    public static func defaultCacheBytes(available: Int) -> Int {
        min(Int(Double(available) * defaultCacheShareOfFreeMemory), defaultCacheCeilingBytes)
    }

    /// MemAvailable from /proc/meminfo (1 GiB where it cannot be read).
    static func availableMemoryBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return 1 << 30 }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ")
            if fields.count >= 2, let kib = Int(fields[1]) { return kib * 1024 }
        }
        return 1 << 30
    }

    // MARK: Steps

    /// Runs one step: every sequence's tokens go through the model (in chunks of at most
    /// `model.maxChunkTokens` across the batch), then sequences that asked are sampled. A
    /// sequence whose fields do not fit the model fails alone: its outcome carries the error, it
    /// takes no part in the step, and its batch-mates run exactly as they would without it.
    public func execute(_ work: [SequenceWork]) -> [SequenceOutcome] {
        var outcomes = work.map { SequenceOutcome(id: $0.id) }
        var runnable: [Int] = []
        for (index, item) in work.enumerated() {
            do {
                try validate(item)
                runnable.append(index)
            } catch {
                outcomes[index].error = "\(error)"
            }
        }
        let valid = runnable.count == work.count ? work : runnable.map { work[$0] }
        var results = valid.map { SequenceOutcome(id: $0.id) }
        scoreCarriedTokens(valid, into: &results)
        run(valid, wants: { sequence, index in
            let item = valid[sequence]
            let last = index == item.tokens.count - 1
            return (item.wantPromptLogprobs && !last) || (last && item.sample)
        }, consume: { sequence, index, logits in
            consume(valid[sequence], index: index, logits: logits, outcome: &results[sequence])
        })
        decodeFollowing(valid, outcomes: &results)
        for (slot, index) in runnable.enumerated() { outcomes[index] = results[slot] }
        return outcomes
    }

    /// The passes after the first of sequences with `decodeSteps > 1`: each runs on the token its
    /// previous pass sampled (rank 0's, shared with the group's other ranks, which sample none),
    /// one position on, until the sequence has sampled `decodeSteps` tokens.
    private func decodeFollowing(_ work: [SequenceWork], outcomes: inout [SequenceOutcome]) {
        var members = work.indices.filter { work[$0].decodeSteps > 1 }
        guard !members.isEmpty else { return }
        // Each member's one token is the one it sampled last (rank 0's; the others' stay 0 until
        // shared), and its decodeSteps counts the passes it still owes, this one included.
        var items = members.map { work[$0] }
        for (slot, member) in members.enumerated() { items[slot].tokens[0] = outcomes[member].sampled?.token ?? 0 }
        while !members.isEmpty {
            sampledTokens.removeAll(keepingCapacity: true)
            for item in items { sampledTokens.append(Float(item.tokens[0])) }
            sampledTokens.withUnsafeMutableBufferPointer { model.shareFromRankZero($0.baseAddress!, count: $0.count) }
            for slot in items.indices {
                let token = Int32(sampledTokens[slot])
                items[slot].startPosition += 1
                items[slot].tokens[0] = token
                items[slot].generatedTokens.append(token)
                items[slot].decodeSteps -= 1
            }
            var passOutcomes = items.map { SequenceOutcome(id: $0.id) }
            run(items, wants: { _, _ in true }, consume: { sequence, index, logits in
                consume(items[sequence], index: index, logits: logits, outcome: &passOutcomes[sequence])
            })
            for (slot, member) in members.enumerated() {
                guard let sampled = passOutcomes[slot].sampled else { continue }
                outcomes[member].following.append(ScoredToken(chosen: sampled, top: passOutcomes[slot].topLogprobs))
                items[slot].tokens[0] = sampled.token
            }
            let owing = items.indices.filter { items[$0].decodeSteps > 1 }
            members = owing.map { members[$0] }
            items = owing.map { items[$0] }
        }
    }

    /// Runs one step like `execute` (filling the cache) and returns each sequence's logits at its
    /// last token, without sampling. For parity tests and tools.
    public func lastLogits(_ work: [SequenceWork]) throws -> [[Float]] {
        for item in work { try validate(item) }
        var result = [[Float]](repeating: [], count: work.count)
        run(work, wants: { sequence, index in index == work[sequence].tokens.count - 1 },
            consume: { sequence, _, logits in
                result[sequence] = Array(UnsafeBufferPointer(start: logits, count: model.vocabSize))
            })
        return result
    }

    private func consume(_ item: SequenceWork, index: Int, logits: UnsafePointer<Float>, outcome: inout SequenceOutcome) {
        // The other ranks' logits are only their part of the vocabulary; rank 0 answers.
        guard samples else { return }
        let count = item.tokens.count
        if item.wantPromptLogprobs, index < count - 1 {
            outcome.promptLogprobs.append(promptLogprob(logits, next: item.tokens[index + 1], top: item.topLogprobs))
        }
        guard index == count - 1, item.sample else { return }
        let token = sampler.sample(logits, parameters: item.sampling, allowed: item.allowedTokens,
                                   prompt: item.promptTokens, generated: item.generatedTokens, sampleIndex: item.sampleIndex,
                                   position: item.startPosition + count)
        // The normaliser costs a pass of exp over the vocabulary: only for requests that read it.
        guard item.wantLogprobs else {
            outcome.sampled = TokenChoice(token: token, logprob: 0)
            return
        }
        let logSumExp = sampler.logSumExp(logits)
        outcome.sampled = TokenChoice(token: token, logprob: logits[Int(token)] - logSumExp)
        outcome.topLogprobs = sampler.topChoices(logits, count: item.topLogprobs, logSumExp: logSumExp)
    }

    private func promptLogprob(_ logits: UnsafePointer<Float>, next token: Int32, top: Int) -> ScoredToken {
        let logSumExp = sampler.logSumExp(logits)
        return ScoredToken(chosen: TokenChoice(token: token, logprob: logits[Int(token)] - logSumExp),
                           top: sampler.topChoices(logits, count: top, logSumExp: logSumExp))
    }

    /// A later prompt chunk's first token, scored with the hidden state the previous chunk left.
    private func scoreCarriedTokens(_ work: [SequenceWork], into outcomes: inout [SequenceOutcome]) {
        for (index, item) in work.enumerated() where item.wantPromptLogprobs && item.startPosition > 0 {
            guard let carried = carriedHidden.removeValue(forKey: item.id) else { continue }
            carried.hidden.withUnsafeBufferPointer { state in
                model.logits(hidden: state.baseAddress!, rows: 1, into: logitRows.pointer)
            }
            guard samples else { continue }
            outcomes[index].promptLogprobs.append(
                promptLogprob(logitRows.pointer, next: item.tokens[0], top: item.topLogprobs))
        }
    }

    /// Pushes all tokens through the model chunk by chunk; rows `wants` selects get logits,
    /// computed a few rows at a time and handed to `consume` in token order.
    private func run(_ work: [SequenceWork], wants: (Int, Int) -> Bool,
                     consume: (Int, Int, UnsafePointer<Float>) -> Void) {
        // Each group's tables side by side (a sequence's table is group-interleaved).
        sequenceTableStarts.removeAll(keepingCapacity: true)
        blockTables.removeAll(keepingCapacity: true)
        let groups = groupCount
        var perGroup = 0
        for item in work {
            sequenceTableStarts.append(Int32(perGroup))
            perGroup += item.blockTable.count / groups
        }
        for group in 0..<groups {
            for item in work {
                for entry in stride(from: group, to: item.blockTable.count, by: groups) { blockTables.append(item.blockTable[entry]) }
            }
        }
        let hiddenSize = model.hiddenSize, vocabSize = model.vocabSize
        pendingRows.removeAll(keepingCapacity: true)
        func flush() {
            guard !pendingRows.isEmpty else { return }
            model.logits(hidden: gathered.pointer, rows: pendingRows.count, into: logitRows.pointer)
            for (row, entry) in pendingRows.enumerated() {
                consume(entry.sequence, entry.index, logitRows.pointer + row * vocabSize)
            }
            pendingRows.removeAll(keepingCapacity: true)
        }

        var sequence = 0, index = 0
        while sequence < work.count {
            chunkTokens.removeAll(keepingCapacity: true)
            chunkPositions.removeAll(keepingCapacity: true)
            chunkTableStarts.removeAll(keepingCapacity: true)
            chunkMembers.removeAll(keepingCapacity: true)
            while sequence < work.count, chunkTokens.count < model.maxChunkTokens {
                let item = work[sequence]
                chunkTokens.append(item.tokens[index])
                chunkPositions.append(Int32(item.startPosition + index))
                chunkTableStarts.append(sequenceTableStarts[sequence])
                chunkMembers.append((sequence, index))
                index += 1
                if index == item.tokens.count {
                    sequence += 1
                    index = 0
                }
            }
            chunkTokens.withUnsafeBufferPointer { tokens in
                chunkPositions.withUnsafeBufferPointer { positions in
                    chunkTableStarts.withUnsafeBufferPointer { starts in
                        blockTables.withUnsafeBufferPointer { tables in
                            let batch = TokenBatch(count: tokens.count, tokens: tokens.baseAddress!,
                                                   positions: positions.baseAddress!,
                                                   blockTableStarts: starts.baseAddress!,
                                                   blockTables: tables.baseAddress ?? starts.baseAddress!,
                                                   groupTableStride: perGroup)
                            model.forward(batch, cache: cache, hidden: hidden.pointer)
                        }
                    }
                }
            }
            for (row, member) in chunkMembers.enumerated() {
                let state = hidden.pointer + row * hiddenSize
                let item = work[member.sequence]
                if member.index == item.tokens.count - 1, item.wantPromptLogprobs, !item.sample {
                    carry(item.id, position: item.startPosition + member.index, state: state)
                }
                guard wants(member.sequence, member.index) else { continue }
                (gathered.pointer + pendingRows.count * hiddenSize).update(from: state, count: hiddenSize)
                pendingRows.append(member)
                if pendingRows.count == Self.logitRowsPerBatch { flush() }
            }
            flush()
        }
    }

    /// The router finished these sequences (or gave up on them): forget what was carried for them.
    /// Their KV blocks need nothing here; the router owns and reuses those.
    public func releaseSequences(_ ids: [UInt64]) {
        for id in ids { carriedHidden.removeValue(forKey: id) }
    }

    private func carry(_ id: UInt64, position: Int, state: UnsafePointer<Float>) {
        if carriedHidden.count >= Self.maxCarriedSequences, carriedHidden[id] == nil {
            carriedHidden.remove(at: carriedHidden.startIndex)
        }
        carriedHidden[id] = (position, Array(UnsafeBufferPointer(start: state, count: model.hiddenSize)))
    }

    // MARK: Validation

    private func validate(_ item: SequenceWork) throws {
        let vocabSize = model.vocabSize, blockSize = cache.blockSize
        guard !item.tokens.isEmpty else { throw ExecutionError.emptySequence(id: item.id) }
        guard item.startPosition >= 0 else {
            throw ExecutionError.negativeStartPosition(id: item.id, position: item.startPosition)
        }
        for (index, token) in item.tokens.enumerated() where token < 0 || Int(token) >= vocabSize {
            throw ExecutionError.tokenOutOfRange(id: item.id, index: index, token: token, vocabSize: vocabSize)
        }
        try validateDecodeSteps(item)
        // A start position near Int.max must be refused, not overflow; every decode pass
        // writes one more position.
        let (end, overflow) = item.startPosition.addingReportingOverflow(item.tokens.count + item.decodeSteps - 1)
        guard !overflow, end <= info.maxContextLength else {
            throw ExecutionError.contextOverflow(id: item.id, endPosition: overflow ? Int.max : end,
                                                 maxContext: info.maxContextLength)
        }
        let groups = groupCount
        guard item.blockTable.count % groups == 0, item.blockTable.count / groups * blockSize >= end else {
            throw ExecutionError.blockTableTooShort(id: item.id, blocks: item.blockTable.count, groups: groups,
                                                    blockSize: blockSize, needed: end)
        }
        for (index, block) in item.blockTable.prefix((end + blockSize - 1) / blockSize * groups).enumerated()
        where block < 0 || Int(block) >= cache.blockCount {
            throw ExecutionError.blockOutOfRange(id: item.id, index: index, block: block, blockCount: cache.blockCount)
        }
        try validateSampling(item)
        if item.wantPromptLogprobs, item.startPosition > 0 {
            guard let carried = carriedHidden[item.id], carried.position == item.startPosition - 1 else {
                throw ExecutionError.missingPromptContext(id: item.id, position: item.startPosition)
            }
        }
    }

    private func validateDecodeSteps(_ item: SequenceWork) throws {
        func fail(_ detail: String) -> ExecutionError { .invalidDecodeSteps(id: item.id, steps: item.decodeSteps, detail: detail) }
        guard item.decodeSteps >= 1 else { throw fail("it must be at least 1") }
        guard item.decodeSteps > 1 else { return }
        guard item.tokens.count == 1, item.sample else { throw fail("only a decode (one token, sampled) runs several passes") }
        guard item.allowedTokens == nil else { throw fail("an allowed-token mask holds for one pass only") }
        guard !item.wantPromptLogprobs else { throw fail("prompt logprobs are not asked of a decode") }
    }

    private func validateSampling(_ item: SequenceWork) throws {
        func fail(_ detail: String) -> ExecutionError { .invalidSampling(id: item.id, detail: detail) }
        if let problem = item.sampling.problem(vocabularySize: model.vocabSize) { throw fail("\(problem)") }
        guard item.topLogprobs >= 0, item.topLogprobs <= model.vocabSize else {
            throw fail("top_logprobs \(item.topLogprobs) must be in 0...\(model.vocabSize)")
        }
        if let mask = item.allowedTokens {
            guard mask.words.count <= (model.vocabSize + 63) / 64 else {
                throw fail("the allowed-token mask has \(mask.words.count * 64) bits, the vocabulary \(model.vocabSize) tokens")
            }
            guard mask.count(below: model.vocabSize) > 0 else { throw fail("the allowed-token mask allows no token") }
        }
    }
}
