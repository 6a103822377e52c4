/* The 32-element ggml encodings (q4_0, q4_1, q5_0, q5_1, q8_0) against tk_q8_32 activations:
 * integer matmul bodies, exact row dequantisers and the activation quantiser.
 *
 * The x86 bodies share one template (the #else branch at the end of this file, which the file
 * includes once per ISA), so the loops exist once; the per-block helpers are written once per
 * ISA above it.
 *
 * How the x86 loops spend their time. A tile is up to 4 weight rows × 4 activation rows; k is
 * walked in segments of Q32_SEGMENT blocks. Per segment, eight blocks per vector op:
 *   - every (weight row, activation row) pair's per-block scale d_w * d_a goes to a stack array;
 *   - the offset term, which is the same for all 32 elements of a block (q4_0: -8 d_w s_a,
 *     q5_0: -16 d_w s_a, q4_1/q5_1: m_w s_a, with s_a = d_a Σ q_a), is summed outright.
 * Then the block loop decodes each weight block once into the unsigned operand of the dot
 * product (the stored quants, without their offset), and per pair does the integer dot
 * product into 8 int32 lanes, one conversion, and one fma with the broadcast scale. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ggml_blocks.h"
#include "kernels_internal.h"

#ifndef TK_Q32_ISA

#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum { Q32_Q4_0, Q32_Q4_1, Q32_Q5_0, Q32_Q5_1, Q32_Q8_0 };

/* Every helper below takes the encoding as a constant: always_inline makes each public body a
 * specialisation with the switches folded away. */
#define Q32_INLINE static inline __attribute__((always_inline))

Q32_INLINE size_t q32_block_bytes(int enc) {
    switch (enc) {
    case Q32_Q4_0: return sizeof(block_q4_0);
    case Q32_Q4_1: return sizeof(block_q4_1);
    case Q32_Q5_0: return sizeof(block_q5_0);
    case Q32_Q5_1: return sizeof(block_q5_1);
    default: return sizeof(block_q8_0);
    }
}

Q32_INLINE size_t q32_qs_offset(int enc) {
    switch (enc) {
    case Q32_Q4_0: return offsetof(block_q4_0, qs);
    case Q32_Q4_1: return offsetof(block_q4_1, qs);
    case Q32_Q5_0: return offsetof(block_q5_0, qs);
    case Q32_Q5_1: return offsetof(block_q5_1, qs);
    default: return offsetof(block_q8_0, qs);
    }
}

Q32_INLINE size_t q32_qh_offset(int enc) {
    return enc == Q32_Q5_0 ? offsetof(block_q5_0, qh) : offsetof(block_q5_1, qh);
}

Q32_INLINE int q32_has_min(int enc) { return enc == Q32_Q4_1 || enc == Q32_Q5_1; }
Q32_INLINE int q32_has_high_bit(int enc) { return enc == Q32_Q5_0 || enc == Q32_Q5_1; }

#define Q32_ACT_D offsetof(tk_q8_32, d)
#define Q32_ACT_S offsetof(tk_q8_32, s)
#define Q32_ACT_QS offsetof(tk_q8_32, qs)

/* The block's quants as stored, before any offset: 0..15 (q4), 0..31 (q5), -127..127 (q8). */
Q32_INLINE void q32_quants(int enc, const uint8_t *blk, int8_t q[TK_QK]) {
    const uint8_t *qs = blk + q32_qs_offset(enc);
    if (enc == Q32_Q8_0) {
        memcpy(q, qs, TK_QK);
        return;
    }
    uint32_t qh = q32_has_high_bit(enc) ? tk_read_u32(blk + q32_qh_offset(enc)) : 0;
    for (int j = 0; j < TK_QK / 2; j++) {
        q[j] = (int8_t)((qs[j] & 0x0F) | (((qh >> j) & 1) << 4));
        q[j + TK_QK / 2] = (int8_t)((qs[j] >> 4) | (((qh >> (j + TK_QK / 2)) & 1) << 4));
    }
}

/* ---- portable: the reference ---- */

Q32_INLINE void q32_dequant_row(int enc, const void *w, float *out, size_t k) {
    const uint8_t *row = (const uint8_t *)w;
    size_t bytes = q32_block_bytes(enc);
    for (size_t b = 0; b < k / TK_QK; b++) {
        const uint8_t *blk = row + b * bytes;
        int8_t q[TK_QK];
        q32_quants(enc, blk, q);
        float d = tk_half_to_float(tk_read_u16(blk));
        float m = q32_has_min(enc) ? tk_half_to_float(tk_read_u16(blk + 2)) : 0.0f;
        int offset = enc == Q32_Q4_0 ? 8 : enc == Q32_Q5_0 ? 16 : 0;
        for (int j = 0; j < TK_QK; j++) {
            /* Separate statements: ggml rounds the product before adding the min, and a single
             * expression could be contracted into an fma. */
            float v = (float)(q[j] - offset) * d;
            if (q32_has_min(enc)) v += m;
            out[b * TK_QK + (size_t)j] = v;
        }
    }
}

