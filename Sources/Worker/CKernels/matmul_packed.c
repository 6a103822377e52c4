/* The 32-element encodings in interleaved row groups, against tk_q8_32 activations: the
 * AVX-512 VNNI bodies for weights repacked once at load (tk_pack_rows_*, in matmul_q32.c).
 *
 * Layout of one group-block (TK_ROW_GROUP = 16 rows × 32 columns; the same bytes as the 16
 * rows' blocks, rearranged):
 *   d[16]   f16 scales, row r at 2r
 *   m[16]   f16 mins (q4_1, q5_1)
 *   hi[8]   q5 only: 64-bit masks; bit 4r + e of mask j is the high bit of row r's quant 4j + e
 *   qs      q4/q5: 4 vectors of 64 bytes; byte 4r + e of vector v holds row r's quant 4v + e in
 *           its low nibble and quant 4(v + 4) + e in its high nibble.
 *           q8: 8 vectors of 64 bytes; byte 4r + e of vector j is row r's quant 4j + e, + 128.
 * so vector j, once decoded, holds in its 32-bit lane r the four quants 4j..4j+3 of row r, and
 * one vpdpbusd with the activation's four quants broadcast adds their products into lane r.
 *
 * Why: the plain-row bodies spend a conversion and an fma per 32 products (per weight row and
 * activation row); here they are spent per 512 (16 rows at once), and the 16 results leave in
 * one store. Per group-block and activation row: 8 vpdpbusd, a conversion, a multiply and two
 * fmas; the weights are decoded once per group-block for up to PK_MAX_ROWS activation rows.
 *
 * Result per row: Σ_b d_b d_a,b Σ u q_a + coef_b s_a,b, with coef = -8 d (q4_0), -16 d
 * (q5_0), -128 d (q8_0), m (q4_1, q5_1): the portable body's value up to float rounding. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ggml_blocks.h"
#include "kernels_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

enum { PK_Q4_0, PK_Q4_1, PK_Q5_0, PK_Q5_1, PK_Q8_0 };

#define PK_T __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c"), always_inline)) static inline
#define PK_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c")))

/* Activation rows that share one decode of the weights: 8 × (accumulator, offset) + 8 decoded
 * vectors + scales and partial sums fit the 32 registers. */
#define PK_MAX_ROWS 8

PK_T int pk_has_min(int enc) { return enc == PK_Q4_1 || enc == PK_Q5_1; }
PK_T int pk_has_high_bit(int enc) { return enc == PK_Q5_0 || enc == PK_Q5_1; }

PK_T size_t pk_group_block_bytes(int enc) {
    switch (enc) {
    case PK_Q4_0: return TK_ROW_GROUP * sizeof(block_q4_0);
    case PK_Q4_1: return TK_ROW_GROUP * sizeof(block_q4_1);
    case PK_Q5_0: return TK_ROW_GROUP * sizeof(block_q5_0);
    case PK_Q5_1: return TK_ROW_GROUP * sizeof(block_q5_1);
    default: return TK_ROW_GROUP * sizeof(block_q8_0);
    }
}

PK_T size_t pk_high_bits_offset(int enc) { return TK_ROW_GROUP * 2 * (pk_has_min(enc) ? 2 : 1); }
PK_T size_t pk_quants_offset(int enc) { return pk_high_bits_offset(enc) + (pk_has_high_bit(enc) ? 64 : 0); }

/* The eight unsigned operand vectors of one group-block. */
PK_T void pk_decode(int enc, const uint8_t *gb, __m512i u[8]) {
    const uint8_t *qs = gb + pk_quants_offset(enc);
    if (enc == PK_Q8_0) {
        for (int j = 0; j < 8; j++) u[j] = _mm512_loadu_si512((const void *)(qs + 64 * j));
        return;
    }
    const __m512i low = _mm512_set1_epi8(0x0F);
    for (int v = 0; v < 4; v++) {
        __m512i packed = _mm512_loadu_si512((const void *)(qs + 64 * v));
        u[v] = _mm512_and_si512(packed, low);
        u[v + 4] = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low);
    }
    if (pk_has_high_bit(enc)) {
        const uint8_t *hi = gb + pk_high_bits_offset(enc);
        const __m512i bit = _mm512_set1_epi8(0x10);
        for (int j = 0; j < 8; j++) {
            u[j] = _mm512_mask_add_epi8(u[j], _cvtu64_mask64(tk_read_u64(hi + 8 * j)), u[j], bit);
        }
    }
}

