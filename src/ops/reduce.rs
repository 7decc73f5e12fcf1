//! Reductions over one or several axes: sum, mean, max, min, var; and along
//! one axis: argmax, argmin, max and min with their indices.
//!
//! Kernels reduce to a keepdim shape; `keepdim = false` is a reshape on top.

use crate::autograd::{no_grad, BackwardOp};
use crate::backend::contract::reduce::ReduceKernels;
use crate::backend::Storage;
use crate::profile::{self, Cost};
use crate::tensor::Tensor;
use crate::types::{DType, Layout, Shape};
use crate::{Error, Result};

pub use crate::backend::contract::reduce::ReduceOp;

/// Sorted, distinct, in-range axes; an empty list means "all axes".
fn resolve_axes(op: &'static str, shape: &Shape, axes: &[isize]) -> Result<Vec<usize>> {
    if axes.is_empty() {
        return Ok((0..shape.rank()).collect());
    }
    let mut out = axes.iter().map(|&a| shape.axis(op, a)).collect::<Result<Vec<_>>>()?;
    out.sort_unstable();
    if out.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::new(op, crate::ErrorKind::Axis, format!("axes {axes:?} repeat an axis of shape {shape}")));
    }
    Ok(out)
}

fn keepdim_shape(shape: &Shape, axes: &[usize]) -> Shape {
    Shape::new(
        shape
            .dims()
            .iter()
            .enumerate()
            .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
            .collect::<Vec<_>>(),
    )
}

fn squeezed_shape(shape: &Shape, axes: &[usize]) -> Shape {
    Shape::new(
        shape
            .dims()
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect::<Vec<_>>(),
    )
}

/// Composite reductions check the dtype up front so the error names them, not the op they call.
fn require_compute_float(op: &'static str, x: &Tensor) -> Result<()> {
    if x.dtype().is_compute_float() {
        Ok(())
    } else {
        Err(crate::backend::contract::unsupported_dtype(op, x.dtype()))
    }
}

/// An arg-reduction's input: f32 or f64, `axis` in range and not empty.
fn check_arg_axis(op: &'static str, x: &Tensor, axis: isize) -> Result<()> {
    require_compute_float(op, x)?;
    let a = x.shape().axis(op, axis)?;
    if x.dims()[a] == 0 {
        return Err(Error::shape(op, format!("axis {axis} of shape {} is empty", x.shape())));
    }
    Ok(())
}

/// One FLOP per input element; the input read, the kept values written.
fn reduce_forward(x: &Tensor, axes: &[usize], op: ReduceOp) -> Result<Storage> {
    let kept = keepdim_shape(x.shape(), axes).numel();
    let _op = profile::op(op.name(), || Cost::flops(x.numel()).moving(x.dtype(), x.numel() + kept))?;
    Ok(crate::dispatch!(op.name(), [s = &*x.storage()] => s.reduce(x.layout(), axes, op)?))
}

impl Tensor {
    fn reduce_op(&self, axes: &[isize], keepdim: bool, op: ReduceOp) -> Result<Tensor> {
        let axes = resolve_axes(op.name(), self.shape(), axes)?;
        if op != ReduceOp::Sum && axes.iter().any(|&a| self.dims()[a] == 0) {
            return Err(Error::shape(
                op.name(),
                format!("cannot take the {} over an empty axis of shape {}", op.name(), self.shape()),
            ));
        }
        let storage = reduce_forward(self, &axes, op)?;
        let kept = Tensor::from_op(
            storage,
            Layout::contiguous(keepdim_shape(self.shape(), &axes)),
            vec![self.clone()],
            ReduceBackward { op },
        );
        if keepdim {
            Ok(kept)
        } else {
            kept.reshape(squeezed_shape(self.shape(), &axes))
        }
    }

