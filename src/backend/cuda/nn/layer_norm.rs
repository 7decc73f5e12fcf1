//! layer_norm on CUDA (cuda/layer_norm.cu).
use crate::backend::cuda::CudaStorage;
#[allow(unused_imports)]
use crate::backend::cuda::{kernels, Arg};
use crate::tensor::Layout;
use crate::{Error, Result};

fn todo(op: &'static str) -> Error {
    Error::device(op, "not implemented on CUDA yet")
}
use crate::ops::nn::layer_norm::{LayerNormForward, LayerNormGrads, LayerNormKernels};
impl LayerNormKernels for CudaStorage {
    fn layer_norm(&self, _l: &Layout, _w: Option<(&Self, &Layout)>, _b: Option<(&Self, &Layout)>, _eps: f64) -> Result<LayerNormForward<Self>> {
        Err(todo("layer_norm"))
    }
    fn layer_norm_backward(
        &self,
        _xl: &Layout,
        _w: Option<(&Self, &Layout)>,
        _mean: &Self,
        _rstd: &Self,
        _dy: &Self,
        _dyl: &Layout,
        _dw: bool,
        _db: bool,
    ) -> Result<LayerNormGrads<Self>> {
        Err(todo("layer_norm"))
    }
}
