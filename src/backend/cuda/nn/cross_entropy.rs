//! cross_entropy on CUDA (cuda/cross_entropy.cu).
use crate::backend::cuda::CudaStorage;
#[allow(unused_imports)]
use crate::backend::cuda::{kernels, Arg};
use crate::tensor::Layout;
use crate::{Error, Result};

fn todo(op: &'static str) -> Error {
    Error::device(op, "not implemented on CUDA yet")
}
use crate::ops::nn::cross_entropy::{CrossEntropyForward, CrossEntropyKernels, CrossEntropyOptions};
impl CrossEntropyKernels for CudaStorage {
    fn cross_entropy(&self, _ll: &Layout, _t: &Self, _tl: &Layout, _o: &CrossEntropyOptions) -> Result<CrossEntropyForward<Self>> {
        Err(todo("cross_entropy"))
    }
    fn cross_entropy_backward(
        &self,
        _ll: &Layout,
        _t: &Self,
        _tl: &Layout,
        _m: &Self,
        _s: &Self,
        _g: &Self,
        _gl: &Layout,
        _o: &CrossEntropyOptions,
    ) -> Result<Self> {
        Err(todo("cross_entropy"))
    }
}
