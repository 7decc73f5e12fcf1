//! Matmul on CUDA (cuda/matmul.cu).
use super::CudaStorage;
#[allow(unused_imports)]
use super::{kernels, Arg};
use crate::tensor::Layout;
use crate::{Error, Result};

fn todo(op: &'static str) -> Error {
    Error::device(op, "not implemented on CUDA yet")
}

use crate::ops::matmul::MatmulKernels;
impl MatmulKernels for CudaStorage {
    fn matmul(&self, _l: &Layout, _rhs: &Self, _r: &Layout) -> Result<Self> {
        Err(todo("matmul"))
    }
}
