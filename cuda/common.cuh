// common.cuh: what every tamer kernel shares.
//
// The Rust side (src/backend/cuda/kernels.rs) replaces the line
// `#include "common.cuh"` of each family's .cu file with this text before
// handing the source to NVRTC, so kernels need no include paths at run time
// and no CUDA headers at all: bf16/f16 conversions and tensor-core
// instructions are written out below or as inline PTX where they are used.
//
// Conventions (the ABI between src/backend/cuda/*.rs and cuda/*.cu):
// - Every index and size is a 64-bit signed integer (`i64`): tensors over
//   2^31 elements are ordinary on a 141 GB card, and 32-bit index arithmetic
//   overflows silently.
// - A kernel is `extern "C"` and named `<op>_<dtype>`, dtype one of f32, f64,
//   bf16, f16 (i64 for integer kernels); templates hold the body once and the
//   `extern "C"` wrappers instantiate it.
// - A tensor that may be strided is passed as a pointer to its storage plus a
//   `StridedLayout` by value (shape, strides and offset in elements, up to
//   TAMER_MAX_DIMS dimensions). Contiguous operands get a separate fast-path
//   kernel that takes only the pointer (already offset) and the length.
// - Elementwise kernels are grid-stride loops, so any grid size is correct.

#pragma once

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

#define TAMER_MAX_DIMS 8

struct StridedLayout {
    i64 rank;
    i64 offset;
    i64 dims[TAMER_MAX_DIMS];
    i64 strides[TAMER_MAX_DIMS];
};

// Storage offset of the i-th element (row-major order) of a strided view.
__device__ __forceinline__ i64 strided_offset(const StridedLayout& l, i64 i) {
    i64 off = l.offset;
    for (int d = (int)l.rank - 1; d >= 0; --d) {
        i64 size = l.dims[d];
        i64 q = i / size;
        off += (i - q * size) * l.strides[d];
        i = q;
    }
    return off;
}

#define GRID_STRIDE_LOOP(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

// ---- 16-bit floats, without cuda_bf16.h / cuda_fp16.h -----------------------
// Storage types: the raw bits. Arithmetic always happens in f32.
struct bf16_t { u16 bits; };
struct f16_t { u16 bits; };

__device__ __forceinline__ float bf16_to_f32(bf16_t v) {
    return __uint_as_float(((u32)v.bits) << 16);
}
// Round to nearest even, NaN kept quiet (as torch and the `half` crate do).
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    bf16_t r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r.bits = (u16)((u >> 16) | 0x40u);
    } else {
        u32 rounding = 0x7fffu + ((u >> 16) & 1u);
        r.bits = (u16)((u + rounding) >> 16);
    }
    return r;
}
__device__ __forceinline__ float f16_to_f32(f16_t v) {
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(v.bits));
    return f;
}
__device__ __forceinline__ f16_t f32_to_f16(float f) {
    f16_t r;
    asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(r.bits) : "f"(f));
    return r;
}

// Load/store any element type as its compute type (f32 for the 16-bit ones).
template <typename T> struct Elem { typedef T compute; };
template <> struct Elem<bf16_t> { typedef float compute; };
template <> struct Elem<f16_t> { typedef float compute; };

__device__ __forceinline__ float to_compute(float v) { return v; }
__device__ __forceinline__ double to_compute(double v) { return v; }
__device__ __forceinline__ float to_compute(bf16_t v) { return bf16_to_f32(v); }
__device__ __forceinline__ float to_compute(f16_t v) { return f16_to_f32(v); }

template <typename T> __device__ __forceinline__ T from_compute(float v);
template <typename T> __device__ __forceinline__ T from_compute(double v);
template <> __device__ __forceinline__ float from_compute<float>(float v) { return v; }
template <> __device__ __forceinline__ double from_compute<double>(double v) { return v; }
template <> __device__ __forceinline__ float from_compute<float>(double v) { return (float)v; }
template <> __device__ __forceinline__ double from_compute<double>(float v) { return (double)v; }
template <> __device__ __forceinline__ bf16_t from_compute<bf16_t>(float v) { return f32_to_bf16(v); }
template <> __device__ __forceinline__ f16_t from_compute<f16_t>(float v) { return f32_to_f16(v); }