Q32_INLINE void q32_matmul_portable(int enc, TK_MATMUL_ARGS) {
    size_t nb = k / TK_QK, bytes = q32_block_bytes(enc);
    const uint8_t *xs = (const uint8_t *)x;
    for (size_t i = 0; i < rows; i++) {
        const uint8_t *row = (const uint8_t *)w + i * w_stride;
        for (size_t j0 = 0; j0 < nx; j0 += 4) {
            size_t group = nx - j0 < 4 ? nx - j0 : 4;
            float acc[4] = {0, 0, 0, 0};
            for (size_t b = 0; b < nb; b++) {
                const uint8_t *blk = row + b * bytes;
                int8_t q[TK_QK];
                q32_quants(enc, blk, q);
                float dw = tk_half_to_float(tk_read_u16(blk));
                float offset = enc == Q32_Q4_0   ? -8.0f * dw
                               : enc == Q32_Q5_0 ? -16.0f * dw
                               : q32_has_min(enc) ? tk_half_to_float(tk_read_u16(blk + 2))
                                                  : 0.0f;
                for (size_t c = 0; c < group; c++) {
                    const uint8_t *a = xs + (j0 + c) * x_stride + b * sizeof(tk_q8_32);
                    const int8_t *aq = (const int8_t *)(a + Q32_ACT_QS);
                    int32_t isum = 0;
                    for (int e = 0; e < TK_QK; e++) isum += (int32_t)q[e] * (int32_t)aq[e];
                    acc[c] += dw * tk_read_f32(a + Q32_ACT_D) * (float)isum;
                    if (enc != Q32_Q8_0) acc[c] += offset * tk_read_f32(a + Q32_ACT_S);
                }
            }
            for (size_t c = 0; c < group; c++) y[(j0 + c) * y_stride + i] = acc[c];
        }
    }
}

/* Division rather than a multiply by 1/d: 1/d overflows when max|x| is below ~127 / FLT_MAX,
 * and x / d is what the contract states. The clamps are written as (v > c ? v : c) and
 * (v < c ? v : c) because that is exactly what maxps/minps compute (NaN gives c), so the vector
 * quantisers agree bit for bit even on non-finite input. Rounding is the current mode (nearest
 * even by default) in nearbyintf and cvtps2dq alike. */
void tk_quantize_q8_32_portable(const float *x, void *out, size_t k) {
    uint8_t *o = (uint8_t *)out;
    for (size_t b = 0; b < k / TK_QK; b++) {
        const float *xb = x + b * TK_QK;
        float amax = 0.0f;
        for (int j = 0; j < TK_QK; j++) {
            float a = fabsf(xb[j]);
            amax = a > amax ? a : amax;
        }
        tk_q8_32 blk;
        blk.d = amax / 127.0f;
        int32_t sum = 0;
        for (int j = 0; j < TK_QK; j++) {
            int q = 0;
            if (blk.d != 0.0f) {
                float v = xb[j] / blk.d;
                v = v > -127.0f ? v : -127.0f;
                v = v < 127.0f ? v : 127.0f;
                q = (int)nearbyintf(v);
            }
            blk.qs[j] = (int8_t)q;
            sum += q;
        }
        blk.s = blk.d * (float)sum;
        memcpy(o + b * sizeof blk, &blk, sizeof blk);
    }
}

/* ---- interleaved row groups (the layout of matmul_packed.c) ----
 * A group-block is the same 32 columns of TK_ROW_GROUP consecutive rows. Per block of each row:
 * the unsigned quants the dot product multiplies (q4: 0..15, q5: 0..31, q8: q + 128), its
 * scale d, and the coefficient of the activation block's sum s_a in the result (q4_0: -8 d,
 * q5_0: -16 d, q8_0: -128 d, q4_1/q5_1: m), so that a row's block contributes
 * d d_a Σ u q_a + coef s_a. */
