//! Fused neural-network ops with hand-written backward passes.
//!
//! Each op has its own module and its own kernel trait; `NnKernels` gathers
//! them so `BackendStorage` can name the whole family at once.

pub mod attention;
pub mod conv;
pub mod cross_entropy;
pub mod dropout;
pub mod layer_norm;
pub mod pool;
pub mod softmax;

/// Every fused-op kernel trait; implemented automatically for any type that
/// implements them all.
pub trait NnKernels:
    softmax::SoftmaxKernels + layer_norm::LayerNormKernels + cross_entropy::CrossEntropyKernels + conv::ConvKernels + pool::PoolKernels
{
}

impl<S> NnKernels for S where
    S: softmax::SoftmaxKernels + layer_norm::LayerNormKernels + cross_entropy::CrossEntropyKernels + conv::ConvKernels + pool::PoolKernels
{
}
