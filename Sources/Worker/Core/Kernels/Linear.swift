import CKernels

/// How activations meet block-quantised weights: quantised to 8 bits once per matmul and
/// multiplied with integer dot products (`q8`, the default, as llama.cpp does), or kept in
/// float32 (`f32`, exact: what the parity tests use). Float weights always see float32.
public enum ActivationPrecision: String, Sendable, CaseIterable {
    case q8, f32
}

/// What the kernels of a model's weights are chosen from at load: the instruction-set level
/// and how activations meet the weights (which decides whether weights are repacked).
public struct KernelChoice: Sendable, Equatable {
    public var level: Int
    public var activations: ActivationPrecision

    public init(level: Int, activations: ActivationPrecision) {
        self.level = level
        self.activations = activations
    }
}

/// The kernels for one weight, chosen once at load from its encoding and the CPU.
public struct MatmulKernel: @unchecked Sendable {
    let body: tk_matmul_kernel
    public let encoding: WeightEncoding

    public init(encoding: WeightEncoding, level: Int) {
        self.encoding = encoding
        var body = tk_matmul_kernel()
        let status = tk_matmul_kernel_get(encoding.kernelEncoding, Int32(level), &body)
        precondition(status == 0, "no kernel table entry for \(encoding)")
        self.body = body
    }

    /// The instruction set the body runs (≤ the level asked for).
    public var level: Int { Int(body.level) }
    /// Rows per interleaved group of this level's layout (0: weights stay row after row).
    public var packRows: Int { body.pack_rows }
    /// Elements per activation block of the integer path (0: float only).
    var activationBlock: Int { body.act_block }
    var activationBlockBytes: Int { body.act_block_bytes }
}

/// `y = x Wᵀ` for a weight stacked by output rows from parts that share their columns
/// (Q | K | V, gate | up): the parts stay separate tensors, one product covers them all. Each
/// part has the kernel of its own encoding (Q4_K_M files mix Q4_K and Q6_K). With 8-bit
/// activations, parts whose kernel has an interleaved layout are repacked into it at load.
public struct Linear: Sendable {
    public let parts: [WeightMatrix]
    let kernels: [MatmulKernel]
    /// First output row of each part.
    let partStarts: [Int]
    public let inputSize: Int
    public let outputSize: Int
    /// Output rows are shared among threads in multiples of this: whole interleaved groups.
    let granule: Int
    /// How this product's activations meet its weights.
    public let activations: ActivationPrecision
    /// 8-bit activations are multiplied together with their quantisation residual.
    public let residualPass: Bool

    /// `residualPass`: with 8-bit activations, multiply their quantisation residual as well
    /// (two integer passes over the same weight bytes, about 1/127 of one pass's rounding
    /// error), for a product whose error matters most: the LM head, whose logits are sampled
    /// and scored.
    public init(_ parts: [WeightMatrix], kernels choice: KernelChoice, residualPass: Bool = false) {
        precondition(!parts.isEmpty, "a linear layer needs a weight")
        let columns = parts[0].columns
        precondition(parts.allSatisfy { $0.columns == columns }, "stacked weights must share their columns")
        let kernels = parts.map { MatmulKernel(encoding: $0.encoding, level: choice.level) }
        var starts: [Int] = []
        var row = 0
        for part in parts {
            starts.append(row)
            row += part.rows
        }
        // A part is interleaved when its groups line up with the threads' shares: it starts on
        // a group boundary of the stacked output.
        let parts = zip(parts, zip(kernels, starts)).map { part, ks in
            let (kernel, start) = ks
            guard choice.activations == .q8, kernel.packRows > 0, part.layout == .rows, start % kernel.packRows == 0
            else { return part }
            return part.interleaved(for: kernel)
        }
        self.parts = parts
        self.kernels = kernels
        partStarts = starts
        inputSize = columns
        outputSize = row
        granule = max(parts.map(\.layout.rowsPerUnit).max() ?? 1, 4)
        activations = choice.activations
        self.residualPass = residualPass
    }

    public init(_ weight: WeightMatrix, kernels: KernelChoice, residualPass: Bool = false) {
        self.init([weight], kernels: kernels, residualPass: residualPass)
    }

    /// Bytes of weights one product reads.
    public var weightBytes: Int { parts.reduce(0) { $0 + $1.byteCount } }
}

/// Runs products on the compute pool with scratch allocated once: quantised activations for
/// the largest chunk (twice, for a residual pass), one row of floats per thread (a decoded
/// weight row on the exact path, an activation residual), and per thread the two passes'
/// outputs for a slice of weight rows.
public final class MatmulEngine: @unchecked Sendable {
    public let pool: ComputePool
    public let maxRows: Int
    public let maxColumns: Int
    /// Activation rows quantised per block size (32 → tk_q8_32, 256 → tk_q8_256); a residual
    /// pass puts the residuals' rows after the rows.
    private let quantized32: WeightBuffer
    private let quantized256: WeightBuffer
    private let rowScratch: FloatBuffer
    /// Weight rows a residual pass multiplies per kernel call (whole interleaved groups).
    private static let residualSlice = 64
    private let residualOutputs: FloatBuffer

