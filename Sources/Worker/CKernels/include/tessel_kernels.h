#ifndef TESSEL_KERNELS_H
#define TESSEL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "tessel_vector.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- instruction sets ----
 * Levels, each running the bodies of the ones below it where it has none of its own:
 *   0 portable C   1 AVX2 + FMA + F16C   2 AVX-VNNI (256-bit vpdpbusd, as on CPUs without
 *   AVX-512)   3 AVX-512 F/BW/VL/VNNI.
 * An AVX-512 CPU need not have AVX-VNNI: it runs 0, 1 and 3. The environment variable
 * TESSEL_KERNELS=portable, =avx2 or =avxvnni caps the level (so the narrower bodies run, and are
 * tested, on a machine with wider vectors). */
enum { TK_LEVEL_PORTABLE = 0, TK_LEVEL_AVX2 = 1, TK_LEVEL_AVX_VNNI = 2, TK_LEVEL_AVX512 = 3, TK_LEVEL_COUNT = 4 };
int tk_kernel_ceiling(void);
/* The best level this CPU runs, under the cap. */
int tk_cpu_level(void);
/* Whether this CPU runs `level` (under the cap). */
int tk_level_runs(int level);
/* "portable", "avx2", "avxvnni" or "avx512". */
const char *tk_level_name(int level);

/* ---- weight encodings and their matmul kernels ---- */
typedef enum {
    TK_ENC_F32 = 0, TK_ENC_F16, TK_ENC_BF16,
    TK_ENC_Q4_0, TK_ENC_Q4_1, TK_ENC_Q5_0, TK_ENC_Q5_1, TK_ENC_Q8_0,
    TK_ENC_Q4_K, TK_ENC_Q5_K, TK_ENC_Q6_K,
    TK_ENC_COUNT
} tk_encoding;

/* y[j * y_stride + i] = Σ_c W[i][c] X[j][c] for weight rows i < rows and input rows j < nx. */
typedef void (*tk_matmul_fn)(const void *w, size_t w_stride, size_t rows, const void *x, size_t x_stride,
                             size_t nx, size_t k, float *y, size_t y_stride);
typedef void (*tk_quantize_fn)(const float *x, void *out, size_t k);
typedef void (*tk_dequant_row_fn)(const void *w, float *out, size_t k);
/* rows plain rows (row i at w + i * w_stride) of k columns into ceil(rows / pack_rows) groups
 * of pack_rows interleaved rows, each group pack_rows * (k / block * block_bytes) bytes. */
typedef void (*tk_pack_fn)(const void *w, size_t w_stride, size_t rows, size_t k, void *out);

/* Everything needed to multiply by one encoding, for one instruction-set level: chosen once at
 * load and kept with the weight.
 *   float_matmul  x is float32 rows (x_stride in bytes): the exact path, and the only one for
 *                 float encodings. For block encodings it decodes each weight row into
 *                 `row_scratch` (k floats, one per thread) and multiplies in float32.
 *   quantize, int_matmul  (block encodings) 8-bit activations and integer dot products: x is
 *                 rows of activation blocks made by `quantize`; NULL for float encodings.
 *   pack, packed_matmul  where this level has an interleaved layout (pack_rows > 0: the
 *                 32-element encodings with AVX-512): weights repacked once by `pack` and
 *                 multiplied like int_matmul, w being the first group, w_stride the bytes between
 *                 groups, rows counted from the first group's first row. */
typedef struct {
    tk_encoding encoding;
    int level;
    size_t block;            /* weight elements per block (1 for float encodings) */
    size_t block_bytes;      /* bytes per block */
    size_t act_block;        /* elements per activation block (0: float activations only) */
    size_t act_block_bytes;
    tk_quantize_fn quantize;
    tk_matmul_fn int_matmul;
    tk_dequant_row_fn dequant_row;
    size_t pack_rows;        /* rows per interleaved group (0: no interleaved layout) */
    tk_pack_fn pack;
    tk_matmul_fn packed_matmul;
} tk_matmul_kernel;

/* The kernel for `encoding` at `level` or the best level below it that exists. Returns 0, or -1
 * for an unknown encoding. */
int tk_matmul_kernel_get(tk_encoding encoding, int level, tk_matmul_kernel *out);

/* The exact (float32 activations) product for any encoding; row_scratch holds k floats. */
void tk_matmul_float(const tk_matmul_kernel *kernel, const void *w, size_t w_stride, size_t rows,
                     const float *x, size_t x_stride, size_t nx, size_t k, float *y, size_t y_stride,
                     float *row_scratch);

/* What 8-bit activation blocks leave out of the k floats they were quantised from:
 * r = x - d * qs, block by block (tk_q8_32 blocks when act_block is 32, tk_q8_256 when 256).
 * Quantising r too gives a second set of activation rows; the two products added carry about
 * 1/127 of one product's rounding error. */
void tk_q8_residual(size_t act_block, const void *q, const float *x, float *r, size_t k);

/* Whole-block Q8_0 weights from floats (d = max|x| / 127 as an IEEE half), for encodings that
 * have no kernel and are converted once at load. */
void tk_quantize_row_q8_0(const float *x, void *out, size_t k);

/* ---- compute pool ----
 * `threads - 1` helper threads plus the caller. After a job they spin for `spin_microseconds`
 * waiting for the next one, then sleep on a futex, so back-to-back operations of one step start
 * in well under a microsecond while an idle worker burns no core. */
typedef struct tk_pool tk_pool;
typedef void (*tk_pool_job)(void *context, int thread, int threads);
typedef void (*tk_pool_thread_start)(void *context, int thread);

/* NULL if a thread cannot be started. `on_start` (may be NULL) runs first on each helper thread. */
tk_pool *tk_pool_create(int threads, int spin_microseconds, tk_pool_thread_start on_start, void *start_context);
/* Runs job(context, t, threads) for every t: t = 0 on the calling thread; returns when all are done.
 * One caller at a time. */
void tk_pool_run(tk_pool *pool, tk_pool_job job, void *context);
int tk_pool_thread_count(const tk_pool *pool);
void tk_pool_destroy(tk_pool *pool);
/* The processor the calling thread runs on (-1 where unknown). */
int tk_current_cpu(void);

/* The sum of the 64-bit words of `bytes` bytes: a plain read at the speed memory allows, the
 * bound a matmul kernel's weight reads are measured against. */
uint64_t tk_read_sum(const void *p, size_t bytes);

/* Atomic `*counter += amount`, returning the old value: hands out work items dynamically. */
long tk_fetch_add(long *counter, long amount);

#ifdef __cplusplus
}
#endif

#endif
