// reduce.cu: sum / max / min over any set of axes of a strided view, and
// argmax along one axis.
//
// The host (src/backend/cuda/reduce.rs) splits the view into two layouts:
//   outl: the kept axes, in order, with their strides and the view's offset
//         (coalesced: adjacent axes that walk memory as one are merged),
//   redl: the reduced axes, with their strides and offset 0 (coalesced too).
// Element k of the run that output o reduces lives at
//   view_offset(outl, o) + view_offset(redl, k),
// and the output is contiguous in the row-major order of the kept axes, which
// is exactly the keepdim shape's order (its reduced axes have size 1).
//   x:   the input storage, any strides
//   out: [n_out] contiguous;  each output reduces `red` elements
//
// Kernel versions (the host picks one; see reduce.rs for the thresholds):
//   reduce_ref_*    one thread per output, a sequential loop: the plain
//                   reference (TAMER_CUDA_REFERENCE_KERNELS=1 selects it).
//   reduce_warp_*   one warp per output, for short runs (red <= 256).
//   reduce_block_*  one block per output, or per (output, split) when there
//                   are too few outputs to fill the GPU (sum_all, a column
//                   sum of a tall matrix): each split reduces one chunk of
//                   the run into partial[split, o], and reduce_partials_*
//                   combines the splits. Two passes, no atomics, so the
//                   result depends only on the shape, never on timing.
//   reduce_cols_*   when the kept axis is the contiguous one (column sums,
//                   the bias gradient): 32 adjacent outputs per block, so a
//                   warp's loads are coalesced, and 8 rows of threads that
//                   each walk a share of the run; also split like the block
//                   version when the columns alone cannot fill the GPU.
// Sums accumulate in the element type (f32 in f32), as the CPU does. Max and
// min propagate NaN, as the CPU (and PyTorch) do: common.cuh's t_max/t_min
// (fmax/fmin) would skip it, so the combine is written out here.
#include "common.cuh"

struct OpSum {
    template <typename T> __device__ static T identity() { return (T)0; }
    template <typename T> __device__ static T combine(T acc, T x) { return acc + x; }
};
struct OpMax {
    template <typename T> __device__ static T identity() { return t_neg_inf<T>(); }
    template <typename T> __device__ static T combine(T acc, T x) { return (x > acc || x != x) ? x : acc; }
};
struct OpMin {
    template <typename T> __device__ static T identity() { return t_pos_inf<T>(); }
    template <typename T> __device__ static T combine(T acc, T x) { return (x < acc || x != x) ? x : acc; }
};

// Butterfly over the warp: every lane ends with the combination of all 32.
template <typename Op, typename T> __device__ __forceinline__ T warp_reduce(T v) {
    for (int o = 16; o > 0; o >>= 1) v = Op::template combine<T>(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Each warp reduces its values, warp 0 reduces the warp results. The result
// is valid in thread 0 only. blockDim.x must be a multiple of 32.
template <typename Op, typename T> __device__ __forceinline__ T block_reduce(T v, T* shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_reduce<Op>(v);
    __syncthreads();  // `shared` may still be read by the previous output's reduction
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? shared[lane] : Op::template identity<T>();
        v = warp_reduce<Op>(v);
    }
    return v;
}

// ---- reference: one thread per output ------------------------------------------
template <typename Op, typename T>
__device__ void reduce_ref(const T* x, StridedLayout outl, StridedLayout redl, T* out, i64 n_out, i64 red) {
    GRID_STRIDE_LOOP(o, n_out) {
        i64 base = view_offset(outl, o);
        T acc = Op::template identity<T>();
        for (i64 k = 0; k < red; ++k) acc = Op::template combine<T>(acc, x[base + view_offset(redl, k)]);
        out[o] = acc;
    }
}

// ---- one warp per output ---------------------------------------------------------
// block: 256 threads = 8 outputs at a time; grid-stride over outputs.
template <typename Op, typename T>
__device__ void reduce_warp(const T* x, StridedLayout outl, StridedLayout redl, T* out, i64 n_out, i64 red) {
    const int lane = threadIdx.x & 31;
    const i64 warps = (i64)gridDim.x * (blockDim.x >> 5);
    for (i64 o = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); o < n_out; o += warps) {
        i64 base = view_offset(outl, o);
        T acc = Op::template identity<T>();
        for (i64 k = lane; k < red; k += 32) acc = Op::template combine<T>(acc, x[base + view_offset(redl, k)]);
        acc = warp_reduce<Op>(acc);
        if (lane == 0) out[o] = acc;
    }
}

