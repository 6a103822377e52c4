import Foundation

/// A GGUF (version 2 or 3) model file, memory-mapped: the header, the typed metadata and the
/// tensor directory are parsed once at open; tensor bytes stay in the mapping until a rank
/// asks for its slice.
public struct GGUFFile: Sendable {
    public let url: URL
    public let version: UInt32
    public let metadata: GGUFMetadata
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    /// Byte offset of the tensor data section (aligned to `general.alignment`).
    public let dataOffset: Int
    public let alignment: Int
    let mapping: MappedFile
    private let tensorIndex: [String: Int]

    public static func open(_ url: URL) throws -> GGUFFile {
        let mapping = try MappedFile(url: url)
        var reader = GGUFByteReader(bytes: mapping.bytes, file: url.path)
        let magic = try reader.readUInt32()
        guard magic == 0x4655_4747 else {  // "GGUF" little-endian
            throw GGUFError.notGGUF(file: url.path)
        }
        let version = try reader.readUInt32()
        guard version == 2 || version == 3 else {
            throw GGUFError.unsupportedVersion(file: url.path, version: version)
        }
        let tensorCount = try reader.readCount("tensor count")
        let metadataCount = try reader.readCount("metadata count")

        var entries: [String: GGUFValue] = [:]
        var keys: [String] = []
        keys.reserveCapacity(min(metadataCount, mapping.bytes.count / 16))
        for _ in 0..<metadataCount {
            let key = try reader.readString()
            let typeCode = try reader.readUInt32()
            let value = try reader.readValue(typeCode: typeCode, key: key)
            if entries.updateValue(value, forKey: key) == nil { keys.append(key) }
        }
        let metadata = GGUFMetadata(file: url.path, entries: entries, keys: keys)

        var infos: [GGUFTensorInfo] = []
        infos.reserveCapacity(min(tensorCount, mapping.bytes.count / 32))
        for _ in 0..<tensorCount {
            let name = try reader.readString()
            let dimCount = try reader.readUInt32()
            guard dimCount <= 8 else {
                throw GGUFError.corrupt(file: url.path, detail: "tensor \(name) has \(dimCount) dimensions")
            }
            var dims: [Int] = []
            var elements = 1
            for _ in 0..<dimCount {
                let dim = try reader.readCount("dimension of \(name)")
                let (product, overflow) = elements.multipliedReportingOverflow(by: dim)
                guard !overflow, product <= mapping.bytes.count * 8 else {
                    throw GGUFError.corrupt(file: url.path, detail: "tensor \(name) dimensions \(dims + [dim]) exceed what the file can hold")
                }
                elements = product
                dims.append(dim)
            }
            let typeCode = try reader.readUInt32()
            guard let type = GGMLType(rawValue: typeCode) else {
                throw GGUFError.unsupportedTensorType(file: url.path, tensor: name, type: typeCode)
            }
            // ggml quantises along rows: a row must be whole blocks.
            guard (dims.first ?? 1) % type.blockSize == 0 else {
                throw GGUFError.corrupt(file: url.path, detail: "tensor \(name) rows of \(dims.first ?? 1) elements are not a multiple of the \(type) block size \(type.blockSize)")
            }
            let offset = try reader.readCount("offset of \(name)")
            infos.append(GGUFTensorInfo(name: name, dimensions: dims, type: type, offset: offset))
        }

        let alignment = try metadata.optionalInt("general.alignment") ?? 32
        guard alignment > 0, alignment & (alignment - 1) == 0 else {
            throw GGUFError.corrupt(file: url.path, detail: "general.alignment \(alignment) is not a power of two")
        }
        let dataOffset = (reader.position + alignment - 1) / alignment * alignment
        var index: [String: Int] = [:]
        for (i, info) in infos.enumerated() {
            guard info.offset % alignment == 0 else {
                throw GGUFError.corrupt(file: url.path, detail: "tensor \(info.name) offset \(info.offset) is not aligned to \(alignment)")
            }
            let end = dataOffset + info.offset + info.byteCount
            guard info.offset <= mapping.bytes.count, end <= mapping.bytes.count else {
                throw GGUFError.truncated(file: url.path, detail: "tensor \(info.name) ends at byte \(end), file has \(mapping.bytes.count)")
            }
            guard info.elementCount % info.type.blockSize == 0 else {
                throw GGUFError.corrupt(file: url.path, detail: "tensor \(info.name) has \(info.elementCount) elements, not a multiple of the \(info.type) block size \(info.type.blockSize)")
            }
            index[info.name] = i
        }
        return GGUFFile(url: url, version: version, metadata: metadata, tensors: infos,
                        dataOffset: dataOffset, alignment: alignment, mapping: mapping, tensorIndex: index)
    }

