/* Float32 vector kernels (tessel_vector.h): portable C, AVX2 + FMA + F16C, AVX-512 F/BW/VL.
 *
 * The x86 bodies carry target attributes instead of relying on -m flags, so the package builds
 * with the toolchain's defaults and one binary runs everywhere; a table of function pointers is
 * filled once per process from what the CPU supports, under tk_kernel_ceiling(). */
#include "tessel_vector.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "ggml_blocks.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define TK_VEC_X86 1
#endif

/* The instruction-set levels and their cap (defined in dispatch.c). */
#include "tessel_kernels.h"

#define TK_INLINE static inline __attribute__((always_inline))

/* ---- the exponential ----
 * exp(x) = 2^n · exp(r), n = round(x / ln2), r = x - n ln2 in [-ln2/2, ln2/2], with ln2 split
 * in two (the high part has 15 significant bits, so n · LN2_HI is exact for |n| ≤ 256 and the
 * first subtraction loses nothing). exp(r) - 1 is its degree-7 Taylor polynomial, whose
 * truncation error (≤ 0.35⁸/8! ≈ 5e-9) is far below float rounding; keeping the polynomial in
 * the form r + r²·q before adding 1 leaves expm1(r) available, accurate relative to r, for tanh.
 * 2^n is applied by adding n to the exponent field, which is exact for every result above
 * FLT_MIN; inputs below ln(FLT_MIN) give 0 (so -inf and any very negative value are exactly 0,
 * never NaN), inputs above ln(FLT_MAX) give +inf. */
#define EXP_LO (-87.33650207519531f)   /* just above ln(FLT_MIN) = -126 ln2: every result is a normal float */
#define EXP_HI (88.72282409667969f)    /* last float whose exp is finite */
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693145751953125f
#define LN2_LO 1.42860676533018e-06f
#define EXP_C2 (1.0f / 2.0f)
#define EXP_C3 (1.0f / 6.0f)
#define EXP_C4 (1.0f / 24.0f)
#define EXP_C5 (1.0f / 120.0f)
#define EXP_C6 (1.0f / 720.0f)
#define EXP_C7 (1.0f / 5040.0f)
#define ROUND_MAGIC 12582912.0f        /* 1.5 · 2^23: adding and subtracting it rounds to an integer */
#define TANH_CLAMP 9.0f                /* tanh(9) rounds to 1 in float; bounds expm1(2|x|) */
#define GELU_K1 (-1.5957691216057308f) /* -2 sqrt(2/π): gelu(x) = x · sigmoid(2u) = x / (1 + exp(K1 x + K2 x³)) */
#define GELU_K2 (-0.0713548162726009f) /* K1 · 0.044715 */

static inline float bits_to_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t float_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* expm1(r) for the reduced argument, and the integer n, of x (which must be finite and within
 * [EXP_LO, 2·TANH_CLAMP] or [EXP_LO, EXP_HI]). */
static inline float expm1_reduced(float x, float *fn_out) {
    float fn = (x * LOG2E + ROUND_MAGIC) - ROUND_MAGIC;
    float r = x - fn * LN2_HI;
    r = r - fn * LN2_LO;
    float q = EXP_C7;
    q = q * r + EXP_C6;
    q = q * r + EXP_C5;
    q = q * r + EXP_C4;
    q = q * r + EXP_C3;
    q = q * r + EXP_C2;
    *fn_out = fn;
    return q * (r * r) + r;
}

static inline float exp_scalar(float x) {
    /* fmaxf first so NaN becomes a finite value before the integer conversion. */
    float xc = fminf(fmaxf(x, EXP_LO), EXP_HI);
    float fn;
    float p = expm1_reduced(xc, &fn) + 1.0f;
    float y = bits_to_float(float_to_bits(p) + ((uint32_t)(int32_t)fn << 23));
    y = x < EXP_LO ? 0.0f : y;
    y = x > EXP_HI ? INFINITY : y;
    return x != x ? x : y;
}

/* tanh(x) = sign(x) · e / (e + 2) with e = expm1(2|x|): no cancellation near 0, where the
 * 1 - 2 / (exp(2x) + 1) form would lose most digits. */
static inline float tanh_scalar(float x) {
    float a = fminf(fabsf(x), TANH_CLAMP);
    float fn;
    float e1 = expm1_reduced(a + a, &fn);
    float t = bits_to_float((uint32_t)((int32_t)fn + 127) << 23);
    float em1 = t * e1 + (t - 1.0f);
    float th = copysignf(em1 / (em1 + 2.0f), x);
    return x != x ? x : th;
}

/* ---- half precision ----
 * Round to nearest even, overflow to inf, subnormal halves kept, NaN made quiet with its top
 * payload bits kept: the same bits F16C's vcvtps2ph produces. */
