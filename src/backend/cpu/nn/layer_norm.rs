//! CPU kernels for `ops::nn::layer_norm`.

use crate::backend::cpu::CpuStorage;
use crate::ops::nn::layer_norm::LayerNormKernels;

impl LayerNormKernels for CpuStorage {}
