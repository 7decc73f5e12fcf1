// dropout.cu: the dropout keep mask from a counter-based RNG, Philox4x32-10
// (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the
// Random123 library's philox4x32 with 10 rounds).
//
// A counter-based RNG is a keyed bijection: random = philox(counter, key).
// Any thread can compute the numbers of any position without a sequential
// state, so the mask of element i depends only on (seed, i): the same on
// every GPU, grid size and run, and reproducible on the host by the Rust
// reference `philox4x32_10` in src/backend/contract/nn/dropout.rs (tested there against the
// published known-answer vectors, and against this kernel bit for bit in the
// CUDA tests).
//
// Mask rule (shared with the reference, `philox_keep_flags`):
//   group g = i / 4, counter = (lo32(g), hi32(g), 0, 0), key = (lo32(seed), hi32(seed))
//   r = philox4x32_10(counter, key);  element i keeps iff r[i % 4] >= threshold
//   threshold = floor(p * 2^32) (2^32 for p = 1: every element dropped)
//   mask[i] = keep ? scale : 0, scale = 1/(1-p) (0 for p = 1), in the tensor's dtype.
#include "common.cuh"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u  // the golden ratio
#define PHILOX_W1 0xBB67AE85u  // sqrt(3) - 1

struct u32x4 { u32 v[4]; };

// One Philox round: two 32x32 -> 64-bit multiplies mix the even words into
// the odd ones (Random123's philox4x32round).
__device__ __forceinline__ u32x4 philox_round(u32x4 c, u32 k0, u32 k1) {
    u32 hi0 = __umulhi(PHILOX_M0, c.v[0]), lo0 = PHILOX_M0 * c.v[0];
    u32 hi1 = __umulhi(PHILOX_M1, c.v[2]), lo1 = PHILOX_M1 * c.v[2];
    u32x4 r;
    r.v[0] = hi1 ^ c.v[1] ^ k0;
    r.v[1] = lo1;
    r.v[2] = hi0 ^ c.v[3] ^ k1;
    r.v[3] = lo0;
    return r;
}

// Ten rounds, the key bumped by the Weyl constants between rounds.
__device__ __forceinline__ u32x4 philox4x32_10(u32x4 c, u32 k0, u32 k1) {
    #pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        c = philox_round(c, k0, k1);
    }
    return c;
}

// out: [n] contiguous, the scaled keep mask. One thread per group of four
// elements (one Philox call yields four 32-bit numbers), total = ceil(n/4)
// groups; the last group may be partial.
template <typename T>
__device__ void dropout_mask_impl(T* out, i64 n, u64 seed, u64 threshold, double scale) {
    T on = from_compute<T>(scale), off = from_compute<T>(0.0);
    i64 groups = (n + 3) / 4;
    GRID_STRIDE_LOOP(g, groups) {
        u32x4 c;
        c.v[0] = (u32)((u64)g & 0xffffffffu);
        c.v[1] = (u32)((u64)g >> 32);
        c.v[2] = 0;
        c.v[3] = 0;
        u32x4 r = philox4x32_10(c, (u32)(seed & 0xffffffffu), (u32)(seed >> 32));
        #pragma unroll
        for (int t = 0; t < 4; ++t) {
            i64 i = 4 * g + t;
            if (i < n) out[i] = ((u64)r.v[t] >= threshold) ? on : off;
        }
    }
}

// The raw Philox output for counters 0 .. groups-1 (four words each), so the
// CUDA tests can check the generator itself against the Rust reference.
extern "C" __global__ void philox4x32_10_raw(u32* out, i64 groups, u64 seed) {
    GRID_STRIDE_LOOP(g, groups) {
        u32x4 c;
        c.v[0] = (u32)((u64)g & 0xffffffffu);
        c.v[1] = (u32)((u64)g >> 32);
        c.v[2] = 0;
        c.v[3] = 0;
        u32x4 r = philox4x32_10(c, (u32)(seed & 0xffffffffu), (u32)(seed >> 32));
        for (int t = 0; t < 4; ++t) out[4 * g + t] = r.v[t];
    }
}

#define DROPOUT_KERNELS(SUFFIX, T)                                                                           \
    extern "C" __global__ void dropout_mask_##SUFFIX(T* out, i64 n, u64 seed, u64 threshold, double scale) { \
        dropout_mask_impl<T>(out, n, seed, threshold, scale);                                                \
    }
DROPOUT_KERNELS(f32, float)
DROPOUT_KERNELS(f64, double)
