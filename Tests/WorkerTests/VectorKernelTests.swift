import CKernels
import Foundation
import Testing
@testable import WorkerCore

/// The dispatched vector kernels (whatever level this process chose: scripts/test runs this suite
/// again with TESSEL_KERNELS=avx2 and =portable) against their portable twins and against
/// double-precision references.
@Suite("Vector kernels and paged attention")
struct VectorKernelTests {
    static func floats(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        let random = CounterRandom(seed: seed)
        return (0..<count).map { (Float(random.uniform(stream: 7, counter: UInt64($0))) * 2 - 1) * scale }
    }

    static func close(_ a: [Float], _ b: [Float], relative: Float) -> Bool {
        let scale = max(b.map(abs).max() ?? 0, 1e-30)
        return zip(a, b).allSatisfy { abs($0 - $1) <= relative * scale }
    }

    @Test("exp, SiLU, GELU, softmax, RMSNorm and dot match the portable bodies and the libm reference")
    func elementwise() {
        for n in [1, 7, 16, 33, 100, 1536] {
            let x = Self.floats(n, seed: 1, scale: 12), up = Self.floats(n, seed: 2)
            var fast = [Float](repeating: 0, count: n), portable = fast
            tk_exp(x, &fast, n)
            #expect(zip(fast, x).allSatisfy { abs($0 - expf($1)) <= 4e-7 * expf($1) }, "exp n=\(n) on \(VectorKernels.instructionSet)")
            tk_silu_mul(x, up, &fast, n)
            tk_silu_mul_portable(x, up, &portable, n)
            let silu = zip(x, up).map { $0 / (1 + expf(-$0)) * $1 }
            #expect(Self.close(fast, silu, relative: 1e-6) && Self.close(portable, silu, relative: 1e-6), "silu n=\(n)")
            tk_gelu_tanh_mul(x, up, &fast, n)
            let gelu = zip(x, up).map { g, u in 0.5 * g * (1 + tanhf(0.7978845608 * (g + 0.044715 * g * g * g))) * u }
            #expect(Self.close(fast, gelu, relative: 1e-5), "gelu n=\(n)")
            var soft = x
            tk_softmax(&soft, n)
            let m = x.max()!, total = x.reduce(0.0) { $0 + exp(Double($1 - m)) }
            #expect(Self.close(soft, x.map { Float(exp(Double($0 - m)) / total) }, relative: 1e-5), "softmax n=\(n)")
            let weight = Self.floats(n, seed: 3)
            tk_rms_norm(x, weight, 1e-5, 1, &fast, n)
            let rms = Float((x.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(n) + 1e-5).squareRoot())
            #expect(Self.close(fast, zip(x, weight).map { $0 / rms * ($1 + 1) }, relative: 1e-5), "rms_norm n=\(n)")
            let dot = zip(x, up).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            #expect(abs(Double(tk_dot(x, up, n)) - dot) <= 1e-5 * max(1, abs(dot)), "dot n=\(n)")
            #expect(abs(tk_exp_sum(x, n, m) - total) <= 1e-6 * total, "exp_sum n=\(n)")
        }
    }

    @Test("RoPE in both layouts rotates the right pairs")
    func rope() {
        let heads = 3, dim = 16, half = dim / 2
        let x = Self.floats(heads * dim, seed: 4)
        let angles = (0..<half).map { Float($0 + 1) * 0.3 }
        let cosines = angles.map(cosf), sines = angles.map(sinf)
        for interleaved in [0, 1] as [Int32] {
            var fast = x, portable = x
            tk_rope(&fast, heads, dim, dim, cosines, sines, interleaved)
            tk_rope_portable(&portable, heads, dim, dim, cosines, sines, interleaved)
            var expected = x
            for h in 0..<heads {
                for i in 0..<half {
                    let (a, b) = interleaved == 1 ? (h * dim + 2 * i, h * dim + 2 * i + 1) : (h * dim + i, h * dim + i + half)
                    expected[a] = x[a] * cosines[i] - x[b] * sines[i]
                    expected[b] = x[b] * cosines[i] + x[a] * sines[i]
                }
            }
            #expect(Self.close(fast, expected, relative: 1e-6) && Self.close(portable, expected, relative: 1e-6), "interleaved \(interleaved)")
        }
    }

    @Test("KV stores round to the same bits on every path and load back exactly", arguments: [TK_KV_F16, TK_KV_BF16, TK_KV_F32])
    func kvConversions(type: tk_kv_type) {
        let n = 100, x = Self.floats(n, seed: 5, scale: 70000)
        var fast = [UInt8](repeating: 0, count: 4 * n), portable = fast
        tk_kv_store(type, x, &fast, n)
        tk_kv_store_portable(type, x, &portable, n)
        #expect(fast == portable)
        var back = [Float](repeating: 0, count: n)
        tk_kv_load(type, fast, &back, n)
        var again = [UInt8](repeating: 0, count: 4 * n)
        tk_kv_store(type, back, &again, n)
        #expect(again == fast, "a loaded value stores to the same bits")
    }

