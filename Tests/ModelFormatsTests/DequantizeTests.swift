import Foundation
import Testing
@testable import ModelFormats

@Suite("Dequantisation")
struct DequantizeTests {
    static let fixtureTypes: [GGMLType] = [.f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0,
                                           .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K, .iq4_nl, .iq4_xs]

    @Test("every encoding decodes to the gguf package's values, bit for bit", arguments: fixtureTypes)
    func matchesReference(type: GGMLType) throws {
        let file = try GGUFFile.open(Fixtures.url("dequant_\(type.description.lowercased()).gguf"))
        let weight = try #require(file.tensor(named: "weight"))
        let expected = try #require(file.tensor(named: "expected"))
        #expect(weight.type == type)
        #expect(expected.type == .f32 && expected.dimensions == weight.dimensions)
        let want = try Dequantizer.dequantize(expected, in: file)
        let got = try Dequantizer.dequantize(weight, in: file)
        #expect(got.count == 3 * 256)
        let mismatches = zip(got, want).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
        #expect(mismatches.isEmpty, "\(mismatches.count) mismatches, first: \(mismatches.first.map { "#\($0.offset): \($0.element.0) vs \($0.element.1)" } ?? "")")
    }

    @Test("a row range decodes the same values as the whole tensor", arguments: [GGMLType.q4_1, .q6_K, .bf16])
    func rowRange(type: GGMLType) throws {
        let file = try GGUFFile.open(Fixtures.url("dequant_\(type.description.lowercased()).gguf"))
        let weight = try #require(file.tensor(named: "weight"))
        let all = try Dequantizer.dequantize(weight, in: file)
        var rows = [Float](repeating: .nan, count: 2 * 256)
        try rows.withUnsafeMutableBufferPointer {
            try Dequantizer.dequantizeRows(of: weight, in: file, rows: 1..<3, into: $0)
        }
        #expect(rows.map(\.bitPattern) == all[256...].map(\.bitPattern))
        let tooFar = errorDescription {
            var out = [Float](repeating: 0, count: 256)
            try out.withUnsafeMutableBufferPointer { try Dequantizer.dequantizeRows(of: weight, in: file, rows: 3..<4, into: $0) }
        }
        #expect(tooFar.contains("weight") && tooFar.contains(file.url.path))
    }

    @Test("an encoding this build cannot decode names file, tensor and type")
    func unsupported() throws {
        let file = try GGUFFile.open(Fixtures.url("unsupported_iq2_xxs.gguf"))
        let tensor = try #require(file.tensor(named: "blk.0.odd.weight"))
        let error = errorDescription { _ = try Dequantizer.dequantize(tensor, in: file) }
        #expect(error.contains(file.url.path) && error.contains("blk.0.odd.weight") && error.contains("IQ2_XXS"))
        let store = GGUFWeightStore(file: file)
        let storeError = errorDescription { _ = try store.floats("blk.0.odd.weight") }
        #expect(storeError.contains(file.url.path) && storeError.contains("blk.0.odd.weight") && storeError.contains("IQ2_XXS"))
    }

    @Test("raw-bytes form rejects partial blocks and short input")
    func rawErrors() {
        let bytes = [UInt8](repeating: 0, count: 40)
        var out = [Float](repeating: 0, count: 64)
        bytes.withUnsafeBytes { raw in
            out.withUnsafeMutableBufferPointer { buffer in
                #expect(throws: DequantizationError.partialBlock(type: .q4_0, count: 31)) {
                    try Dequantizer.dequantize(type: .q4_0, bytes: raw, count: 31, into: buffer)
                }
                #expect(throws: DequantizationError.inputTooShort(type: .q4_0, count: 64, needed: 36, available: 35)) {
                    try Dequantizer.dequantize(type: .q4_0, bytes: UnsafeRawBufferPointer(rebasing: raw[0..<35]), count: 64, into: buffer)
                }
                #expect(throws: DequantizationError.outputTooSmall(count: 64, available: 32)) {
                    try Dequantizer.dequantize(type: .q4_0, bytes: raw, count: 64,
                                               into: UnsafeMutableBufferPointer(rebasing: buffer[0..<32]))
                }
                #expect(throws: DequantizationError.unsupportedType(.tq1_0)) {
                    try Dequantizer.dequantize(type: .tq1_0, bytes: raw, count: 256, into: buffer)
                }
            }
        }
    }

    @Test("half-precision conversion is exact for all 65536 bit patterns")
    func halfConversion() {
        var wrong = 0
        for bits in 0...UInt16.max {
            let reference = Float(Float16(bitPattern: bits))
            let converted = floatFromHalf(bits)
            if reference.isNaN {
                if !converted.isNaN || (converted.bitPattern & 0x8000_0000) != (reference.bitPattern & 0x8000_0000) { wrong += 1 }
            } else if converted.bitPattern != reference.bitPattern {
                wrong += 1
            }
        }
        #expect(wrong == 0)
    }
}
