import Foundation
import Testing
@testable import ModelFormats

@Suite("Weight stores")
struct WeightStoreTests {
    @Test("GGUF store: PyTorch-order shapes, row slices and encoded bytes of whole rows")
    func ggufStore() throws {
        let url = try Fixtures.url("dequant_q4_k.gguf")
        let store: any WeightStore = try GGUFWeightStore(url: url)
        #expect(store.path == url.path)
        #expect(store.tensorNames == ["weight", "expected"])
        let weight = try #require(store.descriptor("weight"))
        #expect(weight.shape == [3, 256] && weight.encoding == .ggml(.q4_K))
        #expect(store.descriptor("expected")?.encoding == .f32)
        let expected = try store.floats("expected")
        #expect(try store.floats("weight", rows: 1..<2) == Array(expected[256..<512]))
        #expect(try store.floats("weight", rows: 0..<3, columns: 250..<256)
                == [0, 1, 2].flatMap { expected[($0 * 256 + 250)..<($0 * 256 + 256)] })
        let file = try GGUFFile.open(url)
        let raw = try #require(file.tensor(named: "weight"))
        let same = try store.withEncodedBytes("weight", rows: 1..<3) { bytes, descriptor in
            descriptor.encoding == .ggml(.q4_K) && Array(bytes) == Array(file.bytes(of: raw, rows: 1..<3))
        }
        #expect(same)
        let error = errorDescription { _ = try store.floats("weight", rows: 2..<4) }
        #expect(error.contains(url.path) && error.contains("'weight'") && error.contains("2..<4"))
        let columns = errorDescription { _ = try store.floats("weight", rows: nil, columns: 200..<300) }
        #expect(columns.contains("200..<300"))
    }

    @Test("encodings name themselves as the files do")
    func encodingNames() {
        #expect(TensorEncoding(.q4_1) == .ggml(.q4_1))
        #expect(TensorEncoding(.bf16) == .bf16)
        #expect("\(TensorEncoding.ggml(.q6_K))" == "Q6_K")
        #expect(TensorEncoding.ggml(.q4_K).byteCount(elements: 512) == 288)
        #expect(TensorEncoding.bf16.byteCount(elements: 5) == 10)
        #expect(!TensorEncoding.ggml(.iq2_xxs).canDecodeToFloat)
    }
}
