import CKernels
import Collectives

/// Activations of one chunk, allocated once at load for `capacity` tokens.
final class LlamaScratch: @unchecked Sendable {
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
    init(config: LlamaConfig, shard: LlamaShard, mlpColumns: Int, capacity: Int, threads: Int) {
        self.capacity = capacity
        residual = FloatBuffer(count: capacity * config.hiddenSize)
        normed = FloatBuffer(count: capacity * config.hiddenSize)
        delta = FloatBuffer(count: capacity * config.hiddenSize)
        qkv = FloatBuffer(count: capacity * (shard.queryHeads + 2 * shard.kvHeads) * config.headDimension)
        attention = FloatBuffer(count: capacity * shard.queryHeads * config.headDimension)
        gateUp = FloatBuffer(count: capacity * 2 * mlpColumns)
        activated = FloatBuffer(count: capacity * mlpColumns)
        attentionPlan = AttentionPlan(capacity: capacity, threads: threads, group: shard.queryHeads / shard.kvHeads,
                                      headDimension: config.headDimension)
    }
}

/// Grouped-query self-attention with rotary positions, over the paged KV cache. In a
/// tensor-parallel group, `heads` and `kvHeads` are this rank's and `out` is its partial sum.
struct LlamaAttention: Sendable {
    let layer: Int
    let queryKeyValue: Linear  // [q heads | k heads | v heads] rows, stacked
    let output: Linear
    let rotary: RotaryEmbedding
    let heads: Int
    let kvHeads: Int
    let headDimension: Int

    func forward(_ x: UnsafePointer<Float>, _ batch: TokenBatch, cache: KVCachePool, engine: MatmulEngine,
                 scratch: LlamaScratch, into out: UnsafeMutablePointer<Float>) {
        let width = (heads + 2 * kvHeads) * headDimension
        engine.multiply(queryKeyValue, x, rows: batch.count, into: scratch.qkv.pointer)
        let qkv = scratch.qkv.pointer
        engine.pool.forEachRange(batch.count, minimumPerThread: 4) { tokens in
            for t in tokens {
                let row = qkv + t * width
                let position = Int(batch.positions[t])
                rotary.apply(row, heads: heads + kvHeads, position: position)  // q and k are adjacent
                let block = Int(batch.blockTables[Int(batch.blockTableStarts[t]) + position / cache.blockSize])
                for head in 0..<kvHeads {
                    cache.store(layer: layer, head: head, block: block, slot: position % cache.blockSize,
                                key: row + (heads + head) * headDimension,
                                value: row + (heads + kvHeads + head) * headDimension)
                }
            }
        }
        scratch.attentionPlan.run(batch, layer: layer, cache: cache, pool: engine.pool,
                                  queries: UnsafePointer(qkv), queryStride: width, heads: heads, kvHeads: kvHeads,
                                  scale: 1 / Float(headDimension).squareRoot(), softcap: 0, window: 0,
                                  into: scratch.attention.pointer)
        engine.multiply(output, scratch.attention.pointer, rows: batch.count, into: out)
    }
}

/// The gated feed-forward block: `down(silu(gate(x)) * up(x))` (a partial sum over this
/// rank's columns in a tensor-parallel group).
struct LlamaMLP: Sendable {
    let gateUp: Linear  // [gate rows | up rows], stacked
    let down: Linear

    func forward(_ x: UnsafePointer<Float>, rows: Int, engine: MatmulEngine, scratch: LlamaScratch,
                 into out: UnsafeMutablePointer<Float>) {
        engine.multiply(gateUp, x, rows: rows, into: scratch.gateUp.pointer)
        let size = down.inputSize
        let gateUp = scratch.gateUp.pointer, activated = scratch.activated.pointer
        engine.pool.forEachRange(rows, minimumPerThread: 2) { range in
            for row in range {
                let source = gateUp + row * 2 * size
                tk_silu_mul(source, source + size, activated + row * size, size)
            }
        }
        engine.multiply(down, scratch.activated.pointer, rows: rows, into: out)
    }
}

/// Pre-norm residual block: attention, then MLP; in a tensor-parallel group each one's
/// partial sums are added up across the ranks (two allreduces per layer).
struct LlamaBlock: Sendable {
    let attentionNorm: RMSNorm
    let attention: LlamaAttention
    let mlpNorm: RMSNorm
    let mlp: LlamaMLP

    func forward(_ batch: TokenBatch, cache: KVCachePool, engine: MatmulEngine, scratch: LlamaScratch,
                 group: TensorParallelGroup?) {
        let rows = batch.count
        let residual = scratch.residual.pointer, normed = scratch.normed.pointer, delta = scratch.delta.pointer
        let size = attentionNorm.weight.count
        normalize(attentionNorm, rows: rows, engine: engine, scratch: scratch)
        attention.forward(normed, batch, cache: cache, engine: engine, scratch: scratch, into: delta)
        group?.allReduce(delta, count: rows * size)
        addAndNormalize(mlpNorm, rows: rows, size: size, engine: engine, residual: residual, delta: delta, normed: normed)
        mlp.forward(normed, rows: rows, engine: engine, scratch: scratch, into: delta)
        group?.allReduce(delta, count: rows * size)
        engine.pool.forEachRange(rows, minimumPerThread: 16) { range in
            for row in range { tk_add(delta + row * size, residual + row * size, size) }
        }
    }

    private func normalize(_ norm: RMSNorm, rows: Int, engine: MatmulEngine, scratch: LlamaScratch) {
        let size = norm.weight.count, residual = scratch.residual.pointer, normed = scratch.normed.pointer
        engine.pool.forEachRange(rows, minimumPerThread: 16) { range in
            for row in range { norm.apply(residual + row * size, into: normed + row * size) }
        }
    }

