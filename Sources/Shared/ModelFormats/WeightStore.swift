import Foundation

/// How a tensor's elements are stored. Plain float and integer encodings are named the same
/// whichever file they come from; the block-quantised ggml encodings keep their ggml type.
public enum TensorEncoding: Sendable, Hashable, CustomStringConvertible {
    case f32, f16, bf16, f64
    case i64, i32, i16, i8, u8, bool
    case ggml(GGMLType)

    /// The encoding of a GGUF tensor type: plain types map to the plain cases.
    public init(_ type: GGMLType) {
        switch type {
        case .f32: self = .f32
        case .f16: self = .f16
        case .bf16: self = .bf16
        case .f64: self = .f64
        case .i64: self = .i64
        case .i32: self = .i32
        case .i16: self = .i16
        case .i8: self = .i8
        default: self = .ggml(type)
        }
    }

    /// Elements per block (1 for plain encodings).
    public var blockSize: Int {
        if case .ggml(let type) = self { return type.blockSize }
        return 1
    }

    /// Bytes per block (the element size for plain encodings).
    public var bytesPerBlock: Int {
        switch self {
        case .f64, .i64: 8
        case .f32, .i32: 4
        case .f16, .bf16, .i16: 2
        case .i8, .u8, .bool: 1
        case .ggml(let type): type.bytesPerBlock
        }
    }

    /// Bytes taken by `elements` elements (a whole number of blocks).
    public func byteCount(elements: Int) -> Int { elements / blockSize * bytesPerBlock }

    /// Whether `floats` can decode this encoding. Integer and boolean tensors convert exactly
    /// (up to Float's 24-bit mantissa); they are model metadata more than weights.
    public var canDecodeToFloat: Bool {
        if case .ggml(let type) = self { return Dequantizer.canDecode(type) }
        return true
    }

