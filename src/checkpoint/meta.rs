//! Reading a checkpoint's structure safely: tensors of a required rank, and
//! the structured (JSON) metadata entries tamer writes beside the tensors.

use super::Checkpoint;
use crate::{Error, Result};

impl Checkpoint {
    /// The dimensions of tensor `name`, which must have rank `N`; `pattern`
    /// (e.g. `"[D, C, p, p]"`) names them in the error. For code that reads a
    /// model's configuration off its shapes: a crafted file may hold a scalar
    /// where a matrix belongs.
    ///
    /// ```
    /// use tamer::{checkpoint::Checkpoint, Tensor};
    /// let ckpt = Checkpoint::from_tensors("f", vec![("w".into(), Tensor::scalar(1.0f32))]);
    /// let e = ckpt.dims_of::<2>("w", "[H, D]").unwrap_err().to_string();
    /// assert!(e.contains("f: w must be [H, D], got []"), "{e}");
    /// ```
    pub fn dims_of<const N: usize>(&self, name: &str, pattern: &str) -> Result<[usize; N]> {
        let t = self.get(name)?;
        <[usize; N]>::try_from(t.dims())
            .map_err(|_| Error::format("Checkpoint::dims_of", format!("{}: {name} must be {pattern}, got {}", self.source, t.shape())))
    }
}
