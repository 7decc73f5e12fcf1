//! Fused neural-network ops with hand-written backward passes, one module
//! per op; each op's kernel trait is in `backend/contract/nn/`.

pub mod attention;
pub mod conv;
pub mod cross_entropy;
pub mod dropout;
pub mod layer_norm;
pub mod pool;
pub mod qkv_attention;
pub mod softmax;
