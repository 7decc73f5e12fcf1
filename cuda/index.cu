// index.cu: selection and scatter-adds along one axis (index_select /
// embedding, index_add, gather, scatter_add and their backward passes).
//
// The Rust side (src/backend/cuda/index.rs) copies the i64 ids to the host
// first, checks every one against the axis size (the error names the bad id,
// as on the CPU), and hands the kernels a contiguous device copy of them: the
// kernels never see an out-of-range id and never need to report one.
//
// Selections only move elements, so they are instantiated per element width
// (b16/b32/b64: one kernel serves f16 and bf16, f32, f64 and i64). The
// scatter-adds compute, so they are instantiated for f32 and f64.
//
// Determinism: none of these kernels uses atomics. Each output element is
// owned by exactly one thread, which adds its contributions in increasing
// source position, the order the CPU kernels use, so CUDA results are
// bit-identical to the CPU's and to themselves from run to run.
#include "common.cuh"

// ---- index_select -------------------------------------------------------------
// x: [outer.., size, inner..] any strides; ids: [n] contiguous;
// out: [outer.., n, inner..] contiguous, numel = total.
// `xl` is x's layout with dims[axis] replaced by n (the output's dims) and x's
// own strides: decomposing the flat output index over xl.dims gives the output
// coordinates; the coordinate along `axis` is then mapped through ids.
// One thread per output element: it computes its source offset and copies.
template <typename T>
__device__ void index_select_impl(const T* x, StridedLayout xl, const i64* ids, i64 axis, T* out, i64 total) {
    GRID_STRIDE_LOOP(e, total) {
        i64 i = e, off = xl.offset;
        for (int d = (int)xl.rank - 1; d >= 0; --d) {
            i64 size = xl.dims[d];
            i64 q = i / size;
            i64 c = i - q * size;
            if (d == axis) c = ids[c];
            off += c * xl.strides[d];
            i = q;
        }
        out[e] = x[off];
    }
}

// The embedding fast path: rows of `inner` elements that are contiguous in x
// (the inner dims of x are row-major with unit innermost stride), inner >= 32.
// x row (o, ids[j]) starts at outer_off(o) + ids[j]*axis_stride, where
// outer_off is the offset of outer coordinate o in `ol` (x's layout restricted
// to the outer dims, carrying x's offset; rank 0 when axis = 0).
// out: [rows = outer*n, inner] contiguous.
// One block per output row (grid-stride over rows), its threads copy the row
// with consecutive addresses: coalesced reads and writes, and the row's source
// offset is computed once per row instead of once per element.
template <typename T>
__device__ void index_select_rows_impl(const T* x, StridedLayout ol, i64 axis_stride, const i64* ids, i64 n, i64 inner, T* out, i64 rows) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        i64 o = r / n, j = r - (r / n) * n;
        const T* src = x + strided_offset(ol, o) + ids[j] * axis_stride;
        T* dst = out + r * inner;
        for (i64 k = threadIdx.x; k < inner; k += blockDim.x) dst[k] = src[k];
    }
}

// ---- gather -------------------------------------------------------------------
// torch.gather: out[i] = x[i with i[axis] replaced by ids[i]].
// ids, out: the ids' shape, contiguous, numel = total; `xl` has the ids' dims
// and x's strides and offset (ids are no larger than x off `axis`).
// One thread per output element.
template <typename T>
__device__ void gather_impl(const T* x, StridedLayout xl, const i64* ids, i64 axis, T* out, i64 total) {
    GRID_STRIDE_LOOP(e, total) {
        i64 i = e, off = xl.offset;
        for (int d = (int)xl.rank - 1; d >= 0; --d) {
            i64 size = xl.dims[d];
            i64 q = i / size;
            i64 c = i - q * size;
            if (d == axis) c = ids[e];
            off += c * xl.strides[d];
            i = q;
        }
        out[e] = x[off];
    }
}

#define SELECT_KERNELS(SUFFIX, T)                                                                                      \
    extern "C" __global__ void index_select_##SUFFIX(const T* x, StridedLayout xl, const i64* ids, i64 axis, T* out,   \
                                                     i64 total) {                                                     \
        index_select_impl<T>(x, xl, ids, axis, out, total);                                                           \
    }                                                                                                                  \
    extern "C" __global__ void index_select_rows_##SUFFIX(const T* x, StridedLayout ol, i64 axis_stride, const i64* ids, \
                                                          i64 n, i64 inner, T* out, i64 rows) {                       \
        index_select_rows_impl<T>(x, ol, axis_stride, ids, n, inner, out, rows);                                      \
    }                                                                                                                  \
    extern "C" __global__ void gather_##SUFFIX(const T* x, StridedLayout xl, const i64* ids, i64 axis, T* out, i64 total) { \
        gather_impl<T>(x, xl, ids, axis, out, total);                                                                 \
    }
