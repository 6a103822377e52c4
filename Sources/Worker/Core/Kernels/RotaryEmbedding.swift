import CKernels
import Foundation

/// How rotary frequencies are adjusted for long contexts.
public enum RotaryScaling: Sendable, Equatable {
    case none
    /// Positions divided by `factor` (all frequencies divided by it).
    case linear(factor: Double)
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    case llama3(factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double,
                originalMaxPositions: Int)
    /// Per-frequency divisors, as GGUF stores llama3 scaling (`rope_freqs.weight`).
    case frequencyDivisors([Float])

    /// The inverse frequencies `θ^(-2i/d)` after scaling, in double precision.
    public func inverseFrequencies(base: Double, dimensions: Int) -> [Double] {
        let half = dimensions / 2
        let plain = (0..<half).map { 1.0 / pow(base, Double(2 * $0) / Double(dimensions)) }
        switch self {
        case .none:
            return plain
        case .linear(let factor):
            return plain.map { $0 / factor }
        case .frequencyDivisors(let divisors):
            return plain.enumerated().map { $0.element / Double(divisors[$0.offset]) }
        case .llama3(let factor, let low, let high, let original):
            let lowWavelength = Double(original) / low
            let highWavelength = Double(original) / high
            return plain.map { frequency in
                let wavelength = 2 * Double.pi / frequency
                if wavelength < highWavelength { return frequency }
                if wavelength > lowWavelength { return frequency / factor }
                let smooth = (Double(original) / wavelength - low) / (high - low)
                return (1 - smooth) * frequency / factor + smooth * frequency
            }
        }
    }
}

/// Which dimensions rotate together: `i` and `i + d/2` (rotate-half, as Hugging Face Llama
/// checkpoints expect) or `2i` and `2i + 1` (interleaved: llama.cpp's converter permutes the
/// Q/K rows of Llama-family GGUF files for this layout, so the file is used as it is).
public enum RotaryLayout: Sendable, Equatable {
    case rotateHalf, interleaved
}

/// Rotary position embedding with precomputed angles for every position.
public struct RotaryEmbedding: Sendable {
    public let headDimension: Int
    public let maxPositions: Int
    public let layout: RotaryLayout
    private let cosines: FloatBuffer
    private let sines: FloatBuffer

    public init(headDimension: Int, maxPositions: Int, base: Double, scaling: RotaryScaling, layout: RotaryLayout) {
        self.headDimension = headDimension
        self.maxPositions = maxPositions
        self.layout = layout
        let half = headDimension / 2
        let frequencies = scaling.inverseFrequencies(base: base, dimensions: headDimension)
        cosines = FloatBuffer(count: maxPositions * half)
        sines = FloatBuffer(count: maxPositions * half)
        for position in 0..<maxPositions {
            for i in 0..<half {
                // Angles in float32 as the reference computes them, then cos/sin in double.
                let angle = Double(Float(position) * Float(frequencies[i]))
                cosines.pointer[position * half + i] = Float(cos(angle))
                sines.pointer[position * half + i] = Float(sin(angle))
            }
        }
    }

    /// Rotates `heads` consecutive head vectors at `vectors` for one token at `position`.
    @inline(__always)
    public func apply(_ vectors: UnsafeMutablePointer<Float>, heads: Int, position: Int) {
        let half = headDimension / 2
        tk_rope(vectors, heads, headDimension, headDimension, cosines.pointer + position * half,
                sines.pointer + position * half, layout == .interleaved ? 1 : 0)
    }
}
