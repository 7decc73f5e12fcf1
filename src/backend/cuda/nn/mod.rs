//! Fused neural-network kernels on CUDA, one file per op as in `ops/nn`.

pub mod conv;
pub mod cross_entropy;
pub mod dropout;
pub mod layer_norm;
pub mod pool;
pub mod softmax;
