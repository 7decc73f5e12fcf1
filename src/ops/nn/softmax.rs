//! softmax (to be implemented).

/// The kernels a backend provides for softmax.
pub trait SoftmaxKernels: Sized {}
