/* Integer matmuls for ggml's K-quants (Q4_K, Q5_K, Q6_K) against tk_q8_256 activations, the
 * quantiser that makes those activations, and exact row dequantisers.
 *
 * Every body (portable, AVX2, AVX-512) is the same row loop (TK_DEFINE_MATMUL, below) over four
 * per-(encoding, ISA) hooks that work on one 256-value super-block split in four chunks of 64:
 *   head    the super-block's scales, unpacked once
 *   decode  chunk c's quants, one byte per value (plus the scales the chunk needs)
 *   dot     chunk c against one activation block, into an exact int32 accumulator
 *   finish  the accumulator (and the mins / Q6_K's -32, through bsums) into a float one
 * so a weight super-block is decoded once and multiplied with up to four activation rows. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ggml_blocks.h"
#include "kernels_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* Rows and activation blocks may sit at any byte address (strides are arbitrary): fields are
 * read with ggml_blocks.h's readers, vectors with unaligned loads. */

#define X_D offsetof(tk_q8_256, d)
#define X_QS offsetof(tk_q8_256, qs)
#define X_BS offsetof(tk_q8_256, bsums)
#define Q4_QS offsetof(block_q4_K, qs)
#define Q5_QH offsetof(block_q5_K, qh)
#define Q5_QS offsetof(block_q5_K, qs)
#define Q6_QL offsetof(block_q6_K, ql)
#define Q6_QH offsetof(block_q6_K, qh)
#define Q6_SC offsetof(block_q6_K, scales)
#define Q6_D offsetof(block_q6_K, d)

/* Q4_K and Q5_K share one header decoder, which reads d and dmin as one 32-bit word. */
_Static_assert(offsetof(block_q4_K, d) == offsetof(block_q5_K, d) &&
               offsetof(block_q4_K, dmin) == offsetof(block_q5_K, dmin) &&
               offsetof(block_q4_K, dmin) == offsetof(block_q4_K, d) + 2 &&
               offsetof(block_q4_K, scales) == offsetof(block_q5_K, scales), "K header");
#define KQ_DM offsetof(block_q4_K, d)
#define KQ_SC offsetof(block_q4_K, scales)

/* The first group of activation rows to walk a matrix (cold: its weights come from DRAM)
 * requests every weight line this far ahead. The hardware prefetcher alone fed it at ~70% of
 * the arithmetic's rate for four rows (Zen 4) and ~55% of the read bandwidth for one row (Xeon,
 * where the requests raise that to ~88%); later groups re-walk a tile already in L2 and go
 * without (the extra requests would only compete with the hardware's). */
#define TK_PREFETCH_AHEAD 2048

/* With more than four activation rows the weights are walked once per group of four; a tile of
 * rows this large is walked by every group while it is still in L2. */
#define TK_TILE_BYTES (256u * 1024u)

/* ---- the row loop, once for every encoding and ISA ----
 * VEC names the accumulator types VEC##_acc (float, per activation row) and VEC##_iacc (exact
 * int32 sums of one super-block); HDR and CHUNK are what head and decode return. G is a constant
 * after inlining, so the group's accumulators live in registers; cold says the weights have not
 * been walked by an earlier group (and so come from DRAM for a large matrix). */
