//! Binary kernels on CUDA (cuda/binary.cu).
use super::CudaStorage;
#[allow(unused_imports)]
use super::{kernels, Arg};
use crate::tensor::Layout;
use crate::{Error, Result};

fn todo(op: &'static str) -> Error {
    Error::device(op, "not implemented on CUDA yet")
}

use crate::ops::binary::{BinaryFn, BinaryKernels};
impl BinaryKernels for CudaStorage {
    fn binary<B: BinaryFn>(&self, _l: &Layout, _rhs: &Self, _r: &Layout, _f: B) -> Result<Self> {
        Err(todo(B::NAME))
    }
    fn where_cond(&self, _c: &Layout, _t: &Self, _tl: &Layout, _f: &Self, _fl: &Layout) -> Result<Self> {
        Err(todo("where_cond"))
    }
}