Q32_INLINE void q32_pack_rows(int enc, const void *w, size_t w_stride, size_t rows, size_t k, void *out) {
    const size_t nb = k / TK_QK, bytes = q32_block_bytes(enc), group_block = TK_ROW_GROUP * bytes;
    const size_t groups = (rows + TK_ROW_GROUP - 1) / TK_ROW_GROUP;
    uint8_t *o = (uint8_t *)out;
    memset(o, 0, groups * nb * group_block);
    const size_t qs_at = TK_ROW_GROUP * 2 * (q32_has_min(enc) ? 2 : 1) + (q32_has_high_bit(enc) ? 64 : 0);
    for (size_t i = 0; i < rows; i++) {
        const size_t r = i % TK_ROW_GROUP;
        const uint8_t *row = (const uint8_t *)w + i * w_stride;
        uint8_t *group = o + (i / TK_ROW_GROUP) * nb * group_block;
        for (size_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + b * bytes;
            uint8_t *gb = group + b * group_block;
            memcpy(gb + 2 * r, blk, 2);                                                 /* d */
            if (q32_has_min(enc)) memcpy(gb + 2 * TK_ROW_GROUP + 2 * r, blk + 2, 2); /* m */
            int8_t q[TK_QK];
            q32_quants(enc, blk, q);
            uint8_t *qs = gb + qs_at;
            uint8_t *hi = q32_has_high_bit(enc) ? gb + qs_at - 64 : NULL;
            for (int e = 0; e < TK_QK; e++) {
                const int j = e / 4, lane = (int)(4 * r) + e % 4;
                if (enc == Q32_Q8_0) {
                    qs[64 * j + lane] = (uint8_t)((int)q[e] + 128);
                } else {
                    qs[64 * (j % 4) + lane] |= (uint8_t)((q[e] & 0x0F) << (j < 4 ? 0 : 4));
                    if (q32_has_high_bit(enc) && (q[e] & 0x10)) hi[8 * j + lane / 8] |= (uint8_t)(1u << (lane % 8));
                }
            }
        }
    }
}

#define Q32_PUBLIC_PACK(enc, id) \
    void tk_pack_rows_##enc(const void *w, size_t w_stride, size_t rows, size_t k, void *out) { \
        q32_pack_rows(id, w, w_stride, rows, k, out); \
    }

Q32_PUBLIC_PACK(q4_0, Q32_Q4_0)
Q32_PUBLIC_PACK(q4_1, Q32_Q4_1)
Q32_PUBLIC_PACK(q5_0, Q32_Q5_0)
Q32_PUBLIC_PACK(q5_1, Q32_Q5_1)
Q32_PUBLIC_PACK(q8_0, Q32_Q8_0)

#define Q32_PUBLIC_PORTABLE(enc, id) \
    void tk_matmul_##enc##_portable(TK_MATMUL_ARGS) { \
        q32_matmul_portable(id, w, w_stride, rows, x, x_stride, nx, k, y, y_stride); \
    } \
    void tk_dequant_row_##enc(const void *w, float *out, size_t k) { q32_dequant_row(id, w, out, k); }

Q32_PUBLIC_PORTABLE(q4_0, Q32_Q4_0)
Q32_PUBLIC_PORTABLE(q4_1, Q32_Q4_1)
Q32_PUBLIC_PORTABLE(q5_0, Q32_Q5_0)
Q32_PUBLIC_PORTABLE(q5_1, Q32_Q5_1)
Q32_PUBLIC_PORTABLE(q8_0, Q32_Q8_0)

#if defined(__x86_64__)

/* A weight block decoded into the unsigned operand of the dot product (raw: q8_0's signed
 * bytes where the AVX2 body needs them), and an activation block's quants (bias: the int32
 * lanes the AVX-512 q8_0 dot product starts from). */
typedef struct {
    __m256i q, raw;
} q32_wblock;

typedef struct {
    __m256i q, bias;
} q32_ablock;

/* ---- AVX2 block helpers ---- */

#define Q32_AVX2 __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

