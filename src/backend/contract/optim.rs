//! The optimizer updates' contract: each update's settings ([`AdamStep`],
//! [`SgdStep`]) and their scalars rounded to the parameter's dtype
//! ([`AdamCoeffs`], [`SgdCoeffs`]: every device runs one formula on the same
//! numbers), [`OptimKernels`], and the operand check both backends make
//! before they write.
//!
//! Each update follows `torch.optim`'s single-tensor code operation by
//! operation; the CPU loops are in `cpu/optim.rs`, the CUDA kernels in
//! `cuda/optim.cu` (launched by `cuda/optim.rs`).

use super::{check_dtype, COMPUTE_FLOATS, FLOATS};
use crate::types::{DType, Float, Layout};
use crate::{Error, Result};

/// SGD's scalars, already in the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct SgdCoeffs<T> {
    pub neg_lr: T,
    pub weight_decay: Option<T>,
    /// `None` when momentum is 0 (no buffer).
    pub momentum: Option<T>,
    pub one_minus_dampening: T,
    pub nesterov: bool,
    /// The buffer is being created: it starts as the gradient, undamped (as PyTorch).
    pub init_buffer: bool,
}

/// How Adam applies weight decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AdamDecay<T> {
    None,
    /// Adam: grad += wd · param.
    Coupled(T),
    /// AdamW: param *= 1 − lr · wd, before the update.
    Decoupled(T),
}

/// Adam's scalars for one step, already in the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct AdamCoeffs<T> {
    pub decay: AdamDecay<T>,
    /// lerp weight 1 − β₁, and 1 − weight (PyTorch's lerp takes the second
    /// form when the weight is at least 0.5).
    pub w: T,
    pub one_minus_w: T,
    pub w_small: bool,
    pub beta2: T,
    pub one_minus_beta2: T,
    /// sqrt(1 − β₂^t)
    pub bc2_sqrt: T,
    pub eps: T,
    /// −lr / (1 − β₁^t)
    pub neg_step_size: T,
}

impl<T: Float> AdamCoeffs<T> {
    /// The scalars of one step, computed in f64 as PyTorch computes them in
    /// Python, then rounded to `T`.
    pub fn new(h: &AdamStep) -> Self {
        let (beta1, beta2) = h.betas;
        let step = h.step as f64;
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let w = T::from_f64(1.0 - beta1);
        let decay = match (h.weight_decay != 0.0, h.decoupled) {
            (false, _) => AdamDecay::None,
            (true, false) => AdamDecay::Coupled(T::from_f64(h.weight_decay)),
            (true, true) => AdamDecay::Decoupled(T::from_f64(1.0 - h.lr * h.weight_decay)),
        };
        AdamCoeffs {
            decay,
            w,
            one_minus_w: T::ONE - w,
            w_small: w.abs() < T::from_f64(0.5),
            beta2: T::from_f64(beta2),
            one_minus_beta2: T::from_f64(1.0 - beta2),
            bc2_sqrt: T::from_f64(bias_correction2.sqrt()),
            eps: T::from_f64(h.eps),
            neg_step_size: T::from_f64(-(h.lr / bias_correction1)),
        }
    }
}

/// One Adam/AdamW step's settings, as the user gave them (f64).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW's decoupled decay when true, Adam's L2 penalty when false.
    pub decoupled: bool,
    /// The step being taken, 1-based (for the bias corrections).
    pub step: u64,
}

/// One SGD step's settings, as the user gave them (f64).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    /// The momentum buffer is being created: it starts as the gradient.
    pub init_buffer: bool,
}

impl<T: Float> SgdCoeffs<T> {
    /// The step's scalars rounded to `T`; a zero weight decay or momentum is off.
    pub fn new(h: &SgdStep) -> Self {
        SgdCoeffs {
            neg_lr: T::from_f64(-h.lr),
            weight_decay: (h.weight_decay != 0.0).then(|| T::from_f64(h.weight_decay)),
            momentum: (h.momentum != 0.0).then(|| T::from_f64(h.momentum)),
            one_minus_dampening: T::from_f64(1.0 - h.dampening),
            nesterov: h.nesterov,
            init_buffer: h.init_buffer,
        }
    }
}

/// The state buffers of one Adam parameter: `exp_avg`, `exp_avg_sq` and,
/// with AMSGrad, `max_exp_avg_sq`, each as many elements as the parameter.
pub struct AdamState<'a, S> {
    pub m: &'a mut S,
    pub v: &'a mut S,
    pub vmax: Option<&'a mut S>,
}

