/* Float32 vector kernels: the element-wise and reduction steps of a transformer layer, KV-cache
 * element conversion and paged attention.
 *
 * Every entry point dispatches, once per process, to AVX-512 (F/BW/VL + F16C), AVX2 (+ FMA +
 * F16C) or portable C, capped by tk_kernel_ceiling() (the TESSEL_KERNELS environment variable).
 * Each has a `_portable` twin with the same contract so tests can compare the paths on any
 * machine. Results of the paths differ only by float rounding (FMA contraction, summation order);
 * the KV conversions are bit-identical on every path.
 *
 * The exponential behind SiLU, GELU, softmax and attention is a polynomial one: relative error
 * below 2e-7 on [-87, 88] (measured: 9e-8 over every float there), exactly 0 below -87.3365
 * (just above ln(FLT_MIN): no subnormal results) and for -inf, +inf above ln(FLT_MAX), NaN for
 * NaN. */
#ifndef TESSEL_VECTOR_H
#define TESSEL_VECTOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* "avx512", "avx2" or "portable": the bodies the dispatcher chose for this process. */
const char *tk_vector_isa(void);

/* Σ a[i] b[i] */
float tk_dot(const float *a, const float *b, size_t n);
/* y[i] += a * x[i] */
void tk_axpy(float a, const float *x, float *y, size_t n);
/* y[i] += x[i] */
void tk_add(const float *x, float *y, size_t n);
/* x[i] *= a */
void tk_scale(float *x, float a, size_t n);

/* out[i] = x[i] / sqrt(mean(x²) + eps) * (weight[i] + weight_offset); weight_offset is 0, or 1
 * for Gemma's `1 + w` weights. Squares are summed in float lanes over blocks of 256 values and the
 * block sums in double (the portable body: all in double), so the error stays ~1e-7 at any n.
 * out may alias x. */
void tk_rms_norm(const float *x, const float *weight, float eps, int weight_offset, float *out, size_t n);

/* out[i] = silu(gate[i]) * up[i]; out may alias gate or up. */
void tk_silu_mul(const float *gate, const float *up, float *out, size_t n);
/* out[i] = gelu_tanh(gate[i]) * up[i] (the tanh approximation); out may alias gate or up. */
void tk_gelu_tanh_mul(const float *gate, const float *up, float *out, size_t n);

/* In place: x[i] = exp(x[i] - max) / Σ exp(x[j] - max), the sum in double as in tk_exp_sum.
 * n = 0 is a no-op; all -inf gives the uniform 1/n. */
void tk_softmax(float *x, size_t n);
/* The largest value (-inf for n = 0; unspecified if any value is NaN). */
float tk_max(const float *x, size_t n);
/* Σ exp(x[i] - shift), summed in double (float lanes over at most 128 values, then double), so
 * a 150k-entry vocabulary loses no precision to the running total. */
double tk_exp_sum(const float *x, size_t n, float shift);

/* Rotary position embedding of `heads` vectors (stride head_dim), their first rotary_dims
 * values (even, ≤ head_dim) turned by the rotary_dims / 2 angles whose cos and sin are given:
 *   interleaved = 0  pairs (i, i + rotary_dims / 2)   rotate-half (HF, NEOX)
 *   interleaved = 1  pairs (2i, 2i + 1)               GPT-J, ggml's "normal" mode
 * (x_a, x_b) → (x_a cos - x_b sin, x_b cos + x_a sin). */
void tk_rope(float *x, size_t heads, size_t head_dim, size_t rotary_dims,
             const float *cos_table, const float *sin_table, int interleaved);

/* ---- KV cache ---- */
typedef enum { TK_KV_F32 = 0, TK_KV_F16 = 1, TK_KV_BF16 = 2 } tk_kv_type;

/* n floats into cache elements: IEEE half or bfloat16 rounded to nearest even (overflow to inf,
 * NaN kept a quiet NaN, subnormals kept), or a copy for F32. */
