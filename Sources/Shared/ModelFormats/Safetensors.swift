import Foundation

/// One `.safetensors` file, memory-mapped: an 8-byte little-endian header length, a JSON header
/// (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then
/// the tensor bytes, offsets relative to the end of the header. Every tensor's extent is checked
/// against its dtype, its shape and the file size at open.
public struct SafetensorsFile: Sendable {
    public let url: URL
    /// The `__metadata__` string map (e.g. `format: pt`).
    public let metadata: [String: String]
    /// Tensors in the order of their data.
    public let tensors: [SafetensorsTensorInfo]
    /// Byte offset of the data section (8 + header length).
    public let dataOffset: Int
    let mapping: MappedFile
    private let tensorIndex: [String: Int]

    /// The largest header accepted; real headers are a few hundred KB.
    static let maximumHeaderLength = 100_000_000

    public static func open(_ url: URL) throws -> SafetensorsFile {
        let path = url.path
        let mapping: MappedFile
        do { mapping = try MappedFile(url: url) } catch MappedFileError.empty {
            throw SafetensorsError.truncated(file: path, detail: "the file is empty")
        }
        let bytes = mapping.bytes
        guard bytes.count >= 8 else {
            throw SafetensorsError.truncated(file: path, detail: "\(bytes.count) bytes, shorter than the 8-byte header length")
        }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(maximumHeaderLength) else {
            throw SafetensorsError.badHeader(file: path, detail: "header length \(headerLength) is implausible (not a safetensors file?)")
        }
        guard 8 + Int(headerLength) <= bytes.count else {
            throw SafetensorsError.truncated(file: path, detail: "header of \(headerLength) bytes, file has \(bytes.count)")
        }
        let dataOffset = 8 + Int(headerLength)
        let dataSize = bytes.count - dataOffset
        let headerData = Data(bytes: bytes.baseAddress! + 8, count: dataOffset - 8)
        let header: ModelJSON
        do { header = try ModelJSON.parse(headerData, source: path) } catch let error as ModelJSONError {
            throw SafetensorsError.badHeader(file: path, detail: error.description)
        }
        guard case .object(let entries) = header else {
            throw SafetensorsError.badHeader(file: path, detail: "the header is not a JSON object")
        }

        var metadata: [String: String] = [:]
        var infos: [SafetensorsTensorInfo] = []
        infos.reserveCapacity(entries.count)
        for (name, entry) in entries {
            if name == "__metadata__" {
                guard case .object(let members) = entry else {
                    throw SafetensorsError.badHeader(file: path, detail: "__metadata__ is not an object")
                }
                for (key, value) in members {
                    guard let s = value.stringValue else {
                        throw SafetensorsError.badHeader(file: path, detail: "__metadata__ value '\(key)' is not a string")
                    }
                    metadata[key] = s
                }
                continue
            }
            infos.append(try parseTensor(name: name, entry: entry, file: path, dataOffset: dataOffset, dataSize: dataSize))
        }
        infos.sort { ($0.byteRange.lowerBound, $0.name) < ($1.byteRange.lowerBound, $1.name) }
        var index: [String: Int] = [:]
        for (i, info) in infos.enumerated() {
            if i > 0, info.byteRange.lowerBound < infos[i - 1].byteRange.upperBound {
                throw SafetensorsError.badTensor(file: path, tensor: info.name,
                                                 detail: "its data overlaps tensor '\(infos[i - 1].name)'")
            }
            index[info.name] = i
        }
        return SafetensorsFile(url: url, metadata: metadata, tensors: infos, dataOffset: dataOffset,
                               mapping: mapping, tensorIndex: index)
    }

