import CKernels
import Collectives
import Foundation

/// Activations of one chunk, allocated once at load for `capacity` tokens.
final class DecoderScratch: @unchecked Sendable {
    let capacity: Int
    let residual: FloatBuffer   // [capacity, hidden]
    let normed: FloatBuffer     // [capacity, hidden]
    let delta: FloatBuffer      // [capacity, hidden]
    let qkv: FloatBuffer        // [capacity, (heads + 2 kvHeads) * headDim]
    let attention: FloatBuffer  // [capacity, heads * headDim]
    let gateUp: FloatBuffer     // [capacity, 2 * intermediate]
    let activated: FloatBuffer  // [capacity, intermediate]
    let attentionPlan: AttentionPlan

    /// Sized for this rank's heads and MLP columns (all of them in a group of one).
    init(config: DecoderConfig, shard: DecoderShard, mlpColumns: Int, capacity: Int, threads: Int) {
        self.capacity = capacity
        residual = FloatBuffer(count: capacity * config.hiddenSize)
        normed = FloatBuffer(count: capacity * config.hiddenSize)
        delta = FloatBuffer(count: capacity * config.hiddenSize)
        qkv = FloatBuffer(count: capacity * (shard.queryHeads + 2 * shard.kvHeads) * config.headDimension)
        attention = FloatBuffer(count: capacity * shard.queryHeads * config.headDimension)
        gateUp = FloatBuffer(count: capacity * 2 * mlpColumns)
        activated = FloatBuffer(count: capacity * mlpColumns)
        attentionPlan = AttentionPlan(capacity: capacity, threads: threads, group: shard.queryRuns.map(\.count).max()!,
                                      headDimension: config.headDimension)
    }
}

/// Grouped-query self-attention with rotary positions over the paged KV cache, with the
/// families' options: Q/K/V biases, per-head Q/K norms, a sliding window, a score softcap and
/// scale. In a tensor-parallel group, `heads` and `kvHeads` are this rank's and `out` is its
/// partial sum.
struct DecoderAttention: Sendable {
    /// The layer's KV group (which block table it reads) and its layer within the group's pages.
    let group: Int
    let slot: Int
    let queryKeyValue: Linear  // [q heads | k heads | v heads] rows, stacked
    let bias: FloatBuffer?
    let queryNorm: RMSNorm?
    let keyNorm: RMSNorm?
    let output: Linear
    let rotary: RotaryEmbedding
    let heads: Int
    let kvHeads: Int
    /// Which query heads read each KV head (see `AttentionShard.queryRuns`).
    let queryRuns: [Range<Int>]
    let headDimension: Int
    let scale: Float
    let softcap: Float
    let window: Int

    func forward(_ x: UnsafePointer<Float>, _ batch: TokenBatch, cache: KVCachePool, engine: MatmulEngine,
                 scratch: DecoderScratch, into out: UnsafeMutablePointer<Float>) {
        let width = (heads + 2 * kvHeads) * headDimension
        engine.multiply(queryKeyValue, x, rows: batch.count, into: scratch.qkv.pointer)
        let qkv = scratch.qkv.pointer
        let (heads, kvHeads, headDimension, slot) = (self.heads, self.kvHeads, self.headDimension, self.slot)
        let tables = batch.tables(group: group)
        engine.pool.forEachRange(batch.count, minimumPerThread: 4) { tokens in
            for t in tokens {
                let row = qkv + t * width
                if let bias { tk_add(bias.pointer, row, width) }
                if let queryNorm, let keyNorm {
                    for head in 0..<heads { queryNorm.apply(row + head * headDimension, into: row + head * headDimension) }
                    for head in heads..<heads + kvHeads { keyNorm.apply(row + head * headDimension, into: row + head * headDimension) }
                }
                rotary.apply(row, heads: heads + kvHeads, token: t)  // q and k are adjacent
                let position = Int(batch.positions[t])
                let block = Int(tables[Int(batch.blockTableStarts[t]) + position / cache.blockSize])
                for head in 0..<kvHeads {
                    cache.store(layer: slot, head: head, block: block, slot: position % cache.blockSize,
                                key: row + (heads + head) * headDimension,
                                value: row + (heads + kvHeads + head) * headDimension)
                }
            }
        }
        scratch.attentionPlan.run(batch, kvGroup: group, layer: slot, cache: cache, pool: engine.pool,
                                  queries: UnsafePointer(qkv), queryStride: width, heads: heads, queryRuns: queryRuns,
                                  scale: scale, softcap: softcap, window: window, into: scratch.attention.pointer)
        engine.multiply(output, scratch.attention.pointer, rows: batch.count, into: out)
    }
}