/* Element j of the block in byte j: low nibbles first, then high nibbles. */
Q32_AVX2 __m256i q32_nibbles_avx2(const uint8_t *qs) {
    __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    both = _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

/* 0x10 in byte j where bit j of qh is set: byte j/8 of qh to byte j, then test bit j%8. */
Q32_AVX2 __m256i q32_high_bits_avx2(const uint8_t *qh) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)tk_read_u32(qh)), spread);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* Σ over each group of four bytes of u (unsigned) * s (signed). Exact for our operands: a pair
 * of products stays below 2 * 31 * 127 (or 2 * 127 * 127 for q8_0's sign trick) < 2^15. */
Q32_AVX2 __m256i q32_dot_avx2(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* q8_0 keeps |w|, and its sign moves onto the activations in q32_isum_avx2: (a + 128) * w
 * would saturate maddubs. */
Q32_AVX2 q32_wblock q32_decode_avx2(int enc, const uint8_t *blk) {
    q32_wblock b;
    const uint8_t *qs = blk + q32_qs_offset(enc);
    b.raw = _mm256_setzero_si256();
    if (enc == Q32_Q8_0) {
        b.raw = _mm256_loadu_si256((const __m256i *)qs);
        b.q = _mm256_abs_epi8(b.raw);
        return b;
    }
    b.q = q32_nibbles_avx2(qs);
    if (q32_has_high_bit(enc)) b.q = _mm256_or_si256(b.q, q32_high_bits_avx2(blk + q32_qh_offset(enc)));
    return b;
}

Q32_AVX2 q32_ablock q32_activation_avx2(int enc, const uint8_t *blk) {
    (void)enc;
    q32_ablock a;
    a.q = _mm256_loadu_si256((const __m256i *)(blk + Q32_ACT_QS));
    a.bias = _mm256_setzero_si256();
    return a;
}

Q32_AVX2 __m256i q32_isum_avx2(int enc, const q32_wblock *wb, const q32_ablock *ab) {
    if (enc == Q32_Q8_0) return q32_dot_avx2(wb->q, _mm256_sign_epi8(ab->q, wb->raw));
    return q32_dot_avx2(wb->q, ab->q);
}

/* What the lanes of a finished accumulator are worth. */
Q32_AVX2 __m256 q32_lane_weights_avx2(int enc) {
    (void)enc;
    return _mm256_set1_ps(1.0f);
}

/* 16 registers: at most 8 accumulators without spilling. */
Q32_AVX2 int q32_tile_rows_avx2(int nc) { return nc <= 2 ? 4 : 2; }

/* ---- shared by the two vpdpbusd bodies (AVX-512 VL and AVX-VNNI) ---- */

/* The unsigned operand for the encodings without a high bit: q8_0's quants + 128 (cancelled by
 * the activation's bias), q4's low nibbles and, with one and, its high nibbles left in place:
 * worth 16 times their value, which q32_vnni_lane_weights takes off once at the end (vpdpbusd
 * does not saturate). */
Q32_AVX2 __m256i q32_vnni_operand(int enc, const uint8_t *qs) {
    if (enc == Q32_Q8_0) return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)qs), _mm256_set1_epi8((char)0x80));
    __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    return _mm256_and_si256(both, _mm256_setr_epi64x(0x0F0F0F0F0F0F0F0Fll, 0x0F0F0F0F0F0F0F0Fll,
                                                     (long long)0xF0F0F0F0F0F0F0F0ull, (long long)0xF0F0F0F0F0F0F0F0ull));
}

Q32_AVX2 __m256 q32_vnni_lane_weights(int enc) {
    if (q32_has_high_bit(enc) || enc == Q32_Q8_0) return _mm256_set1_ps(1.0f);
    return _mm256_setr_ps(1, 1, 1, 1, 0.0625f, 0.0625f, 0.0625f, 0.0625f);
}

/* ---- AVX-512 block helpers (256-bit vectors: vpdpbusd via VL, and 32 registers) ---- */

#define Q32_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c"), always_inline)) \
    static inline

Q32_AVX512 q32_wblock q32_decode_avx512(int enc, const uint8_t *blk) {
    q32_wblock b;
    const uint8_t *qs = blk + q32_qs_offset(enc);
    b.raw = _mm256_setzero_si256();
    if (!q32_has_high_bit(enc)) {
        b.q = q32_vnni_operand(enc, qs);
        return b;
    }
    __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    both = _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    b.q = _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
    b.q = _mm256_mask_add_epi8(b.q, (__mmask32)tk_read_u32(blk + q32_qh_offset(enc)), b.q, _mm256_set1_epi8(0x10));
    return b;
}

/* q8_0: each lane starts at -128 * Σ of its four activation quants, which cancels the + 128 on
 * the weights exactly; computed once per activation block, shared by the tile's weight rows. */
Q32_AVX512 q32_ablock q32_activation_avx512(int enc, const uint8_t *blk) {
    q32_ablock a;
    a.q = _mm256_loadu_si256((const __m256i *)(blk + Q32_ACT_QS));
    a.bias = _mm256_setzero_si256();
    if (enc == Q32_Q8_0)
        a.bias = _mm256_sub_epi32(_mm256_setzero_si256(),
                                  _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), a.q));
    return a;
}

Q32_AVX512 __m256i q32_isum_avx512(int enc, const q32_wblock *wb, const q32_ablock *ab) {
    (void)enc;
    return _mm256_dpbusd_epi32(ab->bias, wb->q, ab->q);
}

Q32_AVX512 __m256 q32_lane_weights_avx512(int enc) { return q32_vnni_lane_weights(enc); }

/* 32 registers: a 4 × 4 tile's 16 accumulators fit. */
Q32_AVX512 int q32_tile_rows_avx512(int nc) {
    (void)nc;
    return 4;
}

