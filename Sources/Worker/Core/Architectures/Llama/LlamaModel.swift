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
    let scores: FloatBuffer     // [group * maxContext]

    init(config: LlamaConfig, capacity: Int) {
        self.capacity = capacity
        residual = FloatBuffer(count: capacity * config.hiddenSize)
        normed = FloatBuffer(count: capacity * config.hiddenSize)
        delta = FloatBuffer(count: capacity * config.hiddenSize)
        qkv = FloatBuffer(count: capacity * (config.headCount + 2 * config.kvHeadCount) * config.headDimension)
        attention = FloatBuffer(count: capacity * config.headCount * config.headDimension)
        gateUp = FloatBuffer(count: capacity * 2 * config.intermediateSize)
        activated = FloatBuffer(count: capacity * config.intermediateSize)
        scores = FloatBuffer(count: config.groupSize * config.maxPositionEmbeddings)
    }
}

/// Grouped-query self-attention with rotary positions, over the paged KV cache.
struct LlamaAttention: Sendable {
    let layer: Int
    let queryKeyValue: Linear  // [q heads | k heads | v heads] rows, fused
    let output: Linear
    let rotary: RotaryEmbedding
    let heads: Int
    let kvHeads: Int
    let headDimension: Int

    func forward(_ x: UnsafePointer<Float>, _ batch: TokenBatch, cache: KVCachePool, scratch: LlamaScratch,
                 into out: UnsafeMutablePointer<Float>) {
        let width = (heads + 2 * kvHeads) * headDimension
        let group = heads / kvHeads
        let scale = 1 / Float(headDimension).squareRoot()
        queryKeyValue(x, rows: batch.count, into: scratch.qkv.pointer)
        for t in 0..<batch.count {
            let row = scratch.qkv.pointer + t * width
            let position = Int(batch.positions[t])
            rotary.apply(row, heads: heads + kvHeads, position: position)  // q and k are adjacent
            let block = Int(batch.blockTables[Int(batch.blockTableStarts[t]) + position / cache.blockSize])
            let slot = cache.offset(block: block, slot: position % cache.blockSize)
            for head in 0..<kvHeads {
                (cache.keys(layer: layer, head: head) + slot)
                    .update(from: row + (heads + head) * headDimension, count: headDimension)
                (cache.values(layer: layer, head: head) + slot)
                    .update(from: row + (heads + kvHeads + head) * headDimension, count: headDimension)
            }
        }
        for t in 0..<batch.count {
            let query = scratch.qkv.pointer + t * width
            let result = scratch.attention.pointer + t * heads * headDimension
            let context = Int(batch.positions[t]) + 1
            let table = batch.blockTables + Int(batch.blockTableStarts[t])
            for head in 0..<kvHeads {
                tk_paged_attention(query + head * group * headDimension, group, headDimension,
                                   cache.keys(layer: layer, head: head), cache.values(layer: layer, head: head),
                                   cache.blockStride, cache.blockSize, table, context, scale,
                                   scratch.scores.pointer, result + head * group * headDimension)
            }
        }
        output(scratch.attention.pointer, rows: batch.count, into: out)
    }
}

/// The gated feed-forward block: `down(silu(gate(x)) * up(x))`.
struct LlamaMLP: Sendable {
    let gateUp: Linear  // [gate rows | up rows], fused
    let down: Linear

    func forward(_ x: UnsafePointer<Float>, rows: Int, scratch: LlamaScratch, into out: UnsafeMutablePointer<Float>) {
        gateUp(x, rows: rows, into: scratch.gateUp.pointer)
        VectorKernels.swiGLU(scratch.gateUp.pointer, rows: rows, size: down.inputSize, into: scratch.activated.pointer)
        down(scratch.activated.pointer, rows: rows, into: out)
    }
}

/// Pre-norm residual block: attention, then MLP.
struct LlamaBlock: Sendable {
    let attentionNorm: RMSNorm
    let attention: LlamaAttention
    let mlpNorm: RMSNorm
    let mlp: LlamaMLP

    func forward(_ batch: TokenBatch, cache: KVCachePool, scratch: LlamaScratch) {
        let rows = batch.count, size = batch.count * attentionNorm.weight.count
        attentionNorm(scratch.residual.pointer, rows: rows, into: scratch.normed.pointer)
        attention.forward(scratch.normed.pointer, batch, cache: cache, scratch: scratch, into: scratch.delta.pointer)
        VectorKernels.add(scratch.delta.pointer, into: scratch.residual.pointer, count: size)
        mlpNorm(scratch.residual.pointer, rows: rows, into: scratch.normed.pointer)
        mlp.forward(scratch.normed.pointer, rows: rows, scratch: scratch, into: scratch.delta.pointer)
        VectorKernels.add(scratch.delta.pointer, into: scratch.residual.pointer, count: size)
    }
}

/// Llama: token embeddings, a stack of blocks, a final RMSNorm and the LM head (possibly the
/// embedding matrix itself, when tied).
public final class LlamaModel: CausalLanguageModel, @unchecked Sendable {
    public let config: LlamaConfig
    let embedding: Matrix
    let blocks: [LlamaBlock]
    let finalNorm: RMSNorm
    let head: Linear
    private let scratch: LlamaScratch

    public static let defaultChunkTokens = 256

    init(config: LlamaConfig, weights: LlamaWeights, chunkTokens: Int = LlamaModel.defaultChunkTokens) {
        self.config = config
        embedding = weights.embedding
        let rotary = RotaryEmbedding(headDimension: config.headDimension, maxPositions: config.maxPositionEmbeddings,
                                     base: config.ropeTheta, scaling: config.ropeScaling)
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
        scratch = LlamaScratch(config: config, capacity: chunkTokens)
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
        let size = config.hiddenSize
        for t in 0..<batch.count {
            (scratch.residual.pointer + t * size).update(from: embedding.pointer + Int(batch.tokens[t]) * size, count: size)
        }
        for block in blocks {
            block.forward(batch, cache: cache, scratch: scratch)
        }
        finalNorm(scratch.residual.pointer, rows: batch.count, into: hidden)
    }

    public func logits(hidden: UnsafePointer<Float>, rows: Int, into logits: UnsafeMutablePointer<Float>) {
        head(hidden, rows: rows, into: logits)
    }
}