/// The gated feed-forward block: `down(act(gate(x)) * up(x))` (a partial sum over this
/// rank's columns in a tensor-parallel group).
struct GatedMLP: Sendable {
    let gateUp: Linear  // [gate rows | up rows], stacked
    let down: Linear
    let activation: GatedActivation

    func forward(_ x: UnsafePointer<Float>, rows: Int, engine: MatmulEngine, scratch: DecoderScratch,
                 into out: UnsafeMutablePointer<Float>) {
        engine.multiply(gateUp, x, rows: rows, into: scratch.gateUp.pointer)
        let size = down.inputSize
        let gateUp = scratch.gateUp.pointer, activated = scratch.activated.pointer
        let activation = self.activation
        engine.pool.forEachRange(rows, minimumPerThread: 2) { range in
            for row in range {
                let source = gateUp + row * 2 * size
                switch activation {
                case .silu: tk_silu_mul(source, source + size, activated + row * size, size)
                case .geluTanh: tk_gelu_tanh_mul(source, source + size, activated + row * size, size)
                }
            }
        }
        engine.multiply(down, scratch.activated.pointer, rows: rows, into: out)
    }
}

/// A residual block: attention, then MLP, each after its input norm (pre-norm) and, with
/// sandwich norms (Gemma), with a norm on its output before the residual add. In a
/// tensor-parallel group each one's partial sums are added up across the ranks first (two
/// allreduces per layer).
struct DecoderBlock: Sendable {
    let attentionNorm: RMSNorm
    let attention: DecoderAttention
    let postAttentionNorm: RMSNorm?
    let mlpNorm: RMSNorm
    let mlp: GatedMLP
    let postMLPNorm: RMSNorm?

    func forward(_ batch: TokenBatch, cache: KVCachePool, engine: MatmulEngine, scratch: DecoderScratch,
                 group: TensorParallelGroup?) {
        let rows = batch.count
        let residual = scratch.residual.pointer, normed = scratch.normed.pointer, delta = scratch.delta.pointer
        let size = attentionNorm.weight.count
        let (attentionNorm, mlpNorm, postAttentionNorm, postMLPNorm) = (attentionNorm, mlpNorm, postAttentionNorm, postMLPNorm)
        engine.pool.forEachRange(rows, minimumPerThread: 16) { range in
            for row in range { attentionNorm.apply(residual + row * size, into: normed + row * size) }
        }
        attention.forward(normed, batch, cache: cache, engine: engine, scratch: scratch, into: delta)
        group?.allReduce(delta, count: rows * size)
        // residual += post(delta); normed = mlpNorm(residual): one pass over each row.
        engine.pool.forEachRange(rows, minimumPerThread: 16) { range in
            for row in range {
                let d = delta + row * size, r = residual + row * size
                postAttentionNorm?.apply(d, into: d)
                tk_add(d, r, size)
                mlpNorm.apply(r, into: normed + row * size)
            }
        }
        mlp.forward(normed, rows: rows, engine: engine, scratch: scratch, into: delta)
        group?.allReduce(delta, count: rows * size)
        engine.pool.forEachRange(rows, minimumPerThread: 16) { range in
            for row in range {
                let d = delta + row * size
                postMLPNorm?.apply(d, into: d)
                tk_add(d, residual + row * size, size)
            }
        }
    }
}

