//! The unary family's contract: [`UnaryFn`], the scalar functions of one
//! argument (each a small type giving `f(x)` and `f'(x, y)`), and
//! [`UnaryKernels`], what a backend runs them with.
//!
//! The functions live here, next to the kernel trait, because they are what
//! the kernels are written for: the CPU applies their formulas (or, for the
//! functions that name one in [`UnaryFn::VECTORIZED`], its own vector
//! kernel), and the CUDA backend has one kernel per function `NAME`.

use super::{check_dtype, COMPUTE_FLOATS};
use crate::types::{DType, Float, Layout};
use crate::{Error, Result};

/// The functions some backends have a hand-vectorised f32 kernel for. A
/// [`UnaryFn`] names the one it computes in [`UnaryFn::VECTORIZED`]; it never
/// calls a backend itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VectorUnary {
    /// `eˣ`
    Exp,
    /// GELU, exact erf form.
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// Hyperbolic tangent.
    Tanh,
    /// `1 / (1 + e⁻ˣ)`
    Sigmoid,
    /// `x · σ(x)`
    Silu,
}

/// A scalar function with its derivative.
pub trait UnaryFn: Copy + Send + Sync + 'static {
    /// Name used in errors and to pick a CUDA kernel.
    const NAME: &'static str;
    /// The vector kernel that computes this function on contiguous f32 data,
    /// if a backend may use one instead of [`UnaryFn::apply`]; `None` (the
    /// default) runs the scalar formula everywhere.
    const VECTORIZED: Option<VectorUnary> = None;
    /// `f(x)`.
    fn apply<T: Float>(&self, x: T) -> T;
    /// `f'(x)`, given `x` and `y = f(x)` (whichever is cheaper to use).
    fn derivative<T: Float>(&self, x: T, y: T) -> T;
    /// Scalar parameters (for powf, affine, clamp), passed to device kernels.
    fn params(&self) -> [f64; 2] {
        [0.0, 0.0]
    }
}

/// The kernels a backend provides for unary functions.
pub trait UnaryKernels: Sized {
    /// The dtypes this backend's unary kernels take: f32 and f64, unless it
    /// declares the 16-bit formats too (see the contract's module docs).
    const DTYPES: &'static [DType] = COMPUTE_FLOATS;
    /// `f` applied to the elements `layout` selects; contiguous result.
    fn unary<U: UnaryFn>(&self, layout: &Layout, f: U) -> Result<Self>;
    /// `dy · f'(x, y)` in one pass; all three operands share a shape.
    fn unary_backward<U: UnaryFn>(&self, x_layout: &Layout, y: &Self, y_layout: &Layout, dy: &Self, dy_layout: &Layout, f: U) -> Result<Self>;
}

