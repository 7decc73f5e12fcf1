//! cross_entropy (to be implemented).

/// The kernels a backend provides for cross_entropy.
pub trait CrossEntropyKernels: Sized {}