    private static func parseTensor(name: String, entry: ModelJSON, file: String,
                                    dataOffset: Int, dataSize: Int) throws -> SafetensorsTensorInfo {
        func bad(_ detail: String) -> SafetensorsError { .badTensor(file: file, tensor: name, detail: detail) }
        guard let dtypeName = entry["dtype"]?.stringValue else { throw bad("no string 'dtype'") }
        guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
            throw SafetensorsError.unsupportedDType(file: file, tensor: name, dtype: dtypeName)
        }
        guard let shapeValues = entry["shape"]?.arrayValue else { throw bad("no array 'shape'") }
        var shape: [Int] = []
        var elements = 1
        for value in shapeValues {
            guard let dim = value.intValue, dim >= 0 else { throw bad("shape \(entry["shape"]!) has a non-integer or negative dimension") }
            let (product, overflow) = elements.multipliedReportingOverflow(by: dim)
            guard !overflow else { throw bad("shape \(entry["shape"]!) overflows") }
            elements = product
            shape.append(dim)
        }
        guard let offsets = entry["data_offsets"]?.arrayValue, offsets.count == 2,
              let begin = offsets[0].intValue, let end = offsets[1].intValue else {
            throw bad("no 'data_offsets' pair of integers")
        }
        guard 0 <= begin, begin <= end else { throw bad("data_offsets [\(begin), \(end)] are reversed or negative") }
        guard end <= dataSize else {
            throw SafetensorsError.truncated(file: file, detail: "tensor '\(name)' ends at data byte \(end), the data section has \(dataSize)")
        }
        let (expected, overflow) = elements.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, end - begin == expected else {
            throw bad("data_offsets [\(begin), \(end)] hold \(end - begin) bytes, shape \(shape) of \(dtype.rawValue) needs \(elements) × \(dtype.byteSize)")
        }
        return SafetensorsTensorInfo(name: name, dtype: dtype, shape: shape,
                                     byteRange: (dataOffset + begin)..<(dataOffset + end))
    }

    public func tensor(named name: String) -> SafetensorsTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The raw bytes of a tensor, valid as long as this file value lives.
    public func bytes(of tensor: SafetensorsTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: mapping.bytes[tensor.byteRange])
    }

    /// Keeps the mapping alive while `body` uses raw tensor bytes.
    public func withBytes<R>(of tensor: SafetensorsTensorInfo, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(mapping) { try body(bytes(of: tensor)) }
    }

    /// Decodes rows `rows` (outermost dimension; all when nil) of `name` into `output`.
    public func readFloats(_ name: String, rows: Range<Int>? = nil, into output: UnsafeMutableBufferPointer<Float>) throws {
        guard let info = tensor(named: name) else { throw WeightStoreError.missingTensor(file: url.path, tensor: name) }
        try withBytes(of: info) { all in
            try decodeRows(file: url.path, descriptor: info.descriptor, all: all, rows: rows, into: output)
        }
    }

    /// Rows `rows` (outermost dimension; all when nil) of `name`, decoded to Float, row-major.
    public func floats(_ name: String, rows: Range<Int>? = nil) throws -> [Float] {
        guard let info = tensor(named: name) else { throw WeightStoreError.missingTensor(file: url.path, tensor: name) }
        let count = (rows?.count ?? info.descriptor.rowCount) * info.descriptor.elementsPerRow
        return try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            try readFloats(name, rows: rows, into: buffer)
            initialized = count
        }
    }
}

/// Element types of safetensors files that this reader understands. F32, F16 and BF16 are
/// weights; the integer and boolean types appear as buffers (e.g. position ids) and are read
/// exactly as Float.
public enum SafetensorsDType: String, Sendable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"

    public var byteSize: Int {
        switch self {
        case .f64, .i64: 8
        case .f32, .i32: 4
        case .f16, .bf16, .i16: 2
        case .i8, .u8, .bool: 1
        }
    }

    public var encoding: TensorEncoding {
        switch self {
        case .f64: .f64
        case .f32: .f32
        case .f16: .f16
        case .bf16: .bf16
        case .i64: .i64
        case .i32: .i32
        case .i16: .i16
        case .i8: .i8
        case .u8: .u8
        case .bool: .bool
        }
    }
}

public struct SafetensorsTensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: SafetensorsDType
    /// Row-major (PyTorch) shape.
    public let shape: [Int]
    /// Absolute byte range in the file.
    public let byteRange: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
    public var descriptor: TensorDescriptor { TensorDescriptor(name: name, shape: shape, encoding: dtype.encoding) }
}

public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    case truncated(file: String, detail: String)
    case badHeader(file: String, detail: String)
    case badTensor(file: String, tensor: String, detail: String)
    case unsupportedDType(file: String, tensor: String, dtype: String)
    case badIndex(file: String, detail: String)
    case noWeights(directory: String)
    case duplicateTensor(tensor: String, firstFile: String, secondFile: String)

    public var description: String {
        switch self {
        case .truncated(let file, let detail):
            "\(file): safetensors file is truncated: \(detail)"
        case .badHeader(let file, let detail):
            "\(file): bad safetensors header: \(detail)"
        case .badTensor(let file, let tensor, let detail):
            "\(file): tensor '\(tensor)': \(detail)"
        case .unsupportedDType(let file, let tensor, let dtype):
            "\(file): tensor '\(tensor)' has dtype \(dtype), which is not supported (supported: \(SafetensorsDType.allCases.map(\.rawValue).joined(separator: ", ")))"
        case .badIndex(let file, let detail):
            "\(file): bad safetensors index: \(detail)"
        case .noWeights(let directory):
            "\(directory): no model.safetensors.index.json and no *.safetensors files"
        case .duplicateTensor(let tensor, let firstFile, let secondFile):
            "tensor '\(tensor)' appears in both \(firstFile) and \(secondFile)"
        }
    }
}

/// One safetensors file, or the shards of a model directory, as a weight store.
public struct SafetensorsWeightStore: WeightStore {
    public let path: String
    public let files: [SafetensorsFile]
    public let tensorNames: [String]
    /// Tensor name → (file index, tensor info).
    private let locations: [String: (file: Int, info: SafetensorsTensorInfo)]

