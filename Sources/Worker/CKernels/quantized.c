#include "tessel_kernels.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TK_X86 1
#endif

/* ggml block layouts (little-endian). */
typedef struct { uint16_t d, m; uint8_t qs[16]; } block_q4_1;
typedef struct { uint16_t d; int8_t qs[32]; } block_q8_0;

static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    uint32_t bits;
    if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else {  /* subnormal: normalise */
            exponent = 127 - 15 + 1;
            while ((mantissa & 0x400) == 0) { mantissa <<= 1; exponent--; }
            bits = sign | (exponent << 23) | ((mantissa & 0x3ff) << 13);
        }
    } else if (exponent == 31) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else {
        bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static void block_sums_of(const float *x, size_t nblocks, float *sums) {
    for (size_t b = 0; b < nblocks; b++) {
        float s = 0;
        for (size_t j = 0; j < 32; j++) s += x[b * 32 + j];
        sums[b] = s;
    }
}

/* ---- portable ----
 * Per-lane accumulators (no reassociation needed) let the compiler vectorise these for
 * whatever the baseline target offers (SSE2, NEON). */

void tk_gemv_q4_1_portable(const void *blocks, size_t rows, size_t cols, const float *x,
                           float *block_sums, float *y) {
    size_t nb = cols / 32;
    block_sums_of(x, nb, block_sums);
    const block_q4_1 *all = (const block_q4_1 *)blocks;
    for (size_t r = 0; r < rows; r++) {
        const block_q4_1 *row = all + r * nb;
        float acc[16] = {0};
        float offsets = 0;
        for (size_t b = 0; b < nb; b++) {
            const float *xb = x + b * 32;
            const uint8_t *qs = row[b].qs;
            float d = half_to_float(row[b].d);
            for (size_t j = 0; j < 16; j++)
                acc[j] += d * ((float)(qs[j] & 0x0f) * xb[j] + (float)(qs[j] >> 4) * xb[j + 16]);
            offsets += half_to_float(row[b].m) * block_sums[b];
        }
        float sum = 0;
        for (size_t j = 0; j < 16; j++) sum += acc[j];
        y[r] = sum + offsets;
    }
}

void tk_gemv_q8_0_portable(const void *blocks, size_t rows, size_t cols, const float *x, float *y) {
    size_t nb = cols / 32;
    const block_q8_0 *all = (const block_q8_0 *)blocks;
    for (size_t r = 0; r < rows; r++) {
        const block_q8_0 *row = all + r * nb;
        float acc[32] = {0};
        for (size_t b = 0; b < nb; b++) {
            const float *xb = x + b * 32;
            const int8_t *qs = row[b].qs;
            float d = half_to_float(row[b].d);
            for (size_t j = 0; j < 32; j++) acc[j] += d * ((float)qs[j] * xb[j]);
        }
        float sum = 0;
        for (size_t j = 0; j < 32; j++) sum += acc[j];
        y[r] = sum;
    }
}

#if TK_X86
/* ---- AVX2 + FMA + F16C ---- */

__attribute__((target("avx2,fma,f16c")))
static float hsum256_q(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

__attribute__((target("avx2,fma,f16c")))
static void gemv_q4_1_avx2(const void *blocks, size_t rows, size_t cols, const float *x,
                           float *block_sums, float *y) {
    size_t nb = cols / 32;
    block_sums_of(x, nb, block_sums);
    const block_q4_1 *all = (const block_q4_1 *)blocks;
    const __m128i low_mask = _mm_set1_epi8(0x0f);
    for (size_t r = 0; r < rows; r++) {
        const block_q4_1 *row = all + r * nb;
        __m256 acc = _mm256_setzero_ps();
        float offsets = 0;
        for (size_t b = 0; b < nb; b++) {
            const float *xb = x + b * 32;
            __m128i q = _mm_loadu_si128((const __m128i *)row[b].qs);
            __m128i lo = _mm_and_si128(q, low_mask);
            __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), low_mask);
            __m256 q0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
            __m256 q1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
            __m256 q2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
            __m256 q3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
            __m256 dot = _mm256_mul_ps(q0, _mm256_loadu_ps(xb));
            dot = _mm256_fmadd_ps(q1, _mm256_loadu_ps(xb + 8), dot);
            dot = _mm256_fmadd_ps(q2, _mm256_loadu_ps(xb + 16), dot);
            dot = _mm256_fmadd_ps(q3, _mm256_loadu_ps(xb + 24), dot);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(row[b].d)), dot, acc);
            offsets += _cvtsh_ss(row[b].m) * block_sums[b];
        }
        y[r] = hsum256_q(acc) + offsets;
    }
}

