//! Output change under a random parameter perturbation: the amplification
//! effect of Liu, Liu, Gao, Chen and Han (2020), "Understanding the Difficulty
//! of Training Transformers" (the Admin paper).
//!
//! Liu et al. find that what makes post-LN transformers hard to train is not
//! vanishing gradients but how strongly the output depends on each layer's
//! residual branch: a small change of the parameters (an optimizer update)
//! moves the output of an `N`-layer post-LN model by an amount that grows
//! like `O(N)`, against `O(log N)` for pre-LN and `O(1)` with Admin's
//! rescaled skip connections (their analysis of the amplification effect).
//! Large output changes are what makes a learning rate that is safe for a
//! shallow model diverge for a deep one, and why post-LN needs warmup. The
//! measure is
//!
//! ```text
//! E_δ ‖F(x, W) − F(x, W + δ)‖²
//! ```
//!
//! the squared change of the whole output (every element of the batch
//! summed), averaged over random perturbations `δ`.
//!
//! **The perturbation** is tamer's choice (the measure asks only for a small
//! random `δ` standing for an update): each parameter tensor `W` gets an
//! isotropic random direction of a fixed relative size `ε`,
//!
//! ```text
//! δ = ε · ‖W‖ · u / ‖u‖,   u ~ N(0, I) of W's shape,   so that ‖δ‖ / ‖W‖ = ε exactly.
//! ```
//!
//! Why this form: the amplification argument is about updates whose size is
//! small relative to the parameters, and fixing `‖δ‖/‖W‖` per tensor makes
//! `ε` exactly the update-to-weight ratio that
//! [`update_ratios`](super::update_ratios) logs during training (around 1e-3
//! per step for a healthy Adam run), so the measure answers "what does an
//! update of this size do to the output?". The elementwise alternative
//! `ε·|W|·N(0, 1)` ties the direction to the weights' pattern and leaves
//! every exact zero unperturbed; the isotropic direction does neither (a
//! tensor that is zero as a whole, such as a bias at initialisation, still
//! gets no perturbation: `‖W‖ = 0`).

use crate::nn::{Module, Param, TransformerBlock};
use crate::tensor::Tensor;
use crate::{no_grad, Error, Result};
use rand::Rng;

/// What [`output_change`] measured.
///
/// ```
/// use tamer::diagnostics::output_change;
/// use tamer::nn::{Linear, Module};
/// use tamer::{rng, DType, Tensor};
/// let layer = Linear::new(4, 3, true, &mut rng(0)).unwrap();
/// let x = Tensor::randn([2, 4], DType::F32, &mut rng(1)).unwrap();
/// let c = output_change(|| layer.forward(&x), &layer.params(), 1e-2, 5, &mut rng(2)).unwrap();
/// assert_eq!(c.draws.len(), 5);
/// assert!((c.mean - c.draws.iter().sum::<f64>() / 5.0).abs() < 1e-12 && c.std_error > 0.0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct OutputChange {
    /// The estimate of `E‖F(x, W) − F(x, W + δ)‖²`: the mean over the draws.
    pub mean: f64,
    /// The standard error of that mean (sample standard deviation / √samples;
    /// 0 for a single draw).
    pub std_error: f64,
    /// `‖F(x, W) − F(x, W + δ)‖²` of each draw, in order.
    pub draws: Vec<f64>,
}

