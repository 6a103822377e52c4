/* Instruction-set levels, the (encoding, level) → kernel table, and the float32-activation
 * products: float weights (F32/F16/BF16) multiplied with FMA, and the exact path of the block
 * encodings (each row decoded once, then the F32 body). */
#include "tessel_kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ggml_blocks.h"
#include "kernels_internal.h"
#include "simd_common.h"

/* ---- levels ---- */

int tk_kernel_ceiling(void) {
    const char *choice = getenv("TESSEL_KERNELS");
    if (choice == NULL) return TK_LEVEL_AVX512;
    if (strcmp(choice, "portable") == 0) return TK_LEVEL_PORTABLE;
    if (strcmp(choice, "avx2") == 0) return TK_LEVEL_AVX2;
    if (strcmp(choice, "avxvnni") == 0) return TK_LEVEL_AVX_VNNI;
    return TK_LEVEL_AVX512;
}

static int detected_level = -1;
static int has_avx_vnni = 0;
static pthread_once_t level_once = PTHREAD_ONCE_INIT;

/* AVX-512 CPUs need not have AVX-VNNI (Zen 4 and Ice Lake do not), so the levels are a chain
 * with one gap: such a CPU runs 0, 1 and 3. */
static void detect_level(void) {
    int level = TK_LEVEL_PORTABLE;
#if TK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        level = TK_LEVEL_AVX2;
        has_avx_vnni = __builtin_cpu_supports("avxvnni");
        if (has_avx_vnni) level = TK_LEVEL_AVX_VNNI;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
            level = TK_LEVEL_AVX512;
    }
#endif
    int ceiling = tk_kernel_ceiling();
    level = level < ceiling ? level : ceiling;
    if (level == TK_LEVEL_AVX_VNNI && !has_avx_vnni) level = TK_LEVEL_AVX2;
    detected_level = level;
}

int tk_cpu_level(void) {
    pthread_once(&level_once, detect_level);
    return detected_level;
}

int tk_level_runs(int level) {
    int best = tk_cpu_level();
    if (level < 0 || level > best) return 0;
    return level != TK_LEVEL_AVX_VNNI || has_avx_vnni;
}

const char *tk_level_name(int level) {
    switch (level) {
    case TK_LEVEL_AVX512: return "avx512";
    case TK_LEVEL_AVX_VNNI: return "avxvnni";
    case TK_LEVEL_AVX2: return "avx2";
    default: return "portable";
    }
}

/* The float and vector bodies have no AVX-VNNI variant: that level runs the AVX2 ones. */
static int float_level(int level) { return level >= TK_LEVEL_AVX512 ? 2 : level >= TK_LEVEL_AVX2 ? 1 : 0; }

/* ---- float weights × float activations ----
 * One weight row at a time against up to four input rows, so each weight element is loaded and
 * converted once per four products. The weight element type is a compile-time constant in each
 * specialisation. */

static inline float load_weight(const void *w, size_t c, tk_encoding encoding) {
    switch (encoding) {
    case TK_ENC_F16: return tk_half_to_float(((const uint16_t *)w)[c]);
    case TK_ENC_BF16: return tk_bf16_to_float(((const uint16_t *)w)[c]);
    default: return ((const float *)w)[c];
    }
}

#define TK_GROUP 4

static inline __attribute__((always_inline)) void float_rows_portable(
    const void *w, size_t w_stride, size_t rows, const float *x, size_t x_stride, size_t nx, size_t k,
    float *y, size_t y_stride, tk_encoding encoding) {
    for (size_t i = 0; i < rows; i++) {
        const void *row = (const char *)w + i * w_stride;
        for (size_t first = 0; first < nx; first += TK_GROUP) {
            size_t group = nx - first < TK_GROUP ? nx - first : TK_GROUP;
            float acc[TK_GROUP][8] = {{0}};
            size_t c = 0;
            for (; c + 8 <= k; c += 8)
                for (size_t j = 0; j < group; j++) {
                    const float *xr = (const float *)((const char *)x + (first + j) * x_stride);
                    for (size_t l = 0; l < 8; l++) acc[j][l] += load_weight(row, c + l, encoding) * xr[c + l];
                }
            for (size_t j = 0; j < group; j++) {
                const float *xr = (const float *)((const char *)x + (first + j) * x_stride);
                float sum = ((acc[j][0] + acc[j][1]) + (acc[j][2] + acc[j][3])) +
                            ((acc[j][4] + acc[j][5]) + (acc[j][6] + acc[j][7]));
                for (size_t t = c; t < k; t++) sum += load_weight(row, t, encoding) * xr[t];
                y[(first + j) * y_stride + i] = sum;
            }
        }
    }
}

