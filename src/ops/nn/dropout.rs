//! Inverted dropout with an explicit, seeded random mask.
//!
//! Training: each element is zeroed with probability `p` and the survivors are
//! scaled by `1/(1−p)`, so the expected value is unchanged and evaluation needs
//! no rescaling. The scaled mask comes from the backend's `dropout_mask`
//! kernel, is applied with the multiply kernel and is kept for the backward
//! pass, which multiplies the gradient by the same mask.
//!
//! Where the mask comes from depends on the tensor's device (the rule and
//! both generators are in `backend/contract/nn/dropout.rs`):
//! - CPU: drawn on the host from the caller's RNG, two 32-bit decisions per
//!   `next_u64` ([`keep_flags`]), reproducible from the RNG's seed.
//! - CUDA: ONE `u64` seed is drawn from the caller's RNG and the mask is
//!   generated on the device by the counter-based Philox4x32-10 generator
//!   (cuda/dropout.cu), so no mask crosses the bus. [`philox4x32_10`] and
//!   [`philox_keep_flags`] are the host reference of that generator and rule
//!   ([`philox_dropout_mask`] builds the mask tensor).

use crate::autograd::BackwardOp;
use crate::backend::contract::binary::BinaryKernels;
use crate::backend::contract::unsupported_dtype;
use crate::backend::Storage;
use crate::ops::binary::Mul;
use crate::profile::{self, Cost};
use crate::tensor::Tensor;
use crate::types::{DType, Layout, Shape};
use crate::{Error, Result};
use rand::Rng;

pub use crate::backend::contract::nn::dropout::{drop_threshold, keep_flags, keep_scale, philox4x32_10, philox_keep_flags};

const OP: &str = "dropout";

fn check_p(p: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::value(OP, format!("drop probability {p} is outside [0, 1]")));
    }
    Ok(())
}

impl Tensor {
    /// Inverted dropout: `x · mask / (1 − p)` with `mask` 0 with probability
    /// `p`, drawn from `rng`. The identity when `train` is false or `p` is 0
    /// (the RNG is then not used); all zeros when `p` is 1. The same seed gives
    /// the same mask; [`Tensor::dropout_mask`] with a fresh RNG of that seed
    /// reproduces it. On a CUDA device the mask is generated there from one
    /// `u64` drawn from `rng` (Philox4x32-10, see the module docs), so it
    /// differs from the CPU's; [`philox_dropout_mask`] reproduces it.
    ///
    /// ```
    /// use tamer::{rng, DType, Tensor};
    /// let x = Tensor::ones([1000], DType::F32).unwrap();
    /// let y = x.dropout(0.25, true, &mut rng(7)).unwrap().to_vec::<f32>().unwrap();
    /// // Survivors are scaled by 1/(1−p); about a quarter are dropped.
    /// assert!(y.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
    /// let dropped = y.iter().filter(|&&v| v == 0.0).count();
    /// assert!((150..350).contains(&dropped));
    /// // Same seed, same mask; evaluation mode is the identity.
    /// assert_eq!(x.dropout(0.25, true, &mut rng(7)).unwrap().to_vec::<f32>().unwrap(), y);
    /// assert_eq!(x.dropout(0.25, false, &mut rng(7)).unwrap().to_vec::<f32>().unwrap(), vec![1.0; 1000]);
    /// assert!(x.dropout(1.5, true, &mut rng(7)).is_err());
    /// ```
    pub fn dropout(&self, p: f64, train: bool, rng: &mut impl Rng) -> Result<Tensor> {
        check_p(p)?;
        if !self.dtype().is_compute_float() {
            return Err(unsupported_dtype(OP, self.dtype()));
        }
        if !train || p == 0.0 {
            return Ok(self.clone());
        }
        let (dtype, n) = (self.dtype(), self.numel());
        // The mask drawn and written, then x read with it and the output written.
        let _op = profile::op(OP, || Cost::elementwise(dtype, 2 * n, 2 * n))?;
        let mask = Storage::dropout_mask_on(self.device(), dtype, n, p, rng)?;
        self.apply_dropout_mask(Tensor::from_storage(mask, Layout::contiguous(self.shape().clone())))
    }

