//! Getting values back to the host.

use super::Tensor;
use crate::backend::cpu::CpuElem;
use crate::{Error, Result};

impl Tensor {
    /// The elements in row-major order, as `T` (which must be the tensor's dtype).
    pub fn to_vec<T: CpuElem>(&self) -> Result<Vec<T>> {
        let storage = self.storage();
        storage.to_cpu()?.typed::<T>("to_vec", self.layout())
    }
    /// The elements converted to f64, whatever the dtype.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        let storage = self.storage();
        Ok(storage.to_cpu()?.to_f64_vec(self.layout()))
    }
    /// The single value of a one-element tensor, as f64.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::shape("to_scalar", format!("expected one element, got shape {}", self.shape())));
        }
        Ok(self.to_f64_vec()?[0])
    }
    /// Rows of a 2-D tensor as nested Vecs (handy in tests).
    pub fn to_vec2<T: CpuElem>(&self) -> Result<Vec<Vec<T>>> {
        if self.rank() != 2 {
            return Err(Error::shape("to_vec2", format!("expected a rank-2 tensor, got shape {}", self.shape())));
        }
        let flat = self.to_vec::<T>()?;
        let cols = self.dims()[1].max(1);
        Ok(flat.chunks(cols).map(|c| c.to_vec()).collect())
    }
}
