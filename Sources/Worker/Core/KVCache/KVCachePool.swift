/// The shape of one model's key/value cache: what a pool must hold per token.
public struct KVCacheShape: Sendable, Equatable {
    public var layers: Int
    public var kvHeads: Int
    public var headDimension: Int

    public init(layers: Int, kvHeads: Int, headDimension: Int) {
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDimension = headDimension
    }

    /// Bytes of float32 keys and values one token occupies across all layers.
    public var bytesPerToken: Int { 2 * layers * kvHeads * headDimension * MemoryLayout<Float>.stride }
}

/// Paged key/value storage: a pool of fixed-size blocks per layer. The router owns the block
/// tables (which blocks a sequence uses, in order); the pool only stores vectors.
///
/// Layout per layer and per K/V: `[block][kvHead][slot][headDimension]`, so one KV head's
/// vectors inside a block are contiguous for the attention kernel.
public final class KVCachePool: @unchecked Sendable {
    public let shape: KVCacheShape
    public let blockCount: Int
    public let blockSize: Int
    private let storage: FloatBuffer

    public init(shape: KVCacheShape, blockCount: Int, blockSize: Int) {
        self.shape = shape
        self.blockCount = blockCount
        self.blockSize = blockSize
        storage = FloatBuffer(count: 2 * shape.layers * blockCount * shape.kvHeads * blockSize * shape.headDimension)
    }

    /// Floats between the starts of consecutive blocks of one layer's keys (or values).
    public var blockStride: Int { shape.kvHeads * blockSize * shape.headDimension }

    private var layerStride: Int { blockCount * blockStride }

    /// Keys of `layer`, KV head `head`, at block 0 slot 0.
    @inline(__always)
    public func keys(layer: Int, head: Int) -> UnsafeMutablePointer<Float> {
        storage.pointer + (2 * layer) * layerStride + head * blockSize * shape.headDimension
    }

    /// Values of `layer`, KV head `head`, at block 0 slot 0.
    @inline(__always)
    public func values(layer: Int, head: Int) -> UnsafeMutablePointer<Float> {
        storage.pointer + (2 * layer + 1) * layerStride + head * blockSize * shape.headDimension
    }

    /// Offset of a cache slot (block, slot) from a head's base pointer.
    @inline(__always)
    public func offset(block: Int, slot: Int) -> Int {
        block * blockStride + slot * shape.headDimension
    }
}
