// binary.cu: out = f(a, b) for every BinaryFn of src/backend/contract/binary.rs, and
// where_cond (out = c != 0 ? t : f).
//
// The operands arrive already broadcast to the output shape (stride 0 on a
// stretched axis; no copy was made), so every kernel reads element i of the
// row-major output from each operand and writes out[i]. The output is always
// contiguous.
//
// Layout of this file
// -------------------
// Each function is a struct with `static C f(C a, C b)` on the compute type C
// (float for f32/bf16/f16, double for f64), written as the CPU scalar formula.
// Three kernels per function and dtype, instantiated by BINARY_KERNELS; the
// Rust side (src/backend/cuda/binary.rs) picks the first that applies:
//
//   <op>_<dt>(const T* a, const T* b, T* out, i64 n)
//       fast path: both operands contiguous (pointers already offset), one
//       thread per element, grid-stride. Pure streaming at memory bandwidth:
//       the residual add, the gating multiply, any same-shape op.
//   <op>_bcast_<dt>(const T* full, const T* part, T* out, i64 n, i64 div, i64 mod, i64 part_is_lhs)
//       one operand contiguous (`full`), the other a contiguous block
//       repeated by broadcasting (`part`): part element j = (i / div) % mod.
//       This covers the bias add [rows, C] + [C] (div 1, mod C), a per-row
//       scale [R, C] * [R, 1] (div C, mod R), a per-channel bias
//       [N, C, H, W] + [C, 1, 1] (div H·W, mod C) and a scalar [1]
//       (mod 1: j = 0). One or two integer divisions per element instead of
//       one per dimension and operand, and `part` is tiny and stays in L1/L2.
//       part_is_lhs = 1 when the broadcast operand is `a` (f(part, full)).
//   <op>_strided_<dt>(const T* a, StridedLayout al, const T* b, StridedLayout bl, T* out, i64 n)
//       general path: any two views of the output shape. The coordinates of
//       i are decomposed once (al.dims == bl.dims) and dotted with both
//       operands' strides. The Rust side first merges adjacent dimensions that
//       are contiguous in both operands (and drops size-1 ones), so a
//       [B, T, C] + [1, T, C] broadcast runs with rank 2.
//
// where_cond has a contiguous fast path `where_<dt>(c, t, f, out, n)` and the
// general `where_strided_<dt>(c, cl, t, tl, f, fl, out, n)`. The condition has
// the values' dtype (a 0/1 mask from a comparison): any value other than 0
// selects `t`, so NaN selects `t` and -0.0 selects `f`, as on the CPU.
//
// Comparisons return 1.0 / 0.0 in the operands' dtype. maximum/minimum
// propagate NaN from either operand (as PyTorch, unlike fmaxf/fminf).
// dtypes: f32, f64, and bf16/f16 computed in f32 and rounded once on store.
#include "common.cuh"

// ---- the functions ----------------------------------------------------------
#define BIN template <typename C> static __device__ __forceinline__ C f(C a, C b)

struct OpAdd { BIN { return a + b; } };
struct OpSub { BIN { return a - b; } };
struct OpMul { BIN { return a * b; } };
struct OpDiv { BIN { return a / b; } };
struct OpPow { BIN { return t_pow(a, b); } };
// `a >= b || a is NaN ? a : b`: NaN in a gives a; NaN in b fails `a >= b`
// and gives b. Either way NaN.
struct OpMaximum { BIN { return (a >= b || a != a) ? a : b; } };
struct OpMinimum { BIN { return (a <= b || a != a) ? a : b; } };
struct OpEq { BIN { return a == b ? (C)1 : (C)0; } };
struct OpNe { BIN { return a != b ? (C)1 : (C)0; } };
struct OpLt { BIN { return a < b ? (C)1 : (C)0; } };
struct OpLe { BIN { return a <= b ? (C)1 : (C)0; } };
struct OpGt { BIN { return a > b ? (C)1 : (C)0; } };
struct OpGe { BIN { return a >= b ? (C)1 : (C)0; } };

#undef BIN

// ---- index helpers ------------------------------------------------------------
// Storage offsets of element i (row-major over the shared dims) in two / three
// views of one shape: one decomposition of i, one dot product per view.
__device__ __forceinline__ void strided_offset2(const StridedLayout& a, const StridedLayout& b, i64 i, i64& oa, i64& ob) {
    oa = a.offset;
    ob = b.offset;
    for (int d = (int)a.rank - 1; d >= 0; --d) {
        i64 size = a.dims[d];
        i64 q = i / size;
        i64 k = i - q * size;
        oa += k * a.strides[d];
        ob += k * b.strides[d];
        i = q;
    }
}
__device__ __forceinline__ void strided_offset3(const StridedLayout& a, const StridedLayout& b, const StridedLayout& c, i64 i,
                                                i64& oa, i64& ob, i64& oc) {
    oa = a.offset;
    ob = b.offset;
    oc = c.offset;
    for (int d = (int)a.rank - 1; d >= 0; --d) {
        i64 size = a.dims[d];
        i64 q = i / size;
        i64 k = i - q * size;
        oa += k * a.strides[d];
        ob += k * b.strides[d];
        oc += k * c.strides[d];
        i = q;
    }
}

