//! pool (to be implemented).

/// The kernels a backend provides for pool.
pub trait PoolKernels: Sized {}
