//! The matrix-product family's contract: [`MatmulKernels`] and the layout
//! check every backend's kernel makes before it reads.

use crate::types::Layout;
use crate::{Error, Result};

/// The kernels a backend provides for matrix products.
pub trait MatmulKernels: Sized {
    /// `lhs @ rhs` for layouts of shape `[batch.., m, k]` and `[batch.., k, n]`
    /// whose batch dims are already broadcast to the same shape (stride 0 where
    /// stretched). Any strides are allowed, so transposed operands need no copy.
    /// The result is contiguous `[batch.., m, n]`. `k = 0` gives zeros.
    /// Kernels check that both layouts lie inside their storage and return an
    /// error (never read out of bounds) when they do not.
    fn matmul(&self, lhs_layout: &Layout, rhs: &Self, rhs_layout: &Layout) -> Result<Self>;
}

/// The contract every backend's matmul kernel checks first: `[batch.., m, k]`
/// and `[batch.., k, n]` layouts with equal batch dims and k, each lying inside
/// its storage (kernels read through raw pointers, so an out-of-bounds layout
/// must be an error, never a read).
pub fn check_kernel_layouts(lhs: &Layout, lhs_len: usize, rhs: &Layout, rhs_len: usize) -> Result<()> {
    let (r, a, b) = (lhs.rank(), lhs.dims(), rhs.dims());
    if r < 2 || rhs.rank() != r || a[..r - 2] != b[..r - 2] || a[r - 1] != b[r - 2] {
        return Err(Error::shape(
            "matmul",
            format!(
                "kernel layouts {} and {} do not form [batch.., m, k] @ [batch.., k, n] with equal batch dims and k",
                lhs.shape(),
                rhs.shape()
            ),
        ));
    }
    for (side, layout, len) in [("lhs", lhs, lhs_len), ("rhs", rhs, rhs_len)] {
        if layout.required_len() > len {
            return Err(Error::shape(
                "matmul",
                format!(
                    "{side} layout (shape {}, strides {:?}, offset {}) reaches element {} of a storage of {len}",
                    layout.shape(),
                    layout.strides(),
                    layout.offset(),
                    layout.required_len() - 1
                ),
            ));
        }
    }
    Ok(())
}