// ---- one block per (output, split) -------------------------------------------------
// dst: [splits, n_out]; split s reduces run elements [s*chunk, min(red, (s+1)*chunk)).
// With splits = 1, dst is the output itself. block: 256 threads; grid-stride
// over the n_out*splits work items (item b is output b / splits, split b % splits).
template <typename Op, typename T>
__device__ void reduce_block(const T* x, StridedLayout outl, StridedLayout redl, T* dst, i64 n_out, i64 red, i64 splits, i64 chunk) {
    __shared__ T shared[32];
    for (i64 b = blockIdx.x; b < n_out * splits; b += gridDim.x) {
        i64 o = b / splits, s = b - o * splits;
        i64 k0 = s * chunk, k1 = k0 + chunk < red ? k0 + chunk : red;
        i64 base = view_offset(outl, o);
        T acc = Op::template identity<T>();
        for (i64 k = k0 + threadIdx.x; k < k1; k += blockDim.x) acc = Op::template combine<T>(acc, x[base + view_offset(redl, k)]);
        acc = block_reduce<Op>(acc, shared);
        if (threadIdx.x == 0) dst[s * n_out + o] = acc;
    }
}

// ---- second pass: combine the splits ---------------------------------------------
// partial: [splits, n_out] -> out: [n_out]. One warp per output (lane l takes
// splits l, l+32, ...), a fixed butterfly: deterministic.
template <typename Op, typename T>
__device__ void reduce_partials(const T* partial, T* out, i64 n_out, i64 splits) {
    const int lane = threadIdx.x & 31;
    const i64 warps = (i64)gridDim.x * (blockDim.x >> 5);
    for (i64 o = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); o < n_out; o += warps) {
        T acc = Op::template identity<T>();
        for (i64 s = lane; s < splits; s += 32) acc = Op::template combine<T>(acc, partial[s * n_out + o]);
        acc = warp_reduce<Op>(acc);
        if (lane == 0) out[o] = acc;
    }
}

// ---- columns: the kept axis is the contiguous one -----------------------------------
// block: (COLS_X = 32, COLS_Y = 8) threads; blockIdx.x walks groups of 32
// adjacent outputs (grid-stride), blockIdx.y is the split. Thread (tx, ty)
// folds run elements k0+ty, k0+ty+8, ... of output 32*group+tx, so the 32
// threads of a warp read 32 neighbouring elements of one row of the input;
// the 8 partial results of a column are then folded in a fixed order.
// dst: [splits, n_out] as in reduce_block.
#define COLS_X 32
#define COLS_Y 8
template <typename Op, typename T>
__device__ void reduce_cols(const T* x, StridedLayout outl, StridedLayout redl, T* dst, i64 n_out, i64 red, i64 chunk) {
    __shared__ T tile[COLS_Y][COLS_X + 1];
    const i64 s = blockIdx.y;
    const i64 k0 = s * chunk, k1 = k0 + chunk < red ? k0 + chunk : red;
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (i64 group = blockIdx.x; group * COLS_X < n_out; group += gridDim.x) {
        i64 o = group * COLS_X + tx;
        T acc = Op::template identity<T>();
        if (o < n_out) {
            i64 base = view_offset(outl, o);
            for (i64 k = k0 + ty; k < k1; k += COLS_Y) acc = Op::template combine<T>(acc, x[base + view_offset(redl, k)]);
        }
        tile[ty][tx] = acc;
        __syncthreads();
        if (ty == 0 && o < n_out) {
            T v = tile[0][tx];
            for (int r = 1; r < COLS_Y; ++r) v = Op::template combine<T>(v, tile[r][tx]);
            dst[s * n_out + o] = v;
        }
        __syncthreads();  // the tile is rewritten by the next group
    }
}

#define REDUCE_KERNELS(NAME, OP, SUFFIX, T)                                                                                          \
    extern "C" __global__ void reduce_ref_##NAME##_##SUFFIX(const T* x, StridedLayout outl, StridedLayout redl, T* out, i64 n_out,   \
                                                            i64 red) {                                                             \
        reduce_ref<OP, T>(x, outl, redl, out, n_out, red);                                                                          \
    }                                                                                                                              \
    extern "C" __global__ void reduce_warp_##NAME##_##SUFFIX(const T* x, StridedLayout outl, StridedLayout redl, T* out, i64 n_out,  \
                                                             i64 red) {                                                            \
        reduce_warp<OP, T>(x, outl, redl, out, n_out, red);                                                                         \
    }                                                                                                                              \
    extern "C" __global__ void reduce_block_##NAME##_##SUFFIX(const T* x, StridedLayout outl, StridedLayout redl, T* dst, i64 n_out, \
                                                              i64 red, i64 splits, i64 chunk) {                                    \
        reduce_block<OP, T>(x, outl, redl, dst, n_out, red, splits, chunk);                                                         \
    }                                                                                                                              \
    extern "C" __global__ void reduce_cols_##NAME##_##SUFFIX(const T* x, StridedLayout outl, StridedLayout redl, T* dst, i64 n_out,  \
                                                             i64 red, i64 chunk) {                                                 \
        reduce_cols<OP, T>(x, outl, redl, dst, n_out, red, chunk);                                                                  \
    }                                                                                                                              \
    extern "C" __global__ void reduce_partials_##NAME##_##SUFFIX(const T* partial, T* out, i64 n_out, i64 splits) {                  \
        reduce_partials<OP, T>(partial, out, n_out, splits);                                                                        \
    }

