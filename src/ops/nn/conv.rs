//! conv (to be implemented).

/// The kernels a backend provides for conv.
pub trait ConvKernels: Sized {}
