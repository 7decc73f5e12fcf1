//! conv2d on CUDA (cuda/conv.cu).
use crate::backend::cuda::CudaStorage;
#[allow(unused_imports)]
use crate::backend::cuda::{kernels, Arg};
use crate::tensor::Layout;
use crate::{Error, Result};

fn todo(op: &'static str) -> Error {
    Error::device(op, "not implemented on CUDA yet")
}
use crate::ops::nn::conv::{Conv2dParams, ConvKernels};
impl ConvKernels for CudaStorage {
    fn conv2d(&self, _xl: &Layout, _w: &Self, _wl: &Layout, _b: Option<(&Self, &Layout)>, _p: &Conv2dParams) -> Result<Self> {
        Err(todo("conv2d"))
    }
    fn conv2d_backward_input(&self, _l: &Layout, _w: &Self, _wl: &Layout, _p: &Conv2dParams) -> Result<Self> {
        Err(todo("conv2d"))
    }
    fn conv2d_backward_weight(&self, _l: &Layout, _x: &Self, _xl: &Layout, _p: &Conv2dParams) -> Result<Self> {
        Err(todo("conv2d"))
    }
    fn conv2d_backward_bias(&self, _l: &Layout, _p: &Conv2dParams) -> Result<Self> {
        Err(todo("conv2d"))
    }
}
