//! Layer normalisation over the last axis, fused, with a hand-written backward.
//!
//! Forward per row (C elements): `x̂ = (x − mean)·rstd` with
//! `rstd = 1/√(var + eps)` (population variance), `y = x̂ ⊙ weight + bias`.
//! The forward saves `mean` and `rstd` per row; the backward recomputes `x̂`
//! from them and forms, with `g = dy ⊙ weight`:
//! - `dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))`
//! - `dweight = Σ_rows dy ⊙ x̂`, `dbias = Σ_rows dy`

use crate::autograd::BackwardOp;
use crate::backend::contract::nn::layer_norm::{LayerNormForward, LayerNormGrads, LayerNormKernels};
use crate::backend::optional_operand;
use crate::profile::{self, per_element, Cost};
use crate::tensor::Tensor;
use crate::types::{Layout, Shape};
use crate::{Error, Result};

impl Tensor {
    /// Layer normalisation over the last axis (`F.layer_norm(x, [C], weight, bias, eps)`):
    /// `(x − mean) / √(var + eps) · weight + bias`, with `weight` and `bias` of shape `[C]`.
    ///
    /// ```
    /// use tamer::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 4.0, 4.0], [2, 3]).unwrap();
    /// let w = Tensor::from_vec(vec![1.0f64, 2.0, 1.0], [3]).unwrap();
    /// let b = Tensor::from_vec(vec![0.0f64, 0.0, 1.0], [3]).unwrap();
    /// let y = x.layer_norm(Some(&w), Some(&b), 1e-5).unwrap().to_vec2::<f64>().unwrap();
    /// let r = 1.0 / (2.0f64 / 3.0 + 1e-5).sqrt(); // row 0: mean 2, variance 2/3
    /// assert!((y[0][0] + r).abs() < 1e-12);
    /// assert!((y[0][1] - 0.0).abs() < 1e-12);
    /// assert!((y[0][2] - (r + 1.0)).abs() < 1e-12);
    /// assert_eq!(y[1], vec![0.0, 0.0, 1.0]); // a constant row normalises to 0
    /// ```
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        const OP: &str = "layer_norm";
        if self.rank() == 0 {
            return Err(Error::shape(OP, "input is a scalar; expected at least one axis to normalise over"));
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(Error::value(OP, format!("eps {eps} must be finite and non-negative")));
        }
        let c = self.dims()[self.rank() - 1];
        for (name, p) in [("weight", weight), ("bias", bias)] {
            let Some(p) = p else { continue };
            if p.dims() != [c] {
                return Err(Error::shape(
                    OP,
                    format!("{name} has shape {}, expected [{c}] (the last axis of input shape {})", p.shape(), self.shape()),
                ));
            }
            self.same_dtype_device(OP, p)?;
        }
        let rows = self.numel() / c.max(1);
        // x read, y written, the weight and bias read, mean and rstd written.
        let _op = profile::op(OP, || {
            Cost::flops(per_element::LAYER_NORM * self.numel()).moving(self.dtype(), 2 * self.numel() + 2 * c + 2 * rows)
        })?;
        let (xs, ws, bs) = (self.storage(), weight.map(Tensor::storage), bias.map(Tensor::storage));
        let fwd = crate::dispatch!(OP, [x = &*xs], |wrap| {
            let (w, b) = (
                optional_operand(OP, ws.as_deref().zip(weight.map(Tensor::layout)))?,
                optional_operand(OP, bs.as_deref().zip(bias.map(Tensor::layout)))?,
            );
            let out = x.layer_norm(self.layout(), w, b, eps)?;
            LayerNormForward {
                y: wrap(out.y),
                mean: wrap(out.mean),
                rstd: wrap(out.rstd),
            }
        });
        drop((xs, ws, bs));
        let stats = |s| Tensor::from_storage(s, Layout::contiguous(Shape::new([rows])));
        let mut inputs = vec![self.clone()];
        inputs.extend(weight.cloned());
        inputs.extend(bias.cloned());
        Ok(Tensor::from_op(
            fwd.y,
            Layout::contiguous(self.shape().clone()),
            inputs,
            LayerNormBackward {
                mean: stats(fwd.mean),
                rstd: stats(fwd.rstd),
                has_weight: weight.is_some(),
                has_bias: bias.is_some(),
            },
        ))
    }
}

struct LayerNormBackward {
    mean: Tensor,
    rstd: Tensor,
    has_weight: bool,
    has_bias: bool,
}

impl BackwardOp for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layer_norm"
    }
    fn backward(&self, inputs: &[Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let weight = self.has_weight.then(|| &inputs[1]);
        let bias = self.has_bias.then(|| &inputs[1 + usize::from(self.has_weight)]);
        let want_dweight = weight.is_some_and(Tensor::requires_grad);
        let want_dbias = bias.is_some_and(Tensor::requires_grad);
        let c = x.dims()[x.rank() - 1];
        // x, dy, the weight, mean and rstd read; dx, dweight and dbias written.
        let rows = x.numel() / c.max(1);
        let _op = profile::op("layer_norm", || {
            Cost::flops(per_element::LAYER_NORM_BACKWARD * x.numel()).moving(x.dtype(), 3 * x.numel() + 3 * c + 2 * rows)
        })?;
        let (xs, ws, ms, rs, gs) = (
            x.storage(),
            weight.map(Tensor::storage),
            self.mean.storage(),
            self.rstd.storage(),
            grad.storage(),
        );
        let grads = crate::dispatch!("layer_norm", [xs = &*xs, m = &*ms, r = &*rs, g = &*gs], |wrap| {
            let w = optional_operand("layer_norm", ws.as_deref().zip(weight.map(Tensor::layout)))?;
            let out = xs.layer_norm_backward(x.layout(), w, m, r, g, grad.layout(), want_dweight, want_dbias)?;
            LayerNormGrads {
                dx: wrap(out.dx),
                dweight: out.dweight.map(wrap),
                dbias: out.dbias.map(wrap),
            }
        });
        let param = |s| Tensor::from_storage(s, Layout::contiguous(Shape::new([c])));
        let mut out = vec![Some(Tensor::from_storage(grads.dx, Layout::contiguous(x.shape().clone())))];
        if self.has_weight {
            out.push(grads.dweight.map(param));
        }
        if self.has_bias {
            out.push(grads.dbias.map(param));
        }
        Ok(out)
    }
}
