// cross_entropy.cu: fused cross-entropy of logits against class indices,
// forward and backward (src/backend/cuda/nn/cross_entropy.rs launches them).
//
// Shapes: logits are `rows` rows of C classes in any strides (row r starts at
// view_offset(starts, r), steps by `step`); targets: i64, one per row, at
// view_offset(tl, r); row_grad: one per row at view_offset(gl, r) (stride 0
// when one value is shared); losses, row_max, row_log_sum: [rows]
// contiguous; dlogits: [rows, C] contiguous.
//
// With eps the label smoothing, keep = 1 - eps and spread = eps / C (both
// rounded to T on the host side of the formula, as the CPU does):
// forward, per row with target k (the CPU's formulas):
//   max = max_c x_c,  log_sum = ln sum_c exp(x_c - max)
//   loss = log_sum + keep * (max - x_k) + [eps > 0] spread * sum_c (max - x_c)
// which is -sum_c q_c log_softmax(x)_c written so that logits of +-1e4 lose
// no digits; backward: dx_c = g * (exp((x_c - max) - log_sum) - spread), and
// dx_k -= g * keep. A row whose target is the ignore index has loss, max and
// log_sum 0 and gradient 0.
//
// The host validates every target before the forward (an out-of-range one is
// an error naming it, see cross_entropy.rs); the kernels still treat a target
// outside 0..C like an ignored row, so no input can make them read outside
// the row.
//
// Kernel versions: *_warp_* one warp per row (C <= 1024), *_block_* one
// 512-thread block per row, *_ref_* one thread per row (the plain reference).
// The forward reads a row twice (max; then the exp sum and the smoothing
// gap in one pass); the backward is elementwise given the saved statistics,
// grouped by row so that a row's target, max, log_sum and gradient are read
// once per thread, not once per element.
#include "common.cuh"

__device__ __forceinline__ bool ce_skip(i64 k, i64 c, i64 has_ignore, i64 ignore) {
    return (has_ignore && k == ignore) || k < 0 || k >= c;
}

// ---- forward -------------------------------------------------------------------------
template <typename G, typename T>
__device__ void ce_fwd(const T* x, StridedLayout starts, i64 step, const i64* t, StridedLayout tl, T* loss, T* row_max, T* row_log_sum,
                       i64 rows, i64 c, i64 has_ignore, i64 ignore, double keep_, double spread_, i64 smooth) {
    __shared__ T shared[32];
    const T keep = (T)keep_, spread = (T)spread_;
    for (i64 r = G::first(); r < rows; r += G::stride()) {
        const i64 k = t[view_offset(tl, r)];
        // k is the same for the whole group, so the group skips together.
        if (ce_skip(k, c, has_ignore, ignore)) {
            if (G::lane() == 0) loss[r] = row_max[r] = row_log_sum[r] = (T)0;
            continue;
        }
        const T* xr = x + view_offset(starts, r);
        T m = t_neg_inf<T>();
        for (i64 j = G::lane(); j < c; j += G::size()) m = t_max(m, xr[j * step]);
        m = G::template max<T>(m, shared);
        T se = (T)0, gap = (T)0;
        for (i64 j = G::lane(); j < c; j += G::size()) {
            T v = xr[j * step];
            se += t_exp(v - m);
            if (smooth) gap += m - v;
        }
        se = G::template sum<T>(se, shared);
        if (smooth) gap = G::template sum<T>(gap, shared);
        if (G::lane() == 0) {
            T ls = t_log(se);
            T l = ls + keep * (m - xr[k * step]);
            if (smooth) l += spread * gap;
            loss[r] = l;
            row_max[r] = m;
            row_log_sum[r] = ls;
        }
    }
}

template <typename T>
__device__ void ce_fwd_ref(const T* x, StridedLayout starts, i64 step, const i64* t, StridedLayout tl, T* loss, T* row_max, T* row_log_sum,
                           i64 rows, i64 c, i64 has_ignore, i64 ignore, double keep_, double spread_, i64 smooth) {
    const T keep = (T)keep_, spread = (T)spread_;
    GRID_STRIDE_LOOP(r, rows) {
        const i64 k = t[view_offset(tl, r)];
        if (ce_skip(k, c, has_ignore, ignore)) {
            loss[r] = row_max[r] = row_log_sum[r] = (T)0;
            continue;
        }
        const T* xr = x + view_offset(starts, r);
        T m = t_neg_inf<T>();
        for (i64 j = 0; j < c; ++j) m = t_max(m, xr[j * step]);
        T se = (T)0, gap = (T)0;
        for (i64 j = 0; j < c; ++j) {
            se += t_exp(xr[j * step] - m);
            gap += m - xr[j * step];
        }
        T ls = t_log(se);
        T l = ls + keep * (m - xr[k * step]);
        if (smooth) l += spread * gap;
        loss[r] = l;
        row_max[r] = m;
        row_log_sum[r] = ls;
    }
}