/// `E‖F(x, W) − F(x, W + δ)‖²` over `samples` random perturbations of
/// relative size `relative_size` (see the [module docs](self) for `δ` and
/// the paper): `forward` computes the output `F(x, W)` for a fixed input
/// from the current values of `params` (a closure over the model and `x`).
/// It runs without recording a graph. Every draw perturbs every parameter
/// in place, runs `forward`, and restores the parameters bit for bit, also
/// when `forward` fails; parameters listed twice (tied) are perturbed once.
///
/// Errors: `samples` 0, a negative or non-finite `relative_size`, a
/// non-float parameter, an output whose shape changes between calls, or
/// `forward`'s own error.
///
/// For a linear map `F(x) = W x` the expectation has a closed form,
/// `ε²‖W‖²‖x‖²/n` for `W [m, n]`: the estimate converges to it.
///
/// ```
/// use tamer::diagnostics::output_change;
/// use tamer::nn::{Linear, Module};
/// use tamer::{rng, DType, Tensor};
/// let layer = Linear::new(4, 3, false, &mut rng(0)).unwrap();
/// let x = Tensor::randn([2, 4], DType::F32, &mut rng(1)).unwrap();
/// let before = layer.weight.tensor().to_vec::<f32>().unwrap();
/// let small = output_change(|| layer.forward(&x), &layer.params(), 1e-3, 8, &mut rng(2)).unwrap();
/// let large = output_change(|| layer.forward(&x), &layer.params(), 1e-2, 8, &mut rng(2)).unwrap();
/// assert!((large.mean / small.mean - 100.0).abs() < 1.0); // quadratic in ε for a linear model
/// assert_eq!(layer.weight.tensor().to_vec::<f32>().unwrap(), before); // restored exactly
/// ```
pub fn output_change<F>(mut forward: F, params: &[Param], relative_size: f64, samples: usize, rng: &mut impl Rng) -> Result<OutputChange>
where
    F: FnMut() -> Result<Tensor>,
{
    const OP: &str = "output_change";
    if samples == 0 {
        return Err(Error::value(OP, "samples must be at least 1"));
    }
    if !(relative_size >= 0.0 && relative_size.is_finite()) {
        return Err(Error::value(OP, format!("relative_size {relative_size} must be finite and >= 0")));
    }
    let params = distinct(params);
    if let Some(p) = params.iter().find(|p| !p.tensor().dtype().is_float()) {
        return Err(Error::dtype(OP, format!("parameter of dtype {} cannot be perturbed", p.tensor().dtype())));
    }
    no_grad(|| {
        let reference = forward()?;
        let reference_host = reference.to_f64_vec()?;
        // Exact copies of the values, on the parameters' devices, to restore from.
        let saved: Vec<Tensor> = params.iter().map(|p| copy_of(&p.tensor())).collect::<Result<_>>()?;
        let norms: Vec<f64> = saved.iter().map(l2_norm).collect::<Result<_>>()?;
        let mut draws = Vec::with_capacity(samples);
        for _ in 0..samples {
            let perturbed = perturb(&params, &saved, &norms, relative_size, rng).and_then(|()| forward());
            restore(&params, &saved)?;
            let out = perturbed?;
            if out.dims() != reference.dims() {
                return Err(Error::shape(
                    OP,
                    format!("forward returned shape {} after the perturbation, {} before", out.shape(), reference.shape()),
                ));
            }
            let change = out.to_f64_vec()?.iter().zip(&reference_host).map(|(a, b)| (a - b) * (a - b)).sum();
            draws.push(change);
        }
        Ok(summarise(draws))
    })
}

/// [`output_change`] of a stack of [`TransformerBlock`]s applied in order to
/// `x [B, T, C]`, every parameter of every block perturbed: the per-depth
/// measure of Liu et al.'s depth comparison. Build stacks of depth 2, 4, ... with
/// [`BlockConfig`](crate::nn::BlockConfig)'s post-LN or pre-LN settings, or
/// post-LN with Admin's ω from [`admin_profile_blocks`](crate::nn::admin_profile_blocks),
/// and compare the curves. Put the blocks in eval mode first so that
/// dropout does not add its own change.
///
/// ```
/// use tamer::diagnostics::blocks_output_change;
/// use tamer::nn::{admin_profile_blocks, BlockConfig, TransformerBlock};
/// use tamer::{rng, DType, Tensor};
/// let x = Tensor::randn([2, 4, 8], DType::F32, &mut rng(0)).unwrap();
/// let mut blocks: Vec<TransformerBlock> =
///     (0..4).map(|i| TransformerBlock::new(8, &BlockConfig::post_ln(2), &mut rng(i)).unwrap()).collect();
/// let plain = blocks_output_change(&blocks, &x, 0.01, 4, &mut rng(9)).unwrap();
/// admin_profile_blocks(&mut blocks, &x).unwrap(); // Admin's ω on the skip branches
/// let admin = blocks_output_change(&blocks, &x, 0.01, 4, &mut rng(9)).unwrap();
/// assert!(plain.mean > 0.0 && admin.mean > 0.0);
/// ```
pub fn blocks_output_change(blocks: &[TransformerBlock], x: &Tensor, relative_size: f64, samples: usize, rng: &mut impl Rng) -> Result<OutputChange> {
    let params: Vec<Param> = blocks.iter().flat_map(|b| b.params()).collect();
    let forward = || blocks.iter().try_fold(x.clone(), |h, block| block.forward(&h));
    output_change(forward, &params, relative_size, samples, rng)
}

