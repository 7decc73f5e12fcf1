//! CPU kernels for `ops::nn`, one file per op.

pub mod conv;
pub mod cross_entropy;
pub mod layer_norm;
pub mod pool;
pub mod softmax;