__attribute__((target("avx2,fma,f16c")))
static void gemv_q8_0_avx2(const void *blocks, size_t rows, size_t cols, const float *x, float *y) {
    size_t nb = cols / 32;
    const block_q8_0 *all = (const block_q8_0 *)blocks;
    for (size_t r = 0; r < rows; r++) {
        const block_q8_0 *row = all + r * nb;
        __m256 acc = _mm256_setzero_ps();
        for (size_t b = 0; b < nb; b++) {
            const float *xb = x + b * 32;
            __m256 dot = _mm256_setzero_ps();
            for (size_t j = 0; j < 32; j += 8) {
                __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(row[b].qs + j)));
                dot = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), _mm256_loadu_ps(xb + j), dot);
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(row[b].d)), dot, acc);
        }
        y[r] = hsum256_q(acc);
    }
}

#define TK_GROUP 4

__attribute__((target("avx2,fma,f16c")))
static void gemm_q4_1_avx2(const void *blocks, size_t rows, size_t cols, const float *x, size_t count,
                           float *block_sums, float *y, size_t y_stride) {
    size_t nb = cols / 32;
    for (size_t n = 0; n < count; n++) block_sums_of(x + n * cols, nb, block_sums + n * nb);
    const block_q4_1 *all = (const block_q4_1 *)blocks;
    const __m128i low_mask = _mm_set1_epi8(0x0f);
    for (size_t first = 0; first < count; first += TK_GROUP) {
        size_t group = count - first < TK_GROUP ? count - first : TK_GROUP;
        const float *xs = x + first * cols;
        const float *sums = block_sums + first * nb;
        for (size_t r = 0; r < rows; r++) {
            const block_q4_1 *row = all + r * nb;
            __m256 acc[TK_GROUP];
            float offsets[TK_GROUP] = {0, 0, 0, 0};
            for (size_t n = 0; n < TK_GROUP; n++) acc[n] = _mm256_setzero_ps();
            for (size_t b = 0; b < nb; b++) {
                __m128i q = _mm_loadu_si128((const __m128i *)row[b].qs);
                __m128i lo = _mm_and_si128(q, low_mask);
                __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), low_mask);
                __m256 q0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
                __m256 q1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
                __m256 q2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
                __m256 q3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
                __m256 d = _mm256_set1_ps(_cvtsh_ss(row[b].d));
                float m = _cvtsh_ss(row[b].m);
                for (size_t n = 0; n < group; n++) {
                    const float *xb = xs + n * cols + b * 32;
                    __m256 dot = _mm256_mul_ps(q0, _mm256_loadu_ps(xb));
                    dot = _mm256_fmadd_ps(q1, _mm256_loadu_ps(xb + 8), dot);
                    dot = _mm256_fmadd_ps(q2, _mm256_loadu_ps(xb + 16), dot);
                    dot = _mm256_fmadd_ps(q3, _mm256_loadu_ps(xb + 24), dot);
                    acc[n] = _mm256_fmadd_ps(d, dot, acc[n]);
                    offsets[n] += m * sums[n * nb + b];
                }
            }
            for (size_t n = 0; n < group; n++) y[(first + n) * y_stride + r] = hsum256_q(acc[n]) + offsets[n];
        }
    }
}

__attribute__((target("avx2,fma,f16c")))
static void gemm_q8_0_avx2(const void *blocks, size_t rows, size_t cols, const float *x, size_t count,
                           float *y, size_t y_stride) {
    size_t nb = cols / 32;
    const block_q8_0 *all = (const block_q8_0 *)blocks;
    for (size_t first = 0; first < count; first += TK_GROUP) {
        size_t group = count - first < TK_GROUP ? count - first : TK_GROUP;
        const float *xs = x + first * cols;
        for (size_t r = 0; r < rows; r++) {
            const block_q8_0 *row = all + r * nb;
            __m256 acc[TK_GROUP];
            for (size_t n = 0; n < TK_GROUP; n++) acc[n] = _mm256_setzero_ps();
            for (size_t b = 0; b < nb; b++) {
                __m256 q[4];
                for (size_t k = 0; k < 4; k++)
                    q[k] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(row[b].qs + 8 * k))));
                __m256 d = _mm256_set1_ps(_cvtsh_ss(row[b].d));
                for (size_t n = 0; n < group; n++) {
                    const float *xb = xs + n * cols + b * 32;
                    __m256 dot = _mm256_mul_ps(q[0], _mm256_loadu_ps(xb));
                    dot = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(xb + 8), dot);
                    dot = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(xb + 16), dot);
                    dot = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(xb + 24), dot);
                    acc[n] = _mm256_fmadd_ps(d, dot, acc[n]);
                }
            }
            for (size_t n = 0; n < group; n++) y[(first + n) * y_stride + r] = hsum256_q(acc[n]);
        }
    }
}

