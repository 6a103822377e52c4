import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// The element type of cached keys and values.
public enum KVCacheDType: String, Sendable, CaseIterable {
    case f32, f16, bf16

    public var elementBytes: Int { self == .f32 ? 4 : 2 }

    var kernelType: tk_kv_type {
        switch self {
        case .f32: TK_KV_F32
        case .f16: TK_KV_F16
        case .bf16: TK_KV_BF16
        }
    }
}

/// The shape of one model's key/value pages: what a page holds per position.
public struct KVCacheShape: Sendable, Equatable {
    /// Layers per page: a `KVCacheGroups` group's (every layer, for a model of one group).
    public var layers: Int
    public var kvHeads: Int
    public var headDimension: Int

    public init(layers: Int, kvHeads: Int, headDimension: Int) {
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDimension = headDimension
    }

    /// Bytes of keys and values one position of a page occupies (across its layers).
    public func bytesPerToken(_ dtype: KVCacheDType) -> Int { 2 * layers * kvHeads * headDimension * dtype.elementBytes }
}

/// How a model's layers share KV pages, as vLLM's KV cache groups do: the layers are cut into
/// groups of `layersPerPage` layers with one attention window each, a page (a block of the
/// pool) holds one group's keys and values for `blockSize` positions, and every sequence has one
/// block table per group, all of the same length. A group with a window gives back the pages its
/// window has passed, so Gemma's local layers hold a window of KV while its global ones hold the
/// whole context. A model whose layers all share one window is one group of every layer.
public struct KVCacheGroups: Sendable, Equatable {
    /// Per group: the positions its layers attend back over (0: the whole context).
    public let windows: [Int]
    /// Per layer: its group, and its place among the group's layers (its layer of the pool).
    public let layerGroup: [Int]
    public let layerSlot: [Int]
    public let layersPerPage: Int

    /// Groups of equal size from each layer's window: the size is the greatest common divisor
    /// of the counts of layers per window, and each window's layers fill its groups in order.
    public init(layerWindows: [Int]) {
        var kinds: [Int] = []
        for window in layerWindows where !kinds.contains(window) { kinds.append(window) }
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        let size = kinds.map { window in layerWindows.count { $0 == window } }.reduce(0, gcd)
        var windows: [Int] = [], group = [Int](repeating: 0, count: layerWindows.count)
        var slot = [Int](repeating: 0, count: layerWindows.count)
        var open: [Int: (group: Int, filled: Int)] = [:]
        for (layer, window) in layerWindows.enumerated() {
            if let current = open[window], current.filled < size {
                (group[layer], slot[layer]) = (current.group, current.filled)
                open[window] = (current.group, current.filled + 1)
            } else {
                windows.append(window)
                (group[layer], slot[layer]) = (windows.count - 1, 0)
                open[window] = (windows.count - 1, 1)
            }
        }
        self.windows = windows
        layerGroup = group
        layerSlot = slot
        layersPerPage = max(size, 1)
    }

    public var count: Int { windows.count }
}

/// Paged key/value storage: a pool of fixed-size blocks per layer of a page (`shape.layers`:
/// a `KVCacheGroups` group's layers). The router owns the block tables (which blocks a
/// sequence uses, in order, per group); the pool only stores vectors.
///
/// Layout per layer and per K/V: `[block][kvHead][slot][headDimension]`, so one KV head's
/// vectors inside a block are contiguous for the attention kernel. The storage comes from
/// `calloc`, so untouched blocks cost no resident memory.
public final class KVCachePool: @unchecked Sendable {
    public let shape: KVCacheShape
    public let dtype: KVCacheDType
    public let blockCount: Int
    public let blockSize: Int
    private let storage: UnsafeMutableRawPointer

    public init(shape: KVCacheShape, dtype: KVCacheDType, blockCount: Int, blockSize: Int) {
        self.shape = shape
        self.dtype = dtype
        self.blockCount = blockCount
        self.blockSize = blockSize
        let bytes = 2 * shape.layers * blockCount * shape.kvHeads * blockSize * shape.headDimension * dtype.elementBytes
        guard let raw = calloc(max(bytes, 1), 1) else { fatalError("cannot allocate a KV cache of \(bytes) bytes") }
        storage = raw
    }

    deinit { free(storage) }

    public var byteCount: Int { 2 * shape.layers * blockCount * blockStride * dtype.elementBytes }

    /// Elements between the starts of consecutive blocks of one layer's keys (or values).
    public var blockStride: Int { shape.kvHeads * blockSize * shape.headDimension }

    private var layerStride: Int { blockCount * blockStride }

    /// Keys of `layer`, KV head `head`, at block 0 slot 0.
    @inline(__always)
    public func keys(layer: Int, head: Int) -> UnsafeMutableRawPointer {
        storage + ((2 * layer) * layerStride + head * blockSize * shape.headDimension) * dtype.elementBytes
    }

    /// Values of `layer`, KV head `head`, at block 0 slot 0.
    @inline(__always)
    public func values(layer: Int, head: Int) -> UnsafeMutableRawPointer {
        storage + ((2 * layer + 1) * layerStride + head * blockSize * shape.headDimension) * dtype.elementBytes
    }

    /// Offset in elements of a cache slot (block, slot) from a head's base pointer.
    @inline(__always)
    public func offset(block: Int, slot: Int) -> Int {
        block * blockStride + slot * shape.headDimension
    }

    /// Writes one position's key and value vectors of one KV head.
    @inline(__always)
    public func store(layer: Int, head: Int, block: Int, slot: Int,
                      key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        let byteOffset = offset(block: block, slot: slot) * dtype.elementBytes
        tk_kv_store(dtype.kernelType, key, keys(layer: layer, head: head) + byteOffset, shape.headDimension)
        tk_kv_store(dtype.kernelType, value, values(layer: layer, head: head) + byteOffset, shape.headDimension)
    }
}
