//! Elementwise functions of one tensor: `y = f(x)`, `dx = dy · f'(x)`.
//!
//! Each function is a small type implementing [`UnaryFn`]: its value and its
//! derivative as scalar formulas. One generic kernel applies any of them, and
//! one generic backward node differentiates any of them, so adding a function
//! means adding one impl, not editing a `match`.

use crate::autograd::BackwardOp;
use crate::backend::Storage;
use crate::tensor::{Float, Layout, Tensor};
use crate::{Error, Result};

/// A scalar function with its derivative.
pub trait UnaryFn: Copy + Send + Sync + 'static {
    /// Name used in errors and (later) to pick a CUDA kernel.
    const NAME: &'static str;
    /// `f(x)`.
    fn apply<T: Float>(&self, x: T) -> T;
    /// `f'(x)`, given `x` and `y = f(x)` (whichever is cheaper to use).
    fn derivative<T: Float>(&self, x: T, y: T) -> T;
    /// Contiguous f32 fast path; SIMD functions override it.
    fn apply_f32_slice(&self, src: &[f32], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = self.apply(s);
        }
    }
    /// Scalar parameters (for powf, affine, clamp), passed to device kernels.
    fn params(&self) -> [f64; 2] {
        [0.0, 0.0]
    }
}

/// The kernels a backend provides for unary functions.
pub trait UnaryKernels: Sized {
    /// `f` applied to the elements `layout` selects; contiguous result.
    fn unary<U: UnaryFn>(&self, layout: &Layout, f: U) -> Result<Self>;
    /// `dy · f'(x, y)` in one pass; all three operands share a shape.
    fn unary_backward<U: UnaryFn>(&self, x_layout: &Layout, y: &Self, y_layout: &Layout, dy: &Self, dy_layout: &Layout, f: U) -> Result<Self>;
}

fn unary_storage<U: UnaryFn>(x: &Tensor, f: U) -> Result<Storage> {
    Ok(crate::dispatch!(U::NAME, [s = &*x.storage()] => s.unary(x.layout(), f)?))
}

impl Tensor {
    /// Apply any [`UnaryFn`] (the named methods below are shorthands).
    pub fn unary<U: UnaryFn>(&self, f: U) -> Result<Tensor> {
        let storage = unary_storage(self, f)?;
        Ok(Tensor::from_op(
            storage,
            Layout::contiguous(self.shape().clone()),
            vec![self.clone()],
            UnaryBackward(f),
        ))
    }
}

struct UnaryBackward<U>(U);

impl<U: UnaryFn> BackwardOp for UnaryBackward<U> {
    fn name(&self) -> &'static str {
        U::NAME
    }
    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let (xs, ys, gs) = (x.storage(), output.storage(), grad.storage());
        let dx = crate::dispatch!(U::NAME, [xs = &*xs, ys = &*ys, gs = &*gs] => xs.unary_backward(x.layout(), ys, output.layout(), gs, grad.layout(), self.0)?);
        Ok(vec![Some(Tensor::from_storage(dx, Layout::contiguous(x.shape().clone())))])
    }
}

/// Declare a parameterless unary function: name, method, `f(x)` and `f'(x, y)`.
macro_rules! unary_fn {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $method:ident, |$x:ident| $f:expr, |$dx:ident, $dy:ident| $df:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $ty;
        impl UnaryFn for $ty {
            const NAME: &'static str = $name;
            #[inline(always)]
            fn apply<T: Float>(&self, $x: T) -> T {
                $f
            }
            #[inline(always)]
            #[allow(unused_variables)]
            fn derivative<T: Float>(&self, $dx: T, $dy: T) -> T {
                $df
            }
        }
        impl Tensor {
            $(#[$doc])*
            pub fn $method(&self) -> Result<Tensor> {
                self.unary($ty)
            }
        }
    };
}

fn c<T: Float>(v: f64) -> T {
    T::from_f64(v)
}

unary_fn!(/// `-x`
    Neg, "neg", neg, |x| -x, |x, y| -T::ONE);