/// Declare a parameterless unary function: name, `f(x)` and `f'(x, y)`.
macro_rules! unary_fn {
    ($(#[$doc:meta])* $ty:ident, $name:literal, |$x:ident| $f:expr, |$dx:ident, $dy:ident| $df:expr $(, vectorized = $v:ident)?) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $ty;
        impl UnaryFn for $ty {
            const NAME: &'static str = $name;
            $(const VECTORIZED: Option<VectorUnary> = Some(VectorUnary::$v);)?
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
    };
}

fn c<T: Float>(v: f64) -> T {
    T::from_f64(v)
}

unary_fn!(/// `-x`
    Neg, "neg", |x| -x, |x, y| -T::ONE);
unary_fn!(/// `|x|`; the derivative at 0 is 0 (as PyTorch).
    Abs, "abs", |x| x.abs(), |x, y| if x > T::ZERO { T::ONE } else if x < T::ZERO { -T::ONE } else { T::ZERO });
unary_fn!(/// Natural logarithm.
    Log, "log", |x| x.ln(), |x, y| T::ONE / x);
unary_fn!(/// `√x`
    Sqrt, "sqrt", |x| x.sqrt(), |x, y| c::<T>(0.5) / y);
unary_fn!(/// `1/√x`
    Rsqrt, "rsqrt", |x| T::ONE / x.sqrt(), |x, y| c::<T>(-0.5) * y * y * y);
unary_fn!(/// `x²`
    Square, "square", |x| x * x, |x, y| c::<T>(2.0) * x);
unary_fn!(/// Hyperbolic tangent.
    Tanh, "tanh", |x| x.tanh(), |x, y| T::ONE - y * y, vectorized = Tanh);
unary_fn!(/// `1 / (1 + e⁻ˣ)`
    Sigmoid, "sigmoid", |x| sigmoid(x), |x, y| y * (T::ONE - y), vectorized = Sigmoid);
unary_fn!(/// `max(x, 0)`; the derivative at 0 is 0. NaN stays NaN (as PyTorch), so divergence is not hidden.
    Relu, "relu", |x| if x <= T::ZERO { T::ZERO } else { x }, |x, y| if x > T::ZERO { T::ONE } else { T::ZERO });
unary_fn!(/// `x · σ(x)` (swish).
    Silu, "silu", |x| x * sigmoid(x), |x, y| { let s = sigmoid(x); s * (T::ONE + x * (T::ONE - s)) }, vectorized = Silu);
unary_fn!(/// Sine.
    Sin, "sin", |x| x.sin(), |x, y| x.cos());
unary_fn!(/// Cosine.
    Cos, "cos", |x| x.cos(), |x, y| -x.sin());

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
    const VECTORIZED: Option<VectorUnary> = Some(VectorUnary::Gelu);
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
}

/// GELU, tanh approximation (GPT-2's): `x/2 · (1 + tanh(√(2/π)·(x + 0.044715x³)))`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GeluTanh;
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
impl UnaryFn for GeluTanh {
    const NAME: &'static str = "gelu_tanh";
    const VECTORIZED: Option<VectorUnary> = Some(VectorUnary::GeluTanh);
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
}

/// `eˣ`
#[derive(Clone, Copy, Debug, Default)]
pub struct Exp;
impl UnaryFn for Exp {
    const NAME: &'static str = "exp";
    const VECTORIZED: Option<VectorUnary> = Some(VectorUnary::Exp);
    #[inline(always)]
    fn apply<T: Float>(&self, x: T) -> T {
        x.exp()
    }
    #[inline(always)]
    fn derivative<T: Float>(&self, _x: T, y: T) -> T {
        y
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

/// [`UnaryKernels::unary`]: an input of a dtype the backend's kernels take
/// (`dtypes`, its [`UnaryKernels::DTYPES`]).
pub fn check_unary(op: &'static str, x: DType, dtypes: &[DType]) -> Result<()> {
    check_dtype(op, x, dtypes)
}

/// [`UnaryKernels::unary_backward`]: `x`, `y` and `dy` of one dtype, one the
/// backend's kernels take, and one shape.
pub fn check_unary_backward(op: &'static str, x: (DType, &Layout), y: (DType, &Layout), dy: (DType, &Layout), dtypes: &[DType]) -> Result<()> {
    check_dtype(op, x.0, dtypes)?;
    if y.0 != x.0 || dy.0 != x.0 {
        return Err(Error::dtype(
            op,
            format!("backward operands have mixed dtypes: x {}, y {}, dy {}; expected one dtype", x.0, y.0, dy.0),
        ));
    }
    if x.1.shape() != y.1.shape() || x.1.shape() != dy.1.shape() {
        return Err(Error::shape(
            op,
            format!(
                "backward operands have shapes x {}, y {}, dy {}; expected one shape",
                x.1.shape(),
                y.1.shape(),
                dy.1.shape()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::contract::FLOATS;
    use crate::ErrorKind;

    #[test]
    fn unary_takes_the_declared_dtypes() {
        assert!(check_unary("exp", DType::F64, COMPUTE_FLOATS).is_ok());
        assert!(check_unary("exp", DType::F16, FLOATS).is_ok());
        let e = check_unary("exp", DType::F16, COMPUTE_FLOATS).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DType);
        assert!(e.message.starts_with("dtype f16 is not supported, expected f32 or f64"), "{e}");
        assert_eq!(check_unary("exp", DType::I64, FLOATS).unwrap_err().kind, ErrorKind::DType);
    }

    #[test]
    fn unary_backward_wants_one_supported_dtype_and_one_shape() {
        let (l, other) = (Layout::contiguous([2, 3]), Layout::contiguous([3, 2]));
        let f = DType::F32;
        assert!(check_unary_backward("exp", (f, &l), (f, &l), (f, &l), COMPUTE_FLOATS).is_ok());
        // The dtype comes first: an unsupported one is the error even with mixed shapes.
        let i = DType::I64;
        let e = check_unary_backward("exp", (i, &l), (i, &other), (i, &l), FLOATS).unwrap_err();
        assert!(e.message.starts_with("dtype i64 is not supported"), "{e}");
        let e = check_unary_backward("exp", (f, &l), (DType::F64, &l), (f, &l), COMPUTE_FLOATS).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DType);
        assert!(e.message.contains("x f32, y f64, dy f32"), "{e}");
        let e = check_unary_backward("exp", (f, &l), (f, &l), (f, &other), COMPUTE_FLOATS).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        assert!(e.message.contains("dy [3, 2]"), "{e}");
    }
}
