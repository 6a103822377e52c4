import CKernels
import ModelFormats

/// The encodings a weight matrix keeps for its whole life, each with its own kernels.
public enum WeightEncoding: String, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = "F32", f16 = "F16", bf16 = "BF16"
    case q4_0 = "Q4_0", q4_1 = "Q4_1", q5_0 = "Q5_0", q5_1 = "Q5_1", q8_0 = "Q8_0"
    case q4_K = "Q4_K", q5_K = "Q5_K", q6_K = "Q6_K"

    /// The encoding of a stored tensor, or nil when it has no kernel (the loader converts those).
    public init?(_ encoding: TensorEncoding) {
        switch encoding {
        case .f32: self = .f32
        case .f16: self = .f16
        case .bf16: self = .bf16
        case .ggml(.q4_0): self = .q4_0
        case .ggml(.q4_1): self = .q4_1
        case .ggml(.q5_0): self = .q5_0
        case .ggml(.q5_1): self = .q5_1
        case .ggml(.q8_0): self = .q8_0
        case .ggml(.q4_K): self = .q4_K
        case .ggml(.q5_K): self = .q5_K
        case .ggml(.q6_K): self = .q6_K
        default: return nil
        }
    }

    var kernelEncoding: tk_encoding {
        switch self {
        case .f32: TK_ENC_F32
        case .f16: TK_ENC_F16
        case .bf16: TK_ENC_BF16
        case .q4_0: TK_ENC_Q4_0
        case .q4_1: TK_ENC_Q4_1
        case .q5_0: TK_ENC_Q5_0
        case .q5_1: TK_ENC_Q5_1
        case .q8_0: TK_ENC_Q8_0
        case .q4_K: TK_ENC_Q4_K
        case .q5_K: TK_ENC_Q5_K
        case .q6_K: TK_ENC_Q6_K
        }
    }

    /// The ggml type of the same layout: its block geometry is this encoding's.
    public var ggmlType: GGMLType {
        switch self {
        case .f32: .f32
        case .f16: .f16
        case .bf16: .bf16
        case .q4_0: .q4_0
        case .q4_1: .q4_1
        case .q5_0: .q5_0
        case .q5_1: .q5_1
        case .q8_0: .q8_0
        case .q4_K: .q4_K
        case .q5_K: .q5_K
        case .q6_K: .q6_K
        }
    }

    /// Elements per block (1 for the float encodings).
    public var blockSize: Int { ggmlType.blockSize }

    public var bytesPerBlock: Int { ggmlType.bytesPerBlock }

    public var isBlockQuantized: Bool { blockSize > 1 }

    public func byteCount(elements: Int) -> Int { elements / blockSize * bytesPerBlock }

    public var description: String { rawValue }
}

/// Owned, 64-byte-aligned bytes: weights repacked or converted at load.
public final class WeightBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let count: Int

    public init(count: Int) {
        self.count = count
        pointer = .allocate(byteCount: max(count, 1), alignment: 64)
    }

    deinit { pointer.deallocate() }
}

/// How a matrix's rows lie in memory.
public enum WeightLayout: Sendable, Equatable, CustomStringConvertible {
    /// Row after row, as checkpoints store them.
    case rows
    /// Groups of `rowsPerGroup` rows interleaved block by block: the layout of the AVX-512
    /// integer bodies (matmul_packed.c), made once at load by `WeightMatrix.interleaved(for:)`.
    /// The last group is padded with zero rows.
    case interleaved(rowsPerGroup: Int)

    /// Rows per unit of storage: 1, or the group's rows.
    public var rowsPerUnit: Int {
        switch self {
        case .rows: 1
        case .interleaved(let rows): rows
        }
    }

    public var description: String {
        switch self {
        case .rows: "rows"
        case .interleaved(let rows): "interleaved groups of \(rows) rows"
        }
    }
}

/// A `[rows, columns]` weight in one encoding, where it lies: in a model file's memory map or
/// in a buffer filled once at load. Storage units (a row, or an interleaved group of rows)
/// follow each other `stride` bytes apart from `base`; a column slice keeps its parent's
/// stride. It never holds a float copy of a quantised tensor.
public struct WeightMatrix: @unchecked Sendable {
    public let encoding: WeightEncoding
    public let layout: WeightLayout
    public let rows: Int
    public let columns: Int
    /// Bytes between the starts of consecutive units (rows, or groups of rows).
    public let stride: Int
    public let base: UnsafeRawPointer
    /// What keeps `base` valid: a `MappedFile` or a `WeightBuffer`.
    let owner: AnyObject
    /// Where it came from, for messages.
    public let name: String

    public init(encoding: WeightEncoding, layout: WeightLayout = .rows, rows: Int, columns: Int, stride: Int,
                base: UnsafeRawPointer, owner: AnyObject, name: String) {
        precondition(columns % encoding.blockSize == 0, "\(name): \(columns) columns are not whole \(encoding) blocks")
        precondition(stride >= layout.rowsPerUnit * encoding.byteCount(elements: columns), "\(name): stride \(stride) too small")
        self.encoding = encoding
        self.layout = layout
        self.rows = rows
        self.columns = columns
        self.stride = stride
        self.base = base
        self.owner = owner
        self.name = name
    }

    /// A tensor used where it lies in its file's mapping.
    public init(mapped tensor: MappedTensor, encoding: WeightEncoding) {
        let columns = tensor.descriptor.elementsPerRow
        self.init(encoding: encoding, rows: tensor.descriptor.rowCount, columns: columns,
                  stride: encoding.byteCount(elements: columns), base: tensor.bytes.baseAddress!,
                  owner: tensor.mapping, name: tensor.descriptor.name)
    }

