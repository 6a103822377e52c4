import COpenBLAS

/// `y = x · Wᵀ` for a weight `W` of shape `[out, in]`, over `rows` input rows.
/// One row goes through sgemv (OpenBLAS's sgemm is slow for a single row); more rows through
/// one sgemm, which is how a prefill chunk or a batch of decodes amortises the weight reads.
///
/// When the checkpoint's encoding has a kernel, a block-quantised copy serves small row counts
/// (decode steps), reading 4-6x fewer bytes than the float32 matrix; prefill chunks still use
/// sgemm on the float32 weights.
public struct Linear: Sendable {
    public let weight: Matrix
    public let quantized: QuantizedMatrix?

    /// Up to this many rows go through the quantized kernels (each block decoded once per group
    /// of up to four rows); more go through sgemm, whose cost per row falls as rows grow.
    public static let quantizedRowLimit = 8

    public init(weight: Matrix, quantized: QuantizedMatrix? = nil) {
        if let quantized {
            precondition(quantized.rows == weight.rows && quantized.columns == weight.columns,
                         "quantized copy \(quantized.rows)x\(quantized.columns) of a \(weight.rows)x\(weight.columns) weight")
        }
        self.weight = weight
        self.quantized = quantized
    }

    public var inputSize: Int { weight.columns }
    public var outputSize: Int { weight.rows }

    public func callAsFunction(_ input: UnsafePointer<Float>, rows: Int, into output: UnsafeMutablePointer<Float>) {
        if let quantized, rows <= Self.quantizedRowLimit {
            quantized.multiply(input, count: rows, into: output)
            return
        }
        let outSize = Int32(weight.rows), inSize = Int32(weight.columns)
        if rows == 1 {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, outSize, inSize, 1, weight.pointer, inSize,
                        input, 1, 0, output, 1)
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), outSize, inSize, 1,
                        input, inSize, weight.pointer, inSize, 0, output, outSize)
        }
    }
}
