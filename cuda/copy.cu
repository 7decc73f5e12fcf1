// copy.cu: moving and converting elements. Kernels that only move bits are
// chosen by element width (b16/b32/b64), so one kernel serves every dtype of
// that width.
#include "common.cuh"

// dst[i] = src[view(i)]: a strided view made contiguous.
template <typename T>
__device__ void copy_strided(const T* src, StridedLayout sl, T* dst, i64 n) {
    GRID_STRIDE_LOOP(i, n) { dst[i] = src[strided_offset(sl, i)]; }
}
// dst[view_d(i)] = src[view_s(i)]: writes into a strided destination (in-place
// updates, cat). A destination whose elements overlap is not supported.
template <typename T>
__device__ void copy_into(T* dst, StridedLayout dl, const T* src, StridedLayout sl, i64 n) {
    GRID_STRIDE_LOOP(i, n) { dst[strided_offset(dl, i)] = src[strided_offset(sl, i)]; }
}

#define WIDTH_KERNELS(SUFFIX, T)                                                                    \
    extern "C" __global__ void copy_strided_##SUFFIX(const T* src, StridedLayout sl, T* dst, i64 n) { \
        copy_strided<T>(src, sl, dst, n);                                                           \
    }                                                                                               \
    extern "C" __global__ void copy_into_##SUFFIX(T* dst, StridedLayout dl, const T* src, StridedLayout sl, i64 n) { \
        copy_into<T>(dst, dl, src, sl, n);                                                          \
    }
WIDTH_KERNELS(b16, u16)
WIDTH_KERNELS(b32, u32)
WIDTH_KERNELS(b64, u64)

// ---- fill ---------------------------------------------------------------------
__device__ __forceinline__ void store_value(float* p, double v) { *p = (float)v; }
__device__ __forceinline__ void store_value(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_value(bf16_t* p, double v) { *p = f32_to_bf16((float)v); }
__device__ __forceinline__ void store_value(f16_t* p, double v) { *p = f32_to_f16((float)v); }
__device__ __forceinline__ void store_value(i64* p, double v) { *p = (i64)v; }

#define FILL(SUFFIX, T) \
    extern "C" __global__ void fill_##SUFFIX(T* dst, i64 n, double value) { GRID_STRIDE_LOOP(i, n) store_value(dst + i, value); }
FILL(f32, float)
FILL(f64, double)
FILL(bf16, bf16_t)
FILL(f16, f16_t)
FILL(i64, i64)

// ---- casts --------------------------------------------------------------------
// Every source goes through the widest type that represents it exactly
// (f32 for the 16-bit floats and f32, f64 for f64 and i64), then rounds once
// to the destination. f64 -> bf16/f16 rounds twice (via f32), which differs
// from a direct rounding only for values within 2^-29 relative of a tie.
__device__ __forceinline__ double load_wide(const float* p) { return (double)*p; }
__device__ __forceinline__ double load_wide(const double* p) { return *p; }
__device__ __forceinline__ double load_wide(const bf16_t* p) { return (double)bf16_to_f32(*p); }
__device__ __forceinline__ double load_wide(const f16_t* p) { return (double)f16_to_f32(*p); }
__device__ __forceinline__ double load_wide(const i64* p) { return (double)*p; }

__device__ __forceinline__ void store_cast(float* p, double v) { *p = (float)v; }
__device__ __forceinline__ void store_cast(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_cast(bf16_t* p, double v) { *p = f32_to_bf16((float)v); }
__device__ __forceinline__ void store_cast(f16_t* p, double v) { *p = f32_to_f16((float)v); }
// Truncation toward zero, as Rust's `as` (NaN -> 0, saturating at the ends).
__device__ __forceinline__ void store_cast(i64* p, double v) {
    if (v != v) *p = 0;
    else if (v >= 9.2233720368547758e18) *p = 0x7fffffffffffffffLL;
    else if (v <= -9.2233720368547758e18) *p = (i64)0x8000000000000000ULL;
    else *p = (i64)v;
}

#define CAST(A, TA, B, TB)                                                                              \
    extern "C" __global__ void cast_##A##_##B(const TA* src, StridedLayout sl, TB* dst, i64 n) {       \
        GRID_STRIDE_LOOP(i, n) store_cast(dst + i, load_wide(src + strided_offset(sl, i)));           \
    }
#define CAST_FROM(A, TA)          \
    CAST(A, TA, f32, float)       \
    CAST(A, TA, f64, double)      \
    CAST(A, TA, bf16, bf16_t)     \
    CAST(A, TA, f16, f16_t)       \
    CAST(A, TA, i64, i64)
CAST_FROM(f32, float)
CAST_FROM(f64, double)
CAST_FROM(bf16, bf16_t)
CAST_FROM(f16, f16_t)
CAST_FROM(i64, i64)

// f32 -> bf16/f16 directly, without the detour through f64 (exact anyway,
// but this keeps the hot mixed-precision cast a single conversion).
extern "C" __global__ void cast_contig_f32_bf16(const float* src, bf16_t* dst, i64 n) {
    GRID_STRIDE_LOOP(i, n) dst[i] = f32_to_bf16(src[i]);
}
extern "C" __global__ void cast_contig_bf16_f32(const bf16_t* src, float* dst, i64 n) {
    GRID_STRIDE_LOOP(i, n) dst[i] = bf16_to_f32(src[i]);
}