/* ---- AVX-VNNI block helpers (AVX2 plus the VEX vpdpbusd: 16 registers, no masks) ----
 * The AVX-512 helpers' arithmetic, with AVX2's high-bit expansion for q5. */

#define Q32_VNNI __attribute__((target("avx2,fma,f16c,avxvnni"), always_inline)) static inline

Q32_VNNI q32_wblock q32_decode_avxvnni(int enc, const uint8_t *blk) {
    q32_wblock b;
    const uint8_t *qs = blk + q32_qs_offset(enc);
    b.raw = _mm256_setzero_si256();
    b.q = q32_has_high_bit(enc) ? _mm256_or_si256(q32_nibbles_avx2(qs), q32_high_bits_avx2(blk + q32_qh_offset(enc)))
                                : q32_vnni_operand(enc, qs);
    return b;
}

Q32_VNNI q32_ablock q32_activation_avxvnni(int enc, const uint8_t *blk) {
    q32_ablock a;
    a.q = _mm256_loadu_si256((const __m256i *)(blk + Q32_ACT_QS));
    a.bias = _mm256_setzero_si256();
    if (enc == Q32_Q8_0)
        a.bias = _mm256_sub_epi32(_mm256_setzero_si256(),
                                  _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), a.q));
    return a;
}

Q32_VNNI __m256i q32_isum_avxvnni(int enc, const q32_wblock *wb, const q32_ablock *ab) {
    (void)enc;
    return _mm256_dpbusd_avx_epi32(ab->bias, wb->q, ab->q);
}

Q32_VNNI __m256 q32_lane_weights_avxvnni(int enc) { return q32_vnni_lane_weights(enc); }

Q32_VNNI int q32_tile_rows_avxvnni(int nc) { return nc <= 2 ? 4 : 2; }

/* ---- the template, once per ISA ---- */

#define TK_Q32_ISA avx2
#define TK_Q32_TARGET "avx2,fma,f16c"
#include "matmul_q32.c"

#define TK_Q32_ISA avxvnni
#define TK_Q32_TARGET "avx2,fma,f16c,avxvnni"
#define TK_Q32_NO_QUANTIZER /* the AVX2 quantiser serves this level */
#include "matmul_q32.c"

#define TK_Q32_ISA avx512
#define TK_Q32_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,f16c"
#include "matmul_q32.c"

#else /* no x86: the ISA names serve the portable bodies */

#define Q32_PUBLIC_FALLBACK(enc) \
    void tk_matmul_##enc##_avx2(TK_MATMUL_ARGS) { \
        tk_matmul_##enc##_portable(w, w_stride, rows, x, x_stride, nx, k, y, y_stride); \
    } \
    void tk_matmul_##enc##_avxvnni(TK_MATMUL_ARGS) { \
        tk_matmul_##enc##_portable(w, w_stride, rows, x, x_stride, nx, k, y, y_stride); \
    } \
    void tk_matmul_##enc##_avx512(TK_MATMUL_ARGS) { \
        tk_matmul_##enc##_portable(w, w_stride, rows, x, x_stride, nx, k, y, y_stride); \
    }

Q32_PUBLIC_FALLBACK(q4_0)
Q32_PUBLIC_FALLBACK(q4_1)
Q32_PUBLIC_FALLBACK(q5_0)
Q32_PUBLIC_FALLBACK(q5_1)
Q32_PUBLIC_FALLBACK(q8_0)

void tk_quantize_q8_32_avx2(const float *x, void *out, size_t k) { tk_quantize_q8_32_portable(x, out, k); }
void tk_quantize_q8_32_avx512(const float *x, void *out, size_t k) { tk_quantize_q8_32_portable(x, out, k); }

#endif /* __x86_64__ */

#else /* TK_Q32_ISA: the x86 template; needs only AVX2 + F16C beyond the helpers it calls */

#define Q32_CAT2(a, b) a##_##b
#define Q32_CAT(a, b) Q32_CAT2(a, b)
#define Q32_FN(name) Q32_CAT(name, TK_Q32_ISA)
#define Q32_T __attribute__((target(TK_Q32_TARGET), always_inline)) static inline

