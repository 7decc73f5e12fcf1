//! CPU kernels for `ops::matmul`.

use super::CpuStorage;
use crate::ops::matmul::MatmulKernels;
use crate::tensor::Layout;
use crate::{Error, Result};

impl MatmulKernels for CpuStorage {
    fn matmul(&self, _lhs_layout: &Layout, _rhs: &Self, _rhs_layout: &Layout) -> Result<Self> {
        Err(Error::dtype("matmul", "not yet implemented"))
    }
}
