//! CPU kernels for `ops::nn::cross_entropy`.

use crate::backend::cpu::CpuStorage;
use crate::ops::nn::cross_entropy::CrossEntropyKernels;

impl CrossEntropyKernels for CpuStorage {}
