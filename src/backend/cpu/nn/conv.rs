//! CPU kernels for `ops::nn::conv`.

use crate::backend::cpu::CpuStorage;
use crate::ops::nn::conv::ConvKernels;

impl ConvKernels for CpuStorage {}
