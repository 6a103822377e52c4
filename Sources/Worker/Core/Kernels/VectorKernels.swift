import CKernels

/// RMSNorm over rows of `size` values: `x / sqrt(mean(x²) + eps) * (weight + offset)`
/// (offset 1 for the families that store `w - 1`).
public struct RMSNorm: Sendable {
    public let weight: FloatBuffer
    public let epsilon: Float
    public let weightOffset: Int32

    public init(weight: FloatBuffer, epsilon: Float, weightOffset: Int32 = 0) {
        self.weight = weight
        self.epsilon = epsilon
        self.weightOffset = weightOffset
    }

    /// One row.
    @inline(__always)
    public func apply(_ input: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>) {
        tk_rms_norm(input, weight.pointer, epsilon, weightOffset, output, weight.count)
    }
}

/// Element-wise kernels shared by the architectures.
public enum VectorKernels {
    /// The instruction set the vector kernels dispatched to on this CPU.
    public static var instructionSet: String { String(cString: tk_vector_isa()) }
}
