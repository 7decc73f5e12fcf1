//! Fused neural-network kernels on CUDA, one file per op as in
//! `backend/contract/nn/` (and `backend/cpu/nn/`).

pub mod attention;
pub mod conv;
pub mod cross_entropy;
pub mod dropout;
pub mod layer_norm;
pub mod pool;
pub mod softmax;