REDUCE_KERNELS(sum, OpSum, f32, float)
REDUCE_KERNELS(sum, OpSum, f64, double)
REDUCE_KERNELS(max, OpMax, f32, float)
REDUCE_KERNELS(max, OpMax, f64, double)
REDUCE_KERNELS(min, OpMin, f32, float)
REDUCE_KERNELS(min, OpMin, f64, double)

// ---- argmax ---------------------------------------------------------------------------
// The same outl/redl split with one reduced axis; out: i64 [n_out].
// The CPU's rule: the first NaN if the run has one, else the first maximum.
// As an order on (value, index) pairs: NaN beats numbers, a larger value
// beats a smaller one, and at equal values (or two NaNs) the smaller index
// wins. That order is total, so a tree of pairwise choices finds the same
// winner as the CPU's left-to-right scan. An idle thread holds the sentinel
// (-inf, I64_MAX), which every real element beats.
#define ARG_NONE 0x7fffffffffffffffLL
template <typename T> __device__ __forceinline__ bool arg_better(T va, i64 ia, T vb, i64 ib) {
    bool na = va != va, nb = vb != vb;
    if (na != nb) return na;
    if (!na && va != vb) return va > vb;
    return ia < ib;
}
template <typename T> __device__ __forceinline__ void warp_argmax(T& v, i64& i) {
    for (int o = 16; o > 0; o >>= 1) {
        T ov = __shfl_xor_sync(0xffffffffu, v, o);
        i64 oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (arg_better(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
}

// Reference: one thread per output, the CPU's scan.
template <typename T>
__device__ void argmax_ref(const T* x, StridedLayout outl, StridedLayout redl, i64* out, i64 n_out, i64 red) {
    GRID_STRIDE_LOOP(o, n_out) {
        i64 base = view_offset(outl, o);
        i64 best = 0;
        T bv = x[base + view_offset(redl, 0)];
        for (i64 k = 1; k < red; ++k) {
            T v = x[base + view_offset(redl, k)];
            if (v > bv || (v != v && bv == bv)) {
                best = k;
                bv = v;
            }
        }
        out[o] = best;
    }
}

// One warp per output (runs up to 1024 elements); block: 256 threads.
template <typename T>
__device__ void argmax_warp(const T* x, StridedLayout outl, StridedLayout redl, i64* out, i64 n_out, i64 red) {
    const int lane = threadIdx.x & 31;
    const i64 warps = (i64)gridDim.x * (blockDim.x >> 5);
    for (i64 o = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); o < n_out; o += warps) {
        i64 base = view_offset(outl, o);
        T bv = t_neg_inf<T>();
        i64 bi = ARG_NONE;
        for (i64 k = lane; k < red; k += 32) {
            T v = x[base + view_offset(redl, k)];
            if (arg_better(v, k, bv, bi)) {
                bv = v;
                bi = k;
            }
        }
        warp_argmax(bv, bi);
        if (lane == 0) out[o] = bi;
    }
}

// One block (256 threads) per output, for longer runs: each warp reduces its
// threads' candidates, warp 0 the warps' winners.
template <typename T>
__device__ void argmax_block(const T* x, StridedLayout outl, StridedLayout redl, i64* out, i64 n_out, i64 red) {
    __shared__ T sv[32];
    __shared__ i64 si[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (i64 o = blockIdx.x; o < n_out; o += gridDim.x) {
        i64 base = view_offset(outl, o);
        T bv = t_neg_inf<T>();
        i64 bi = ARG_NONE;
        for (i64 k = threadIdx.x; k < red; k += blockDim.x) {
            T v = x[base + view_offset(redl, k)];
            if (arg_better(v, k, bv, bi)) {
                bv = v;
                bi = k;
            }
        }
        warp_argmax(bv, bi);
        __syncthreads();  // the previous output's winners may still be read
        if (lane == 0) {
            sv[warp] = bv;
            si[warp] = bi;
        }
        __syncthreads();
        if (warp == 0) {
            bv = lane < nwarps ? sv[lane] : t_neg_inf<T>();
            bi = lane < nwarps ? si[lane] : ARG_NONE;
            warp_argmax(bv, bi);
            if (lane == 0) out[o] = bi;
        }
    }
}

#define ARGMAX_KERNELS(SUFFIX, T)                                                                                                 \
    extern "C" __global__ void argmax_ref_##SUFFIX(const T* x, StridedLayout outl, StridedLayout redl, i64* out, i64 n_out, i64 red) {   \
        argmax_ref<T>(x, outl, redl, out, n_out, red);                                                                            \
    }                                                                                                                             \
    extern "C" __global__ void argmax_warp_##SUFFIX(const T* x, StridedLayout outl, StridedLayout redl, i64* out, i64 n_out, i64 red) {  \
        argmax_warp<T>(x, outl, redl, out, n_out, red);                                                                           \
    }                                                                                                                             \
    extern "C" __global__ void argmax_block_##SUFFIX(const T* x, StridedLayout outl, StridedLayout redl, i64* out, i64 n_out, i64 red) { \
        argmax_block<T>(x, outl, redl, out, n_out, red);                                                                          \
    }
ARGMAX_KERNELS(f32, float)
ARGMAX_KERNELS(f64, double)
