import CKernels
import Collectives
import ModelFormats
import Synchronization

/// Turns checkpoint tensors into the graph's weights: each matrix stays in its stored encoding
/// where it lies in the file's memory map. Only what has no kernel is converted, once, at load:
/// block encodings without one (Q2_K, Q3_K, IQ*) become Q8_0, and `--dtype` converts float
/// checkpoints. Every conversion is logged with the tensor's name.
public struct WeightLoader: Sendable {
    public let store: any WeightStore
    /// The encodings the architecture's registration accepts; any other is a load error.
    public let supportedEncodings: Set<TensorEncoding>
    /// `--dtype`: the float encoding float weights are converted to (nil: kept as stored).
    public let floatConversion: WeightEncoding?
    public let log: @Sendable (String) -> Void
    /// Bytes read so far of all the checkpoint's tensors, logged as percentage lines.
    public let progress: LoadProgress

    public init(store: any WeightStore, supportedEncodings: Set<TensorEncoding>, floatConversion: WeightEncoding?,
                log: @escaping @Sendable (String) -> Void) {
        self.store = store
        self.supportedEncodings = supportedEncodings
        self.floatConversion = floatConversion
        self.log = log
        let total = store.tensorNames.reduce(0) { sum, name in
            guard let descriptor = store.descriptor(name) else { return sum }
            return sum + descriptor.encoding.byteCount(elements: descriptor.elementCount)
        }
        progress = LoadProgress(totalBytes: total, log: log)
    }

    /// The tensor's descriptor after checking it exists with the expected shape and an encoding
    /// the architecture accepts.
    public func descriptor(_ name: String, shape: [Int]) throws -> TensorDescriptor {
        guard let descriptor = store.descriptor(name) else {
            throw ModelLoadError.missingTensor(file: store.path, tensor: name)
        }
        guard supportedEncodings.contains(descriptor.encoding) else {
            throw ModelLoadError.unsupportedEncoding(file: store.path, tensor: name, encoding: "\(descriptor.encoding)")
        }
        guard descriptor.shape == shape else {
            throw ModelLoadError.shapeMismatch(file: store.path, tensor: name, expected: shape, found: descriptor.shape)
        }
        return descriptor
    }

    /// A `[rows, columns]` weight in the encoding its kernels read, or the part of it
    /// `slice` names (a tensor-parallel rank's rows or columns). Only the slice's pages are read
    /// in: rows stay in the file's mapping, columns are copied out of it once (a row-parallel
    /// slice is strided through every row) and the mapped pages released. `countsProgress`
    /// false: another slice of the same tensor has counted its bytes (fused tensors).
    public func matrix(_ name: String, shape: [Int], slice: WeightSlice = .whole,
                       countsProgress: Bool = true) throws -> WeightMatrix {
        let descriptor = try descriptor(name, shape: shape)
        guard descriptor.shape.count == 2 else {
            throw ModelLoadError.shapeMismatch(file: store.path, tensor: name, expected: shape, found: descriptor.shape)
        }
        let stored = WeightEncoding(descriptor.encoding)
        defer { if countsProgress { progress.advance(by: descriptor.encoding.byteCount(elements: descriptor.elementCount)) } }
        if let stored, !(floatConversion != nil && !stored.isBlockQuantized && stored != floatConversion) {
            let mapped = try store.mappedTensor(name)
            let whole = WeightMatrix(mapped: mapped, encoding: stored)
            let part: WeightMatrix
            do { part = try slice.apply(to: whole) } catch let error as WeightSliceError {
                throw ModelLoadError.invalidConfig(file: store.path, detail: error.description)
            }
            if case .columns = slice { return part.compacted(releasing: mapped.mapping) }
            // Read in now, so the load (not the first request) waits for the disk.
            progress.touch(UnsafeRawBufferPointer(start: part.base, count: part.byteCount))
            return part
        }
        guard descriptor.encoding.canDecodeToFloat, descriptor.encoding != .f64,
              stored != nil || descriptor.encoding.blockSize > 1 else {
            throw ModelLoadError.unsupportedEncoding(file: store.path, tensor: name, encoding: "\(descriptor.encoding)")
        }
        if let stored, !stored.isBlockQuantized, let floatConversion {
            log("\(name): \(stored) converted to \(floatConversion) at load (--dtype)")
            return try convert(name, descriptor: descriptor, to: floatConversion, slice: slice)
        }
        let target: WeightEncoding = descriptor.elementsPerRow % 32 == 0 ? .q8_0 : .f16
        log("\(name): \(descriptor.encoding) has no kernel here; converted to \(target) at load")
        return try convert(name, descriptor: descriptor, to: target, slice: slice)
    }

