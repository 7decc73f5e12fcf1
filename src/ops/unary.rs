//! Elementwise functions of one tensor: `y = f(x)`, `dx = dy · f'(x)`.
//!
//! Each function is a small type implementing [`UnaryFn`]: its value and its
//! derivative as scalar formulas (they are part of the kernel contract, in
//! `backend/contract/unary.rs`, and re-exported here). One generic kernel
//! applies any of them, and one generic backward node differentiates any of
//! them, so adding a function means adding one impl, not editing a `match`.

use crate::autograd::BackwardOp;
use crate::backend::Storage;
use crate::profile::{self, Cost};
use crate::tensor::Tensor;
use crate::types::Layout;
use crate::{Error, Result};

use crate::backend::contract::unary::UnaryKernels;
pub use crate::backend::contract::unary::{
    Abs, Affine, Clamp, Cos, Exp, Gelu, GeluTanh, Log, Neg, Powf, Relu, Rsqrt, Sigmoid, Silu, Sin, Sqrt, Square, Tanh, UnaryFn, VectorUnary,
};

fn unary_storage<U: UnaryFn>(x: &Tensor, f: U) -> Result<Storage> {
    let _op = profile::op(U::NAME, || Cost::elementwise(x.dtype(), x.numel(), x.numel()))?;
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
        let _op = profile::op(U::NAME, || Cost::elementwise(x.dtype(), 3 * x.numel(), x.numel()))?;
        let (xs, ys, gs) = (x.storage(), output.storage(), grad.storage());
        let dx = crate::dispatch!(U::NAME, [xs = &*xs, ys = &*ys, gs = &*gs] => xs.unary_backward(x.layout(), ys, output.layout(), gs, grad.layout(), self.0)?);
        Ok(vec![Some(Tensor::from_storage(dx, Layout::contiguous(x.shape().clone())))])
    }
}

/// The named methods: shorthands for [`Tensor::unary`] with each function.
macro_rules! unary_methods {
    ($($(#[$doc:meta])* $method:ident => $ty:ident;)*) => {
        impl Tensor {
            $(
                $(#[$doc])*
                pub fn $method(&self) -> Result<Tensor> {
                    self.unary($ty)
                }
            )*
        }
    };
}

unary_methods! {
    /// `-x`
    neg => Neg;
    /// `|x|`; the derivative at 0 is 0 (as PyTorch).
    abs => Abs;
    /// Natural logarithm.
    log => Log;
    /// `√x`
    sqrt => Sqrt;
    /// `1/√x`
    rsqrt => Rsqrt;
    /// `x²`
    square => Square;
    /// Hyperbolic tangent.
    tanh => Tanh;
    /// `1 / (1 + e⁻ˣ)`
    sigmoid => Sigmoid;
    /// `max(x, 0)`; the derivative at 0 is 0. NaN stays NaN (as PyTorch), so divergence is not hidden.
    relu => Relu;
    /// `x · σ(x)` (swish).
    silu => Silu;
    /// Sine.
    sin => Sin;
    /// Cosine.
    cos => Cos;
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
