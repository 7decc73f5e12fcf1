// pool.cu: 2-D max and average pooling over [N, C, H, W] (PyTorch semantics,
// no ceil mode, no dilation), forward and backward.
//
// Shapes: x, dx [N, C, H, W]; y, indices, dy [N, C, OH, OW]. A plane is one
// (n, c) image; windows never cross planes. The window of output (oy, ox) is
// rows oy*SH - PH .. +KH and columns ox*SW - PW .. +KW, clipped to the input
// (the op layer guarantees padding <= kernel/2, so a clipped window is never
// empty).
//
// Every kernel gives each output element exactly one thread and reads its
// inputs in the CPU kernels' order, so the results are bit-identical to the
// CPU's (max pooling trivially; average pooling and both backward passes
// because the sums run in the same order). The backward passes are gathers —
// one thread per input pixel visits the windows that contain it — instead of
// scatters with atomics, so they are deterministic.
//
// Every kernel takes the geometry as the same nine i64 parameters, in the
// order of POOL_GEOM (built on the Rust side by `geom_args`).
#include "common.cuh"

#define POOL_GEOM i64 C, i64 H, i64 W, i64 KH, i64 KW, i64 SH, i64 SW, i64 PH, i64 PW

// The in-bounds part [lo, hi) of window `o` along one axis.
__device__ __forceinline__ void window(i64 o, i64 stride, i64 pad, i64 kernel, i64 len, i64* lo, i64* hi) {
    i64 start = o * stride - pad;
    i64 end = start + kernel;
    *lo = start > 0 ? start : 0;
    *hi = end < len ? end : len;
}

// The outputs [lo, hi) along one axis whose window contains input position i:
// o*stride - pad <= i < o*stride - pad + kernel.
__device__ __forceinline__ void windows_containing(i64 i, i64 stride, i64 pad, i64 kernel, i64 out, i64* lo, i64* hi) {
    i64 first = i + pad - kernel + 1;  // smallest o*stride allowed
    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    i64 last = (i + pad) / stride + 1;  // i + pad >= 0 always
    *hi = last < out ? last : out;
}

// Element (n, c, h, w) of a rank-4 strided view.
__device__ __forceinline__ i64 offset4(const StridedLayout& l, i64 n, i64 c, i64 h, i64 w) {
    return l.offset + n * l.strides[0] + c * l.strides[1] + h * l.strides[2] + w * l.strides[3];
}

// ---- max pooling --------------------------------------------------------------
// x: any strides (`xl`); y, idx: [N, C, OH, OW] contiguous, total = N*C*OH*OW.
// One thread per output: scans its clipped window in row-major order keeping
// the first strict maximum (padding is -inf, so it never wins; an all -inf
// window reports its first tap) and, separately, the last NaN: a NaN, if any,
// wins, as in PyTorch and the CPU kernel. idx is the in-plane index h*W + w.
template <typename T>
__device__ void max_pool2d_impl(const T* x, StridedLayout xl, T* y, i64* idx, i64 total, i64 OH, i64 OW, POOL_GEOM) {
    GRID_STRIDE_LOOP(e, total) {
        i64 ox = e % OW, oy = (e / OW) % OH, plane = e / (OW * OH);
        i64 n = plane / C, c = plane % C;
        i64 y0, y1, x0, x1;
        window(oy, SH, PH, KH, H, &y0, &y1);
        window(ox, SW, PW, KW, W, &x0, &x1);
        T best = t_neg_inf<T>();
        i64 best_i = y0 * W + x0;
        bool nan = false;
        T nan_v = best;
        i64 nan_i = 0;
        for (i64 iy = y0; iy < y1; ++iy) {
            for (i64 ix = x0; ix < x1; ++ix) {
                T v = x[offset4(xl, n, c, iy, ix)];
                if (v > best) {
                    best = v;
                    best_i = iy * W + ix;
                }
                if (v != v) {
                    nan = true;
                    nan_v = v;
                    nan_i = iy * W + ix;
                }
            }
        }
        y[e] = nan ? nan_v : best;
        idx[e] = nan ? nan_i : best_i;
    }
}

// dy, idx: [N, C, OH, OW] any strides (`dl`, `il`); dx: [N, C, H, W]
// contiguous, total = N*C*H*W. dx[p] = Σ dy[o] over the outputs o whose saved
// index is p. One thread per input pixel p: it visits the windows containing
// p (row-major, the order the CPU adds in) and takes those that chose p. A
// saved index outside the plane matches no pixel, so it is dropped rather than
// written out of bounds (indices come from max_pool2d's forward, always in range).
template <typename T>
__device__ void max_pool2d_backward_impl(const T* dy, StridedLayout dl, const i64* idx, StridedLayout il, T* dx, i64 total,
                                         i64 OH, i64 OW, POOL_GEOM) {
    GRID_STRIDE_LOOP(e, total) {
        i64 w = e % W, h = (e / W) % H, plane = e / (W * H);
        i64 n = plane / C, c = plane % C;
        i64 oy0, oy1, ox0, ox1;
        windows_containing(h, SH, PH, KH, OH, &oy0, &oy1);
        windows_containing(w, SW, PW, KW, OW, &ox0, &ox1);
        i64 me = h * W + w;
        T acc = (T)0;
        for (i64 oy = oy0; oy < oy1; ++oy)
            for (i64 ox = ox0; ox < ox1; ++ox)
                if (idx[offset4(il, n, c, oy, ox)] == me) acc += dy[offset4(dl, n, c, oy, ox)];
        dx[e] = acc;
    }
}

