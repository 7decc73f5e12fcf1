//! Explicit x86-64 SIMD kernels for the hot elementwise and row-wise f32 ops.
//!
//! The instruction set is chosen once at run time (`is_x86_feature_detected!`,
//! cached): AVX-512F (16 lanes, masked tails), else AVX2+FMA (8 lanes, tails
//! padded through a stack buffer), else the scalar references in [`scalar`],
//! which are also what non-x86 builds run. `TAMER_SIMD=scalar|avx2|avx512`
//! overrides the choice, so that tests can run every ISA the CPU has; a value
//! that cannot be honoured is an error, never a fallback (see [`select`]).
//! Kernels with SIMD paths call [`selected`] first to return that error.
//! Every ISA computes each element with the same formula wherever it sits in
//! the slice, so splitting work across threads never changes a result.
//!
//! Numerics of the vector paths (tested against f64 references in `tests.rs`):
//! - `exp`: `x = n·ln2 + r`, `|r| ≤ ln2/2`, `eʳ ≈ 1 + r + r²·P(r)` with the
//!   degree-5 Cephes minimax `P`, `2ⁿ` built in the exponent bits as
//!   `2^⌊n/2⌋ · 2^(n-⌊n/2⌋)` so that subnormal results round once. Relative error
//!   ≤ 2 ulp for normal results; overflow gives `inf`, underflow `0`, NaN stays NaN.
//! - `gelu` (erf form): `x·Φ(x)` with `erfc` from Abramowitz–Stegun 7.1.26
//!   (`t·poly(t)·e^{-z²}`, |error| ≤ 1.5e-7); for `x < 0` `Φ = erfc/2` is used
//!   directly so tiny negative outputs keep their relative accuracy.
//! - `gelu_tanh`: `x/2·(1 + tanh u) = x / (1 + e^{-2u})`, one exp and one divide.
//!
//! Callers pass equally long slices; if they do not, every function works on
//! the common prefix (it never reads or writes out of bounds, never panics).

use crate::{Error, Result};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod scalar;
pub mod select;
#[cfg(test)]
mod tests;

/// Constants shared by the vector kernels.
#[allow(dead_code)] // unused on non-x86 targets
mod consts {
    /// `exp` clamps its input to `[EXP_LO, EXP_HI]`: `e^88.8` overflows to inf and
    /// `e^-104` rounds to 0, so clamping changes no result and keeps `n` in [-150, 128].
    pub const EXP_HI: f32 = 88.8;
    pub const EXP_LO: f32 = -104.0;
    pub const LOG2E: f32 = std::f32::consts::LOG2_E;
    /// ln 2 split so that `n·LN2_HI` is exact for |n| ≤ 2⁹ (Cody–Waite).
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    /// Cephes `expf` minimax: `eʳ ≈ 1 + r + r²·(((((P0 r + P1) r + P2) r + P3) r + P4) r + P5)`.
    pub const EXP_P: [f32; 6] = [1.987_569_2e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];
    /// Abramowitz–Stegun 7.1.26: `erfc(z) ≈ t·(A1 + t·(A2 + t·(A3 + t·(A4 + t·A5))))·e^{-z²}`, `t = 1/(1 + P·z)`.
    pub const ERF_P: f32 = 0.327_591_1;
    pub const ERF_A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    pub const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    /// `2u = x·(GT_C1 + GT_C3·x²)` with `u = √(2/π)·(x + 0.044715·x³)`.
    pub const GT_C1: f32 = 2.0 * 0.797_884_6;
    pub const GT_C3: f32 = 2.0 * 0.797_884_6 * 0.044_715;
}

/// The instruction sets this module has kernels for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

type Map1 = unsafe fn(&[f32], &mut [f32]);
type Map2 = unsafe fn(&[f32], &[f32], &mut [f32]);
type Reduce = unsafe fn(&[f32]) -> f32;
type LayerNormRow = unsafe fn(&[f32], Option<&[f32]>, Option<&[f32]>, f32, &mut [f32]) -> (f32, f32);
type LayerNormBackwardRow = unsafe fn(&LnBackwardIn, &mut [f32], Option<&mut [f32]>, Option<&mut [f32]>);