unary_fn!(/// `|x|`; the derivative at 0 is 0 (as PyTorch).
    Abs, "abs", abs, |x| x.abs(), |x, y| if x > T::ZERO { T::ONE } else if x < T::ZERO { -T::ONE } else { T::ZERO });
unary_fn!(/// Natural logarithm.
    Log, "log", log, |x| x.ln(), |x, y| T::ONE / x);
unary_fn!(/// `√x`
    Sqrt, "sqrt", sqrt, |x| x.sqrt(), |x, y| c::<T>(0.5) / y);
unary_fn!(/// `1/√x`
    Rsqrt, "rsqrt", rsqrt, |x| T::ONE / x.sqrt(), |x, y| c::<T>(-0.5) * y * y * y);
unary_fn!(/// `x²`
    Square, "square", square, |x| x * x, |x, y| c::<T>(2.0) * x);
unary_fn!(/// Hyperbolic tangent.
    Tanh, "tanh", tanh, |x| x.tanh(), |x, y| T::ONE - y * y);
unary_fn!(/// `1 / (1 + e⁻ˣ)`
    Sigmoid, "sigmoid", sigmoid, |x| sigmoid(x), |x, y| y * (T::ONE - y));
unary_fn!(/// `max(x, 0)`; the derivative at 0 is 0. NaN stays NaN (as PyTorch), so divergence is not hidden.
    Relu, "relu", relu, |x| if x <= T::ZERO { T::ZERO } else { x }, |x, y| if x > T::ZERO { T::ONE } else { T::ZERO });
unary_fn!(/// `x · σ(x)` (swish).
    Silu, "silu", silu, |x| x * sigmoid(x), |x, y| { let s = sigmoid(x); s * (T::ONE + x * (T::ONE - s)) });
unary_fn!(/// Sine.
    Sin, "sin", sin, |x| x.sin(), |x, y| x.cos());
unary_fn!(/// Cosine.
    Cos, "cos", cos, |x| x.cos(), |x, y| -x.sin());

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    // Branch so that exp never overflows: for x < 0 use eˣ / (1 + eˣ).
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

/// GELU, exact form: `x · Φ(x) = x/2 · (1 + erf(x/√2))`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gelu;
impl UnaryFn for Gelu {
    const NAME: &'static str = "gelu";
    #[inline(always)]
    fn apply<T: Float>(&self, x: T) -> T {
        c::<T>(0.5) * x * (T::ONE + (x * c::<T>(std::f64::consts::FRAC_1_SQRT_2)).erf())
    }
    #[inline(always)]
    fn derivative<T: Float>(&self, x: T, _y: T) -> T {
        // Φ(x) + x·φ(x)
        let cdf = c::<T>(0.5) * (T::ONE + (x * c::<T>(std::f64::consts::FRAC_1_SQRT_2)).erf());
        let pdf = (c::<T>(-0.5) * x * x).exp() * c::<T>(0.398_942_280_401_432_7);
        cdf + x * pdf
    }
    fn apply_f32_slice(&self, src: &[f32], dst: &mut [f32]) {
        crate::backend::simd::gelu_erf_f32(src, dst)
    }
}

/// GELU, tanh approximation (GPT-2's): `x/2 · (1 + tanh(√(2/π)·(x + 0.044715x³)))`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GeluTanh;
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
impl UnaryFn for GeluTanh {
    const NAME: &'static str = "gelu_tanh";
    #[inline(always)]
    fn apply<T: Float>(&self, x: T) -> T {
        let inner = c::<T>(SQRT_2_OVER_PI) * (x + c::<T>(0.044715) * x * x * x);
        c::<T>(0.5) * x * (T::ONE + inner.tanh())
    }
    #[inline(always)]
    fn derivative<T: Float>(&self, x: T, _y: T) -> T {
        let inner = c::<T>(SQRT_2_OVER_PI) * (x + c::<T>(0.044715) * x * x * x);
        let t = inner.tanh();
        let dinner = c::<T>(SQRT_2_OVER_PI) * (T::ONE + c::<T>(3.0 * 0.044715) * x * x);
        c::<T>(0.5) * (T::ONE + t) + c::<T>(0.5) * x * (T::ONE - t * t) * dinner
    }
    fn apply_f32_slice(&self, src: &[f32], dst: &mut [f32]) {
        crate::backend::simd::gelu_tanh_f32(src, dst)
    }
}