// ---- math that differs between float and double ------------------------------
__device__ __forceinline__ float t_exp(float x) { return expf(x); }
__device__ __forceinline__ double t_exp(double x) { return exp(x); }
__device__ __forceinline__ float t_log(float x) { return logf(x); }
__device__ __forceinline__ double t_log(double x) { return log(x); }
__device__ __forceinline__ float t_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double t_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float t_rsqrt(float x) { return rsqrtf(x); }
__device__ __forceinline__ double t_rsqrt(double x) { return rsqrt(x); }
__device__ __forceinline__ float t_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double t_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float t_erf(float x) { return erff(x); }
__device__ __forceinline__ double t_erf(double x) { return erf(x); }
__device__ __forceinline__ float t_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double t_abs(double x) { return fabs(x); }
__device__ __forceinline__ float t_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double t_pow(double x, double y) { return pow(x, y); }
__device__ __forceinline__ float t_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double t_max(double a, double b) { return fmax(a, b); }
__device__ __forceinline__ float t_min(float a, float b) { return fminf(a, b); }
__device__ __forceinline__ double t_min(double a, double b) { return fmin(a, b); }
__device__ __forceinline__ float t_sin(float x) { return sinf(x); }
__device__ __forceinline__ double t_sin(double x) { return sin(x); }
__device__ __forceinline__ float t_cos(float x) { return cosf(x); }
__device__ __forceinline__ double t_cos(double x) { return cos(x); }
template <typename T> __device__ __forceinline__ T t_neg_inf();
template <> __device__ __forceinline__ float t_neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double t_neg_inf<double>() { return __longlong_as_double(0xfff0000000000000ULL); }
template <typename T> __device__ __forceinline__ T t_pos_inf();
template <> __device__ __forceinline__ float t_pos_inf<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double t_pos_inf<double>() { return __longlong_as_double(0x7ff0000000000000ULL); }

// ---- reductions ---------------------------------------------------------------
// Warp-level sum/max by shuffles; the block versions reduce each warp, then the
// warp results through shared memory. `shared` must hold 32 values. Every
// thread of the block must call them (they contain __syncthreads).
template <typename T> __device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <typename T> __device__ __forceinline__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) v = t_max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
template <typename T> __device__ __forceinline__ T block_sum(T v, T* shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();  // `shared` may still be read by a previous call
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = (threadIdx.x < nwarps) ? shared[threadIdx.x] : (T)0;
    if (warp == 0) v = warp_sum(v);
    if (threadIdx.x == 0) shared[0] = v;
    __syncthreads();
    return shared[0];
}
template <typename T> __device__ __forceinline__ T block_max(T v, T* shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = (threadIdx.x < nwarps) ? shared[threadIdx.x] : t_neg_inf<T>();
    if (warp == 0) v = warp_max(v);
    if (threadIdx.x == 0) shared[0] = v;
    __syncthreads();
    return shared[0];
}

// atomicAdd for double exists from sm_60 on; every target we build for (sm_80,
// sm_90) has it, so no CAS loop is needed.

// ---- row kernels (reduce, softmax, layer_norm, cross_entropy) ----------------
// Storage offset of element i of a view, i < numel. Same as strided_offset,
// but the outermost dimension needs no division (i is already below its
// size), so a rank-1 view — what a coalesced row or column usually is — costs
// one multiply instead of a 64-bit division per element.
__device__ __forceinline__ i64 view_offset(const StridedLayout& l, i64 i) {
    i64 off = l.offset;
    for (int d = (int)l.rank - 1; d > 0; --d) {
        i64 size = l.dims[d];
        i64 q = i / size;
        off += (i - q * size) * l.strides[d];
        i = q;
    }
    if (l.rank > 0) off += i * l.strides[0];
    return off;
}

// The threads that own one row of a row-wise kernel, and how they reduce.
// - WarpRows: one warp per row, blockDim.x / 32 rows per block. For rows of
//   up to about a thousand elements: no shared memory, no __syncthreads, and
//   a short row does not leave 224 of 256 threads idle.
// - BlockRows: the whole block per row, for longer rows.
// Rows are visited by a grid-stride loop (`first`, `stride`), so any grid
// size is correct. sum/max return the row's total to every thread of the
// group; `shared` (32 values) is only used by BlockRows. Every thread of the
// group must call them (BlockRows: every thread of the block).
struct WarpRows {
    __device__ static int lane() { return threadIdx.x & 31; }
    __device__ static int size() { return 32; }
    __device__ static i64 first() { return (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); }
    __device__ static i64 stride() { return (i64)gridDim.x * (blockDim.x >> 5); }
    template <typename T> __device__ static T sum(T v, T*) { return warp_sum(v); }
    template <typename T> __device__ static T max(T v, T*) { return warp_max(v); }
};
struct BlockRows {
    __device__ static int lane() { return threadIdx.x; }
    __device__ static int size() { return blockDim.x; }
    __device__ static i64 first() { return blockIdx.x; }
    __device__ static i64 stride() { return gridDim.x; }
    template <typename T> __device__ static T sum(T v, T* shared) { return block_sum(v, shared); }
    template <typename T> __device__ static T max(T v, T* shared) { return block_max(v, shared); }
};