/// One ISA's kernel table. The functions are `unsafe` only because they need
/// the CPU features of `isa`; they are memory-safe for any slice lengths.
struct Kernels {
    isa: Isa,
    exp: Map1,
    gelu_erf: Map1,
    gelu_tanh: Map1,
    add: Map2,
    sub: Map2,
    mul: Map2,
    sum: Reduce,
    max: Reduce,
    dot: unsafe fn(&[f32], &[f32]) -> f32,
    softmax_row: Map1,
    softmax_backward_row: Map2,
    layer_norm_row: LayerNormRow,
    layer_norm_backward_row: LayerNormBackwardRow,
}

/// Inputs of one layer-norm backward row, already cut to a common length.
pub(crate) struct LnBackwardIn<'a> {
    pub x: &'a [f32],
    pub dy: &'a [f32],
    pub gamma: Option<&'a [f32]>,
    pub mean: f32,
    pub rstd: f32,
}

/// A handle on one ISA's kernels. Invariant: a `Simd` only exists for an ISA
/// the running CPU supports, which is what makes its methods safe.
#[derive(Clone, Copy)]
pub struct Simd {
    k: &'static Kernels,
}

impl std::fmt::Debug for Simd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Simd({})", self.k.isa.name())
    }
}

fn supported(isa: Isa) -> bool {
    match isa {
        Isa::Scalar => true,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => is_x86_feature_detected!("avx512f"),
        #[cfg(not(target_arch = "x86_64"))]
        _ => false,
    }
}

fn table(isa: Isa) -> &'static Kernels {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &avx2::KERNELS,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &avx512::KERNELS,
        _ => &scalar::KERNELS,
    }
}

/// Shortest of the given lengths: the prefix every operand has.
fn common_len(lens: &[usize]) -> usize {
    lens.iter().copied().min().unwrap_or(0)
}

/// The kernels this process runs with (the widest ISA the CPU supports, or
/// the one `TAMER_SIMD` names), or an error attributed to `op` when
/// `TAMER_SIMD` asks for an ISA that cannot be had. Every CPU kernel with SIMD
/// paths calls this before its first row, so the error reaches the caller.
pub fn selected(op: &'static str) -> Result<Simd> {
    select::selection().clone().map_err(|message| Error::device(op, message))
}

impl Simd {
    /// The kernels this process runs with; see [`selected`].
    ///
    /// # Panics
    ///
    /// When `TAMER_SIMD` names an ISA this process cannot use. Kernel entry
    /// points return that as an error through [`selected`] before they get
    /// here, so the panic only fires for an entry point that forgot to: it
    /// marks a bug, and running a different ISA than the one asked for
    /// instead would hide exactly the test coverage the variable exists for.
    pub fn current() -> Simd {
        match select::selection() {
            Ok(simd) => *simd,
            Err(message) => panic!("{message}"),
        }
    }

    /// `isa`'s kernels, if this CPU supports it.
    pub fn for_isa(isa: Isa) -> Option<Simd> {
        supported(isa).then(|| Simd { k: table(isa) })
    }

