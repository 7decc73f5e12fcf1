//! CPU kernels for `ops::nn::pool`.

use crate::backend::cpu::CpuStorage;
use crate::ops::nn::pool::PoolKernels;

impl PoolKernels for CpuStorage {}
