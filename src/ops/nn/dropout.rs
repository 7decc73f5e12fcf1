//! Inverted dropout with an explicit, seeded random mask.
//!
//! Training: each element is zeroed with probability `p` and the survivors are
//! scaled by `1/(1−p)`, so the expected value is unchanged and evaluation needs
//! no rescaling. The scaled mask is drawn once on the host from the caller's
//! RNG (reproducible from its seed), applied with the multiply kernel and kept
//! for the backward pass, which multiplies the gradient by the same mask.

use crate::autograd::BackwardOp;
use crate::backend::cpu::unsupported_dtype;
use crate::backend::{CpuStorage, Storage};
use crate::ops::binary::{BinaryKernels, Mul};
use crate::tensor::{DType, Layout, Shape, Tensor};
use crate::{Error, Result};
use rand::distr::{Bernoulli, Distribution};
use rand::Rng;

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
    /// reproduces it.
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
        let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
        let scaled_mask = Self::dropout_mask(self.shape().clone(), p, self.dtype(), rng)?.scale(scale)?;
        let storage = match (&*self.storage(), &*scaled_mask.storage()) {
            (Storage::Cpu(x), Storage::Cpu(m)) => Storage::Cpu(x.binary(self.layout(), m, scaled_mask.layout(), Mul)?),
        };
        Ok(Tensor::from_op(
            storage,
            Layout::contiguous(self.shape().clone()),
            vec![self.clone()],
            DropoutBackward { scaled_mask },
        ))
    }

    /// The keep mask [`Tensor::dropout`] draws: 1 where an element survives,
    /// 0 (with probability `p`) where it is dropped, one draw per element in
    /// row-major order.
    ///
    /// ```
    /// use tamer::{rng, DType, Tensor};
    /// let m = Tensor::dropout_mask([4, 4], 0.5, DType::F64, &mut rng(1)).unwrap();
    /// assert!(m.to_vec::<f64>().unwrap().iter().all(|&v| v == 0.0 || v == 1.0));
    /// ```
    pub fn dropout_mask(shape: impl Into<Shape>, p: f64, dtype: DType, rng: &mut impl Rng) -> Result<Tensor> {
        check_p(p)?;
        if !dtype.is_float() {
            return Err(Error::dtype(OP, format!("mask dtype {dtype} is not a float dtype")));
        }
        let shape = shape.into();
        let drop = Bernoulli::new(p).map_err(|e| Error::value(OP, format!("drop probability {p}: {e}")))?;
        let values: Vec<f64> = (0..shape.numel()).map(|_| if drop.sample(rng) { 0.0 } else { 1.0 }).collect();
        Ok(Tensor::from_storage(
            Storage::Cpu(CpuStorage::from_f64_vec(&values, dtype)),
            Layout::contiguous(shape),
        ))
    }
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