    /// Every ISA this CPU supports, scalar first.
    pub fn available() -> Vec<Simd> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512].into_iter().filter_map(Simd::for_isa).collect()
    }

    pub fn isa(self) -> Isa {
        self.k.isa
    }

    /// `dst = eˢʳᶜ`
    pub fn exp_f32(self, src: &[f32], dst: &mut [f32]) {
        let n = common_len(&[src.len(), dst.len()]);
        // SAFETY: `self.k` belongs to an ISA the CPU supports (type invariant).
        unsafe { (self.k.exp)(&src[..n], &mut dst[..n]) }
    }

    /// `dst = gelu(src)`, exact (erf) form.
    pub fn gelu_erf_f32(self, src: &[f32], dst: &mut [f32]) {
        let n = common_len(&[src.len(), dst.len()]);
        // SAFETY: `self.k` belongs to an ISA the CPU supports (type invariant).
        unsafe { (self.k.gelu_erf)(&src[..n], &mut dst[..n]) }
    }

    /// `dst = gelu(src)`, tanh approximation.
    pub fn gelu_tanh_f32(self, src: &[f32], dst: &mut [f32]) {
        let n = common_len(&[src.len(), dst.len()]);
        // SAFETY: `self.k` belongs to an ISA the CPU supports (type invariant).
        unsafe { (self.k.gelu_tanh)(&src[..n], &mut dst[..n]) }
    }

    fn map2(self, f: Map2, a: &[f32], b: &[f32], out: &mut [f32]) {
        let n = common_len(&[a.len(), b.len(), out.len()]);
        // SAFETY: `f` comes from `self.k`, an ISA the CPU supports (type invariant).
        unsafe { f(&a[..n], &b[..n], &mut out[..n]) }
    }

    /// `out = a + b`
    pub fn add_f32(self, a: &[f32], b: &[f32], out: &mut [f32]) {
        self.map2(self.k.add, a, b, out)
    }

    /// `out = a - b`
    pub fn sub_f32(self, a: &[f32], b: &[f32], out: &mut [f32]) {
        self.map2(self.k.sub, a, b, out)
    }

    /// `out = a · b`
    pub fn mul_f32(self, a: &[f32], b: &[f32], out: &mut [f32]) {
        self.map2(self.k.mul, a, b, out)
    }

    /// `Σ x` (0 for an empty slice), summed in vector lanes.
    pub fn sum_f32(self, x: &[f32]) -> f32 {
        // SAFETY: `self.k` belongs to an ISA the CPU supports (type invariant).
        unsafe { (self.k.sum)(x) }
    }

    /// Largest element, ignoring NaNs (`-inf` for an empty or all-NaN slice), like `f32::max`.
    pub fn max_f32(self, x: &[f32]) -> f32 {
        // SAFETY: `self.k` belongs to an ISA the CPU supports (type invariant).
        unsafe { (self.k.max)(x) }
    }

    /// `Σ a·b`
    pub fn dot_f32(self, a: &[f32], b: &[f32]) -> f32 {
        let n = common_len(&[a.len(), b.len()]);
        // SAFETY: `self.k` belongs to an ISA the CPU supports (type invariant).
        unsafe { (self.k.dot)(&a[..n], &b[..n]) }
    }

    /// Numerically stable softmax of one row: `dst = exp(src - max) / Σ exp(src - max)`.
    pub fn softmax_row_f32(self, src: &[f32], dst: &mut [f32]) {
        let n = common_len(&[src.len(), dst.len()]);
        // SAFETY: `self.k` belongs to an ISA the CPU supports (type invariant).
        unsafe { (self.k.softmax_row)(&src[..n], &mut dst[..n]) }
    }

    /// Softmax backward of one row: `dx = y · (dy - Σ y·dy)`.
    pub fn softmax_backward_row_f32(self, y: &[f32], dy: &[f32], dx: &mut [f32]) {
        self.map2(self.k.softmax_backward_row, y, dy, dx)
    }

    /// Layer norm of one row; see [`layer_norm_row_f32`].
    pub fn layer_norm_row_f32(self, src: &[f32], gamma: Option<&[f32]>, beta: Option<&[f32]>, eps: f32, dst: &mut [f32]) -> (f32, f32) {
        let n = common_len(&[
            src.len(),
            dst.len(),
            gamma.map_or(usize::MAX, <[f32]>::len),
            beta.map_or(usize::MAX, <[f32]>::len),
        ]);
        // SAFETY: `self.k` belongs to an ISA the CPU supports (type invariant).
        unsafe { (self.k.layer_norm_row)(&src[..n], gamma.map(|g| &g[..n]), beta.map(|b| &b[..n]), eps, &mut dst[..n]) }
    }

    /// Layer-norm backward of one row; see [`layer_norm_backward_row_f32`].
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm_backward_row_f32(
        self,
        x: &[f32],
        dy: &[f32],
        gamma: Option<&[f32]>,
        mean: f32,
        rstd: f32,
        dx: &mut [f32],
        dgamma: Option<&mut [f32]>,
        dbeta: Option<&mut [f32]>,
    ) {
        let opt = |s: Option<usize>| s.unwrap_or(usize::MAX);
        let n = common_len(&[
            x.len(),
            dy.len(),
            dx.len(),
            opt(gamma.map(<[f32]>::len)),
            opt(dgamma.as_ref().map(|s| s.len())),
            opt(dbeta.as_ref().map(|s| s.len())),
        ]);
        let input = LnBackwardIn {
            x: &x[..n],
            dy: &dy[..n],
            gamma: gamma.map(|g| &g[..n]),
            mean,
            rstd,
        };
        // SAFETY: `self.k` belongs to an ISA the CPU supports (type invariant).
        unsafe { (self.k.layer_norm_backward_row)(&input, &mut dx[..n], dgamma.map(|s| &mut s[..n]), dbeta.map(|s| &mut s[..n])) }
    }
}