void tk_kv_store(tk_kv_type type, const float *src, void *dst, size_t n);
/* n cache elements to floats (exact). */
void tk_kv_load(tk_kv_type type, const void *src, float *dst, size_t n);

/* ---- paged attention ---- */
typedef struct {
    size_t head_dim;          /* d: any value works; a multiple of 16 (AVX-512) or 8 (AVX2) is fastest */
    size_t group;             /* query heads sharing this KV head (GQA) */
    const void *k_cache;      /* this KV head's key vectors in block 0 */
    const void *v_cache;
    size_t block_stride;      /* elements between the starts of consecutive blocks */
    size_t block_size;        /* positions per block: position p is slot p % block_size of block
                                 block_table[p / block_size], slot * head_dim elements from its start */
    tk_kv_type kv_type;
    float scale;              /* multiplies q·k */
    float softcap;            /* 0 = off; else score = softcap * tanh(score / softcap), after scale */
    size_t window;            /* 0 = off; else row r attends only positions p >= contexts[r] - window */
} tk_attention_params;

/* Floats of scratch tk_attention needs for these shapes (independent of the contexts and of the
 * KV type). */
size_t tk_attention_scratch_floats(size_t group, size_t head_dim, size_t rows);

/* softmax(q Kᵀ · scale) V for `rows` query rows of one sequence against one KV head.
 *   q         row r's `group` heads at q + r * q_stride, [group][head_dim] contiguous
 *   contexts  row r attends positions [max(0, contexts[r] - window) if window, else 0, contexts[r]);
 *             contexts[r] ≥ 1 (a prefill row's own position included)
 *   out       row r's result at out + r * out_stride, [group][head_dim]; must not overlap q
 *   scratch   tk_attention_scratch_floats(group, head_dim, rows) floats, any alignment
 * An online softmax over chunks of at most 32 positions: memory is independent of the context,
 * and each K/V vector is loaded and converted once per tile of up to 8 rows, then used by every
 * row and head of the tile. Single-threaded, allocation-free, reentrant. */
void tk_attention(const tk_attention_params *p, const int32_t *block_table, size_t rows,
                  const float *q, size_t q_stride, const int32_t *contexts,
                  float *out, size_t out_stride, float *scratch);

/* ---- the portable bodies ---- */
float tk_dot_portable(const float *a, const float *b, size_t n);
void tk_axpy_portable(float a, const float *x, float *y, size_t n);
void tk_add_portable(const float *x, float *y, size_t n);
void tk_scale_portable(float *x, float a, size_t n);
void tk_rms_norm_portable(const float *x, const float *weight, float eps, int weight_offset, float *out, size_t n);
void tk_silu_mul_portable(const float *gate, const float *up, float *out, size_t n);
void tk_gelu_tanh_mul_portable(const float *gate, const float *up, float *out, size_t n);
void tk_softmax_portable(float *x, size_t n);
float tk_max_portable(const float *x, size_t n);
double tk_exp_sum_portable(const float *x, size_t n, float shift);
void tk_rope_portable(float *x, size_t heads, size_t head_dim, size_t rotary_dims,
                      const float *cos_table, const float *sin_table, int interleaved);
void tk_kv_store_portable(tk_kv_type type, const float *src, void *dst, size_t n);
void tk_kv_load_portable(tk_kv_type type, const void *src, float *dst, size_t n);
void tk_attention_portable(const tk_attention_params *p, const int32_t *block_table, size_t rows,
                           const float *q, size_t q_stride, const int32_t *contexts,
                           float *out, size_t out_stride, float *scratch);

/* The exponential every body above uses, element-wise (dst may alias src): dispatched and
 * portable, so tests can measure its error directly. */
void tk_exp(const float *src, float *dst, size_t n);
void tk_exp_portable(const float *src, float *dst, size_t n);

#ifdef __cplusplus
}
#endif

#endif
