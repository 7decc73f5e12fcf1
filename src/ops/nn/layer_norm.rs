//! layer_norm (to be implemented).

/// The kernels a backend provides for layer_norm.
pub trait LayerNormKernels: Sized {}
