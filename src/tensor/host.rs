//! Getting values back to the host.

use super::Tensor;
use crate::types::Element;
use crate::{Error, Result};

impl Tensor {
    /// The elements in row-major order, as `T` (which must be the tensor's dtype).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.storage().to_vec::<T>("to_vec", self.layout())
    }
    /// The elements converted to f64, whatever the dtype.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        self.storage().to_f64_vec(self.layout())
    }
    /// The single value of a one-element tensor, as f64.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::shape("to_scalar", format!("expected one element, got shape {}", self.shape())));
        }
        Ok(self.to_f64_vec()?[0])
    }
    /// Rows of a 2-D tensor as nested Vecs (handy in tests).
    pub fn to_vec2<T: Element>(&self) -> Result<Vec<Vec<T>>> {
        if self.rank() != 2 {
            return Err(Error::shape("to_vec2", format!("expected a rank-2 tensor, got shape {}", self.shape())));
        }
        let flat = self.to_vec::<T>()?;
        let cols = self.dims()[1].max(1);
        Ok(flat.chunks(cols).map(|c| c.to_vec()).collect())
    }
}