#define TK_DEFINE_MATMUL(enc, isa, ATTR, VEC, HDR, CHUNK, head, decode, dot, finish)            \
    ATTR __attribute__((always_inline)) static inline void enc##_tile_##isa(                    \
        const uint8_t *w, size_t w_stride, size_t i0, size_t i1, const uint8_t *x,              \
        size_t x_stride, size_t nb, float *y, size_t y_stride, const int G, int cold) {         \
        const uint8_t *xr[4];                                                                   \
        for (int g = 0; g < G; g++) xr[g] = x + (size_t)g * x_stride;                           \
        for (size_t i = i0; i < i1; i++) {                                                      \
            const uint8_t *wr = w + i * w_stride;                                               \
            VEC##_acc acc[4];                                                                   \
            for (int g = 0; g < G; g++) acc[g] = VEC##_acc_zero();                              \
            for (size_t b = 0; b < nb; b++) {                                                   \
                const uint8_t *wb = wr + b * sizeof(block_##enc);                               \
                if (cold)                                                                       \
                    for (size_t o = 0; o < sizeof(block_##enc); o += 64)                        \
                        __builtin_prefetch(wb + TK_PREFETCH_AHEAD + o);                         \
                const HDR h = head(wb);                                                         \
                VEC##_iacc s[4];                                                                \
                for (int g = 0; g < G; g++) s[g] = VEC##_iacc_zero();                           \
                for (int c = 0; c < 4; c++) {                                                   \
                    const CHUNK q = decode(wb, &h, c);                                          \
                    for (int g = 0; g < G; g++)                                                 \
                        s[g] = dot(&h, &q, xr[g] + b * sizeof(tk_q8_256), c, s[g]);             \
                }                                                                               \
                for (int g = 0; g < G; g++)                                                     \
                    finish(&h, xr[g] + b * sizeof(tk_q8_256), s[g], &acc[g]);                   \
            }                                                                                   \
            for (int g = 0; g < G; g++) y[(size_t)g * y_stride + i] = VEC##_acc_sum(acc[g]);    \
        }                                                                                       \
    }                                                                                           \
    ATTR void tk_matmul_##enc##_##isa(TK_MATMUL_ARGS) {                                         \
        const uint8_t *wp = (const uint8_t *)w, *xp = (const uint8_t *)x;                       \
        size_t nb = k / TK_QK_K, row_bytes = nb * sizeof(block_##enc);                          \
        size_t tile = rows;                                                                     \
        if (nx > 4 && row_bytes > 0) {                                                          \
            tile = TK_TILE_BYTES / row_bytes;                                                   \
            if (tile == 0) tile = 1;                                                            \
        }                                                                                       \
        for (size_t i0 = 0; i0 < rows; i0 += tile) {                                            \
            size_t i1 = rows - i0 < tile ? rows : i0 + tile;                                    \
            for (size_t j0 = 0; j0 < nx; j0 += 4) {                                             \
                const uint8_t *xg = xp + j0 * x_stride;                                         \
                int cold = j0 == 0;                                                             \
                float *yg = y + j0 * y_stride;                                                  \
                switch (nx - j0 < 4 ? nx - j0 : 4) {                                            \
                case 1: enc##_tile_##isa(wp, w_stride, i0, i1, xg, x_stride, nb, yg, y_stride, 1, cold); break; \
                case 2: enc##_tile_##isa(wp, w_stride, i0, i1, xg, x_stride, nb, yg, y_stride, 2, cold); break; \
                case 3: enc##_tile_##isa(wp, w_stride, i0, i1, xg, x_stride, nb, yg, y_stride, 3, cold); break; \
                default: enc##_tile_##isa(wp, w_stride, i0, i1, xg, x_stride, nb, yg, y_stride, 4, cold); break; \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }

/* ======================================================================================== */
/* portable                                                                                  */
/* ======================================================================================== */

#define TK_PORTABLE_ATTR

typedef float portable_acc;
typedef int32_t portable_iacc;
static inline portable_acc portable_acc_zero(void) { return 0.0f; }
static inline portable_iacc portable_iacc_zero(void) { return 0; }
static inline float portable_acc_sum(portable_acc a) { return a; }

/* Q4_K / Q5_K */
typedef struct { float d, dmin; int32_t sc[8], m[8]; } kq_portable_hdr;
typedef struct { uint8_t q[64]; } kq_portable_chunk;

static inline kq_portable_hdr kq_portable_head(const uint8_t *wb) {
    kq_portable_hdr h;
    h.d = tk_half_to_float(tk_read_u16(wb + KQ_DM));
    h.dmin = tk_half_to_float(tk_read_u16(wb + KQ_DM + 2));
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        tk_k_scale_min(j, wb + KQ_SC, &sc, &m);
        h.sc[j] = sc;
        h.m[j] = m;
    }
    return h;
}

/* Chunk c: sub-block 2c in the low nibbles of qs[32c ..< 32c + 32], 2c + 1 in the high ones. */
static inline kq_portable_chunk kq_portable_nibbles(const uint8_t *qs, int c) {
    kq_portable_chunk q;
    for (int l = 0; l < 32; l++) {
        q.q[l] = qs[32 * c + l] & 15;
        q.q[32 + l] = qs[32 * c + l] >> 4;
    }
    return q;
}

static inline kq_portable_chunk q4_K_portable_decode(const uint8_t *wb, const kq_portable_hdr *h, int c) {
    (void)h;
    return kq_portable_nibbles(wb + Q4_QS, c);
}

static inline kq_portable_chunk q5_K_portable_decode(const uint8_t *wb, const kq_portable_hdr *h, int c) {
    (void)h;
    kq_portable_chunk q = kq_portable_nibbles(wb + Q5_QS, c);
    const uint8_t *qh = wb + Q5_QH;
    for (int l = 0; l < 32; l++) {
        q.q[l] |= (uint8_t)(((qh[l] >> (2 * c)) & 1) << 4);
        q.q[32 + l] |= (uint8_t)(((qh[l] >> (2 * c + 1)) & 1) << 4);
    }
    return q;
}

static inline int32_t kq_portable_dot(const kq_portable_hdr *h, const kq_portable_chunk *q,
                                      const uint8_t *xb, int c, int32_t s) {
    const int8_t *a = (const int8_t *)(xb + X_QS) + 64 * c;
    int32_t s0 = 0, s1 = 0;
    for (int l = 0; l < 32; l++) {
        s0 += q->q[l] * a[l];
        s1 += q->q[32 + l] * a[32 + l];
    }
    return s + h->sc[2 * c] * s0 + h->sc[2 * c + 1] * s1;
}

static inline void kq_portable_finish(const kq_portable_hdr *h, const uint8_t *xb, int32_t s,
                                      portable_acc *acc) {
    int16_t bs[16];
    memcpy(bs, xb + X_BS, sizeof bs);
    int32_t m = 0;
    for (int j = 0; j < 8; j++) m += h->m[j] * (bs[2 * j] + bs[2 * j + 1]);
    *acc += tk_read_f32(xb + X_D) * (h->d * (float)s - h->dmin * (float)m);
}

/* Q6_K: chunk c is half c / 2, low (c even) or high (c odd) nibbles of ql; values are q - 32. */
typedef struct { float d; int32_t sc[16]; } q6_portable_hdr;
typedef struct { int8_t q[64]; } q6_portable_chunk;

static inline q6_portable_hdr q6_portable_head(const uint8_t *wb) {
    q6_portable_hdr h;
    h.d = tk_half_to_float(tk_read_u16(wb + Q6_D));
    for (size_t s = 0; s < 16; s++) h.sc[s] = (int8_t)wb[Q6_SC + s];
    return h;
}

static inline q6_portable_chunk q6_portable_decode(const uint8_t *wb, const q6_portable_hdr *h, int c) {
    (void)h;
    const uint8_t *ql = wb + Q6_QL + 64 * (c >> 1), *qh = wb + Q6_QH + 32 * (c >> 1);
    int sh = 4 * (c & 1);
    q6_portable_chunk q;
    for (int l = 0; l < 32; l++) {
        q.q[l] = (int8_t)((((ql[l] >> sh) & 15) | (((qh[l] >> sh) & 3) << 4)) - 32);
        q.q[32 + l] = (int8_t)((((ql[32 + l] >> sh) & 15) | (((qh[l] >> (sh + 2)) & 3) << 4)) - 32);
    }
    return q;
}

static inline int32_t q6_portable_dot(const q6_portable_hdr *h, const q6_portable_chunk *q,
                                      const uint8_t *xb, int c, int32_t s) {
    const int8_t *a = (const int8_t *)(xb + X_QS) + 64 * c;
    for (int t = 0; t < 4; t++) {
        int32_t st = 0;
        for (int l = 0; l < 16; l++) st += q->q[16 * t + l] * a[16 * t + l];
        s += h->sc[4 * c + t] * st;
    }
    return s;
}

static inline void q6_portable_finish(const q6_portable_hdr *h, const uint8_t *xb, int32_t s,
                                      portable_acc *acc) {
    *acc += tk_read_f32(xb + X_D) * (h->d * (float)s);
}

TK_DEFINE_MATMUL(q4_K, portable, TK_PORTABLE_ATTR, portable, kq_portable_hdr, kq_portable_chunk,
                 kq_portable_head, q4_K_portable_decode, kq_portable_dot, kq_portable_finish)
TK_DEFINE_MATMUL(q5_K, portable, TK_PORTABLE_ATTR, portable, kq_portable_hdr, kq_portable_chunk,
                 kq_portable_head, q5_K_portable_decode, kq_portable_dot, kq_portable_finish)
TK_DEFINE_MATMUL(q6_K, portable, TK_PORTABLE_ATTR, portable, q6_portable_hdr, q6_portable_chunk,
                 q6_portable_head, q6_portable_decode, q6_portable_dot, q6_portable_finish)

/* ---- row dequantisers: the portable decoders, with ggml's float expressions ---- */

#define TK_DEFINE_KQ_DEQUANT(enc)                                                              \
    void tk_dequant_row_##enc(const void *w, float *out, size_t k) {                           \
        const uint8_t *wb = (const uint8_t *)w;                                                \
        for (size_t b = 0; b < k / TK_QK_K; b++, wb += sizeof(block_##enc), out += TK_QK_K) {  \
            kq_portable_hdr h = kq_portable_head(wb);                                          \
            for (int c = 0; c < 4; c++) {                                                      \
                kq_portable_chunk q = enc##_portable_decode(wb, &h, c);                        \
                for (int half = 0; half < 2; half++) {                                         \
                    int j = 2 * c + half;                                                      \
                    float d1 = h.d * (float)h.sc[j], m1 = h.dmin * (float)h.m[j];              \
                    for (int l = 0; l < 32; l++)                                               \
                        out[32 * j + l] = d1 * (float)q.q[32 * half + l] - m1;                 \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }

TK_DEFINE_KQ_DEQUANT(q4_K)
TK_DEFINE_KQ_DEQUANT(q5_K)

void tk_dequant_row_q6_K(const void *w, float *out, size_t k) {
    const uint8_t *wb = (const uint8_t *)w;
    for (size_t b = 0; b < k / TK_QK_K; b++, wb += sizeof(block_q6_K), out += TK_QK_K) {
        q6_portable_hdr h = q6_portable_head(wb);
        for (int c = 0; c < 4; c++) {
            q6_portable_chunk q = q6_portable_decode(wb, &h, c);
            for (int e = 0; e < 64; e++)
                out[64 * c + e] = h.d * (float)h.sc[4 * c + e / 16] * (float)q.q[e];
        }
    }
}

/* ---- activation quantiser ----
 * x / d itself rather than a multiply by 1/d: 1/d overflows for blocks below ~127 / FLT_MAX, and
 * division rounds the same in every ISA. The clamps are written as maxps / minps evaluate them
 * (a NaN becomes the bound), and rounding is the current mode (nearest even unless the process
 * changed it) in nearbyintf and the vector round alike, so all three quantisers agree bit for
 * bit, on any input. */

void tk_quantize_q8_256_portable(const float *x, void *out, size_t k) {
    uint8_t *ob = (uint8_t *)out;
    for (size_t b = 0; b < k / TK_QK_K; b++, x += TK_QK_K, ob += sizeof(tk_q8_256)) {
        float amax = 0.0f;
        for (int i = 0; i < TK_QK_K; i++) {
            float a = fabsf(x[i]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127.0f;
        int8_t qs[TK_QK_K] = {0};
        int16_t bs[TK_QK_K / 16] = {0};
        if (d != 0.0f) {
            for (int i = 0; i < TK_QK_K; i++) {
                float v = x[i] / d;
                v = v > -127.0f ? v : -127.0f;
                v = v < 127.0f ? v : 127.0f;
                qs[i] = (int8_t)nearbyintf(v);
            }
            for (int t = 0; t < TK_QK_K / 16; t++) {
                int sum = 0;
                for (int l = 0; l < 16; l++) sum += qs[16 * t + l];
                bs[t] = (int16_t)sum;
            }
        }
        memcpy(ob + X_D, &d, sizeof d);
        memcpy(ob + X_QS, qs, sizeof qs);
        memcpy(ob + X_BS, bs, sizeof bs);
    }
}

void tk_q8_residual(size_t act_block, const void *q, const float *x, float *r, size_t k) {
    const uint8_t *qb = (const uint8_t *)q;
    const size_t offset_d = act_block == TK_QK ? offsetof(tk_q8_32, d) : X_D;
    const size_t offset_qs = act_block == TK_QK ? offsetof(tk_q8_32, qs) : X_QS;
    const size_t bytes = act_block == TK_QK ? sizeof(tk_q8_32) : sizeof(tk_q8_256);
    for (size_t b = 0; b < k / act_block; b++, qb += bytes, x += act_block, r += act_block) {
        float d;
        memcpy(&d, qb + offset_d, sizeof d);
        const int8_t *qs = (const int8_t *)(qb + offset_qs);
        for (size_t i = 0; i < act_block; i++) r[i] = x[i] - d * (float)qs[i];
    }
}

#if defined(__x86_64__)

#define TK_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c")))
#define TK_AVX2_INLINE TK_AVX2 __attribute__((always_inline)) static inline
#define TK_AVX512_INLINE TK_AVX512 __attribute__((always_inline)) static inline

/* ======================================================================================== */
/* x86, both ISAs                                                                            */
/* ======================================================================================== */
/* Both bodies work on 256-bit vectors. Zen 4 executes a 512-bit op as two 256-bit halves, and
 * the zmm versions of these kernels measured 15-20% slower there (the extra cross-lane
 * shuffles compete with the multiplies for the same pipes). The AVX-512 body therefore differs
 * from the AVX2 one only in how it multiplies (vpdpbusd, below) and so in how it lays out the
 * scales; headers, quant decoding and the float tail are shared. AVX-512F implies every feature
 * these helpers use, so they inline into both. */

typedef __m256 x86_acc;
typedef __m256i x86_iacc;
TK_AVX2_INLINE x86_acc x86_acc_zero(void) { return _mm256_setzero_ps(); }
TK_AVX2_INLINE x86_iacc x86_iacc_zero(void) { return _mm256_setzero_si256(); }

TK_AVX2_INLINE float x86_acc_sum(x86_acc v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Control for pshufb: int16 lanes holding byte j zero-extended (0xFF selects zero). */
#define PSHUFB_U16(j) ((short)((j) - 256))

/* ---- Q4_K / Q5_K ---- */

/* The twelve packed scale bytes as [sc0..sc7, m0..m7], four at a time:
 *   sc0-3 = b0-3 & 63             sc4-7 = (b8-11 & 15) | (b0-3 >> 6) << 4
 *   m0-3  = b4-7 & 63             m4-7  = (b8-11 >> 4) | (b4-7 >> 6) << 4
 * The 16-byte load stays inside the block (qs or qh follows the scales). */
TK_AVX2_INLINE __m128i kq_scales_x86(const uint8_t *wb) {
    __m128i v = _mm_loadu_si128((const __m128i *)(wb + KQ_SC));
    __m128i a = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));   /* b0-3, b8-11, b4-7, b8-11 */
    __m128i b = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));   /* -,    b0-3,  -,    b4-7  */
    a = _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
                      _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    b = _mm_and_si128(_mm_srli_epi32(b, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(a, b);
}

/* sc: [sc0..7, m0..7] in both 128-bit lanes, for in-lane pshufb broadcasts of the scales;
 * mins: m_j in int16 lanes 2j and 2j+1, to meet the bsum pairs of sub-block j in one madd. */
typedef struct { __m256i sc, mins; __m256 d, dmin; } kq_x86_hdr;
/* Chunk c: sub-block 2c (lo) and 2c + 1 (hi), one byte per value. */
typedef struct { __m256i lo, hi; } kq_x86_quants;

TK_AVX2_INLINE kq_x86_hdr kq_x86_head(const uint8_t *wb) {
    kq_x86_hdr h;
    __m128 dm = _mm_cvtph_ps(_mm_loadu_si32(wb + KQ_DM));
    h.d = _mm256_broadcastss_ps(dm);
    h.dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
    h.sc = _mm256_broadcastsi128_si256(kq_scales_x86(wb));
    h.mins = _mm256_shuffle_epi8(h.sc, _mm256_setr_epi8(8, -1, 8, -1, 9, -1, 9, -1, 10, -1, 10, -1, 11, -1, 11, -1,
                                                        12, -1, 12, -1, 13, -1, 13, -1, 14, -1, 14, -1, 15, -1, 15, -1));
    return h;
}

TK_AVX2_INLINE kq_x86_quants kq_x86_nibbles(const uint8_t *qs, int c) {
    kq_x86_quants q;
    __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * c)), m4 = _mm256_set1_epi8(15);
    q.lo = _mm256_and_si256(v, m4);
    q.hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    return q;
}

/* Bit b of every byte moved to bit 4 (then masked by the caller). The shifts are 16-bit, but
 * bit 4 of either byte only ever receives a bit of the same byte. */
TK_AVX2_INLINE __m256i bit_to_4_x86(__m256i v, int b) {
    return b <= 4 ? _mm256_slli_epi16(v, 4 - b) : _mm256_srli_epi16(v, b - 4);
}

TK_AVX2_INLINE kq_x86_quants q5_K_x86_quants(const uint8_t *wb, int c) {
    kq_x86_quants q = kq_x86_nibbles(wb + Q5_QS, c);
    __m256i qh = _mm256_loadu_si256((const __m256i *)(wb + Q5_QH)), bit4 = _mm256_set1_epi8(16);
    q.lo = _mm256_or_si256(q.lo, _mm256_and_si256(bit_to_4_x86(qh, 2 * c), bit4));
    q.hi = _mm256_or_si256(q.hi, _mm256_and_si256(bit_to_4_x86(qh, 2 * c + 1), bit4));
    return q;
}

/* The scales multiply exact int32 sums, so the rest is float: d * Σ sc isum - dmin * Σ m bsum,
 * scaled by the activation's d last (one multiply per activation row). */
TK_AVX2_INLINE void kq_x86_finish(const kq_x86_hdr *h, const uint8_t *xb, __m256i s, x86_acc *acc) {
    __m256i m = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xb + X_BS)), h->mins);
    __m256 v = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m), h->dmin, _mm256_mul_ps(_mm256_cvtepi32_ps(s), h->d));
    *acc = _mm256_fmadd_ps(v, _mm256_set1_ps(tk_read_f32(xb + X_D)), *acc);
}

/* ---- Q6_K ---- */

/* s16: the sixteen scales as int16; slo/shi: scales 0-7 / 8-15 in both 128-bit lanes (for
 * pshufb); neg32: -32 * scale, so one madd with the bsums removes the offset of q. */
typedef struct { __m256i s16, slo, shi, neg32; __m256 d; } q6_x86_hdr;
/* Chunk c: values 64c ..< 64c + 32 (v0) and the next 32 (v1), q in 0..63. */
typedef struct { __m256i v0, v1; } q6_x86_quants;

TK_AVX2_INLINE q6_x86_hdr q6_x86_head(const uint8_t *wb) {
    q6_x86_hdr h;
    h.s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wb + Q6_SC)));
    h.slo = _mm256_permute2x128_si256(h.s16, h.s16, 0x00);
    h.shi = _mm256_permute2x128_si256(h.s16, h.s16, 0x11);
    h.neg32 = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(h.s16, 5));
    h.d = _mm256_set1_ps(_cvtsh_ss(tk_read_u16(wb + Q6_D)));
    return h;
}

