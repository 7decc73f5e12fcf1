//! The softmax family's contract: [`SoftmaxKind`], [`SoftmaxKernels`] and the
//! validators both backends call.

use crate::backend::contract::{check_dtype, COMPUTE_FLOATS};
use crate::types::{DType, Layout};
use crate::{Error, Result};

/// Which of the two row functions a kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxKind {
    Softmax,
    LogSoftmax,
}

impl SoftmaxKind {
    pub fn name(self) -> &'static str {
        match self {
            SoftmaxKind::Softmax => "softmax",
            SoftmaxKind::LogSoftmax => "log_softmax",
        }
    }
}

/// The kernels a backend provides for softmax.
pub trait SoftmaxKernels: Sized {
    /// softmax or log-softmax along the last axis of the elements `layout`
    /// selects (any strides; a rank-0 layout is one row of one element).
    /// The result is contiguous with `layout`'s shape.
    fn softmax_last(&self, layout: &Layout, kind: SoftmaxKind) -> Result<Self>;
    /// The input gradient from the forward output `y` (`self`) and `dy`, both
    /// of the same shape (any strides); contiguous result.
    fn softmax_last_backward(&self, y_layout: &Layout, dy: &Self, dy_layout: &Layout, kind: SoftmaxKind) -> Result<Self>;
}

/// [`SoftmaxKernels::softmax_last`]: an f32 or f64 input (any layout).
pub fn check_softmax(kind: SoftmaxKind, x: (DType, &Layout)) -> Result<()> {
    check_dtype(kind.name(), x.0, COMPUTE_FLOATS)
}

/// [`SoftmaxKernels::softmax_last_backward`]: `y` and `dy` of one shape and
/// one dtype, f32 or f64.
pub fn check_softmax_backward(kind: SoftmaxKind, y: (DType, &Layout), dy: (DType, &Layout)) -> Result<()> {
    let op = kind.name();
    check_dtype(op, y.0, COMPUTE_FLOATS)?;
    if y.1.dims() != dy.1.dims() {
        return Err(Error::shape(
            op,
            format!(
                "backward got output shape {} and gradient shape {}; expected equal shapes",
                y.1.shape(),
                dy.1.shape()
            ),
        ));
    }
    if y.0 != dy.0 {
        return Err(Error::dtype(
            op,
            format!("backward got output dtype {} and gradient dtype {}; expected equal dtypes", y.0, dy.0),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn softmax_wants_f32_or_f64() {
        let l = Layout::contiguous([2, 3]);
        assert!(check_softmax(SoftmaxKind::Softmax, (DType::F64, &l)).is_ok());
        let e = check_softmax(SoftmaxKind::LogSoftmax, (DType::BF16, &l)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DType);
        assert!(
            e.to_string().contains("log_softmax") && e.message.starts_with("dtype bf16 is not supported"),
            "{e}"
        );
    }

    #[test]
    fn softmax_backward_wants_one_shape_and_one_float_dtype() {
        let (l, other) = (Layout::contiguous([2, 3]), Layout::contiguous([3, 2]));
        let k = SoftmaxKind::Softmax;
        assert!(check_softmax_backward(k, (DType::F32, &l), (DType::F32, &l)).is_ok());
        let e = check_softmax_backward(k, (DType::I64, &l), (DType::I64, &other)).unwrap_err();
        assert!(e.message.starts_with("dtype i64 is not supported"), "{e}");
        assert_eq!(
            check_softmax_backward(k, (DType::F32, &l), (DType::F32, &other)).unwrap_err().kind,
            ErrorKind::Shape
        );
        let e = check_softmax_backward(k, (DType::F32, &l), (DType::F64, &l)).unwrap_err();
        assert!(e.message.contains("output dtype f32 and gradient dtype f64"), "{e}");
    }
}
