//! Pooling on CUDA (cuda/pool.cu).
use crate::backend::cuda::CudaStorage;
#[allow(unused_imports)]
use crate::backend::cuda::{kernels, Arg};
use crate::tensor::Layout;
use crate::{Error, Result};

fn todo(op: &'static str) -> Error {
    Error::device(op, "not implemented on CUDA yet")
}
use crate::ops::nn::pool::{Pool2dParams, PoolKernels};
impl PoolKernels for CudaStorage {
    fn max_pool2d(&self, _l: &Layout, _p: &Pool2dParams) -> Result<(Self, Self)> {
        Err(todo("max_pool2d"))
    }
    fn max_pool2d_backward(&self, _l: &Layout, _i: &Self, _il: &Layout, _p: &Pool2dParams) -> Result<Self> {
        Err(todo("max_pool2d"))
    }
    fn avg_pool2d(&self, _l: &Layout, _p: &Pool2dParams, _c: bool) -> Result<Self> {
        Err(todo("avg_pool2d"))
    }
    fn avg_pool2d_backward(&self, _l: &Layout, _p: &Pool2dParams, _c: bool) -> Result<Self> {
        Err(todo("avg_pool2d"))
    }
}
