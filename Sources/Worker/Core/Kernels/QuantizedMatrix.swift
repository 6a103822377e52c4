import CKernels
import COpenBLAS
import Dispatch
import ModelFormats

/// A weight kept in its ggml block encoding for matrix-vector products (decoding), where the
/// bytes read per token set the speed. Rows are `[out]`, each `columns / 32` blocks.
public struct QuantizedMatrix: Sendable {
    public enum Encoding: Sendable, Equatable {
        case q4_1, q8_0

        public init?(_ type: GGMLType) {
            switch type {
            case .q4_1: self = .q4_1
            case .q8_0: self = .q8_0
            default: return nil
            }
        }

        var type: GGMLType {
            switch self {
            case .q4_1: .q4_1
            case .q8_0: .q8_0
            }
        }
    }

    public let encoding: Encoding
    public let rows: Int
    public let columns: Int
    let storage: ByteBuffer

    /// Bytes of one row.
    public static func rowBytes(columns: Int, encoding: Encoding) -> Int {
        columns / encoding.type.blockSize * encoding.type.bytesPerBlock
    }

    init(encoding: Encoding, rows: Int, columns: Int, storage: ByteBuffer) {
        precondition(columns % 32 == 0 && storage.count == rows * Self.rowBytes(columns: columns, encoding: encoding),
                     "quantized matrix \(rows)x\(columns) does not match \(storage.count) bytes")
        self.encoding = encoding
        self.rows = rows
        self.columns = columns
        self.storage = storage
    }

    public init(encoding: Encoding, rows: Int, columns: Int, bytes: [UInt8]) {
        let storage = ByteBuffer(count: bytes.count)
        bytes.withUnsafeBytes { storage.pointer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        self.init(encoding: encoding, rows: rows, columns: columns, storage: storage)
    }

    /// Matrices at least this large are split by rows over the compute threads.
    static let parallelThreshold = 1 << 18
    static let minimumRowsPerPart = 64

    /// The worker's compute thread count is OpenBLAS's (set from `--threads` or
    /// OPENBLAS_NUM_THREADS), so the BLAS and quantized paths use the same cores.
    static var threads: Int { max(1, Int(openblas_get_num_threads())) }

    /// `y = x Wᵀ` for `count` input vectors (`x`: `[count, columns]`, `y`: `[count, rows]`).
    public func multiply(_ x: UnsafePointer<Float>, count: Int, into y: UnsafeMutablePointer<Float>) {
        let parts = rows * columns >= Self.parallelThreshold ? min(Self.threads, rows / Self.minimumRowsPerPart) : 1
        guard parts > 1 else {
            multiply(x, count: count, rows: 0..<rows, into: y)
            return
        }
        let task = RowTask(matrix: self, x: x, count: count, y: y, parts: parts)
        DispatchQueue.concurrentPerform(iterations: parts) { part in task.run(part) }
    }

    /// Rows `range` of the product, for every input vector.
    func multiply(_ x: UnsafePointer<Float>, count: Int, rows range: Range<Int>, into y: UnsafeMutablePointer<Float>) {
        let start = storage.pointer + range.lowerBound * Self.rowBytes(columns: columns, encoding: encoding)
        let output = y + range.lowerBound
        if count == 1 {
            switch encoding {
            case .q4_1:
                withUnsafeTemporaryAllocation(of: Float.self, capacity: columns / 32) { sums in
                    tk_gemv_q4_1(start, range.count, columns, x, sums.baseAddress!, output)
                }
            case .q8_0:
                tk_gemv_q8_0(start, range.count, columns, x, output)
            }
            return
        }
        switch encoding {
        case .q4_1:
            withUnsafeTemporaryAllocation(of: Float.self, capacity: count * columns / 32) { sums in
                tk_gemm_q4_1(start, range.count, columns, x, count, sums.baseAddress!, output, rows)
            }
        case .q8_0:
            tk_gemm_q8_0(start, range.count, columns, x, count, output, rows)
        }
    }
}

/// One row-split product handed to worker threads; each part writes a disjoint slice of `y`.
private struct RowTask: @unchecked Sendable {
    let matrix: QuantizedMatrix
    let x: UnsafePointer<Float>
    let count: Int
    let y: UnsafeMutablePointer<Float>
    let parts: Int

    func run(_ part: Int) {
        let rows = matrix.rows
        let range = (rows * part / parts)..<(rows * (part + 1) / parts)
        matrix.multiply(x, count: count, rows: range, into: y)
    }
}

/// Owned, aligned raw bytes.
final class ByteBuffer: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    let count: Int

    init(count: Int) {
        self.count = count
        pointer = .allocate(byteCount: max(count, 1), alignment: 64)
    }

    deinit { pointer.deallocate() }
}
