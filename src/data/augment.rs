//! Per-image augmentation on the host, on `[C, H, W]` f32 slices, with
//! torchvision's semantics: random crop with zero padding, horizontal flip,
//! and random erasing. The loader applies them in its worker thread, each
//! image with its own RNG seeded from (seed, epoch, example index), so the
//! result does not depend on batch size, threads or resumption.
//!
//! Horizontal flip is off by default: it is wrong for digits and MNIST (a
//! mirrored 2, 3, 4, 5, 7 or 9 is not that digit); turn it on for CIFAR-10.

use crate::{Error, Result};
use rand::Rng;

/// torchvision's `RandomErasing`: with probability `p`, erase a rectangle of
/// area `scale` × image area and aspect ratio `ratio` (log-uniform) with `value`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomErasing {
    pub p: f64,
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
    /// What erased pixels become. The loader erases after normalisation (as
    /// torchvision and timm do), so 0 is the channel mean.
    pub value: f32,
}

impl Default for RandomErasing {
    fn default() -> Self {
        RandomErasing {
            p: 0.5,
            scale: (0.02, 0.33),
            ratio: (0.3, 3.3),
            value: 0.0,
        }
    }
}

impl RandomErasing {
    /// With probability `p`, the defaults otherwise.
    pub fn with_p(p: f64) -> Self {
        RandomErasing { p, ..Default::default() }
    }
    pub fn validate(&self) -> Result<()> {
        let op = "RandomErasing";
        if !(0.0..=1.0).contains(&self.p) {
            return Err(Error::value(op, format!("p {} is outside [0, 1]", self.p)));
        }
        let (s0, s1) = self.scale;
        if !(0.0 < s0 && s0 <= s1 && s1 <= 1.0) {
            return Err(Error::value(op, format!("scale {:?} must satisfy 0 < lo <= hi <= 1", self.scale)));
        }
        let (r0, r1) = self.ratio;
        if !(0.0 < r0 && r0 <= r1 && r1.is_finite()) {
            return Err(Error::value(op, format!("ratio {:?} must satisfy 0 < lo <= hi", self.ratio)));
        }
        Ok(())
    }
}

/// What the loader does to each training image, in this order: crop, flip,
/// (normalise), erase.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Augment {
    /// Zero-pad each side by this many pixels, then crop a random H×W window
    /// (torchvision `RandomCrop(size, padding)`); 0 = off.
    pub crop_padding: usize,
    /// Mirror left-right with probability 0.5 (off by default; see the module docs).
    pub hflip: bool,
    pub erasing: Option<RandomErasing>,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Self {
        Self::default()
    }
    /// True when it changes nothing.
    pub fn is_identity(&self) -> bool {
        self.crop_padding == 0 && !self.hflip && self.erasing.is_none_or(|e| e.p == 0.0)
    }
    pub fn validate(&self) -> Result<()> {
        match &self.erasing {
            Some(e) => e.validate(),
            None => Ok(()),
        }
    }
}

/// Zero-pad `img` ([C, H, W]) by `padding` on every side and crop the H×W
/// window at offset (`top`, `left`) of the padded image, `top, left ∈ 0..=2·padding`.
pub fn crop_padded(img: &[f32], (c, h, w): (usize, usize, usize), padding: usize, top: usize, left: usize) -> Vec<f32> {
    let mut out = vec![0f32; c * h * w];
    for ch in 0..c {
        for y in 0..h {
            // Padded row top + y is source row top + y − padding.
            let sy = (top + y) as isize - padding as isize;
            if sy < 0 || sy >= h as isize {
                continue;
            }
            for x in 0..w {
                let sx = (left + x) as isize - padding as isize;
                if sx >= 0 && sx < w as isize {
                    out[(ch * h + y) * w + x] = img[(ch * h + sy as usize) * w + sx as usize];
                }
            }
        }
    }
    out
}

/// [`crop_padded`] at a uniformly random offset.
pub fn random_crop(img: &[f32], shape: (usize, usize, usize), padding: usize, rng: &mut impl Rng) -> Vec<f32> {
    let top = rng.random_range(0..=2 * padding);
    let left = rng.random_range(0..=2 * padding);
    crop_padded(img, shape, padding, top, left)
}

