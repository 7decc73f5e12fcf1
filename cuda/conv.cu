// conv.cu: the data-movement half of conv2d (NCHW, groups 1, dilation 1);
// the arithmetic half is the matmul kernel (src/backend/cuda/nn/conv.rs
// drives both).
//
//   forward        cols = im2col(x)                    [g, K, L]
//                  y    = W [O, K] · cols              [g, O, L]   (batched matmul)
//                  y   += b                            conv_bias_add
//   grad input     dcols = Wᵀ [K, O] · dy              [g, K, L]   (batched matmul)
//                  dx    = col2im(dcols)               [g, C, H, W]
//   grad weight    colsT = im2col(x) as [K, g, L]
//                  dW   += dyᵀ-arranged [O, g·L] · colsTᵀ [g·L, K]  (one matmul per chunk)
//   grad bias      db[o] = Σ_{n, l} dy[n, o, l]        conv_bias_grad
//
// with K = C·kh·kw (rows of the column matrix, ordered (c, ki, kj)) and
// L = OH·OW (its columns, ordered (oy, ox)); g images per chunk of the batch.
//
// Every kernel takes the geometry as the same eleven i64 parameters, in the
// order of CONV_GEOM (the Rust side builds them in one place, `geom_args`).
#include "common.cuh"

#define CONV_GEOM i64 C, i64 H, i64 W, i64 KH, i64 KW, i64 SH, i64 SW, i64 PH, i64 PW, i64 OH, i64 OW

// ---- im2col -------------------------------------------------------------------
// x: [N, C, H, W] any strides (`xl`, rank 4); images n0 .. n0+g are unfolded.
// cols element (nn, kk, l), kk = (c, ki, kj), l = (oy, ox), lands at
// nn*col_sn + kk*col_sk + l: col_sn = K*L, col_sk = L gives [g, K, L] (forward),
// col_sn = L, col_sk = g*L gives [K, g, L] (the weight gradient's layout, where
// the g images' columns sit side by side so one GEMM sums over them).
// Its value is x[n0+nn, c, oy*SH + ki - PH, ox*SW + kj - PW], 0 in the padding.
// One thread per cols element (total = g*K*L), consecutive threads along l:
// the writes are coalesced, and so are the reads for stride 1.
template <typename T>
__device__ void im2col_impl(const T* x, StridedLayout xl, i64 n0, T* cols, i64 col_sn, i64 col_sk, i64 total, CONV_GEOM) {
    i64 L = OH * OW, K = C * KH * KW;
    GRID_STRIDE_LOOP(e, total) {
        i64 l = e % L;
        i64 r = e / L;
        i64 kk = r % K, nn = r / K;
        i64 kj = kk % KW, ki = (kk / KW) % KH, c = kk / (KW * KH);
        i64 ox = l % OW, oy = l / OW;
        i64 iy = oy * SH + ki - PH, ix = ox * SW + kj - PW;
        T v = (T)0;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W)
            v = x[xl.offset + (n0 + nn) * xl.strides[0] + c * xl.strides[1] + iy * xl.strides[2] + ix * xl.strides[3]];
        cols[nn * col_sn + kk * col_sk + l] = v;
    }
}

// ---- col2im -------------------------------------------------------------------
// dcols: [g, K, L] contiguous (the column-matrix gradient of images n0 .. n0+g);
// dx: [N, C, H, W] contiguous, images n0 .. n0+g written (not accumulated).
// The adjoint of im2col: dx[n, c, h, w] sums dcols over every (ki, kj, oy, ox)
// whose window tap oy*SH + ki - PH = h, ox*SW + kj - PW = w.
// Written as a gather: one thread per input pixel (total = g*C*H*W) loops over
// the (at most KH*KW) taps that read it, so every dx element has one writer:
// no atomics, and the sum order (ki, kj ascending) is fixed.
template <typename T>
__device__ void col2im_impl(const T* dcols, T* dx, i64 n0, i64 total, CONV_GEOM) {
    i64 L = OH * OW, K = C * KH * KW;
    GRID_STRIDE_LOOP(e, total) {
        i64 w = e % W;
        i64 h = (e / W) % H;
        i64 c = (e / (W * H)) % C;
        i64 nn = e / (W * H * C);
        const T* img = dcols + nn * K * L;
        T acc = (T)0;
        for (i64 ki = 0; ki < KH; ++ki) {
            i64 ty = h + PH - ki;  // = oy*SH for the output row that reads (h, w) through tap ki
            if (ty < 0 || ty % SH != 0) continue;
            i64 oy = ty / SH;
            if (oy >= OH) continue;
            for (i64 kj = 0; kj < KW; ++kj) {
                i64 tx = w + PW - kj;
                if (tx < 0 || tx % SW != 0) continue;
                i64 ox = tx / SW;
                if (ox >= OW) continue;
                acc += img[((c * KH + ki) * KW + kj) * L + oy * OW + ox];
            }
        }
        dx[n0 * C * H * W + e] = acc;
    }
}

