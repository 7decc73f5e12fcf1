// unary.cu: y = f(x) and dx = dy * f'(x, y) for every UnaryFn of src/backend/contract/unary.rs.
//
// Layout of this file
// -------------------
// Each function is a small struct (OpExp, OpGelu, ...) with two static device
// functions on the compute type C (float for f32/bf16/f16, double for f64):
//     fwd(x, p0, p1)     -> f(x)
//     bwd(x, y, p0, p1)  -> f'(x, y)   (the formula may use x, y = f(x), or both)
// p0/p1 are `UnaryFn::params()` (powf's exponent, affine's a and b, clamp's
// bounds), always passed as two doubles so every kernel has the same signature;
// functions without parameters ignore them. The formulas are the CPU scalar
// formulas of src/backend/contract/unary.rs, operation for operation, with constants
// rounded from f64 to C exactly as `c::<T>(v)` does there.
//
// Four kernels per function and dtype, instantiated by UNARY_KERNELS:
//   <name>_<dt>(const T* x, T* y, i64 n, double p0, double p1)
//       fast path: x contiguous (the pointer already offset to the view's
//       first element), one thread per element in a grid-stride loop. Reads
//       and writes are perfectly coalesced, so this runs at memory bandwidth;
//       it is what every activation in a network hits.
//   <name>_strided_<dt>(const T* x, StridedLayout xl, T* y, i64 n, double p0, double p1)
//       general path: x any view (permuted, narrowed, broadcast); element i of
//       the row-major output reads x[strided_offset(xl, i)]. Costs rank
//       integer divisions per element, which is why it is not the default.
//   <name>_backward_<dt>(const T* x, const T* y, const T* dy, T* dx, i64 n, double p0, double p1)
//       fast path: all three operands contiguous (pointers offset).
//   <name>_backward_strided_<dt>(const T* x, StridedLayout xl, const T* y, StridedLayout yl,
//                                const T* dy, StridedLayout dyl, T* dx, i64 n, double p0, double p1)
//       general path: any of the three strided.
// Outputs (y, dx) are always contiguous. dtypes: f32, f64, and bf16/f16 as
// storage formats (loaded to f32, computed in f32, rounded once on store), so
// mixed-precision activations stay on the GPU.
//
// The backward is fused (one pass reads x, y, dy and writes dx) instead of
// computing f'(x) into a temporary and multiplying: a third of the memory
// traffic. A derivative that ignores x or y (exp uses only y) leaves that load
// dead, and the compiler removes it.
//
// Why no vectorised (float4) variant: these kernels are pure streaming; with
// coalesced 4-byte accesses they already saturate HBM on sm_80/sm_90 to within
// a few percent, and the scalar loop has no alignment or tail cases to get
// wrong.
#include "common.cuh"

// ---- helpers that differ between float and double ----------------------------
__device__ __forceinline__ float t_erfc(float x) { return erfcf(x); }
__device__ __forceinline__ double t_erfc(double x) { return erfc(x); }
// Multiply and add without contraction into an fma: affine must round a*x
// before adding b, as the CPU does, so `scale`/`add_scalar` agree bit for bit.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// 1 / (1 + e^-x), branching so that exp never overflows (x < 0: e^x / (1 + e^x)).
template <typename C> __device__ __forceinline__ C sigmoid_of(C x) {
    if (x >= (C)0) return (C)1 / ((C)1 + t_exp(-x));
    C e = t_exp(x);
    return e / ((C)1 + e);
}

// 1 + erf(x/√2) = 2·Φ(x), the factor of both GELU formulas of the CPU. For
// x < 0 the same value is computed as erfc(-x/√2): 1 + erf(x/√2) cancels
// catastrophically there (at x = -4 it keeps 3 of f32's 7 digits), erfc does
// not. The CPU's f32 SIMD GELU makes the same choice; for x >= 0 this is the
// CPU scalar formula operation for operation.
template <typename C> __device__ __forceinline__ C one_plus_erf(C x) {
    const C r = (C)0.70710678118654752440;  // FRAC_1_SQRT_2
    if (x < (C)0) return t_erfc(-(x * r));
    return (C)1 + t_erf(x * r);
}

#define SQRT_2_OVER_PI 0.7978845608028654
#define GELU_TANH_K 0.044715

// ---- the functions ----------------------------------------------------------
// Each: fwd(x, p0, p1) = f(x); bwd(x, y, p0, p1) = f'(x) given y = f(x).
#define FWD template <typename C> static __device__ __forceinline__ C fwd(C x, double p0, double p1)
#define BWD template <typename C> static __device__ __forceinline__ C bwd(C x, C y, double p0, double p1)

