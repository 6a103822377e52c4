import Foundation
import Testing
@testable import ModelFormats

@Suite("GGUF reader")
struct GGUFFileTests {
    @Test("default model: llama metadata and tensor directory")
    func defaultModelHeader() throws {
        let file = try GGUFFile.open(Fixtures.defaultModel())
        #expect(file.version == 3)
        #expect(try file.metadata.string("general.architecture") == "llama")
        #expect(try file.metadata.int("llama.block_count") == 30)
        #expect(try file.metadata.int("llama.embedding_length") == 576)
        #expect(try file.metadata.int("llama.attention.head_count") == 9)
        #expect(try file.metadata.int("llama.attention.head_count_kv") == 3)
        #expect(try file.metadata.stringArray("tokenizer.ggml.tokens").count == 49152)
        #expect(file.tensors.count == 272)
        let embedding = try #require(file.tensor(named: "token_embd.weight"))
        #expect(embedding.dimensions == [576, 49152])
        #expect(embedding.rowCount == 49152 && embedding.columnCount == 576)
        let norm = try #require(file.tensor(named: "output_norm.weight"))
        #expect(norm.type == .f32)
        #expect(file.dataOffset % file.alignment == 0)
        let error = errorDescription { _ = try file.metadata.int("llama.no_such_key") }
        #expect(error.contains(Fixtures.defaultModelPath) && error.contains("llama.no_such_key"))
        let wrongType = errorDescription { _ = try file.metadata.int("general.architecture") }
        #expect(wrongType.contains("general.architecture") && wrongType.contains("integer"))
    }

    @Test("default model: dequantised rows equal the gguf package's values")
    func defaultModelRows() throws {
        let store = try GGUFWeightStore(url: Fixtures.defaultModel())
        let expected = try GGUFWeightStore(url: Fixtures.url("smollm2_rows.gguf"))
        let picks: [(String, [Int]?)] = [("token_embd.weight", [0, 1000, 49151]), ("blk.0.attn_q.weight", [0, 575]),
                                         ("blk.29.ffn_down.weight", [7]), ("output_norm.weight", nil)]
        for (name, rows) in picks {
            let want = try expected.floats(name)
            var got: [Float] = []
            if let rows {
                for row in rows { got += try store.floats(name, rows: row..<(row + 1)) }
            } else {
                got = try store.floats(name)
            }
            #expect(got.count == want.count, "\(name)")
            #expect(got.map(\.bitPattern) == want.map(\.bitPattern), "\(name)")
        }
        let q = try #require(store.descriptor("blk.0.attn_q.weight"))
        #expect(q.shape == [576, 576])
        #expect(q.encoding == .ggml(.q4_1))
        #expect(store.descriptor("blk.0.ffn_up.weight")?.shape == [1536, 576])
    }

    @Test("fixture file: metadata, tensors, alignment")
    func fixtureHeader() throws {
        let url = try Fixtures.url("dequant_q4_k.gguf")
        let file = try GGUFFile.open(url)
        #expect(try file.metadata.string("general.name") == "dequant_q4_k.gguf")
        #expect(file.tensors.map(\.name) == ["weight", "expected"])
        let weight = try #require(file.tensor(named: "weight"))
        #expect(weight.type == .q4_K && weight.dimensions == [256, 3] && weight.byteCount == 3 * 144)
        #expect(weight.rowByteCount == 144)
        #expect(file.bytes(of: weight, rows: 1..<3).count == 288)
        #expect(file.tensor(named: "nothing") == nil)
    }

    private func corrupted(_ transform: (inout Data) -> Void) throws -> (TemporaryDirectory, URL) {
        var data = try Data(contentsOf: Fixtures.url("dequant_q8_0.gguf"))
        transform(&data)
        let dir = try TemporaryDirectory()
        return (dir, try dir.file("broken.gguf", data))
    }

    @Test("wrong magic is reported with the file name")
    func wrongMagic() throws {
        let (dir, url) = try corrupted { $0[0] = UInt8(ascii: "X") }
        defer { dir.cleanup() }
        let error = errorDescription { _ = try GGUFFile.open(url) }
        #expect(error.contains(url.path) && error.contains("not a GGUF file"))
    }

    @Test("unsupported version is reported with the file name and version")
    func badVersion() throws {
        let (dir, url) = try corrupted { $0[4] = 9 }
        defer { dir.cleanup() }
        let error = errorDescription { _ = try GGUFFile.open(url) }
        #expect(error.contains(url.path) && error.contains("version 9"))
    }

    @Test("a header cut short is reported as truncated")
    func truncatedHeader() throws {
        let (dir, url) = try corrupted { $0 = $0.prefix(60) }
        defer { dir.cleanup() }
        let error = errorDescription { _ = try GGUFFile.open(url) }
        #expect(error.contains(url.path) && error.contains("truncated"))
    }

    @Test("a tensor past the end of the file names the tensor")
    func tensorPastEnd() throws {
        let (dir, url) = try corrupted { $0 = $0.dropLast(100) }
        defer { dir.cleanup() }
        let error = errorDescription { _ = try GGUFFile.open(url) }
        #expect(error.contains(url.path) && error.contains("expected") && error.contains("truncated"))
    }

    @Test("an impossible string length in the header is reported as corrupt")
    func hugeStringLength() throws {
        // Bytes 24..<32 hold the length of the first metadata key.
        let (dir, url) = try corrupted { data in
            for i in 24..<32 { data[i] = 0xFF }
        }
        defer { dir.cleanup() }
        let error = errorDescription { _ = try GGUFFile.open(url) }
        #expect(error.contains(url.path) && error.contains("string length"))
    }

    @Test("an empty or missing file is reported with its path")
    func emptyFile() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let empty = try dir.file("empty.gguf", Data())
        #expect(errorDescription { _ = try GGUFFile.open(empty) }.contains(empty.path))
        let missing = dir.url.appendingPathComponent("missing.gguf")
        #expect(errorDescription { _ = try GGUFFile.open(missing) }.contains(missing.path))
    }
}