#if TK_X86
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256 load8_avx2(const void *w, size_t c, tk_encoding encoding) {
    switch (encoding) {
    case TK_ENC_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + c)));
    case TK_ENC_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + c))), 16));
    default: return _mm256_loadu_ps((const float *)w + c);
    }
}

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void float_rows_avx2(const void *w, size_t w_stride, size_t rows, const float *x, size_t x_stride,
                                   size_t nx, size_t k, float *y, size_t y_stride, tk_encoding encoding) {
    for (size_t i = 0; i < rows; i++) {
        const void *row = (const char *)w + i * w_stride;
        for (size_t first = 0; first < nx; first += TK_GROUP) {
            size_t group = nx - first < TK_GROUP ? nx - first : TK_GROUP;
            const float *xs[TK_GROUP];
            __m256 acc[TK_GROUP];
            for (size_t j = 0; j < TK_GROUP; j++) {
                xs[j] = (const float *)((const char *)x + (first + (j < group ? j : 0)) * x_stride);
                acc[j] = _mm256_setzero_ps();
            }
            size_t c = 0;
            if (group == TK_GROUP) {
                for (; c + 8 <= k; c += 8) {
                    __m256 wv = load8_avx2(row, c, encoding);
                    for (size_t j = 0; j < TK_GROUP; j++) acc[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xs[j] + c), acc[j]);
                }
            } else {
                for (; c + 8 <= k; c += 8) {
                    __m256 wv = load8_avx2(row, c, encoding);
                    for (size_t j = 0; j < group; j++) acc[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xs[j] + c), acc[j]);
                }
            }
            for (size_t j = 0; j < group; j++) {
                float sum = tk_hsum256(acc[j]);
                for (size_t t = c; t < k; t++) sum += load_weight(row, t, encoding) * xs[j][t];
                y[(first + j) * y_stride + i] = sum;
            }
        }
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl,f16c"), always_inline))
static inline __m512 load16_avx512(const void *w, size_t c, tk_encoding encoding) {
    switch (encoding) {
    case TK_ENC_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + c)));
    case TK_ENC_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + c))), 16));
    default: return _mm512_loadu_ps((const float *)w + c);
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl,f16c"), always_inline))
static inline void float_rows_avx512(const void *w, size_t w_stride, size_t rows, const float *x, size_t x_stride,
                                     size_t nx, size_t k, float *y, size_t y_stride, tk_encoding encoding) {
    for (size_t i = 0; i < rows; i++) {
        const void *row = (const char *)w + i * w_stride;
        for (size_t first = 0; first < nx; first += TK_GROUP) {
            size_t group = nx - first < TK_GROUP ? nx - first : TK_GROUP;
            const float *xs[TK_GROUP];
            __m512 acc[TK_GROUP];
            for (size_t j = 0; j < TK_GROUP; j++) {
                xs[j] = (const float *)((const char *)x + (first + (j < group ? j : 0)) * x_stride);
                acc[j] = _mm512_setzero_ps();
            }
            size_t c = 0;
            if (group == TK_GROUP) {
                for (; c + 16 <= k; c += 16) {
                    __m512 wv = load16_avx512(row, c, encoding);
                    for (size_t j = 0; j < TK_GROUP; j++) acc[j] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xs[j] + c), acc[j]);
                }
            } else {
                for (; c + 16 <= k; c += 16) {
                    __m512 wv = load16_avx512(row, c, encoding);
                    for (size_t j = 0; j < group; j++) acc[j] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xs[j] + c), acc[j]);
                }
            }
            for (size_t j = 0; j < group; j++) {
                float sum = _mm512_reduce_add_ps(acc[j]);
                for (size_t t = c; t < k; t++) sum += load_weight(row, t, encoding) * xs[j][t];
                y[(first + j) * y_stride + i] = sum;
            }
        }
    }
}
#endif