static inline uint16_t float_to_half(float f) {
    uint32_t bits = float_to_bits(f);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* ≥ 65520 rounds past the largest half */
    if (abs < 0x38800000u) {                                    /* below 2^-14: a subnormal half */
        uint32_t exponent = abs >> 23;
        if (exponent < 102) return sign; /* below 2^-25: rounds to zero */
        uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - exponent; /* value = mantissa · 2^-shift units of 2^-24 */
        uint32_t q = mantissa >> shift, rest = mantissa & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rest > half || (rest == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = ((abs >> 23) - 112) << 10 | ((abs >> 13) & 0x3ffu);
    uint32_t rest = abs & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* a carry into the exponent is right */
    return (uint16_t)(sign | h);
}

/* ======================================================================================== */
/* ---- portable bodies ----
 * Written so the compiler can vectorise them for the baseline target (SSE2, NEON): per-lane
 * partial sums, no data-dependent branches in the element loops. */

float tk_dot_portable(const float *a, const float *b, size_t n) {
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    for (size_t j = 0; i < n; i++, j++) acc[j] += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

void tk_axpy_portable(float a, const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

void tk_add_portable(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void tk_scale_portable(float *x, float a, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] *= a;
}

/* Shared by every body so the paths agree: the reciprocal root is formed in double. */
static inline float rms_inverse(double sum_squares, size_t n, float eps) {
    return n == 0 ? 0.0f : (float)(1.0 / sqrt(sum_squares / (double)n + (double)eps));
}

void tk_rms_norm_portable(const float *x, const float *weight, float eps, int weight_offset, float *out, size_t n) {
    /* Squares of floats are exact in double, so only the additions round. */
    double acc[4] = {0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (size_t j = 0; j < 4; j++) acc[j] += (double)x[i + j] * (double)x[i + j];
    for (; i < n; i++) acc[0] += (double)x[i] * (double)x[i];
    float inv = rms_inverse((acc[0] + acc[1]) + (acc[2] + acc[3]), n, eps);
    float offset = (float)weight_offset;
    for (i = 0; i < n; i++) out[i] = x[i] * inv * (weight[i] + offset);
}

void tk_silu_mul_portable(const float *gate, const float *up, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g * up[i] / (1.0f + exp_scalar(-g));
    }
}

void tk_gelu_tanh_mul_portable(const float *gate, const float *up, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g * up[i] / (1.0f + exp_scalar(g * (GELU_K1 + GELU_K2 * g * g)));
    }
}

float tk_max_portable(const float *x, size_t n) {
    float m[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (size_t j = 0; j < 4; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    for (; i < n; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
    float a = m[0] > m[1] ? m[0] : m[1], b = m[2] > m[3] ? m[2] : m[3];
    return a > b ? a : b;
}

/* Σ exp(x[i] - shift) over up to 128 values in float lanes, the block sums in double; when
 * `store`, x[i] is replaced by its exponential. */
static double exp_sum_blocks_portable(float *x, const float *src, size_t n, float shift, int store) {
    double total = 0;
    for (size_t start = 0; start < n; start += 128) {
        size_t end = n - start < 128 ? n : start + 128;
        float lanes[8] = {0};
        size_t i = start;
        for (; i + 8 <= end; i += 8)
            for (size_t j = 0; j < 8; j++) {
                float e = exp_scalar(src[i + j] - shift);
                if (store) x[i + j] = e;
                lanes[j] += e;
            }
        for (size_t j = 0; i < end; i++, j++) {
            float e = exp_scalar(src[i] - shift);
            if (store) x[i] = e;
            lanes[j] += e;
        }
        total += (double)(((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])));
    }
    return total;
}

double tk_exp_sum_portable(const float *x, size_t n, float shift) {
    return exp_sum_blocks_portable(NULL, x, n, shift, 0);
}

/* All -inf (or empty) has no maximum to shift by: a uniform distribution is the limit. */
static int softmax_degenerate(float *x, size_t n, float m) {
    if (n == 0) return 1;
    if (m != -INFINITY) return 0;
    for (size_t i = 0; i < n; i++) x[i] = 1.0f / (float)n;
    return 1;
}

void tk_softmax_portable(float *x, size_t n) {
    float m = tk_max_portable(x, n);
    if (softmax_degenerate(x, n, m)) return;
    double sum = exp_sum_blocks_portable(x, x, n, m, 1);
    tk_scale_portable(x, (float)(1.0 / sum), n);
}

void tk_exp_portable(const float *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = exp_scalar(src[i]);
}

void tk_rope_portable(float *x, size_t heads, size_t head_dim, size_t rotary_dims,
                      const float *cos_table, const float *sin_table, int interleaved) {
    size_t half = rotary_dims / 2;
    for (size_t h = 0; h < heads; h++) {
        float *v = x + h * head_dim;
        if (interleaved) {
            for (size_t i = 0; i < half; i++) {
                float a = v[2 * i], b = v[2 * i + 1], c = cos_table[i], s = sin_table[i];
                v[2 * i] = a * c - b * s;
                v[2 * i + 1] = b * c + a * s;
            }
        } else {
            for (size_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], c = cos_table[i], s = sin_table[i];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

void tk_kv_store_portable(tk_kv_type type, const float *src, void *dst, size_t n) {
    if (type == TK_KV_F16) {
        uint16_t *d = (uint16_t *)dst;
        for (size_t i = 0; i < n; i++) d[i] = float_to_half(src[i]);
    } else if (type == TK_KV_BF16) {
        uint16_t *d = (uint16_t *)dst;
        for (size_t i = 0; i < n; i++) d[i] = tk_float_to_bf16(src[i]);
    } else if (dst != src) {
        memmove(dst, src, n * sizeof(float));
    }
}

void tk_kv_load_portable(tk_kv_type type, const void *src, float *dst, size_t n) {
    if (type == TK_KV_F16) {
        const uint16_t *s = (const uint16_t *)src;
        for (size_t i = 0; i < n; i++) dst[i] = tk_half_to_float(s[i]);
    } else if (type == TK_KV_BF16) {
        const uint16_t *s = (const uint16_t *)src;
        for (size_t i = 0; i < n; i++) dst[i] = tk_bf16_to_float(s[i]);
    } else if ((const void *)dst != src) {
        memmove(dst, src, n * sizeof(float));
    }
}

/* ======================================================================================== */
/* ---- paged attention: the driver every body shares ----
 * Rows are taken in tiles of up to ATT_TILE; for each tile the union of its rows' position
 * ranges is walked in chunks of ATT_CHUNK positions aligned to multiples of ATT_CHUNK (so with
 * 16-position blocks a chunk is two whole blocks). A chunk's K and V vectors are located once
 * (and for f16/bf16, when the tile has many (row, head) pairs, converted to float once into
 * scratch) and then every (row, head) of the tile runs one online softmax step on it: scores
 * for the chunk, the new running maximum, the old accumulator rescaled, p·V added. Steps run in batches of up to ATT_BATCH (row, head) pairs that see the
 * same positions of the chunk (the heads of a row; the rows of a prefill tile away from the
 * diagonal), so each K and V vector is loaded once per batch and the batch's independent
 * dependency chains overlap. The ISA-specific parts are the batch step and the conversion. */

#define ATT_TILE 8
#define ATT_CHUNK 32
#define ATT_BATCH 4

typedef struct {
    size_t n;                        /* (row, head) pairs in the batch, 1 ..< ATT_BATCH + 1 */
    const float *q[ATT_BATCH];       /* each pair's query */
    float *m[ATT_BATCH], *l[ATT_BATCH], *acc[ATT_BATCH]; /* running max, Σ exp, Σ p·V (d floats) */
    const void *const *kp;           /* kp[j], vp[j]: the vectors of position chunk_start + j, */
    const void *const *vp;           /* elements of `type` (the cache's, or float once converted) */
    tk_kv_type type;
    size_t lo, hi;                   /* the positions every pair sees: j in [lo, hi) */
    size_t d;
    float scale, softcap;
} att_batch;

typedef void (*att_batch_fn)(const att_batch *b);
typedef void (*att_convert_fn)(tk_kv_type type, const void *src, float *dst, size_t n);

static size_t att_tile_rows(size_t rows) { return rows == 0 ? 1 : rows < ATT_TILE ? rows : ATT_TILE; }

/* The AVX-512 prefill path (attention_lanes_avx512) puts a tile's (row, head) pairs in vector
 * lanes: up to ATT_LANES of them, 16 per vector. */
#define ATT_LANES 64

size_t tk_attention_scratch_floats(size_t group, size_t head_dim, size_t rows) {
    size_t combos = att_tile_rows(rows) * group;
    size_t pairs = 2 * ATT_CHUNK * head_dim + combos * (head_dim + 2);
    /* K and V chunks, Qᵀ and accumulatorsᵀ (head_dim × ATT_LANES), scores (ATT_CHUNK × ATT_LANES). */
    size_t lanes = 2 * ATT_CHUNK * head_dim + 2 * head_dim * ATT_LANES + ATT_CHUNK * ATT_LANES;
    return pairs > lanes ? pairs : lanes;
}

/* Into L2 rather than L1: the chunk ahead is 128+ lines, more than L1 has miss buffers for, and
 * measured faster from DRAM (and no slower from cache) that way. */
static inline void prefetch_bytes(const char *p, size_t bytes) {
    for (size_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 2);
}

/* The blocks of a sequence are scattered, so the hardware prefetcher cannot run ahead of the
 * next chunk: the chunk after the one at c0 (up to `end`) is asked for while c0's is computed. */
static inline void att_prefetch_next_chunk(const tk_attention_params *p, const int32_t *block_table, size_t c0,
                                           size_t end) {
    const size_t bs = p->block_size, elem = p->kv_type == TK_KV_F32 ? sizeof(float) : sizeof(uint16_t);
    const size_t vec_bytes = p->head_dim * elem, block_bytes = p->block_stride * elem;
    size_t next_end = c0 + 2 * ATT_CHUNK < end ? c0 + 2 * ATT_CHUNK : end;
    for (size_t np = c0 + ATT_CHUNK; np < next_end;) {
        size_t nslot = np % bs, run = bs - nslot < next_end - np ? bs - nslot : next_end - np;
        size_t base = (size_t)block_table[np / bs] * block_bytes + nslot * vec_bytes;
        prefetch_bytes((const char *)p->k_cache + base, run * vec_bytes);
        prefetch_bytes((const char *)p->v_cache + base, run * vec_bytes);
        np += run;
    }
}

/* Inlined into each ISA's entry point with that ISA's step and conversion, which the compiler
 * then inlines in turn: one specialised loop per ISA, no indirect calls. */
TK_INLINE void attention_driver(const tk_attention_params *p, const int32_t *block_table, size_t rows,
                                const float *q, size_t q_stride, const int32_t *contexts,
                                float *out, size_t out_stride, float *scratch,
                                att_batch_fn step, att_convert_fn convert, int convert_in_step) {
    const size_t d = p->head_dim, group = p->group, bs = p->block_size;
    const size_t elem = p->kv_type == TK_KV_F32 ? sizeof(float) : sizeof(uint16_t);
    const int converted = p->kv_type != TK_KV_F32;
    const size_t vec_bytes = d * elem, block_bytes = p->block_stride * elem;
    float *kbuf = scratch, *vbuf = scratch + ATT_CHUNK * d;
    float *acc = vbuf + ATT_CHUNK * d;
    size_t tile = att_tile_rows(rows);
    float *mstate = acc + tile * group * d;
    float *lstate = mstate + tile * group;

    for (size_t r0 = 0; r0 < rows; r0 += tile) {
        size_t nr = rows - r0 < tile ? rows - r0 : tile;
        size_t lo[ATT_TILE], hi[ATT_TILE];
        size_t tile_lo = SIZE_MAX, tile_hi = 0;
        for (size_t t = 0; t < nr; t++) {
            size_t ctx = contexts[r0 + t] > 0 ? (size_t)contexts[r0 + t] : 0;
            lo[t] = p->window != 0 && ctx > p->window ? ctx - p->window : 0;
            hi[t] = ctx;
            if (lo[t] < tile_lo) tile_lo = lo[t];
            if (hi[t] > tile_hi) tile_hi = hi[t];
        }
        size_t combos = nr * group;
        /* A decode row's few heads convert each K/V vector in registers as they load it; a
         * prefill tile has so many (row, head) pairs per vector that converting the chunk once
         * into scratch and reading floats is cheaper. */
        const int to_scratch = converted && !(convert_in_step && combos <= 2 * ATT_BATCH);
        memset(acc, 0, combos * d * sizeof(float));
        for (size_t c = 0; c < combos; c++) {
            mstate[c] = -INFINITY;
            lstate[c] = 0.0f;
        }

        if (tile_lo < tile_hi) {
            for (size_t c0 = tile_lo / ATT_CHUNK * ATT_CHUNK; c0 < tile_hi; c0 += ATT_CHUNK) {
                size_t jlo = tile_lo > c0 ? tile_lo - c0 : 0;
                size_t jhi = tile_hi - c0 < ATT_CHUNK ? tile_hi - c0 : ATT_CHUNK;
                const void *kp[ATT_CHUNK], *vp[ATT_CHUNK];
                for (size_t j = jlo; j < jhi;) {
                    size_t pos = c0 + j, slot = pos % bs, run = bs - slot < jhi - j ? bs - slot : jhi - j;
                    size_t base = (size_t)block_table[pos / bs] * block_bytes + slot * vec_bytes;
                    const char *ksrc = (const char *)p->k_cache + base, *vsrc = (const char *)p->v_cache + base;
                    if (to_scratch) {
                        convert(p->kv_type, ksrc, kbuf + j * d, run * d);
                        convert(p->kv_type, vsrc, vbuf + j * d, run * d);
                        for (size_t r = 0; r < run; r++) {
                            kp[j + r] = kbuf + (j + r) * d;
                            vp[j + r] = vbuf + (j + r) * d;
                        }
                    } else {
                        for (size_t r = 0; r < run; r++) {
                            kp[j + r] = ksrc + r * vec_bytes;
                            vp[j + r] = vsrc + r * vec_bytes;
                        }
                    }
                    j += run;
                }
                att_prefetch_next_chunk(p, block_table, c0, tile_hi);
                att_batch b;
                b.n = 0;
                b.kp = kp;
                b.vp = vp;
                b.type = to_scratch ? TK_KV_F32 : p->kv_type;
                b.d = d;
                b.scale = p->scale;
                b.softcap = p->softcap;
                for (size_t t = 0; t < nr; t++) {
                    if (hi[t] <= c0 + jlo || lo[t] >= c0 + jhi) continue;
                    size_t a = lo[t] > c0 + jlo ? lo[t] - c0 : jlo;
                    size_t z = hi[t] < c0 + jhi ? hi[t] - c0 : jhi;
                    if (b.n != 0 && (a != b.lo || z != b.hi)) {
                        step(&b);
                        b.n = 0;
                    }
                    b.lo = a;
                    b.hi = z;
                    for (size_t g = 0; g < group; g++) {
                        size_t c = t * group + g;
                        b.q[b.n] = q + (r0 + t) * q_stride + g * d;
                        b.m[b.n] = mstate + c;
                        b.l[b.n] = lstate + c;
                        b.acc[b.n] = acc + c * d;
                        if (++b.n == ATT_BATCH) {
                            step(&b);
                            b.n = 0;
                        }
                    }
                }
                if (b.n != 0) step(&b);
            }
        }

        for (size_t t = 0; t < nr; t++)
            for (size_t g = 0; g < group; g++) {
                size_t c = t * group + g;
                float inv = lstate[c] > 0.0f ? 1.0f / lstate[c] : 0.0f;
                float *o = out + (r0 + t) * out_stride + g * d;
                const float *s = acc + c * d;
                for (size_t i = 0; i < d; i++) o[i] = s[i] * inv;
            }
    }
}

/* The online-softmax bookkeeping shared by every step: the new maximum over the chunk's scores
 * and the factor the previous accumulator is multiplied by. Returns 0 if nothing is finite. */
static inline int att_new_max(float *m, float chunk_max, float *alpha) {
    float m_new = chunk_max > *m ? chunk_max : *m;
    if (m_new == -INFINITY) return 0;
    *alpha = exp_scalar(*m - m_new);
    *m = m_new;
    return 1;
}

static void att_batch_portable(const att_batch *b) {
    const size_t d = b->d;
    for (size_t h = 0; h < b->n; h++) {
        const float *q = b->q[h];
        float s[ATT_CHUNK];
        float chunk_max = -INFINITY;
        for (size_t j = b->lo; j < b->hi; j++) {
            float acc4[4] = {0};
            const float *k = (const float *)b->kp[j];
            size_t i = 0;
            for (; i + 4 <= d; i += 4)
                for (size_t u = 0; u < 4; u++) acc4[u] += q[i + u] * k[i + u];
            for (; i < d; i++) acc4[0] += q[i] * k[i];
            float x = ((acc4[0] + acc4[1]) + (acc4[2] + acc4[3])) * b->scale;
            if (b->softcap != 0.0f) x = b->softcap * tanh_scalar(x / b->softcap);
            s[j] = x;
            chunk_max = x > chunk_max ? x : chunk_max;
        }
        float alpha;
        if (!att_new_max(b->m[h], chunk_max, &alpha)) continue;
        float sum = 0.0f;
        for (size_t j = b->lo; j < b->hi; j++) {
            s[j] = exp_scalar(s[j] - *b->m[h]);
            sum += s[j];
        }
        *b->l[h] = *b->l[h] * alpha + sum;
        float *acc = b->acc[h];
        if (alpha != 1.0f)
            for (size_t i = 0; i < d; i++) acc[i] *= alpha;
        for (size_t j = b->lo; j < b->hi; j++) {
            const float *v = (const float *)b->vp[j];
            float w = s[j];
            for (size_t i = 0; i < d; i++) acc[i] += w * v[i];
        }
    }
}

void tk_attention_portable(const tk_attention_params *p, const int32_t *block_table, size_t rows,
                           const float *q, size_t q_stride, const int32_t *contexts,
                           float *out, size_t out_stride, float *scratch) {
    attention_driver(p, block_table, rows, q, q_stride, contexts, out, out_stride, scratch,
                     att_batch_portable, tk_kv_load_portable, 0);
}

#if TK_VEC_X86
/* The vector steps' online-softmax bookkeeping: from each pair's maximum over the chunk (cmax),
 * its new running maximum (stored, and in m_new) and, in alpha, the exponent of the factor its
 * accumulator is rescaled by (exponentiated by the caller, all pairs in one vector). Returns
 * the pairs with a finite maximum as a bit set; a pair with none (only -inf or NaN scores) is
 * left unchanged. */
static inline unsigned att_batch_max(const att_batch *b, size_t n, const float *cmax, float *alpha, float *m_new) {
    unsigned live = 0;
    for (size_t h = 0; h < n; h++) {
        float mo = *b->m[h], mn = cmax[h] > mo ? cmax[h] : mo;
        if (mn == -INFINITY) {
            alpha[h] = 0.0f; /* exp(0): left as it is */
            m_new[h] = 0.0f;
            continue;
        }
        live |= 1u << h;
        alpha[h] = mo - mn; /* exponentiated by the caller, all lanes at once */
        m_new[h] = mn;
        *b->m[h] = mn;
    }
    return live;
}

/* ======================================================================================== */
/* ---- AVX2 + FMA + F16C ---- */
#define T256 __attribute__((target("avx2,fma,f16c")))
#define I256 static inline __attribute__((always_inline, target("avx2,fma,f16c")))

I256 __m256i tail_mask256(size_t n) { /* lanes < n (n ≤ 8) */
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

I256 float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

I256 float hmax256(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The scalar algorithm of exp_scalar/tanh_scalar, eight lanes at a time (see the notes there). */
I256 __m256 expm1_reduced256(__m256 x, __m256 *fn_out) {
    __m256 fn = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(LN2_HI), x);
    r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(LN2_LO), r);
    __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(EXP_C7), r, _mm256_set1_ps(EXP_C6));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(EXP_C5));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(EXP_C4));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(EXP_C3));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(EXP_C2));
    *fn_out = fn;
    return _mm256_fmadd_ps(q, _mm256_mul_ps(r, r), r);
}

I256 __m256 exp256(__m256 x) {
    __m256 fn;
    __m256 p = _mm256_add_ps(expm1_reduced256(x, &fn), _mm256_set1_ps(1.0f));
    /* For out-of-range lanes fn (and its conversion) is garbage, replaced below. */
    __m256i n = _mm256_slli_epi32(_mm256_cvtps_epi32(fn), 23);
    __m256 y = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), n));
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, _mm256_set1_ps(EXP_HI), _CMP_GT_OQ));
    return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(EXP_LO), _CMP_LT_OQ), y);
}

