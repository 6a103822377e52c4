#include "tessel_kernels.h"

#include <pthread.h>
#include <string.h>

#include "simd_common.h"

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
/* ---- AVX2 + FMA + F16C ----
 * Each ISA supplies always-inline per-block helpers (decode a block's quants, multiply them
 * with 32 inputs); quantized_isa.h then writes the kernels once for both ISAs, so every kernel
 * compiles to the same code as if the helpers were written out in its loop. */

/* One Q4_1 block's quants as floats: q[0], q[1] hold elements 0-15 (low nibbles), q[2], q[3]
 * elements 16-31 (high nibbles). */
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void q4_1_quants_avx2(const block_q4_1 *block, __m256 q[4]) {
    const __m128i low_mask = _mm_set1_epi8(0x0f);
    __m128i bytes = _mm_loadu_si128((const __m128i *)block->qs);
    __m128i lo = _mm_and_si128(bytes, low_mask);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low_mask);
    q[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    q[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
    q[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    q[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
}

/* One Q8_0 block's quants as floats, eight elements per register in order. */
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void q8_0_quants_avx2(const block_q8_0 *block, __m256 q[4]) {
    for (size_t k = 0; k < 4; k++)
        q[k] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(block->qs + 8 * k))));
}

/* The lane-wise products of one block's quants with 32 inputs, in a fixed order of operations. */
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256 dot32_avx2(const __m256 q[4], const float *xb) {
    __m256 dot = _mm256_mul_ps(q[0], _mm256_loadu_ps(xb));
    dot = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(xb + 8), dot);
    dot = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(xb + 16), dot);
    return _mm256_fmadd_ps(q[3], _mm256_loadu_ps(xb + 24), dot);
}

#define TK_GROUP 4

#define TK_ISA avx2
#define TK_TARGET "avx2,fma,f16c"
#define TK_VEC __m256
#define TK_QREGS 4
#define TK_ZERO _mm256_setzero_ps
#define TK_SPLAT _mm256_set1_ps
#define TK_FMADD _mm256_fmadd_ps
#define TK_REDUCE tk_hsum256
#include "quantized_isa.h"

/* ---- AVX-512F (+F16C for the scales) ---- */

/* One Q4_1 block's quants as floats: q[0] elements 0-15 (low nibbles), q[1] 16-31 (high). */
__attribute__((target("avx512f,f16c"), always_inline))
static inline void q4_1_quants_avx512(const block_q4_1 *block, __m512 q[2]) {
    const __m128i low_mask = _mm_set1_epi8(0x0f);
    __m128i bytes = _mm_loadu_si128((const __m128i *)block->qs);
    q[0] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, low_mask)));
    q[1] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), low_mask)));
}

/* One Q8_0 block's quants as floats: q[0] elements 0-15, q[1] 16-31. */
__attribute__((target("avx512f,f16c"), always_inline))
static inline void q8_0_quants_avx512(const block_q8_0 *block, __m512 q[2]) {
    q[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)block->qs)));
    q[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(block->qs + 16))));
}

__attribute__((target("avx512f,f16c"), always_inline))
static inline __m512 dot32_avx512(const __m512 q[2], const float *xb) {
    return _mm512_fmadd_ps(q[1], _mm512_loadu_ps(xb + 16), _mm512_mul_ps(q[0], _mm512_loadu_ps(xb)));
}

#define TK_ISA avx512
#define TK_TARGET "avx512f,f16c"
#define TK_VEC __m512
#define TK_QREGS 2
#define TK_ZERO _mm512_setzero_ps
#define TK_SPLAT _mm512_set1_ps
#define TK_FMADD _mm512_fmadd_ps
#define TK_REDUCE _mm512_reduce_add_ps
#include "quantized_isa.h"
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
