// softmax.cu: softmax and log_softmax along the last axis, forward and
// backward (src/backend/cuda/nn/softmax.rs launches them).
//
// Shapes: the input is `rows` rows of `c` elements in any strides: row r
// starts at view_offset(starts, r) (every axis but the last, coalesced on the
// host) and steps by `step` along the row. Outputs are contiguous [rows, c].
//
// Kernel versions, chosen by row length on the host:
//   *_warp_*   one warp per row (c <= 1024), 8 rows per 256-thread block:
//              shuffles only, no shared memory, no block barriers.
//   *_block_*  one block (512 threads) per row, for longer rows (a 50k-class
//              row: ~100 elements per thread), warp shuffles then shared memory.
//   *_ref_*    one thread per row, the textbook loops: the plain reference.
// Both fast versions loop over the row in strides of the group size, so any
// row length works (1 element: one lane busy; 50k: many passes), and loop
// over rows grid-stride, so any grid size works.
//
// Forward, per row (the CPU's formulas):
//   m = max_j x_j (NaN-skipping, as Rust's f32::max), s = sum_j exp(x_j - m)
//   softmax:     y_j = exp(x_j - m) * (1/s)
//   log_softmax: y_j = (x_j - m) - ln s
// Three passes over the row (max, sum, write) rather than an online
// max-and-sum in two: the row is re-read from L1/L2, and the result keeps the
// CPU's exact formula, including for infinite logits.
//
// Backward, per row, from the forward output y and its gradient dy:
//   softmax:     dx = y * (dy - sum_j dy_j y_j)
//   log_softmax: dx = dy - exp(y) * sum_j dy_j
// One reduction pass and one write pass.
#include "common.cuh"

// ---- forward -------------------------------------------------------------------------
template <typename G, bool LOG, typename T>
__device__ void softmax_fwd(const T* x, StridedLayout starts, i64 step, T* y, i64 rows, i64 c) {
    __shared__ T shared[32];
    for (i64 r = G::first(); r < rows; r += G::stride()) {
        const T* xr = x + view_offset(starts, r);
        T* yr = y + r * c;
        T m = t_neg_inf<T>();
        for (i64 j = G::lane(); j < c; j += G::size()) m = t_max(m, xr[j * step]);
        m = G::template max<T>(m, shared);
        T s = (T)0;
        for (i64 j = G::lane(); j < c; j += G::size()) s += t_exp(xr[j * step] - m);
        s = G::template sum<T>(s, shared);
        if (LOG) {
            T log_sum = t_log(s);
            for (i64 j = G::lane(); j < c; j += G::size()) yr[j] = (xr[j * step] - m) - log_sum;
        } else {
            T inv = (T)1 / s;
            for (i64 j = G::lane(); j < c; j += G::size()) yr[j] = t_exp(xr[j * step] - m) * inv;
        }
    }
}

// Reference: one thread per row.
template <bool LOG, typename T>
__device__ void softmax_fwd_ref(const T* x, StridedLayout starts, i64 step, T* y, i64 rows, i64 c) {
    GRID_STRIDE_LOOP(r, rows) {
        const T* xr = x + view_offset(starts, r);
        T m = t_neg_inf<T>();
        for (i64 j = 0; j < c; ++j)
            if (xr[j * step] > m) m = xr[j * step];
        T denom = (T)0;
        for (i64 j = 0; j < c; ++j) denom += t_exp(xr[j * step] - m);
        for (i64 j = 0; j < c; ++j) y[r * c + j] = LOG ? xr[j * step] - m - t_log(denom) : t_exp(xr[j * step] - m) / denom;
    }
}

// ---- backward ------------------------------------------------------------------------
// y, dy: rows as the input above (each with its own starts/step); dx: [rows, c].
template <typename G, bool LOG, typename T>
__device__ void softmax_bwd(const T* y, StridedLayout ystarts, i64 ystep, const T* dy, StridedLayout gstarts, i64 gstep, T* dx, i64 rows, i64 c) {
    __shared__ T shared[32];
    for (i64 r = G::first(); r < rows; r += G::stride()) {
        const T* yr = y + view_offset(ystarts, r);
        const T* gr = dy + view_offset(gstarts, r);
        T* dr = dx + r * c;
        T acc = (T)0;
        for (i64 j = G::lane(); j < c; j += G::size()) acc += LOG ? gr[j * gstep] : gr[j * gstep] * yr[j * ystep];
        acc = G::template sum<T>(acc, shared);
        for (i64 j = G::lane(); j < c; j += G::size()) {
            T yv = yr[j * ystep], g = gr[j * gstep];
            dr[j] = LOG ? g - t_exp(yv) * acc : yv * (g - acc);
        }
    }
}