I256 __m256 tanh256(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_min_ps(_mm256_set1_ps(TANH_CLAMP), _mm256_andnot_ps(sign, x)); /* NaN stays NaN */
    __m256 fn;
    __m256 e1 = expm1_reduced256(_mm256_add_ps(a, a), &fn);
    __m256 t = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fn), _mm256_set1_epi32(127)), 23));
    __m256 em1 = _mm256_fmadd_ps(t, e1, _mm256_sub_ps(t, _mm256_set1_ps(1.0f)));
    __m256 th = _mm256_div_ps(em1, _mm256_add_ps(em1, _mm256_set1_ps(2.0f)));
    return _mm256_or_ps(th, _mm256_and_ps(sign, x));
}

T256 static float dot_avx2(const float *a, const float *b, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    if (i < n) {
        __m256i m = tail_mask256(n - i);
        s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), s1);
    }
    return hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

T256 static void axpy_avx2(float a, const float *x, float *y, size_t n) {
    __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

T256 static void add_avx2(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += x[i];
}

T256 static void scale_avx2(float *x, float a, size_t n) {
    __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), va));
    for (; i < n; i++) x[i] *= a;
}

T256 static void rms_norm_avx2(const float *x, const float *weight, float eps, int weight_offset, float *out, size_t n) {
    /* As rms_norm_avx512: float lanes over blocks of 256 (eight per lane and accumulator), then double. */
    __m256d total = _mm256_setzero_pd();
    size_t i = 0;
    while (i + 8 <= n) {
        size_t end = n - i < 256 ? i + (n - i) / 8 * 8 : i + 256;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (; i + 32 <= end; i += 32) {
            __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
            __m256 v2 = _mm256_loadu_ps(x + i + 16), v3 = _mm256_loadu_ps(x + i + 24);
            a0 = _mm256_fmadd_ps(v0, v0, a0);
            a1 = _mm256_fmadd_ps(v1, v1, a1);
            a2 = _mm256_fmadd_ps(v2, v2, a2);
            a3 = _mm256_fmadd_ps(v3, v3, a3);
        }
        for (; i + 8 <= end; i += 8) {
            __m256 v = _mm256_loadu_ps(x + i);
            a0 = _mm256_fmadd_ps(v, v, a0);
        }
        __m256 a = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
        total = _mm256_add_pd(total, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)), _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1))));
    }
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(total), _mm256_extractf128_pd(total, 1));
    double sum = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    for (; i < n; i++) sum += (double)x[i] * (double)x[i];
    float inv = rms_inverse(sum, n, eps);
    __m256 vinv = _mm256_set1_ps(inv), off = _mm256_set1_ps((float)weight_offset);
    float offset = (float)weight_offset;
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 w = _mm256_add_ps(_mm256_loadu_ps(weight + i), off);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv), w));
    }
    for (; i < n; i++) out[i] = x[i] * inv * (weight[i] + offset);
}

/* gelu = 0: out = g·u / (1 + exp(-g)); gelu = 1: out = g·u / (1 + exp(K1 g + K2 g³)). */
I256 __m256 gated256(__m256 g, __m256 u, int gelu) {
    __m256 arg = gelu ? _mm256_mul_ps(g, _mm256_fmadd_ps(_mm256_mul_ps(g, g), _mm256_set1_ps(GELU_K2), _mm256_set1_ps(GELU_K1)))
                      : _mm256_xor_ps(g, _mm256_set1_ps(-0.0f));
    return _mm256_div_ps(_mm256_mul_ps(g, u), _mm256_add_ps(_mm256_set1_ps(1.0f), exp256(arg)));
}

I256 void gated_avx2(const float *gate, const float *up, float *out, size_t n, int gelu) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, gated256(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i), gelu));
    if (i < n) {
        __m256i m = tail_mask256(n - i);
        _mm256_maskstore_ps(out + i, m, gated256(_mm256_maskload_ps(gate + i, m), _mm256_maskload_ps(up + i, m), gelu));
    }
}

T256 static void silu_mul_avx2(const float *gate, const float *up, float *out, size_t n) { gated_avx2(gate, up, out, n, 0); }
T256 static void gelu_tanh_mul_avx2(const float *gate, const float *up, float *out, size_t n) { gated_avx2(gate, up, out, n, 1); }

T256 static void exp_avx2(const float *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, exp256(_mm256_loadu_ps(src + i)));
    if (i < n) {
        __m256i m = tail_mask256(n - i);
        _mm256_maskstore_ps(dst + i, m, exp256(_mm256_maskload_ps(src + i, m)));
    }
}