/* Chunk c lies in half c / 2; c even takes the low nibbles of ql with qh bits 0-1 (first 32)
 * and 2-3 (next 32), c odd the high nibbles with bits 4-5 and 6-7. Shifts are 16-bit: what
 * crosses into a neighbour byte lands outside the bits kept. */
TK_AVX2_INLINE q6_x86_quants q6_x86_bits(const uint8_t *wb, int c) {
    const uint8_t *ql = wb + Q6_QL + 64 * (c >> 1);
    __m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(wb + Q6_QH + 32 * (c >> 1)));
    __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(0x30);
    __m256i h0, h1;
    if ((c & 1) == 0) {
        h0 = _mm256_slli_epi16(qh, 4);
        h1 = _mm256_slli_epi16(qh, 2);
    } else {
        l0 = _mm256_srli_epi16(l0, 4);
        l1 = _mm256_srli_epi16(l1, 4);
        h0 = qh;
        h1 = _mm256_srli_epi16(qh, 2);
    }
    q6_x86_quants q;
    q.v0 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(h0, m2));
    q.v1 = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(h1, m2));
    return q;
}

TK_AVX2_INLINE void q6_x86_finish(const q6_x86_hdr *h, const uint8_t *xb, __m256i s, x86_acc *acc) {
    s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xb + X_BS)), h->neg32));
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(h->d, _mm256_set1_ps(tk_read_f32(xb + X_D))), *acc);
}