    /// A small float vector (norm weights, biases), decoded.
    public func vector(_ name: String, count: Int) throws -> FloatBuffer {
        let descriptor = try descriptor(name, shape: [count])
        guard descriptor.encoding.canDecodeToFloat else {
            throw ModelLoadError.unsupportedEncoding(file: store.path, tensor: name, encoding: "\(descriptor.encoding)")
        }
        let buffer = FloatBuffer(count: count)
        try store.readFloats(name, rows: nil, into: buffer.buffer)
        progress.advance(by: descriptor.encoding.byteCount(elements: descriptor.elementCount))
        return buffer
    }

    /// Decodes row by row and re-encodes the slice into an owned buffer; no whole-tensor float copy.
    private func convert(_ name: String, descriptor: TensorDescriptor, to target: WeightEncoding,
                         slice: WeightSlice) throws -> WeightMatrix {
        let allColumns = descriptor.elementsPerRow
        var rows = 0..<descriptor.rowCount, columns = 0..<allColumns
        switch slice {
        case .whole: break
        case .rows(let range): rows = range
        case .columns(let range): columns = range
        }
        guard rows.lowerBound >= 0, rows.upperBound <= descriptor.rowCount,
              columns.lowerBound >= 0, columns.upperBound <= allColumns, columns.count % target.blockSize == 0 else {
            throw ModelLoadError.invalidConfig(file: store.path, detail:
                "\(name): slice rows \(rows) columns \(columns) does not fit \(descriptor.shape) in \(target) blocks")
        }
        let rowBytes = target.byteCount(elements: columns.count)
        let buffer = WeightBuffer(count: rows.count * rowBytes)
        let scratch = FloatBuffer(count: allColumns)
        for (index, row) in rows.enumerated() {
            try store.readFloats(name, rows: row..<(row + 1), into: scratch.buffer)
            let out = buffer.pointer + index * rowBytes, source = scratch.pointer + columns.lowerBound
            switch target {
            case .f32:
                out.copyMemory(from: source, byteCount: rowBytes)
            case .f16:
                // The KV cache's float-to-half conversion: one rounding rule for every f16/bf16 write.
                tk_kv_store(TK_KV_F16, source, out, columns.count)
            case .bf16:
                tk_kv_store(TK_KV_BF16, source, out, columns.count)
            case .q8_0:
                tk_quantize_row_q8_0(source, out, columns.count)
            default:
                preconditionFailure("no converter to \(target)")
            }
        }
        return WeightMatrix(encoding: target, rows: rows.count, columns: columns.count, stride: rowBytes,
                            base: UnsafeRawPointer(buffer.pointer), owner: buffer, name: name)
    }
}

/// Which part of a weight a rank loads.
public enum WeightSlice: Sendable, Equatable {
    case whole
    /// Output rows: a column-parallel projection's share (Q/K/V, gate/up, vocabulary rows).
    case rows(Range<Int>)
    /// Input columns on block boundaries: a row-parallel projection's share (o_proj, down).
    case columns(Range<Int>)

    func apply(to matrix: WeightMatrix) throws -> WeightMatrix {
        switch self {
        case .whole: matrix
        case .rows(let range): try matrix.slicingRows(range)
        case .columns(let range): try matrix.slicingColumns(range)
        }
    }
}

/// How much of a checkpoint's weight bytes the load has read: a line at every tenth, as
/// `loading weights: 40% (39.2 of 98.0 MB)` (a worker's stderr reaches the router's console
/// line by line, so lines rather than a redrawn bar).
public final class LoadProgress: Sendable {
    public let totalBytes: Int
    private let log: @Sendable (String) -> Void
    private struct Counts {
        var done = 0
        var reportedTenths = 0
        /// Bytes read while touching pages, kept so the reads are not optimised away.
        var touched: UInt8 = 0
    }
    private let counts = Mutex(Counts())

    public init(totalBytes: Int, log: @escaping @Sendable (String) -> Void) {
        self.totalBytes = totalBytes
        self.log = log
    }

    public func advance(by bytes: Int) {
        guard totalBytes > 0 else { return }
        let line: String? = counts.withLock { counts in
            counts.done = min(totalBytes, counts.done + bytes)
            let tenths = counts.done * 10 / totalBytes
            guard tenths > counts.reportedTenths else { return nil }
            counts.reportedTenths = tenths
            return "loading weights: \(tenths * 10)% (\(Self.megabytes(counts.done)) of \(Self.megabytes(totalBytes)) MB)"
        }
        if let line { log(line) }
    }