T256 static float max_avx2(const float *x, size_t n) {
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
        m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + i + 8));
        m2 = _mm256_max_ps(m2, _mm256_loadu_ps(x + i + 16));
        m3 = _mm256_max_ps(m3, _mm256_loadu_ps(x + i + 24));
    }
    for (; i + 8 <= n; i += 8) m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
    float m = hmax256(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* Block sums as in exp_sum_blocks_portable: 128 values (16 per lane) in float, then double. */
I256 double exp_sum_blocks_avx2(float *x, const float *src, size_t n, float shift, int store) {
    __m256 vs = _mm256_set1_ps(shift);
    __m256d total = _mm256_setzero_pd();
    size_t i = 0;
    while (i + 8 <= n) {
        size_t end = n - i < 128 ? i + (n - i) / 8 * 8 : i + 128;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        for (; i + 16 <= end; i += 16) {
            __m256 e0 = exp256(_mm256_sub_ps(_mm256_loadu_ps(src + i), vs));
            __m256 e1 = exp256(_mm256_sub_ps(_mm256_loadu_ps(src + i + 8), vs));
            if (store) {
                _mm256_storeu_ps(x + i, e0);
                _mm256_storeu_ps(x + i + 8, e1);
            }
            s0 = _mm256_add_ps(s0, e0);
            s1 = _mm256_add_ps(s1, e1);
        }
        if (i < end) {
            __m256 e0 = exp256(_mm256_sub_ps(_mm256_loadu_ps(src + i), vs));
            if (store) _mm256_storeu_ps(x + i, e0);
            s0 = _mm256_add_ps(s0, e0);
            i += 8;
        }
        __m256 s = _mm256_add_ps(s0, s1);
        total = _mm256_add_pd(total, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(s)), _mm256_cvtps_pd(_mm256_extractf128_ps(s, 1))));
    }
    if (i < n) {
        __m256i m = tail_mask256(n - i);
        __m256 e = exp256(_mm256_sub_ps(_mm256_maskload_ps(src + i, m), vs));
        e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
        if (store) _mm256_maskstore_ps(x + i, m, e);
        total = _mm256_add_pd(total, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(e)), _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1))));
    }
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(total), _mm256_extractf128_pd(total, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

T256 static double exp_sum_avx2(const float *x, size_t n, float shift) { return exp_sum_blocks_avx2(NULL, x, n, shift, 0); }

T256 static void softmax_avx2(float *x, size_t n) {
    float m = max_avx2(x, n);
    if (softmax_degenerate(x, n, m)) return;
    double sum = exp_sum_blocks_avx2(x, x, n, m, 1);
    scale_avx2(x, (float)(1.0 / sum), n);
}

T256 static void rope_avx2(float *x, size_t heads, size_t head_dim, size_t rotary_dims,
                           const float *cos_table, const float *sin_table, int interleaved) {
    size_t half = rotary_dims / 2;
    const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    for (size_t h = 0; h < heads; h++) {
        float *v = x + h * head_dim;
        size_t i = 0;
        if (interleaved) {
            /* Four pairs per vector: cos/sin of each pair duplicated into both its lanes, and
             * fmaddsub gives even lanes a·c - b·s and odd lanes b·c + a·s. */
            for (; i + 4 <= half; i += 4) {
                __m256 xv = _mm256_loadu_ps(v + 2 * i);
                __m256 c = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(cos_table + i)), dup);
                __m256 s = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(sin_table + i)), dup);
                __m256 swapped = _mm256_permute_ps(xv, _MM_SHUFFLE(2, 3, 0, 1));
                _mm256_storeu_ps(v + 2 * i, _mm256_fmaddsub_ps(xv, c, _mm256_mul_ps(swapped, s)));
            }
            for (; i < half; i++) {
                float a = v[2 * i], b = v[2 * i + 1], c = cos_table[i], s = sin_table[i];
                v[2 * i] = a * c - b * s;
                v[2 * i + 1] = b * c + a * s;
            }
        } else {
            for (; i + 8 <= half; i += 8) {
                __m256 a = _mm256_loadu_ps(v + i), b = _mm256_loadu_ps(v + i + half);
                __m256 c = _mm256_loadu_ps(cos_table + i), s = _mm256_loadu_ps(sin_table + i);
                _mm256_storeu_ps(v + i, _mm256_fmsub_ps(a, c, _mm256_mul_ps(b, s)));
                _mm256_storeu_ps(v + i + half, _mm256_fmadd_ps(b, c, _mm256_mul_ps(a, s)));
            }
            if (i < half) {
                __m256i m = tail_mask256(half - i);
                __m256 a = _mm256_maskload_ps(v + i, m), b = _mm256_maskload_ps(v + i + half, m);
                __m256 c = _mm256_maskload_ps(cos_table + i, m), s = _mm256_maskload_ps(sin_table + i, m);
                _mm256_maskstore_ps(v + i, m, _mm256_fmsub_ps(a, c, _mm256_mul_ps(b, s)));
                _mm256_maskstore_ps(v + i + half, m, _mm256_fmadd_ps(b, c, _mm256_mul_ps(a, s)));
            }
        }
    }
}

/* bfloat16 rounding to nearest even on eight lanes, NaN made quiet: tk_float_to_bf16's bits. */
I256 __m128i bf16_pack256(__m256 v) {
    __m256i b = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(0x40));
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);
    r = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    return _mm256_castsi256_si128(r);
}

T256 static void kv_store_avx2(tk_kv_type type, const float *src, void *dst, size_t n) {
    uint16_t *d = (uint16_t *)dst;
    size_t i = 0;
    if (type == TK_KV_F16) {
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(void *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        for (; i < n; i++) d[i] = float_to_half(src[i]);
    } else if (type == TK_KV_BF16) {
        for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i *)(void *)(d + i), bf16_pack256(_mm256_loadu_ps(src + i)));
        for (; i < n; i++) d[i] = tk_float_to_bf16(src[i]);
    } else if (dst != src) {
        memmove(dst, src, n * sizeof(float));
    }
}

I256 void kv_load_inline_avx2(tk_kv_type type, const void *src, float *dst, size_t n) {
    const uint16_t *s = (const uint16_t *)src;
    size_t i = 0;
    if (type == TK_KV_F16) {
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(s + i))));
        for (; i < n; i++) dst[i] = _cvtsh_ss(s[i]);
    } else if (type == TK_KV_BF16) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(s + i))), 16)));
        for (; i < n; i++) dst[i] = tk_bf16_to_float(s[i]);
    } else if ((const void *)dst != src) {
        memmove(dst, src, n * sizeof(float));
    }
}

T256 static void kv_load_avx2(tk_kv_type type, const void *src, float *dst, size_t n) { kv_load_inline_avx2(type, src, dst, n); }

/* Lane j of the result is the sum of v[j]'s lanes. */
I256 __m256 reduce8x8(const __m256 *v) {
    __m256 t0 = _mm256_hadd_ps(v[0], v[1]), t1 = _mm256_hadd_ps(v[2], v[3]);
    __m256 t2 = _mm256_hadd_ps(v[4], v[5]), t3 = _mm256_hadd_ps(v[6], v[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* Eight cache elements from element i of p, as floats; `t` is a constant in every caller. */
I256 __m256 kv8(const void *p, size_t i, tk_kv_type t) {
    if (t == TK_KV_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)p + i)));
    if (t == TK_KV_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)p + i))), 16));
    return _mm256_loadu_ps((const float *)p + i);
}

/* The first `count` (< 8) of them, the other lanes 0. AVX2 has no 16-bit masked load: the few
 * tail elements go through a small buffer. */
I256 __m256 kv8_tail(const void *p, size_t i, size_t count, __m256i mask, tk_kv_type t) {
    if (t == TK_KV_F32) return _mm256_maskload_ps((const float *)p + i, mask);
    uint16_t buf[8] = {0};
    memcpy(buf, (const uint16_t *)p + i, count * sizeof(uint16_t));
    return kv8(buf, 0, t);
}

/* acc[h][c ..< c + 8·nv] = acc · alpha[h] + Σ_j pj[h][j] · v_j for the batch's pairs, the
 * accumulators held in registers, each V vector loaded once for all pairs, and even and odd
 * positions summed separately so twice as many FMA chains are in flight. */
I256 void v_block256(const att_batch *b, const float (*pj)[ATT_CHUNK], const float *alpha, size_t n, size_t c, int nv, tk_kv_type t) {
    __m256 a[ATT_BATCH][2][2];
    for (size_t h = 0; h < n; h++)
        for (int u = 0; u < nv; u++) {
            a[h][0][u] = _mm256_mul_ps(_mm256_loadu_ps(b->acc[h] + c + 8 * u), _mm256_set1_ps(alpha[h]));
            a[h][1][u] = _mm256_setzero_ps();
        }
    size_t j = b->lo;
    for (; j + 2 <= b->hi; j += 2)
        for (int e = 0; e < 2; e++) {
            const void *v = b->vp[j + e];
            __m256 vv[2];
            for (int u = 0; u < nv; u++) vv[u] = kv8(v, c + 8 * (size_t)u, t);
            for (size_t h = 0; h < n; h++) {
                __m256 w = _mm256_broadcast_ss(&pj[h][j + e]);
                for (int u = 0; u < nv; u++) a[h][e][u] = _mm256_fmadd_ps(w, vv[u], a[h][e][u]);
            }
        }
    if (j < b->hi) {
        const void *v = b->vp[j];
        for (size_t h = 0; h < n; h++) {
            __m256 w = _mm256_broadcast_ss(&pj[h][j]);
            for (int u = 0; u < nv; u++) a[h][0][u] = _mm256_fmadd_ps(w, kv8(v, c + 8 * (size_t)u, t), a[h][0][u]);
        }
    }
    for (size_t h = 0; h < n; h++)
        for (int u = 0; u < nv; u++) _mm256_storeu_ps(b->acc[h] + c + 8 * u, _mm256_add_ps(a[h][0][u], a[h][1][u]));
}

/* One online-softmax step of a batch of n (row, head) pairs over one chunk: per position a
 * partial dot product per pair (K loaded and converted once for all pairs), the partials summed
 * eight positions to a vector, scale and softcap, the masked maxima and rescaling, exp, and
 * p·V. n, d and t are constants in each specialised copy. */
I256 void att_batch_inline_avx2(const att_batch *b, size_t n, size_t d, tk_kv_type t) {
    const size_t lo = b->lo, hi = b->hi, full = d / 8 * 8;
    const __m256i tail = tail_mask256(d - full);
    __m256 part[ATT_BATCH][ATT_CHUNK];
    for (size_t h = 0; h < n; h++) {
        for (size_t j = 0; j < lo; j++) part[h][j] = _mm256_setzero_ps();
        for (size_t j = hi; j < ATT_CHUNK; j++) part[h][j] = _mm256_setzero_ps();
    }
    for (size_t j = lo; j < hi; j++) {
        const void *k = b->kp[j];
        __m256 a[ATT_BATCH];
        for (size_t h = 0; h < n; h++) a[h] = _mm256_setzero_ps();
        for (size_t c = 0; c < full; c += 8) {
            __m256 kc = kv8(k, c, t);
            for (size_t h = 0; h < n; h++) a[h] = _mm256_fmadd_ps(_mm256_loadu_ps(b->q[h] + c), kc, a[h]);
        }
        if (full < d) {
            __m256 kc = kv8_tail(k, full, d - full, tail, t);
            for (size_t h = 0; h < n; h++) a[h] = _mm256_fmadd_ps(_mm256_maskload_ps(b->q[h] + full, tail), kc, a[h]);
        }
        for (size_t h = 0; h < n; h++) part[h][j] = a[h];
    }
    const __m256 scale = _mm256_set1_ps(b->scale), ninf = _mm256_set1_ps(-INFINITY);
    const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    enum { Q = ATT_CHUNK / 8 };
    __m256 valid[Q];
    for (int g = 0; g < Q; g++) {
        __m256i j = _mm256_add_epi32(index, _mm256_set1_epi32(8 * g));
        valid[g] = _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)lo), j),
                                                           _mm256_cmpgt_epi32(_mm256_set1_epi32((int)hi), j)));
    }
    __m256 s[ATT_BATCH][Q];
    float cmax[ATT_BATCH];
    for (size_t h = 0; h < n; h++) {
        __m256 mx = ninf;
        for (int g = 0; g < Q; g++) {
            if (hi <= 8 * (size_t)g || lo >= 8 * (size_t)g + 8) {
                s[h][g] = ninf;
                continue;
            }
            __m256 x = _mm256_mul_ps(reduce8x8(part[h] + 8 * g), scale);
            if (b->softcap != 0.0f) {
                __m256 cap = _mm256_set1_ps(b->softcap);
                x = _mm256_mul_ps(cap, tanh256(_mm256_div_ps(x, cap)));
            }
            s[h][g] = _mm256_blendv_ps(ninf, x, valid[g]);
            mx = _mm256_max_ps(mx, s[h][g]);
        }
        cmax[h] = hmax256(mx);
    }
    float alpha[8] = {0}, m_new[ATT_BATCH];
    unsigned live = att_batch_max(b, n, cmax, alpha, m_new);
    if (live == 0) return;
    _mm256_storeu_ps(alpha, exp256(_mm256_loadu_ps(alpha)));
    float pj[ATT_BATCH][ATT_CHUNK];
    for (size_t h = 0; h < n; h++) {
        __m256 mh = _mm256_set1_ps(m_new[h]), sum = _mm256_setzero_ps();
        for (int g = 0; g < Q; g++) {
            __m256 ph = _mm256_setzero_ps();
            if ((live & (1u << h)) && hi > 8 * (size_t)g && lo < 8 * (size_t)g + 8) ph = exp256(_mm256_sub_ps(s[h][g], mh));
            sum = _mm256_add_ps(sum, ph);
            _mm256_storeu_ps(pj[h] + 8 * g, ph);
        }
        if (live & (1u << h)) *b->l[h] = *b->l[h] * alpha[h] + hsum256(sum);
    }
    /* Sixteen registers: two vectors per pair for small batches, one for batches of three or four. */
    const int nv = n <= 2 ? 2 : 1;
    size_t c = 0;
    for (; c + 8 * (size_t)nv <= d; c += 8 * (size_t)nv) v_block256(b, pj, alpha, n, c, nv, t);
    for (; c + 8 <= d; c += 8) v_block256(b, pj, alpha, n, c, 1, t);
    if (c < d) {
        for (size_t h = 0; h < n; h++) {
            __m256 acc = _mm256_mul_ps(_mm256_maskload_ps(b->acc[h] + c, tail), _mm256_set1_ps(alpha[h]));
            for (size_t j = lo; j < hi; j++)
                acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&pj[h][j]), kv8_tail(b->vp[j], c, d - c, tail, t), acc);
            _mm256_maskstore_ps(b->acc[h] + c, tail, acc);
        }
    }
}

