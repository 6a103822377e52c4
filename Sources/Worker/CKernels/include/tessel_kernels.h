#ifndef TESSEL_KERNELS_H
#define TESSEL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Vector kernels over float32. Each entry point dispatches, once per process, to the widest
 * implementation the CPU supports (AVX-512F, AVX2+FMA, or portable C). */

/* The instruction set the dispatcher chose: "avx512", "avx2" or "portable". The environment
 * variable TESSEL_KERNELS=portable or =avx2, read at the first kernel call, caps the choice
 * (to test the narrower paths on a machine with wider vectors). */
const char *tk_kernel_isa(void);

/* 0 = portable only, 1 = up to AVX2, 2 = the best the CPU has (from TESSEL_KERNELS). */
int tk_kernel_ceiling(void);

/* The portable implementations, callable directly so tests can compare them with the
 * dispatched ones on any machine. */
float tk_dot_portable(const float *a, const float *b, size_t n);
void tk_axpy_portable(float a, const float *x, float *y, size_t n);

float tk_dot(const float *a, const float *b, size_t n);

/* y[i] += a * x[i] */
void tk_axpy(float a, const float *x, float *y, size_t n);

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]; out may alias x. */
void tk_rms_norm(const float *x, const float *weight, float eps, float *out, size_t n);

/* out[i] = silu(gate[i]) * up[i]; out may alias gate or up. */
void tk_silu_mul(const float *gate, const float *up, float *out, size_t n);

/* Rotates the first `2 * half` values of each of `heads` vectors (stride `head_dim`) in the
 * rotate-half layout: pairs (i, i + half) turned by the angle whose cos/sin are given. */
void tk_rope_halves(float *x, size_t heads, size_t head_dim, size_t half,
                    const float *cos_table, const float *sin_table);

/* Attention of `group` query heads that share one KV head, over a paged cache.
 *   q          [group, head_dim] contiguous
 *   k_cache,
 *   v_cache    the KV head's vectors in block 0; block b starts at b * block_stride floats,
 *              and slot s of a block at s * head_dim floats
 *   block_table block ids, position p lives in block block_table[p / block_size]
 *   context    number of positions to attend to (0 ..< context)
 *   scores     scratch of group * context floats
 *   out        [group, head_dim] */
void tk_paged_attention(const float *q, size_t group, size_t head_dim,
                        const float *k_cache, const float *v_cache,
                        size_t block_stride, size_t block_size,
                        const int32_t *block_table, size_t context, float scale,
                        float *scores, float *out);

/* Matrix-vector products straight from ggml-quantised rows (32-value blocks), for decoding,
 * where reading 4-5x fewer weight bytes than float32 is what speeds a token up.
 *   blocks   `rows` rows of `cols / 32` blocks each, row-major
 *   x        `cols` floats;  block_sums  scratch of `cols / 32` floats (Q4_1 needs the sum of
 *            x over each block, since a block decodes to q * d + m)
 *   y        `rows` floats (overwritten)
 * The value decoded for each weight equals ggml's dequantisation exactly; only the order of
 * the additions differs from a float32 product. */
void tk_gemv_q4_1(const void *blocks, size_t rows, size_t cols, const float *x,
                  float *block_sums, float *y);
void tk_gemv_q8_0(const void *blocks, size_t rows, size_t cols, const float *x, float *y);

/* The same for `count` input vectors at once (x: [count, cols]; vector n's result goes to
 * y[n * y_stride ..< n * y_stride + rows]), decoding each
 * block once for all of them; block_sums holds count * cols / 32 floats. This is what makes a
 * step of several decoding sequences cost about as much as one. */
void tk_gemm_q4_1(const void *blocks, size_t rows, size_t cols, const float *x, size_t count,
                  float *block_sums, float *y, size_t y_stride);
void tk_gemm_q8_0(const void *blocks, size_t rows, size_t cols, const float *x, size_t count,
                  float *y, size_t y_stride);

/* The same products with the portable C, for tests that compare paths. */
void tk_gemv_q4_1_portable(const void *blocks, size_t rows, size_t cols, const float *x,
                           float *block_sums, float *y);
void tk_gemv_q8_0_portable(const void *blocks, size_t rows, size_t cols, const float *x, float *y);

/* In-place softmax of n values; returns nothing, the values sum to 1 afterwards. */
void tk_softmax(float *x, size_t n);

#ifdef __cplusplus
}
#endif

#endif
