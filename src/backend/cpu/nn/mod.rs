//! CPU kernels for the fused nn ops, one file per op (the contracts are in
//! `backend/contract/nn/`).

pub mod attention;
pub mod conv;
pub mod cross_entropy;
pub mod dropout;
pub mod layer_norm;
mod patches;
pub mod pool;
pub mod softmax;
