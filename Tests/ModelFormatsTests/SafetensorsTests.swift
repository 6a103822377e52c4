import Foundation
import Testing
@testable import ModelFormats

/// The fixture script fills every tensor with (arange(n) - n/2) * 0.25, exact in F32/F16/BF16.
private func pattern(_ count: Int) -> [Float] {
    (0..<count).map { Float($0 - count / 2) * 0.25 }
}

/// A minimal safetensors file: header JSON then data bytes.
private func safetensorsData(header: String, data: [UInt8]) -> Data {
    var out = Data()
    withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { out.append(contentsOf: $0) }
    out.append(contentsOf: Array(header.utf8))
    out.append(contentsOf: data)
    return out
}

@Suite("Safetensors reader")
struct SafetensorsTests {
    @Test("single file: dtypes, shapes, metadata and values")
    func singleFile() throws {
        let file = try SafetensorsFile.open(Fixtures.url("single.safetensors"))
        #expect(file.metadata["format"] == "pt")
        let names = Set(file.tensors.map(\.name))
        #expect(names == ["embed.weight", "layer.q.weight", "layer.norm.weight", "position_ids", "experts.w"])
        #expect(file.tensor(named: "layer.q.weight")?.dtype == .f16)
        #expect(file.tensor(named: "layer.q.weight")?.shape == [6, 8])
        #expect(file.tensor(named: "layer.norm.weight")?.dtype == .bf16)
        #expect(file.tensor(named: "position_ids")?.dtype == .i64)
        #expect(try file.floats("embed.weight") == pattern(20))
        #expect(try file.floats("layer.q.weight") == pattern(48))
        #expect(try file.floats("layer.norm.weight") == pattern(8))
        #expect(try file.floats("position_ids") == (0..<7).map(Float.init))
    }