template <bool LOG, typename T>
__device__ void softmax_bwd_ref(const T* y, StridedLayout ystarts, i64 ystep, const T* dy, StridedLayout gstarts, i64 gstep, T* dx, i64 rows, i64 c) {
    GRID_STRIDE_LOOP(r, rows) {
        const T* yr = y + view_offset(ystarts, r);
        const T* gr = dy + view_offset(gstarts, r);
        T acc = (T)0;
        for (i64 j = 0; j < c; ++j) acc += LOG ? gr[j * gstep] : gr[j * gstep] * yr[j * ystep];
        for (i64 j = 0; j < c; ++j) {
            T yv = yr[j * ystep], g = gr[j * gstep];
            dx[r * c + j] = LOG ? g - t_exp(yv) * acc : yv * (g - acc);
        }
    }
}

// ---- entry points ----------------------------------------------------------------------
// forward:  <name>_fwd_<v>_<dtype>(const T* x, StridedLayout starts, i64 step, T* y, i64 rows, i64 c)
// backward: <name>_bwd_<v>_<dtype>(const T* y, StridedLayout ystarts, i64 ystep,
//                                   const T* dy, StridedLayout gstarts, i64 gstep, T* dx, i64 rows, i64 c)
#define SOFTMAX_KERNELS(NAME, LOG, SUFFIX, T)                                                                                    \
    extern "C" __global__ void NAME##_fwd_warp_##SUFFIX(const T* x, StridedLayout starts, i64 step, T* y, i64 rows, i64 c) {     \
        softmax_fwd<WarpRows, LOG, T>(x, starts, step, y, rows, c);                                                              \
    }                                                                                                                            \
    extern "C" __global__ void NAME##_fwd_block_##SUFFIX(const T* x, StridedLayout starts, i64 step, T* y, i64 rows, i64 c) {    \
        softmax_fwd<BlockRows, LOG, T>(x, starts, step, y, rows, c);                                                             \
    }                                                                                                                            \
    extern "C" __global__ void NAME##_fwd_ref_##SUFFIX(const T* x, StridedLayout starts, i64 step, T* y, i64 rows, i64 c) {      \
        softmax_fwd_ref<LOG, T>(x, starts, step, y, rows, c);                                                                    \
    }                                                                                                                            \
    extern "C" __global__ void NAME##_bwd_warp_##SUFFIX(const T* y, StridedLayout ys, i64 ystep, const T* dy, StridedLayout gs,   \
                                                        i64 gstep, T* dx, i64 rows, i64 c) {                                     \
        softmax_bwd<WarpRows, LOG, T>(y, ys, ystep, dy, gs, gstep, dx, rows, c);                                                 \
    }                                                                                                                            \
    extern "C" __global__ void NAME##_bwd_block_##SUFFIX(const T* y, StridedLayout ys, i64 ystep, const T* dy, StridedLayout gs,  \
                                                         i64 gstep, T* dx, i64 rows, i64 c) {                                    \
        softmax_bwd<BlockRows, LOG, T>(y, ys, ystep, dy, gs, gstep, dx, rows, c);                                                \
    }                                                                                                                            \
    extern "C" __global__ void NAME##_bwd_ref_##SUFFIX(const T* y, StridedLayout ys, i64 ystep, const T* dy, StridedLayout gs,    \
                                                       i64 gstep, T* dx, i64 rows, i64 c) {                                      \
        softmax_bwd_ref<LOG, T>(y, ys, ystep, dy, gs, gstep, dx, rows, c);                                                       \
    }

SOFTMAX_KERNELS(softmax, false, f32, float)
SOFTMAX_KERNELS(softmax, false, f64, double)
SOFTMAX_KERNELS(log_softmax, true, f32, float)
SOFTMAX_KERNELS(log_softmax, true, f64, double)