// ---- bias ---------------------------------------------------------------------
// y: [N, O, L] contiguous (total elements); b: [O] with element o at b[o*b_stride]
// (pointer already at the view's offset). One thread per y element.
template <typename T>
__device__ void conv_bias_add_impl(T* y, const T* b, i64 b_stride, i64 O, i64 L, i64 total) {
    GRID_STRIDE_LOOP(e, total) { y[e] += b[((e / L) % O) * b_stride]; }
}

// dy: [N, O, OH, OW] any strides (`dl`, rank 4); db: [O] contiguous.
// db[o] = Σ_{n, oy, ox} dy[n, o, oy, ox]. One block per output channel (256
// threads, grid-stride over channels): each thread sums a fixed stride-256
// subset of the N*L values, then the block reduces the 256 partial sums with
// block_sum. The split does not depend on the grid, so the result is the same
// on every run (it differs from the CPU's lane sums only in rounding).
template <typename T>
__device__ void conv_bias_grad_impl(const T* dy, StridedLayout dl, T* db, i64 N, i64 O, i64 OH, i64 OW) {
    __shared__ T shared[32];
    i64 L = OH * OW;
    for (i64 o = blockIdx.x; o < O; o += gridDim.x) {
        T acc = (T)0;
        for (i64 j = threadIdx.x; j < N * L; j += blockDim.x) {
            i64 n = j / L, l = j % L;
            i64 oy = l / OW, ox = l % OW;
            acc += dy[dl.offset + n * dl.strides[0] + o * dl.strides[1] + oy * dl.strides[2] + ox * dl.strides[3]];
        }
        T total = block_sum(acc, shared);
        if (threadIdx.x == 0) db[o] = total;
    }
}

// acc[i] += part[i]: sums the weight gradients of successive batch chunks,
// always in chunk order. One thread per element.
template <typename T>
__device__ void conv_accumulate_impl(T* acc, const T* part, i64 n) {
    GRID_STRIDE_LOOP(i, n) { acc[i] += part[i]; }
}

#define CONV_KERNELS(SUFFIX, T)                                                                                        \
    extern "C" __global__ void im2col_##SUFFIX(const T* x, StridedLayout xl, i64 n0, T* cols, i64 col_sn, i64 col_sk, \
                                               i64 total, CONV_GEOM) {                                                \
        im2col_impl<T>(x, xl, n0, cols, col_sn, col_sk, total, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW);             \
    }                                                                                                                  \
    extern "C" __global__ void col2im_##SUFFIX(const T* dcols, T* dx, i64 n0, i64 total, CONV_GEOM) {                  \
        col2im_impl<T>(dcols, dx, n0, total, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW);                               \
    }                                                                                                                  \
    extern "C" __global__ void conv_bias_add_##SUFFIX(T* y, const T* b, i64 b_stride, i64 O, i64 L, i64 total) {       \
        conv_bias_add_impl<T>(y, b, b_stride, O, L, total);                                                           \
    }                                                                                                                  \
    extern "C" __global__ void conv_bias_grad_##SUFFIX(const T* dy, StridedLayout dl, T* db, i64 N, i64 O, i64 OH,     \
                                                       i64 OW) {                                                      \
        conv_bias_grad_impl<T>(dy, dl, db, N, O, OH, OW);                                                             \
    }                                                                                                                  \
    extern "C" __global__ void conv_accumulate_##SUFFIX(T* acc, const T* part, i64 n) {                                \
        conv_accumulate_impl<T>(acc, part, n);                                                                        \
    }
CONV_KERNELS(f32, float)
CONV_KERNELS(f64, double)