    @Test("weight store over one file: descriptors and row slices")
    func singleStore() throws {
        let store = try SafetensorsWeightStore(file: Fixtures.url("single.safetensors"))
        let q = try #require(store.descriptor("layer.q.weight"))
        #expect(q.shape == [6, 8] && q.encoding == .f16 && q.rowCount == 6 && q.elementsPerRow == 8)
        #expect(try store.floats("layer.q.weight", rows: 2..<4) == Array(pattern(48)[16..<32]))
        #expect(try store.floats("experts.w", rows: 1..<2) == Array(pattern(24)[12..<24]))
        #expect(try store.floats("layer.q.weight", rows: nil, columns: 2..<5)
                == (0..<6).flatMap { r in pattern(48)[(r * 8 + 2)..<(r * 8 + 5)] })
        let bytes = try store.withEncodedBytes("layer.q.weight", rows: 1..<2) { raw, descriptor in
            (raw.count, descriptor.encoding)
        }
        #expect(bytes.0 == 16 && bytes.1 == .f16)
        let outOfRange = errorDescription { _ = try store.floats("layer.q.weight", rows: 5..<7) }
        #expect(outOfRange.contains("single.safetensors") && outOfRange.contains("layer.q.weight") && outOfRange.contains("5..<7"))
        let missing = errorDescription { _ = try store.floats("no.such.weight") }
        #expect(missing.contains("single.safetensors") && missing.contains("no.such.weight"))
    }

    @Test("sharded directory: the index maps every tensor to its shard")
    func sharded() throws {
        let directory = try Fixtures.directory("sharded")
        let store = try SafetensorsWeightStore(directory: directory)
        #expect(store.files.count == 2)
        #expect(Set(store.tensorNames) == ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight",
                                           "model.norm.weight", "lm_head.weight"])
        #expect(store.descriptor("model.embed_tokens.weight")?.encoding == .bf16)
        #expect(store.descriptor("model.layers.0.mlp.up_proj.weight")?.shape == [10, 6])
        #expect(try store.floats("model.layers.0.mlp.up_proj.weight", rows: 5..<10) == Array(pattern(60)[30...]))
        #expect(try store.floats("model.norm.weight") == pattern(6))
        #expect(try store.floats("lm_head.weight") == pattern(24))
        #expect(store.file(containing: "lm_head.weight")?.url.lastPathComponent == "model-00002-of-00002.safetensors")
    }

    @Test("an index naming a tensor its shard lacks is reported")
    func badIndex() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let source = try Fixtures.directory("sharded")
        for name in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] {
            try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: dir.url.appendingPathComponent(name))
        }
        let index = #"{"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors", "ghost.weight": "model-00001-of-00002.safetensors"}}"#
        let indexURL = try dir.file("model.safetensors.index.json", Data(index.utf8))
        let error = errorDescription { _ = try SafetensorsWeightStore(directory: dir.url) }
        #expect(error.contains(indexURL.path) && error.contains("ghost.weight"))
    }

    @Test("truncated, malformed and unsupported files name the file and tensor")
    func corruptFiles() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let original = try Data(contentsOf: Fixtures.url("single.safetensors"))

        let cut = try dir.file("cut.safetensors", original.dropLast(10))
        let cutError = errorDescription { _ = try SafetensorsFile.open(cut) }
        #expect(cutError.contains(cut.path) && cutError.contains("truncated"))

        let headerCut = try dir.file("headercut.safetensors", original.prefix(40))
        #expect(errorDescription { _ = try SafetensorsFile.open(headerCut) }.contains(headerCut.path))

        let garbage = try dir.file("garbage.safetensors", safetensorsData(header: "{not json", data: []))
        let garbageError = errorDescription { _ = try SafetensorsFile.open(garbage) }
        #expect(garbageError.contains(garbage.path) && garbageError.contains("header"))

        let fp8 = try dir.file("fp8.safetensors", safetensorsData(
            header: #"{"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}"#, data: [0, 0]))
        let fp8Error = errorDescription { _ = try SafetensorsFile.open(fp8) }
        #expect(fp8Error.contains(fp8.path) && fp8Error.contains("'w'") && fp8Error.contains("F8_E4M3"))

        let wrongSize = try dir.file("size.safetensors", safetensorsData(
            header: #"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#, data: Array(repeating: 0, count: 8)))
        let sizeError = errorDescription { _ = try SafetensorsFile.open(wrongSize) }
        #expect(sizeError.contains(wrongSize.path) && sizeError.contains("'w'"))

        let past = try dir.file("past.safetensors", safetensorsData(
            header: #"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#, data: Array(repeating: 0, count: 8)))
        let pastError = errorDescription { _ = try SafetensorsFile.open(past) }
        #expect(pastError.contains(past.path) && pastError.contains("'w'") && pastError.contains("truncated"))

        let huge = try dir.file("huge.safetensors", Data([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0x7B]))
        #expect(errorDescription { _ = try SafetensorsFile.open(huge) }.contains(huge.path))
    }

    @Test("a file written here by hand reads back, including a scalar and F64")
    func handWritten() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        var data: [UInt8] = []
        withUnsafeBytes(of: Float(1.5).bitPattern.littleEndian) { data += $0 }
        withUnsafeBytes(of: Double(-2.25).bitPattern.littleEndian) { data += $0 }
        withUnsafeBytes(of: Double(3.0).bitPattern.littleEndian) { data += $0 }
        let url = try dir.file("hand.safetensors", safetensorsData(
            header: #"{"__metadata__": {"k": "v"}, "s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}, "d": {"dtype": "F64", "shape": [2], "data_offsets": [4, 20]}}"#,
            data: data))
        let store = try SafetensorsWeightStore(file: url)
        #expect(store.tensorNames == ["s", "d"])
        #expect(try store.floats("s") == [1.5])
        #expect(store.descriptor("s")?.shape == [])
        #expect(try store.floats("d") == [-2.25, 3.0])
    }
}
