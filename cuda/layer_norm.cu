// layer_norm.cu: layer normalisation over the last axis, forward and backward
// (src/backend/cuda/nn/layer_norm.rs launches them).
//
// Shapes: x and dy are `rows` rows of C elements in any strides (row r starts
// at view_offset(starts, r), steps by `step`); weight and bias are [C] with
// stride wstep/bstep, or null for "none" (1 and 0); mean, rstd: [rows]
// contiguous; y, dx: [rows, C] contiguous; dweight, dbias: [C].
//
// Forward, per row, the CPU's shifted two-pass statistics (simd::layer_norm_row_f32):
//   m0 = sum(x)/C;  d = x - m0;  corr = sum(d)/C;  var = max(sum(d^2)/C - corr^2, 0)
//   rstd = 1/sqrt(var + eps)  (population variance; eps inside the root)
//   y = ((x - m0) - corr) * rstd * w + b;   mean = m0 + corr
// `corr` repairs the rounding of m0, so var does not suffer from the
// cancellation of the one-pass E[x^2] - E[x]^2.
// Backward, per row, with g = dy * w and xhat = (x - mean) * rstd:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
// and over rows: dweight = sum_r dy * xhat, dbias = sum_r dy.
//
// Kernel versions:
//   layer_norm_{fwd,bwd}_warp_*   one warp per row (C <= 1024), 8 rows per block
//   layer_norm_{fwd,bwd}_block_*  one 512-thread block per row (longer rows)
//   layer_norm_{fwd,bwd}_ref_*    one thread per row: the plain reference
// The row is read three times (forward) or twice (backward); re-reads of a
// row just read by the same warp/block come from L1/L2.
// dweight/dbias are column sums over rows; a row-per-block kernel would need
// atomics to add its row into them (non-deterministic order), so they get
// their own column kernels instead:
//   layer_norm_dparams_*      block (32, 8): 32 adjacent columns (coalesced
//                             loads) x 8 rows of threads; blockIdx.y splits
//                             the rows into chunks, each writing
//                             partial[split, C] (the output itself when there
//                             is one split)
//   layer_norm_dparams_sum_*  one thread per column adds the splits in order
//   layer_norm_dparams_ref_*  one thread per column, all rows in order
// Fixed shapes, fixed order: deterministic.
#include "common.cuh"

// ---- forward -------------------------------------------------------------------------
template <typename G, typename T>
__device__ void layer_norm_fwd(const T* x, StridedLayout starts, i64 step, const T* w, i64 wstep, const T* b, i64 bstep, T* y,
                               T* mean, T* rstd, i64 rows, i64 c, double eps) {
    __shared__ T shared[32];
    const T n = (T)c, e = (T)eps;
    for (i64 r = G::first(); r < rows; r += G::stride()) {
        const T* xr = x + view_offset(starts, r);
        T sum = (T)0;
        for (i64 j = G::lane(); j < c; j += G::size()) sum += xr[j * step];
        const T m0 = G::template sum<T>(sum, shared) / n;
        T d = (T)0, q = (T)0;
        for (i64 j = G::lane(); j < c; j += G::size()) {
            T v = xr[j * step] - m0;
            d += v;
            q += v * v;
        }
        const T corr = G::template sum<T>(d, shared) / n;
        T var = G::template sum<T>(q, shared) / n - corr * corr;
        if (var < (T)0) var = (T)0;
        const T rs = (T)1 / t_sqrt(var + e);
        for (i64 j = G::lane(); j < c; j += G::size()) {
            T v = ((xr[j * step] - m0) - corr) * rs;
            if (w) v = v * w[j * wstep];
            if (b) v = v + b[j * bstep];
            y[r * c + j] = v;
        }
        if (G::lane() == 0) {
            mean[r] = m0 + corr;
            rstd[r] = rs;
        }
    }
}

template <typename T>
__device__ void layer_norm_fwd_ref(const T* x, StridedLayout starts, i64 step, const T* w, i64 wstep, const T* b, i64 bstep, T* y,
                                   T* mean, T* rstd, i64 rows, i64 c, double eps) {
    const T n = (T)c, e = (T)eps;
    GRID_STRIDE_LOOP(r, rows) {
        const T* xr = x + view_offset(starts, r);
        T sum = (T)0;
        for (i64 j = 0; j < c; ++j) sum += xr[j * step];
        const T m0 = sum / n;
        T d = (T)0, q = (T)0;
        for (i64 j = 0; j < c; ++j) {
            T v = xr[j * step] - m0;
            d += v;
            q += v * v;
        }
        const T corr = d / n;
        T var = q / n - corr * corr;
        if (var < (T)0) var = (T)0;
        const T rs = (T)1 / t_sqrt(var + e);
        for (i64 j = 0; j < c; ++j) {
            T v = ((xr[j * step] - m0) - corr) * rs;
            if (w) v = v * w[j * wstep];
            if (b) v = v + b[j * bstep];
            y[r * c + j] = v;
        }
        mean[r] = m0 + corr;
        rstd[r] = rs;
    }
}

