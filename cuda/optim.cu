// optim.cu: the optimizer's kernels. Fused Adam/AdamW and SGD updates (one
// launch per parameter tensor), gradient accumulation (axpy), a scaled copy
// (gradient clipping), and a deterministic sum of squares (the global
// gradient norm).
//
// Launched from src/backend/cuda/optim.rs; the CPU reference is
// src/backend/cpu/optim.rs, whose loops these kernels follow operation by
// operation. Every buffer here is contiguous: the host passes the address of
// a parameter's first element (storage pointer + offset) and copies strided
// operands to contiguous buffers first, so the kernels need no layouts.
//
// Bit-exact parity with the CPU. NVRTC compiles with --fmad=true, which lets
// the compiler contract `a * b + c` into one fused multiply-add (one rounding
// instead of two). The CPU loops round after every operation (Rust never
// contracts), so each operation below is written as its round-to-nearest
// intrinsic (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn and the double
// forms), which the compiler never fuses. With the scalars rounded to the
// parameter's dtype on the host exactly as the CPU rounds them
// (AdamCoeffs::<T>::new, SgdCoeffs), an update on the GPU gives the same bits
// as the same update on the CPU.
//
// These are plain grid-stride kernels (memory bound: a few loads and stores
// per element and a dozen flops); there is no separate "fast" version, so
// they are their own reference.

#include "common.cuh"