// ---- average pooling ------------------------------------------------------------
// The divisor of a clipped window: the full kernel with count_include_pad (a
// window never reaches past the padding without ceil mode), else its in-bounds size.
__device__ __forceinline__ i64 divisor(i64 y0, i64 y1, i64 x0, i64 x1, i64 KH, i64 KW, i64 include_pad) {
    return include_pad ? KH * KW : (y1 - y0) * (x1 - x0);
}

// x: any strides (`xl`); y: [N, C, OH, OW] contiguous, total elements.
// One thread per output: sums its clipped window row-major, divides once.
template <typename T>
__device__ void avg_pool2d_impl(const T* x, StridedLayout xl, T* y, i64 total, i64 OH, i64 OW, i64 include_pad, POOL_GEOM) {
    GRID_STRIDE_LOOP(e, total) {
        i64 ox = e % OW, oy = (e / OW) % OH, plane = e / (OW * OH);
        i64 n = plane / C, c = plane % C;
        i64 y0, y1, x0, x1;
        window(oy, SH, PH, KH, H, &y0, &y1);
        window(ox, SW, PW, KW, W, &x0, &x1);
        T acc = (T)0;
        for (i64 iy = y0; iy < y1; ++iy)
            for (i64 ix = x0; ix < x1; ++ix) acc += x[offset4(xl, n, c, iy, ix)];
        y[e] = acc / (T)divisor(y0, y1, x0, x1, KH, KW, include_pad);
    }
}

// dy: [N, C, OH, OW] any strides (`dl`); dx: [N, C, H, W] contiguous, total
// elements. dx[p] = Σ over windows containing p of dy[o] / divisor(o).
// One thread per input pixel, windows visited row-major (the CPU's order).
template <typename T>
__device__ void avg_pool2d_backward_impl(const T* dy, StridedLayout dl, T* dx, i64 total, i64 OH, i64 OW, i64 include_pad,
                                         POOL_GEOM) {
    GRID_STRIDE_LOOP(e, total) {
        i64 w = e % W, h = (e / W) % H, plane = e / (W * H);
        i64 n = plane / C, c = plane % C;
        i64 oy0, oy1, ox0, ox1;
        windows_containing(h, SH, PH, KH, OH, &oy0, &oy1);
        windows_containing(w, SW, PW, KW, OW, &ox0, &ox1);
        T acc = (T)0;
        for (i64 oy = oy0; oy < oy1; ++oy) {
            i64 y0, y1;
            window(oy, SH, PH, KH, H, &y0, &y1);
            for (i64 ox = ox0; ox < ox1; ++ox) {
                i64 x0, x1;
                window(ox, SW, PW, KW, W, &x0, &x1);
                acc += dy[offset4(dl, n, c, oy, ox)] / (T)divisor(y0, y1, x0, x1, KH, KW, include_pad);
            }
        }
        dx[e] = acc;
    }
}

#define POOL_KERNELS(SUFFIX, T)                                                                                        \
    extern "C" __global__ void max_pool2d_##SUFFIX(const T* x, StridedLayout xl, T* y, i64* idx, i64 total, i64 OH,     \
                                                   i64 OW, POOL_GEOM) {                                               \
        max_pool2d_impl<T>(x, xl, y, idx, total, OH, OW, C, H, W, KH, KW, SH, SW, PH, PW);                            \
    }                                                                                                                  \
    extern "C" __global__ void max_pool2d_backward_##SUFFIX(const T* dy, StridedLayout dl, const i64* idx,            \
                                                            StridedLayout il, T* dx, i64 total, i64 OH, i64 OW,       \
                                                            POOL_GEOM) {                                              \
        max_pool2d_backward_impl<T>(dy, dl, idx, il, dx, total, OH, OW, C, H, W, KH, KW, SH, SW, PH, PW);             \
    }                                                                                                                  \
    extern "C" __global__ void avg_pool2d_##SUFFIX(const T* x, StridedLayout xl, T* y, i64 total, i64 OH, i64 OW,       \
                                                   i64 include_pad, POOL_GEOM) {                                      \
        avg_pool2d_impl<T>(x, xl, y, total, OH, OW, include_pad, C, H, W, KH, KW, SH, SW, PH, PW);                    \
    }                                                                                                                  \
    extern "C" __global__ void avg_pool2d_backward_##SUFFIX(const T* dy, StridedLayout dl, T* dx, i64 total, i64 OH,   \
                                                            i64 OW, i64 include_pad, POOL_GEOM) {                     \
        avg_pool2d_backward_impl<T>(dy, dl, dx, total, OH, OW, include_pad, C, H, W, KH, KW, SH, SW, PH, PW);         \
    }
POOL_KERNELS(f32, float)
POOL_KERNELS(f64, double)