/* Copies with the element type, the batch size and the common head sizes fixed, every loop
 * over them unrolled. */
#define ATT_SPECIALISE_N(fn, b, d, t)                              \
    switch ((b)->n) {                                              \
    case 1: fn(b, 1, d, t); break;                                 \
    case 2: fn(b, 2, d, t); break;                                 \
    case 3: fn(b, 3, d, t); break;                                 \
    default: fn(b, 4, d, t); break;                                \
    }
#define ATT_SPECIALISE_D(fn, b, t)                                 \
    if ((b)->d == 64) {                                            \
        ATT_SPECIALISE_N(fn, b, 64, t)                             \
    } else if ((b)->d == 128) {                                    \
        ATT_SPECIALISE_N(fn, b, 128, t)                            \
    } else {                                                       \
        ATT_SPECIALISE_N(fn, b, (b)->d, t)                         \
    }
#define ATT_SPECIALISE(fn, b)                                      \
    if ((b)->type == TK_KV_F16) {                                  \
        ATT_SPECIALISE_D(fn, b, TK_KV_F16)                         \
    } else if ((b)->type == TK_KV_BF16) {                          \
        ATT_SPECIALISE_D(fn, b, TK_KV_BF16)                        \
    } else {                                                       \
        ATT_SPECIALISE_D(fn, b, TK_KV_F32)                         \
    }

T256 static void att_batch_avx2(const att_batch *b) { ATT_SPECIALISE(att_batch_inline_avx2, b) }

T256 static void attention_avx2(const tk_attention_params *p, const int32_t *block_table, size_t rows,
                                const float *q, size_t q_stride, const int32_t *contexts,
                                float *out, size_t out_stride, float *scratch) {
    attention_driver(p, block_table, rows, q, q_stride, contexts, out, out_stride, scratch,
                     att_batch_avx2, kv_load_inline_avx2, 1);
}

/* ======================================================================================== */
/* ---- AVX-512 F/BW/VL (+ F16C) ----
 * bfloat16 is converted with integer rounding rather than AVX512-BF16's vcvtneps2bf16, which
 * flushes subnormals and would differ from the portable bits; that conversion is memory-bound
 * either way. vdpbf16ps is not used for q·k either: it would round q to bfloat16. */
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define I512 static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

I512 __mmask16 tail_mask512(size_t n) { return (__mmask16)((1u << n) - 1u); } /* n < 16 */

I512 __m512 expm1_reduced512(__m512 x, __m512 *fn_out) {
    __m512 fn = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(LN2_HI), x);
    r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(LN2_LO), r);
    __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(EXP_C7), r, _mm512_set1_ps(EXP_C6));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(EXP_C5));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(EXP_C4));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(EXP_C3));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(EXP_C2));
    *fn_out = fn;
    return _mm512_fmadd_ps(q, _mm512_mul_ps(r, r), r);
}

I512 __m512 exp512(__m512 x) {
    __m512 fn;
    __m512 p = _mm512_add_ps(expm1_reduced512(x, &fn), _mm512_set1_ps(1.0f));
    __m512i n = _mm512_slli_epi32(_mm512_cvtps_epi32(fn), 23);
    __m512 y = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), n));
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_HI), _CMP_GT_OQ), _mm512_set1_ps(INFINITY));
    return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_LO), _CMP_LT_OQ), _mm512_setzero_ps());
}

I512 __m512 tanh512(__m512 x) {
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    __m512 a = _mm512_min_ps(_mm512_set1_ps(TANH_CLAMP), _mm512_abs_ps(x)); /* NaN stays NaN */
    __m512 fn;
    __m512 e1 = expm1_reduced512(_mm512_add_ps(a, a), &fn);
    __m512 t = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fn), _mm512_set1_epi32(127)), 23));
    __m512 em1 = _mm512_fmadd_ps(t, e1, _mm512_sub_ps(t, _mm512_set1_ps(1.0f)));
    __m512 th = _mm512_div_ps(em1, _mm512_add_ps(em1, _mm512_set1_ps(2.0f)));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(th), _mm512_and_si512(sign, _mm512_castps_si512(x))));
}

T512 static float dot_avx512(const float *a, const float *b, size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 m = tail_mask512(n - i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

T512 static void axpy_avx512(float a, const float *x, float *y, size_t n) {
    __m512 va = _mm512_set1_ps(a);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = tail_mask512(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

T512 static void add_avx512(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = tail_mask512(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

I512 void scale_inline_avx512(float *x, float a, size_t n) {
    __m512 va = _mm512_set1_ps(a);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), va));
    if (i < n) {
        __mmask16 m = tail_mask512(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), va));
    }
}

T512 static void scale_avx512(float *x, float a, size_t n) { scale_inline_avx512(x, a, n); }

I512 __m512d widen_sum512(__m512 v, __m512d acc) {
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    return _mm512_add_pd(acc, _mm512_add_pd(lo, hi));
}

T512 static void rms_norm_avx512(const float *x, const float *weight, float eps, int weight_offset, float *out, size_t n) {
    /* Squares summed in float lanes over blocks of 256 (four per lane and accumulator, so the
     * relative error of a block sum stays near 1e-7), block sums in double: widening every
     * element to double costs more than the whole normalisation pass. */
    __m512d total = _mm512_setzero_pd();
    size_t i = 0;
    while (i < n) {
        size_t end = n - i < 256 ? n : i + 256;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (; i + 64 <= end; i += 64) {
            __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
            __m512 v2 = _mm512_loadu_ps(x + i + 32), v3 = _mm512_loadu_ps(x + i + 48);
            a0 = _mm512_fmadd_ps(v0, v0, a0);
            a1 = _mm512_fmadd_ps(v1, v1, a1);
            a2 = _mm512_fmadd_ps(v2, v2, a2);
            a3 = _mm512_fmadd_ps(v3, v3, a3);
        }
        for (; i + 16 <= end; i += 16) {
            __m512 v = _mm512_loadu_ps(x + i);
            a0 = _mm512_fmadd_ps(v, v, a0);
        }
        if (i < end) {
            __m512 v = _mm512_maskz_loadu_ps(tail_mask512(end - i), x + i);
            a1 = _mm512_fmadd_ps(v, v, a1);
            i = end;
        }
        total = widen_sum512(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), total);
    }
    float inv = rms_inverse(_mm512_reduce_add_pd(total), n, eps);
    __m512 vinv = _mm512_set1_ps(inv), off = _mm512_set1_ps((float)weight_offset);
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 w = _mm512_add_ps(_mm512_loadu_ps(weight + i), off);
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv), w));
    }
    if (i < n) {
        __mmask16 m = tail_mask512(n - i);
        __m512 w = _mm512_add_ps(_mm512_maskz_loadu_ps(m, weight + i), off);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vinv), w));
    }
}

I512 __m512 gated512(__m512 g, __m512 u, int gelu) {
    __m512 arg = gelu ? _mm512_mul_ps(g, _mm512_fmadd_ps(_mm512_mul_ps(g, g), _mm512_set1_ps(GELU_K2), _mm512_set1_ps(GELU_K1)))
                      : _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), _mm512_set1_epi32((int)0x80000000u)));
    return _mm512_div_ps(_mm512_mul_ps(g, u), _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(arg)));
}

I512 void gated_avx512(const float *gate, const float *up, float *out, size_t n, int gelu) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, gated512(_mm512_loadu_ps(gate + i), _mm512_loadu_ps(up + i), gelu));
    if (i < n) {
        __mmask16 m = tail_mask512(n - i);
        _mm512_mask_storeu_ps(out + i, m, gated512(_mm512_maskz_loadu_ps(m, gate + i), _mm512_maskz_loadu_ps(m, up + i), gelu));
    }
}

T512 static void silu_mul_avx512(const float *gate, const float *up, float *out, size_t n) { gated_avx512(gate, up, out, n, 0); }
T512 static void gelu_tanh_mul_avx512(const float *gate, const float *up, float *out, size_t n) { gated_avx512(gate, up, out, n, 1); }

T512 static void exp_avx512(const float *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, exp512(_mm512_loadu_ps(src + i)));
    if (i < n) {
        __mmask16 m = tail_mask512(n - i);
        _mm512_mask_storeu_ps(dst + i, m, exp512(_mm512_maskz_loadu_ps(m, src + i)));
    }
}

T512 static float max_avx512(const float *x, size_t n) {
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + i));
        m1 = _mm512_max_ps(m1, _mm512_loadu_ps(x + i + 16));
        m2 = _mm512_max_ps(m2, _mm512_loadu_ps(x + i + 32));
        m3 = _mm512_max_ps(m3, _mm512_loadu_ps(x + i + 48));
    }
    for (; i + 16 <= n; i += 16) m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + i));
    if (i < n) m1 = _mm512_mask_max_ps(m1, tail_mask512(n - i), m1, _mm512_maskz_loadu_ps(tail_mask512(n - i), x + i));
    return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
}


