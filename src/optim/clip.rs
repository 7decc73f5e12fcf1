//! Gradient clipping by the global L2 norm.

use super::device::{scaled, sum_squares};
use crate::nn::Param;
use crate::{GradStore, NoGradGuard, Result};
use std::collections::HashSet;

/// The L2 norm of all of `params`' gradients taken together (as if
/// concatenated into one vector), accumulated in f64. Parameters without a
/// gradient (frozen or unused) contribute nothing; a parameter listed twice
/// (tied weights) counts once.
///
/// Each gradient's `Σ g²` is computed where it lives (CUDA gradients by a
/// deterministic on-device reduction, one scalar per tensor copied back);
/// the per-tensor sums are then added on the host in f64, in `params` order.
pub fn grad_norm(grads: &GradStore, params: &[Param]) -> Result<f64> {
    let mut seen = HashSet::new();
    let mut present = Vec::new();
    for p in params {
        let t = p.tensor();
        if !seen.insert(t.id()) {
            continue;
        }
        if let Some(g) = grads.get(&t) {
            present.push(g.clone());
        }
    }
    let total = sum_squares("grad_norm", &present)?.into_iter().fold(0.0, |acc, s| acc + s);
    Ok(total.sqrt())
}

/// Clip gradients by their global L2 norm, as `torch.nn.utils.clip_grad_norm_`:
/// with `norm` the [`grad_norm`] over `params`, every gradient is multiplied
/// by `max_norm / (norm + 1e-6)` when that factor is below 1. Returns the norm
/// before clipping.
///
/// A non-finite norm (an inf or NaN gradient) is returned as it is and the
/// gradients are left unscaled, so the caller decides: skip the step, stop
/// the run (PyTorch's `error_if_nonfinite`), or lower a loss scale. Clipped
/// gradients are new tensors replacing the old ones in `grads`.
///
/// ```
/// use tamer::nn::Param;
/// use tamer::optim::clip_grad_norm;
/// use tamer::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![3.0f64, 4.0], [2]).unwrap());
/// let mut grads = w.tensor().square().unwrap().sum_all().unwrap().scale(0.5).unwrap().backward().unwrap(); // g = w
/// let norm = clip_grad_norm(&mut grads, &[w.clone()], 1.0).unwrap();
/// assert!((norm - 5.0).abs() < 1e-12);
/// let g = grads.get(&w.tensor()).unwrap().to_vec::<f64>().unwrap();
/// assert!((g[0] - 3.0 / (5.0 + 1e-6)).abs() < 1e-12);
/// ```
pub fn clip_grad_norm(grads: &mut GradStore, params: &[Param], max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(crate::Error::value("clip_grad_norm", format!("max_norm {max_norm} must be >= 0")));
    }
    let norm = grad_norm(grads, params)?;
    if !norm.is_finite() {
        return Ok(norm);
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let _guard = NoGradGuard::new();
        let mut seen = HashSet::new();
        for p in params {
            let t = p.tensor();
            if !seen.insert(t.id()) {
                continue;
            }
            if let Some(g) = grads.get(&t) {
                let clipped = scaled("clip_grad_norm", g, coef)?;
                grads.insert(&t, clipped);
            }
        }
    }
    Ok(norm)
}
