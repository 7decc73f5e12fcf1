//! The reduction family's contract: [`ReduceOp`] and [`ReduceKernels`].

use crate::types::Layout;
use crate::{Error, Result};

/// Which reduction a kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }
}

/// The kernels a backend provides for reductions.
pub trait ReduceKernels: Sized {
    /// Reduce the (sorted, distinct) `axes`; the result is contiguous with the
    /// keepdim shape (reduced axes of size 1).
    fn reduce(&self, layout: &Layout, axes: &[usize], op: ReduceOp) -> Result<Self>;
    /// Index of the largest element along `axis` (first one at ties), as i64, keepdim shape.
    fn argmax(&self, layout: &Layout, axis: usize) -> Result<Self>;
}

/// [`ReduceKernels::reduce`]: sorted, distinct axes of the layout.
pub fn check_reduce(op: ReduceOp, layout: &Layout, axes: &[usize]) -> Result<()> {
    if let Some(&a) = axes.iter().find(|&&a| a >= layout.rank()) {
        return Err(Error::shape(op.name(), format!("axis {a} is out of range for shape {}", layout.shape())));
    }
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::shape(op.name(), format!("axes {axes:?} are not sorted and distinct")));
    }
    Ok(())
}

/// [`ReduceKernels::argmax`]: an axis of the layout, with at least one element.
pub fn check_argmax(layout: &Layout, axis: usize) -> Result<()> {
    const OP: &str = "argmax";
    if axis >= layout.rank() {
        return Err(Error::shape(OP, format!("axis {axis} is out of range for shape {}", layout.shape())));
    }
    if layout.dims()[axis] == 0 {
        return Err(Error::shape(OP, format!("axis {axis} of shape {} is empty", layout.shape())));
    }
    Ok(())
}