/// The parameters with duplicates (tied parameters) removed, in order.
fn distinct(params: &[Param]) -> Vec<Param> {
    let mut seen = std::collections::HashSet::new();
    params.iter().filter(|p| seen.insert(p.tensor().id())).cloned().collect()
}

/// A new tensor with `t`'s values (its own storage, same device and dtype).
fn copy_of(t: &Tensor) -> Result<Tensor> {
    let copy = t.zeros_like()?;
    copy.assign(t)?;
    Ok(copy)
}

fn l2_norm(t: &Tensor) -> Result<f64> {
    Ok(t.to_f64_vec()?.iter().map(|v| v * v).sum::<f64>().sqrt())
}

/// `W ← W₀ + ε‖W₀‖ u/‖u‖` for every parameter, `u` a fresh normal draw.
fn perturb(params: &[Param], saved: &[Tensor], norms: &[f64], eps: f64, rng: &mut impl Rng) -> Result<()> {
    for ((p, w0), norm) in params.iter().zip(saved).zip(norms) {
        let u = Tensor::randn(w0.dims(), w0.dtype(), rng)?.to_device(w0.device())?;
        let u_norm = l2_norm(&u)?;
        if *norm == 0.0 || u_norm == 0.0 {
            continue;
        }
        p.tensor().assign(&w0.add(&u.scale(eps * norm / u_norm)?)?)?;
    }
    Ok(())
}

fn restore(params: &[Param], saved: &[Tensor]) -> Result<()> {
    params.iter().zip(saved).try_for_each(|(p, w0)| p.tensor().assign(w0))
}

