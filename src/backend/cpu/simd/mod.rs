//! Explicit x86-64 SIMD kernels for the hot elementwise and row-wise f32 ops.
//!
//! The instruction set is chosen once at run time (`is_x86_feature_detected!`,
//! cached): AVX-512F (16 lanes, masked tails), else AVX2+FMA (8 lanes, tails
//! padded through a stack buffer), else the scalar bodies in [`scalar`],
//! which are also what non-x86 builds run. `TAMER_SIMD=scalar|avx2|avx512`
//! overrides the choice, so that tests can run every ISA the CPU has; a value
//! that cannot be honoured is an error, never a fallback (see [`select`]).
//! Kernels with SIMD paths call [`selected`] first to return that error.
//! Every ISA computes each element with the same formula wherever it sits in
//! the slice, so splitting work across threads never changes a result.
//!
//! Two kinds of kernel live here:
//! - elementwise functions (`exp`, `erf`, GELU, tanh, sigmoid, SiLU and their
//!   backward passes, [`VectorUnary`] naming them) are formulas written once
//!   in `math.rs` over the arithmetic of `lanes.rs` and instantiated for each
//!   ISA by its `map1`/`map2` (with the formula as a type parameter: a closure
//!   would stay a call in `#[target_feature]` code). The scalar, AVX2 and
//!   AVX-512 bodies compute the same operations and agree bit for bit;
//!   `math.rs` documents the methods and their accuracy, a few ulps, measured
//!   against f64 on a dense sweep in `accuracy.rs`. `where`'s selection
//!   ([`Simd::select_f32`]) uses the same lane types. The scalar body's fused
//!   multiply-adds are library calls on x86 CPUs without FMA (the price of
//!   computing what the vector bodies compute); elsewhere they are instructions;
//! - row kernels (sums, softmax, layer norm and their backward passes) are
//!   written per ISA in `avx512.rs` and `avx2.rs`, against the plain loops of
//!   `scalar.rs`, and reached through each ISA's table of function pointers.
//!
//! Callers pass equally long slices; if they do not, every function works on
//! the common prefix (it never reads or writes out of bounds, never panics).

use crate::{Error, Result};

#[cfg(test)]
mod accuracy;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod lanes;
mod math;
pub mod scalar;
pub mod select;
#[cfg(test)]
mod tests;

pub use crate::backend::contract::unary::VectorUnary;
pub use math::Reads;

/// `$body` with `$K` the [`math::UnaryFormula`] of the vector function `$f`:
/// the one place a [`VectorUnary`] meets its formula.
macro_rules! with_formula {
    ($f:expr, $K:ident => $body:expr) => {
        match $f {
            VectorUnary::Exp => {
                type $K = math::Exp;
                $body
            }
            VectorUnary::Gelu => {
                type $K = math::Gelu;
                $body
            }
            VectorUnary::GeluTanh => {
                type $K = math::GeluTanh;
                $body
            }
            VectorUnary::Tanh => {
                type $K = math::Tanh;
                $body
            }
            VectorUnary::Sigmoid => {
                type $K = math::Sigmoid;
                $body
            }
            VectorUnary::Silu => {
                type $K = math::Silu;
                $body
            }
        }
    };
}

/// One operand of [`Simd::select_f32`]: a slice, or one value for every element.
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    Slice(&'a [f32]),
    Value(f32),
}

impl<'a> Operand<'a> {
    /// How many elements it has (a value has as many as asked for).
    fn len(&self) -> usize {
        match self {
            Operand::Slice(s) => s.len(),
            Operand::Value(_) => usize::MAX,
        }
    }
    /// The first `n` elements.
    fn prefix(self, n: usize) -> Operand<'a> {
        match self {
            Operand::Slice(s) => Operand::Slice(&s[..n]),
            value => value,
        }
    }
    /// Element `k` (in range: `k` below [`Operand::len`]).
    fn at(&self, k: usize) -> f32 {
        match self {
            Operand::Slice(s) => s[k],
            Operand::Value(v) => *v,
        }
    }
}

/// Which value the backward kernel of `f` reads besides `dy`: the forward's
/// input `x` or its output `y` (the other one need not be computed or gathered).
pub fn backward_reads(f: VectorUnary) -> Reads {
    with_formula!(f, K => <K as math::UnaryFormula>::READS)
}