    public func tensor(named name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The raw (possibly quantised) bytes of a tensor, valid as long as this file value lives.
    public func bytes(of tensor: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        let start = mapping.bytes.baseAddress! + dataOffset + tensor.offset
        return UnsafeRawBufferPointer(start: start, count: tensor.byteCount)
    }

    /// Keeps the mapping alive while `body` uses raw tensor bytes.
    public func withBytes<R>(of tensor: GGUFTensorInfo, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(mapping) { try body(bytes(of: tensor)) }
    }

    /// The raw bytes of ggml rows `rows` of a tensor (rows are `dimensions[0]` elements, whole
    /// blocks). `rows` must lie within `0..<tensor.rowCount`.
    public func bytes(of tensor: GGUFTensorInfo, rows: Range<Int>) -> UnsafeRawBufferPointer {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= tensor.rowCount,
                     "rows \(rows) out of range for \(tensor.name) with \(tensor.rowCount) rows")
        let rowBytes = tensor.rowByteCount
        let start = mapping.bytes.baseAddress! + dataOffset + tensor.offset + rows.lowerBound * rowBytes
        return UnsafeRawBufferPointer(start: start, count: rows.count * rowBytes)
    }

    /// Keeps the mapping alive while `body` uses the raw bytes of some rows of a tensor.
    public func withBytes<R>(of tensor: GGUFTensorInfo, rows: Range<Int>,
                             _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(mapping) { try body(bytes(of: tensor, rows: rows)) }
    }
}

public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// ggml order: `dimensions[0]` is the contiguous (innermost) dimension.
    public let dimensions: [Int]
    public let type: GGMLType
    /// Offset from the start of the data section.
    public let offset: Int

    public var elementCount: Int { dimensions.reduce(1, *) }
    public var byteCount: Int { elementCount / type.blockSize * type.bytesPerBlock }
    /// Rows × columns in the row-major sense: a ggml tensor of dims [cols, rows].
    public var rowCount: Int { elementCount / max(dimensions.first ?? 1, 1) }
    public var columnCount: Int { dimensions.first ?? 1 }
    /// Bytes of one ggml row (`columnCount` elements).
    public var rowByteCount: Int { type.byteCount(elements: columnCount) }
}

/// Tensor encodings of ggml (the `type` of a GGUF tensor).
public enum GGMLType: UInt32, Sendable, CustomStringConvertible {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22, iq4_xs = 23
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30
    case tq1_0 = 34, tq2_0 = 35, mxfp4 = 39

    /// Elements per quantisation block (1 for plain types).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16, .i8, .i16, .i32, .i64, .f64: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1, .iq4_nl, .mxfp4: return 32
        default: return 256
        }
    }

    /// Bytes taken by `elements` elements (a whole number of blocks).
    public func byteCount(elements: Int) -> Int { elements / blockSize * bytesPerBlock }

    /// Bytes per block.
    public var bytesPerBlock: Int {
        switch self {
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8: return 1
        case .i64, .f64: return 8
        case .q4_0: return 18
        case .q4_1: return 20
        case .q5_0: return 22
        case .q5_1: return 24
        case .q8_0: return 34
        case .q8_1: return 36
        case .q2_K: return 84
        case .q3_K: return 110
        case .q4_K: return 144
        case .q5_K: return 176
        case .q6_K: return 210
        case .q8_K: return 292
        case .iq2_xxs: return 66
        case .iq2_xs: return 74
        case .iq3_xxs: return 98
        case .iq1_s: return 50
        case .iq4_nl: return 18
        case .iq3_s: return 110
        case .iq2_s: return 82
        case .iq4_xs: return 136
        case .iq1_m: return 56
        case .tq1_0: return 54
        case .tq2_0: return 66
        case .mxfp4: return 17
        }
    }

    public var description: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .bf16: "BF16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q5_0: "Q5_0"
        case .q5_1: "Q5_1"
        case .q8_0: "Q8_0"
        case .q8_1: "Q8_1"
        case .q2_K: "Q2_K"
        case .q3_K: "Q3_K"
        case .q4_K: "Q4_K"
        case .q5_K: "Q5_K"
        case .q6_K: "Q6_K"
        case .q8_K: "Q8_K"
        case .iq2_xxs: "IQ2_XXS"
        case .iq2_xs: "IQ2_XS"
        case .iq3_xxs: "IQ3_XXS"
        case .iq1_s: "IQ1_S"
        case .iq4_nl: "IQ4_NL"
        case .iq3_s: "IQ3_S"
        case .iq2_s: "IQ2_S"
        case .iq4_xs: "IQ4_XS"
        case .i8: "I8"
        case .i16: "I16"
        case .i32: "I32"
        case .i64: "I64"
        case .f64: "F64"
        case .iq1_m: "IQ1_M"
        case .tq1_0: "TQ1_0"
        case .tq2_0: "TQ2_0"
        case .mxfp4: "MXFP4"
        }
    }
}