fn summarise(draws: Vec<f64>) -> OutputChange {
    let n = draws.len() as f64;
    let mean = draws.iter().sum::<f64>() / n;
    let std_error = if draws.len() > 1 {
        (draws.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / (n - 1.0) / n).sqrt()
    } else {
        0.0
    };
    OutputChange { mean, std_error, draws }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{BlockConfig, Linear, NormPlacement};
    use crate::{rng, DType};

    fn linear_f64(m: usize, n: usize) -> Linear {
        let layer = Linear::new(n, m, false, &mut rng(0)).unwrap();
        layer.to_dtype(DType::F64).unwrap();
        layer
    }

    #[test]
    fn zero_perturbation_changes_nothing() {
        let layer = linear_f64(3, 5);
        let x = Tensor::randn([4, 5], DType::F64, &mut rng(1)).unwrap();
        let c = output_change(|| layer.forward(&x), &layer.params(), 0.0, 3, &mut rng(2)).unwrap();
        assert_eq!(c.draws, vec![0.0; 3]);
        assert_eq!((c.mean, c.std_error), (0.0, 0.0));
    }

    /// For F(x) = W x (x a batch [B, n]), δ = ε‖W‖u/‖u‖ with u/‖u‖ uniform on
    /// the sphere of ℝ^{mn}: E[ûûᵀ] = I/(mn), so E‖δx‖² = ε²‖W‖²·m‖x‖²/(mn)
    /// = ε²‖W‖²‖X‖²/n.
    #[test]
    fn linear_model_matches_the_closed_form_and_scales_as_eps_squared() {
        let (m, n) = (3, 5);
        let layer = linear_f64(m, n);
        let x = Tensor::randn([4, n], DType::F64, &mut rng(1)).unwrap();
        let w2: f64 = layer.weight.tensor().to_f64_vec().unwrap().iter().map(|v| v * v).sum();
        let x2: f64 = x.to_f64_vec().unwrap().iter().map(|v| v * v).sum();
        let eps = 1e-2;
        let expected = eps * eps * w2 * x2 / n as f64;
        let c = output_change(|| layer.forward(&x), &layer.params(), eps, 2000, &mut rng(3)).unwrap();
        let z = (c.mean - expected) / c.std_error;
        assert!(z.abs() < 4.0, "mean {} expected {expected} (std error {}, z {z})", c.mean, c.std_error);
        assert!((c.mean / expected - 1.0).abs() < 0.1, "mean {} expected {expected}", c.mean);
        // The same draws at 10ε: exactly 100× (δ is linear in ε), to rounding.
        let c10 = output_change(|| layer.forward(&x), &layer.params(), 10.0 * eps, 2000, &mut rng(3)).unwrap();
        assert!((c10.mean / c.mean - 100.0).abs() < 1e-6, "{}", c10.mean / c.mean);
    }

    #[test]
    fn parameters_are_restored_exactly_even_on_error() {
        let cfg = BlockConfig {
            norm: NormPlacement::PostLN,
            ..BlockConfig::vit(2)
        };
        let blocks: Vec<TransformerBlock> = (0..2).map(|i| TransformerBlock::new(8, &cfg, &mut rng(i)).unwrap()).collect();
        let values = |bs: &[TransformerBlock]| -> Vec<Vec<f32>> { bs.iter().flat_map(|b| b.params()).map(|p| p.tensor().to_vec::<f32>().unwrap()).collect() };
        let before = values(&blocks);
        let x = Tensor::randn([2, 3, 8], DType::F32, &mut rng(5)).unwrap();
        let c = blocks_output_change(&blocks, &x, 0.05, 3, &mut rng(6)).unwrap();
        assert!(c.draws.iter().all(|d| *d > 0.0));
        assert_eq!(values(&blocks), before);
        // A forward that fails after the perturbation still leaves the parameters as they were.
        let params: Vec<Param> = blocks.iter().flat_map(|b| b.params()).collect();
        let mut calls = 0;
        let failing = || {
            calls += 1;
            if calls > 1 {
                Err(Error::value("test", "fails on the perturbed parameters"))
            } else {
                blocks[0].forward(&x)
            }
        };
        assert!(output_change(failing, &params, 0.05, 2, &mut rng(6)).is_err());
        assert_eq!(values(&blocks), before);
    }

    /// What experiment 2 of the lab calls: stacks of pre-LN, post-LN and
    /// Admin post-LN blocks. Each gives a positive, finite change that grows
    /// with ε, and Admin's ω (> 1 past the first sublayer) changes the post-LN
    /// stack's value, on the same draws.
    #[test]
    fn block_stacks_of_every_norm_placement() {
        let x = Tensor::randn([2, 4, 8], DType::F32, &mut rng(0)).unwrap();
        let stack = |cfg: &BlockConfig| -> Vec<TransformerBlock> { (0..3).map(|i| TransformerBlock::new(8, cfg, &mut rng(10 + i)).unwrap()).collect() };
        let measure = |blocks: &[TransformerBlock], eps: f64| blocks_output_change(blocks, &x, eps, 4, &mut rng(1)).unwrap().mean;
        let pre = stack(&BlockConfig::vit(2));
        let post = stack(&BlockConfig::post_ln(2));
        let mut admin = stack(&BlockConfig::post_ln(2));
        let omegas = crate::nn::admin_profile_blocks(&mut admin, &x).unwrap();
        assert!(omegas[1..].iter().all(|w| *w > 1.0), "{omegas:?}");
        for blocks in [&pre, &post, &admin] {
            let (small, large) = (measure(blocks, 1e-3), measure(blocks, 1e-2));
            assert!(small > 0.0 && small.is_finite() && large > 10.0 * small, "{small} {large}");
        }
        assert_ne!(measure(&post, 1e-2), measure(&admin, 1e-2));
    }

    #[test]
    fn invalid_arguments_are_errors() {
        let layer = linear_f64(2, 2);
        let x = Tensor::ones([1, 2], DType::F64).unwrap();
        for (eps, samples) in [(0.1, 0), (-0.1, 1), (f64::NAN, 1), (f64::INFINITY, 1)] {
            let e = output_change(|| layer.forward(&x), &layer.params(), eps, samples, &mut rng(0)).unwrap_err();
            assert!(e.to_string().contains("output_change"), "{e}");
        }
    }
}