/// Mirror each row of `img` ([C, H, W]) in place.
pub fn hflip(img: &mut [f32], (c, h, w): (usize, usize, usize)) {
    for row in img[..c * h * w].chunks_exact_mut(w) {
        row.reverse();
    }
}

/// The rectangle torchvision's `RandomErasing.get_params` would pick, as
/// (top, left, height, width), or None when ten tries find none that fits.
pub fn erasing_box(params: &RandomErasing, h: usize, w: usize, rng: &mut impl Rng) -> Option<(usize, usize, usize, usize)> {
    let area = (h * w) as f64;
    let (lr0, lr1) = (params.ratio.0.ln(), params.ratio.1.ln());
    for _ in 0..10 {
        let erase_area = area * uniform(rng, params.scale.0, params.scale.1);
        let aspect = uniform(rng, lr0, lr1).exp();
        let eh = (erase_area * aspect).sqrt().round() as usize;
        let ew = (erase_area / aspect).sqrt().round() as usize;
        if !(eh < h && ew < w) || eh == 0 || ew == 0 {
            continue;
        }
        let top = rng.random_range(0..=h - eh);
        let left = rng.random_range(0..=w - ew);
        return Some((top, left, eh, ew));
    }
    None
}

/// Uniform in [lo, hi] (lo when the range is empty).
fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

/// With probability `p`, erase a random box of `img` ([C, H, W]) across all
/// channels. Returns the box when one was erased.
pub fn random_erase(img: &mut [f32], (c, h, w): (usize, usize, usize), params: &RandomErasing, rng: &mut impl Rng) -> Option<(usize, usize, usize, usize)> {
    if params.p <= 0.0 || rng.random::<f64>() >= params.p {
        return None;
    }
    let (top, left, eh, ew) = erasing_box(params, h, w, rng)?;
    for ch in 0..c {
        for y in top..top + eh {
            img[(ch * h + y) * w + left..(ch * h + y) * w + left + ew].fill(params.value);
        }
    }
    Some((top, left, eh, ew))
}

/// Apply `aug` to one image, normalising between the geometric steps and the
/// erasing (`norm` is (mean, std) per channel).
pub fn apply(img: &[f32], shape: (usize, usize, usize), aug: &Augment, norm: Option<&(Vec<f32>, Vec<f32>)>, rng: &mut impl Rng) -> Vec<f32> {
    let mut out = if aug.crop_padding > 0 {
        random_crop(img, shape, aug.crop_padding, rng)
    } else {
        img.to_vec()
    };
    if aug.hflip && rng.random::<bool>() {
        hflip(&mut out, shape);
    }
    if let Some((mean, std)) = norm {
        normalize(&mut out, shape, mean, std);
    }
    if let Some(e) = &aug.erasing {
        random_erase(&mut out, shape, e, rng);
    }
    out
}

/// `(x − mean[c]) / std[c]` per channel, in place.
pub fn normalize(img: &mut [f32], (c, h, w): (usize, usize, usize), mean: &[f32], std: &[f32]) {
    let plane = h * w;
    for ch in 0..c {
        let (m, inv) = (mean[ch], 1.0 / std[ch]);
        for v in &mut img[ch * plane..(ch + 1) * plane] {
            *v = (*v - m) * inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_at_centre_is_identity_and_shift_moves_pixels() {
        let img: Vec<f32> = (0..2 * 3 * 4).map(|v| v as f32).collect();
        let s = (2, 3, 4);
        assert_eq!(crop_padded(&img, s, 2, 2, 2), img);
        // top = 0: the window starts two rows above the image.
        let out = crop_padded(&img, s, 2, 0, 2);
        assert_eq!(&out[..8], &[0.0; 8]);
        assert_eq!(&out[8..12], &img[..4]);
    }

    #[test]
    fn erasing_box_fits() {
        let mut r = crate::tensor::rng(0);
        let p = RandomErasing::default();
        for _ in 0..200 {
            if let Some((t, l, eh, ew)) = erasing_box(&p, 32, 32, &mut r) {
                assert!(t + eh <= 32 && l + ew <= 32);
            }
        }
    }
}
