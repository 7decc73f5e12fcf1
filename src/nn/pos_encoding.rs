//! Position encodings: learned tables and the fixed sine-cosine encodings of
//! "Attention Is All You Need" (1-D) and MAE / MoCo v3 (2-D patch grids).
//!
//! The fixed encodings are plain f32 tensors (computed in f64, then rounded),
//! to be added to token embeddings or stored in a frozen [`Param`] (MAE keeps
//! its 2-D table as a `pos_embed` parameter with `requires_grad=False`).

use super::{init, Module, Param};
use crate::{DType, Error, Result, Tensor};
use rand::Rng;

/// A learned position table `weight` `[1, max_positions, dim]` (timm's
/// `pos_embed` layout), initialised with timm's truncated normal, std 0.02.
///
/// ```
/// use tamer::nn::LearnedPosEmbed;
/// use tamer::{rng, DType, Tensor};
/// let pe = LearnedPosEmbed::new(16, 8, &mut rng(0)).unwrap();
/// let x = Tensor::zeros([2, 10, 8], DType::F32).unwrap();
/// assert_eq!(pe.forward(&x).unwrap().dims(), &[2, 10, 8]); // the first 10 positions
/// assert!(pe.forward(&Tensor::zeros([2, 17, 8], DType::F32).unwrap()).is_err());
/// ```
#[derive(Debug)]
pub struct LearnedPosEmbed {
    pub weight: Param,
}

impl LearnedPosEmbed {
    pub fn new(max_positions: usize, dim: usize, rng: &mut impl Rng) -> Result<LearnedPosEmbed> {
        if max_positions == 0 || dim == 0 {
            return Err(Error::shape(
                "LearnedPosEmbed",
                format!("max_positions {max_positions} and dim {dim} must both be positive"),
            ));
        }
        let weight = Param::new(init::fresh([1, max_positions, dim], 0.0)?);
        init::timm_trunc_normal_(&weight, 0.02, rng)?;
        Ok(LearnedPosEmbed { weight })
    }
    /// `x: [B, T, dim]` with `T ≤ max_positions`: adds positions `0..T`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.tensor();
        let (n, dim) = (w.dims()[1], w.dims()[2]);
        if x.rank() != 3 || x.dims()[2] != dim || x.dims()[1] > n {
            return Err(Error::shape(
                "LearnedPosEmbed",
                format!("input shape {} must be [B, T ≤ {n}, {dim}] (table shape {})", x.shape(), w.shape()),
            ));
        }
        x.add(&w.narrow(1, 0, x.dims()[1])?)
    }
}

impl Module for LearnedPosEmbed {
    fn named_params(&self) -> Vec<(String, Param)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
    fn set_training(&mut self, _training: bool) {}
}

/// The transformer's sinusoidal encoding, `[positions, dim]` (f32):
/// `PE[p, 2i] = sin(p / 10000^(2i/dim))`, `PE[p, 2i+1] = cos(p / 10000^(2i/dim))`
/// (sine and cosine interleaved). `dim` must be even.
///
/// ```
/// let pe = tamer::nn::sincos_1d(4, 6).unwrap().to_vec2::<f32>().unwrap();
/// assert_eq!(pe[0], vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
/// assert!((pe[1][0] - 1f32.sin()).abs() < 1e-6 && (pe[1][1] - 1f32.cos()).abs() < 1e-6);
/// ```
pub fn sincos_1d(positions: usize, dim: usize) -> Result<Tensor> {
    if dim == 0 || !dim.is_multiple_of(2) {
        return Err(Error::shape("sincos_1d", format!("dim {dim} must be even and positive")));
    }
    let mut v = Vec::with_capacity(positions * dim);
    for p in 0..positions {
        for i in 0..dim / 2 {
            let angle = p as f64 / 10000f64.powf((2 * i) as f64 / dim as f64);
            v.push(angle.sin());
            v.push(angle.cos());
        }
    }
    Tensor::from_vec(v, [positions, dim])?.to_dtype(DType::F32)
}

/// MAE's 2-D sine-cosine encoding of an `h × w` patch grid (`get_2d_sincos_pos_embed`),
/// `[h·w, dim]` f32, or `[1 + h·w, dim]` with a leading all-zero row for the CLS
/// token when `cls_token` is set. `dim` must be a multiple of 4.
///
/// Layout: tokens are the patches in row-major order (token `r·w + c` is row `r`,
/// column `c`). With `q = dim/4` and `ω_k = 10000^(−k/q)` for `k < q`, the channels are
///
/// | channels          | value           |
/// |-------------------|-----------------|
/// | `0 .. q`          | `sin(c · ω_k)`  |
/// | `q .. 2q`         | `cos(c · ω_k)`  |
/// | `2q .. 3q`        | `sin(r · ω_k)`  |
/// | `3q .. 4q`        | `cos(r · ω_k)`  |
///
/// i.e. the first half encodes the column, the second half the row, each as a
/// block of sines followed by a block of cosines (not interleaved). This is MAE's
/// table exactly; MoCo v3's `build_2d_sincos_position_embedding` swaps the two
/// halves (row first) and has no zero CLS row.
///
/// ```
/// let pe = tamer::nn::sincos_2d(2, 3, 8, true).unwrap().to_vec2::<f32>().unwrap();
/// assert_eq!(pe.len(), 1 + 6);
/// assert_eq!(pe[0], vec![0.0; 8]); // CLS
/// // Patch (row 1, column 2) is token 1 + 1·3 + 2; q = 2, ω = [1, 0.01].
/// let t = &pe[6];
/// assert!((t[0] - 2f32.sin()).abs() < 1e-6 && (t[2] - 2f32.cos()).abs() < 1e-6);
/// assert!((t[4] - 1f32.sin()).abs() < 1e-6 && (t[7] - 0.01f32.cos()).abs() < 1e-6);
/// ```
pub fn sincos_2d(h: usize, w: usize, dim: usize, cls_token: bool) -> Result<Tensor> {
    if dim == 0 || !dim.is_multiple_of(4) {
        return Err(Error::shape("sincos_2d", format!("dim {dim} must be a positive multiple of 4")));
    }
    let q = dim / 4;
    let omega: Vec<f64> = (0..q).map(|k| 1.0 / 10000f64.powf(k as f64 / q as f64)).collect();
    let rows = h * w + cls_token as usize;
    let mut v = Vec::with_capacity(rows * dim);
    if cls_token {
        v.extend(std::iter::repeat_n(0.0, dim));
    }
    for r in 0..h {
        for c in 0..w {
            for coord in [c as f64, r as f64] {
                v.extend(omega.iter().map(|o| (coord * o).sin()));
                v.extend(omega.iter().map(|o| (coord * o).cos()));
            }
        }
    }
    Tensor::from_vec(v, [rows, dim])?.to_dtype(DType::F32)
}