    public static let indexFileName = "model.safetensors.index.json"

    /// A single `.safetensors` file.
    public init(file url: URL) throws {
        try self.init(path: url.path, files: [SafetensorsFile.open(url)], indexURL: nil, weightMap: nil)
    }

    /// A model directory: the shards named by `model.safetensors.index.json` when present,
    /// otherwise every `*.safetensors` file in it.
    public init(directory: URL) throws {
        let indexURL = directory.appendingPathComponent(Self.indexFileName)
        if FileManager.default.fileExists(atPath: indexURL.path) {
            let weightMap = try Self.readWeightMap(indexURL)
            let shardNames = Array(Set(weightMap.values)).sorted()
            let files = try shardNames.map { try SafetensorsFile.open(directory.appendingPathComponent($0)) }
            try self.init(path: directory.path, files: files, indexURL: indexURL, weightMap: weightMap)
        } else {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            let shards = names.filter { $0.hasSuffix(".safetensors") }.sorted()
            guard !shards.isEmpty else { throw SafetensorsError.noWeights(directory: directory.path) }
            let files = try shards.map { try SafetensorsFile.open(directory.appendingPathComponent($0)) }
            try self.init(path: directory.path, files: files, indexURL: nil, weightMap: nil)
        }
    }

    static func readWeightMap(_ indexURL: URL) throws -> [String: String] {
        let index: ModelJSON
        do { index = try ModelJSON.parse(contentsOf: indexURL) } catch let error as ModelJSONError {
            throw SafetensorsError.badIndex(file: indexURL.path, detail: error.description)
        }
        guard let map = index["weight_map"]?.objectValue else {
            throw SafetensorsError.badIndex(file: indexURL.path, detail: "no 'weight_map' object")
        }
        var weightMap: [String: String] = [:]
        for (tensor, shard) in map {
            guard let shardName = shard.stringValue, !shardName.isEmpty, !shardName.contains("/") else {
                throw SafetensorsError.badIndex(file: indexURL.path, detail: "tensor '\(tensor)' maps to \(shard), not a file name")
            }
            weightMap[tensor] = shardName
        }
        return weightMap
    }

    private init(path: String, files: [SafetensorsFile], indexURL: URL?, weightMap: [String: String]?) throws {
        var locations: [String: (file: Int, info: SafetensorsTensorInfo)] = [:]
        var names: [String] = []
        for (i, file) in files.enumerated() {
            for info in file.tensors {
                if let previous = locations[info.name] {
                    throw SafetensorsError.duplicateTensor(tensor: info.name, firstFile: files[previous.file].url.path,
                                                           secondFile: file.url.path)
                }
                locations[info.name] = (i, info)
                names.append(info.name)
            }
        }
        if let weightMap, let indexURL {
            for (tensor, shard) in weightMap.sorted(by: { $0.key < $1.key }) {
                guard let location = locations[tensor] else {
                    throw SafetensorsError.badIndex(file: indexURL.path, detail: "tensor '\(tensor)' is not in its shard \(shard)")
                }
                let actual = files[location.file].url.lastPathComponent
                guard actual == shard else {
                    throw SafetensorsError.badIndex(file: indexURL.path, detail: "tensor '\(tensor)' is listed in \(shard) but stored in \(actual)")
                }
            }
        }
        self.path = path
        self.files = files
        self.tensorNames = names
        self.locations = locations
    }

    public func descriptor(_ name: String) -> TensorDescriptor? { locations[name]?.info.descriptor }

    /// The file that holds `name`.
    public func file(containing name: String) -> SafetensorsFile? { locations[name].map { files[$0.file] } }

    private func locate(_ name: String) throws -> (SafetensorsFile, SafetensorsTensorInfo) {
        guard let location = locations[name] else { throw WeightStoreError.missingTensor(file: path, tensor: name) }
        return (files[location.file], location.info)
    }

    public func readFloats(_ name: String, rows: Range<Int>?, into output: UnsafeMutableBufferPointer<Float>) throws {
        let (file, info) = try locate(name)
        try file.withBytes(of: info) { all in
            try decodeRows(file: file.url.path, descriptor: info.descriptor, all: all, rows: rows, into: output)
        }
    }

    public func mappedTensor(_ name: String) throws -> MappedTensor {
        let (file, info) = try locate(name)
        return MappedTensor(descriptor: info.descriptor, bytes: file.bytes(of: info), mapping: file.mapping)
    }

    public func withEncodedBytes<R>(_ name: String, rows: Range<Int>?,
                                    _ body: (UnsafeRawBufferPointer, TensorDescriptor) throws -> R) throws -> R {
        let (file, info) = try locate(name)
        let descriptor = info.descriptor
        return try file.withBytes(of: info) { all in
            let (bytes, _) = try encodedRows(file: file.url.path, descriptor: descriptor, all: all, rows: rows)
            return try body(bytes, descriptor)
        }
    }
}