/// `dst = eˢʳᶜ` (relative error ≤ 2 ulp; overflow → inf, underflow → 0).
///
/// ```
/// let x = [0.0f32, 1.0, -1.0, 100.0, -200.0];
/// let mut y = [0.0f32; 5];
/// tamer::backend::cpu::simd::exp_f32(&x, &mut y);
/// assert_eq!(y[0], 1.0);
/// assert!((y[1] - std::f32::consts::E).abs() <= 2.0 * f32::EPSILON * y[1]);
/// assert_eq!((y[3], y[4]), (f32::INFINITY, 0.0));
/// ```
pub fn exp_f32(src: &[f32], dst: &mut [f32]) {
    Simd::current().exp_f32(src, dst)
}

/// `dst = src · Φ(src)` (exact GELU; absolute error ≤ ~1e-6 relative to the output scale).
pub fn gelu_erf_f32(src: &[f32], dst: &mut [f32]) {
    Simd::current().gelu_erf_f32(src, dst)
}

/// `dst = src/2 · (1 + tanh(√(2/π)·(src + 0.044715·src³)))`.
pub fn gelu_tanh_f32(src: &[f32], dst: &mut [f32]) {
    Simd::current().gelu_tanh_f32(src, dst)
}

/// `out = a + b`
pub fn add_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    Simd::current().add_f32(a, b, out)
}

/// `out = a - b`
pub fn sub_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    Simd::current().sub_f32(a, b, out)
}

/// `out = a · b`
pub fn mul_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    Simd::current().mul_f32(a, b, out)
}

/// `Σ x`, summed in vector lanes (so the rounding differs slightly from a serial sum).
pub fn sum_f32(x: &[f32]) -> f32 {
    Simd::current().sum_f32(x)
}

/// Largest element ignoring NaNs; `-inf` for an empty slice.
pub fn max_f32(x: &[f32]) -> f32 {
    Simd::current().max_f32(x)
}

/// `Σ a·b`
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    Simd::current().dot_f32(a, b)
}

/// Numerically stable softmax of one row: `dst = exp(src - max) / Σ exp(src - max)`.
/// A row of all `-inf` (or containing `+inf` or NaN) gives NaNs, as PyTorch does.
///
/// ```
/// let logits = [1.0f32, 2.0, f32::NEG_INFINITY, 3.0];
/// let mut p = [0.0f32; 4];
/// tamer::backend::cpu::simd::softmax_row_f32(&logits, &mut p);
/// assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// assert_eq!(p[2], 0.0);
/// ```
pub fn softmax_row_f32(src: &[f32], dst: &mut [f32]) {
    Simd::current().softmax_row_f32(src, dst)
}

/// Softmax backward of one row, given the forward output `y`: `dx = y · (dy - Σ y·dy)`.
pub fn softmax_backward_row_f32(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    Simd::current().softmax_backward_row_f32(y, dy, dx)
}

/// Layer norm of one row: `dst = (src - mean) * rstd * gamma + beta`; returns `(mean, rstd)`
/// for the backward pass. `gamma`/`beta` of `None` mean 1 and 0. The variance is the
/// biased one (`/ n`), computed in two passes.
///
/// ```
/// let x = [1.0f32, 2.0, 3.0, 4.0];
/// let mut y = [0.0f32; 4];
/// let (mean, rstd) = tamer::backend::cpu::simd::layer_norm_row_f32(&x, None, None, 0.0, &mut y);
/// assert_eq!(mean, 2.5);
/// assert!((rstd - 1.0 / 1.25f32.sqrt()).abs() < 1e-6);
/// assert!((y[0] + 1.341_640_8).abs() < 1e-5);
/// ```
pub fn layer_norm_row_f32(src: &[f32], gamma: Option<&[f32]>, beta: Option<&[f32]>, eps: f32, dst: &mut [f32]) -> (f32, f32) {
    Simd::current().layer_norm_row_f32(src, gamma, beta, eps, dst)
}

/// Layer-norm backward of one row, given the forward's `(mean, rstd)`:
/// with `x̂ = (x - mean)·rstd` and `g = dy·gamma`,
/// `dx = rstd · (g - mean(g) - x̂ · mean(g·x̂))` (overwritten), and
/// `dgamma += dy·x̂`, `dbeta += dy` (accumulated, so a caller sums rows into them).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward_row_f32(
    x: &[f32],
    dy: &[f32],
    gamma: Option<&[f32]>,
    mean: f32,
    rstd: f32,
    dx: &mut [f32],
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) {
    Simd::current().layer_norm_backward_row_f32(x, dy, gamma, mean, rstd, dx, dgamma, dbeta)
}