/// The in-place updates a backend provides for the optimizers. The parameter
/// (`self`) is updated in place through `layout` (any strides: a strided
/// parameter is updated element by element where it lies); gradients may be
/// strided too; state buffers are contiguous, one element per parameter
/// element. Each backend rounds the settings to the parameter's dtype with
/// the coefficient structs above. `op` and `name` (the parameter's) go into
/// errors.
pub trait OptimKernels: Sized {
    /// One Adam/AdamW step.
    #[allow(clippy::too_many_arguments)]
    fn adam_step(
        &mut self,
        op: &'static str,
        name: &str,
        layout: &Layout,
        grad: &Self,
        grad_layout: &Layout,
        state: AdamState<'_, Self>,
        h: &AdamStep,
    ) -> Result<()>;
    /// One SGD step; `momentum_buffer` is required when `h.momentum` is not 0.
    #[allow(clippy::too_many_arguments)]
    fn sgd_step(
        &mut self,
        op: &'static str,
        name: &str,
        layout: &Layout,
        grad: &Self,
        grad_layout: &Layout,
        momentum_buffer: Option<&mut Self>,
        h: &SgdStep,
    ) -> Result<()>;
    /// `self += scale · x`, `scale` rounded to the dtype (gradient accumulation).
    fn axpy(&mut self, op: &'static str, layout: &Layout, x: &Self, x_layout: &Layout, scale: f64) -> Result<()>;
    /// `a · x + 0` (`a` rounded to the dtype: `Tensor::scale`'s values) as a new contiguous storage.
    fn scaled(&self, op: &'static str, layout: &Layout, a: f64) -> Result<Self>;
    /// `Σ x²` in f64 of each part, all on one device, deterministically.
    fn sum_squares(op: &'static str, parts: &[(&Self, &Layout)]) -> Result<Vec<f64>>;
}

/// [`OptimKernels::adam_step`], [`OptimKernels::sgd_step`] and
/// [`OptimKernels::axpy`]: what every update checks before it writes: an f32
/// or f64 parameter, and the gradient and each state buffer (`(what, dtype,
/// elements)`) of the parameter's dtype and element count. `name` is the
/// parameter's.
pub fn check_update(op: &'static str, name: &str, param: (DType, &Layout), grad: (DType, &Layout), states: &[(&str, DType, usize)]) -> Result<()> {
    let (dtype, n) = (param.0, param.1.numel());
    check_dtype(op, dtype, COMPUTE_FLOATS)?;
    if grad.0 != dtype {
        return Err(Error::dtype(
            op,
            format!("gradient of shape {} has dtype {}, expected {dtype}", grad.1.shape(), grad.0),
        ));
    }
    if grad.1.numel() != n {
        return Err(Error::shape(
            op,
            format!(
                "parameter '{name}' has {n} elements but its gradient of shape {} has {}",
                grad.1.shape(),
                grad.1.numel()
            ),
        ));
    }
    for &(what, d, len) in states {
        if d != dtype {
            return Err(Error::dtype(
                op,
                format!("state {what} of parameter '{name}' is {d} but the parameter is now {dtype}; convert the model before creating the optimizer"),
            ));
        }
        if len != n {
            return Err(Error::shape(
                op,
                format!("state {what} of parameter '{name}' holds {len} elements, expected {n}"),
            ));
        }
    }
    Ok(())
}

/// [`OptimKernels::scaled`]: an f32 or f64 input.
pub fn check_scaled(op: &'static str, x: DType) -> Result<()> {
    check_dtype(op, x, COMPUTE_FLOATS)
}

/// [`OptimKernels::sum_squares`]: parts of any float dtype (a 16-bit gradient
/// is widened to f64 element by element), none of them i64.
pub fn check_sum_squares(op: &'static str, parts: impl IntoIterator<Item = DType>) -> Result<()> {
    parts.into_iter().try_for_each(|d| check_dtype(op, d, FLOATS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn an_update_checks_dtype_gradient_and_state() {
        let (l, f) = (Layout::contiguous([2, 3]), DType::F32);
        assert!(check_update("Adam", "w", (f, &l), (f, &l), &[("exp_avg", f, 6)]).is_ok());
        let e = check_update("Adam", "w", (DType::BF16, &l), (DType::BF16, &l), &[]).unwrap_err();
        assert!(e.to_string().contains("Adam") && e.message.starts_with("dtype bf16 is not supported"), "{e}");
        let e = check_update("Adam", "w", (f, &l), (DType::F64, &l), &[]).unwrap_err();
        assert!(e.message.contains("gradient of shape [2, 3] has dtype f64, expected f32"), "{e}");
        let e = check_update("Adam", "w", (f, &l), (f, &Layout::contiguous([5])), &[]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        let e = check_update("Adam", "w", (f, &l), (f, &l), &[("exp_avg", DType::F64, 6)]).unwrap_err();
        assert!(e.message.contains("state exp_avg of parameter 'w' is f64"), "{e}");
        let e = check_update("Adam", "w", (f, &l), (f, &l), &[("exp_avg", f, 5)]).unwrap_err();
        assert!(e.message.contains("holds 5 elements, expected 6"), "{e}");
    }

    #[test]
    fn scaled_takes_f32_and_f64() {
        assert!(check_scaled("clip_grad_norm", DType::F64).is_ok());
        let e = check_scaled("clip_grad_norm", DType::F16).unwrap_err();
        assert!(e.message.starts_with("dtype f16 is not supported, expected f32 or f64"), "{e}");
    }

    #[test]
    fn sum_squares_takes_every_float_but_no_integer() {
        assert!(check_sum_squares("grad_norm", [DType::F32, DType::F64, DType::BF16, DType::F16]).is_ok());
        assert!(check_sum_squares("grad_norm", []).is_ok());
        let e = check_sum_squares("grad_norm", [DType::F32, DType::I64]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DType);
        assert!(e.message.starts_with("dtype i64 is not supported, expected f32, f64, bf16 or f16"), "{e}");
    }
}
