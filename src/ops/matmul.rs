//! Matrix multiplication: 2-D and batched with broadcast batch dimensions.

use crate::tensor::Layout;
use crate::Result;

/// The kernels a backend provides for matrix products.
pub trait MatmulKernels: Sized {
    /// `lhs @ rhs` for layouts of shape `[batch.., m, k]` and `[batch.., k, n]`
    /// whose batch dims are already broadcast to the same shape (stride 0 where
    /// stretched). Any strides are allowed, so transposed operands need no copy.
    /// The result is contiguous `[batch.., m, n]`.
    fn matmul(&self, lhs_layout: &Layout, rhs: &Self, rhs_layout: &Layout) -> Result<Self>;
}