    public var description: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .bf16: "BF16"
        case .f64: "F64"
        case .i64: "I64"
        case .i32: "I32"
        case .i16: "I16"
        case .i8: "I8"
        case .u8: "U8"
        case .bool: "BOOL"
        case .ggml(let type): type.description
        }
    }

    /// Decodes `count` elements (whole blocks) from `src` into `dst`.
    func decode(_ src: UnsafeRawBufferPointer, count: Int, into dst: UnsafeMutableBufferPointer<Float>) throws {
        precondition(src.count >= byteCount(elements: count) && dst.count >= count)
        guard count > 0 else { return }
        let s = src.baseAddress!
        let d = dst.baseAddress!
        switch self {
        case .f32: try Dequantizer.dequantize(type: .f32, bytes: src, count: count, into: dst)
        case .f16: try Dequantizer.dequantize(type: .f16, bytes: src, count: count, into: dst)
        case .bf16: try Dequantizer.dequantize(type: .bf16, bytes: src, count: count, into: dst)
        case .ggml(let type): try Dequantizer.dequantize(type: type, bytes: src, count: count, into: dst)
        case .f64:
            for i in 0..<count { d[i] = Float(Double(bitPattern: s.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self).littleEndian)) }
        case .i64:
            for i in 0..<count { d[i] = Float(Int64(littleEndian: s.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
        case .i32:
            for i in 0..<count { d[i] = Float(Int32(littleEndian: s.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
        case .i16:
            for i in 0..<count { d[i] = Float(Int16(littleEndian: s.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) }
        case .i8:
            for i in 0..<count { d[i] = Float(s.load(fromByteOffset: i, as: Int8.self)) }
        case .u8:
            for i in 0..<count { d[i] = Float(s.load(fromByteOffset: i, as: UInt8.self)) }
        case .bool:
            for i in 0..<count { d[i] = s.load(fromByteOffset: i, as: UInt8.self) != 0 ? 1 : 0 }
        }
    }
}

/// A tensor as model code sees it: PyTorch (row-major) shape, whatever the file's own order.
/// A Linear weight is `[out, in]`.
public struct TensorDescriptor: Sendable, Hashable {
    public let name: String
    public let shape: [Int]
    public let encoding: TensorEncoding

    public init(name: String, shape: [Int], encoding: TensorEncoding) {
        self.name = name
        self.shape = shape
        self.encoding = encoding
    }

    public var elementCount: Int { shape.reduce(1, *) }
    /// Size of the outermost dimension (1 for a scalar): what `rows` slices.
    public var rowCount: Int { shape.first ?? 1 }
    /// Elements per outermost slice.
    public var elementsPerRow: Int { shape.dropFirst().reduce(1, *) }
}

/// Named tensors of one model, from whichever file format, decoded on request. Reads go through
/// memory mappings: a rank that asks for its rows pages in only those rows.
public protocol WeightStore: Sendable {
    /// The file or directory the tensors come from.
    var path: String { get }
    /// Tensor names as the files spell them, in file order.
    var tensorNames: [String] { get }
    func descriptor(_ name: String) -> TensorDescriptor?
    /// Decodes rows `rows` (of the outermost dimension; all when nil) of tensor `name` into
    /// `output[0..<rows.count * elementsPerRow]`, row-major.
    func readFloats(_ name: String, rows: Range<Int>?, into output: UnsafeMutableBufferPointer<Float>) throws
    /// The stored (possibly quantised) bytes of rows `rows` of tensor `name`, valid inside `body`.
    /// For block encodings the rows must start and end on block boundaries.
    func withEncodedBytes<R>(_ name: String, rows: Range<Int>?,
                             _ body: (UnsafeRawBufferPointer, TensorDescriptor) throws -> R) throws -> R
    /// The stored bytes of a whole tensor inside its file's memory mapping, for weights that are
    /// used where they lie instead of being copied.
    func mappedTensor(_ name: String) throws -> MappedTensor
}

/// A tensor's stored bytes in a memory-mapped file, kept valid by holding the mapping.
public struct MappedTensor: @unchecked Sendable {
    public let descriptor: TensorDescriptor
    /// Read-only; valid while `mapping` lives.
    public let bytes: UnsafeRawBufferPointer
    public let mapping: MappedFile
    /// The file, for messages.
    public var file: String { mapping.path }
}

extension WeightStore {
    public func contains(_ name: String) -> Bool { descriptor(name) != nil }

    public func requireDescriptor(_ name: String) throws -> TensorDescriptor {
        guard let descriptor = descriptor(name) else {
            throw WeightStoreError.missingTensor(file: path, tensor: name)
        }
        return descriptor
    }

    /// Rows `rows` of the outermost dimension (all when nil), decoded, row-major.
    public func floats(_ name: String, rows: Range<Int>? = nil) throws -> [Float] {
        let descriptor = try requireDescriptor(name)
        let count = (rows?.count ?? descriptor.rowCount) * descriptor.elementsPerRow
        return try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            try readFloats(name, rows: rows, into: buffer)
            initialized = count
        }
    }

    /// A rectangle of a tensor viewed as a matrix `[shape[0], elementsPerRow]`: rows `rows`
    /// (all when nil), columns `columns`. Use it for the input-dimension split of a row-parallel
    /// Linear (`[out, in]` sliced along `in`). Whole rows are decoded one at a time.
    public func floats(_ name: String, rows: Range<Int>?, columns: Range<Int>) throws -> [Float] {
        let descriptor = try requireDescriptor(name)
        let width = descriptor.elementsPerRow
        let rowRange = rows ?? 0..<descriptor.rowCount
        guard columns.lowerBound >= 0, columns.upperBound <= width else {
            throw WeightStoreError.columnsOutOfRange(file: path, tensor: name, columns: columns, columnCount: width)
        }
        var scratch = [Float](repeating: 0, count: width)
        var result = [Float](repeating: 0, count: rowRange.count * columns.count)
        try scratch.withUnsafeMutableBufferPointer { row in
            try result.withUnsafeMutableBufferPointer { out in
                for (i, r) in rowRange.enumerated() {
                    try readFloats(name, rows: r..<(r + 1), into: row)
                    let target = out.baseAddress! + i * columns.count
                    target.update(from: row.baseAddress! + columns.lowerBound, count: columns.count)
                }
            }
        }
        return result
    }
}

/// Shared slicing logic: the bytes of rows `rows` of a tensor whose whole stored bytes are `all`.
func encodedRows(file: String, descriptor: TensorDescriptor, all: UnsafeRawBufferPointer,
                 rows: Range<Int>?) throws -> (bytes: UnsafeRawBufferPointer, elements: Int) {
    let rowRange = rows ?? 0..<descriptor.rowCount
    guard rowRange.lowerBound >= 0, rowRange.upperBound <= descriptor.rowCount else {
        throw WeightStoreError.rowsOutOfRange(file: file, tensor: descriptor.name, rows: rowRange,
                                              rowCount: descriptor.rowCount)
    }
    let encoding = descriptor.encoding
    let firstElement = rowRange.lowerBound * descriptor.elementsPerRow
    let elements = rowRange.count * descriptor.elementsPerRow
    guard firstElement % encoding.blockSize == 0, elements % encoding.blockSize == 0 else {
        throw WeightStoreError.rowsSplitBlock(file: file, tensor: descriptor.name, rows: rowRange,
                                              encoding: encoding)
    }
    let start = encoding.byteCount(elements: firstElement)
    let count = encoding.byteCount(elements: elements)
    precondition(start + count <= all.count)
    return (UnsafeRawBufferPointer(rebasing: all[start..<(start + count)]), elements)
}

/// Shared decoding logic for `readFloats`.
func decodeRows(file: String, descriptor: TensorDescriptor, all: UnsafeRawBufferPointer, rows: Range<Int>?,
                into output: UnsafeMutableBufferPointer<Float>) throws {
    guard descriptor.encoding.canDecodeToFloat else {
        throw WeightStoreError.cannotDecode(file: file, tensor: descriptor.name, encoding: descriptor.encoding)
    }
    let (bytes, elements) = try encodedRows(file: file, descriptor: descriptor, all: all, rows: rows)
    guard output.count >= elements else {
        throw WeightStoreError.outputTooSmall(file: file, tensor: descriptor.name, needed: elements, available: output.count)
    }
    try descriptor.encoding.decode(bytes, count: elements, into: output)
}

public enum WeightStoreError: Error, CustomStringConvertible, Equatable {
    case missingTensor(file: String, tensor: String)
    case rowsOutOfRange(file: String, tensor: String, rows: Range<Int>, rowCount: Int)
    case columnsOutOfRange(file: String, tensor: String, columns: Range<Int>, columnCount: Int)
    case rowsSplitBlock(file: String, tensor: String, rows: Range<Int>, encoding: TensorEncoding)
    case cannotDecode(file: String, tensor: String, encoding: TensorEncoding)
    case outputTooSmall(file: String, tensor: String, needed: Int, available: Int)

    public var description: String {
        switch self {
        case .missingTensor(let file, let tensor):
            "\(file): tensor '\(tensor)' is missing"
        case .rowsOutOfRange(let file, let tensor, let rows, let rowCount):
            "\(file): rows \(rows.lowerBound)..<\(rows.upperBound) of tensor '\(tensor)' requested, it has \(rowCount)"
        case .columnsOutOfRange(let file, let tensor, let columns, let columnCount):
            "\(file): columns \(columns.lowerBound)..<\(columns.upperBound) of tensor '\(tensor)' requested, it has \(columnCount)"
        case .rowsSplitBlock(let file, let tensor, let rows, let encoding):
            "\(file): rows \(rows.lowerBound)..<\(rows.upperBound) of tensor '\(tensor)' do not fall on \(encoding) block boundaries (\(encoding.blockSize) elements)"
        case .cannotDecode(let file, let tensor, let encoding):
            "\(file): tensor '\(tensor)' is stored as \(encoding), which this build cannot decode"
        case .outputTooSmall(let file, let tensor, let needed, let available):
            "\(file): tensor '\(tensor)': output holds \(available) floats, \(needed) needed"
        }
    }
}

/// A GGUF file as a weight store. Shapes are the GGUF dimensions reversed (PyTorch order);
/// names are the GGUF names (`blk.0.attn_q.weight`). Note that llama.cpp's converters permute
/// the rows of Q and K projections of llama-family models for their RoPE layout.
public struct GGUFWeightStore: WeightStore {
    public let file: GGUFFile
    public let tensorNames: [String]

    public init(file: GGUFFile) {
        self.file = file
        tensorNames = file.tensors.map(\.name)
    }

    public init(url: URL) throws { self.init(file: try GGUFFile.open(url)) }

    public var path: String { file.url.path }

    public func descriptor(_ name: String) -> TensorDescriptor? {
        file.tensor(named: name).map(Self.descriptor(of:))
    }

    static func descriptor(of info: GGUFTensorInfo) -> TensorDescriptor {
        TensorDescriptor(name: info.name, shape: info.dimensions.reversed(), encoding: TensorEncoding(info.type))
    }

    private func info(_ name: String) throws -> GGUFTensorInfo {
        guard let info = file.tensor(named: name) else { throw WeightStoreError.missingTensor(file: path, tensor: name) }
        return info
    }

    public func readFloats(_ name: String, rows: Range<Int>?, into output: UnsafeMutableBufferPointer<Float>) throws {
        let info = try info(name)
        try file.withBytes(of: info) { all in
            try decodeRows(file: path, descriptor: Self.descriptor(of: info), all: all, rows: rows, into: output)
        }
    }

    public func mappedTensor(_ name: String) throws -> MappedTensor {
        let info = try info(name)
        return MappedTensor(descriptor: Self.descriptor(of: info), bytes: file.bytes(of: info), mapping: file.mapping)
    }

    public func withEncodedBytes<R>(_ name: String, rows: Range<Int>?,
                                    _ body: (UnsafeRawBufferPointer, TensorDescriptor) throws -> R) throws -> R {
        let info = try info(name)
        let descriptor = Self.descriptor(of: info)
        return try file.withBytes(of: info) { all in
            let (bytes, _) = try encodedRows(file: path, descriptor: descriptor, all: all, rows: rows)
            return try body(bytes, descriptor)
        }
    }
}
