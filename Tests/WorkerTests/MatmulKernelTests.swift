import CKernels
import Foundation
import ModelFormats
import Testing
@testable import WorkerCore

/// Every (encoding, instruction-set level) matmul kernel this CPU runs, against references built
/// here: weights decoded by ModelFormats' dequantiser (bit-identical to the `gguf` package),
/// activations decoded from the 8-bit blocks, sums in double precision.
@Suite("Matmul kernels per encoding and instruction set")
struct MatmulKernelTests {
    static let rows = 7, columns = 512
    static let inputCounts = [1, 2, 3, 4, 5, 8, 17]
    /// Every level this CPU runs (an AVX-512 CPU without AVX-VNNI skips that one).
    static let levels = (0...Int(tk_cpu_level())).filter { tk_level_runs(Int32($0)) != 0 }

    /// Byte offsets of each block's f16 scales, set to sane values over random quant bytes.
    static func scaleOffsets(_ encoding: WeightEncoding) -> [Int] {
        switch encoding {
        case .q4_0, .q5_0, .q8_0: [0]
        case .q4_1, .q5_1, .q4_K, .q5_K: [0, 2]
        case .q6_K: [208]
        case .f32, .f16, .bf16: []
        }
    }

    static func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
        let random = CounterRandom(seed: seed)
        return (0..<count).map { UInt8(truncatingIfNeeded: Int(random.uniform(stream: 3, counter: UInt64($0)) * 256)) }
    }

    static func randomFloats(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        let random = CounterRandom(seed: seed)
        return (0..<count).map { (Float(random.uniform(stream: 4, counter: UInt64($0))) * 2 - 1) * scale }
    }

    /// Random weights of `encoding`, `rows × columns`, with rows `stride` bytes apart.
    static func weights(_ encoding: WeightEncoding, stride: Int, rows: Int = rows) -> [UInt8] {
        let rowBytes = encoding.byteCount(elements: columns)
        var bytes = [UInt8](repeating: 0, count: rows * stride)
        switch encoding {
        case .f32, .f16, .bf16:
            let values = randomFloats(rows * columns, seed: 21)
            for r in 0..<rows {
                for c in 0..<columns {
                    let v = values[r * columns + c], at = r * stride
                    switch encoding {
                    case .f32: withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.replaceSubrange((at + 4 * c)..<(at + 4 * c + 4), with: $0) }
                    case .f16: withUnsafeBytes(of: Float16(v).bitPattern.littleEndian) { bytes.replaceSubrange((at + 2 * c)..<(at + 2 * c + 2), with: $0) }
                    default:
                        var half: UInt16 = 0
                        withUnsafePointer(to: v) { tk_kv_store(TK_KV_BF16, $0, &half, 1) }
                        withUnsafeBytes(of: half.littleEndian) { bytes.replaceSubrange((at + 2 * c)..<(at + 2 * c + 2), with: $0) }
                    }
                }
            }
        default:
            let random = randomBytes(rows * rowBytes, seed: 22)
            for r in 0..<rows {
                bytes.replaceSubrange((r * stride)..<(r * stride + rowBytes), with: random[(r * rowBytes)..<((r + 1) * rowBytes)])
                for block in 0..<(columns / encoding.blockSize) {
                    let base = r * stride + block * encoding.bytesPerBlock
                    for (k, offset) in scaleOffsets(encoding).enumerated() {
                        let value = Float16(Float((block + r) % 5 + 1) * 0.011 * (k == 0 ? 1 : -0.5))
                        withUnsafeBytes(of: value.bitPattern.littleEndian) {
                            bytes.replaceSubrange((base + offset)..<(base + offset + 2), with: $0)
                        }
                    }
                }
            }
        }
        return bytes
    }

    static func decodedWeights(_ encoding: WeightEncoding, _ bytes: [UInt8], stride: Int) throws -> [Float] {
        var result = [Float](repeating: 0, count: rows * columns)
        let rowBytes = encoding.byteCount(elements: columns)
        try bytes.withUnsafeBytes { raw in
            try result.withUnsafeMutableBufferPointer { out in
                for r in 0..<rows {
                    try Dequantizer.dequantize(type: encoding.ggmlType,
                                               bytes: UnsafeRawBufferPointer(rebasing: raw[(r * stride)..<(r * stride + rowBytes)]),
                                               count: columns,
                                               into: UnsafeMutableBufferPointer(rebasing: out[(r * columns)..<((r + 1) * columns)]))
                }
            }
        }
        return result
    }

    /// What the 8-bit activation blocks decode to (d · q), read from their C layouts.
    static func decodedActivations(_ bytes: UnsafeRawPointer, blockSize: Int, blockBytes: Int, count: Int) -> [Float] {
        var values: [Float] = []
        for block in 0..<(count / blockSize) {
            let base = bytes + block * blockBytes
            let d = base.loadUnaligned(as: Float.self)
            let quants = base + (blockSize == 32 ? 8 : 4)
            for j in 0..<blockSize { values.append(d * Float(quants.load(fromByteOffset: j, as: Int8.self))) }
        }
        return values
    }

    static func reference(_ w: [Float], _ x: [Float], count: Int) -> (values: [Double], magnitudes: [Double]) {
        var values: [Double] = [], magnitudes: [Double] = []
        for j in 0..<count {
            for i in 0..<rows {
                var sum = 0.0, magnitude = 0.0
                for c in 0..<columns {
                    let p = Double(w[i * columns + c]) * Double(x[j * columns + c])
                    sum += p
                    magnitude += abs(p)
                }
                values.append(sum)
                magnitudes.append(magnitude)
            }
        }
        return (values, magnitudes)
    }

    @Test("row decoders equal ModelFormats' dequantiser exactly", arguments: WeightEncoding.allCases)
    func rowDecoders(encoding: WeightEncoding) throws {
        let stride = encoding.byteCount(elements: Self.columns)
        let bytes = Self.weights(encoding, stride: stride)
        let expected = try Self.decodedWeights(encoding, bytes, stride: stride)
        let kernel = MatmulKernel(encoding: encoding, level: 0)
        var decoded = [Float](repeating: 0, count: Self.columns)
        for r in 0..<Self.rows {
            bytes.withUnsafeBytes { raw in kernel.body.dequant_row(raw.baseAddress! + r * stride, &decoded, Self.columns) }
            #expect(decoded == Array(expected[(r * Self.columns)..<((r + 1) * Self.columns)]), "\(encoding) row \(r)")
        }
    }

    @Test("integer kernels at every level match the 8-bit reference; quantisers agree bit for bit",
          arguments: WeightEncoding.allCases.filter(\.isBlockQuantized))
    func integerKernels(encoding: WeightEncoding) throws {
        let stride = encoding.byteCount(elements: Self.columns) + 6  // rows not packed back to back
        let bytes = Self.weights(encoding, stride: stride)
        let w = try Self.decodedWeights(encoding, bytes, stride: stride)
        let maxCount = Self.inputCounts.max()!
        let x = Self.randomFloats(maxCount * Self.columns, seed: 31, scale: 3)
        let portable = MatmulKernel(encoding: encoding, level: 0)
        let block = portable.activationBlock, blockBytes = portable.activationBlockBytes
        let actRow = Self.columns / block * blockBytes
        var quantized = [UInt8](repeating: 0, count: maxCount * actRow)
        quantized.withUnsafeMutableBytes { q in
            for j in 0..<maxCount { portable.body.quantize(x.withUnsafeBufferPointer { $0.baseAddress! + j * Self.columns }, q.baseAddress! + j * actRow, Self.columns) }
        }
        let activations = quantized.withUnsafeBytes { q in
            (0..<maxCount).flatMap { Self.decodedActivations(q.baseAddress! + $0 * actRow, blockSize: block, blockBytes: blockBytes, count: Self.columns) }
        }
        for level in Self.levels {
            let kernel = MatmulKernel(encoding: encoding, level: level)
            var again = [UInt8](repeating: 0, count: maxCount * actRow)
            again.withUnsafeMutableBytes { q in
                for j in 0..<maxCount { kernel.body.quantize(x.withUnsafeBufferPointer { $0.baseAddress! + j * Self.columns }, q.baseAddress! + j * actRow, Self.columns) }
            }
            #expect(again == quantized, "\(encoding) quantiser at level \(level) differs from the portable one")
            for count in Self.inputCounts {
                let (expected, magnitudes) = Self.reference(w, activations, count: count)
                let yStride = Self.rows + 3
                var y = [Float](repeating: .nan, count: count * yStride)
                bytes.withUnsafeBytes { wRaw in
                    quantized.withUnsafeBytes { q in
                        kernel.body.int_matmul(wRaw.baseAddress!, stride, Self.rows, q.baseAddress!, actRow, count,
                                               Self.columns, &y, yStride)
                    }
                }
                for j in 0..<count {
                    for i in 0..<Self.rows {
                        let error = abs(Double(y[j * yStride + i]) - expected[j * Self.rows + i]) / max(magnitudes[j * Self.rows + i], 1e-30)
                        #expect(error < 1e-5, "\(encoding) level \(level) n=\(count) [\(j), \(i)]: relative error \(error)")
                    }
                }
            }
        }
    }

    @Test("exact float kernels at every level match the float reference", arguments: WeightEncoding.allCases)
    func floatKernels(encoding: WeightEncoding) throws {
        let stride = encoding.byteCount(elements: Self.columns) + 4
        let bytes = Self.weights(encoding, stride: stride)
        let w = try Self.decodedWeights(encoding, bytes, stride: stride)
        let maxCount = Self.inputCounts.max()!
        let x = Self.randomFloats(maxCount * Self.columns, seed: 32)
        var scratch = [Float](repeating: 0, count: Self.columns)
        for level in Self.levels {
            let kernel = MatmulKernel(encoding: encoding, level: level)
            for count in Self.inputCounts {
                let (expected, magnitudes) = Self.reference(w, x, count: count)
                let yStride = Self.rows + 1
                var y = [Float](repeating: .nan, count: count * yStride)
                bytes.withUnsafeBytes { wRaw in
                    withUnsafePointer(to: kernel.body) { body in
                        tk_matmul_float(body, wRaw.baseAddress!, stride, Self.rows, x, Self.columns * 4, count,
                                        Self.columns, &y, yStride, &scratch)
                    }
                }
                for j in 0..<count {
                    for i in 0..<Self.rows {
                        let error = abs(Double(y[j * yStride + i]) - expected[j * Self.rows + i]) / max(magnitudes[j * Self.rows + i], 1e-30)
                        #expect(error < 1e-5, "\(encoding) level \(level) n=\(count) [\(j), \(i)]: relative error \(error)")
                    }
                }
            }
        }
    }

    @Test("a column slice multiplies like the same columns of the whole matrix")
    func columnSlice() throws {
        let encoding = WeightEncoding.q4_K, stride = encoding.byteCount(elements: Self.columns)
        let bytes = Self.weights(encoding, stride: stride)
        let buffer = WeightBuffer(count: bytes.count)
        bytes.withUnsafeBytes { buffer.pointer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        let whole = WeightMatrix(encoding: encoding, rows: Self.rows, columns: Self.columns, stride: stride,
                                 base: UnsafeRawPointer(buffer.pointer), owner: buffer, name: "w")
        let right = try whole.slicingColumns(256..<512)
        #expect(throws: WeightSliceError.self) { try whole.slicingColumns(100..<356) }
        let rows = try whole.slicingRows(2..<5)
        #expect(rows.rows == 3 && rows.base == whole.row(2))
        let w = try Self.decodedWeights(encoding, bytes, stride: stride)
        let x = Self.randomFloats(256, seed: 41)
        var scratch = [Float](repeating: 0, count: 256)
        var y = [Float](repeating: 0, count: Self.rows)
        let kernel = MatmulKernel(encoding: encoding, level: Int(tk_cpu_level()))
        withUnsafePointer(to: kernel.body) { body in
            tk_matmul_float(body, right.base, right.stride, right.rows, x, 256 * 4, 1, 256, &y, Self.rows, &scratch)
        }
        for i in 0..<Self.rows {
            let expected = (0..<256).reduce(0.0) { $0 + Double(w[i * Self.columns + 256 + $1]) * Double(x[$1]) }
            #expect(abs(Double(y[i]) - expected) < 1e-4 * max(1, abs(expected)))
        }
    }

    /// The 32-element encodings' interleaved layout (AVX-512): repacked at load, multiplied by
    /// its own bodies, sliced on group and block boundaries as tensor parallelism will.
    @Test("interleaved row groups multiply like the rows they came from, whole and sliced",
          arguments: [WeightEncoding.q4_0, .q4_1, .q5_0, .q5_1, .q8_0])
    func interleavedRowGroups(encoding: WeightEncoding) throws {
        let kernel = MatmulKernel(encoding: encoding, level: Int(tk_cpu_level()))
        guard tk_cpu_level() >= TK_LEVEL_AVX512 else {
            #expect(kernel.packRows == 0, "\(encoding): an interleaved layout below AVX-512")
            return
        }
        #expect(kernel.packRows == 16)
        let rows = 37, columns = Self.columns  // three groups, the last one partial
        let stride = encoding.byteCount(elements: columns) + 2
        let bytes = Self.weights(encoding, stride: stride, rows: rows)
        let buffer = WeightBuffer(count: bytes.count)
        bytes.withUnsafeBytes { buffer.pointer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        let plain = WeightMatrix(encoding: encoding, rows: rows, columns: columns, stride: stride,
                                 base: UnsafeRawPointer(buffer.pointer), owner: buffer, name: "w")
        let packed = plain.interleaved(for: kernel)
        #expect(packed.layout == .interleaved(rowsPerGroup: 16) && packed.byteCount == 48 * plain.rowBytes)
        #expect(throws: WeightSliceError.self) { try packed.slicingRows(5..<20) }

        let portable = MatmulKernel(encoding: encoding, level: 0)
        let counts = [1, 2, 3, 8, 9, 17]
        let maxCount = counts.max()!
        let actRow = columns / 32 * portable.activationBlockBytes
        let x = Self.randomFloats(maxCount * columns, seed: 51, scale: 2)
        var quantized = [UInt8](repeating: 0, count: maxCount * actRow)
        quantized.withUnsafeMutableBytes { q in
            for j in 0..<maxCount { portable.body.quantize(x.withUnsafeBufferPointer { $0.baseAddress! + j * columns }, q.baseAddress! + j * actRow, columns) }
        }
        // (rows, columns) of the view, and the same view of the plain matrix.
        let views: [(WeightMatrix, WeightMatrix, String)] = [
            (packed, plain, "whole"),
            (try packed.slicingRows(16..<37), try plain.slicingRows(16..<37), "rows 16..<37"),
            (try packed.slicingColumns(256..<512), try plain.slicingColumns(256..<512), "columns 256..<512"),
        ]
        for (view, reference, label) in views {
            let k = view.columns, xOffset = (columns - k) / 32 * portable.activationBlockBytes
            for count in counts {
                var expected = [Float](repeating: 0, count: count * view.rows)
                var y = [Float](repeating: .nan, count: count * (view.rows + 1))
                quantized.withUnsafeBytes { q in
                    let xs = q.baseAddress! + (k == columns ? 0 : xOffset)
                    portable.body.int_matmul(reference.base, reference.stride, reference.rows, xs, actRow, count, k, &expected, view.rows)
                    kernel.body.packed_matmul(view.base, view.stride, view.rows, xs, actRow, count, k, &y, view.rows + 1)
                }
                for j in 0..<count {
                    for i in 0..<view.rows {
                        let want = expected[j * view.rows + i], got = y[j * (view.rows + 1) + i]
                        #expect(abs(got - want) <= 1e-4 * max(1, abs(want)), "\(encoding) \(label) n=\(count) [\(j), \(i)]: \(got) vs \(want)")
                    }
                    #expect(y[j * (view.rows + 1) + view.rows].isNaN, "\(encoding) \(label): wrote past the last row")
                }
            }
        }
    }

    @Test("a residual pass takes 8-bit products to near the exact product, over thread shares and weight slices",
          arguments: [WeightEncoding.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K])
    func residualPass(encoding: WeightEncoding) throws {
        // 150 rows: two threads' shares of more than one 64-row slice each, and a partial last
        // interleaved group where the level repacks.
        let rows = 150, columns = Self.columns, count = 5
        let stride = encoding.byteCount(elements: columns)
        let bytes = Self.weights(encoding, stride: stride, rows: rows)
        let buffer = WeightBuffer(count: bytes.count)
        bytes.withUnsafeBytes { buffer.pointer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        let matrix = WeightMatrix(encoding: encoding, rows: rows, columns: columns, stride: stride,
                                  base: UnsafeRawPointer(buffer.pointer), owner: buffer, name: "w")
        let level = Int(tk_cpu_level())
        let exact = Linear(matrix, kernels: KernelChoice(level: level, activations: .f32))
        let plain = Linear(matrix, kernels: KernelChoice(level: level, activations: .q8))
        let twoPass = Linear(matrix, kernels: KernelChoice(level: level, activations: .q8), residualPass: true)
        let engine = MatmulEngine(pool: try ComputePool(threads: 2), maxRows: 8, maxColumns: columns)
        let x = Self.randomFloats(count * columns, seed: 61, scale: 3)
        func product(_ linear: Linear) -> [Float] {
            var y = [Float](repeating: .nan, count: count * rows)
            engine.multiply(linear, x, rows: count, into: &y)
            return y
        }
        let want = product(exact), one = product(plain), two = product(twoPass)
        var plainError: Float = 0, residualError: Float = 0
        for index in want.indices {
            plainError = max(plainError, abs(one[index] - want[index]))
            residualError = max(residualError, abs(two[index] - want[index]))
        }
        #expect(plainError > 0, "\(encoding): 8-bit activations should round somewhere")
        #expect(residualError <= plainError / 30, "\(encoding): residual pass error \(residualError), one pass \(plainError)")
    }
}