Q32_T float Q32_FN(q32_hsum)(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* All ones in lanes 0..last, zero above. */
Q32_T __m256 Q32_FN(q32_live_lanes)(size_t last) {
    return _mm256_castsi256_ps(
        _mm256_cmpgt_epi32(_mm256_set1_epi32((int)last + 1), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}

/* d (and m) of 8 consecutive weight blocks, of which blocks last+1.. are not there (they read
 * block last again and come out zero). Inserts measured faster than gathers or vpermt2w. */
Q32_T void Q32_FN(q32_weight_scales)(int enc, const uint8_t *p, size_t last, __m256 *d, __m256 *m) {
    const size_t bytes = q32_block_bytes(enc);
#define Q32_AT(j) (p + ((size_t)(j) <= last ? (size_t)(j) : last) * bytes)
    if (q32_has_min(enc)) {
        /* d | m << 16 per block; split into the d halves, then the m halves. */
        const __m128i split = _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
        __m128i lo = _mm_cvtsi32_si128((int)tk_read_u32(Q32_AT(0)));
        lo = _mm_insert_epi32(lo, (int)tk_read_u32(Q32_AT(1)), 1);
        lo = _mm_insert_epi32(lo, (int)tk_read_u32(Q32_AT(2)), 2);
        lo = _mm_insert_epi32(lo, (int)tk_read_u32(Q32_AT(3)), 3);
        __m128i hi = _mm_cvtsi32_si128((int)tk_read_u32(Q32_AT(4)));
        hi = _mm_insert_epi32(hi, (int)tk_read_u32(Q32_AT(5)), 1);
        hi = _mm_insert_epi32(hi, (int)tk_read_u32(Q32_AT(6)), 2);
        hi = _mm_insert_epi32(hi, (int)tk_read_u32(Q32_AT(7)), 3);
        lo = _mm_shuffle_epi8(lo, split);
        hi = _mm_shuffle_epi8(hi, split);
        *d = _mm256_cvtph_ps(_mm_unpacklo_epi64(lo, hi));
        *m = _mm256_cvtph_ps(_mm_unpackhi_epi64(lo, hi));
    } else {
        __m128i h = _mm_cvtsi32_si128(tk_read_u16(Q32_AT(0)));
        h = _mm_insert_epi16(h, tk_read_u16(Q32_AT(1)), 1);
        h = _mm_insert_epi16(h, tk_read_u16(Q32_AT(2)), 2);
        h = _mm_insert_epi16(h, tk_read_u16(Q32_AT(3)), 3);
        h = _mm_insert_epi16(h, tk_read_u16(Q32_AT(4)), 4);
        h = _mm_insert_epi16(h, tk_read_u16(Q32_AT(5)), 5);
        h = _mm_insert_epi16(h, tk_read_u16(Q32_AT(6)), 6);
        h = _mm_insert_epi16(h, tk_read_u16(Q32_AT(7)), 7);
        *d = _mm256_cvtph_ps(h);
        *m = _mm256_setzero_ps();
    }
#undef Q32_AT
    if (last < 7) {
        *d = _mm256_and_ps(*d, Q32_FN(q32_live_lanes)(last));
        *m = _mm256_and_ps(*m, Q32_FN(q32_live_lanes)(last));
    }
}

/* d and s of 8 consecutive activation blocks, the same way. (d, s) are a block's first 8
 * bytes: two blocks per 128 bits, then deinterleave. */
Q32_T void Q32_FN(q32_act_scales)(const uint8_t *p, size_t last, __m256 *d, __m256 *s) {
#define Q32_AT(j) (p + ((size_t)(j) <= last ? (size_t)(j) : last) * sizeof(tk_q8_32))
#define Q32_PAIR(j) _mm_insert_epi64(_mm_cvtsi64_si128((long long)tk_read_u64(Q32_AT(j))), (long long)tk_read_u64(Q32_AT((j) + 1)), 1)
    __m256 even = _mm256_castsi256_ps(_mm256_set_m128i(Q32_PAIR(4), Q32_PAIR(0)));
    __m256 odd = _mm256_castsi256_ps(_mm256_set_m128i(Q32_PAIR(6), Q32_PAIR(2)));
#undef Q32_PAIR
#undef Q32_AT
    *d = _mm256_shuffle_ps(even, odd, _MM_SHUFFLE(2, 0, 2, 0));
    *s = _mm256_shuffle_ps(even, odd, _MM_SHUFFLE(3, 1, 3, 1));
    if (last < 7) {
        *d = _mm256_and_ps(*d, Q32_FN(q32_live_lanes)(last));
        *s = _mm256_and_ps(*s, Q32_FN(q32_live_lanes)(last));
    }
}

/* Blocks per segment (a multiple of 8). The scales go from registers straight into the stack
 * array: staged through memory at another width, their reloads stalled on store forwarding,
 * which cost a third of the run time. */
#define Q32_SEGMENT 32

/* Eight blocks (last + 1 of them real) of every pair of the tile: scale[r][c][g..] = d_w d_a,
 * and off[r][c] += the offset terms. */
Q32_T void Q32_FN(q32_scale_group)(int enc, int nr, int nc, const uint8_t *w, size_t w_stride, const uint8_t *x,
                                   size_t x_stride, size_t last, float scale[4][4][Q32_SEGMENT], size_t g,
                                   __m256 off[4][4]) {
    __m256 da[4], sa[4];
    for (int c = 0; c < nc; c++) Q32_FN(q32_act_scales)(x + (size_t)c * x_stride, last, &da[c], &sa[c]);
    for (int r = 0; r < nr; r++) {
        __m256 d, m;
        Q32_FN(q32_weight_scales)(enc, w + (size_t)r * w_stride, last, &d, &m);
        __m256 coef = enc == Q32_Q4_0   ? _mm256_mul_ps(d, _mm256_set1_ps(-8.0f))
                      : enc == Q32_Q5_0 ? _mm256_mul_ps(d, _mm256_set1_ps(-16.0f))
                                        : m;
        for (int c = 0; c < nc; c++) {
            _mm256_storeu_ps(scale[r][c] + g, _mm256_mul_ps(d, da[c]));
            if (enc != Q32_Q8_0) off[r][c] = _mm256_fmadd_ps(coef, sa[c], off[r][c]);
        }
    }
}

/* nr weight rows × nc activation rows over the whole of k: every weight block is decoded once
 * and every activation block loaded once per tile. nr and nc are constants at every call, so
 * the accumulator arrays are registers. pf: bytes from a weight row to the row to prefetch. */
Q32_T void Q32_FN(q32_tile)(int enc, int nr, int nc, const uint8_t *w, size_t w_stride, const uint8_t *x,
                            size_t x_stride, size_t nb, float *y, size_t y_stride, size_t pf) {
    float scale[4][4][Q32_SEGMENT];
    __m256 acc[4][4], off[4][4];
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++) acc[r][c] = off[r][c] = _mm256_setzero_ps();
    const size_t bytes = q32_block_bytes(enc);
    for (size_t b0 = 0; b0 < nb; b0 += Q32_SEGMENT) {
        const size_t n = nb - b0 < Q32_SEGMENT ? nb - b0 : Q32_SEGMENT;
        const uint8_t *ws = w + b0 * bytes, *xs = x + b0 * sizeof(tk_q8_32);
        for (size_t g = 0; g < n; g += 8) {
            /* A constant 7 for whole groups, so the clamping in the loaders folds away. */
            if (n - g >= 8)
                Q32_FN(q32_scale_group)(enc, nr, nc, ws + g * bytes, w_stride, xs + g * sizeof(tk_q8_32), x_stride, 7,
                                        scale, g, off);
            else
                Q32_FN(q32_scale_group)(enc, nr, nc, ws + g * bytes, w_stride, xs + g * sizeof(tk_q8_32), x_stride,
                                        n - g - 1, scale, g, off);
        }
        for (size_t b = 0; b < n; b++) {
            q32_ablock a[4];
            for (int c = 0; c < nc; c++)
                a[c] = Q32_FN(q32_activation)(enc, xs + (size_t)c * x_stride + b * sizeof(tk_q8_32));
            /* The hardware prefetcher does not follow a tile's rows into the next ones in time;
             * asking for those lines well ahead, into L2, roughly doubles the out-of-cache speed. */
            for (int r = 0; r < nr; r++)
                _mm_prefetch((const char *)(ws + (size_t)r * w_stride + pf + b * bytes), _MM_HINT_T1);
            for (int r = 0; r < nr; r++) {
                q32_wblock wb = Q32_FN(q32_decode)(enc, ws + (size_t)r * w_stride + b * bytes);
                for (int c = 0; c < nc; c++)
                    acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Q32_FN(q32_isum)(enc, &wb, &a[c])),
                                                _mm256_set1_ps(scale[r][c][b]), acc[r][c]);
            }
        }
    }
    const __m256 lanes = Q32_FN(q32_lane_weights)(enc);
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++)
            y[(size_t)c * y_stride + (size_t)r] = Q32_FN(q32_hsum)(_mm256_fmadd_ps(acc[r][c], lanes, off[r][c]));
}

