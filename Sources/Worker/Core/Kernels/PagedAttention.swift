import CKernels

/// Runs a chunk's attention over the paged KV cache on the compute pool. The chunk is cut into
/// tiles (up to `tileRows` consecutive tokens of one sequence, which share every K/V block
/// they read; 16 rows × a KV group's heads fill the AVX-512 kernel's lanes); a work item is a
/// tile × one KV head, handed out dynamically, longest first, because a prefill's later tokens
/// attend to more positions. Buffers are allocated once.
final class AttentionPlan: @unchecked Sendable {
    static let tileRows = 16

    private let capacity: Int
    private let tileStarts: UnsafeMutablePointer<Int32>
    private let tileCounts: UnsafeMutablePointer<Int32>
    private let contexts: UnsafeMutablePointer<Int32>
    private let nextItem: UnsafeMutablePointer<Int>
    private let scratch: FloatBuffer
    private let scratchFloats: Int
    /// Tiles of the chunk `prepare` last saw.
    private var tiles = 0

    /// `group`: the most query heads that read one KV head.
    init(capacity: Int, threads: Int, group: Int, headDimension: Int) {
        self.capacity = capacity
        tileStarts = .allocate(capacity: capacity)
        tileCounts = .allocate(capacity: capacity)
        contexts = .allocate(capacity: capacity)
        nextItem = .allocate(capacity: 1)
        nextItem.initialize(to: 0)
        scratchFloats = tk_attention_scratch_floats(group, headDimension, Self.tileRows)
        scratch = FloatBuffer(count: threads * scratchFloats)
    }

    deinit {
        tileStarts.deallocate()
        tileCounts.deallocate()
        contexts.deallocate()
        nextItem.deallocate()
    }

    /// `queries` rows hold each token's `heads` query vectors first (stride `queryStride`
    /// floats); results go to `out` rows of `heads × headDimension`. KV head `h` of the cache
    /// is read by query heads `queryRuns[h]` (all of its group, or the part a tensor-parallel
    /// rank holds). `window` 0 and `softcap` 0 turn those off. `batch` is the chunk last given
    /// to `prepare`; `layer` is the layer of the pool's pages, read through KV group `kvGroup`'s
    /// block tables.
    func run(_ batch: TokenBatch, kvGroup: Int, layer: Int, cache: KVCachePool, pool: ComputePool,
             queries: UnsafePointer<Float>, queryStride: Int, heads: Int, queryRuns: [Range<Int>],
             scale: Float, softcap: Float, window: Int, into out: UnsafeMutablePointer<Float>) {
        let tiles = self.tiles, kvHeads = queryRuns.count
        let headDimension = cache.shape.headDimension
        let items = tiles * kvHeads
        nextItem.pointee = 0
        let (tileStarts, tileCounts, contexts, nextItem) = (self.tileStarts, self.tileCounts, self.contexts, self.nextItem)
        let scratch = self.scratch.pointer, scratchFloats = self.scratchFloats
        let outStride = heads * headDimension
        let tables = batch.tables(group: kvGroup)
        func work(_ thread: Int, _: Int) {
            let own = scratch + thread * scratchFloats
            while true {
                let item = tk_fetch_add(nextItem, 1)
                guard item < items else { return }
                let tile = tiles - 1 - item / kvHeads, head = item % kvHeads
                let first = Int(tileStarts[tile]), rows = Int(tileCounts[tile])
                let run = queryRuns[head]
                var parameters = tk_attention_params(
                    head_dim: headDimension, group: run.count,
                    k_cache: UnsafeRawPointer(cache.keys(layer: layer, head: head)),
                    v_cache: UnsafeRawPointer(cache.values(layer: layer, head: head)),
                    block_stride: cache.blockStride, block_size: cache.blockSize, kv_type: cache.dtype.kernelType,
                    scale: scale, softcap: softcap, window: window)
                tk_attention(&parameters, tables + Int(batch.blockTableStarts[first]), rows,
                             queries + first * queryStride + run.lowerBound * headDimension, queryStride,
                             contexts + first, out + first * outStride + run.lowerBound * headDimension, outStride, own)
            }
        }
        if items == 1 || pool.threadCount == 1 { work(0, 1) } else { pool.run(work) }
    }

    /// Cuts a chunk into tiles and records each token's context length: once per forward pass,
    /// since every layer attends over the same tiles.
    func prepare(_ batch: TokenBatch) {
        precondition(batch.count <= capacity, "attention over \(batch.count) tokens exceeds \(capacity)")
        var tiles = 0
        for t in 0..<batch.count {
            contexts[t] = batch.positions[t] + 1
            let continues = t > 0 && tiles > 0 && batch.blockTableStarts[t] == batch.blockTableStarts[t - 1]
                && batch.positions[t] == batch.positions[t - 1] + 1 && Int(tileCounts[tiles - 1]) < Self.tileRows
            if continues {
                tileCounts[tiles - 1] += 1
            } else {
                tileStarts[tiles] = Int32(t)
                tileCounts[tiles] = 1
                tiles += 1
            }
        }
        self.tiles = tiles
    }
}
