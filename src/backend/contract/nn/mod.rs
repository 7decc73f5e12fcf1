//! The contracts of the fused neural-network ops, one file per op (the ops
//! are in `ops/nn/`, the kernels in `cpu/nn/` and `cuda/nn/`).

pub mod attention;
pub mod conv;
pub mod cross_entropy;
pub mod dropout;
pub mod layer_norm;
pub mod pool;
pub mod softmax;