/// The shared decoder-only graph every family is built from: token embeddings (scaled for
/// Gemma), a stack of blocks, a final RMSNorm and the LM head (possibly over the embedding
/// table itself, when tied; softcapped for Gemma 2). In a tensor-parallel group each rank
/// holds its heads, its MLP columns and its rows of the vocabulary: embeddings are looked up
/// where they lie and summed, and rank 0 gathers the whole vocabulary's logits.
public final class DecoderModel: CausalLanguageModel, @unchecked Sendable {
    public let config: DecoderConfig
    let shard: DecoderShard
    let group: TensorParallelGroup?
    /// The layers' KV groups: Gemma's local and global layers keep their KV in pages of their own.
    public let cacheGroups: KVCacheGroups
    /// Logit rows one gather carries (the collective slots are sized for it).
    static let logitRowsPerGather = 16
    /// This rank's rows of logits before the gather (empty in a group of one).
    private let localLogits: FloatBuffer
    /// Every rank's vocabulary rows, in rank order.
    private let vocabularyCounts: [Int]
    let embedding: Embedding
    /// One per distinct rotary embedding of the layers.
    private let rotaries: [RotaryEmbedding]
    let blocks: [DecoderBlock]
    let finalNorm: RMSNorm
    let head: Linear
    let engine: MatmulEngine
    public let weightEncoding: WeightEncoding
    public let weightBytes: Int
    private let scratch: DecoderScratch

    init(config: DecoderConfig, weights: DecoderWeights, rotaryLayout: RotaryLayout, engine: MatmulEngine,
         group: TensorParallelGroup? = nil) {
        self.config = config
        self.engine = engine
        self.group = group
        shard = weights.shard
        let plan = weights.shard.plan
        vocabularyCounts = (0..<plan.worldSize).map {
            TensorParallelPlan.units(of: config.vocabSize, rank: $0, worldSize: plan.worldSize).count
        }
        localLogits = FloatBuffer(count: group == nil ? 0 : Self.logitRowsPerGather * weights.shard.vocabulary.count)
        embedding = weights.embedding
        let kinds = config.rotaries
        let rotaries = kinds.map {
            RotaryEmbedding(headDimension: config.headDimension, rotaryDimensions: config.rotaryDimensions, parameters: $0,
                            layout: rotaryLayout, context: config.maxPositionEmbeddings, capacity: engine.maxRows)
        }
        self.rotaries = rotaries
        let epsilon = Float(config.rmsNormEpsilon), offset = config.normWeightOffset
        func norm(_ weight: FloatBuffer?) -> RMSNorm? {
            weight.map { RMSNorm(weight: $0, epsilon: epsilon, weightOffset: offset) }
        }
        let groups = KVCacheGroups(layerWindows: config.layers.map(\.window))
        cacheGroups = groups
        blocks = weights.layers.enumerated().map { index, layer in
            let kind = config.layers[index]
            return DecoderBlock(
                attentionNorm: norm(layer.attentionNorm)!,
                attention: DecoderAttention(
                    group: groups.layerGroup[index], slot: groups.layerSlot[index], queryKeyValue: layer.queryKeyValue, bias: layer.queryKeyValueBias,
                    queryNorm: norm(layer.queryNorm), keyNorm: norm(layer.keyNorm), output: layer.output,
                    rotary: rotaries[kinds.firstIndex(of: kind.rotary)!],
                    heads: weights.shard.queryHeads, kvHeads: weights.shard.kvHeads, queryRuns: weights.shard.queryRuns,
                    headDimension: config.headDimension,
                    scale: config.resolvedAttentionScale, softcap: config.attentionSoftcap, window: kind.window),
                postAttentionNorm: norm(layer.postAttentionNorm),
                mlpNorm: norm(layer.mlpNorm)!,
                mlp: GatedMLP(gateUp: layer.gateUp, down: layer.down, activation: config.activation),
                postMLPNorm: norm(layer.postMLPNorm))
        }
        finalNorm = norm(weights.finalNorm)!
        head = weights.lmHead
        weightEncoding = weights.dominantEncoding
        var bytes = weights.embedding.table.byteCount
        for layer in weights.layers {
            bytes += layer.queryKeyValue.weightBytes + layer.output.weightBytes + layer.gateUp.weightBytes + layer.down.weightBytes
        }
        if !config.tieWordEmbeddings { bytes += head.weightBytes }
        weightBytes = bytes
        scratch = DecoderScratch(config: config, shard: weights.shard, mlpColumns: weights.layers.map(\.down.inputSize).max() ?? 0,
                                 capacity: engine.maxRows, threads: engine.pool.threadCount)
    }

