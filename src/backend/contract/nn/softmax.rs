//! The softmax family's contract: [`SoftmaxKind`], [`SoftmaxKernels`] and the
//! backward validator both backends call.

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

/// [`SoftmaxKernels::softmax_last_backward`]: `y` and `dy` of one shape and one dtype.
pub fn check_softmax_backward(kind: SoftmaxKind, y: (DType, &Layout), dy: (DType, &Layout)) -> Result<()> {
    let op = kind.name();
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
