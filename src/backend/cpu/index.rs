//! CPU kernels for `ops::index`.

use super::CpuStorage;
use crate::ops::index::IndexKernels;

impl IndexKernels for CpuStorage {}
