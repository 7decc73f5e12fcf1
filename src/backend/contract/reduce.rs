//! The reduction family's contract: [`ReduceOp`] and [`ReduceKernels`].

use super::{check_dtype, COMPUTE_FLOATS};
use crate::types::{DType, Layout};
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

/// [`ReduceKernels::reduce`]: an f32 or f64 input, sorted, distinct axes of its layout.
pub fn check_reduce(op: ReduceOp, x: (DType, &Layout), axes: &[usize]) -> Result<()> {
    let (dtype, layout) = x;
    check_dtype(op.name(), dtype, COMPUTE_FLOATS)?;
    if let Some(&a) = axes.iter().find(|&&a| a >= layout.rank()) {
        return Err(Error::shape(op.name(), format!("axis {a} is out of range for shape {}", layout.shape())));
    }
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::shape(op.name(), format!("axes {axes:?} are not sorted and distinct")));
    }
    Ok(())
}

/// [`ReduceKernels::argmax`]: an f32 or f64 input, an axis of its layout with
/// at least one element.
pub fn check_argmax(x: (DType, &Layout), axis: usize) -> Result<()> {
    const OP: &str = "argmax";
    let (dtype, layout) = x;
    check_dtype(OP, dtype, COMPUTE_FLOATS)?;
    if axis >= layout.rank() {
        return Err(Error::shape(OP, format!("axis {axis} is out of range for shape {}", layout.shape())));
    }
    if layout.dims()[axis] == 0 {
        return Err(Error::shape(OP, format!("axis {axis} of shape {} is empty", layout.shape())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn reduce_wants_a_float_input_and_sorted_axes_inside_it() {
        let l = Layout::contiguous([2, 3, 4]);
        assert!(check_reduce(ReduceOp::Sum, (DType::F32, &l), &[0, 2]).is_ok());
        let e = check_reduce(ReduceOp::Max, (DType::F16, &l), &[9]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DType);
        assert!(e.to_string().contains("max") && e.message.starts_with("dtype f16 is not supported"), "{e}");
        let e = check_reduce(ReduceOp::Sum, (DType::F64, &l), &[3]).unwrap_err();
        assert!(e.message.contains("axis 3 is out of range for shape [2, 3, 4]"), "{e}");
        let e = check_reduce(ReduceOp::Min, (DType::F64, &l), &[1, 1]).unwrap_err();
        assert!(e.message.contains("not sorted and distinct"), "{e}");
    }

    #[test]
    fn argmax_wants_a_float_input_and_a_nonempty_axis() {
        let l = Layout::contiguous([2, 0]);
        assert!(check_argmax((DType::F32, &l), 0).is_ok());
        assert_eq!(check_argmax((DType::I64, &l), 0).unwrap_err().kind, ErrorKind::DType);
        assert!(check_argmax((DType::F32, &l), 2).unwrap_err().message.contains("out of range"));
        assert!(check_argmax((DType::F32, &l), 1).unwrap_err().message.contains("is empty"));
    }
}