/* One specialisation per (float encoding, level). */
#define TK_FLOAT_SPECIALISE(isa, name, encoding) \
    static void float_##name##_##isa(const void *w, size_t w_stride, size_t rows, const float *x, size_t x_stride, \
                                     size_t nx, size_t k, float *y, size_t y_stride) { \
        float_rows_##isa(w, w_stride, rows, x, x_stride, nx, k, y, y_stride, encoding); \
    }

typedef void (*float_rows_fn)(const void *, size_t, size_t, const float *, size_t, size_t, size_t, float *, size_t);

TK_FLOAT_SPECIALISE(portable, f32, TK_ENC_F32)
TK_FLOAT_SPECIALISE(portable, f16, TK_ENC_F16)
TK_FLOAT_SPECIALISE(portable, bf16, TK_ENC_BF16)
#if TK_X86
__attribute__((target("avx2,fma,f16c"))) TK_FLOAT_SPECIALISE(avx2, f32, TK_ENC_F32)
__attribute__((target("avx2,fma,f16c"))) TK_FLOAT_SPECIALISE(avx2, f16, TK_ENC_F16)
__attribute__((target("avx2,fma,f16c"))) TK_FLOAT_SPECIALISE(avx2, bf16, TK_ENC_BF16)
__attribute__((target("avx512f,avx512bw,avx512vl,f16c"))) TK_FLOAT_SPECIALISE(avx512, f32, TK_ENC_F32)
__attribute__((target("avx512f,avx512bw,avx512vl,f16c"))) TK_FLOAT_SPECIALISE(avx512, f16, TK_ENC_F16)
__attribute__((target("avx512f,avx512bw,avx512vl,f16c"))) TK_FLOAT_SPECIALISE(avx512, bf16, TK_ENC_BF16)
static const float_rows_fn float_bodies[3][3] = {
    {float_f32_portable, float_f16_portable, float_bf16_portable},
    {float_f32_avx2, float_f16_avx2, float_bf16_avx2},
    {float_f32_avx512, float_f16_avx512, float_bf16_avx512},
};
#else
static const float_rows_fn float_bodies[3][3] = {
    {float_f32_portable, float_f16_portable, float_bf16_portable},
    {float_f32_portable, float_f16_portable, float_bf16_portable},
    {float_f32_portable, float_f16_portable, float_bf16_portable},
};
#endif

/* ---- float rows of the float encodings ---- */

static void dequant_row_f32(const void *w, float *out, size_t k) { memcpy(out, w, k * sizeof(float)); }

static void dequant_row_f16(const void *w, float *out, size_t k) {
    const uint16_t *h = (const uint16_t *)w;
    for (size_t i = 0; i < k; i++) out[i] = tk_half_to_float(h[i]);
}

static void dequant_row_bf16(const void *w, float *out, size_t k) {
    const uint16_t *h = (const uint16_t *)w;
    for (size_t i = 0; i < k; i++) out[i] = tk_bf16_to_float(h[i]);
}

/* ---- the table ---- */

typedef struct {
    size_t block, block_bytes, act_block, act_block_bytes;
    tk_dequant_row_fn dequant_row;
    tk_quantize_fn quantize[TK_LEVEL_COUNT];
    tk_matmul_fn int_matmul[TK_LEVEL_COUNT];
    tk_pack_fn pack;
    tk_matmul_fn packed_avx512;
} encoding_entry;

#define TK_Q32_QUANTIZERS \
    {tk_quantize_q8_32_portable, tk_quantize_q8_32_avx2, tk_quantize_q8_32_avx2, tk_quantize_q8_32_avx512}
