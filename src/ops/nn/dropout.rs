//! Inverted dropout with an explicit, seeded random mask.
//!
//! Training: each element is zeroed with probability `p` and the survivors are
//! scaled by `1/(1−p)`, so the expected value is unchanged and evaluation needs
//! no rescaling. The scaled mask is applied with the multiply kernel and kept
//! for the backward pass, which multiplies the gradient by the same mask.
//!
//! Where the mask comes from depends on the tensor's device:
//! - CPU: drawn on the host from the caller's RNG, two 32-bit decisions per
//!   `next_u64` (`keep_flags`), reproducible from the RNG's seed.
//! - CUDA: ONE `u64` seed is drawn from the caller's RNG and the mask is
//!   generated on the device by the counter-based Philox4x32-10 generator
//!   (cuda/dropout.cu), so no mask crosses the bus. [`philox4x32_10`] and
//!   [`philox_keep_flags`] are the host reference of that generator and rule
//!   ([`philox_dropout_mask`] builds the mask tensor), tested here against the
//!   published Random123 known-answer vectors and in the CUDA tests against
//!   the device mask, bit for bit.

use crate::autograd::BackwardOp;
use crate::backend::cpu::{unsupported_dtype, CpuElem};
use crate::backend::{CpuStorage, Storage};
use crate::ops::binary::{BinaryKernels, Mul};
#[cfg(feature = "cuda")]
use crate::tensor::Device;
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
        #[cfg(feature = "cuda")]
        if let Device::Cuda(_) = self.device() {
            let seed = rng.next_u64();
            return self.apply_dropout_mask(self.cuda_philox_mask(p, seed)?);
        }
        let keep = keep_flags(self.numel(), p, rng);
        let scaled_mask = mask_tensor(&keep, keep_scale(p), self.shape().clone(), self.dtype())?.to_device(self.device())?;
        self.apply_dropout_mask(scaled_mask)
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

    /// The scaled Philox mask for `self`'s shape and dtype, generated on its CUDA device.
    #[cfg(feature = "cuda")]
    fn cuda_philox_mask(&self, p: f64, seed: u64) -> Result<Tensor> {
        let mask = match &*self.storage() {
            Storage::Cuda(s) => crate::backend::cuda::nn::dropout::philox_scaled_mask(s.cuda_device(), self.dtype(), self.numel(), p, seed)?,
            _ => return Err(Error::device(OP, format!("expected a CUDA tensor, got one on {}", self.device()))),
        };
        Ok(Tensor::from_storage(Storage::Cuda(mask), Layout::contiguous(self.shape().clone())))
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

/// A uniform 32-bit draw below this drops its element: `floor(p·2³²)`. p = 1
/// gives 2³², above every u32: everything is dropped.
pub fn drop_threshold(p: f64) -> u64 {
    (p * 4_294_967_296.0) as u64
}

/// The value of a kept element in the scaled mask: `1/(1−p)`, 0 for p = 1.
pub fn keep_scale(p: f64) -> f64 {
    if p < 1.0 {
        1.0 / (1.0 - p)
    } else {
        0.0
    }
}

/// One keep/drop decision per element, in row-major order: an element is
/// dropped when a uniform 32-bit draw falls below `p·2³²` (two draws per `u64`).
fn keep_flags(n: usize, p: f64, rng: &mut impl Rng) -> Vec<bool> {
    let threshold = drop_threshold(p);
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

// ---- Philox4x32-10: the CUDA mask's generator, on the host --------------------

/// Philox's round multipliers (Random123's PHILOX_M4x32_0/1) and key
/// increments (PHILOX_W32_0/1: the golden ratio and √3 − 1, as 32-bit fractions).
const PHILOX_M: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
const PHILOX_W: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

/// Philox4x32-10 (Salmon et al., SC 2011; Random123's `philox4x32_R(10, ..)`):
/// a keyed bijection of 128-bit counters. Ten rounds, each two 32×32→64-bit
/// multiplies mixing the even words into the odd ones, the key bumped by the
/// Weyl constants between rounds. The same function as `philox4x32_10` in
/// cuda/dropout.cu.
///
/// ```
/// use tamer::ops::nn::dropout::philox4x32_10;
/// assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
/// ```
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W[0]);
            k[1] = k[1].wrapping_add(PHILOX_W[1]);
        }
        let p0 = u64::from(PHILOX_M[0]) * u64::from(c[0]);
        let p1 = u64::from(PHILOX_M[1]) * u64::from(c[2]);
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
    }
    c
}

/// The CUDA dropout rule on the host: element `i` is kept iff word `i % 4` of
/// `philox4x32_10([lo32(i/4), hi32(i/4), 0, 0], [lo32(seed), hi32(seed)])` is
/// at least [`drop_threshold`]`(p)`.
pub fn philox_keep_flags(n: usize, p: f64, seed: u64) -> Vec<bool> {
    let threshold = drop_threshold(p);
    let key = [seed as u32, (seed >> 32) as u32];
    let mut keep = Vec::with_capacity(n.next_multiple_of(4));
    for g in 0..n.div_ceil(4) as u64 {
        let r = philox4x32_10([g as u32, (g >> 32) as u32, 0, 0], key);
        keep.extend(r.iter().map(|&w| u64::from(w) >= threshold));
    }
    keep.truncate(n);
    keep
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
    let keep = philox_keep_flags(shape.numel(), p, seed);
    mask_tensor(&keep, keep_scale(p), shape, dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's known-answer vectors for philox4x32-10 (kat_vectors):
    /// counter, key, output.
    #[test]
    fn philox_matches_the_random123_known_answers() {
        let kat: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            ([0; 4], [0; 2], [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]),
            ([u32::MAX; 4], [u32::MAX; 2], [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]),
            (
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0],
                [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
            ),
        ];
        for (ctr, key, want) in kat {
            assert_eq!(philox4x32_10(ctr, key), want, "counter {ctr:08x?} key {key:08x?}");
        }
    }

    #[test]
    fn philox_flags_follow_the_counter_rule() {
        let seed = 0x0123_4567_89ab_cdef_u64;
        let p = 0.5;
        let keep = philox_keep_flags(4 * 3 + 2, p, seed);
        assert_eq!(keep.len(), 14);
        let key = [0x89ab_cdef, 0x0123_4567];
        for (i, &k) in keep.iter().enumerate() {
            let r = philox4x32_10([(i / 4) as u32, 0, 0, 0], key);
            assert_eq!(k, u64::from(r[i % 4]) >= drop_threshold(p), "element {i}");
        }
        // A prefix of a longer mask is the shorter mask.
        assert_eq!(&philox_keep_flags(1000, p, seed)[..14], &keep[..]);
        // p = 0 keeps everything, p = 1 drops everything.
        assert!(philox_keep_flags(33, 0.0, seed).iter().all(|&k| k));
        assert!(philox_keep_flags(33, 1.0, seed).iter().all(|&k| !k));
    }

    #[test]
    fn philox_mask_drops_about_p() {
        let n = 1 << 16;
        for p in [0.1, 0.5, 0.9] {
            let dropped = philox_keep_flags(n, p, 7).iter().filter(|&&k| !k).count() as f64;
            let sigma = (n as f64 * p * (1.0 - p)).sqrt();
            assert!((dropped - n as f64 * p).abs() < 4.0 * sigma, "p {p}: {dropped} of {n} dropped");
        }
        let m = philox_dropout_mask([5, 7], 0.25, 3, DType::F64).unwrap().to_vec::<f64>().unwrap();
        assert!(m.iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
        assert!(philox_dropout_mask([2], 1.5, 3, DType::F32).is_err());
    }
}
