/* Small x86 helpers shared by kernels.c and quantized.c (private to the CKernels target). */
#ifndef TESSEL_SIMD_COMMON_H
#define TESSEL_SIMD_COMMON_H

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TK_X86 1

/* Sum of the eight lanes. Inlined into its AVX2 callers; it needs only AVX (and SSE3). */
__attribute__((target("avx"), always_inline))
static inline float tk_hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}
#endif

#endif
