//! Inverted dropout with an explicit, seeded random mask.
//!
//! Training: each element is zeroed with probability `p` and the survivors are
//! scaled by `1/(1−p)`, so the expected value is unchanged and evaluation needs
//! no rescaling. The scaled mask is drawn once on the host from the caller's
//! RNG (reproducible from its seed), applied with the multiply kernel and kept
//! for the backward pass, which multiplies the gradient by the same mask.

use crate::autograd::BackwardOp;
use crate::backend::cpu::{unsupported_dtype, CpuElem};
use crate::backend::{CpuStorage, Storage};
use crate::ops::binary::{BinaryKernels, Mul};
use crate::tensor::{DType, Layout, Shape, Tensor};
use crate::{Error, Result};
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
        let keep = keep_flags(self.numel(), p, rng);
        let scaled_mask = mask_tensor(&keep, scale, self.shape().clone(), self.dtype())?.to_device(self.device())?;
        let storage = crate::dispatch!(OP, [x = &*self.storage(), m = &*scaled_mask.storage()] => x.binary(self.layout(), m, scaled_mask.layout(), Mul)?);
        Ok(Tensor::from_op(
            storage,
            Layout::contiguous(self.shape().clone()),
            vec![self.clone()],
            DropoutBackward { scaled_mask },
        ))
    }

    /// The keep mask [`Tensor::dropout`] draws: 1 where an element survives,
    /// 0 (with probability `p`) where it is dropped; one 32-bit draw per element,
    /// in row-major order.
    ///
    /// ```
    /// use tamer::{rng, DType, Tensor};
    /// let m = Tensor::dropout_mask([4, 4], 0.5, DType::F64, &mut rng(1)).unwrap();
    /// assert!(m.to_vec::<f64>().unwrap().iter().all(|&v| v == 0.0 || v == 1.0));
    /// ```
    pub fn dropout_mask(shape: impl Into<Shape>, p: f64, dtype: DType, rng: &mut impl Rng) -> Result<Tensor> {
        check_p(p)?;
        let shape = shape.into();
        let keep = keep_flags(shape.numel(), p, rng);
        mask_tensor(&keep, 1.0, shape, dtype)
    }
}

/// One keep/drop decision per element, in row-major order: an element is
/// dropped when a uniform 32-bit draw falls below `p·2³²` (two draws per `u64`).
fn keep_flags(n: usize, p: f64, rng: &mut impl Rng) -> Vec<bool> {
    // p = 1 gives 2³², above every u32: everything is dropped.
    let threshold = (p * 4_294_967_296.0) as u64;
    let mut keep = Vec::with_capacity(n + 1);
    while keep.len() < n {
        let bits = rng.next_u64();
        keep.push((bits & 0xFFFF_FFFF) >= threshold);
        keep.push((bits >> 32) >= threshold);
    }
    keep.truncate(n);
    keep
}

/// `value` where kept, 0 where dropped, as a tensor of `dtype`.
fn mask_tensor(keep: &[bool], value: f64, shape: Shape, dtype: DType) -> Result<Tensor> {
    fn fill<T: CpuElem>(keep: &[bool], value: f64) -> CpuStorage {
        let (on, off) = (T::from_f64(value), T::from_f64(0.0));
        T::wrap(keep.iter().map(|&k| if k { on } else { off }).collect())
    }
    let storage = match dtype {
        DType::F16 => fill::<half::f16>(keep, value),
        DType::BF16 => fill::<half::bf16>(keep, value),
        DType::F32 => fill::<f32>(keep, value),
        DType::F64 => fill::<f64>(keep, value),
        DType::I64 => return Err(Error::dtype(OP, "mask dtype i64 is not a float dtype")),
    };
    Ok(Tensor::from_storage(Storage::Cpu(storage), Layout::contiguous(shape)))
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
