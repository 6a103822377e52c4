import CKernels

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

    init(config: LlamaConfig, capacity: Int, threads: Int) {
        self.capacity = capacity
        residual = FloatBuffer(count: capacity * config.hiddenSize)
        normed = FloatBuffer(count: capacity * config.hiddenSize)
        delta = FloatBuffer(count: capacity * config.hiddenSize)
        qkv = FloatBuffer(count: capacity * (config.headCount + 2 * config.kvHeadCount) * config.headDimension)
        attention = FloatBuffer(count: capacity * config.headCount * config.headDimension)
        gateUp = FloatBuffer(count: capacity * 2 * config.intermediateSize)
        activated = FloatBuffer(count: capacity * config.intermediateSize)
        attentionPlan = AttentionPlan(capacity: capacity, threads: threads, group: config.groupSize,
                                      headDimension: config.headDimension)
    }
}

/// Grouped-query self-attention with rotary positions, over the paged KV cache.
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

/// The gated feed-forward block: `down(silu(gate(x)) * up(x))`.
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

/// Pre-norm residual block: attention, then MLP.
struct LlamaBlock: Sendable {
    let attentionNorm: RMSNorm
    let attention: LlamaAttention
    let mlpNorm: RMSNorm
    let mlp: LlamaMLP

    func forward(_ batch: TokenBatch, cache: KVCachePool, engine: MatmulEngine, scratch: LlamaScratch) {
        let rows = batch.count
        let residual = scratch.residual.pointer, normed = scratch.normed.pointer, delta = scratch.delta.pointer
        let size = attentionNorm.weight.count
        normalize(attentionNorm, rows: rows, engine: engine, scratch: scratch)
        attention.forward(normed, batch, cache: cache, engine: engine, scratch: scratch, into: delta)
        addAndNormalize(mlpNorm, rows: rows, size: size, engine: engine, residual: residual, delta: delta, normed: normed)
        mlp.forward(normed, rows: rows, engine: engine, scratch: scratch, into: delta)
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
/// the embedding table itself, when tied).
public final class LlamaModel: CausalLanguageModel, @unchecked Sendable {
    public let config: LlamaConfig
    let embedding: Embedding
    let blocks: [LlamaBlock]
    let finalNorm: RMSNorm
    let head: Linear
    let engine: MatmulEngine
    public let weightEncoding: WeightEncoding
    public let weightBytes: Int
    private let scratch: LlamaScratch

    init(config: LlamaConfig, weights: LlamaWeights, rotaryLayout: RotaryLayout, engine: MatmulEngine) {
        self.config = config
        self.engine = engine
        embedding = weights.embedding
        let rotary = RotaryEmbedding(headDimension: config.headDimension, maxPositions: config.maxPositionEmbeddings,
                                     base: config.ropeTheta, scaling: config.ropeScaling, layout: rotaryLayout)
        let epsilon = Float(config.rmsNormEpsilon)
        blocks = weights.layers.enumerated().map { index, layer in
            LlamaBlock(
                attentionNorm: RMSNorm(weight: layer.attentionNorm, epsilon: epsilon),
                attention: LlamaAttention(layer: index, queryKeyValue: layer.queryKeyValue,
                                          output: layer.output, rotary: rotary,
                                          heads: config.headCount, kvHeads: config.kvHeadCount,
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
        scratch = LlamaScratch(config: config, capacity: engine.maxRows, threads: engine.pool.threadCount)
    }

    public var hiddenSize: Int { config.hiddenSize }
    public var vocabSize: Int { config.vocabSize }
    public var maxContextLength: Int { config.maxPositionEmbeddings }
    public var maxChunkTokens: Int { scratch.capacity }
    public var cacheShape: KVCacheShape {
        KVCacheShape(layers: config.layerCount, kvHeads: config.kvHeadCount, headDimension: config.headDimension)
    }

    public func forward(_ batch: TokenBatch, cache: KVCachePool, hidden: UnsafeMutablePointer<Float>) {
        precondition(batch.count <= scratch.capacity, "chunk of \(batch.count) tokens exceeds \(scratch.capacity)")
        let size = config.hiddenSize, residual = scratch.residual.pointer
        engine.pool.forEachRange(batch.count, minimumPerThread: 32) { range in
            for t in range { embedding.lookup(Int(batch.tokens[t]), into: residual + t * size) }
        }
        scratch.attentionPlan.prepare(batch)
        for block in blocks {
            block.forward(batch, cache: cache, engine: engine, scratch: scratch)
        }
        let norm = finalNorm
        engine.pool.forEachRange(batch.count, minimumPerThread: 16) { range in
            for t in range { norm.apply(residual + t * size, into: hidden + t * size) }
        }
    }

    public func logits(hidden: UnsafePointer<Float>, rows: Int, into logits: UnsafeMutablePointer<Float>) {
        engine.multiply(head, hidden, rows: rows, into: logits)
    }
}