/* ---- AVX-512F (+F16C for the scales) ---- */

__attribute__((target("avx512f,f16c")))
static void gemv_q4_1_avx512(const void *blocks, size_t rows, size_t cols, const float *x,
                             float *block_sums, float *y) {
    size_t nb = cols / 32;
    block_sums_of(x, nb, block_sums);
    const block_q4_1 *all = (const block_q4_1 *)blocks;
    const __m128i low_mask = _mm_set1_epi8(0x0f);
    for (size_t r = 0; r < rows; r++) {
        const block_q4_1 *row = all + r * nb;
        __m512 acc = _mm512_setzero_ps();
        float offsets = 0;
        for (size_t b = 0; b < nb; b++) {
            const float *xb = x + b * 32;
            __m128i q = _mm_loadu_si128((const __m128i *)row[b].qs);
            __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q, low_mask)));
            __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), low_mask)));
            __m512 dot = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xb + 16), _mm512_mul_ps(lo, _mm512_loadu_ps(xb)));
            acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(row[b].d)), dot, acc);
            offsets += _cvtsh_ss(row[b].m) * block_sums[b];
        }
        y[r] = _mm512_reduce_add_ps(acc) + offsets;
    }
}

__attribute__((target("avx512f,f16c")))
static void gemv_q8_0_avx512(const void *blocks, size_t rows, size_t cols, const float *x, float *y) {
    size_t nb = cols / 32;
    const block_q8_0 *all = (const block_q8_0 *)blocks;
    for (size_t r = 0; r < rows; r++) {
        const block_q8_0 *row = all + r * nb;
        __m512 acc = _mm512_setzero_ps();
        for (size_t b = 0; b < nb; b++) {
            const float *xb = x + b * 32;
            __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)row[b].qs)));
            __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(row[b].qs + 16))));
            __m512 dot = _mm512_fmadd_ps(q1, _mm512_loadu_ps(xb + 16), _mm512_mul_ps(q0, _mm512_loadu_ps(xb)));
            acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(row[b].d)), dot, acc);
        }
        y[r] = _mm512_reduce_add_ps(acc);
    }
}

/* Several input vectors: each block is decoded once, then multiplied with up to TK_GROUP vectors. */

__attribute__((target("avx512f,f16c")))
static void gemm_q4_1_avx512(const void *blocks, size_t rows, size_t cols, const float *x, size_t count,
                             float *block_sums, float *y, size_t y_stride) {
    size_t nb = cols / 32;
    for (size_t n = 0; n < count; n++) block_sums_of(x + n * cols, nb, block_sums + n * nb);
    const block_q4_1 *all = (const block_q4_1 *)blocks;
    const __m128i low_mask = _mm_set1_epi8(0x0f);
    for (size_t first = 0; first < count; first += TK_GROUP) {
        size_t group = count - first < TK_GROUP ? count - first : TK_GROUP;
        const float *xs = x + first * cols;
        const float *sums = block_sums + first * nb;
        for (size_t r = 0; r < rows; r++) {
            const block_q4_1 *row = all + r * nb;
            __m512 acc[TK_GROUP];
            float offsets[TK_GROUP] = {0, 0, 0, 0};
            for (size_t n = 0; n < TK_GROUP; n++) acc[n] = _mm512_setzero_ps();
            for (size_t b = 0; b < nb; b++) {
                __m128i q = _mm_loadu_si128((const __m128i *)row[b].qs);
                __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q, low_mask)));
                __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), low_mask)));
                __m512 d = _mm512_set1_ps(_cvtsh_ss(row[b].d));
                float m = _cvtsh_ss(row[b].m);
                for (size_t n = 0; n < group; n++) {
                    const float *xb = xs + n * cols + b * 32;
                    __m512 dot = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xb + 16), _mm512_mul_ps(lo, _mm512_loadu_ps(xb)));
                    acc[n] = _mm512_fmadd_ps(d, dot, acc[n]);
                    offsets[n] += m * sums[n * nb + b];
                }
            }
            for (size_t n = 0; n < group; n++) y[(first + n) * y_stride + r] = _mm512_reduce_add_ps(acc[n]) + offsets[n];
        }
    }
}