/* Block sums: 128 values (8 per lane) in float, then double. */
I512 double exp_sum_blocks_avx512(float *x, const float *src, size_t n, float shift, int store) {
    __m512 vs = _mm512_set1_ps(shift);
    __m512d total = _mm512_setzero_pd();
    size_t i = 0;
    while (i + 16 <= n) {
        size_t end = n - i < 128 ? i + (n - i) / 16 * 16 : i + 128;
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
        for (; i + 32 <= end; i += 32) {
            __m512 e0 = exp512(_mm512_sub_ps(_mm512_loadu_ps(src + i), vs));
            __m512 e1 = exp512(_mm512_sub_ps(_mm512_loadu_ps(src + i + 16), vs));
            if (store) {
                _mm512_storeu_ps(x + i, e0);
                _mm512_storeu_ps(x + i + 16, e1);
            }
            s0 = _mm512_add_ps(s0, e0);
            s1 = _mm512_add_ps(s1, e1);
        }
        if (i < end) {
            __m512 e0 = exp512(_mm512_sub_ps(_mm512_loadu_ps(src + i), vs));
            if (store) _mm512_storeu_ps(x + i, e0);
            s0 = _mm512_add_ps(s0, e0);
            i += 16;
        }
        total = widen_sum512(_mm512_add_ps(s0, s1), total);
    }
    if (i < n) {
        __mmask16 m = tail_mask512(n - i);
        __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, src + i), vs)));
        if (store) _mm512_mask_storeu_ps(x + i, m, e);
        total = widen_sum512(e, total);
    }
    return _mm512_reduce_add_pd(total);
}

T512 static double exp_sum_avx512(const float *x, size_t n, float shift) { return exp_sum_blocks_avx512(NULL, x, n, shift, 0); }

T512 static void softmax_avx512(float *x, size_t n) {
    float m = max_avx512(x, n);
    if (softmax_degenerate(x, n, m)) return;
    double sum = exp_sum_blocks_avx512(x, x, n, m, 1);
    scale_inline_avx512(x, (float)(1.0 / sum), n);
}

I512 void rope_pairs512(float *v, const float *cos_table, const float *sin_table, __mmask8 m8, __mmask16 m16) {
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    __m512 xv = _mm512_maskz_loadu_ps(m16, v);
    __m512 c = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_maskz_loadu_ps(m8, cos_table)));
    __m512 s = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_maskz_loadu_ps(m8, sin_table)));
    __m512 swapped = _mm512_permute_ps(xv, _MM_SHUFFLE(2, 3, 0, 1));
    _mm512_mask_storeu_ps(v, m16, _mm512_fmaddsub_ps(xv, c, _mm512_mul_ps(swapped, s)));
}

T512 static void rope_avx512(float *x, size_t heads, size_t head_dim, size_t rotary_dims,
                             const float *cos_table, const float *sin_table, int interleaved) {
    size_t half = rotary_dims / 2;
    for (size_t h = 0; h < heads; h++) {
        float *v = x + h * head_dim;
        size_t i = 0;
        if (interleaved) {
            /* Eight pairs per vector; see rope_avx2. */
            for (; i + 8 <= half; i += 8) rope_pairs512(v + 2 * i, cos_table + i, sin_table + i, 0xff, 0xffff);
            if (i < half) {
                size_t r = half - i;
                rope_pairs512(v + 2 * i, cos_table + i, sin_table + i, (__mmask8)((1u << r) - 1u), tail_mask512(2 * r));
            }
        } else {
            for (; i + 16 <= half; i += 16) {
                __m512 a = _mm512_loadu_ps(v + i), b = _mm512_loadu_ps(v + i + half);
                __m512 c = _mm512_loadu_ps(cos_table + i), s = _mm512_loadu_ps(sin_table + i);
                _mm512_storeu_ps(v + i, _mm512_fmsub_ps(a, c, _mm512_mul_ps(b, s)));
                _mm512_storeu_ps(v + i + half, _mm512_fmadd_ps(b, c, _mm512_mul_ps(a, s)));
            }
            if (i < half) {
                __mmask16 m = tail_mask512(half - i);
                __m512 a = _mm512_maskz_loadu_ps(m, v + i), b = _mm512_maskz_loadu_ps(m, v + i + half);
                __m512 c = _mm512_maskz_loadu_ps(m, cos_table + i), s = _mm512_maskz_loadu_ps(m, sin_table + i);
                _mm512_mask_storeu_ps(v + i, m, _mm512_fmsub_ps(a, c, _mm512_mul_ps(b, s)));
                _mm512_mask_storeu_ps(v + i + half, m, _mm512_fmadd_ps(b, c, _mm512_mul_ps(a, s)));
            }
        }
    }
}

I512 __m256i bf16_pack512(__m512 v) {
    __m512i b = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x40));
    __m512i r = _mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), quiet);
    return _mm512_cvtepi32_epi16(r);
}

T512 static void kv_store_avx512(tk_kv_type type, const float *src, void *dst, size_t n) {
    uint16_t *d = (uint16_t *)dst;
    size_t i = 0;
    if (type == TK_KV_F16) {
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256((__m256i *)(void *)(d + i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        if (i < n) {
            __mmask16 m = tail_mask512(n - i);
            _mm256_mask_storeu_epi16(d + i, m, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
    } else if (type == TK_KV_BF16) {
        for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(void *)(d + i), bf16_pack512(_mm512_loadu_ps(src + i)));
        if (i < n) {
            __mmask16 m = tail_mask512(n - i);
            _mm256_mask_storeu_epi16(d + i, m, bf16_pack512(_mm512_maskz_loadu_ps(m, src + i)));
        }
    } else if (dst != src) {
        memmove(dst, src, n * sizeof(float));
    }
}

I512 __m512 half16_load(const uint16_t *s, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, s)); }
I512 __m512 bf16_16_full(const uint16_t *s) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)s)), 16));
}
I512 __m512 bf16_16_load(const uint16_t *s, __mmask16 m) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, s)), 16));
}

I512 void kv_load_inline_avx512(tk_kv_type type, const void *src, float *dst, size_t n) {
    const uint16_t *s = (const uint16_t *)src;
    size_t i = 0;
    if (type == TK_KV_F16) {
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(s + i))));
        if (i < n) _mm512_mask_storeu_ps(dst + i, tail_mask512(n - i), half16_load(s + i, tail_mask512(n - i)));
    } else if (type == TK_KV_BF16) {
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, bf16_16_full(s + i));
        if (i < n) _mm512_mask_storeu_ps(dst + i, tail_mask512(n - i), bf16_16_load(s + i, tail_mask512(n - i)));
    } else if ((const void *)dst != src) {
        memmove(dst, src, n * sizeof(float));
    }
}

T512 static void kv_load_avx512(tk_kv_type type, const void *src, float *dst, size_t n) { kv_load_inline_avx512(type, src, dst, n); }

/* Lane j of the result is the sum of v[j]'s sixteen lanes: pairs interleaved and added within
 * 128-bit lanes twice (4 vectors of 4 positions × 4 partial lanes), then 128-bit lanes folded
 * across vectors. 45 shuffles and adds for 16 dot products, instead of 16 full reductions. */
I512 __m512 reduce16x16(const __m512 *v) {
    __m512 t[8], u[4];
    for (int i = 0; i < 8; i++)
        t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; i++) {
        __m512d x = _mm512_castps_pd(t[2 * i]), y = _mm512_castps_pd(t[2 * i + 1]);
        u[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    __m512 x01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512 x23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(x01, x23, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(x01, x23, _MM_SHUFFLE(3, 1, 3, 1)));
}

I512 __m512 kv16(const void *p, size_t i, tk_kv_type t) {
    if (t == TK_KV_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)((const uint16_t *)p + i)));
    if (t == TK_KV_BF16) return bf16_16_full((const uint16_t *)p + i);
    return _mm512_loadu_ps((const float *)p + i);
}

I512 __m512 kv16_tail(const void *p, size_t i, __mmask16 m, tk_kv_type t) {
    if (t == TK_KV_F16) return half16_load((const uint16_t *)p + i, m);
    if (t == TK_KV_BF16) return bf16_16_load((const uint16_t *)p + i, m);
    return _mm512_maskz_loadu_ps(m, (const float *)p + i);
}

/* As v_block256, sixteen lanes wide. */
I512 void v_block512(const att_batch *b, const float (*pj)[ATT_CHUNK], const float *alpha, size_t n, size_t c, int nv, tk_kv_type t) {
    __m512 a[ATT_BATCH][2][4];
    for (size_t h = 0; h < n; h++)
        for (int u = 0; u < nv; u++) {
            a[h][0][u] = _mm512_mul_ps(_mm512_loadu_ps(b->acc[h] + c + 16 * u), _mm512_set1_ps(alpha[h]));
            a[h][1][u] = _mm512_setzero_ps();
        }
    size_t j = b->lo;
    for (; j + 2 <= b->hi; j += 2)
        for (int e = 0; e < 2; e++) {
            const void *v = b->vp[j + e];
            __m512 vv[4];
            for (int u = 0; u < nv; u++) vv[u] = kv16(v, c + 16 * (size_t)u, t);
            for (size_t h = 0; h < n; h++) {
                __m512 w = _mm512_set1_ps(pj[h][j + e]);
                for (int u = 0; u < nv; u++) a[h][e][u] = _mm512_fmadd_ps(w, vv[u], a[h][e][u]);
            }
        }
    if (j < b->hi) {
        const void *v = b->vp[j];
        for (size_t h = 0; h < n; h++) {
            __m512 w = _mm512_set1_ps(pj[h][j]);
            for (int u = 0; u < nv; u++) a[h][0][u] = _mm512_fmadd_ps(w, kv16(v, c + 16 * (size_t)u, t), a[h][0][u]);
        }
    }
    for (size_t h = 0; h < n; h++)
        for (int u = 0; u < nv; u++) _mm512_storeu_ps(b->acc[h] + c + 16 * u, _mm512_add_ps(a[h][0][u], a[h][1][u]));
}