    /// softmax(q·K·scale) V over a scattered block table, in double.
    static func referenceAttention(q: [Float], keys: [[Float]], values: [[Float]], scale: Float, softcap: Float,
                                   range: Range<Int>) -> [Float] {
        let dim = q.count
        var scores = range.map { p -> Double in
            let s = Double(zip(q, keys[p]).reduce(Float(0)) { $0 + $1.0 * $1.1 }) * Double(scale)
            return softcap > 0 ? Double(softcap) * tanh(s / Double(softcap)) : s
        }
        let m = scores.max()!
        scores = scores.map { exp($0 - m) }
        let total = scores.reduce(0, +)
        return (0..<dim).map { d in Float(zip(range, scores).reduce(0.0) { $0 + $1.1 * Double(values[$1.0][d]) } / total) }
    }

    @Test("paged attention equals softmax(qKᵀ)V for prefill tiles and decode rows, with softcap and window",
          arguments: [TK_KV_F32, TK_KV_F16, TK_KV_BF16])
    func attention(type: tk_kv_type) {
        let dim = 64, blockSize = 16, positions = 300, elementBytes = type == TK_KV_F32 ? 4 : 2
        let blocks = (positions + blockSize - 1) / blockSize
        let table: [Int32] = (0..<blocks).map { Int32((($0 * 7) % blocks)) }  // a permutation (7 ∤ 19)
        let keyFloats = (0..<positions).map { Self.floats(dim, seed: 100 + UInt64($0)) }
        let valueFloats = (0..<positions).map { Self.floats(dim, seed: 1000 + UInt64($0)) }
        var kCache = [UInt8](repeating: 0, count: blocks * blockSize * dim * elementBytes), vCache = kCache
        // What the cache holds, as floats (f16/bf16 round the vectors).
        var keys = keyFloats, values = valueFloats
        for p in 0..<positions {
            let offset = (Int(table[p / blockSize]) * blockSize + p % blockSize) * dim * elementBytes
            kCache.withUnsafeMutableBytes { tk_kv_store(type, keyFloats[p], $0.baseAddress! + offset, dim) }
            vCache.withUnsafeMutableBytes { tk_kv_store(type, valueFloats[p], $0.baseAddress! + offset, dim) }
            kCache.withUnsafeBytes { tk_kv_load(type, $0.baseAddress! + offset, &keys[p], dim) }
            vCache.withUnsafeBytes { tk_kv_load(type, $0.baseAddress! + offset, &values[p], dim) }
        }
        // (rows, heads per KV head): prefill tiles that fill the AVX-512 lanes partly, exactly
        // (16 × 4) and over several tiles (40 × 1), and a decode row.
        let shapes = [(11, 3), (20, 4), (40, 1), (1, 3)]
        for ((rows, group), (softcap, window)) in shapes.flatMap({ shape in [(Float(0), 0), (Float(20), 0), (Float(0), 50)].map { (shape, $0) } }) {
            let first = positions - rows  // a prefill tile of the last positions
            let q = Self.floats(rows * group * dim, seed: 9, scale: 0.5)
            let contexts = (0..<rows).map { Int32(first + $0 + 1) }
            var out = [Float](repeating: 0, count: rows * group * dim), portable = out
            var scratch = [Float](repeating: 0, count: tk_attention_scratch_floats(group, dim, rows))
            kCache.withUnsafeBytes { k in
                vCache.withUnsafeBytes { v in
                    var p = tk_attention_params(head_dim: dim, group: group, k_cache: k.baseAddress!, v_cache: v.baseAddress!,
                                                block_stride: blockSize * dim, block_size: blockSize, kv_type: type,
                                                scale: 0.125, softcap: softcap, window: window)
                    tk_attention(&p, table, rows, q, group * dim, contexts, &out, group * dim, &scratch)
                    tk_attention_portable(&p, table, rows, q, group * dim, contexts, &portable, group * dim, &scratch)
                }
            }
            for r in 0..<rows {
                let end = Int(contexts[r]), start = window > 0 ? max(0, end - window) : 0
                for g in 0..<group {
                    let at = (r * group + g) * dim
                    let expected = Self.referenceAttention(q: Array(q[at..<(at + dim)]), keys: keys, values: values,
                                                           scale: 0.125, softcap: softcap, range: start..<end)
                    #expect(Self.close(Array(out[at..<(at + dim)]), expected, relative: 1e-5), "rows \(rows) group \(group): row \(r) head \(g) softcap \(softcap) window \(window)")
                    #expect(Self.close(Array(portable[at..<(at + dim)]), expected, relative: 1e-5))
                }
            }
        }
    }
}