// ---- backward: dx ----------------------------------------------------------------------
template <typename G, typename T>
__device__ void layer_norm_bwd(const T* x, StridedLayout xs, i64 xstep, const T* dy, StridedLayout gs, i64 gstep, const T* w, i64 wstep,
                               const T* mean, const T* rstd, T* dx, i64 rows, i64 c) {
    __shared__ T shared[32];
    const T n = (T)c;
    for (i64 r = G::first(); r < rows; r += G::stride()) {
        const T* xr = x + view_offset(xs, r);
        const T* gr = dy + view_offset(gs, r);
        const T m = mean[r], s = rstd[r];
        T sg = (T)0, sgx = (T)0;
        for (i64 j = G::lane(); j < c; j += G::size()) {
            T g = w ? gr[j * gstep] * w[j * wstep] : gr[j * gstep];
            sg += g;
            sgx += g * ((xr[j * xstep] - m) * s);
        }
        const T mean_g = G::template sum<T>(sg, shared) / n;
        const T mean_gx = G::template sum<T>(sgx, shared) / n;
        for (i64 j = G::lane(); j < c; j += G::size()) {
            T g = w ? gr[j * gstep] * w[j * wstep] : gr[j * gstep];
            T xhat = (xr[j * xstep] - m) * s;
            dx[r * c + j] = s * (g - mean_g - xhat * mean_gx);
        }
    }
}

template <typename T>
__device__ void layer_norm_bwd_ref(const T* x, StridedLayout xs, i64 xstep, const T* dy, StridedLayout gs, i64 gstep, const T* w,
                                   i64 wstep, const T* mean, const T* rstd, T* dx, i64 rows, i64 c) {
    const T n = (T)c;
    GRID_STRIDE_LOOP(r, rows) {
        const T* xr = x + view_offset(xs, r);
        const T* gr = dy + view_offset(gs, r);
        const T m = mean[r], s = rstd[r];
        T sg = (T)0, sgx = (T)0;
        for (i64 j = 0; j < c; ++j) {
            T g = w ? gr[j * gstep] * w[j * wstep] : gr[j * gstep];
            sg += g;
            sgx += g * ((xr[j * xstep] - m) * s);
        }
        const T mean_g = sg / n, mean_gx = sgx / n;
        for (i64 j = 0; j < c; ++j) {
            T g = w ? gr[j * gstep] * w[j * wstep] : gr[j * gstep];
            T xhat = (xr[j * xstep] - m) * s;
            dx[r * c + j] = s * (g - mean_g - xhat * mean_gx);
        }
    }
}

// ---- backward: dweight, dbias ----------------------------------------------------------
// block (DP_X = 32, DP_Y = 8); grid (column groups, splits), grid-stride over
// the groups. Split s covers rows [s*chunk, min(rows, (s+1)*chunk)); thread
// (tx, ty) adds rows ty, ty+8, ... of column 32*group+tx, then the 8 partial
// sums of a column are added in order of ty. dw/db: [splits, C], each may
// be null (not wanted).
#define DP_X 32
#define DP_Y 8
template <typename T>
__device__ void layer_norm_dparams(const T* x, StridedLayout xs, i64 xstep, const T* dy, StridedLayout gs, i64 gstep, const T* mean,
                                   const T* rstd, T* dw, T* db, i64 rows, i64 c, i64 chunk) {
    __shared__ T tw[DP_Y][DP_X + 1];
    __shared__ T tb[DP_Y][DP_X + 1];
    const i64 s = blockIdx.y;
    const i64 r0 = s * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (i64 group = blockIdx.x; group * DP_X < c; group += gridDim.x) {
        const i64 j = group * DP_X + tx;
        T aw = (T)0, ab = (T)0;
        if (j < c) {
            for (i64 r = r0 + ty; r < r1; r += DP_Y) {
                T g = dy[view_offset(gs, r) + j * gstep];
                T xv = x[view_offset(xs, r) + j * xstep];
                aw += g * ((xv - mean[r]) * rstd[r]);
                ab += g;
            }
        }
        tw[ty][tx] = aw;
        tb[ty][tx] = ab;
        __syncthreads();
        if (ty == 0 && j < c) {
            T vw = tw[0][tx], vb = tb[0][tx];
            for (int k = 1; k < DP_Y; ++k) {
                vw += tw[k][tx];
                vb += tb[k][tx];
            }
            if (dw) dw[s * c + j] = vw;
            if (db) db[s * c + j] = vb;
        }
        __syncthreads();  // the tiles are rewritten by the next group
    }
}

// partial: [splits, C] -> out: [C], one thread per column, splits added in order.
template <typename T>
__device__ void layer_norm_dparams_sum(const T* partial, T* out, i64 c, i64 splits) {
    GRID_STRIDE_LOOP(j, c) {
        T acc = (T)0;
        for (i64 s = 0; s < splits; ++s) acc += partial[s * c + j];
        out[j] = acc;
    }
}