/* ======================================================================================== */
/* AVX2: vpmaddubsw (u8 quants x s8 activations, pairs within int16: 63 * 127 * 2 < 2^15), then */
/* vpmaddwd with the sub-block scale broadcast over the vector.                              */
/* ======================================================================================== */

typedef struct { kq_x86_quants q; __m256i slo, shi; } kq_avx2_chunk;

TK_AVX2_INLINE kq_avx2_chunk kq_avx2_scales(kq_x86_quants q, const kq_x86_hdr *h, int c) {
    kq_avx2_chunk r = {q, _mm256_shuffle_epi8(h->sc, _mm256_set1_epi16(PSHUFB_U16(2 * c))),
                       _mm256_shuffle_epi8(h->sc, _mm256_set1_epi16(PSHUFB_U16(2 * c + 1)))};
    return r;
}
TK_AVX2_INLINE kq_avx2_chunk q4_K_avx2_decode(const uint8_t *wb, const kq_x86_hdr *h, int c) {
    return kq_avx2_scales(kq_x86_nibbles(wb + Q4_QS, c), h, c);
}
TK_AVX2_INLINE kq_avx2_chunk q5_K_avx2_decode(const uint8_t *wb, const kq_x86_hdr *h, int c) {
    return kq_avx2_scales(q5_K_x86_quants(wb, c), h, c);
}

