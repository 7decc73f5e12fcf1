//! Dropout and DropPath (stochastic depth): layers that own a seeded RNG, so
//! `forward` needs no extra arguments and a run is reproducible from its seeds.

use super::{Module, Param};
use crate::{rng, Error, Result, Tensor, TensorRng};
use std::sync::Mutex;

fn check_p(layer: &'static str, p: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::value(layer, format!("drop probability {p} must lie in [0, 1]")));
    }
    Ok(())
}

/// Element-wise dropout: in train mode each element is zeroed with
/// probability `p` and survivors are scaled by `1/(1−p)`; the identity in eval
/// mode. Modules start in train mode, as in PyTorch.
///
/// ```
/// use tamer::nn::{Dropout, Module};
/// use tamer::{DType, Tensor};
/// let mut d = Dropout::new(0.5, 42).unwrap();
/// let x = Tensor::ones([100], DType::F32).unwrap();
/// let y = d.forward(&x).unwrap().to_vec::<f32>().unwrap();
/// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
/// d.set_training(false);
/// assert_eq!(d.forward(&x).unwrap().to_vec::<f32>().unwrap(), vec![1.0; 100]);
/// ```
#[derive(Debug)]
pub struct Dropout {
    pub p: f64,
    pub training: bool,
    pub rng: Mutex<TensorRng>,
}

impl Dropout {
    /// Drop probability `p` in `[0, 1]`; masks are drawn from an RNG seeded with `seed`.
    pub fn new(p: f64, seed: u64) -> Result<Dropout> {
        check_p("Dropout", p)?;
        Ok(Dropout {
            p,
            training: true,
            rng: Mutex::new(rng(seed)),
        })
    }
    /// Any shape; the identity when `p == 0` or in eval mode.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.training || self.p == 0.0 {
            return Ok(x.clone());
        }
        let mut r = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        x.dropout(self.p, true, &mut *r).map_err(|e| Error::new("Dropout", e.kind, e.message))
    }
}

impl Module for Dropout {
    fn named_params(&self) -> Vec<(String, Param)> {
        Vec::new()
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

/// Stochastic depth (timm's `DropPath`): in train mode each sample of the batch
/// (axis 0) has its whole residual branch zeroed with probability `p`, and kept
/// samples are scaled by `1/(1−p)` (timm's `scale_by_keep=True`; with `p = 1`
/// everything is zeroed). The identity in eval mode or when `p == 0`.
///
/// ```
/// use tamer::nn::DropPath;
/// use tamer::{DType, Tensor};
/// let dp = DropPath::new(0.5, 3).unwrap();
/// let y = dp.forward(&Tensor::ones([8, 4, 2], DType::F64).unwrap()).unwrap();
/// let v = y.to_vec::<f64>().unwrap();
/// for s in v.chunks(8) {
///     // one decision per sample: all 0 or all 2
///     assert!(s.iter().all(|&e| e == 0.0) || s.iter().all(|&e| e == 2.0));
/// }
/// ```
#[derive(Debug)]
pub struct DropPath {
    pub p: f64,
    pub training: bool,
    pub rng: Mutex<TensorRng>,
}

impl DropPath {
    /// Drop probability `p` in `[0, 1]`; masks are drawn from an RNG seeded with `seed`.
    pub fn new(p: f64, seed: u64) -> Result<DropPath> {
        check_p("DropPath", p)?;
        Ok(DropPath {
            p,
            training: true,
            rng: Mutex::new(rng(seed)),
        })
    }
    /// `x: [B, ..]`, one keep/drop decision per sample.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.training || self.p == 0.0 {
            return Ok(x.clone());
        }
        if x.rank() == 0 {
            return Err(Error::shape("DropPath", "input is a scalar; expected a batch axis first"));
        }
        if !x.dtype().is_compute_float() {
            return Err(Error::dtype(
                "DropPath",
                format!("input dtype {} (shape {}) must be f32 or f64", x.dtype(), x.shape()),
            ));
        }
        // mask: [B, 1, .., 1], broadcast over each sample.
        let mut mask_dims = vec![1; x.rank()];
        mask_dims[0] = x.dims()[0];
        let mask = {
            let mut r = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            // Drawn on the host from the layer's RNG (the same mask on every device).
            Tensor::dropout_mask(mask_dims, self.p, x.dtype(), &mut *r)?.to_device(x.device())?
        };
        let scale = if self.p < 1.0 { 1.0 / (1.0 - self.p) } else { 0.0 };
        x.mul(&mask.scale(scale)?)
    }
}

impl Module for DropPath {
    fn named_params(&self) -> Vec<(String, Param)> {
        Vec::new()
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}
