/* The four Q4_1/Q8_0 kernels of one x86 ISA, written once. quantized.c includes this file once
 * per ISA (deliberately no include guard) after defining:
 *   TK_ISA      name suffix (avx2, avx512)          TK_TARGET  the target attribute string
 *   TK_VEC      vector type                         TK_QREGS   vectors holding one block's quants
 *   TK_ZERO()   all-zero vector                     TK_SPLAT(f) f in every lane
 *   TK_FMADD(a, b, c)  a * b + c, fused             TK_REDUCE(v) sum of the lanes
 * and the per-block helpers q4_1_quants_<ISA>, q8_0_quants_<ISA> and dot32_<ISA>.
 * Everything is #undef'd at the end. */

#define TK_CAT2(a, b) a##_##b
#define TK_CAT(a, b) TK_CAT2(a, b)
#define TK_FN(name) TK_CAT(name, TK_ISA)

__attribute__((target(TK_TARGET)))
static void TK_FN(gemv_q4_1)(const void *blocks, size_t rows, size_t cols, const float *x,
                             float *block_sums, float *y) {
    size_t nb = cols / 32;
    block_sums_of(x, nb, block_sums);
    const block_q4_1 *all = (const block_q4_1 *)blocks;
    for (size_t r = 0; r < rows; r++) {
        const block_q4_1 *row = all + r * nb;
        TK_VEC acc = TK_ZERO();
        float offsets = 0;
        for (size_t b = 0; b < nb; b++) {
            TK_VEC q[TK_QREGS];
            TK_FN(q4_1_quants)(row + b, q);
            acc = TK_FMADD(TK_SPLAT(_cvtsh_ss(row[b].d)), TK_FN(dot32)(q, x + b * 32), acc);
            offsets += _cvtsh_ss(row[b].m) * block_sums[b];
        }
        y[r] = TK_REDUCE(acc) + offsets;
    }
}

__attribute__((target(TK_TARGET)))
static void TK_FN(gemv_q8_0)(const void *blocks, size_t rows, size_t cols, const float *x, float *y) {
    size_t nb = cols / 32;
    const block_q8_0 *all = (const block_q8_0 *)blocks;
    for (size_t r = 0; r < rows; r++) {
        const block_q8_0 *row = all + r * nb;
        TK_VEC acc = TK_ZERO();
        for (size_t b = 0; b < nb; b++) {
            TK_VEC q[TK_QREGS];
            TK_FN(q8_0_quants)(row + b, q);
            acc = TK_FMADD(TK_SPLAT(_cvtsh_ss(row[b].d)), TK_FN(dot32)(q, x + b * 32), acc);
        }
        y[r] = TK_REDUCE(acc);
    }
}

/* Several input vectors: each block is decoded once, then multiplied with up to TK_GROUP vectors. */

__attribute__((target(TK_TARGET)))
static void TK_FN(gemm_q4_1)(const void *blocks, size_t rows, size_t cols, const float *x, size_t count,
                             float *block_sums, float *y, size_t y_stride) {
    size_t nb = cols / 32;
    for (size_t n = 0; n < count; n++) block_sums_of(x + n * cols, nb, block_sums + n * nb);
    const block_q4_1 *all = (const block_q4_1 *)blocks;
    for (size_t first = 0; first < count; first += TK_GROUP) {
        size_t group = count - first < TK_GROUP ? count - first : TK_GROUP;
        const float *xs = x + first * cols;
        const float *sums = block_sums + first * nb;
        for (size_t r = 0; r < rows; r++) {
            const block_q4_1 *row = all + r * nb;
            TK_VEC acc[TK_GROUP];
            float offsets[TK_GROUP] = {0, 0, 0, 0};
            for (size_t n = 0; n < TK_GROUP; n++) acc[n] = TK_ZERO();
            for (size_t b = 0; b < nb; b++) {
                TK_VEC q[TK_QREGS];
                TK_FN(q4_1_quants)(row + b, q);
                TK_VEC d = TK_SPLAT(_cvtsh_ss(row[b].d));
                float m = _cvtsh_ss(row[b].m);
                for (size_t n = 0; n < group; n++) {
                    acc[n] = TK_FMADD(d, TK_FN(dot32)(q, xs + n * cols + b * 32), acc[n]);
                    offsets[n] += m * sums[n * nb + b];
                }
            }
            for (size_t n = 0; n < group; n++) y[(first + n) * y_stride + r] = TK_REDUCE(acc[n]) + offsets[n];
        }
    }
}

__attribute__((target(TK_TARGET)))
static void TK_FN(gemm_q8_0)(const void *blocks, size_t rows, size_t cols, const float *x, size_t count,
                             float *y, size_t y_stride) {
    size_t nb = cols / 32;
    const block_q8_0 *all = (const block_q8_0 *)blocks;
    for (size_t first = 0; first < count; first += TK_GROUP) {
        size_t group = count - first < TK_GROUP ? count - first : TK_GROUP;
        const float *xs = x + first * cols;
        for (size_t r = 0; r < rows; r++) {
            const block_q8_0 *row = all + r * nb;
            TK_VEC acc[TK_GROUP];
            for (size_t n = 0; n < TK_GROUP; n++) acc[n] = TK_ZERO();
            for (size_t b = 0; b < nb; b++) {
                TK_VEC q[TK_QREGS];
                TK_FN(q8_0_quants)(row + b, q);
                TK_VEC d = TK_SPLAT(_cvtsh_ss(row[b].d));
                for (size_t n = 0; n < group; n++)
                    acc[n] = TK_FMADD(d, TK_FN(dot32)(q, xs + n * cols + b * 32), acc[n]);
            }
            for (size_t n = 0; n < group; n++) y[(first + n) * y_stride + r] = TK_REDUCE(acc[n]);
        }
    }
}

#undef TK_FN
#undef TK_CAT
#undef TK_CAT2
#undef TK_ISA
#undef TK_TARGET
#undef TK_VEC
#undef TK_QREGS
#undef TK_ZERO
#undef TK_SPLAT
#undef TK_FMADD
#undef TK_REDUCE