    /// `self · scaled_mask` (same shape, same device), recorded for backward.
    fn apply_dropout_mask(&self, scaled_mask: Tensor) -> Result<Tensor> {
        let storage = crate::dispatch!(OP, [x = &*self.storage(), m = &*scaled_mask.storage()] => x.binary(self.layout(), m, scaled_mask.layout(), Mul)?);
        Ok(Tensor::from_op(
            storage,
            Layout::contiguous(self.shape().clone()),
            vec![self.clone()],
            DropoutBackward { scaled_mask },
        ))
    }

    /// The keep mask [`Tensor::dropout`] draws on the CPU: 1 where an element
    /// survives, 0 (with probability `p`) where it is dropped; one 32-bit draw
    /// per element, in row-major order.
    ///
    /// ```
    /// use tamer::{rng, DType, Tensor};
    /// let m = Tensor::dropout_mask([4, 4], 0.5, DType::F64, &mut rng(1)).unwrap();
    /// assert!(m.to_vec::<f64>().unwrap().iter().all(|&v| v == 0.0 || v == 1.0));
    /// ```
    pub fn dropout_mask(shape: impl Into<Shape>, p: f64, dtype: DType, rng: &mut impl Rng) -> Result<Tensor> {
        check_p(p)?;
        let shape = shape.into();
        check_mask(&shape, dtype)?;
        let keep = keep_flags(shape.numel(), p, rng);
        mask_tensor(&keep, 1.0, shape, dtype)
    }
}

/// An error unless a mask of `shape` and `dtype` can be made: a float dtype,
/// and a shape whose element count fits (checked before anything is counted
/// or drawn; the values pass through an f64 buffer).
fn check_mask(shape: &Shape, dtype: DType) -> Result<()> {
    if !dtype.is_float() {
        return Err(Error::dtype(OP, format!("mask dtype {dtype} is not a float dtype")));
    }
    shape.check_size(OP, 8)
}

/// `value` where kept, 0 where dropped, as a (host) tensor of `dtype`: the
/// values are exact in f64 and rounded once to `dtype`.
fn mask_tensor(keep: &[bool], value: f64, shape: Shape, dtype: DType) -> Result<Tensor> {
    let values: Vec<f64> = keep.iter().map(|&k| if k { value } else { 0.0 }).collect();
    Tensor::from_vec(values, shape)?.to_dtype(dtype)
}

struct DropoutBackward {
    /// 0 or 1/(1−p) per element, the input's shape.
    scaled_mask: Tensor,
}

impl BackwardOp for DropoutBackward {
    fn name(&self) -> &'static str {
        OP
    }
    fn backward(&self, _inputs: &[Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad.mul(&self.scaled_mask)?)])
    }
}

/// The scaled mask (`1/(1−p)` kept, 0 dropped) that [`Tensor::dropout`] uses on
/// a CUDA device for a tensor of `shape` and `dtype` when the caller's RNG
/// yields `seed` as its next `u64`, built on the host.
///
/// ```
/// use tamer::ops::nn::dropout::philox_dropout_mask;
/// let m = philox_dropout_mask([2, 3], 0.5, 42, tamer::DType::F32).unwrap().to_vec::<f32>().unwrap();
/// assert!(m.iter().all(|&v| v == 0.0 || v == 2.0));
/// ```
pub fn philox_dropout_mask(shape: impl Into<Shape>, p: f64, seed: u64, dtype: DType) -> Result<Tensor> {
    check_p(p)?;
    let shape = shape.into();
    check_mask(&shape, dtype)?;
    let keep = philox_keep_flags(shape.numel(), p, seed);
    mask_tensor(&keep, keep_scale(p), shape, dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_mask_holds_the_scale_or_zero() {
        let m = philox_dropout_mask([5, 7], 0.25, 3, DType::F64).unwrap().to_vec::<f64>().unwrap();
        assert!(m.iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
        assert!(philox_dropout_mask([2], 1.5, 3, DType::F32).is_err());
        assert!(philox_dropout_mask([2], 0.5, 3, DType::I64).is_err());
    }
}