/// A metadata value. All integer widths are widened to `Int64`, both float widths to `Double`.
public enum GGUFValue: Sendable, Equatable {
    case integer(Int64)
    case float(Double)
    case bool(Bool)
    case string(String)
    case array([GGUFValue])

    var typeName: String {
        switch self {
        case .integer: "integer"
        case .float: "float"
        case .bool: "bool"
        case .string: "string"
        case .array: "array"
        }
    }
}

/// Typed access to GGUF metadata; every failed lookup names the file and the key.
public struct GGUFMetadata: Sendable {
    public let file: String
    public let entries: [String: GGUFValue]
    /// Keys in file order.
    public let keys: [String]

    public subscript(key: String) -> GGUFValue? { entries[key] }

    private func require(_ key: String) throws -> GGUFValue {
        guard let value = entries[key] else { throw GGUFError.missingKey(file: file, key: key) }
        return value
    }

    private func mismatch(_ key: String, _ expected: String, _ value: GGUFValue) -> GGUFError {
        .wrongType(file: file, key: key, expected: expected, found: value.typeName)
    }

    public func string(_ key: String) throws -> String {
        let value = try require(key)
        guard case .string(let s) = value else { throw mismatch(key, "string", value) }
        return s
    }

    public func int(_ key: String) throws -> Int {
        let value = try require(key)
        guard case .integer(let i) = value else { throw mismatch(key, "integer", value) }
        return Int(i)
    }

    public func bool(_ key: String) throws -> Bool {
        let value = try require(key)
        switch value {
        case .bool(let b): return b
        case .integer(let i): return i != 0
        default: throw mismatch(key, "bool", value)
        }
    }

    public func double(_ key: String) throws -> Double {
        let value = try require(key)
        switch value {
        case .float(let d): return d
        case .integer(let i): return Double(i)
        default: throw mismatch(key, "float", value)
        }
    }

    public func stringArray(_ key: String) throws -> [String] {
        let value = try require(key)
        guard case .array(let items) = value else { throw mismatch(key, "array of strings", value) }
        return try items.map { item in
            guard case .string(let s) = item else { throw mismatch(key, "array of strings", item) }
            return s
        }
    }

    public func intArray(_ key: String) throws -> [Int] {
        let value = try require(key)
        guard case .array(let items) = value else { throw mismatch(key, "array of integers", value) }
        return try items.map { item in
            guard case .integer(let i) = item else { throw mismatch(key, "array of integers", item) }
            return Int(i)
        }
    }

    public func floatArray(_ key: String) throws -> [Float] {
        let value = try require(key)
        guard case .array(let items) = value else { throw mismatch(key, "array of floats", value) }
        return try items.map { item in
            switch item {
            case .float(let d): return Float(d)
            case .integer(let i): return Float(i)
            default: throw mismatch(key, "array of floats", item)
            }
        }
    }

    public func optionalString(_ key: String) throws -> String? { entries[key] == nil ? nil : try string(key) }
    public func optionalInt(_ key: String) throws -> Int? { entries[key] == nil ? nil : try int(key) }
    public func optionalBool(_ key: String) throws -> Bool? { entries[key] == nil ? nil : try bool(key) }
    public func optionalDouble(_ key: String) throws -> Double? { entries[key] == nil ? nil : try double(key) }
    public func optionalStringArray(_ key: String) throws -> [String]? { entries[key] == nil ? nil : try stringArray(key) }
    public func optionalIntArray(_ key: String) throws -> [Int]? { entries[key] == nil ? nil : try intArray(key) }
    public func optionalFloatArray(_ key: String) throws -> [Float]? { entries[key] == nil ? nil : try floatArray(key) }
}

