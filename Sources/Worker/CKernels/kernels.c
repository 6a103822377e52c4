#include "tessel_kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "simd_common.h"

/* ---- portable implementations (auto-vectorised at -O3 for the target baseline) ---- */

static float dot_portable(const float *a, const float *b, size_t n) {
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

static void axpy_portable(float a, const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

#if TK_X86
/* ---- AVX2 + FMA ---- */

__attribute__((target("avx2,fma")))
static float dot_avx2(const float *a, const float *b, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float sum = tk_hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

__attribute__((target("avx2,fma")))
static void axpy_avx2(float a, const float *x, float *y, size_t n) {
    __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

/* ---- AVX-512F ---- */

__attribute__((target("avx512f")))
static float dot_avx512(const float *a, const float *b, size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

__attribute__((target("avx512f")))
static void axpy_avx512(float a, const float *x, float *y, size_t n) {
    __m512 va = _mm512_set1_ps(a);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        __m512 r = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, r);
    }
}
#endif

/* ---- dispatch: chosen once, on first use ---- */

typedef float (*dot_fn)(const float *, const float *, size_t);
typedef void (*axpy_fn)(float, const float *, float *, size_t);

static struct {
    dot_fn dot;
    axpy_fn axpy;
    const char *isa;
} kernels = {dot_portable, axpy_portable, "portable"};

static pthread_once_t kernels_once = PTHREAD_ONCE_INIT;
int tk_kernel_ceiling(void) {
    const char *choice = getenv("TESSEL_KERNELS");
    if (choice == NULL) return 2;
    if (strcmp(choice, "portable") == 0) return 0;
    if (strcmp(choice, "avx2") == 0) return 1;
    return 2;
}

static void select_kernels(void) {
    int ceiling = tk_kernel_ceiling();
    if (ceiling == 0) return;
#if TK_X86
    __builtin_cpu_init();
    if (ceiling >= 2 && __builtin_cpu_supports("avx512f")) {
        kernels.dot = dot_avx512;
        kernels.axpy = axpy_avx512;
        kernels.isa = "avx512";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        kernels.dot = dot_avx2;
        kernels.axpy = axpy_avx2;
        kernels.isa = "avx2";
    }
#endif
}

static inline void ensure_selected(void) { pthread_once(&kernels_once, select_kernels); }

float tk_dot_portable(const float *a, const float *b, size_t n) { return dot_portable(a, b, n); }

void tk_axpy_portable(float a, const float *x, float *y, size_t n) { axpy_portable(a, x, y, n); }

const char *tk_kernel_isa(void) {
    ensure_selected();
    return kernels.isa;
}

float tk_dot(const float *a, const float *b, size_t n) {
    ensure_selected();
    return kernels.dot(a, b, n);
}

void tk_axpy(float a, const float *x, float *y, size_t n) {
    ensure_selected();
    kernels.axpy(a, x, y, n);
}

void tk_rms_norm(const float *x, const float *weight, float eps, float *out, size_t n) {
    ensure_selected();
    float mean_square = kernels.dot(x, x, n) / (float)n;
    float inv = 1.0f / sqrtf(mean_square + eps);
    for (size_t i = 0; i < n; i++) out[i] = (x[i] * inv) * weight[i];
}

void tk_silu_mul(const float *gate, const float *up, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void tk_rope_halves(float *x, size_t heads, size_t head_dim, size_t half,
                    const float *cos_table, const float *sin_table) {
    for (size_t h = 0; h < heads; h++) {
        float *v = x + h * head_dim;
        for (size_t i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cos_table[i] - b * sin_table[i];
            v[i + half] = b * cos_table[i] + a * sin_table[i];
        }
    }
}

void tk_softmax(float *x, size_t n) {
    if (n == 0) return;
    float m = x[0];
    for (size_t i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (size_t i = 0; i < n; i++) x[i] *= inv;
}

void tk_paged_attention(const float *q, size_t group, size_t head_dim,
                        const float *k_cache, const float *v_cache,
                        size_t block_stride, size_t block_size,
                        const int32_t *block_table, size_t context, float scale,
                        float *scores, float *out) {
    ensure_selected();
    dot_fn dot = kernels.dot;
    axpy_fn axpy = kernels.axpy;
    for (size_t p = 0; p < context; p++) {
        size_t block = (size_t)block_table[p / block_size];
        const float *k = k_cache + block * block_stride + (p % block_size) * head_dim;
        for (size_t g = 0; g < group; g++)
            scores[g * context + p] = dot(q + g * head_dim, k, head_dim) * scale;
    }
    for (size_t g = 0; g < group; g++) tk_softmax(scores + g * context, context);
    memset(out, 0, group * head_dim * sizeof(float));
    for (size_t p = 0; p < context; p++) {
        size_t block = (size_t)block_table[p / block_size];
        const float *v = v_cache + block * block_stride + (p % block_size) * head_dim;
        for (size_t g = 0; g < group; g++)
            axpy(scores[g * context + p], v, out + g * head_dim, head_dim);
    }
}
