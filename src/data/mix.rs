//! Mixup and CutMix with timm's semantics (`timm.data.Mixup`, mode "batch"):
//! one `lam ~ Beta(α, α)` per batch, each image mixed with the image at the
//! mirrored position of the batch (`x.flip(0)`), CutMix pasting a box of area
//! about `(1 − lam)·H·W` and then correcting `lam` to the box's true area.
//!
//! The targets stay integer class indices: the loss is
//! `lam·CE(logits, y_a) + (1 − lam)·CE(logits, y_b)` ([`mixed_cross_entropy`]).
//! Cross-entropy is linear in its target distribution, so with label
//! smoothing ε this equals timm's soft-target loss against
//! `lam·smooth(y_a) + (1 − lam)·smooth(y_b)`.

use crate::ops::nn::cross_entropy::CrossEntropyOptions;
use crate::{Error, Result, Tensor};
use rand::Rng;
use rand_distr::{Beta, Distribution};

const OP: &str = "mixup";

/// timm's `Mixup` parameters (label smoothing lives in the loss options).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mixup {
    /// Mixup's Beta(α, α); 0 = off.
    pub mixup_alpha: f64,
    /// CutMix's Beta(α, α); 0 = off.
    pub cutmix_alpha: f64,
    /// Probability of mixing a batch at all.
    pub prob: f64,
    /// With both on, the probability of CutMix rather than mixup.
    pub switch_prob: f64,
    /// Recompute CutMix's `lam` from the clipped box's area (timm's default).
    pub correct_lam: bool,
}

impl Default for Mixup {
    /// timm's defaults: mixup α = 1, CutMix off, always applied.
    fn default() -> Self {
        Mixup {
            mixup_alpha: 1.0,
            cutmix_alpha: 0.0,
            prob: 1.0,
            switch_prob: 0.5,
            correct_lam: true,
        }
    }
}

/// What one batch's mixing did.
#[derive(Clone, Debug, PartialEq)]
pub struct MixInfo {
    /// The second target of each example: the labels in reverse batch order.
    pub y_b: Vec<i64>,
    /// The weight of the original targets, in [0, 1] (1 when the batch was not mixed).
    pub lam: f64,
    /// CutMix's box (top, bottom, left, right), rows `top..bottom`, when CutMix was used.
    pub cutmix_box: Option<(usize, usize, usize, usize)>,
}

/// A mixed batch of tensors.
#[derive(Clone, Debug)]
pub struct MixedBatch {
    pub x: Tensor,
    pub y_a: Tensor,
    pub y_b: Tensor,
    pub lam: f64,
}

impl Mixup {
    /// Mixup only, with Beta(α, α). (Named after the method, like timm's `mixup_alpha`.)
    #[allow(clippy::self_named_constructors)]
    pub fn mixup(alpha: f64) -> Self {
        Mixup {
            mixup_alpha: alpha,
            ..Default::default()
        }
    }
    /// CutMix only, with Beta(α, α).
    pub fn cutmix(alpha: f64) -> Self {
        Mixup {
            mixup_alpha: 0.0,
            cutmix_alpha: alpha,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("mixup_alpha", self.mixup_alpha), ("cutmix_alpha", self.cutmix_alpha)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::value(OP, format!("{name} {v} must be finite and >= 0")));
            }
        }
        for (name, v) in [("prob", self.prob), ("switch_prob", self.switch_prob)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::value(OP, format!("{name} {v} is outside [0, 1]")));
            }
        }
        Ok(())
    }

    /// timm's `_params_per_batch`: (lam, use CutMix).
    fn params(&self, rng: &mut impl Rng) -> Result<(f64, bool)> {
        let enabled = self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0;
        if !enabled || rng.random::<f64>() >= self.prob {
            return Ok((1.0, false));
        }
        let use_cutmix = if self.mixup_alpha > 0.0 && self.cutmix_alpha > 0.0 {
            rng.random::<f64>() < self.switch_prob
        } else {
            self.cutmix_alpha > 0.0
        };
        let alpha = if use_cutmix { self.cutmix_alpha } else { self.mixup_alpha };
        let beta = Beta::new(alpha, alpha).map_err(|e| Error::value(OP, format!("Beta({alpha}, {alpha}): {e}")))?;
        Ok((beta.sample(rng).clamp(0.0, 1.0), use_cutmix))
    }

    /// Mix a host batch `x` (`[B, C, H, W]` row-major) in place; `y` are its labels.
    pub fn apply_host(&self, x: &mut [f32], (b, c, h, w): (usize, usize, usize, usize), y: &[i64], rng: &mut impl Rng) -> Result<MixInfo> {
        self.validate()?;
        if x.len() != b * c * h * w || y.len() != b {
            return Err(Error::shape(
                OP,
                format!(
                    "batch of {} values and {} labels does not match [B, C, H, W] = [{b}, {c}, {h}, {w}]",
                    x.len(),
                    y.len()
                ),
            ));
        }
        let y_b: Vec<i64> = y.iter().rev().copied().collect();
        let (lam, use_cutmix) = self.params(rng)?;
        if lam == 1.0 {
            return Ok(MixInfo { y_b, lam, cutmix_box: None });
        }
        let per = c * h * w;
        let original = x.to_vec();
        let partner = |i: usize| &original[(b - 1 - i) * per..(b - i) * per];
        if use_cutmix {
            let ((top, bottom, left, right), box_lam) = cutmix_box(h, w, lam, rng);
            let lam = if self.correct_lam { box_lam } else { lam };
            for i in 0..b {
                let src = partner(i);
                let dst = &mut x[i * per..(i + 1) * per];
                for ch in 0..c {
                    for row in top..bottom {
                        let r = (ch * h + row) * w;
                        dst[r + left..r + right].copy_from_slice(&src[r + left..r + right]);
                    }
                }
            }
            Ok(MixInfo {
                y_b,
                lam,
                cutmix_box: Some((top, bottom, left, right)),
            })
        } else {
            let (l, m) = (lam as f32, (1.0 - lam) as f32);
            for i in 0..b {
                let src = partner(i);
                for (d, s) in x[i * per..(i + 1) * per].iter_mut().zip(src) {
                    *d = *d * l + *s * m;
                }
            }
            Ok(MixInfo { y_b, lam, cutmix_box: None })
        }
    }

    /// Mix a batch of tensors: `x` f32 `[B, C, H, W]`, `y` i64 `[B]`.
    pub fn apply(&self, x: &Tensor, y: &Tensor, rng: &mut impl Rng) -> Result<MixedBatch> {
        if x.rank() != 4 || y.rank() != 1 || y.dims()[0] != x.dims()[0] {
            return Err(Error::shape(
                OP,
                format!("expected x [B, C, H, W] and y [B], got {} and {}", x.shape(), y.shape()),
            ));
        }
        let d = x.dims();
        let shape = (d[0], d[1], d[2], d[3]);
        let mut data = x.to_vec::<f32>()?;
        let labels = y.to_vec::<i64>()?;
        let info = self.apply_host(&mut data, shape, &labels, rng)?;
        // Mixed on the host; the result goes back where the batch was.
        Ok(MixedBatch {
            x: Tensor::from_vec(data, d.to_vec())?.to_device(x.device())?,
            y_a: y.clone(),
            y_b: Tensor::from_vec(info.y_b, [shape.0])?.to_device(y.device())?,
            lam: info.lam,
        })
    }
}

