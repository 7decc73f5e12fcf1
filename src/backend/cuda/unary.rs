//! Unary kernels on CUDA (cuda/unary.cu).
use super::CudaStorage;
#[allow(unused_imports)]
use super::{kernels, Arg};
use crate::tensor::Layout;
use crate::{Error, Result};

fn todo(op: &'static str) -> Error {
    Error::device(op, "not implemented on CUDA yet")
}

use crate::ops::unary::{UnaryFn, UnaryKernels};
impl UnaryKernels for CudaStorage {
    fn unary<U: UnaryFn>(&self, _layout: &Layout, _f: U) -> Result<Self> {
        Err(todo(U::NAME))
    }
    fn unary_backward<U: UnaryFn>(&self, _x_layout: &Layout, _y: &Self, _y_layout: &Layout, _dy: &Self, _dy_layout: &Layout, _f: U) -> Result<Self> {
        Err(todo(U::NAME))
    }
}
