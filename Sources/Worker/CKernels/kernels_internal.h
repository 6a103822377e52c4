/* The per-(operation, encoding, ISA) kernel bodies that dispatch.c puts in its tables. Private
 * to the CKernels target: Swift reaches them only through tessel_kernels.h.
 *
 * ISA suffixes:
 *   _portable  plain C, the reference every other body is tested against
 *   _avx2      AVX2 + FMA + F16C
 *   _avxvnni   AVX2 + AVX-VNNI (the 32-element encodings only): 256-bit vpdpbusd
 *   _avx512    AVX-512 F/BW/VL/VNNI (+F16C): may use 256- or 512-bit vectors and vpdpbusd
 *
 * Integer matmul contract (every encoding, every ISA):
 *   y[j * y_stride + i] = Σ_c W[i][c] * X[j][c]   for i < rows, j < nx   (overwrites y)
 *   w        first weight row; row i starts at (const char *)w + i * w_stride bytes, and holds
 *            k / block elements blocks of the encoding
 *   x        nx activation rows, each k / activation_block activation blocks (tk_q8_32 for the
 *            32-element encodings, tk_q8_256 for the K-quants), row j at x + j * x_stride bytes
 *   k        a multiple of the encoding's block (32 or 256)
 * Bodies decode each weight block once for several activation rows (groups of up to 4), so
 * one call serves a decode step (nx = 1), a batch (nx 2-64) and a prefill tile alike. Results
 * equal the portable body's up to float rounding of the per-block scale products (the integer
 * sums are exact).
 *
 * Activation quantizers: k floats (a multiple of the block) into k / block blocks:
 *   d = max|x| / 127 (0 when the block is all zeros), qs = round-to-nearest(x / d) in -127..127,
 *   and the sums the layout declares (tk_q8_32.s = d * Σ qs, tk_q8_256.bsums).
 *
 * Row dequantisers (portable, exact: the values ggml's dequantize_row_* produce):
 *   k elements of one row into out[0 ..< k]. */
#ifndef TESSEL_KERNELS_INTERNAL_H
#define TESSEL_KERNELS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define TK_MATMUL_ARGS const void *w, size_t w_stride, size_t rows, const void *x, size_t x_stride, \
                       size_t nx, size_t k, float *y, size_t y_stride

#define TK_DECLARE_MATMUL(enc) \
    void tk_matmul_##enc##_portable(TK_MATMUL_ARGS); \
    void tk_matmul_##enc##_avx2(TK_MATMUL_ARGS); \
    void tk_matmul_##enc##_avx512(TK_MATMUL_ARGS); \
    void tk_dequant_row_##enc(const void *w, float *out, size_t k);

/* Interleaved row groups (matmul_packed.c describes the layout): the portable packers take
 * rows plain rows (row i at w + i * w_stride) of k columns into ceil(rows / TK_ROW_GROUP)
 * groups of k / 32 group-blocks each, zero rows filling the last group; the AVX-512 bodies
 * follow the integer matmul contract with w the first group, w_stride the bytes from one
 * group to the next, and rows counted from the first group's first row. */
#define TK_ROW_GROUP 16

#define TK_DECLARE_PACKED(enc) \
    void tk_pack_rows_##enc(const void *w, size_t w_stride, size_t rows, size_t k, void *out); \
    void tk_matmul_##enc##_packed_avx512(TK_MATMUL_ARGS);

#define TK_DECLARE_VNNI(enc) void tk_matmul_##enc##_avxvnni(TK_MATMUL_ARGS);
TK_DECLARE_VNNI(q4_0)
TK_DECLARE_VNNI(q4_1)
TK_DECLARE_VNNI(q5_0)
TK_DECLARE_VNNI(q5_1)
TK_DECLARE_VNNI(q8_0)

TK_DECLARE_PACKED(q4_0)
TK_DECLARE_PACKED(q4_1)
TK_DECLARE_PACKED(q5_0)
TK_DECLARE_PACKED(q5_1)
TK_DECLARE_PACKED(q8_0)

TK_DECLARE_MATMUL(q4_0)
TK_DECLARE_MATMUL(q4_1)
TK_DECLARE_MATMUL(q5_0)
TK_DECLARE_MATMUL(q5_1)
TK_DECLARE_MATMUL(q8_0)
TK_DECLARE_MATMUL(q4_K)
TK_DECLARE_MATMUL(q5_K)
TK_DECLARE_MATMUL(q6_K)

void tk_quantize_q8_32_portable(const float *x, void *out, size_t k);
void tk_quantize_q8_32_avx2(const float *x, void *out, size_t k);
void tk_quantize_q8_32_avx512(const float *x, void *out, size_t k);
void tk_quantize_q8_256_portable(const float *x, void *out, size_t k);
void tk_quantize_q8_256_avx2(const float *x, void *out, size_t k);
void tk_quantize_q8_256_avx512(const float *x, void *out, size_t k);

#endif
