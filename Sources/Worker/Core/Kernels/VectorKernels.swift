import CKernels

/// RMSNorm over rows of `size` values: `x / sqrt(mean(x²) + eps) * weight`.
public struct RMSNorm: Sendable {
    public let weight: FloatBuffer
    public let epsilon: Float

    public init(weight: FloatBuffer, epsilon: Float) {
        self.weight = weight
        self.epsilon = epsilon
    }

    public func callAsFunction(_ input: UnsafePointer<Float>, rows: Int, into output: UnsafeMutablePointer<Float>) {
        let size = weight.count
        for row in 0..<rows {
            tk_rms_norm(input + row * size, weight.pointer, epsilon, output + row * size, size)
        }
    }
}

/// Element-wise kernels shared by the architectures.
public enum VectorKernels {
    /// The instruction set the C kernels dispatched to on this CPU.
    public static var instructionSet: String { String(cString: tk_kernel_isa()) }

    /// `y += x` over `count` values.
    @inline(__always)
    public static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        tk_axpy(1, x, y, count)
    }

    /// `out = silu(gate) * up`, row by row, where each input row is `[gate | up]` of `2 * size`.
    public static func swiGLU(_ gateUp: UnsafePointer<Float>, rows: Int, size: Int, into output: UnsafeMutablePointer<Float>) {
        for row in 0..<rows {
            let source = gateUp + row * 2 * size
            tk_silu_mul(source, source + size, output + row * size, size)
        }
    }
}