TK_AVX2_INLINE __m256i kq_avx2_dot(const kq_x86_hdr *h, const kq_avx2_chunk *q, const uint8_t *xb, int c,
                                   __m256i s) {
    (void)h;
    const uint8_t *a = xb + X_QS + 64 * c;
    __m256i plo = _mm256_maddubs_epi16(q->q.lo, _mm256_loadu_si256((const __m256i *)a));
    __m256i phi = _mm256_maddubs_epi16(q->q.hi, _mm256_loadu_si256((const __m256i *)(a + 32)));
    return _mm256_add_epi32(s, _mm256_add_epi32(_mm256_madd_epi16(plo, q->slo), _mm256_madd_epi16(phi, q->shi)));
}

typedef struct { q6_x86_quants q; __m256i s0, s1; } q6_avx2_chunk;

/* pshufb control: int16 lane i in the low 128 bits, i + 1 in the high. */
TK_AVX2_INLINE __m256i q6_avx2_pick(int i) {
    return _mm256_set_m128i(_mm_set1_epi16((short)((2 * i + 3) << 8 | (2 * i + 2))),
                            _mm_set1_epi16((short)((2 * i + 1) << 8 | (2 * i))));
}

/* v0 holds sub-blocks 4c, 4c + 1 (one per 128-bit lane), v1 4c + 2, 4c + 3. */
TK_AVX2_INLINE q6_avx2_chunk q6_avx2_decode(const uint8_t *wb, const q6_x86_hdr *h, int c) {
    __m256i src = c < 2 ? h->slo : h->shi;
    int first = 4 * (c & 1);   /* sub-block 4c + t is scale (4c + t) % 8 of src */
    q6_avx2_chunk r = {q6_x86_bits(wb, c), _mm256_shuffle_epi8(src, q6_avx2_pick(first)),
                       _mm256_shuffle_epi8(src, q6_avx2_pick(first + 2))};
    return r;
}