#define TK_Q256_QUANTIZERS \
    {tk_quantize_q8_256_portable, tk_quantize_q8_256_avx2, tk_quantize_q8_256_avx2, tk_quantize_q8_256_avx512}
/* The K-quants have no AVX-VNNI body: that level runs their AVX2 one. */
#define TK_Q32_BODIES(enc) \
    {tk_matmul_##enc##_portable, tk_matmul_##enc##_avx2, tk_matmul_##enc##_avxvnni, tk_matmul_##enc##_avx512}
#define TK_QK_BODIES(enc) \
    {tk_matmul_##enc##_portable, tk_matmul_##enc##_avx2, tk_matmul_##enc##_avx2, tk_matmul_##enc##_avx512}
#if defined(__x86_64__)
#define TK_PACKED(enc) tk_pack_rows_##enc, tk_matmul_##enc##_packed_avx512
#else
#define TK_PACKED(enc) NULL, NULL
#endif
#define TK_Q32_ENTRY(enc, bytes) \
    {TK_QK, bytes, TK_QK, sizeof(tk_q8_32), tk_dequant_row_##enc, TK_Q32_QUANTIZERS, TK_Q32_BODIES(enc), TK_PACKED(enc)}
#define TK_QK_ENTRY(enc, bytes) \
    {TK_QK_K, bytes, TK_QK_K, sizeof(tk_q8_256), tk_dequant_row_##enc, TK_Q256_QUANTIZERS, TK_QK_BODIES(enc)}

static const encoding_entry entries[TK_ENC_COUNT] = {
    [TK_ENC_F32] = {1, 4, 0, 0, dequant_row_f32, {0}, {0}},
    [TK_ENC_F16] = {1, 2, 0, 0, dequant_row_f16, {0}, {0}},
    [TK_ENC_BF16] = {1, 2, 0, 0, dequant_row_bf16, {0}, {0}},
    [TK_ENC_Q4_0] = TK_Q32_ENTRY(q4_0, sizeof(block_q4_0)),
    [TK_ENC_Q4_1] = TK_Q32_ENTRY(q4_1, sizeof(block_q4_1)),
    [TK_ENC_Q5_0] = TK_Q32_ENTRY(q5_0, sizeof(block_q5_0)),
    [TK_ENC_Q5_1] = TK_Q32_ENTRY(q5_1, sizeof(block_q5_1)),
    [TK_ENC_Q8_0] = TK_Q32_ENTRY(q8_0, sizeof(block_q8_0)),
    [TK_ENC_Q4_K] = TK_QK_ENTRY(q4_K, sizeof(block_q4_K)),
    [TK_ENC_Q5_K] = TK_QK_ENTRY(q5_K, sizeof(block_q5_K)),
    [TK_ENC_Q6_K] = TK_QK_ENTRY(q6_K, sizeof(block_q6_K)),
};

int tk_matmul_kernel_get(tk_encoding encoding, int level, tk_matmul_kernel *out) {
    if ((int)encoding < 0 || encoding >= TK_ENC_COUNT) return -1;
    int best = tk_cpu_level();
    if (level > best) level = best;
    if (level < 0) level = 0;
    if (!tk_level_runs(level)) level = TK_LEVEL_AVX2; /* the gap: AVX-VNNI asked of a CPU without it */
    const encoding_entry *e = &entries[encoding];
    out->encoding = encoding;
    out->level = level;
    out->block = e->block;
    out->block_bytes = e->block_bytes;
    out->act_block = e->act_block;
    out->act_block_bytes = e->act_block_bytes;
    out->quantize = e->act_block ? e->quantize[level] : NULL;
    out->int_matmul = e->act_block ? e->int_matmul[level] : NULL;
    out->dequant_row = e->dequant_row;
    const int packed = level >= TK_LEVEL_AVX512 && e->packed_avx512 != NULL;
    out->pack_rows = packed ? TK_ROW_GROUP : 0;
    out->pack = packed ? e->pack : NULL;
    out->packed_matmul = packed ? e->packed_avx512 : NULL;
    return 0;
}

void tk_matmul_float(const tk_matmul_kernel *kernel, const void *w, size_t w_stride, size_t rows,
                     const float *x, size_t x_stride, size_t nx, size_t k, float *y, size_t y_stride,
                     float *row_scratch) {
    int level = float_level(kernel->level);
    switch (kernel->encoding) {
    case TK_ENC_F32:
    case TK_ENC_F16:
    case TK_ENC_BF16:
        float_bodies[level][kernel->encoding](w, w_stride, rows, x, x_stride, nx, k, y, y_stride);
        return;
    default:
        for (size_t i = 0; i < rows; i++) {
            kernel->dequant_row((const char *)w + i * w_stride, row_scratch, k);
            float_bodies[level][TK_ENC_F32](row_scratch, 0, 1, x, x_stride, nx, k, y + i, y_stride);
        }
    }
}

static uint16_t float_to_half(float f) {
    /* Round to nearest even; the scales this writes are finite and positive or zero. */
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint32_t sign = (bits >> 16) & 0x8000u;
    int32_t exponent = (int32_t)((bits >> 23) & 0xff) - 127 + 15;
    uint32_t mantissa = bits & 0x7fffffu;
    if (exponent >= 31) return (uint16_t)(sign | 0x7c00u);
    if (exponent <= 0) {
        if (exponent < -10) return (uint16_t)sign;
        mantissa |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exponent);
        uint32_t half = mantissa >> shift;
        uint32_t rest = mantissa & ((1u << shift) - 1), midpoint = 1u << (shift - 1);
        if (rest > midpoint || (rest == midpoint && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exponent << 10) | (mantissa >> 13);
    uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1))) half++;
    return (uint16_t)half;
}

void tk_quantize_row_q8_0(const float *x, void *out, size_t k) {
    block_q8_0 *blocks = (block_q8_0 *)out;
    for (size_t b = 0; b < k / TK_QK; b++) {
        const float *xb = x + b * TK_QK;
        float amax = 0;
        for (size_t j = 0; j < TK_QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        uint16_t dh = float_to_half(amax / 127.0f);
        float d = tk_half_to_float(dh), id = d > 0 ? 1.0f / d : 0.0f;
        blocks[b].d = dh;
        for (size_t j = 0; j < TK_QK; j++) {
            float q = nearbyintf(xb[j] * id);
            blocks[b].qs[j] = (int8_t)(q > 127 ? 127 : (q < -127 ? -127 : q));
        }
    }
}

long tk_fetch_add(long *counter, long amount) {
    return __atomic_fetch_add(counter, amount, __ATOMIC_RELAXED);
}

/* ---- a plain read of memory, for the bandwidth figure kernels are compared with ---- */

static uint64_t read_sum_portable(const void *p, size_t bytes) {
    const uint64_t *q = (const uint64_t *)p;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t n = bytes / 8, i = 0;
    for (; i + 4 <= n; i += 4) { a += q[i]; b += q[i + 1]; c += q[i + 2]; d += q[i + 3]; }
    for (; i < n; i++) a += q[i];
    return a + b + c + d;
}

#if TK_X86
__attribute__((target("avx2")))
static uint64_t read_sum_avx2(const void *p, size_t bytes) {
    const __m256i *q = (const __m256i *)p;
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    size_t n = bytes / 32, i = 0;
    for (; i + 4 <= n; i += 4) {
        a = _mm256_add_epi64(a, _mm256_loadu_si256(q + i));
        b = _mm256_add_epi64(b, _mm256_loadu_si256(q + i + 1));
        c = _mm256_add_epi64(c, _mm256_loadu_si256(q + i + 2));
        d = _mm256_add_epi64(d, _mm256_loadu_si256(q + i + 3));
    }
    a = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, a);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + read_sum_portable((const char *)p + i * 32, bytes - i * 32);
}
#endif

uint64_t tk_read_sum(const void *p, size_t bytes) {
#if TK_X86
    if (tk_cpu_level() >= TK_LEVEL_AVX2) return read_sum_avx2(p, bytes);
#endif
    return read_sum_portable(p, bytes);
}
