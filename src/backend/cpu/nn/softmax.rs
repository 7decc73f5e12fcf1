//! CPU kernels for `ops::nn::softmax`.

use crate::backend::cpu::CpuStorage;
use crate::ops::nn::softmax::SoftmaxKernels;

impl SoftmaxKernels for CpuStorage {}