struct OpNeg {
    FWD { return -x; }
    BWD { return -(C)1; }
};
// |x|; derivative sign(x), and 0 at 0 (and at NaN), as PyTorch.
struct OpAbs {
    FWD { return t_abs(x); }
    BWD { return x > (C)0 ? (C)1 : (x < (C)0 ? -(C)1 : (C)0); }
};
struct OpLog {
    FWD { return t_log(x); }
    BWD { return (C)1 / x; }
};
struct OpSqrt {
    FWD { return t_sqrt(x); }
    BWD { return (C)0.5 / y; }
};
// 1/√x as two IEEE operations (not rsqrtf, which is approximate).
struct OpRsqrt {
    FWD { return (C)1 / t_sqrt(x); }
    BWD { return (C)(-0.5) * y * y * y; }
};
struct OpSquare {
    FWD { return x * x; }
    BWD { return (C)2 * x; }
};
struct OpTanh {
    FWD { return t_tanh(x); }
    BWD { return (C)1 - y * y; }
};
struct OpSigmoid {
    FWD { return sigmoid_of(x); }
    BWD { return y * ((C)1 - y); }
};
// max(x, 0) written as `x <= 0 ? 0 : x` so NaN stays NaN; derivative 0 at 0.
struct OpRelu {
    FWD { return x <= (C)0 ? (C)0 : x; }
    BWD { return x > (C)0 ? (C)1 : (C)0; }
};
struct OpSilu {
    FWD { return x * sigmoid_of(x); }
    BWD {
        C s = sigmoid_of(x);
        return s * ((C)1 + x * ((C)1 - s));
    }
};
struct OpSin {
    FWD { return t_sin(x); }
    BWD { return t_cos(x); }
};
struct OpCos {
    FWD { return t_cos(x); }
    BWD { return -t_sin(x); }
};
// Exact GELU x·Φ(x); derivative Φ(x) + x·φ(x), φ(x) = e^(-x²/2) / √(2π).
struct OpGelu {
    FWD { return (C)0.5 * x * one_plus_erf(x); }
    BWD {
        C cdf = (C)0.5 * one_plus_erf(x);
        C pdf = t_exp((C)(-0.5) * x * x) * (C)0.3989422804014327;
        return cdf + x * pdf;
    }
};
// GPT-2's tanh GELU: x/2 · (1 + tanh(√(2/π)·(x + 0.044715x³))).
struct OpGeluTanh {
    FWD {
        C inner = (C)SQRT_2_OVER_PI * (x + (C)GELU_TANH_K * x * x * x);
        return (C)0.5 * x * ((C)1 + t_tanh(inner));
    }
    BWD {
        C inner = (C)SQRT_2_OVER_PI * (x + (C)GELU_TANH_K * x * x * x);
        C t = t_tanh(inner);
        C dinner = (C)SQRT_2_OVER_PI * ((C)1 + (C)(3.0 * GELU_TANH_K) * x * x);
        return (C)0.5 * ((C)1 + t) + (C)0.5 * x * ((C)1 - t * t) * dinner;
    }
};
struct OpExp {
    FWD { return t_exp(x); }
    BWD { return y; }
};
// x^p0; derivative p0 · x^(p0 - 1), the exponent p0 - 1 formed in double first.
struct OpPowf {
    FWD { return t_pow(x, (C)p0); }
    BWD { return (C)p0 * t_pow(x, (C)(p0 - 1.0)); }
};
// p0·x + p1, rounded after the product as on the CPU.
struct OpAffine {
    FWD { return add_rn(mul_rn((C)p0, x), (C)p1); }
    BWD { return (C)p0; }
};
// min(max(x, p0), p1) by comparisons, so NaN stays NaN; gradient 1 inside
// [p0, p1] (bounds included), 0 outside.
struct OpClamp {
    FWD {
        C lo = (C)p0, hi = (C)p1;
        return x < lo ? lo : (x > hi ? hi : x);
    }
    BWD { return (x >= (C)p0 && x <= (C)p1) ? (C)1 : (C)0; }
};

#undef FWD
#undef BWD

