/* Block layouts of the ggml encodings the kernels read straight from GGUF files (little-endian),
 * and of the 8-bit activation blocks the integer kernels multiply them with. Private to the
 * CKernels target. */
#ifndef TESSEL_GGML_BLOCKS_H
#define TESSEL_GGML_BLOCKS_H

#include <stdint.h>
#include <string.h>

#define TK_QK 32    /* elements per block of the 32-element encodings */
#define TK_QK_K 256 /* elements per super-block of the K-quants */
#define TK_K_SCALE_SIZE 12

typedef struct { uint16_t d; uint8_t qs[16]; } block_q4_0;               /* q - 8 */
typedef struct { uint16_t d, m; uint8_t qs[16]; } block_q4_1;            /* q * d + m */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } block_q5_0; /* q - 16 */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } block_q5_1;
typedef struct { uint16_t d; int8_t qs[32]; } block_q8_0;

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[TK_K_SCALE_SIZE]; /* 8 six-bit scales and 8 six-bit mins, packed */
    uint8_t qs[TK_QK_K / 2];
} block_q4_K;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[TK_K_SCALE_SIZE];
    uint8_t qh[TK_QK_K / 8];
    uint8_t qs[TK_QK_K / 2];
} block_q5_K;
typedef struct {
    uint8_t ql[TK_QK_K / 2];
    uint8_t qh[TK_QK_K / 4];
    int8_t scales[TK_QK_K / 16];
    uint16_t d;
} block_q6_K;

/* Activations for the 32-element encodings: x ≈ d * qs, s = d * Σ qs (the block's sum, for the
 * encodings with an offset). f32 scales: a little more exact than ggml's f16 ones. */
typedef struct { float d; float s; int8_t qs[TK_QK]; } tk_q8_32;

/* Activations for the K-quants: x ≈ d * qs; bsums[i] = Σ qs[16 i ..< 16 i + 16]. */
typedef struct { float d; int8_t qs[TK_QK_K]; int16_t bsums[TK_QK_K / 16]; } tk_q8_256;

_Static_assert(sizeof(block_q4_0) == 18, "q4_0");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K");
_Static_assert(sizeof(tk_q8_32) == 40, "q8_32");
_Static_assert(sizeof(tk_q8_256) == 292, "q8_256");

/* Little-endian fields at any byte offset (rows, blocks and activation blocks may sit at any
 * offset the caller's strides give), read with memcpy rather than through a cast pointer. */
static inline uint16_t tk_read_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, sizeof v); return v; }
static inline uint32_t tk_read_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, sizeof v); return v; }
static inline int32_t tk_read_i32(const uint8_t *p) { int32_t v; memcpy(&v, p, sizeof v); return v; }
static inline uint64_t tk_read_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, sizeof v); return v; }
static inline float tk_read_f32(const uint8_t *p) { float v; memcpy(&v, p, sizeof v); return v; }

/* IEEE half to float with the bits vcvtph2ps gives (signalling NaNs made quiet), branch-free so
 * portable loops vectorise: exponent and mantissa moved into float position and multiplied by
 * 2^(127 - 15), which rebiases the exponent exactly and also normalises subnormal halves (this
 * needs denormals not flushed to zero, the default). Exponent 31 (inf, NaN) is mapped apart. */
static inline float tk_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t mag = (uint32_t)(h & 0x7fffu) << 13;
    float scaled;
    memcpy(&scaled, &mag, sizeof scaled);
    scaled *= 0x1p112f;
    uint32_t bits;
    memcpy(&bits, &scaled, sizeof bits);
    uint32_t special = mag | 0x7f800000u | ((mag & 0x7fffffu) != 0 ? 0x400000u : 0u);
    bits = (mag >= 0x0f800000u ? special : bits) | sign;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float tk_bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Round to nearest even, NaN kept a NaN. */
static inline uint16_t tk_float_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* Q4_K / Q5_K: sub-block j's six-bit scale and min (j in 0..<8). */
static inline void tk_k_scale_min(int j, const uint8_t *q, uint8_t *scale, uint8_t *min) {
    if (j < 4) {
        *scale = q[j] & 63;
        *min = q[j + 4] & 63;
    } else {
        *scale = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *min = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

#endif