    public init(pool: ComputePool, maxRows: Int, maxColumns: Int) {
        self.pool = pool
        self.maxRows = maxRows
        self.maxColumns = maxColumns
        // Sized from the kernel table's own activation layouts (the 32- and 256-element blocks).
        let bytes32 = MatmulKernel(encoding: .q8_0, level: 0).activationBlockBytes
        let bytes256 = MatmulKernel(encoding: .q4_K, level: 0).activationBlockBytes
        quantized32 = WeightBuffer(count: 2 * maxRows * (maxColumns / 32 + 1) * bytes32)
        quantized256 = WeightBuffer(count: 2 * maxRows * (maxColumns / 256 + 1) * bytes256)
        rowScratch = FloatBuffer(count: pool.threadCount * maxColumns)
        residualOutputs = FloatBuffer(count: pool.threadCount * 2 * maxRows * Self.residualSlice)
    }

    /// `output[r * outputSize + i] = Σ_c input[r * inputSize + c] · W[i][c]` for `rows` rows.
    public func multiply(_ linear: Linear, _ input: UnsafePointer<Float>, rows: Int,
                         into output: UnsafeMutablePointer<Float>) {
        precondition(rows <= maxRows && linear.inputSize <= maxColumns,
                     "product of \(rows)x\(linear.inputSize) exceeds the engine's \(maxRows)x\(maxColumns) scratch")
        let columns = linear.inputSize
        let integer = linear.activations == .q8 && linear.kernels.contains { $0.activationBlock > 0 }
        let residual = integer && linear.residualPass
        if integer { quantize(input, rows: rows, columns: columns, for: linear, residual: residual) }
        let q32 = UnsafeRawPointer(quantized32.pointer), q256 = UnsafeRawPointer(quantized256.pointer)
        let scratch = rowScratch.pointer, passes = residualOutputs.pointer
        let outputSize = linear.outputSize
        let multiplies = outputSize * columns * max(rows, 1)
        let threads = multiplies < 1 << 15 ? 1 : pool.threadCount
        func work(_ thread: Int, _: Int) {
            guard thread < threads else { return }
            let mine = ComputePool.share(outputSize, granule: linear.granule, part: thread, parts: threads)
            for (index, part) in linear.parts.enumerated() {
                let start = linear.partStarts[index]
                let lower = max(mine.lowerBound, start), upper = min(mine.upperBound, start + part.rows)
                guard lower < upper else { continue }
                let kernel = linear.kernels[index]
                let y = output + lower
                if integer, kernel.activationBlock > 0 {
                    let x = kernel.activationBlock == 32 ? q32 : q256
                    let xStride = columns / kernel.activationBlock * kernel.activationBlockBytes
                    let body = part.layout == .rows ? kernel.body.int_matmul! : kernel.body.packed_matmul!
                    guard residual else {
                        body(part.unit(startingAt: lower - start), part.stride, upper - lower, x, xStride, rows, columns,
                             y, outputSize)
                        continue
                    }
                    // Rows and residual rows in one call, so each slice of weights is read once.
                    let both = passes + thread * 2 * maxRows * Self.residualSlice
                    var row = lower
                    while row < upper {
                        let count = min(Self.residualSlice, upper - row)
                        body(part.unit(startingAt: row - start), part.stride, count, x, xStride, 2 * rows, columns,
                             both, count)
                        for r in 0..<rows {
                            let target = output + r * outputSize + row
                            let first = both + r * count, second = both + (rows + r) * count
                            for i in 0..<count { target[i] = first[i] + second[i] }
                        }
                        row += count
                    }
                } else {
                    precondition(part.layout == .rows, "\(part.name): \(part.layout) needs 8-bit activations")
                    withUnsafePointer(to: kernel.body) { body in
                        tk_matmul_float(body, part.row(lower - start), part.stride, upper - lower,
                                        input, columns * MemoryLayout<Float>.stride, rows, columns,
                                        y, outputSize, scratch + thread * columns)
                    }
                }
            }
        }
        if threads == 1 { work(0, 1) } else { pool.run(work) }
    }

    /// Quantises the input once for each activation block size the parts need, and with
    /// `residual` the quantisation residual of each row into the rows after them.
    private func quantize(_ input: UnsafePointer<Float>, rows: Int, columns: Int, for linear: Linear, residual: Bool) {
        let scratch = rowScratch.pointer
        func quantize(blockSize: Int, into target: UnsafeMutableRawPointer) {
            guard let kernel = linear.kernels.first(where: { $0.activationBlock == blockSize }) else { return }
            let rowBytes = columns / blockSize * kernel.activationBlockBytes
            let quantizer = kernel.body.quantize!
            pool.forEachRange(rows, minimumPerThread: 16) { thread, range in
                for r in range {
                    let row = target + r * rowBytes
                    quantizer(input + r * columns, row, columns)
                    guard residual else { continue }
                    let left = scratch + thread * columns
                    tk_q8_residual(blockSize, row, input + r * columns, left, columns)
                    quantizer(left, target + (rows + r) * rowBytes, columns)
                }
            }
        }
        quantize(blockSize: 32, into: quantized32.pointer)
        quantize(blockSize: 256, into: quantized256.pointer)
    }
}

/// A token-embedding table in its stored encoding; rows are decoded as tokens are looked up.
public struct Embedding: @unchecked Sendable {
    public let table: WeightMatrix
    private let decode: tk_dequant_row_fn

    public init(_ table: WeightMatrix) {
        self.table = table
        decode = MatmulKernel(encoding: table.encoding, level: 0).body.dequant_row
    }

    public var width: Int { table.columns }

    public func lookup(_ token: Int, into output: UnsafeMutablePointer<Float>) {
        decode(table.row(token), output, table.columns)
    }
}
