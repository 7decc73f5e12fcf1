//! softmax / log_softmax on CUDA (cuda/softmax.cu).
use crate::backend::cuda::CudaStorage;
#[allow(unused_imports)]
use crate::backend::cuda::{kernels, Arg};
use crate::tensor::Layout;
use crate::{Error, Result};

fn todo(op: &'static str) -> Error {
    Error::device(op, "not implemented on CUDA yet")
}
use crate::ops::nn::softmax::{SoftmaxKernels, SoftmaxKind};
impl SoftmaxKernels for CudaStorage {
    fn softmax_last(&self, _l: &Layout, kind: SoftmaxKind) -> Result<Self> {
        Err(todo(kind.name()))
    }
    fn softmax_last_backward(&self, _yl: &Layout, _dy: &Self, _dyl: &Layout, kind: SoftmaxKind) -> Result<Self> {
        Err(todo(kind.name()))
    }
}