public enum GGUFError: Error, CustomStringConvertible, Equatable {
    case notGGUF(file: String)
    case unsupportedVersion(file: String, version: UInt32)
    case truncated(file: String, detail: String)
    case corrupt(file: String, detail: String)
    case unsupportedValueType(file: String, key: String, type: UInt32)
    case unsupportedTensorType(file: String, tensor: String, type: UInt32)
    case missingKey(file: String, key: String)
    case wrongType(file: String, key: String, expected: String, found: String)
    case missingTensor(file: String, tensor: String)
    case unsupportedEncoding(file: String, tensor: String, type: String)
    case shapeMismatch(file: String, tensor: String, expected: [Int], found: [Int])

    public var description: String {
        switch self {
        case .notGGUF(let file):
            "\(file): not a GGUF file (magic bytes are not 'GGUF')"
        case .unsupportedVersion(let file, let version):
            "\(file): GGUF version \(version) is not supported (expected 2 or 3)"
        case .truncated(let file, let detail):
            "\(file): file is truncated: \(detail)"
        case .corrupt(let file, let detail):
            "\(file): corrupt GGUF: \(detail)"
        case .unsupportedValueType(let file, let key, let type):
            "\(file): metadata key '\(key)' has unknown value type \(type)"
        case .unsupportedTensorType(let file, let tensor, let type):
            "\(file): tensor '\(tensor)' has unknown ggml type \(type)"
        case .missingKey(let file, let key):
            "\(file): metadata key '\(key)' is missing"
        case .wrongType(let file, let key, let expected, let found):
            "\(file): metadata key '\(key)' should be \(expected), found \(found)"
        case .missingTensor(let file, let tensor):
            "\(file): tensor '\(tensor)' is missing"
        case .unsupportedEncoding(let file, let tensor, let type):
            "\(file): tensor '\(tensor)' is stored as \(type), which this build cannot decode"
        case .shapeMismatch(let file, let tensor, let expected, let found):
            "\(file): tensor '\(tensor)' has shape \(found), expected \(expected)"
        }
    }
}

/// Little-endian cursor over the mapped header; every read is bounds-checked.
struct GGUFByteReader {
    let bytes: UnsafeRawBufferPointer
    let file: String
    private(set) var position = 0

    init(bytes: UnsafeRawBufferPointer, file: String) {
        self.bytes = bytes
        self.file = file
    }

    private mutating func take(_ count: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        guard count >= 0, position + count <= bytes.count else {
            throw GGUFError.truncated(file: file, detail: "reading \(what()) at byte \(position)")
        }
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + count)])
    }

    private mutating func scalar<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let raw = try take(MemoryLayout<T>.size, "\(T.self)")
        return T(littleEndian: raw.loadUnaligned(as: T.self))
    }

    mutating func readUInt32() throws -> UInt32 { try scalar(UInt32.self) }

    mutating func readCount(_ what: String) throws -> Int {
        let value = try scalar(UInt64.self)
        guard value <= UInt64(bytes.count) * 8 else {
            throw GGUFError.corrupt(file: file, detail: "\(what) \(value) is larger than the file allows")
        }
        return Int(value)
    }

    mutating func readString() throws -> String {
        let length = try readCount("string length")
        let raw = try take(length, "string of \(length) bytes")
        return String(decoding: raw, as: UTF8.self)
    }

    mutating func readValue(typeCode: UInt32, key: String) throws -> GGUFValue {
        switch typeCode {
        case 0: return .integer(Int64(try scalar(UInt8.self)))
        case 1: return .integer(Int64(try scalar(Int8.self)))
        case 2: return .integer(Int64(try scalar(UInt16.self)))
        case 3: return .integer(Int64(try scalar(Int16.self)))
        case 4: return .integer(Int64(try scalar(UInt32.self)))
        case 5: return .integer(Int64(try scalar(Int32.self)))
        case 6: return .float(Double(Float(bitPattern: try scalar(UInt32.self))))
        case 7: return .bool(try scalar(UInt8.self) != 0)
        case 8: return .string(try readString())
        case 9:
            let elementType = try readUInt32()
            let count = try readCount("array length of \(key)")
            var items: [GGUFValue] = []
            items.reserveCapacity(min(count, bytes.count - position))
            for _ in 0..<count {
                items.append(try readValue(typeCode: elementType, key: key))
            }
            return .array(items)
        case 10: return .integer(Int64(bitPattern: try scalar(UInt64.self)))
        case 11: return .integer(try scalar(Int64.self))
        case 12: return .float(Double(bitPattern: try scalar(UInt64.self)))
        default:
            throw GGUFError.unsupportedValueType(file: file, key: key, type: typeCode)
        }
    }
}