SELECT_KERNELS(b16, u16)
SELECT_KERNELS(b32, u32)
SELECT_KERNELS(b64, u64)

// ---- index_add / index_select_backward -----------------------------------------
// out: [outer, size, inner] contiguous, already holding x (index_add) or zeros
// (index_select_backward); src: [outer.., n, inner..] any strides (`sl`).
// Adds src[o, j, k] into out[o, ids[j], k] for every j.
//
// Repeated ids would make a one-thread-per-source-element kernel race, and
// atomics would make the sums depend on scheduling. Instead the host buckets
// the positions j by target (a counting sort of the ids, CSR form) in `csr`:
//   csr[0 .. U)             tgt:   the U distinct targets v, ascending
//   csr[U .. 2U+1)          seg:   bucket u holds order[seg[u] .. seg[u+1])
//   csr[2U+1 .. 2U+1+n)     order: the positions j, grouped by target, j ascending
// One thread per (o, u, k), total = outer*U*inner: it reads out[o, tgt[u], k]
// once, adds its bucket's sources in increasing j (the CPU's order, so the
// result is bit-identical to it) and writes the sum back. No two threads share
// an output element, and untouched rows (most of an embedding table) cost
// nothing. The threads of a warp take consecutive k, so reads of src rows and
// writes of out rows are coalesced when inner is large (the embedding case).
template <typename T>
__device__ void index_add_impl(T* out, const T* src, StridedLayout sl, const i64* csr, i64 U, i64 n, i64 size, i64 inner,
                               i64 total) {
    const i64* tgt = csr;
    const i64* seg = csr + U;
    const i64* order = csr + 2 * U + 1;
    GRID_STRIDE_LOOP(e, total) {
        i64 k = e % inner;
        i64 r = e / inner;
        i64 u = r % U, o = r / U;
        T* dst = out + (o * size + tgt[u]) * inner + k;
        T acc = *dst;
        for (i64 t = seg[u]; t < seg[u + 1]; ++t) {
            i64 j = order[t];
            acc += src[strided_offset(sl, (o * n + j) * inner + k)];
        }
        *dst = acc;
    }
}

// ---- scatter_add / gather_backward ---------------------------------------------
// out: x's shape, contiguous, already holding x (scatter_add) or zeros
// (gather_backward). ids: the ids' shape I, contiguous; src: shape I, any
// strides (`sl`). `ol` has dims I and out's contiguous strides (offset 0).
// Adds src[i] into out[i with i[axis] replaced by ids[i]].
//
// A column is one coordinate of I off `axis`; its elements along `axis` all
// land in the same column of out (same outer and inner coordinates), and two
// different columns never share an output element (ids are no larger than x
// off the axis, so distinct coordinates stay distinct). One thread per column,
// ncols = numel(I) / I[axis]: it walks its column in increasing position and
// adds into out, the CPU's order, so the result is bit-identical to it, with
// no atomics and no races.
template <typename T>
__device__ void scatter_add_impl(T* out, StridedLayout ol, const i64* ids, const T* src, StridedLayout sl, i64 axis,
                                 i64 ncols) {
    i64 len = ol.dims[axis];
    // Contiguous strides of I: ids are contiguous with I's dims.
    GRID_STRIDE_LOOP(col, ncols) {
        i64 i = col, out_base = 0, src_base = sl.offset, ids_base = 0, ids_stride = 1, ids_axis_stride = 1;
        for (int d = (int)ol.rank - 1; d >= 0; --d) {
            if (d == axis) {
                ids_axis_stride = ids_stride;
            } else {
                i64 size = ol.dims[d];
                i64 q = i / size;
                i64 c = i - q * size;
                out_base += c * ol.strides[d];
                src_base += c * sl.strides[d];
                ids_base += c * ids_stride;
                i = q;
            }
            ids_stride *= ol.dims[d];
        }
        for (i64 j = 0; j < len; ++j) {
            i64 v = ids[ids_base + j * ids_axis_stride];
            T* dst = out + out_base + v * ol.strides[axis];
            *dst = *dst + src[src_base + j * sl.strides[axis]];
        }
    }
}

#define ADD_KERNELS(SUFFIX, T)                                                                                          \
    extern "C" __global__ void index_add_##SUFFIX(T* out, const T* src, StridedLayout sl, const i64* csr, i64 U, i64 n,  \
                                                  i64 size, i64 inner, i64 total) {                                   \
        index_add_impl<T>(out, src, sl, csr, U, n, size, inner, total);                                               \
    }                                                                                                                  \
    extern "C" __global__ void scatter_add_##SUFFIX(T* out, StridedLayout ol, const i64* ids, const T* src,            \
                                                    StridedLayout sl, i64 axis, i64 ncols) {                          \
        scatter_add_impl<T>(out, ol, ids, src, sl, axis, ncols);                                                      \
    }
ADD_KERNELS(f32, float)
ADD_KERNELS(f64, double)
