import CKernels
import Foundation
import Testing
@testable import WorkerCore

/// Block-quantised matrix-vector kernels against a float reference built here from the same
/// blocks (ggml layouts: Q4_1 = f16 d, f16 m, 16 bytes of nibbles; Q8_0 = f16 d, 32 int8).
@Suite("Quantized decode kernels")
struct QuantizedKernelTests {
    static let rows = 7, columns = 96

    static func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
        let random = CounterRandom(seed: seed)
        return (0..<count).map { UInt8(truncatingIfNeeded: Int(random.uniform(stream: 9, counter: UInt64($0)) * 256)) }
    }

    static func half(_ value: Float) -> [UInt8] {
        let bits = Float16(value).bitPattern
        return [UInt8(bits & 0xff), UInt8(bits >> 8)]
    }

    static let input: [Float] = {
        let random = CounterRandom(seed: 11)
        return (0..<columns).map { Float(random.uniform(stream: 0, counter: UInt64($0))) * 2 - 1 }
    }()

    /// Random Q4_1 rows and their dequantised floats (q * d + m).
    static func q4_1() -> (bytes: [UInt8], floats: [Float]) {
        var bytes: [UInt8] = [], floats: [Float] = []
        let nibbles = randomBytes(rows * columns / 2, seed: 1)
        for block in 0..<(rows * columns / 32) {
            let d = Float(block % 5 + 1) * 0.013, m = -Float(block % 3) * 0.07
            bytes += half(d) + half(m)
            let quants = Array(nibbles[(block * 16)..<(block * 16 + 16)])
            bytes += quants
            let scale = Float(Float16(d)), offset = Float(Float16(m))
            floats += quants.map { Float($0 & 0x0f) * scale + offset } + quants.map { Float($0 >> 4) * scale + offset }
        }
        return (bytes, floats)
    }

    /// Random Q8_0 rows and their dequantised floats (q * d).
    static func q8_0() -> (bytes: [UInt8], floats: [Float]) {
        var bytes: [UInt8] = [], floats: [Float] = []
        let quants = randomBytes(rows * columns, seed: 2)
        for block in 0..<(rows * columns / 32) {
            let d = Float(block % 4 + 1) * 0.009
            bytes += half(d)
            let values = Array(quants[(block * 32)..<(block * 32 + 32)])
            bytes += values
            floats += values.map { Float(Int8(bitPattern: $0)) * Float(Float16(d)) }
        }
        return (bytes, floats)
    }

    static func reference(_ floats: [Float]) -> [Float] {
        (0..<rows).map { row in (0..<columns).reduce(Float(0)) { $0 + floats[row * columns + $1] * input[$1] } }
    }

    func close(_ a: [Float], _ b: [Float]) -> Bool {
        zip(a, b).allSatisfy { abs($0 - $1) <= 1e-4 * max(1, abs($1)) }
    }

    @Test("Q4_1: dispatched and portable kernels equal the dequantised product")
    func q4_1Kernel() {
        let (bytes, floats) = Self.q4_1()
        var fast = [Float](repeating: 0, count: Self.rows), portable = fast
        var sums = [Float](repeating: 0, count: Self.columns / 32)
        tk_gemv_q4_1(bytes, Self.rows, Self.columns, Self.input, &sums, &fast)
        tk_gemv_q4_1_portable(bytes, Self.rows, Self.columns, Self.input, &sums, &portable)
        let expected = Self.reference(floats)
        #expect(close(fast, expected), "\(fast) vs \(expected)")
        #expect(close(portable, expected))
    }

    @Test("Q8_0: dispatched and portable kernels equal the dequantised product")
    func q8_0Kernel() {
        let (bytes, floats) = Self.q8_0()
        var fast = [Float](repeating: 0, count: Self.rows), portable = fast
        tk_gemv_q8_0(bytes, Self.rows, Self.columns, Self.input, &fast)
        tk_gemv_q8_0_portable(bytes, Self.rows, Self.columns, Self.input, &portable)
        let expected = Self.reference(floats)
        #expect(close(fast, expected), "\(fast) vs \(expected)")
        #expect(close(portable, expected))
    }

    @Test("several input vectors at once equal one at a time, for both encodings")
    func manyVectors() {
        let count = 6  // more than one group of 4
        let inputs = (0..<count).flatMap { n in Self.input.map { $0 * Float(n + 1) - Float(n) * 0.1 } }
        let stride = Self.rows + 3  // results land at y[n * stride]
        for (bytes, isQ4) in [(Self.q4_1().bytes, true), (Self.q8_0().bytes, false)] {
            var together = [Float](repeating: .nan, count: count * stride)
            var sums = [Float](repeating: 0, count: count * Self.columns / 32)
            if isQ4 {
                tk_gemm_q4_1(bytes, Self.rows, Self.columns, inputs, count, &sums, &together, stride)
            } else {
                tk_gemm_q8_0(bytes, Self.rows, Self.columns, inputs, count, &together, stride)
            }
            for n in 0..<count {
                var single = [Float](repeating: 0, count: Self.rows)
                let x = Array(inputs[(n * Self.columns)..<((n + 1) * Self.columns)])
                if isQ4 {
                    tk_gemv_q4_1_portable(bytes, Self.rows, Self.columns, x, &sums, &single)
                } else {
                    tk_gemv_q8_0_portable(bytes, Self.rows, Self.columns, x, &single)
                }
                #expect(close(Array(together[(n * stride)..<(n * stride + Self.rows)]), single), "vector \(n), Q4_1: \(isQ4)")
            }
        }
    }

    @Test("Linear takes the quantized path for a few rows and sgemm beyond, with the same result")
    func linearPaths() {
        let (bytes, floats) = Self.q8_0()
        let linear = Linear(weight: Matrix(rows: Self.rows, columns: Self.columns, storage: FloatBuffer(floats)),
                            quantized: QuantizedMatrix(encoding: .q8_0, rows: Self.rows, columns: Self.columns, bytes: bytes))
        let batch = Linear.quantizedRowLimit + 1
        let inputs = (0..<batch).flatMap { row in Self.input.map { $0 * Float(row + 1) } }
        var viaBLAS = [Float](repeating: 0, count: batch * Self.rows)
        var viaKernel = [Float](repeating: 0, count: Self.rows)
        linear(inputs, rows: batch, into: &viaBLAS)
        for row in 0..<batch {
            Array(inputs[(row * Self.columns)..<((row + 1) * Self.columns)]).withUnsafeBufferPointer {
                linear($0.baseAddress!, rows: 1, into: &viaKernel)
            }
            #expect(close(viaKernel, Array(viaBLAS[(row * Self.rows)..<((row + 1) * Self.rows)])))
        }
    }
}