#define Q32_CHUNK 4

/* Bytes from a weight row to the one to prefetch: at least a chunk, and at least 16 KiB, which
 * at the speeds here is well beyond the memory latency while staying far inside L2. */
Q32_T size_t Q32_FN(q32_prefetch_distance)(size_t w_stride) {
    size_t ahead = w_stride ? (16384 + w_stride - 1) / w_stride : 0;
    return (ahead > Q32_CHUNK ? ahead : Q32_CHUNK) * w_stride;
}

/* Activation rows in groups of up to four against one row or a chunk of four weight rows, so
 * the weights stay in L1 while every group passes over them; within a chunk, how many rows
 * share a tile is the ISA's choice (more rows for few activation rows: more independent
 * accumulators). */
Q32_T void Q32_FN(q32_groups)(int enc, int chunk, const uint8_t *w, size_t w_stride, const uint8_t *x,
                              size_t x_stride, size_t nx, size_t nb, float *y, size_t y_stride) {
    const size_t pf = Q32_FN(q32_prefetch_distance)(w_stride);
    for (size_t j = 0; j < nx; j += 4) {
        const uint8_t *xj = x + j * x_stride;
        float *yj = y + j * y_stride;
        switch (nx - j < 4 ? nx - j : 4) {
#define Q32_CASE(nc) \
        case nc: \
            if (chunk) { \
                const int nr = Q32_FN(q32_tile_rows)(nc); \
                for (size_t r = 0; r < Q32_CHUNK; r += (size_t)nr) \
                    Q32_FN(q32_tile)(enc, nr, nc, w + r * w_stride, w_stride, xj, x_stride, nb, yj + r, y_stride, pf); \
            } else { \
                Q32_FN(q32_tile)(enc, 1, nc, w, w_stride, xj, x_stride, nb, yj, y_stride, pf); \
            } \
            break;
        Q32_CASE(1)
        Q32_CASE(2)
        Q32_CASE(3)
        default: Q32_CASE(4)
#undef Q32_CASE
        }
    }
}

