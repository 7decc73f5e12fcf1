//! The linear layer as one op of the matmul family: `y = x·Wᵀ + b`.
//!
//! Composed, a linear layer is a product, a transpose view and a broadcast
//! add: the add reads the whole product back and writes a second output, and
//! the backward runs three nodes (the add's, which sums the bias gradient;
//! the transpose's; the product's). Fused, the backend adds the bias as it
//! stores the product (the CPU's GEMM in its micro-kernels' stores)
//! ([`MatmulKernels::linear`]), and one node computes the three gradients
//! with `x` and `dY` flattened to matrices (`[rows, in]`, `[rows, out]`):
//! `dX = dY·W`, `dW = dYᵀ·X` (no transpose of W is ever materialised) and
//! `db` = the column sums of `dY`.

use crate::autocast;
use crate::autograd::BackwardOp;
use crate::backend::contract::matmul::MatmulKernels;
use crate::backend::optional_operand;
use crate::profile::{self, Cost};
use crate::tensor::Tensor;
use crate::types::{Layout, Shape};
use crate::{Error, Result};

/// `x · weightᵀ + bias` on the last axis: `x` `[.., in]` (a vector is one
/// row), `weight` `[out, in]`, `bias` `[out]` → `[.., out]`; errors name `op`
/// (`nn::functional::linear` calls it "linear", the `Linear` module
/// "Linear").
pub(crate) fn linear(op: &'static str, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if weight.rank() != 2 {
        return Err(Error::shape(
            op,
            format!("weight must be [out_features, in_features], got shape {}", weight.shape()),
        ));
    }
    let (out_f, in_f) = (weight.dims()[0], weight.dims()[1]);
    if x.rank() == 0 || x.dims()[x.rank() - 1] != in_f {
        return Err(Error::shape(
            op,
            format!("input shape {} must end in in_features {in_f} (weight shape [{out_f}, {in_f}])", x.shape()),
        ));
    }
    if let Some(b) = bias {
        if b.dims() != [out_f] {
            return Err(Error::shape(
                op,
                format!("bias has shape {}, expected [{out_f}] for weight shape [{out_f}, {in_f}]", b.shape()),
            ));
        }
    }
    x.same_dtype_device(op, weight)?;
    if let Some(b) = bias {
        x.same_dtype_device(op, b)?;
    }
    // Inside `autocast` a CUDA f32 product runs in 16 bits: `Tensor::matmul`
    // applies that policy, so such a layer stays the composition.
    if autocast::matmul_dtype((x.dtype(), x.device()), (weight.dtype(), weight.device())).is_some() {
        let y = x.matmul(&weight.t()?)?;
        return match bias {
            Some(b) => y.add(b),
            None => Ok(y),
        };
    }
    let mut out_dims = x.dims()[..x.rank() - 1].to_vec();
    out_dims.push(out_f);
    let out_shape = Shape::new(out_dims);
    out_shape.check_size(op, x.dtype().size_in_bytes())?;
    // The kernel's operands: x as [batch.., m, in] (a vector as one row) and
    // Wᵀ as [batch.., in, out], the same matrix for every batch entry.
    let x_layout = if x.rank() == 1 {
        Layout::new(Shape::new([1, in_f]), vec![0, x.layout().strides()[0]], x.layout().offset())
    } else {
        x.layout().clone()
    };
    let r = x_layout.rank();
    let mut wt_dims = x_layout.dims()[..r - 2].to_vec();
    wt_dims.extend([in_f, out_f]);
    let wt_layout = weight.layout().permute(op, &[1, 0])?.broadcast_as(op, &Shape::new(wt_dims))?;
    let rows = out_shape.numel() / out_f.max(1);
    let _op = profile::op("linear", || {
        // 2·in FLOPs per output element for the product, one for the bias.
        let per_output = 2 * in_f + usize::from(bias.is_some());
        Cost::flops_product(&[rows, out_f, per_output]).moving(x.dtype(), x.numel() + weight.numel() + out_shape.numel() + bias.map_or(0, Tensor::numel))
    })?;
    let (xs, ws, bs) = (x.storage(), weight.storage(), bias.map(Tensor::storage));
    let storage = crate::dispatch!(op, [sx = &*xs, sw = &*ws], |wrap| {
        let b = optional_operand(op, bs.as_deref().zip(bias.map(Tensor::layout)))?;
        wrap(sx.linear(&x_layout, sw, &wt_layout, b)?)
    });
    drop((xs, ws, bs));
    let mut inputs = vec![x.clone(), weight.clone()];
    inputs.extend(bias.cloned());
    Ok(Tensor::from_op(storage, Layout::contiguous(out_shape), inputs, LinearBackward))
}

/// Inputs: `x`, `weight` and, when the layer has one, `bias`.
struct LinearBackward;

impl BackwardOp for LinearBackward {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let (out_f, in_f) = (w.dims()[0], w.dims()[1]);
        let rows: usize = x.dims()[..x.rank() - 1].iter().product();
        // dY as a matrix: every leading axis is a row of the product.
        let g_rows = g.reshape([rows, out_f])?;
        let gx = if x.requires_grad() {
            Some(g_rows.matmul(w)?.reshape(x.shape().clone())?)
        } else {
            None
        };
        let gw = if w.requires_grad() {
            Some(g_rows.t()?.matmul(&x.reshape([rows, in_f])?)?)
        } else {
            None
        };
        let mut grads = vec![gx, gw];
        if let Some(b) = inputs.get(2) {
            grads.push(if b.requires_grad() { Some(g_rows.sum(&[0], false)?) } else { None });
        }
        Ok(grads)
    }
}