// Reference: one thread per column, every row in order.
template <typename T>
__device__ void layer_norm_dparams_ref(const T* x, StridedLayout xs, i64 xstep, const T* dy, StridedLayout gs, i64 gstep, const T* mean,
                                       const T* rstd, T* dw, T* db, i64 rows, i64 c) {
    GRID_STRIDE_LOOP(j, c) {
        T aw = (T)0, ab = (T)0;
        for (i64 r = 0; r < rows; ++r) {
            T g = dy[view_offset(gs, r) + j * gstep];
            T xv = x[view_offset(xs, r) + j * xstep];
            aw += g * ((xv - mean[r]) * rstd[r]);
            ab += g;
        }
        if (dw) dw[j] = aw;
        if (db) db[j] = ab;
    }
}

// ---- entry points ----------------------------------------------------------------------
// layer_norm_fwd_<v>(x, starts, step, w, wstep, b, bstep, y, mean, rstd, rows, c, eps)
// layer_norm_bwd_<v>(x, xstarts, xstep, dy, gstarts, gstep, w, wstep, mean, rstd, dx, rows, c)
// layer_norm_dparams(x, xstarts, xstep, dy, gstarts, gstep, mean, rstd, dw, db, rows, c, chunk)
// layer_norm_dparams_sum(partial, out, c, splits)
// layer_norm_dparams_ref(x, xstarts, xstep, dy, gstarts, gstep, mean, rstd, dw, db, rows, c)
#define FWD_PARAMS(T) const T *x, StridedLayout starts, i64 step, const T *w, i64 wstep, const T *b, i64 bstep, T *y, T *mean, T *rstd, i64 rows, i64 c, double eps
#define FWD_ARGS x, starts, step, w, wstep, b, bstep, y, mean, rstd, rows, c, eps
#define BWD_PARAMS(T) const T *x, StridedLayout xs, i64 xstep, const T *dy, StridedLayout gs, i64 gstep, const T *w, i64 wstep, const T *mean, const T *rstd, T *dx, i64 rows, i64 c
#define BWD_ARGS x, xs, xstep, dy, gs, gstep, w, wstep, mean, rstd, dx, rows, c
#define LAYER_NORM_KERNELS(SUFFIX, T)                                                                                                       \
    extern "C" __global__ void layer_norm_fwd_warp_##SUFFIX(FWD_PARAMS(T)) { layer_norm_fwd<WarpRows, T>(FWD_ARGS); }                      \
    extern "C" __global__ void layer_norm_fwd_block_##SUFFIX(FWD_PARAMS(T)) { layer_norm_fwd<BlockRows, T>(FWD_ARGS); }                    \
    extern "C" __global__ void layer_norm_fwd_ref_##SUFFIX(FWD_PARAMS(T)) { layer_norm_fwd_ref<T>(FWD_ARGS); }                             \
    extern "C" __global__ void layer_norm_bwd_warp_##SUFFIX(BWD_PARAMS(T)) { layer_norm_bwd<WarpRows, T>(BWD_ARGS); }                      \
    extern "C" __global__ void layer_norm_bwd_block_##SUFFIX(BWD_PARAMS(T)) { layer_norm_bwd<BlockRows, T>(BWD_ARGS); }                    \
    extern "C" __global__ void layer_norm_bwd_ref_##SUFFIX(BWD_PARAMS(T)) { layer_norm_bwd_ref<T>(BWD_ARGS); }                             \
    extern "C" __global__ void layer_norm_dparams_##SUFFIX(const T* x, StridedLayout xs, i64 xstep, const T* dy, StridedLayout gs,          \
                                                           i64 gstep, const T* mean, const T* rstd, T* dw, T* db, i64 rows, i64 c,       \
                                                           i64 chunk) {                                                                  \
        layer_norm_dparams<T>(x, xs, xstep, dy, gs, gstep, mean, rstd, dw, db, rows, c, chunk);                                          \
    }                                                                                                                                    \
    extern "C" __global__ void layer_norm_dparams_sum_##SUFFIX(const T* partial, T* out, i64 c, i64 splits) {                            \
        layer_norm_dparams_sum<T>(partial, out, c, splits);                                                                              \
    }                                                                                                                                    \
    extern "C" __global__ void layer_norm_dparams_ref_##SUFFIX(const T* x, StridedLayout xs, i64 xstep, const T* dy, StridedLayout gs,      \
                                                               i64 gstep, const T* mean, const T* rstd, T* dw, T* db, i64 rows, i64 c) { \
        layer_norm_dparams_ref<T>(x, xs, xstep, dy, gs, gstep, mean, rstd, dw, db, rows, c);                                             \
    }

LAYER_NORM_KERNELS(f32, float)
LAYER_NORM_KERNELS(f64, double)