    /// Sum over `axes` (all axes when empty; negative axes count from the end).
    ///
    /// ```
    /// let x = tamer::Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).unwrap();
    /// assert_eq!(x.sum(&[0], false).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 6.0]);
    /// assert_eq!(x.sum(&[-1], true).unwrap().dims(), &[2, 1]);
    /// ```
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce_op(axes, keepdim, ReduceOp::Sum)
    }
    /// Sum of every element, as a scalar tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(&[], false)
    }
    /// Largest value over `axes`; the gradient goes to the maximal element(s),
    /// split evenly among ties (as torch.amax).
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce_op(axes, keepdim, ReduceOp::Max)
    }
    pub fn min(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce_op(axes, keepdim, ReduceOp::Min)
    }
    pub fn max_all(&self) -> Result<Tensor> {
        self.max(&[], false)
    }
    /// Mean over `axes`.
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        require_compute_float("mean", self)?;
        let resolved = resolve_axes("mean", self.shape(), axes)?;
        let count: usize = resolved.iter().map(|&a| self.dims()[a]).product();
        if count == 0 {
            return Err(Error::shape("mean", format!("cannot average over an empty axis of shape {}", self.shape())));
        }
        self.sum(axes, keepdim)?.scale(1.0 / count as f64)
    }
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean(&[], false)
    }
    /// Variance over `axes` with `correction` subtracted from the count
    /// (0: population variance; 1: unbiased, torch.var's default).
    pub fn var(&self, axes: &[isize], keepdim: bool, correction: usize) -> Result<Tensor> {
        require_compute_float("var", self)?;
        let resolved = resolve_axes("var", self.shape(), axes)?;
        let count: usize = resolved.iter().map(|&a| self.dims()[a]).product();
        if count <= correction {
            return Err(Error::shape(
                "var",
                format!(
                    "{count} elements over axes {axes:?} of shape {} are too few for correction {correction}",
                    self.shape()
                ),
            ));
        }
        let centered = self.sub(&self.mean(axes, true)?)?;
        centered.square()?.sum(axes, keepdim)?.scale(1.0 / (count - correction) as f64)
    }
    /// Index of the largest element along `axis`, as an i64 tensor (no gradient).
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let a = self.shape().axis("argmax", axis)?;
        if self.dims()[a] == 0 {
            return Err(Error::shape("argmax", format!("axis {a} of shape {} is empty", self.shape())));
        }
        let rows = self.numel() / self.dims()[a];
        let _op = profile::op("argmax", || {
            Cost::flops(self.numel()).moving(self.dtype(), self.numel()).moving(DType::I64, rows)
        })?;
        let storage = crate::dispatch!("argmax", [s = &*self.storage()] => s.argmax(self.layout(), a)?);
        let out = Tensor::from_storage(storage, Layout::contiguous(keepdim_shape(self.shape(), &[a])));
        if keepdim {
            Ok(out)
        } else {
            out.reshape(squeezed_shape(self.shape(), &[a]))
        }
    }

    /// Index of the smallest element along `axis` (the first at ties, or the
    /// first NaN), as an i64 tensor (no gradient).
    pub fn argmin(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        // argmin(x) = argmax(−x): negation is exact and keeps ties and NaNs, so
        // one arg-reduction kernel serves both.
        check_arg_axis("argmin", self, axis)?;
        no_grad(|| self.neg()?.argmax(axis, keepdim))
    }

    /// The largest value along `axis` and its index, PyTorch's
    /// `torch.max(x, dim, keepdim)`: `(values, indices)` with i64 indices,
    /// the first maximal element at ties (a NaN, if the row has one, as
    /// PyTorch does). The gradient of `values` goes to exactly the element
    /// `indices` names; compare [`Tensor::max`], which reduces several axes
    /// and splits it among ties like `torch.amax`.
    ///
    /// ```
    /// let x = tamer::Tensor::from_vec(vec![1.0f32, 3.0, 3.0, 2.0, 2.0, 1.0], [2, 3]).unwrap();
    /// let (values, indices) = x.max_with_indices(-1, false).unwrap();
    /// assert_eq!(values.to_vec::<f32>().unwrap(), vec![3.0, 2.0]);
    /// assert_eq!(indices.to_vec::<i64>().unwrap(), vec![1, 0]);
    /// ```
    pub fn max_with_indices(&self, axis: isize, keepdim: bool) -> Result<(Tensor, Tensor)> {
        self.extreme_with_indices("max_with_indices", axis, keepdim, Tensor::argmax)
    }

    /// The smallest value along `axis` and its index, PyTorch's
    /// `torch.min(x, dim, keepdim)`; otherwise as [`Tensor::max_with_indices`].
    pub fn min_with_indices(&self, axis: isize, keepdim: bool) -> Result<(Tensor, Tensor)> {
        self.extreme_with_indices("min_with_indices", axis, keepdim, Tensor::argmin)
    }

    /// The element of each run along `axis` that `arg` picks, and its index.
    fn extreme_with_indices(&self, op: &'static str, axis: isize, keepdim: bool, arg: fn(&Tensor, isize, bool) -> Result<Tensor>) -> Result<(Tensor, Tensor)> {
        check_arg_axis(op, self, axis)?;
        let indices = arg(self, axis, true)?;
        // Gathering the values makes the gradient flow to the picked element
        // alone (gather's backward scatters into those positions).
        let values = self.gather(axis, &indices)?;
        if keepdim {
            Ok((values, indices))
        } else {
            Ok((values.squeeze(axis)?, indices.squeeze(axis)?))
        }
    }

    /// Sum over the axes that broadcasting stretched, so that the result has
    /// `target`'s shape. Used by every broadcasting op's backward.
    pub fn sum_to_shape(&self, target: &Shape) -> Result<Tensor> {
        if self.shape() == target {
            return Ok(self.clone());
        }
        let rank = self.rank();
        if target.rank() > rank {
            return Err(Error::shape(
                "sum_to_shape",
                format!("cannot sum {} down to the higher-rank shape {target}", self.shape()),
            ));
        }
        let lead = rank - target.rank();
        let mut axes = Vec::new();
        for i in 0..rank {
            let d = self.dims()[i];
            if i < lead || (target.dims()[i - lead] == 1 && d != 1) {
                axes.push(i as isize);
            } else if target.dims()[i - lead] != d {
                return Err(Error::shape("sum_to_shape", format!("{} does not broadcast from {target}", self.shape())));
            }
        }
        if axes.is_empty() {
            return self.reshape(target.clone());
        }
        self.sum(&axes, true)?.reshape(target.clone())
    }
}

struct ReduceBackward {
    op: ReduceOp,
}

impl BackwardOp for ReduceBackward {
    fn name(&self) -> &'static str {
        self.op.name()
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        // `out` and `g` have the keepdim shape, so they broadcast against `x`.
        let grad = match self.op {
            ReduceOp::Sum => g.broadcast_as(x.shape().clone())?.contiguous()?,
            ReduceOp::Max | ReduceOp::Min => {
                let hit = x.eq(out)?;
                let axes: Vec<isize> = (0..x.rank()).filter(|&i| out.dims()[i] == 1 && x.dims()[i] != 1).map(|i| i as isize).collect();
                let ties = if axes.is_empty() { hit.clone() } else { hit.sum(&axes, true)? };
                hit.mul(&g.div(&ties)?)?
            }
        };
        Ok(vec![Some(grad)])
    }
}