TK_AVX2_INLINE __m256i q6_avx2_dot(const q6_x86_hdr *h, const q6_avx2_chunk *q, const uint8_t *xb, int c,
                                   __m256i s) {
    (void)h;
    const uint8_t *a = xb + X_QS + 64 * c;
    __m256i p0 = _mm256_maddubs_epi16(q->q.v0, _mm256_loadu_si256((const __m256i *)a));
    __m256i p1 = _mm256_maddubs_epi16(q->q.v1, _mm256_loadu_si256((const __m256i *)(a + 32)));
    return _mm256_add_epi32(s, _mm256_add_epi32(_mm256_madd_epi16(p0, q->s0), _mm256_madd_epi16(p1, q->s1)));
}

TK_DEFINE_MATMUL(q4_K, avx2, TK_AVX2, x86, kq_x86_hdr, kq_avx2_chunk,
                 kq_x86_head, q4_K_avx2_decode, kq_avx2_dot, kq_x86_finish)
TK_DEFINE_MATMUL(q5_K, avx2, TK_AVX2, x86, kq_x86_hdr, kq_avx2_chunk,
                 kq_x86_head, q5_K_avx2_decode, kq_avx2_dot, kq_x86_finish)
TK_DEFINE_MATMUL(q6_K, avx2, TK_AVX2, x86, q6_x86_hdr, q6_avx2_chunk,
                 q6_x86_head, q6_avx2_decode, q6_avx2_dot, q6_x86_finish)