/* As att_batch_inline_avx2, sixteen lanes wide: one vector of scores per 16 positions. */
I512 void att_batch_inline_avx512(const att_batch *b, size_t n, size_t d, tk_kv_type t) {
    const size_t lo = b->lo, hi = b->hi, full = d / 16 * 16;
    const __mmask16 tail = tail_mask512(d - full);
    __m512 part[ATT_BATCH][ATT_CHUNK];
    for (size_t h = 0; h < n; h++) {
        for (size_t j = 0; j < lo; j++) part[h][j] = _mm512_setzero_ps();
        for (size_t j = hi; j < ATT_CHUNK; j++) part[h][j] = _mm512_setzero_ps();
    }
    for (size_t j = lo; j < hi; j++) {
        const void *k = b->kp[j];
        __m512 a[ATT_BATCH];
        for (size_t h = 0; h < n; h++) a[h] = _mm512_setzero_ps();
        for (size_t c = 0; c < full; c += 16) {
            __m512 kc = kv16(k, c, t);
            for (size_t h = 0; h < n; h++) a[h] = _mm512_fmadd_ps(_mm512_loadu_ps(b->q[h] + c), kc, a[h]);
        }
        if (full < d) {
            __m512 kc = kv16_tail(k, full, tail, t);
            for (size_t h = 0; h < n; h++) a[h] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, b->q[h] + full), kc, a[h]);
        }
        for (size_t h = 0; h < n; h++) part[h][j] = a[h];
    }
    enum { Q = ATT_CHUNK / 16 };
    const uint64_t valid_bits = ((1ull << hi) - 1u) & ~((1ull << lo) - 1u);
    const __m512 scale = _mm512_set1_ps(b->scale), ninf = _mm512_set1_ps(-INFINITY);
    __m512 s[ATT_BATCH][Q];
    float cmax[ATT_BATCH];
    for (size_t h = 0; h < n; h++) {
        __m512 mx = ninf;
        for (int g = 0; g < Q; g++) {
            __mmask16 valid = (__mmask16)(valid_bits >> (16 * g));
            if (valid == 0) {
                s[h][g] = ninf;
                continue;
            }
            __m512 x = _mm512_mul_ps(reduce16x16(part[h] + 16 * g), scale);
            if (b->softcap != 0.0f) {
                __m512 cap = _mm512_set1_ps(b->softcap);
                x = _mm512_mul_ps(cap, tanh512(_mm512_div_ps(x, cap)));
            }
            s[h][g] = _mm512_mask_mov_ps(ninf, valid, x);
            mx = _mm512_max_ps(mx, s[h][g]);
        }
        cmax[h] = _mm512_reduce_max_ps(mx);
    }
    float alpha[ATT_BATCH] = {0}, m_new[ATT_BATCH];
    unsigned live = att_batch_max(b, n, cmax, alpha, m_new);
    if (live == 0) return;
    const __mmask16 lanes = (__mmask16)((1u << n) - 1u);
    _mm512_mask_storeu_ps(alpha, lanes, exp512(_mm512_maskz_loadu_ps(lanes, alpha)));
    float pj[ATT_BATCH][ATT_CHUNK];
    for (size_t h = 0; h < n; h++) {
        __m512 mh = _mm512_set1_ps(m_new[h]), sum = _mm512_setzero_ps();
        for (int g = 0; g < Q; g++) {
            __m512 ph = _mm512_setzero_ps();
            if ((live & (1u << h)) && (__mmask16)(valid_bits >> (16 * g)) != 0) ph = exp512(_mm512_sub_ps(s[h][g], mh));
            sum = _mm512_add_ps(sum, ph);
            _mm512_storeu_ps(pj[h] + 16 * g, ph);
        }
        if (live & (1u << h)) *b->l[h] = *b->l[h] * alpha[h] + _mm512_reduce_add_ps(sum);
    }
    /* 32 registers: four vectors per pair (×2 for even/odd positions) for batches up to two, two beyond. */
    const int nv = n <= 2 ? 4 : 2;
    size_t c = 0;
    for (; c + 16 * (size_t)nv <= d; c += 16 * (size_t)nv) v_block512(b, pj, alpha, n, c, nv, t);
    for (; c + 16 <= d; c += 16) v_block512(b, pj, alpha, n, c, 1, t);
    if (c < d) {
        for (size_t h = 0; h < n; h++) {
            __m512 acc = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, b->acc[h] + c), _mm512_set1_ps(alpha[h]));
            for (size_t j = lo; j < hi; j++)
                acc = _mm512_fmadd_ps(_mm512_set1_ps(pj[h][j]), kv16_tail(b->vp[j], c, tail, t), acc);
            _mm512_mask_storeu_ps(b->acc[h] + c, tail, acc);
        }
    }
}

T512 static void att_batch_avx512(const att_batch *b) { ATT_SPECIALISE(att_batch_inline_avx512, b) }

/* ---- prefill tiles with (row, head) pairs in vector lanes ----
 * A tile of prefill rows shares its K/V chunks; the per-pair path above spends a reduction per
 * 16 scores and reloads each V vector once per batch of 4 pairs. Here pair c = t * group + g
 * (row t, head g) is lane c % 16 of vector c / 16 (NV vectors), and the whole tile runs as
 * three small matrix products per chunk of 32 positions, every fma full width:
 *   S[j][c] = Σ_i K[j][i] Qᵀ[i][c]            (K broadcast per position, Qᵀ scaled once per tile)
 *   online softmax per lane (max, Σ exp) with each lane's causal/window range as a mask
 *   Accᵀ[i][c] = α[c] Accᵀ[i][c] + Σ_j V[j][i] P[j][c]
 * The results are transposed back once per tile. */

#define ATT_LANE_PV_ROWS 8 /* head-dimension rows of Accᵀ held in registers at a time */

/* Scores of positions [j, j + nj) for nv vectors of pairs (nj, nv constants). */
I512 void lanes_scores(const float *kbuf, size_t d, const float *qt, size_t j, int nj, int nv, float *sc) {
    __m512 acc[16][4];
    for (int jj = 0; jj < nj; jj++)
        for (int v = 0; v < nv; v++) acc[jj][v] = _mm512_setzero_ps();
    const float *k = kbuf + j * d;
    for (size_t i = 0; i < d; i++) {
        __m512 qv[4];
        for (int v = 0; v < nv; v++) qv[v] = _mm512_loadu_ps(qt + i * ATT_LANES + 16 * v);
        for (int jj = 0; jj < nj; jj++) {
            __m512 kb = _mm512_set1_ps(k[(size_t)jj * d + i]);
            for (int v = 0; v < nv; v++) acc[jj][v] = _mm512_fmadd_ps(kb, qv[v], acc[jj][v]);
        }
    }
    for (int jj = 0; jj < nj; jj++)
        for (int v = 0; v < nv; v++) _mm512_storeu_ps(sc + (j + (size_t)jj) * ATT_LANES + 16 * v, acc[jj][v]);
}

/* Accᵀ rows [i0, i0 + ni) += Σ_j V[j][i] P[j][·] over positions [jlo, jhi), after scaling by α. */
I512 void lanes_values(const float *vbuf, size_t d, const float *pr, size_t jlo, size_t jhi, const __m512 *alpha,
                       size_t i0, int ni, int nv, float *acct) {
    __m512 acc[ATT_LANE_PV_ROWS][4];
    for (int ii = 0; ii < ni; ii++)
        for (int v = 0; v < nv; v++)
            acc[ii][v] = _mm512_mul_ps(_mm512_loadu_ps(acct + (i0 + (size_t)ii) * ATT_LANES + 16 * v), alpha[v]);
    for (size_t j = jlo; j < jhi; j++) {
        __m512 pv[4];
        for (int v = 0; v < nv; v++) pv[v] = _mm512_loadu_ps(pr + j * ATT_LANES + 16 * v);
        const float *vr = vbuf + j * d + i0;
        for (int ii = 0; ii < ni; ii++) {
            __m512 vb = _mm512_set1_ps(vr[ii]);
            for (int v = 0; v < nv; v++) acc[ii][v] = _mm512_fmadd_ps(vb, pv[v], acc[ii][v]);
        }
    }
    for (int ii = 0; ii < ni; ii++)
        for (int v = 0; v < nv; v++) _mm512_storeu_ps(acct + (i0 + (size_t)ii) * ATT_LANES + 16 * v, acc[ii][v]);
}