    public func shareFromRankZero(_ values: UnsafeMutablePointer<Float>, count: Int) {
        group?.broadcastFromRankZero(values, count: count)
    }

    public var collectiveFailure: CollectiveError? { group?.failure }
    public var groupID: UInt64 { group?.groupID ?? 0 }
    public func checkGroup() { group?.checkPeers() }

    public var hiddenSize: Int { config.hiddenSize }
    public var vocabSize: Int { config.vocabSize }
    public var maxContextLength: Int { config.maxPositionEmbeddings }
    public var maxChunkTokens: Int { scratch.capacity }
    public var cacheShape: KVCacheShape {
        KVCacheShape(layers: cacheGroups.layersPerPage, kvHeads: shard.kvHeads, headDimension: config.headDimension)
    }


    public func forward(_ batch: TokenBatch, cache: KVCachePool, hidden: UnsafeMutablePointer<Float>) {
        precondition(batch.count <= scratch.capacity, "chunk of \(batch.count) tokens exceeds \(scratch.capacity)")
        let size = config.hiddenSize, residual = scratch.residual.pointer
        let vocabulary = shard.vocabulary, scale = config.embeddingScale
        let embedding = self.embedding
        engine.pool.forEachRange(batch.count, minimumPerThread: 32) { range in
            for t in range {
                let token = Int(batch.tokens[t])
                if vocabulary.contains(token) {
                    embedding.lookup(token - vocabulary.lowerBound, into: residual + t * size)
                    if scale != 1 { tk_scale(residual + t * size, scale, size) }
                } else {
                    (residual + t * size).update(repeating: 0, count: size)
                }
            }
        }
        group?.allReduce(residual, count: batch.count * size)
        scratch.attentionPlan.prepare(batch)
        for rotary in rotaries { rotary.prepare(batch, pool: engine.pool) }
        for block in blocks {
            block.forward(batch, cache: cache, engine: engine, scratch: scratch, group: group)
        }
        let norm = finalNorm
        engine.pool.forEachRange(batch.count, minimumPerThread: 16) { range in
            for t in range { norm.apply(residual + t * size, into: hidden + t * size) }
        }
    }

    public func logits(hidden: UnsafePointer<Float>, rows: Int, into logits: UnsafeMutablePointer<Float>) {
        guard let group else {
            engine.multiply(head, hidden, rows: rows, into: logits)
            return softcap(logits, count: rows * config.vocabSize)
        }
        var first = 0
        while first < rows {
            let count = min(Self.logitRowsPerGather, rows - first)
            engine.multiply(head, hidden + first * config.hiddenSize, rows: count, into: localLogits.pointer)
            softcap(localLogits.pointer, count: count * shard.vocabulary.count)
            group.gatherColumns(localLogits.pointer, rows: count, columns: vocabularyCounts,
                                into: logits + first * config.vocabSize)
            first += count
        }
    }

    /// `cap·tanh(logit/cap)` in place, when the family caps its logits.
    private func softcap(_ logits: UnsafeMutablePointer<Float>, count: Int) {
        let cap = config.finalLogitSoftcap
        guard cap != 0 else { return }
        engine.pool.forEachRange(count, minimumPerThread: 4096) { range in
            for i in range { logits[i] = cap * tanhf(logits[i] / cap) }
        }
    }
}