/* ======================================================================================== */
/* AVX-512 VNNI: vpdpbusd sums four u8 x s8 products per int32 lane, without the sub-block    */
/* scale. Those sums fit in int16 (4 * 63 * 128 < 2^15), so vpackssdw packs two of them into  */
/* one vector and one vpdpwssd applies the int16 scales: per activation row and 64 values,    */
/* two dpbusd, one pack and one dpwssd, where AVX2 needs two maddubs and two madd.            */
/* ======================================================================================== */

/* After the pack, int16 lanes 0-3 of each 128-bit lane come from the first dpbusd (of that
 * 128-bit lane) and 4-7 from the second. */
typedef struct { kq_x86_quants q; __m256i s; } kq_avx512_chunk;

TK_AVX512_INLINE kq_avx512_chunk kq_avx512_scales(kq_x86_quants q, const kq_x86_hdr *h, int c) {
    __m256i second = _mm256_setr_epi16(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
    kq_avx512_chunk r = {q, _mm256_shuffle_epi8(h->sc, _mm256_add_epi16(second, _mm256_set1_epi16(PSHUFB_U16(2 * c))))};
    return r;
}
TK_AVX512_INLINE kq_avx512_chunk q4_K_avx512_decode(const uint8_t *wb, const kq_x86_hdr *h, int c) {
    return kq_avx512_scales(kq_x86_nibbles(wb + Q4_QS, c), h, c);
}
TK_AVX512_INLINE kq_avx512_chunk q5_K_avx512_decode(const uint8_t *wb, const kq_x86_hdr *h, int c) {
    return kq_avx512_scales(q5_K_x86_quants(wb, c), h, c);
}

TK_AVX512_INLINE __m256i vnni_dot64(__m256i q0, __m256i q1, __m256i scales, const uint8_t *a, __m256i s) {
    __m256i z = _mm256_setzero_si256();
    __m256i p0 = _mm256_dpbusd_epi32(z, q0, _mm256_loadu_si256((const __m256i *)a));
    __m256i p1 = _mm256_dpbusd_epi32(z, q1, _mm256_loadu_si256((const __m256i *)(a + 32)));
    return _mm256_dpwssd_epi32(s, _mm256_packs_epi32(p0, p1), scales);
}

TK_AVX512_INLINE __m256i kq_avx512_dot(const kq_x86_hdr *h, const kq_avx512_chunk *q, const uint8_t *xb, int c,
                                       __m256i s) {
    (void)h;
    return vnni_dot64(q->q.lo, q->q.hi, q->s, xb + X_QS + 64 * c, s);
}

typedef struct { q6_x86_quants q; __m256i s; } q6_avx512_chunk;

/* Packed int16 lane L (t = L / 8 its 128-bit lane) holds sub-block 4c + t when L % 8 < 4 and
 * 4c + 2 + t otherwise. */
TK_AVX512_INLINE q6_avx512_chunk q6_avx512_decode(const uint8_t *wb, const q6_x86_hdr *h, int c) {
    __m256i sub = _mm256_setr_epi16(0, 0, 0, 0, 2, 2, 2, 2, 1, 1, 1, 1, 3, 3, 3, 3);
    q6_avx512_chunk r = {q6_x86_bits(wb, c),
                         _mm256_permutexvar_epi16(_mm256_add_epi16(sub, _mm256_set1_epi16((short)(4 * c))), h->s16)};
    return r;
}

TK_AVX512_INLINE __m256i q6_avx512_dot(const q6_x86_hdr *h, const q6_avx512_chunk *q, const uint8_t *xb, int c,
                                       __m256i s) {
    (void)h;
    return vnni_dot64(q->q.v0, q->q.v1, q->s, xb + X_QS + 64 * c, s);
}

TK_DEFINE_MATMUL(q4_K, avx512, TK_AVX512, x86, kq_x86_hdr, kq_avx512_chunk,
                 kq_x86_head, q4_K_avx512_decode, kq_avx512_dot, kq_x86_finish)
TK_DEFINE_MATMUL(q5_K, avx512, TK_AVX512, x86, kq_x86_hdr, kq_avx512_chunk,
                 kq_x86_head, q5_K_avx512_decode, kq_avx512_dot, kq_x86_finish)
TK_DEFINE_MATMUL(q6_K, avx512, TK_AVX512, x86, q6_x86_hdr, q6_avx512_chunk,
                 q6_x86_head, q6_avx512_decode, q6_avx512_dot, q6_x86_finish)

/* ======================================================================================== */
/* activation quantisers: the portable body's arithmetic, 8 or 16 values at a time           */
/* ======================================================================================== */

TK_AVX2_INLINE __m256i q8_round8_avx2(__m256 x, __m256 d) {
    __m256 v = _mm256_max_ps(_mm256_div_ps(x, d), _mm256_set1_ps(-127.0f));
    v = _mm256_min_ps(v, _mm256_set1_ps(127.0f));
    return _mm256_cvtps_epi32(v);   /* rounds in the current mode, as nearbyintf */
}

TK_AVX2_INLINE int32_t hsum_epi32_avx2(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

TK_AVX2 void tk_quantize_q8_256_avx2(const float *x, void *out, size_t k) {
    uint8_t *ob = (uint8_t *)out;
    const __m256 nosign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (size_t b = 0; b < k / TK_QK_K; b++, x += TK_QK_K, ob += sizeof(tk_q8_256)) {
        __m256 mx = _mm256_setzero_ps();
        for (int i = 0; i < TK_QK_K; i += 8)
            mx = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), nosign), mx);
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        float d = _mm_cvtss_f32(m) / 127.0f;
        int8_t qs[TK_QK_K] = {0};
        int16_t bs[TK_QK_K / 16] = {0};
        if (d != 0.0f) {
            __m256 vd = _mm256_set1_ps(d);
            for (int i = 0; i < TK_QK_K; i += 32) {
                __m256i a = q8_round8_avx2(_mm256_loadu_ps(x + i), vd);
                __m256i b8 = q8_round8_avx2(_mm256_loadu_ps(x + i + 8), vd);
                __m256i c = q8_round8_avx2(_mm256_loadu_ps(x + i + 16), vd);
                __m256i e = q8_round8_avx2(_mm256_loadu_ps(x + i + 24), vd);
                bs[i / 16] = (int16_t)hsum_epi32_avx2(_mm256_add_epi32(a, b8));
                bs[i / 16 + 1] = (int16_t)hsum_epi32_avx2(_mm256_add_epi32(c, e));
                /* packs interleave 128-bit lanes; the permute puts the 4-byte groups back in order */
                __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b8), _mm256_packs_epi32(c, e));
                p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                _mm256_storeu_si256((__m256i *)(qs + i), p);
            }
        }
        memcpy(ob + X_D, &d, sizeof d);
        memcpy(ob + X_QS, qs, sizeof qs);
        memcpy(ob + X_BS, bs, sizeof bs);
    }
}