    /// Bytes of one row's elements (without any stride padding).
    public var rowBytes: Int { encoding.byteCount(elements: columns) }

    /// Bytes this view covers (an interleaved last group counts whole).
    public var byteCount: Int {
        let unit = layout.rowsPerUnit
        return (rows + unit - 1) / unit * unit * rowBytes
    }

    /// Row `index` of a matrix stored row after row.
    @inline(__always)
    public func row(_ index: Int) -> UnsafeRawPointer {
        precondition(layout == .rows, "\(name): single rows of \(layout) are not addressable")
        return base + index * stride
    }

    /// The unit (row or group) that starts at row `index`, a multiple of the unit's rows.
    @inline(__always)
    public func unit(startingAt index: Int) -> UnsafeRawPointer {
        base + index / layout.rowsPerUnit * stride
    }

    /// Rows `range`: what a column-parallel rank (Q/K/V, gate, up) keeps. Interleaved matrices
    /// split on group boundaries.
    public func slicingRows(_ range: Range<Int>) throws -> WeightMatrix {
        guard range.lowerBound >= 0, range.upperBound <= rows else {
            throw WeightSliceError.outOfRange(name: name, axis: "rows", range: range, count: rows)
        }
        let group = layout.rowsPerUnit
        guard range.lowerBound % group == 0, range.upperBound % group == 0 || range.upperBound == rows else {
            throw WeightSliceError.splitsGroup(name: name, range: range, rowsPerGroup: group)
        }
        return WeightMatrix(encoding: encoding, layout: layout, rows: range.count, columns: columns, stride: stride,
                            base: unit(startingAt: range.lowerBound), owner: owner, name: name)
    }

    /// Columns `range`, on block boundaries: what a row-parallel rank (o_proj, down) keeps.
    public func slicingColumns(_ range: Range<Int>) throws -> WeightMatrix {
        guard range.lowerBound >= 0, range.upperBound <= columns else {
            throw WeightSliceError.outOfRange(name: name, axis: "columns", range: range, count: columns)
        }
        guard range.lowerBound % encoding.blockSize == 0, range.count % encoding.blockSize == 0 else {
            throw WeightSliceError.splitsBlock(name: name, range: range, encoding: encoding)
        }
        // Within a unit, each block of columns holds that block of every row of the unit.
        let offset = layout.rowsPerUnit * encoding.byteCount(elements: range.lowerBound)
        return WeightMatrix(encoding: encoding, layout: layout, rows: rows, columns: range.count, stride: stride,
                            base: base + offset, owner: owner, name: name)
    }

    /// A row-major copy of this matrix in an owned buffer, rows packed without stride padding;
    /// the pages it was read from are released when they lie in `mapping`.
    public func compacted(releasing mapping: MappedFile?) -> WeightMatrix {
        precondition(layout == .rows, "\(name): only row-major matrices are compacted")
        let buffer = WeightBuffer(count: rows * rowBytes)
        for row in 0..<rows { (buffer.pointer + row * rowBytes).copyMemory(from: self.row(row), byteCount: rowBytes) }
        if rows > 0, let mapping, owner === mapping {
            mapping.releaseResidentPages(UnsafeRawBufferPointer(start: base, count: (rows - 1) * stride + rowBytes))
        }
        return WeightMatrix(encoding: encoding, rows: rows, columns: columns, stride: rowBytes,
                            base: UnsafeRawPointer(buffer.pointer), owner: buffer, name: name)
    }

    /// This matrix repacked once into `kernel`'s interleaved row groups, in an owned buffer;
    /// the rows it came from are released from memory when they lie in a file's mapping (they
    /// are read back from the file if anything touches them again, such as a tied embedding).
    public func interleaved(for kernel: MatmulKernel) -> WeightMatrix {
        precondition(layout == .rows && kernel.packRows > 0 && kernel.encoding == encoding,
                     "\(name): \(encoding) in \(layout) cannot be interleaved by the \(kernel.encoding) kernel")
        let group = kernel.packRows, groupBytes = group * rowBytes
        let buffer = WeightBuffer(count: (rows + group - 1) / group * groupBytes)
        kernel.body.pack(base, stride, rows, columns, buffer.pointer)
        if rows > 0, let mapping = owner as? MappedFile {
            mapping.releaseResidentPages(UnsafeRawBufferPointer(start: base, count: (rows - 1) * stride + rowBytes))
        }
        return WeightMatrix(encoding: encoding, layout: .interleaved(rowsPerGroup: group), rows: rows, columns: columns,
                            stride: groupBytes, base: UnsafeRawPointer(buffer.pointer), owner: buffer, name: name)
    }
}

public enum WeightSliceError: Error, CustomStringConvertible, Equatable {
    case outOfRange(name: String, axis: String, range: Range<Int>, count: Int)
    case splitsBlock(name: String, range: Range<Int>, encoding: WeightEncoding)
    case splitsGroup(name: String, range: Range<Int>, rowsPerGroup: Int)

    public var description: String {
        switch self {
        case .outOfRange(let name, let axis, let range, let count):
            "\(name): \(axis) \(range.lowerBound)..<\(range.upperBound) requested, it has \(count)"
        case .splitsBlock(let name, let range, let encoding):
            "\(name): columns \(range.lowerBound)..<\(range.upperBound) do not fall on \(encoding) block boundaries (\(encoding.blockSize))"
        case .splitsGroup(let name, let range, let rowsPerGroup):
            "\(name): rows \(range.lowerBound)..<\(range.upperBound) do not fall on the boundaries of its interleaved groups (\(rowsPerGroup) rows)"
        }
    }
}