__attribute__((target("avx512f,f16c")))
static void gemm_q8_0_avx512(const void *blocks, size_t rows, size_t cols, const float *x, size_t count,
                             float *y, size_t y_stride) {
    size_t nb = cols / 32;
    const block_q8_0 *all = (const block_q8_0 *)blocks;
    for (size_t first = 0; first < count; first += TK_GROUP) {
        size_t group = count - first < TK_GROUP ? count - first : TK_GROUP;
        const float *xs = x + first * cols;
        for (size_t r = 0; r < rows; r++) {
            const block_q8_0 *row = all + r * nb;
            __m512 acc[TK_GROUP];
            for (size_t n = 0; n < TK_GROUP; n++) acc[n] = _mm512_setzero_ps();
            for (size_t b = 0; b < nb; b++) {
                __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)row[b].qs)));
                __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(row[b].qs + 16))));
                __m512 d = _mm512_set1_ps(_cvtsh_ss(row[b].d));
                for (size_t n = 0; n < group; n++) {
                    const float *xb = xs + n * cols + b * 32;
                    __m512 dot = _mm512_fmadd_ps(q1, _mm512_loadu_ps(xb + 16), _mm512_mul_ps(q0, _mm512_loadu_ps(xb)));
                    acc[n] = _mm512_fmadd_ps(d, dot, acc[n]);
                }
            }
            for (size_t n = 0; n < group; n++) y[(first + n) * y_stride + r] = _mm512_reduce_add_ps(acc[n]);
        }
    }
}
#endif

/* Without a multi-vector kernel for the CPU: one vector at a time. */
static void gemm_q4_1_by_vector(const void *blocks, size_t rows, size_t cols, const float *x, size_t count,
                                float *block_sums, float *y, size_t y_stride) {
    for (size_t n = 0; n < count; n++) tk_gemv_q4_1(blocks, rows, cols, x + n * cols, block_sums, y + n * y_stride);
}

static void gemm_q8_0_by_vector(const void *blocks, size_t rows, size_t cols, const float *x, size_t count,
                                float *y, size_t y_stride) {
    for (size_t n = 0; n < count; n++) tk_gemv_q8_0(blocks, rows, cols, x + n * cols, y + n * y_stride);
}

/* ---- dispatch ---- */

typedef void (*gemv_q4_1_fn)(const void *, size_t, size_t, const float *, float *, float *);
typedef void (*gemv_q8_0_fn)(const void *, size_t, size_t, const float *, float *);
typedef void (*gemm_q4_1_fn)(const void *, size_t, size_t, const float *, size_t, float *, float *, size_t);
typedef void (*gemm_q8_0_fn)(const void *, size_t, size_t, const float *, size_t, float *, size_t);

static struct {
    gemv_q4_1_fn q4_1;
    gemv_q8_0_fn q8_0;
    gemm_q4_1_fn many_q4_1;
    gemm_q8_0_fn many_q8_0;
} quantized = {tk_gemv_q4_1_portable, tk_gemv_q8_0_portable, gemm_q4_1_by_vector, gemm_q8_0_by_vector};

static pthread_once_t quantized_once = PTHREAD_ONCE_INIT;

static void select_quantized(void) {
    int ceiling = tk_kernel_ceiling();
    if (ceiling == 0) return;
#if TK_X86
    __builtin_cpu_init();
    if (ceiling >= 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("f16c")) {
        quantized.q4_1 = gemv_q4_1_avx512;
        quantized.q8_0 = gemv_q8_0_avx512;
        quantized.many_q4_1 = gemm_q4_1_avx512;
        quantized.many_q8_0 = gemm_q8_0_avx512;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        quantized.q4_1 = gemv_q4_1_avx2;
        quantized.q8_0 = gemv_q8_0_avx2;
        quantized.many_q4_1 = gemm_q4_1_avx2;
        quantized.many_q8_0 = gemm_q8_0_avx2;
    }
#endif
}

void tk_gemv_q4_1(const void *blocks, size_t rows, size_t cols, const float *x,
                  float *block_sums, float *y) {
    pthread_once(&quantized_once, select_quantized);
    quantized.q4_1(blocks, rows, cols, x, block_sums, y);
}

void tk_gemv_q8_0(const void *blocks, size_t rows, size_t cols, const float *x, float *y) {
    pthread_once(&quantized_once, select_quantized);
    quantized.q8_0(blocks, rows, cols, x, y);
}

void tk_gemm_q4_1(const void *blocks, size_t rows, size_t cols, const float *x, size_t count,
                  float *block_sums, float *y, size_t y_stride) {
    pthread_once(&quantized_once, select_quantized);
    quantized.many_q4_1(blocks, rows, cols, x, count, block_sums, y, y_stride);
}

void tk_gemm_q8_0(const void *blocks, size_t rows, size_t cols, const float *x, size_t count,
                  float *y, size_t y_stride) {
    pthread_once(&quantized_once, select_quantized);
    quantized.many_q8_0(blocks, rows, cols, x, count, y, y_stride);
}