    /// Reads one byte of every page.
    func touch(_ bytes: UnsafeRawBufferPointer) {
        var sum: UInt8 = 0
        for offset in stride(from: 0, to: bytes.count, by: 4096) { sum &+= bytes[offset] }
        counts.withLock { $0.touched &+= sum }
    }

    private static func megabytes(_ bytes: Int) -> String {
        let tenths = (bytes * 10 + 500_000) / 1_000_000
        return "\(tenths / 10).\(tenths % 10)"
    }
}

/// What a registration's loader gets besides the checkpoint: the rank's place, the user's
/// numeric choices, the compute engine the graph will run on.
public struct ModelLoadContext: Sendable {
    public let plan: TensorParallelPlan
    public let options: EngineOptions
    public let pool: ComputePool
    /// Where the ranks meet (nil for a group of one).
    public let group: GroupSettings?
    public let log: @Sendable (String) -> Void

    public init(plan: TensorParallelPlan, options: EngineOptions, pool: ComputePool, group: GroupSettings? = nil,
                log: @escaping @Sendable (String) -> Void) {
        self.plan = plan
        self.options = options
        self.pool = pool
        self.group = group
        self.log = log
    }

    /// Meets the other ranks once the weights are loaded, with slots of `slotBytes` (equal on
    /// every rank); nil for a group of one. `fingerprint` describes the model and geometry and
    /// must be equal on every rank.
    public func joinGroup(slotBytes: Int, fingerprint: String) throws -> TensorParallelGroup? {
        guard plan.isSharded else { return nil }
        guard let group else { throw ModelLoadError.missingGroup(worldSize: plan.worldSize) }
        log("joining tensor-parallel group (\(group.description)) as rank \(plan.rank) of \(plan.worldSize)")
        var hash: UInt64 = 0xcbf29ce484222325
        for byte in "\(fingerprint) \(plan.worldSize) \(slotBytes)".utf8 { hash = (hash ^ UInt64(byte)) &* 0x100000001b3 }
        let joined = try group.join(rank: plan.rank, worldSize: plan.worldSize, capacityBytes: slotBytes, fingerprint: hash)
        return TensorParallelGroup(group: joined, pool: pool)
    }

    /// The kernels' instruction-set level (the CPU's best under `TESSEL_KERNELS`) and the
    /// activations the user chose.
    public var kernels: KernelChoice { KernelChoice(level: Int(tk_cpu_level()), activations: options.resolvedActivations) }

    public func weightLoader(_ checkpoint: ModelCheckpoint, supportedEncodings: Set<TensorEncoding>) -> WeightLoader {
        WeightLoader(store: checkpoint.weights, supportedEncodings: supportedEncodings,
                     floatConversion: options.weightDType, log: log)
    }
}

/// The user's numeric and resource choices for one worker (`worker --activations …`).
public struct EngineOptions: Sendable, Equatable {
    /// nil: q8 (8-bit activations for block-quantised weights).
    public var activations: ActivationPrecision?
    /// nil: auto (f32 with exact activations, else f16; bf16 for a bf16 checkpoint).
    public var kvCacheDType: KVCacheDType?
    /// KV capacity in tokens; wins over `kvCacheMemoryBytes`.
    public var kvCacheTokens: Int?
    /// KV capacity in bytes (nil: a share of the free memory).
    public var kvCacheMemoryBytes: Int?
    /// `--dtype`: convert float checkpoints once at load (nil: keep their dtype).
    public var weightDType: WeightEncoding?
    /// Most tokens one forward pass takes.
    public var chunkTokens: Int
    /// `--max-model-len`: the context served, at most the model's (nil: the model's). Rotary
    /// embeddings that depend on the context (dynamic NTK, LongRoPE) are built for it.
    public var maxModelLength: Int?

    public init(activations: ActivationPrecision? = nil, kvCacheDType: KVCacheDType? = nil, kvCacheTokens: Int? = nil,
                kvCacheMemoryBytes: Int? = nil, weightDType: WeightEncoding? = nil, chunkTokens: Int = 256,
                maxModelLength: Int? = nil) {
        self.activations = activations
        self.kvCacheDType = kvCacheDType
        self.kvCacheTokens = kvCacheTokens
        self.kvCacheMemoryBytes = kvCacheMemoryBytes
        self.weightDType = weightDType
        self.chunkTokens = chunkTokens
        self.maxModelLength = maxModelLength
    }

    public var resolvedActivations: ActivationPrecision { activations ?? .q8 }

    /// The KV element type for a model whose matrices are mostly `weights`.
    public func resolvedKVCacheDType(weights: WeightEncoding) -> KVCacheDType {
        if let kvCacheDType { return kvCacheDType }
        if resolvedActivations == .f32 { return .f32 }
        return weights == .bf16 ? .bf16 : .f16
    }
}