I512 void lanes_tile(const tk_attention_params *p, const int32_t *block_table, size_t nr, const float *q,
                     size_t q_stride, const int32_t *contexts, float *out, size_t out_stride, float *scratch, int nv) {
    const size_t d = p->head_dim, group = p->group, bs = p->block_size, pairs = nr * group;
    const size_t elem = p->kv_type == TK_KV_F32 ? sizeof(float) : sizeof(uint16_t);
    const size_t vec_bytes = d * elem, block_bytes = p->block_stride * elem;
    float *kbuf = scratch, *vbuf = kbuf + ATT_CHUNK * d, *qt = vbuf + ATT_CHUNK * d;
    float *acct = qt + d * ATT_LANES, *sc = acct + d * ATT_LANES;
    /* Each lane's positions [lo, hi); lanes past the tile's pairs see none. */
    int32_t lo[ATT_LANES], hi[ATT_LANES];
    size_t tile_lo = SIZE_MAX, tile_hi = 0;
    for (size_t c = 0; c < (size_t)nv * 16; c++) {
        lo[c] = hi[c] = 0;
        if (c >= pairs) continue;
        size_t t = c / group, ctx = contexts[t] > 0 ? (size_t)contexts[t] : 0;
        size_t l = p->window != 0 && ctx > p->window ? ctx - p->window : 0;
        lo[c] = (int32_t)l;
        hi[c] = (int32_t)ctx;
        if (l < tile_lo) tile_lo = l;
        if (ctx > tile_hi) tile_hi = ctx;
    }
    for (size_t i = 0; i < d; i++)
        for (size_t c = 0; c < (size_t)nv * 16; c++)
            qt[i * ATT_LANES + c] = c < pairs ? q[(c / group) * q_stride + (c % group) * d + i] * p->scale : 0.0f;
    memset(acct, 0, d * ATT_LANES * sizeof(float));
    __m512 m[4], l[4], lov[4], hiv[4];
    for (int v = 0; v < nv; v++) {
        m[v] = _mm512_set1_ps(-INFINITY);
        l[v] = _mm512_setzero_ps();
        lov[v] = _mm512_castsi512_ps(_mm512_loadu_si512((const void *)(lo + 16 * v)));
        hiv[v] = _mm512_castsi512_ps(_mm512_loadu_si512((const void *)(hi + 16 * v)));
    }
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (size_t c0 = tile_lo < tile_hi ? tile_lo / ATT_CHUNK * ATT_CHUNK : tile_hi; c0 < tile_hi; c0 += ATT_CHUNK) {
        const size_t jlo = tile_lo > c0 ? tile_lo - c0 : 0;
        const size_t jhi = tile_hi - c0 < ATT_CHUNK ? tile_hi - c0 : ATT_CHUNK;
        for (size_t j = jlo; j < jhi;) {
            size_t pos = c0 + j, slot = pos % bs, run = bs - slot < jhi - j ? bs - slot : jhi - j;
            size_t base = (size_t)block_table[pos / bs] * block_bytes + slot * vec_bytes;
            kv_load_inline_avx512(p->kv_type, (const char *)p->k_cache + base, kbuf + j * d, run * d);
            kv_load_inline_avx512(p->kv_type, (const char *)p->v_cache + base, vbuf + j * d, run * d);
            j += run;
        }
        att_prefetch_next_chunk(p, block_table, c0, tile_hi);
        /* Scores, in blocks of positions that keep nj × nv accumulators in registers. */
        const int nj = nv == 1 ? 16 : nv == 2 ? 12 : nv == 3 ? 8 : 6;
        size_t j = jlo;
        for (; j + (size_t)nj <= jhi; j += (size_t)nj) lanes_scores(kbuf, d, qt, j, nj, nv, sc);
        for (; j < jhi; j++) lanes_scores(kbuf, d, qt, j, 1, nv, sc);
        /* Mask, softcap, chunk maximum, then probabilities in place of the scores. */
        __m512 cmax[4];
        for (int v = 0; v < nv; v++) cmax[v] = ninf;
        for (j = jlo; j < jhi; j++) {
            const __m512 posv = _mm512_castsi512_ps(_mm512_set1_epi32((int)(c0 + j)));
            for (int v = 0; v < nv; v++) {
                __m512 x = _mm512_loadu_ps(sc + j * ATT_LANES + 16 * v);
                if (p->softcap != 0.0f) {
                    __m512 cap = _mm512_set1_ps(p->softcap);
                    x = _mm512_mul_ps(cap, tanh512(_mm512_div_ps(x, cap)));
                }
                __mmask16 valid = _mm512_cmp_epi32_mask(_mm512_castps_si512(posv), _mm512_castps_si512(lov[v]), _MM_CMPINT_NLT)
                                  & _mm512_cmp_epi32_mask(_mm512_castps_si512(posv), _mm512_castps_si512(hiv[v]), _MM_CMPINT_LT);
                x = _mm512_mask_mov_ps(ninf, valid, x);
                _mm512_storeu_ps(sc + j * ATT_LANES + 16 * v, x);
                cmax[v] = _mm512_max_ps(cmax[v], x);
            }
        }
        __m512 alpha[4];
        for (int v = 0; v < nv; v++) {
            __m512 m_new = _mm512_max_ps(m[v], cmax[v]);
            /* Lanes that have seen no position yet keep -inf; their shift is 0, so exp gives 0. */
            __m512 shift = _mm512_mask_mov_ps(m_new, _mm512_cmp_ps_mask(m_new, ninf, _CMP_EQ_OQ), _mm512_setzero_ps());
            alpha[v] = exp512(_mm512_sub_ps(m[v], shift));
            __m512 sum = _mm512_setzero_ps();
            for (j = jlo; j < jhi; j++) {
                __m512 pj = exp512(_mm512_sub_ps(_mm512_loadu_ps(sc + j * ATT_LANES + 16 * v), shift));
                _mm512_storeu_ps(sc + j * ATT_LANES + 16 * v, pj);
                sum = _mm512_add_ps(sum, pj);
            }
            l[v] = _mm512_fmadd_ps(l[v], alpha[v], sum);
            m[v] = m_new;
        }
        /* Head-dimension rows of Accᵀ per pass: ni × nv accumulators in registers. */
        const int ni = nv == 4 ? ATT_LANE_PV_ROWS / 2 : ATT_LANE_PV_ROWS;
        size_t i = 0;
        for (; i + (size_t)ni <= d; i += (size_t)ni) lanes_values(vbuf, d, sc, jlo, jhi, alpha, i, ni, nv, acct);
        for (; i < d; i++) lanes_values(vbuf, d, sc, jlo, jhi, alpha, i, 1, nv, acct);
    }
    float sums[ATT_LANES];
    for (int v = 0; v < nv; v++) _mm512_storeu_ps(sums + 16 * v, l[v]);
    for (size_t c = 0; c < pairs; c++) {
        float inv = sums[c] > 0.0f ? 1.0f / sums[c] : 0.0f;
        float *o = out + (c / group) * out_stride + (c % group) * d;
        for (size_t i = 0; i < d; i++) o[i] = acct[i * ATT_LANES + c] * inv;
    }
}

/* Rows per lane tile: as many as fill the lanes (at most 16, and at least one). */
static size_t att_lane_rows(size_t group) {
    size_t r = ATT_LANES / group;
    return r > 16 ? 16 : r == 0 ? 1 : r;
}

T512 static void attention_lanes_avx512(const tk_attention_params *p, const int32_t *block_table, size_t rows,
                                        const float *q, size_t q_stride, const int32_t *contexts,
                                        float *out, size_t out_stride, float *scratch) {
    const size_t tile = att_lane_rows(p->group);
    for (size_t r0 = 0; r0 < rows; r0 += tile) {
        const size_t nr = rows - r0 < tile ? rows - r0 : tile;
        const int nv = (int)((nr * p->group + 15) / 16);
        const float *qr = q + r0 * q_stride;
        float *o = out + r0 * out_stride;
        switch (nv) {
        case 1: lanes_tile(p, block_table, nr, qr, q_stride, contexts + r0, o, out_stride, scratch, 1); break;
        case 2: lanes_tile(p, block_table, nr, qr, q_stride, contexts + r0, o, out_stride, scratch, 2); break;
        case 3: lanes_tile(p, block_table, nr, qr, q_stride, contexts + r0, o, out_stride, scratch, 3); break;
        default: lanes_tile(p, block_table, nr, qr, q_stride, contexts + r0, o, out_stride, scratch, 4); break;
        }
    }
}

T512 static void attention_avx512(const tk_attention_params *p, const int32_t *block_table, size_t rows,
                                  const float *q, size_t q_stride, const int32_t *contexts,
                                  float *out, size_t out_stride, float *scratch) {
    /* Lanes pay off once a tile has half a vector of pairs; a decode row's few heads take the
     * per-pair path. */
    if (rows * p->group >= 8 && p->group <= ATT_LANES) {
        attention_lanes_avx512(p, block_table, rows, q, q_stride, contexts, out, out_stride, scratch);
        return;
    }
    attention_driver(p, block_table, rows, q, q_stride, contexts, out, out_stride, scratch,
                     att_batch_avx512, kv_load_inline_avx512, 1);
}
#endif /* TK_VEC_X86 */

/* ======================================================================================== */
/* ---- dispatch ---- */

typedef struct {
    const char *isa;
    float (*dot)(const float *, const float *, size_t);
    void (*axpy)(float, const float *, float *, size_t);
    void (*add)(const float *, float *, size_t);
    void (*scale)(float *, float, size_t);
    void (*rms_norm)(const float *, const float *, float, int, float *, size_t);
    void (*silu_mul)(const float *, const float *, float *, size_t);
    void (*gelu_tanh_mul)(const float *, const float *, float *, size_t);
    void (*softmax)(float *, size_t);
    float (*max)(const float *, size_t);
    double (*exp_sum)(const float *, size_t, float);
    void (*rope)(float *, size_t, size_t, size_t, const float *, const float *, int);
    void (*kv_store)(tk_kv_type, const float *, void *, size_t);
    void (*kv_load)(tk_kv_type, const void *, float *, size_t);
    void (*attention)(const tk_attention_params *, const int32_t *, size_t, const float *, size_t,
                      const int32_t *, float *, size_t, float *);
    void (*exp)(const float *, float *, size_t);
} vector_table;

static const vector_table portable_table = {
    "portable", tk_dot_portable, tk_axpy_portable, tk_add_portable, tk_scale_portable,
    tk_rms_norm_portable, tk_silu_mul_portable, tk_gelu_tanh_mul_portable, tk_softmax_portable,
    tk_max_portable, tk_exp_sum_portable, tk_rope_portable, tk_kv_store_portable,
    tk_kv_load_portable, tk_attention_portable, tk_exp_portable,
};

#if TK_VEC_X86
static const vector_table avx2_table = {
    "avx2", dot_avx2, axpy_avx2, add_avx2, scale_avx2, rms_norm_avx2, silu_mul_avx2,
    gelu_tanh_mul_avx2, softmax_avx2, max_avx2, exp_sum_avx2, rope_avx2, kv_store_avx2,
    kv_load_avx2, attention_avx2, exp_avx2,
};

static const vector_table avx512_table = {
    "avx512", dot_avx512, axpy_avx512, add_avx512, scale_avx512, rms_norm_avx512, silu_mul_avx512,
    gelu_tanh_mul_avx512, softmax_avx512, max_avx512, exp_sum_avx512, rope_avx512, kv_store_avx512,
    kv_load_avx512, attention_avx512, exp_avx512,
};
#endif

static const vector_table *chosen = &portable_table;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose_table(void) {
#if TK_VEC_X86
    int ceiling = tk_kernel_ceiling();
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl");
    if (ceiling >= TK_LEVEL_AVX512 && avx512) chosen = &avx512_table;
    else if (ceiling >= TK_LEVEL_AVX2 && avx2) chosen = &avx2_table;
#endif
}

static inline const vector_table *table(void) {
    pthread_once(&chosen_once, choose_table);
    return chosen;
}

const char *tk_vector_isa(void) { return table()->isa; }
float tk_dot(const float *a, const float *b, size_t n) { return table()->dot(a, b, n); }
void tk_axpy(float a, const float *x, float *y, size_t n) { table()->axpy(a, x, y, n); }
void tk_add(const float *x, float *y, size_t n) { table()->add(x, y, n); }
void tk_scale(float *x, float a, size_t n) { table()->scale(x, a, n); }
void tk_rms_norm(const float *x, const float *weight, float eps, int weight_offset, float *out, size_t n) {
    table()->rms_norm(x, weight, eps, weight_offset, out, n);
}
void tk_silu_mul(const float *gate, const float *up, float *out, size_t n) { table()->silu_mul(gate, up, out, n); }
void tk_gelu_tanh_mul(const float *gate, const float *up, float *out, size_t n) { table()->gelu_tanh_mul(gate, up, out, n); }
void tk_softmax(float *x, size_t n) { table()->softmax(x, n); }
float tk_max(const float *x, size_t n) { return table()->max(x, n); }
double tk_exp_sum(const float *x, size_t n, float shift) { return table()->exp_sum(x, n, shift); }
void tk_rope(float *x, size_t heads, size_t head_dim, size_t rotary_dims,
             const float *cos_table, const float *sin_table, int interleaved) {
    table()->rope(x, heads, head_dim, rotary_dims, cos_table, sin_table, interleaved);
}
void tk_kv_store(tk_kv_type type, const float *src, void *dst, size_t n) { table()->kv_store(type, src, dst, n); }
void tk_kv_load(tk_kv_type type, const void *src, float *dst, size_t n) { table()->kv_load(type, src, dst, n); }
void tk_attention(const tk_attention_params *p, const int32_t *block_table, size_t rows,
                  const float *q, size_t q_stride, const int32_t *contexts,
                  float *out, size_t out_stride, float *scratch) {
    table()->attention(p, block_table, rows, q, q_stride, contexts, out, out_stride, scratch);
}
void tk_exp(const float *src, float *dst, size_t n) { table()->exp(src, dst, n); }