// ---- backward ------------------------------------------------------------------------
template <typename G, typename T>
__device__ void ce_bwd(const T* x, StridedLayout starts, i64 step, const i64* t, StridedLayout tl, const T* row_max, const T* row_log_sum,
                       const T* row_grad, StridedLayout gl, T* dx, i64 rows, i64 c, i64 has_ignore, i64 ignore, double keep_, double spread_) {
    const T keep = (T)keep_, spread = (T)spread_;
    for (i64 r = G::first(); r < rows; r += G::stride()) {
        const i64 k = t[view_offset(tl, r)];
        T* dr = dx + r * c;
        if (ce_skip(k, c, has_ignore, ignore)) {
            for (i64 j = G::lane(); j < c; j += G::size()) dr[j] = (T)0;
            continue;
        }
        const T* xr = x + view_offset(starts, r);
        const T g = row_grad[view_offset(gl, r)], m = row_max[r], ls = row_log_sum[r];
        for (i64 j = G::lane(); j < c; j += G::size()) {
            T v = g * (t_exp((xr[j * step] - m) - ls) - spread);
            if (j == k) v = v - g * keep;
            dr[j] = v;
        }
    }
}

template <typename T>
__device__ void ce_bwd_ref(const T* x, StridedLayout starts, i64 step, const i64* t, StridedLayout tl, const T* row_max, const T* row_log_sum,
                           const T* row_grad, StridedLayout gl, T* dx, i64 rows, i64 c, i64 has_ignore, i64 ignore, double keep_,
                           double spread_) {
    const T keep = (T)keep_, spread = (T)spread_;
    GRID_STRIDE_LOOP(r, rows) {
        const i64 k = t[view_offset(tl, r)];
        const bool skip = ce_skip(k, c, has_ignore, ignore);
        const T* xr = x + view_offset(starts, r);
        const T g = skip ? (T)0 : row_grad[view_offset(gl, r)];
        for (i64 j = 0; j < c; ++j) {
            T v = (T)0;
            if (!skip) {
                v = g * (t_exp((xr[j * step] - row_max[r]) - row_log_sum[r]) - spread);
                if (j == k) v = v - g * keep;
            }
            dx[r * c + j] = v;
        }
    }
}

// ---- entry points ----------------------------------------------------------------------
// cross_entropy_fwd_<v>(x, starts, step, targets, tl, losses, row_max, row_log_sum, rows, c,
//                       has_ignore, ignore, keep, spread, smooth)
// cross_entropy_bwd_<v>(x, starts, step, targets, tl, row_max, row_log_sum, row_grad, gl, dx, rows, c,
//                       has_ignore, ignore, keep, spread)
#define CE_FWD_PARAMS(T) \
    const T *x, StridedLayout starts, i64 step, const i64 *t, StridedLayout tl, T *loss, T *row_max, T *row_log_sum, i64 rows, i64 c, i64 has_ignore, i64 ignore, double keep, double spread, i64 smooth
#define CE_FWD_ARGS x, starts, step, t, tl, loss, row_max, row_log_sum, rows, c, has_ignore, ignore, keep, spread, smooth
#define CE_BWD_PARAMS(T) \
    const T *x, StridedLayout starts, i64 step, const i64 *t, StridedLayout tl, const T *row_max, const T *row_log_sum, const T *row_grad, StridedLayout gl, T *dx, i64 rows, i64 c, i64 has_ignore, i64 ignore, double keep, double spread
#define CE_BWD_ARGS x, starts, step, t, tl, row_max, row_log_sum, row_grad, gl, dx, rows, c, has_ignore, ignore, keep, spread
#define CE_KERNELS(SUFFIX, T)                                                                                                  \
    extern "C" __global__ void cross_entropy_fwd_warp_##SUFFIX(CE_FWD_PARAMS(T)) { ce_fwd<WarpRows, T>(CE_FWD_ARGS); }        \
    extern "C" __global__ void cross_entropy_fwd_block_##SUFFIX(CE_FWD_PARAMS(T)) { ce_fwd<BlockRows, T>(CE_FWD_ARGS); }      \
    extern "C" __global__ void cross_entropy_fwd_ref_##SUFFIX(CE_FWD_PARAMS(T)) { ce_fwd_ref<T>(CE_FWD_ARGS); }               \
    extern "C" __global__ void cross_entropy_bwd_warp_##SUFFIX(CE_BWD_PARAMS(T)) { ce_bwd<WarpRows, T>(CE_BWD_ARGS); }        \
    extern "C" __global__ void cross_entropy_bwd_block_##SUFFIX(CE_BWD_PARAMS(T)) { ce_bwd<BlockRows, T>(CE_BWD_ARGS); }      \
    extern "C" __global__ void cross_entropy_bwd_ref_##SUFFIX(CE_BWD_PARAMS(T)) { ce_bwd_ref<T>(CE_BWD_ARGS); }

CE_KERNELS(f32, float)
CE_KERNELS(f64, double)