Q32_T void Q32_FN(q32_matmul)(int enc, TK_MATMUL_ARGS) {
    const uint8_t *wb = (const uint8_t *)w, *xb = (const uint8_t *)x;
    size_t nb = k / TK_QK, i = 0;
    for (; i + Q32_CHUNK <= rows; i += Q32_CHUNK)
        Q32_FN(q32_groups)(enc, 1, wb + i * w_stride, w_stride, xb, x_stride, nx, nb, y + i, y_stride);
    for (; i < rows; i++) Q32_FN(q32_groups)(enc, 0, wb + i * w_stride, w_stride, xb, x_stride, nx, nb, y + i, y_stride);
}

#define Q32_PUBLIC(enc, id, isa) \
    __attribute__((target(TK_Q32_TARGET))) void tk_matmul_##enc##_##isa(TK_MATMUL_ARGS) { \
        Q32_FN(q32_matmul)(id, w, w_stride, rows, x, x_stride, nx, k, y, y_stride); \
    }
#define Q32_PUBLIC_EXPAND(enc, id, isa) Q32_PUBLIC(enc, id, isa)

Q32_PUBLIC_EXPAND(q4_0, Q32_Q4_0, TK_Q32_ISA)
Q32_PUBLIC_EXPAND(q4_1, Q32_Q4_1, TK_Q32_ISA)
Q32_PUBLIC_EXPAND(q5_0, Q32_Q5_0, TK_Q32_ISA)
Q32_PUBLIC_EXPAND(q5_1, Q32_Q5_1, TK_Q32_ISA)
Q32_PUBLIC_EXPAND(q8_0, Q32_Q8_0, TK_Q32_ISA)

#ifndef TK_Q32_NO_QUANTIZER
/* The same 256-bit code in both ISAs (nothing in it benefits from AVX-512), so the two agree
 * with each other by construction and with the portable one by the rules stated there. */
__attribute__((target(TK_Q32_TARGET))) void Q32_FN(tk_quantize_q8_32)(const float *x, void *out, size_t k) {
    uint8_t *o = (uint8_t *)out;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    for (size_t b = 0; b < k / TK_QK; b++) {
        const float *xb = x + b * TK_QK;
        __m256 v[4];
        __m256 amax = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(xb + 8 * i);
            amax = _mm256_max_ps(_mm256_andnot_ps(sign, v[i]), amax);
        }
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        tk_q8_32 blk;
        blk.d = _mm_cvtss_f32(m) / 127.0f;
        __m256i q[4];
        if (blk.d != 0.0f) {
            __m256 d = _mm256_set1_ps(blk.d);
            for (int i = 0; i < 4; i++)
                q[i] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_div_ps(v[i], d), lo), hi));
        } else {
            for (int i = 0; i < 4; i++) q[i] = _mm256_setzero_si256();
        }
        /* packs works within 128-bit lanes; the permute restores element order. */
        __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)blk.qs, bytes);
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
        blk.s = blk.d * (float)_mm_cvtsi128_si32(s);
        memcpy(o + b * sizeof blk, &blk, sizeof blk);
    }
}
#endif
#undef TK_Q32_NO_QUANTIZER

#undef Q32_PUBLIC
#undef Q32_PUBLIC_EXPAND
#undef Q32_SEGMENT
#undef Q32_CHUNK
#undef Q32_CAT2
#undef Q32_CAT
#undef Q32_FN
#undef Q32_T
#undef TK_Q32_TARGET
#undef TK_Q32_ISA

#endif /* TK_Q32_ISA */
