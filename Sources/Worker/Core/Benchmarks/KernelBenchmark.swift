import CKernels
import Foundation

/// Measures each (encoding, input rows) matmul kernel as GB/s of weight bytes read on one core,
/// beside a plain read of the same memory: the figure a decode step's speed follows. Matrices
/// are cycled so their total exceeds the caches, as a model's layers do per token.
public struct KernelBenchmark: Sendable {
    public var encodings: [WeightEncoding]
    public var inputRows: [Int]
    /// Total weight bytes cycled per encoding.
    public var totalBytes: Int
    /// Shape of each matrix.
    public var rows: Int
    public var columns: Int
    /// Shortest time measured per figure.
    public var seconds: Double
    public var activations: ActivationPrecision

    public init(encodings: [WeightEncoding], inputRows: [Int], totalBytes: Int, rows: Int, columns: Int,
                seconds: Double, activations: ActivationPrecision) {
        self.encodings = encodings
        self.inputRows = inputRows
        self.totalBytes = totalBytes
        self.rows = rows
        self.columns = columns
        self.seconds = seconds
        self.activations = activations
    }

    public struct Figure: Sendable {
        public var encoding: WeightEncoding
        public var inputRows: Int
        public var gigabytesPerSecond: Double
        public var level: Int
        public var layout: WeightLayout
    }

    /// GB/s of a plain read over `totalBytes`, one thread.
    public func readBandwidth() -> Double {
        let buffer = WeightBuffer(count: totalBytes)
        memset(buffer.pointer, 1, totalBytes)
        var sink: UInt64 = 0
        let time = measure { sink &+= tk_read_sum(buffer.pointer, totalBytes) }
        precondition(sink != 1)
        return Double(totalBytes) / time / 1e9
    }

    public func run(level: Int, report: (Figure) -> Void) {
        let maxRows = inputRows.max() ?? 1
        let input = FloatBuffer(count: maxRows * columns)
        for i in 0..<input.count { input.pointer[i] = Float((i * 7919) % 2001) / 1000 - 1 }
        let output = FloatBuffer(count: maxRows * rows)
        let quantized = WeightBuffer(count: maxRows * (columns / 32 + 1) * 40)
        let scratch = FloatBuffer(count: columns)
        for encoding in encodings {
            let kernel = MatmulKernel(encoding: encoding, level: level)
            let matrixBytes = rows * encoding.byteCount(elements: columns)
            let count = max(1, totalBytes / matrixBytes)
            let weights = WeightBuffer(count: count * matrixBytes)
            // Bytes whose halves are normal numbers: no subnormal slow paths, no NaNs.
            memset(weights.pointer, 0x3C, weights.count)
            let integer = activations == .q8 && kernel.activationBlock > 0
            // The layout the model runs: with 8-bit activations, interleaved where the level has it.
            let matrices = (0..<count).map { m in
                let plain = WeightMatrix(encoding: encoding, rows: rows, columns: columns, stride: matrixBytes / rows,
                                         base: UnsafeRawPointer(weights.pointer + m * matrixBytes), owner: weights,
                                         name: "benchmark")
                return integer && kernel.packRows > 0 ? plain.interleaved(for: kernel) : plain
            }
            let actRow = integer ? columns / kernel.activationBlock * kernel.activationBlockBytes : columns * 4
            for n in inputRows {
                if integer {
                    for r in 0..<n { kernel.body.quantize(input.pointer + r * columns, quantized.pointer + r * actRow, columns) }
                }
                let time = measure {
                    for w in matrices {
                        if integer {
                            let body = w.layout == .rows ? kernel.body.int_matmul! : kernel.body.packed_matmul!
                            body(w.base, w.stride, rows, quantized.pointer, actRow, n, columns, output.pointer, rows)
                        } else {
                            withUnsafePointer(to: kernel.body) { body in
                                tk_matmul_float(body, w.base, w.stride, rows, input.pointer, actRow, n, columns, output.pointer,
                                                rows, scratch.pointer)
                            }
                        }
                    }
                }
                report(Figure(encoding: encoding, inputRows: n, gigabytesPerSecond: Double(count * matrixBytes) / time / 1e9,
                              level: kernel.level, layout: matrices[0].layout))
            }
        }
    }

    /// The median seconds of one call of `body`, over repeats lasting at least `seconds` in all.
    private func measure(_ body: () -> Void) -> Double {
        body()  // warm-up: pages touched, caches as in steady state
        var times: [Double] = []
        let clock = ContinuousClock()
        var spent = 0.0
        while times.count < 3 || spent < seconds {
            let t = clock.measure(body) / .seconds(1)
            times.append(t)
            spent += t
        }
        times.sort()
        return times[times.count / 2]
    }
}