// ---- kernel bodies ------------------------------------------------------------
// x: [n] contiguous -> y: [n]
template <typename Op, typename T>
__device__ __forceinline__ void unary_contig(const T* x, T* y, i64 n, double p0, double p1) {
    GRID_STRIDE_LOOP(i, n) { y[i] = from_compute<T>(Op::fwd(to_compute(x[i]), p0, p1)); }
}
// x: any view of n elements -> y: [n] contiguous, row-major order of the view
template <typename Op, typename T>
__device__ __forceinline__ void unary_strided(const T* x, const StridedLayout& xl, T* y, i64 n, double p0, double p1) {
    GRID_STRIDE_LOOP(i, n) { y[i] = from_compute<T>(Op::fwd(to_compute(x[strided_offset(xl, i)]), p0, p1)); }
}
// x, y, dy: [n] contiguous -> dx: [n]; dx = dy * f'(x, y)
template <typename Op, typename T>
__device__ __forceinline__ void unary_backward_contig(const T* x, const T* y, const T* dy, T* dx, i64 n, double p0, double p1) {
    GRID_STRIDE_LOOP(i, n) {
        dx[i] = from_compute<T>(to_compute(dy[i]) * Op::bwd(to_compute(x[i]), to_compute(y[i]), p0, p1));
    }
}
// x, y, dy: views of one shape (n elements) -> dx: [n] contiguous
template <typename Op, typename T>
__device__ __forceinline__ void unary_backward_strided(const T* x, const StridedLayout& xl, const T* y, const StridedLayout& yl,
                                                       const T* dy, const StridedLayout& dyl, T* dx, i64 n, double p0, double p1) {
    GRID_STRIDE_LOOP(i, n) {
        auto xv = to_compute(x[strided_offset(xl, i)]);
        auto yv = to_compute(y[strided_offset(yl, i)]);
        auto gv = to_compute(dy[strided_offset(dyl, i)]);
        dx[i] = from_compute<T>(gv * Op::bwd(xv, yv, p0, p1));
    }
}

// ---- instantiation -------------------------------------------------------------
#define UNARY_KERNELS(NAME, OP, SUFFIX, T)                                                                           \
    extern "C" __global__ void NAME##_##SUFFIX(const T* x, T* y, i64 n, double p0, double p1) {                      \
        unary_contig<OP, T>(x, y, n, p0, p1);                                                                        \
    }                                                                                                                \
    extern "C" __global__ void NAME##_strided_##SUFFIX(const T* x, StridedLayout xl, T* y, i64 n, double p0,         \
                                                       double p1) {                                                  \
        unary_strided<OP, T>(x, xl, y, n, p0, p1);                                                                   \
    }                                                                                                                \
    extern "C" __global__ void NAME##_backward_##SUFFIX(const T* x, const T* y, const T* dy, T* dx, i64 n, double p0, \
                                                        double p1) {                                                 \
        unary_backward_contig<OP, T>(x, y, dy, dx, n, p0, p1);                                                       \
    }                                                                                                                \
    extern "C" __global__ void NAME##_backward_strided_##SUFFIX(const T* x, StridedLayout xl, const T* y,            \
                                                                StridedLayout yl, const T* dy, StridedLayout dyl,    \
                                                                T* dx, i64 n, double p0, double p1) {                \
        unary_backward_strided<OP, T>(x, xl, y, yl, dy, dyl, dx, n, p0, p1);                                         \
    }

#define UNARY_ALL_DTYPES(NAME, OP)         \
    UNARY_KERNELS(NAME, OP, f32, float)    \
    UNARY_KERNELS(NAME, OP, f64, double)   \
    UNARY_KERNELS(NAME, OP, bf16, bf16_t)  \
    UNARY_KERNELS(NAME, OP, f16, f16_t)

// The names are `UnaryFn::NAME`; src/backend/cuda/unary.rs keeps the same list.
UNARY_ALL_DTYPES(neg, OpNeg)
UNARY_ALL_DTYPES(abs, OpAbs)
UNARY_ALL_DTYPES(log, OpLog)
UNARY_ALL_DTYPES(sqrt, OpSqrt)
UNARY_ALL_DTYPES(rsqrt, OpRsqrt)
UNARY_ALL_DTYPES(square, OpSquare)
UNARY_ALL_DTYPES(tanh, OpTanh)
UNARY_ALL_DTYPES(sigmoid, OpSigmoid)
UNARY_ALL_DTYPES(relu, OpRelu)
UNARY_ALL_DTYPES(silu, OpSilu)
UNARY_ALL_DTYPES(sin, OpSin)
UNARY_ALL_DTYPES(cos, OpCos)
UNARY_ALL_DTYPES(gelu, OpGelu)
UNARY_ALL_DTYPES(gelu_tanh, OpGeluTanh)
UNARY_ALL_DTYPES(exp, OpExp)
UNARY_ALL_DTYPES(powf, OpPowf)
UNARY_ALL_DTYPES(affine, OpAffine)
UNARY_ALL_DTYPES(clamp, OpClamp)