/// timm's `rand_bbox` + `cutmix_bbox_and_lam`: a box of side `⌊side·√(1−lam)⌋`
/// centred uniformly, clipped to the image; returns ((top, bottom, left,
/// right), 1 − box area / image area).
pub fn cutmix_box(h: usize, w: usize, lam: f64, rng: &mut impl Rng) -> ((usize, usize, usize, usize), f64) {
    let ratio = (1.0 - lam).max(0.0).sqrt();
    let (cut_h, cut_w) = ((h as f64 * ratio) as i64, (w as f64 * ratio) as i64);
    let cy = rng.random_range(0..h.max(1)) as i64;
    let cx = rng.random_range(0..w.max(1)) as i64;
    let clip = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
    let (top, bottom) = (clip(cy - cut_h / 2, h), clip(cy + cut_h / 2, h));
    let (left, right) = (clip(cx - cut_w / 2, w), clip(cx + cut_w / 2, w));
    let area = ((bottom - top) * (right - left)) as f64;
    ((top, bottom, left, right), 1.0 - area / (h * w) as f64)
}

/// `lam·CE(logits, y_a) + (1 − lam)·CE(logits, y_b)`, differentiable in the
/// logits; `options` (label smoothing, reduction ...) apply to both terms.
///
/// ```
/// use tamer::Tensor;
/// use tamer::data::mixed_cross_entropy;
/// use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
/// let logits = Tensor::from_vec(vec![2.0f32, 0.0, 0.5, 1.0], [2, 2]).unwrap();
/// let ya = Tensor::from_vec(vec![0i64, 1], [2]).unwrap();
/// let yb = Tensor::from_vec(vec![1i64, 0], [2]).unwrap();
/// let o = CrossEntropyOptions::default();
/// let mixed = mixed_cross_entropy(&logits, &ya, &yb, 0.25, o).unwrap().to_scalar().unwrap();
/// let a = logits.cross_entropy(&ya, o).unwrap().to_scalar().unwrap();
/// let b = logits.cross_entropy(&yb, o).unwrap().to_scalar().unwrap();
/// assert!((mixed - (0.25 * a + 0.75 * b)).abs() < 1e-6);
/// ```
pub fn mixed_cross_entropy(logits: &Tensor, y_a: &Tensor, y_b: &Tensor, lam: f64, options: CrossEntropyOptions) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&lam) {
        return Err(Error::value("mixed_cross_entropy", format!("lam {lam} is outside [0, 1]")));
    }
    let a = logits.cross_entropy(y_a, options)?;
    if lam == 1.0 {
        return Ok(a);
    }
    let b = logits.cross_entropy(y_b, options)?;
    if lam == 0.0 {
        return Ok(b);
    }
    a.scale(lam)?.add(&b.scale(1.0 - lam)?)
}
