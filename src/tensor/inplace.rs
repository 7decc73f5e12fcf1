//! In-place writes, for initialisers and `Param::set`. They bypass autodiff:
//! call them on variables between steps, never inside a forward pass. (The
//! optimizers update parameters through the backends' `OptimKernels`.)

use super::Tensor;
use crate::{Error, Result};

impl Tensor {
    /// Overwrite this tensor's elements with `src`'s (same shape and dtype).
    /// Every view sharing the storage sees the change.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if self.shape() != src.shape() {
            return Err(Error::shape(
                "assign",
                format!("destination shape {} differs from source shape {}", self.shape(), src.shape()),
            ));
        }
        self.same_dtype_device("assign", src)?;
        if self.same_storage(src) {
            let copy = src.storage().copy_contiguous(src.layout())?;
            let layout = crate::types::Layout::contiguous(src.shape().clone());
            return self.storage_mut().copy_into(self.layout(), &copy, &layout);
        }
        let src_storage = src.storage();
        self.storage_mut().copy_into(self.layout(), &src_storage, src.layout())
    }
}