/// `eˣ`
#[derive(Clone, Copy, Debug, Default)]
pub struct Exp;
impl UnaryFn for Exp {
    const NAME: &'static str = "exp";
    #[inline(always)]
    fn apply<T: Float>(&self, x: T) -> T {
        x.exp()
    }
    #[inline(always)]
    fn derivative<T: Float>(&self, _x: T, y: T) -> T {
        y
    }
    fn apply_f32_slice(&self, src: &[f32], dst: &mut [f32]) {
        crate::backend::simd::exp_f32(src, dst)
    }
}

/// `xᵉ` for a scalar exponent.
#[derive(Clone, Copy, Debug)]
pub struct Powf(pub f64);
impl UnaryFn for Powf {
    const NAME: &'static str = "powf";
    fn apply<T: Float>(&self, x: T) -> T {
        x.powf(c(self.0))
    }
    fn derivative<T: Float>(&self, x: T, _y: T) -> T {
        c::<T>(self.0) * x.powf(c(self.0 - 1.0))
    }
    fn params(&self) -> [f64; 2] {
        [self.0, 0.0]
    }
}

/// `a·x + b`.
#[derive(Clone, Copy, Debug)]
pub struct Affine(pub f64, pub f64);
impl UnaryFn for Affine {
    const NAME: &'static str = "affine";
    fn apply<T: Float>(&self, x: T) -> T {
        c::<T>(self.0) * x + c::<T>(self.1)
    }
    fn derivative<T: Float>(&self, _x: T, _y: T) -> T {
        c(self.0)
    }
    fn params(&self) -> [f64; 2] {
        [self.0, self.1]
    }
}

/// `min(max(x, lo), hi)`; gradient 1 inside `[lo, hi]`, 0 outside (as PyTorch).
#[derive(Clone, Copy, Debug)]
pub struct Clamp(pub f64, pub f64);
impl UnaryFn for Clamp {
    const NAME: &'static str = "clamp";
    fn apply<T: Float>(&self, x: T) -> T {
        // Comparisons rather than f64::max/min, which would turn NaN into a bound.
        let (lo, hi) = (c::<T>(self.0), c::<T>(self.1));
        if x < lo {
            lo
        } else if x > hi {
            hi
        } else {
            x
        }
    }
    fn derivative<T: Float>(&self, x: T, _y: T) -> T {
        if x >= c(self.0) && x <= c(self.1) {
            T::ONE
        } else {
            T::ZERO
        }
    }
    fn params(&self) -> [f64; 2] {
        [self.0, self.1]
    }
}

impl Tensor {
    /// `eˣ`
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(Exp)
    }
    /// GELU with the exact erf form (PyTorch's default).
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary(Gelu)
    }
    /// GELU with the tanh approximation (`approximate="tanh"`).
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        self.unary(GeluTanh)
    }
    /// `xᵉ` for a scalar exponent.
    pub fn powf(&self, e: f64) -> Result<Tensor> {
        self.unary(Powf(e))
    }
    /// `a·x + b`.
    ///
    /// ```
    /// let x = tamer::Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
    /// assert_eq!(x.affine(3.0, 1.0).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 7.0]);
    /// ```
    pub fn affine(&self, a: f64, b: f64) -> Result<Tensor> {
        self.unary(Affine(a, b))
    }
    /// Multiply by a scalar.
    pub fn scale(&self, a: f64) -> Result<Tensor> {
        self.unary(Affine(a, 0.0))
    }
    /// Add a scalar.
    pub fn add_scalar(&self, b: f64) -> Result<Tensor> {
        self.unary(Affine(1.0, b))
    }
    /// Limit to `[lo, hi]`.
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        if lo > hi || lo.is_nan() || hi.is_nan() {
            return Err(Error::value("clamp", format!("bounds [{lo}, {hi}] are empty; expected lo <= hi")));
        }
        self.unary(Clamp(lo, hi))
    }
}
