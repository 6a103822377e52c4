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
    /// YaRN: frequencies that turn fewer than `betaSlow` times over the original context are
    /// divided by `factor`, those turning more than `betaFast` times are kept, a linear ramp
    /// between; cos and sin are scaled by `attentionFactor`.
    case yarn(factor: Double, originalMaxPositions: Int, betaFast: Double, betaSlow: Double, attentionFactor: Double,
              truncate: Bool)
    /// Dynamic NTK: past the `originalMaxPositions` the model was trained on, the base grows with
    /// the context served (`θ · (factor · n / original − (factor − 1))^(d / (d − 2))` for a context
    /// of n). Fixed for the served context, as vLLM does: a cached key is never rotated twice.
    case dynamicNTK(factor: Double, originalMaxPositions: Int)
    /// LongRoPE (Phi-3): frequency `i` divided by `short[i]`, or by `long[i]` when the context
    /// served exceeds `originalMaxPositions` (llama.cpp's choice by its context size); cos and
    /// sin scaled by `attentionFactor`.
    case longRope(short: [Double], long: [Double], originalMaxPositions: Int, attentionFactor: Double)

    /// The factor cos and sin are multiplied by (YaRN's and LongRoPE's attention scaling; 1 otherwise).
    public var attentionFactor: Double {
        switch self {
        case .yarn(_, _, _, _, let attentionFactor, _), .longRope(_, _, _, let attentionFactor): return attentionFactor
        default: return 1
        }
    }

    /// The inverse frequencies `θ^(-2i/d)` after scaling, in double precision, for a model
    /// serving `context` positions (only dynamic NTK and LongRoPE depend on it).
    public func inverseFrequencies(base: Double, dimensions: Int, context: Int) -> [Double] {
        let half = dimensions / 2
        func unscaled(_ base: Double) -> [Double] { (0..<half).map { 1.0 / pow(base, Double(2 * $0) / Double(dimensions)) } }
        let plain = unscaled(base)
        switch self {
        case .none:
            return plain
        case .linear(let factor):
            return plain.map { $0 / factor }
        case .dynamicNTK(let factor, let original):
            let length = Double(max(context, original)), d = Double(dimensions)
            return unscaled(base * pow(factor * length / Double(original) - (factor - 1), d / (d - 2)))
        case .longRope(let short, let long, let original, _):
            let divisors = context > original ? long : short
            return plain.enumerated().map { $0.element / divisors[$0.offset] }
        case .frequencyDivisors(let divisors):
            return plain.enumerated().map { $0.element / Double(divisors[$0.offset]) }
        case .yarn(let factor, let original, let betaFast, let betaSlow, _, let truncate):
            // The dimensions where the ramp starts and ends, from the rotations over the original context.
            let d = Double(dimensions)
            func dimension(rotations: Double) -> Double {
                d * log(Double(original) / (rotations * 2 * Double.pi)) / (2 * log(base))
            }
            var low = dimension(rotations: betaFast), high = dimension(rotations: betaSlow)
            if truncate { (low, high) = (low.rounded(.down), high.rounded(.up)) }
            low = max(low, 0)
            high = min(high, d - 1)
            if low == high { high += 0.001 }
            return plain.enumerated().map { index, frequency in
                let kept = 1 - min(max((Double(index) - low) / (high - low), 0), 1)
                return frequency / factor * (1 - kept) + frequency * kept
            }
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

/// Rotary position embedding. Angles are worked out per chunk, for the chunk's positions only
/// (`prepare`, once per forward pass: every layer of one rotary kind shares them), so no table
/// over the model's whole context is kept: Gemma 3's 32k positions × 2 kinds would be 67 MB.
public final class RotaryEmbedding: @unchecked Sendable {
    public let headDimension: Int
    /// Leading dimensions of each head that rotate.
    public let rotaryDimensions: Int
    public let layout: RotaryLayout
    /// Inverse frequencies in float32, as the reference multiplies them by positions.
    private let frequencies: [Float]
    /// Multiplies cos and sin (YaRN, LongRoPE).
    private let attentionFactor: Float
    /// Per chunk row: cos and sin of its position's angles (`rotaryDimensions / 2` each).
    private let cosines: FloatBuffer
    private let sines: FloatBuffer

    /// `context`: the positions the model serves (dynamic NTK and LongRoPE choose their frequencies by it).
    public init(headDimension: Int, rotaryDimensions: Int? = nil, parameters: RotaryParameters, layout: RotaryLayout,
                context: Int, capacity: Int) {
        self.headDimension = headDimension
        let dimensions = rotaryDimensions ?? headDimension
        self.rotaryDimensions = dimensions
        self.layout = layout
        frequencies = parameters.scaling.inverseFrequencies(base: parameters.base, dimensions: dimensions, context: context)
            .map { Float($0) }
        attentionFactor = Float(parameters.scaling.attentionFactor)
        cosines = FloatBuffer(count: max(capacity, 1) * dimensions / 2)
        sines = FloatBuffer(count: max(capacity, 1) * dimensions / 2)
    }

    /// The angles of each token of `batch`, row by row.
    func prepare(_ batch: TokenBatch, pool: ComputePool) {
        let half = rotaryDimensions / 2
        let cosines = self.cosines.pointer, sines = self.sines.pointer, factor = attentionFactor
        frequencies.withUnsafeBufferPointer { frequencies in
            let frequencies = frequencies.baseAddress!
            pool.forEachRange(batch.count, minimumPerThread: 64) { range in
                for t in range {
                    let position = Float(batch.positions[t])
                    for i in 0..<half {
                        // Angles in float32 as the reference computes them, then cos/sin in double.
                        let angle = Double(position * frequencies[i])
                        cosines[t * half + i] = Float(cos(angle)) * factor
                        sines[t * half + i] = Float(sin(angle)) * factor
                    }
                }
            }
        }
    }

    /// Rotates `heads` consecutive head vectors at `vectors` for the chunk's row `token`.
    @inline(__always)
    func apply(_ vectors: UnsafeMutablePointer<Float>, heads: Int, token: Int) {
        let half = rotaryDimensions / 2
        tk_rope(vectors, heads, headDimension, rotaryDimensions, cosines.pointer + token * half,
                sines.pointer + token * half, layout == .interleaved ? 1 : 0)
    }
}