TK_AVX512 void tk_quantize_q8_256_avx512(const float *x, void *out, size_t k) {
    uint8_t *ob = (uint8_t *)out;
    for (size_t b = 0; b < k / TK_QK_K; b++, x += TK_QK_K, ob += sizeof(tk_q8_256)) {
        __m512 mx = _mm512_setzero_ps();
        for (int i = 0; i < TK_QK_K; i += 16) mx = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), mx);
        float d = _mm512_reduce_max_ps(mx) / 127.0f;
        int8_t qs[TK_QK_K] = {0};
        int16_t bs[TK_QK_K / 16] = {0};
        if (d != 0.0f) {
            __m512 vd = _mm512_set1_ps(d);
            for (int i = 0; i < TK_QK_K; i += 16) {
                __m512 v = _mm512_max_ps(_mm512_div_ps(_mm512_loadu_ps(x + i), vd), _mm512_set1_ps(-127.0f));
                v = _mm512_min_ps(v, _mm512_set1_ps(127.0f));
                __m512i q = _mm512_cvtps_epi32(v);
                _mm_storeu_si128((__m128i *)(qs + i), _mm512_cvtepi32_epi8(q));
                bs[i / 16] = (int16_t)_mm512_reduce_add_epi32(q);
            }
        }
        memcpy(ob + X_D, &d, sizeof d);
        memcpy(ob + X_QS, qs, sizeof qs);
        memcpy(ob + X_BS, bs, sizeof bs);
    }
}

#else /* not x86: the ISA names are the portable bodies */

void tk_matmul_q4_K_avx2(TK_MATMUL_ARGS) { tk_matmul_q4_K_portable(w, w_stride, rows, x, x_stride, nx, k, y, y_stride); }
void tk_matmul_q5_K_avx2(TK_MATMUL_ARGS) { tk_matmul_q5_K_portable(w, w_stride, rows, x, x_stride, nx, k, y, y_stride); }
void tk_matmul_q6_K_avx2(TK_MATMUL_ARGS) { tk_matmul_q6_K_portable(w, w_stride, rows, x, x_stride, nx, k, y, y_stride); }
void tk_matmul_q4_K_avx512(TK_MATMUL_ARGS) { tk_matmul_q4_K_portable(w, w_stride, rows, x, x_stride, nx, k, y, y_stride); }
void tk_matmul_q5_K_avx512(TK_MATMUL_ARGS) { tk_matmul_q5_K_portable(w, w_stride, rows, x, x_stride, nx, k, y, y_stride); }
void tk_matmul_q6_K_avx512(TK_MATMUL_ARGS) { tk_matmul_q6_K_portable(w, w_stride, rows, x, x_stride, nx, k, y, y_stride); }
void tk_quantize_q8_256_avx2(const float *x, void *out, size_t k) { tk_quantize_q8_256_portable(x, out, k); }
void tk_quantize_q8_256_avx512(const float *x, void *out, size_t k) { tk_quantize_q8_256_portable(x, out, k); }

#endif