// ---- kernel bodies ------------------------------------------------------------
// a, b: [n] contiguous -> out: [n]
template <typename Op, typename T>
__device__ __forceinline__ void binary_contig(const T* a, const T* b, T* out, i64 n) {
    GRID_STRIDE_LOOP(i, n) { out[i] = from_compute<T>(Op::f(to_compute(a[i]), to_compute(b[i]))); }
}
// full: [n] contiguous; part: a block of `mod` elements, element i of the
// output reading part[(i / div) % mod] -> out: [n]
template <typename Op, typename T>
__device__ __forceinline__ void binary_bcast(const T* full, const T* part, T* out, i64 n, i64 div, i64 mod, i64 part_is_lhs) {
    GRID_STRIDE_LOOP(i, n) {
        i64 j;
        if (mod == 1) {
            j = 0;
        } else {
            j = (div == 1) ? i : i / div;
            if (j >= mod) j %= mod;  // skipped when no axis in front of the block is broadcast
        }
        auto u = to_compute(full[i]);
        auto v = to_compute(part[j]);
        out[i] = from_compute<T>(part_is_lhs ? Op::f(v, u) : Op::f(u, v));
    }
}
// a, b: views of the output shape (al.dims == bl.dims) -> out: [n]
template <typename Op, typename T>
__device__ __forceinline__ void binary_strided(const T* a, const StridedLayout& al, const T* b, const StridedLayout& bl, T* out, i64 n) {
    GRID_STRIDE_LOOP(i, n) {
        i64 oa, ob;
        strided_offset2(al, bl, i, oa, ob);
        out[i] = from_compute<T>(Op::f(to_compute(a[oa]), to_compute(b[ob])));
    }
}

// ---- instantiation -------------------------------------------------------------
#define BINARY_KERNELS(NAME, OP, SUFFIX, T)                                                                          \
    extern "C" __global__ void NAME##_##SUFFIX(const T* a, const T* b, T* out, i64 n) {                              \
        binary_contig<OP, T>(a, b, out, n);                                                                          \
    }                                                                                                                \
    extern "C" __global__ void NAME##_bcast_##SUFFIX(const T* full, const T* part, T* out, i64 n, i64 div, i64 mod,  \
                                                     i64 part_is_lhs) {                                              \
        binary_bcast<OP, T>(full, part, out, n, div, mod, part_is_lhs);                                              \
    }                                                                                                                \
    extern "C" __global__ void NAME##_strided_##SUFFIX(const T* a, StridedLayout al, const T* b, StridedLayout bl,   \
                                                       T* out, i64 n) {                                              \
        binary_strided<OP, T>(a, al, b, bl, out, n);                                                                 \
    }

#define BINARY_ALL_DTYPES(NAME, OP)         \
    BINARY_KERNELS(NAME, OP, f32, float)    \
    BINARY_KERNELS(NAME, OP, f64, double)   \
    BINARY_KERNELS(NAME, OP, bf16, bf16_t)  \
    BINARY_KERNELS(NAME, OP, f16, f16_t)

// The names are `BinaryFn::NAME`; src/backend/cuda/binary.rs keeps the same list.
BINARY_ALL_DTYPES(add, OpAdd)
BINARY_ALL_DTYPES(sub, OpSub)
BINARY_ALL_DTYPES(mul, OpMul)
BINARY_ALL_DTYPES(div, OpDiv)
BINARY_ALL_DTYPES(pow, OpPow)
BINARY_ALL_DTYPES(maximum, OpMaximum)
BINARY_ALL_DTYPES(minimum, OpMinimum)
BINARY_ALL_DTYPES(eq, OpEq)
BINARY_ALL_DTYPES(ne, OpNe)
BINARY_ALL_DTYPES(lt, OpLt)
BINARY_ALL_DTYPES(le, OpLe)
BINARY_ALL_DTYPES(gt, OpGt)
BINARY_ALL_DTYPES(ge, OpGe)

// ---- where_cond ----------------------------------------------------------------
// c, t, f: [n] contiguous -> out: [n]. The selected element is copied, not
// converted, so a 16-bit value passes through bit for bit.
template <typename T>
__device__ __forceinline__ void where_contig(const T* c, const T* t, const T* f, T* out, i64 n) {
    GRID_STRIDE_LOOP(i, n) { out[i] = (to_compute(c[i]) != 0) ? t[i] : f[i]; }
}
// c, t, f: views of the output shape -> out: [n]
template <typename T>
__device__ __forceinline__ void where_strided(const T* c, const StridedLayout& cl, const T* t, const StridedLayout& tl, const T* f,
                                              const StridedLayout& fl, T* out, i64 n) {
    GRID_STRIDE_LOOP(i, n) {
        i64 oc, ot, of;
        strided_offset3(cl, tl, fl, i, oc, ot, of);
        out[i] = (to_compute(c[oc]) != 0) ? t[ot] : f[of];
    }
}

#define WHERE_KERNELS(SUFFIX, T)                                                                                     \
    extern "C" __global__ void where_##SUFFIX(const T* c, const T* t, const T* f, T* out, i64 n) {                   \
        where_contig<T>(c, t, f, out, n);                                                                            \
    }                                                                                                                \
    extern "C" __global__ void where_strided_##SUFFIX(const T* c, StridedLayout cl, const T* t, StridedLayout tl,    \
                                                      const T* f, StridedLayout fl, T* out, i64 n) {                 \
        where_strided<T>(c, cl, t, tl, f, fl, out, n);                                                               \
    }
WHERE_KERNELS(f32, float)
WHERE_KERNELS(f64, double)
WHERE_KERNELS(bf16, bf16_t)
WHERE_KERNELS(f16, f16_t)
