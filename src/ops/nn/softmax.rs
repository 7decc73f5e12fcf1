//! `softmax` and `log_softmax` along any axis, fused, with hand-written backward passes.
//!
//! Kernels work on rows of the last axis (gathering a non-contiguous layout
//! first). Another axis is moved last with a transpose view, computed there and
//! moved back, so one kernel pair serves every axis.
//!
//! Backward per row, with `y` the forward output and `dy` its gradient:
//! - softmax:     `dx = y ⊙ (dy − Σ dy ⊙ y)`
//! - log_softmax: `dx = dy − exp(y) ⊙ Σ dy`
//!
//! Both only need the output, so the input is not read again.

use crate::autograd::BackwardOp;
use crate::backend::contract::nn::softmax::SoftmaxKernels;
use crate::profile::{self, per_element, Cost};
use crate::tensor::Tensor;
use crate::types::{normalize_axis, Layout};
use crate::Result;

pub use crate::backend::contract::nn::softmax::SoftmaxKind;

impl Tensor {
    /// `exp(x) / Σ exp(x)` along `axis` (negative counts from the end),
    /// computed stably by subtracting each row's maximum first.
    ///
    /// ```
    /// use tamer::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 1.0, 1.0, 1.0], [2, 3]).unwrap();
    /// let y = x.softmax(-1).unwrap().to_vec2::<f32>().unwrap();
    /// let e = [1f32.exp(), 2f32.exp(), 3f32.exp()];
    /// let s: f32 = e.iter().sum();
    /// assert!((y[0][2] - e[2] / s).abs() < 1e-6);
    /// assert!((y[1][0] - 1.0 / 3.0).abs() < 1e-6);
    /// // Along the first axis, each column sums to 1.
    /// let c = x.softmax(0).unwrap().sum(&[0], false).unwrap().to_vec::<f32>().unwrap();
    /// assert!(c.iter().all(|v| (v - 1.0).abs() < 1e-6));
    /// ```
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_along(axis, SoftmaxKind::Softmax)
    }

    /// `x − log Σ exp(x)` along `axis`, computed stably (no `exp` overflow
    /// even for logits of ±1e4).
    ///
    /// ```
    /// use tamer::Tensor;
    /// let x = Tensor::from_vec(vec![1e4f64, 0.0], [2]).unwrap();
    /// let y = x.log_softmax(0).unwrap().to_vec::<f64>().unwrap();
    /// assert_eq!(y[0], 0.0);
    /// assert_eq!(y[1], -1e4);
    /// ```
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_along(axis, SoftmaxKind::LogSoftmax)
    }

    fn softmax_along(&self, axis: isize, kind: SoftmaxKind) -> Result<Tensor> {
        let rank = self.rank();
        // A scalar is one row of one element, as in PyTorch (axis 0 or -1).
        let a = normalize_axis(kind.name(), axis, rank.max(1))?;
        if rank == 0 || a == rank - 1 {
            return softmax_last(self, kind);
        }
        let moved = self.transpose(a as isize, -1)?;
        softmax_last(&moved, kind)?.transpose(a as isize, -1)?.contiguous()
    }
}

fn softmax_last(x: &Tensor, kind: SoftmaxKind) -> Result<Tensor> {
    let _op = profile::op(kind.name(), || Cost::flops(per_element::SOFTMAX * x.numel()).moving(x.dtype(), 2 * x.numel()))?;
    let storage = crate::dispatch!(kind.name(), [s = &*x.storage()] => s.softmax_last(x.layout(), kind)?);
    Ok(Tensor::from_op(
        storage,
        Layout::contiguous(x.shape().clone()),
        vec![x.clone()],
        SoftmaxBackward { kind },
    ))
}

struct SoftmaxBackward {
    kind: SoftmaxKind,
}

impl BackwardOp for SoftmaxBackward {
    fn name(&self) -> &'static str {
        self.kind.name()
    }
    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let _op = profile::op(self.kind.name(), || {
            Cost::flops(per_element::SOFTMAX_BACKWARD * x.numel()).moving(x.dtype(), 3 * x.numel())
        })?;
        let dx = crate::dispatch!(self.kind.name(), [y = &*output.storage(), dy = &*grad.storage()] => y.softmax_last_backward(output.layout(), dy, grad.layout(), self.kind)?);
        Ok(vec![Some(Tensor::from_storage(dx, Layout::contiguous(x.shape().clone())))])
    }
}