/* One group (16 weight rows, `live` of them real) × nc activation rows over the whole of k. */
PK_T void pk_tile(int enc, int nc, const uint8_t *group, size_t next_group, size_t nb, const uint8_t *x,
                  size_t x_stride, float *y, size_t y_stride, __mmask16 live) {
    __m512 acc[PK_MAX_ROWS], off[PK_MAX_ROWS];
    for (int c = 0; c < nc; c++) acc[c] = off[c] = _mm512_setzero_ps();
    const size_t gbytes = pk_group_block_bytes(enc);
    const float offset = enc == PK_Q4_0 ? -8.0f : enc == PK_Q5_0 ? -16.0f : -128.0f;
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *gb = group + b * gbytes;
        /* The next group's same block, into L2: a thread's groups are one stream, but the
         * hardware prefetcher alone leaves a single stream short of the memory bandwidth. */
        for (size_t line = 0; line < gbytes; line += 64) _mm_prefetch((const char *)(gb + next_group + line), _MM_HINT_T1);
        __m512i u[8];
        pk_decode(enc, gb, u);
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)gb));
        const __m512 coef = pk_has_min(enc) ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gb + 32)))
                                            : _mm512_mul_ps(d, _mm512_set1_ps(offset));
        for (int c = 0; c < nc; c++) {
            const uint8_t *a = x + (size_t)c * x_stride + b * sizeof(tk_q8_32);
            const uint8_t *aq = a + offsetof(tk_q8_32, qs);
            /* Two chains of four, so the dot products' latency overlaps. */
            __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[0], _mm512_set1_epi32(tk_read_i32(aq)));
            __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[1], _mm512_set1_epi32(tk_read_i32(aq + 4)));
            for (int j = 2; j < 8; j += 2) {
                s0 = _mm512_dpbusd_epi32(s0, u[j], _mm512_set1_epi32(tk_read_i32(aq + 4 * j)));
                s1 = _mm512_dpbusd_epi32(s1, u[j + 1], _mm512_set1_epi32(tk_read_i32(aq + 4 * j + 4)));
            }
            const __m512 scale = _mm512_mul_ps(d, _mm512_set1_ps(tk_read_f32(a + offsetof(tk_q8_32, d))));
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), scale, acc[c]);
            off[c] = _mm512_fmadd_ps(coef, _mm512_set1_ps(tk_read_f32(a + offsetof(tk_q8_32, s))), off[c]);
        }
    }
    for (int c = 0; c < nc; c++) _mm512_mask_storeu_ps(y + (size_t)c * y_stride, live, _mm512_add_ps(acc[c], off[c]));
}

/* w: the first group; w_stride: bytes from one group to the next; rows: weight rows from the
 * first group's first (the last group may be partial). */
PK_T void pk_matmul(int enc, TK_MATMUL_ARGS) {
    const uint8_t *wb = (const uint8_t *)w, *xb = (const uint8_t *)x;
    const size_t nb = k / TK_QK;
    for (size_t i = 0; i < rows; i += TK_ROW_GROUP) {
        const size_t n = rows - i < TK_ROW_GROUP ? rows - i : TK_ROW_GROUP;
        const __mmask16 live = (__mmask16)(n == TK_ROW_GROUP ? 0xFFFFu : (1u << n) - 1u);
        const uint8_t *group = wb + (i / TK_ROW_GROUP) * w_stride;
        for (size_t j = 0; j < nx; j += PK_MAX_ROWS) {
            const uint8_t *xj = xb + j * x_stride;
            float *yj = y + j * y_stride + i;
            switch (nx - j < PK_MAX_ROWS ? nx - j : PK_MAX_ROWS) {
#define PK_CASE(nc) \
            case nc: pk_tile(enc, nc, group, j == 0 ? w_stride : 0, nb, xj, x_stride, yj, y_stride, live); break;
            PK_CASE(1)
            PK_CASE(2)
            PK_CASE(3)
            PK_CASE(4)
            PK_CASE(5)
            PK_CASE(6)
            PK_CASE(7)
            default: PK_CASE(8)
#undef PK_CASE
            }
        }
    }
}

#define PK_PUBLIC(enc, id) \
    PK_TARGET void tk_matmul_##enc##_packed_avx512(TK_MATMUL_ARGS) { \
        pk_matmul(id, w, w_stride, rows, x, x_stride, nx, k, y, y_stride); \
    }

PK_PUBLIC(q4_0, PK_Q4_0)
PK_PUBLIC(q4_1, PK_Q4_1)
PK_PUBLIC(q5_0, PK_Q5_0)
PK_PUBLIC(q5_1, PK_Q5_1)
PK_PUBLIC(q8_0, PK_Q8_0)

#undef PK_PUBLIC

#endif /* __x86_64__ */
