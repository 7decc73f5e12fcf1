//! Reductions on CUDA (cuda/reduce.cu).
use super::CudaStorage;
#[allow(unused_imports)]
use super::{kernels, Arg};
use crate::tensor::Layout;
use crate::{Error, Result};

fn todo(op: &'static str) -> Error {
    Error::device(op, "not implemented on CUDA yet")
}

use crate::ops::reduce::{ReduceKernels, ReduceOp};
impl ReduceKernels for CudaStorage {
    fn reduce(&self, _layout: &Layout, _axes: &[usize], op: ReduceOp) -> Result<Self> {
        Err(todo(op.name()))
    }
    fn argmax(&self, _layout: &Layout, _axis: usize) -> Result<Self> {
        Err(todo("argmax"))
    }
}