    /// `residual += delta; normed = norm(residual)`, one pass over each row.
    private func addAndNormalize(_ norm: RMSNorm, rows: Int, size: Int, engine: MatmulEngine,
                                 residual: UnsafeMutablePointer<Float>, delta: UnsafePointer<Float>,
                                 normed: UnsafeMutablePointer<Float>) {
        engine.pool.forEachRange(rows, minimumPerThread: 16) { range in
            for row in range {
                tk_add(delta + row * size, residual + row * size, size)
                norm.apply(residual + row * size, into: normed + row * size)
            }
        }
    }
}

/// Llama: token embeddings, a stack of blocks, a final RMSNorm and the LM head (possibly over
/// the embedding table itself, when tied). In a tensor-parallel group each rank holds its
/// heads, its MLP columns and its rows of the vocabulary: embeddings are looked up where they
/// lie and summed, and rank 0 gathers the whole vocabulary's logits.
public final class LlamaModel: CausalLanguageModel, @unchecked Sendable {
    public let config: LlamaConfig
    let shard: LlamaShard
    let group: TensorParallelGroup?
    /// Logit rows one gather carries (the collective slots are sized for it).
    static let logitRowsPerGather = 16
    /// This rank's rows of logits before the gather (empty in a group of one).
    private let localLogits: FloatBuffer
    /// Every rank's vocabulary rows, in rank order.
    private let vocabularyCounts: [Int]
    let embedding: Embedding
    let blocks: [LlamaBlock]
    let finalNorm: RMSNorm
    let head: Linear
    let engine: MatmulEngine
    public let weightEncoding: WeightEncoding
    public let weightBytes: Int
    private let scratch: LlamaScratch

    init(config: LlamaConfig, weights: LlamaWeights, rotaryLayout: RotaryLayout, engine: MatmulEngine,
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
        let rotary = RotaryEmbedding(headDimension: config.headDimension, maxPositions: config.maxPositionEmbeddings,
                                     base: config.ropeTheta, scaling: config.ropeScaling, layout: rotaryLayout)
        let epsilon = Float(config.rmsNormEpsilon)
        blocks = weights.layers.enumerated().map { index, layer in
            LlamaBlock(
                attentionNorm: RMSNorm(weight: layer.attentionNorm, epsilon: epsilon),
                attention: LlamaAttention(layer: index, queryKeyValue: layer.queryKeyValue,
                                          output: layer.output, rotary: rotary,
                                          heads: weights.shard.queryHeads, kvHeads: weights.shard.kvHeads,
                                          headDimension: config.headDimension),
                mlpNorm: RMSNorm(weight: layer.mlpNorm, epsilon: epsilon),
                mlp: LlamaMLP(gateUp: layer.gateUp, down: layer.down))
        }
        finalNorm = RMSNorm(weight: weights.finalNorm, epsilon: epsilon)
        head = weights.lmHead
        weightEncoding = weights.dominantEncoding
        var bytes = weights.embedding.table.byteCount
        for layer in weights.layers {
            bytes += layer.queryKeyValue.weightBytes + layer.output.weightBytes + layer.gateUp.weightBytes + layer.down.weightBytes
        }
        if !config.tieWordEmbeddings { bytes += head.weightBytes }
        weightBytes = bytes
        scratch = LlamaScratch(config: config, shard: weights.shard, mlpColumns: weights.layers.map(\.down.inputSize).max() ?? 0,
                               capacity: engine.maxRows, threads: engine.pool.threadCount)
    }

    public var collectiveFailure: CollectiveError? { group?.failure }
    public var groupID: UInt64 { group?.groupID ?? 0 }
    public func checkGroup() { group?.checkPeers() }

    public var hiddenSize: Int { config.hiddenSize }
    public var vocabSize: Int { config.vocabSize }
    public var maxContextLength: Int { config.maxPositionEmbeddings }
    public var maxChunkTokens: Int { scratch.capacity }
    public var cacheShape: KVCacheShape {
        KVCacheShape(layers: config.layerCount, kvHeads: shard.kvHeads, headDimension: config.headDimension)
    }

    public func forward(_ batch: TokenBatch, cache: KVCachePool, hidden: UnsafeMutablePointer<Float>) {
        precondition(batch.count <= scratch.capacity, "chunk of \(batch.count) tokens exceeds \(scratch.capacity)")
        let size = config.hiddenSize, residual = scratch.residual.pointer
        let vocabulary = shard.vocabulary
        engine.pool.forEachRange(batch.count, minimumPerThread: 32) { range in
            for t in range {
                let token = Int(batch.tokens[t])
                if vocabulary.contains(token) {
                    embedding.lookup(token - vocabulary.lowerBound, into: residual + t * size)
                } else {
                    (residual + t * size).update(repeating: 0, count: size)
                }
            }
        }
        group?.allReduce(residual, count: batch.count * size)
        scratch.attentionPlan.prepare(batch)
        for block in blocks {
            block.forward(batch, cache: cache, engine: engine, scratch: scratch, group: group)
        }
        let norm = finalNorm
        engine.pool.forEachRange(batch.count, minimumPerThread: 16) { range in
            for t in range { norm.apply(residual + t * size, into: hidden + t * size) }
        }
    }

    public func logits(hidden: UnsafePointer<Float>, rows: Int, into logits: UnsafeMutablePointer<Float>) {
        guard let group else { return engine.multiply(head, hidden, rows: rows, into: logits) }
        var first = 0
        while first < rows {
            let count = min(Self.logitRowsPerGather, rows - first)
            engine.multiply(head, hidden + first * config.hiddenSize, rows: count, into: localLogits.pointer)
            group.gatherColumns(localLogits.pointer, rows: count, columns: vocabularyCounts,
                                into: logits + first * config.vocabSize)
            first += count
        }
    }
}