/// An elementwise function of one lane vector, for any lane type.
trait Elementwise1 {
    fn apply<V: lanes::Lanes>(a: V) -> V;
}

/// An elementwise function of two lane vectors, for any lane type.
trait Elementwise2 {
    fn apply<V: lanes::Lanes>(a: V, b: V) -> V;
}

impl<K: math::UnaryFormula> Elementwise1 for math::Forward<K> {
    #[inline(always)]
    fn apply<V: lanes::Lanes>(x: V) -> V {
        K::forward(x)
    }
}

impl<K: math::UnaryFormula> Elementwise2 for math::Backward<K> {
    #[inline(always)]
    fn apply<V: lanes::Lanes>(v: V, dy: V) -> V {
        K::backward(v, dy)
    }
}

impl Elementwise1 for math::Erf {
    #[inline(always)]
    fn apply<V: lanes::Lanes>(z: V) -> V {
        math::erf(z)
    }
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
    add: Map2,
    sub: Map2,
    mul: Map2,
    sum: Reduce,
    max: Reduce,
    dot: unsafe fn(&[f32], &[f32]) -> f32,
    exp_affine_sum: unsafe fn(&mut [f32], f32, f32) -> f32,
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
        self.unary_f32(VectorUnary::Exp, src, dst)
    }

    /// `dst = gelu(src)`, exact (erf) form.
    pub fn gelu_erf_f32(self, src: &[f32], dst: &mut [f32]) {
        self.unary_f32(VectorUnary::Gelu, src, dst)
    }

    /// `dst = gelu(src)`, tanh approximation.
    pub fn gelu_tanh_f32(self, src: &[f32], dst: &mut [f32]) {
        self.unary_f32(VectorUnary::GeluTanh, src, dst)
    }

    /// `dst = f(src)` for a function with a vector kernel.
    pub fn unary_f32(self, f: VectorUnary, src: &[f32], dst: &mut [f32]) {
        with_formula!(f, K => self.map1::<math::Forward<K>>(src, dst))
    }

    /// `dx = dy·f'(x)`, where `v` is `x` or `y = f(x)` as [`backward_reads`]
    /// says for `f`.
    pub fn unary_backward_f32(self, f: VectorUnary, v: &[f32], dy: &[f32], dx: &mut [f32]) {
        with_formula!(f, K => self.map2::<math::Backward<K>>(v, dy, dx))
    }

    /// `dst = erf(src)`.
    pub fn erf_f32(self, src: &[f32], dst: &mut [f32]) {
        self.map1::<math::Erf>(src, dst)
    }

    /// `out = cond ≠ 0 ? on_true : on_false` (a NaN condition counts as
    /// true), each operand a slice or one value for every element.
    pub fn select_f32(self, cond: Operand, on_true: Operand, on_false: Operand, out: &mut [f32]) {
        let n = common_len(&[cond.len(), on_true.len(), on_false.len(), out.len()]);
        let (cond, on_true, on_false, out) = (cond.prefix(n), on_true.prefix(n), on_false.prefix(n), &mut out[..n]);
        match self.k.isa {
            // SAFETY: a `Simd` exists only for an ISA the CPU supports (type invariant).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::select(cond, on_true, on_false, out) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::select(cond, on_true, on_false, out) },
            _ => scalar::select(cond, on_true, on_false, out),
        }
    }

    /// `dst[i] = E(src[i])` with this ISA's body.
    fn map1<E: Elementwise1>(self, src: &[f32], dst: &mut [f32]) {
        let n = common_len(&[src.len(), dst.len()]);
        let (src, dst) = (&src[..n], &mut dst[..n]);
        match self.k.isa {
            // SAFETY: a `Simd` exists only for an ISA the CPU supports (type invariant).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::map1::<E>(src, dst) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::map1::<E>(src, dst) },
            _ => scalar::map1::<E>(src, dst),
        }
    }

    /// `out[i] = E(a[i], b[i])` with this ISA's body.
    fn map2<E: Elementwise2>(self, a: &[f32], b: &[f32], out: &mut [f32]) {
        let n = common_len(&[a.len(), b.len(), out.len()]);
        let (a, b, out) = (&a[..n], &b[..n], &mut out[..n]);
        match self.k.isa {
            // SAFETY: a `Simd` exists only for an ISA the CPU supports (type invariant).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::map2::<E>(a, b, out) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::map2::<E>(a, b, out) },
            _ => scalar::map2::<E>(a, b, out),
        }
    }

    fn table_map2(self, f: Map2, a: &[f32], b: &[f32], out: &mut [f32]) {
        let n = common_len(&[a.len(), b.len(), out.len()]);
        // SAFETY: `f` comes from `self.k`, an ISA the CPU supports (type invariant).
        unsafe { f(&a[..n], &b[..n], &mut out[..n]) }
    }

    /// `out = a + b`
    pub fn add_f32(self, a: &[f32], b: &[f32], out: &mut [f32]) {
        self.table_map2(self.k.add, a, b, out)
    }

    /// `out = a - b`
    pub fn sub_f32(self, a: &[f32], b: &[f32], out: &mut [f32]) {
        self.table_map2(self.k.sub, a, b, out)
    }

    /// `out = a · b`
    pub fn mul_f32(self, a: &[f32], b: &[f32], out: &mut [f32]) {
        self.table_map2(self.k.mul, a, b, out)
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

    /// `x = e^(x·scale − shift)` in place (the product rounded, then the
    /// difference, as two separate steps would round them) and `Σ x` after:
    /// a score row's probabilities and their sum in one pass (the flash
    /// attention kernels). The exponential is [`Simd::exp_f32`]'s, bit for
    /// bit; the sum's order is the ISA's.
    pub fn exp_affine_sum_f32(self, x: &mut [f32], scale: f32, shift: f32) -> f32 {
        // SAFETY: `self.k` belongs to an ISA the CPU supports (type invariant).
        unsafe { (self.k.exp_affine_sum)(x, scale, shift) }
    }

    /// Numerically stable softmax of one row: `dst = exp(src - max) / Σ exp(src - max)`.
    pub fn softmax_row_f32(self, src: &[f32], dst: &mut [f32]) {
        let n = common_len(&[src.len(), dst.len()]);
        // SAFETY: `self.k` belongs to an ISA the CPU supports (type invariant).
        unsafe { (self.k.softmax_row)(&src[..n], &mut dst[..n]) }
    }

    /// Softmax backward of one row: `dx = y · (dy - Σ y·dy)`.
    pub fn softmax_backward_row_f32(self, y: &[f32], dy: &[f32], dx: &mut [f32]) {
        self.table_map2(self.k.softmax_backward_row, y, dy, dx)
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

/// `dst = eˢʳᶜ` (within 1.5 ulp; overflow → inf, underflow → 0).
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

/// `dst = src · Φ(src)`, the exact (erf) GELU, within 4 ulp (see `math.rs`).
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

/// `dst = f(src)` for a function with a vector kernel.
pub fn unary_f32(f: VectorUnary, src: &[f32], dst: &mut [f32]) {
    Simd::current().unary_f32(f, src, dst)
}

/// `dx = dy·f'(x)`, where `v` is `x` or `y = f(x)` as [`backward_reads`] says.
pub fn unary_backward_f32(f: VectorUnary, v: &[f32], dy: &[f32], dx: &mut [f32]) {
    Simd::current().unary_backward_f32(f, v, dy, dx)
}

/// `dst = erf(src)`.
///
/// ```
/// let mut y = [0.0f32; 3];
/// tamer::backend::cpu::simd::erf_f32(&[0.0, 0.5, -3.0], &mut y);
/// assert_eq!(y[0], 0.0);
/// assert!((y[1] - 0.520_499_9).abs() < 1e-7 && (y[2] + 0.999_977_9).abs() < 1e-7);
/// ```
pub fn erf_f32(src: &[f32], dst: &mut [f32]) {
    Simd::current().erf_f32(src, dst)
}

/// `out = cond ≠ 0 ? on_true : on_false`, each operand a slice or one value.
///
/// ```
/// use tamer::backend::cpu::simd::{select_f32, Operand};
/// let mut out = [0.0f32; 3];
/// select_f32(Operand::Slice(&[1.0, 0.0, f32::NAN]), Operand::Value(-1.0), Operand::Slice(&[5.0, 6.0, 7.0]), &mut out);
/// assert_eq!(out, [-1.0, 6.0, -1.0]);
/// ```
pub fn select_f32(cond: Operand, on_true: Operand, on_false: Operand, out: &mut [f32]) {
    Simd::current().select_f32(cond, on_true, on_false, out)
}
