//! Indexing on CUDA (cuda/index.cu).
use super::CudaStorage;
#[allow(unused_imports)]
use super::{kernels, Arg};
use crate::tensor::{Layout, Shape};
use crate::{Error, Result};

fn todo(op: &'static str) -> Error {
    Error::device(op, "not implemented on CUDA yet")
}

use crate::ops::index::IndexKernels;
impl IndexKernels for CudaStorage {
    fn index_select(&self, _l: &Layout, _axis: usize, _ids: &Self, _il: &Layout) -> Result<Self> {
        Err(todo("index_select"))
    }
    fn index_add(&self, _l: &Layout, _axis: usize, _ids: &Self, _il: &Layout, _src: &Self, _sl: &Layout) -> Result<Self> {
        Err(todo("index_add"))
    }
    fn gather(&self, _l: &Layout, _axis: usize, _ids: &Self, _il: &Layout) -> Result<Self> {
        Err(todo("gather"))
    }
    fn scatter_add(&self, _l: &Layout, _axis: usize, _ids: &Self, _il: &Layout, _src: &Self, _sl: &Layout) -> Result<Self> {
        Err(todo("scatter_add"))
    }
    fn index_select_backward(&self, _l: &Layout, _axis: usize, _ids: &Self, _il: &Layout, _s: &Shape) -> Result<Self> {
        Err(todo("index_select_backward"))
    }
    fn gather_backward(&self, _l: &Layout, _axis: usize, _ids: &Self, _il: &Layout, _s: &Shape) -> Result<Self> {
        Err(todo("gather_backward"))
    }
    fn cat(_parts: &[(&Self, &Layout)], _axis: usize) -> Result<Self> {
        Err(todo("cat"))
    }
}