// ---- one rounding per operation, never contracted ------------------------------
__device__ __forceinline__ float op_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double op_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float op_sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double op_sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float op_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double op_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float op_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double op_div(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float op_sqrt(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double op_sqrt(double a) { return __dsqrt_rn(a); }
// Rust's f32::max / f64::max: the other operand when one is NaN, as fmax.
__device__ __forceinline__ float op_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double op_max(double a, double b) { return fmax(a, b); }

// ---- Adam / AdamW ----------------------------------------------------------------
// One step of one parameter tensor, element by element, in the order of
// adam_loop (src/backend/cpu/optim.rs), itself torch.optim.Adam's single-tensor
// code:
//
//   decay 1 (Adam, L2):         g ← g + wd·p
//   decay 2 (AdamW, decoupled): p ← p·wd            (wd holds 1 − lr·weight_decay)
//   m ← lerp(m, g, w):  m + w·(g − m) when w_small (w < 0.5), else g − (g − m)·(1 − w)
//   v ← v·β₂ + ((1 − β₂)·g)·g
//   v̂ ← max(v̂, v)                                   (amsgrad; v̂ is vmax)
//   p ← p + (neg_step_size·m) / (√v̂ / bc2_sqrt + eps)
//
// p, g, m, v: [n]; vmax: [n] when amsgrad != 0, else not read (may be null).
// decay: 0 none, 1 coupled, 2 decoupled. The flags are uniform across the
// grid, so their branches cost nothing next to the memory traffic.
// Launch: elementwise_config(n), any grid (grid-stride loop).
template <typename T>
__device__ __forceinline__ void adam_impl(T* p, const T* g, T* m, T* v, T* vmax, i64 n, i64 decay, i64 amsgrad, i64 w_small, T wd, T w,
                                          T one_minus_w, T beta2, T one_minus_beta2, T bc2_sqrt, T eps, T neg_step_size) {
    GRID_STRIDE_LOOP(i, n) {
        T pi = p[i];
        T gi = g[i];
        if (decay == 1) {
            gi = op_add(gi, op_mul(wd, pi));
        } else if (decay == 2) {
            pi = op_mul(pi, wd);
        }
        T mi = m[i];
        mi = w_small ? op_add(mi, op_mul(w, op_sub(gi, mi))) : op_sub(gi, op_mul(op_sub(gi, mi), one_minus_w));
        m[i] = mi;
        T vi = op_add(op_mul(v[i], beta2), op_mul(op_mul(one_minus_beta2, gi), gi));
        v[i] = vi;
        T vv = vi;
        if (amsgrad) {
            vv = op_max(vmax[i], vi);
            vmax[i] = vv;
        }
        T denom = op_add(op_div(op_sqrt(vv), bc2_sqrt), eps);
        p[i] = op_add(pi, op_div(op_mul(neg_step_size, mi), denom));
    }
}

#define ADAM_KERNEL(NAME, T)                                                                                                   \
    extern "C" __global__ void NAME(T* p, const T* g, T* m, T* v, T* vmax, i64 n, i64 decay, i64 amsgrad, i64 w_small, T wd, T w, \
                                    T one_minus_w, T beta2, T one_minus_beta2, T bc2_sqrt, T eps, T neg_step_size) {           \
        adam_impl<T>(p, g, m, v, vmax, n, decay, amsgrad, w_small, wd, w, one_minus_w, beta2, one_minus_beta2, bc2_sqrt, eps,   \
                     neg_step_size);                                                                                           \
    }
ADAM_KERNEL(adam_f32, float)
ADAM_KERNEL(adam_f64, double)

// ---- SGD -------------------------------------------------------------------------
// One step, in the order of sgd_loop (torch.optim.SGD):
//
//   d ← g + wd·p                                  (has_wd)
//   b ← d (init: the buffer's first step), else b·μ + (1 − dampening)·d   (momentum)
//   d ← d + μ·b (nesterov), else b                (momentum)
//   p ← p + neg_lr·d
//
// p, g: [n]; buf: [n] when momentum != 0, else not read (may be null).
// Launch: elementwise_config(n).
template <typename T>
__device__ __forceinline__ void sgd_impl(T* p, const T* g, T* buf, i64 n, i64 has_wd, i64 momentum, i64 nesterov, i64 init, T wd, T mu,
                                         T one_minus_dampening, T neg_lr) {
    GRID_STRIDE_LOOP(i, n) {
        T pi = p[i];
        T d = has_wd ? op_add(g[i], op_mul(wd, pi)) : g[i];
        if (momentum) {
            T b = init ? d : op_add(op_mul(buf[i], mu), op_mul(one_minus_dampening, d));
            buf[i] = b;
            d = nesterov ? op_add(d, op_mul(mu, b)) : b;
        }
        p[i] = op_add(pi, op_mul(neg_lr, d));
    }
}

#define SGD_KERNEL(NAME, T)                                                                                                     \
    extern "C" __global__ void NAME(T* p, const T* g, T* buf, i64 n, i64 has_wd, i64 momentum, i64 nesterov, i64 init, T wd, T mu, \
                                    T one_minus_dampening, T neg_lr) {                                                          \
        sgd_impl<T>(p, g, buf, n, has_wd, momentum, nesterov, init, wd, mu, one_minus_dampening, neg_lr);                        \
    }
SGD_KERNEL(sgd_f32, float)
SGD_KERNEL(sgd_f64, double)

// ---- gradient accumulation and scaling --------------------------------------------
// acc[i] ← acc[i] + scale·x[i]   (GradAccumulator::add; acc, x: [n]).
// Launch: elementwise_config(n).
template <typename T>
__device__ __forceinline__ void axpy_impl(T* acc, const T* x, i64 n, T scale) {
    GRID_STRIDE_LOOP(i, n) { acc[i] = op_add(acc[i], op_mul(scale, x[i])); }
}
extern "C" __global__ void axpy_f32(float* acc, const float* x, i64 n, float scale) { axpy_impl<float>(acc, x, n, scale); }
extern "C" __global__ void axpy_f64(double* acc, const double* x, i64 n, double scale) { axpy_impl<double>(acc, x, n, scale); }

// out[i] ← a·x[i] + 0, the CPU's Affine(a, 0) (Tensor::scale) spelled out so
// the result matches it bit for bit, signed zeros included (x, out: [n]).
// Used by clip_grad_norm and for a new entry of GradAccumulator.
// Launch: elementwise_config(n).
template <typename T>
__device__ __forceinline__ void scale_impl(const T* x, i64 n, T a, T* out) {
    GRID_STRIDE_LOOP(i, n) { out[i] = op_add(op_mul(a, x[i]), (T)0); }
}
extern "C" __global__ void scale_f32(const float* x, i64 n, float a, float* out) { scale_impl<float>(x, n, a, out); }
extern "C" __global__ void scale_f64(const double* x, i64 n, double a, double* out) { scale_impl<double>(x, n, a, out); }

// ---- deterministic Σ x² ------------------------------------------------------------
// The global gradient norm must not change from run to run (a resumed run
// repeats the uninterrupted one bit for bit), so there are no atomics: a
// fixed two-pass tree whose shape depends only on n.
//
// Pass 1, sum_squares_partial_<dtype>: SSQ_THREADS threads per block and
// `blocks` = clamp(ceil(n / SSQ_THREADS), 1, SSQ_MAX_BLOCKS) blocks (chosen
// by the host from n alone). Thread t of block b adds x[i]² in double for
// i = b·SSQ_THREADS + t, then every gridDim·SSQ_THREADS further; the block
// reduces its threads with block_sum (fixed shuffle tree) and writes
// partial[b]. x: [n] of the dtype (16-bit floats widened exactly); partial: [blocks].
//
// Pass 2, sum_partials_f64: one block of SSQ_THREADS threads; thread t adds
// partial[t], partial[t + SSQ_THREADS], ... in order, block_sum reduces, and
// out[index] = the total. One scalar per tensor: the host launches both
// passes for every gradient into one out[] buffer, copies it back once, and
// adds the per-tensor sums in f64 in parameter order (src/backend/cpu/optim.rs).
//
// Squares of f32 values are exact in double (24 + 24 bits < 53), so for f32
// gradients only the order of the additions differs from the CPU's, at the
// level of f64 rounding.
#define SSQ_THREADS 256
#define SSQ_MAX_BLOCKS 1024

template <typename T>
__device__ __forceinline__ void ssq_partial_impl(const T* x, i64 n, double* partial) {
    __shared__ double shared[32];
    double acc = 0.0;
    GRID_STRIDE_LOOP(i, n) {
        double v = (double)to_compute(x[i]);
        acc = __dadd_rn(acc, __dmul_rn(v, v));
    }
    acc = block_sum(acc, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
extern "C" __global__ void sum_squares_partial_f32(const float* x, i64 n, double* partial) { ssq_partial_impl<float>(x, n, partial); }
extern "C" __global__ void sum_squares_partial_f64(const double* x, i64 n, double* partial) { ssq_partial_impl<double>(x, n, partial); }
extern "C" __global__ void sum_squares_partial_bf16(const bf16_t* x, i64 n, double* partial) { ssq_partial_impl<bf16_t>(x, n, partial); }
extern "C" __global__ void sum_squares_partial_f16(const f16_t* x, i64 n, double* partial) { ssq_partial_impl<f16_t>(x, n, partial); }

extern "C" __global__ void sum_partials_f64(const double* partial, i64 count, double* out, i64 index) {
    __shared__ double shared[32];
    double acc = 0.0;
    for (i64 i = threadIdx.x; i < count; i += blockDim.x) acc = __dadd_rn(acc, partial[i]);
    acc = block_sum(acc, shared);
    if (threadIdx.x == 0) out[index] = acc;
}
