//! Parameter initialisers with PyTorch's and timm's semantics, and the
//! transformer-specific schemes: GPT-2's scaled residual projections and
//! Admin's residual-branch scaling (Liu et al. 2020, "Understanding the
//! Difficulty of Training Transformers").
//!
//! Every initialiser overwrites a [`Param`] in place (its dtype is kept), so
//! optimizers and checkpoints that share the parameter see the new values.
//!
//! Layers make their parameters with `fresh` and then initialise them.
//! A model built from given weights (`from_weights`) replaces every one of
//! them at once, so it builds inside `skeleton`: the parameters are then
//! placeholders and the initialisers do nothing, and no memory or random
//! draws go into values that would be thrown away.

use super::{name_matches, Module, Param};
use crate::types::erf_f64;
use crate::{DType, Error, Result, Shape, Tensor};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::cell::Cell;

thread_local! {
    /// Whether this thread is inside [`skeleton`].
    static SKELETON: Cell<bool> = const { Cell::new(false) };
}

/// Run `build`, which makes modules whose every parameter and buffer the
/// caller replaces right after (as [`adopt_weights`](super::adopt_weights)
/// does), with [`fresh`] giving placeholders and the initialisers skipped.
pub(crate) fn skeleton<T>(build: impl FnOnce() -> T) -> T {
    /// Restores the previous state however `build` ends (a panic included).
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SKELETON.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SKELETON.with(|s| s.replace(true)));
    build()
}

fn in_skeleton() -> bool {
    SKELETON.with(Cell::get)
}

/// A new f32 tensor of `shape` with every element `value`, for a layer to
/// make a parameter or buffer of (and then initialise). Inside [`skeleton`]
/// it is a placeholder instead: one element viewed as `shape` (stride 0),
/// which costs no memory however large the shape.
pub(crate) fn fresh(shape: impl Into<Shape>, value: f64) -> Result<Tensor> {
    let shape = shape.into();
    if in_skeleton() {
        shape.check_size("fresh", DType::F32.size_in_bytes())?;
        return Tensor::full(Shape::scalar(), value, DType::F32)?.broadcast_as(shape);
    }
    if value == 0.0 {
        Tensor::zeros(shape, DType::F32)
    } else {
        Tensor::full(shape, value, DType::F32)
    }
}

/// PyTorch's `_calculate_fan_in_and_fan_out` for a weight of shape `dims`:
/// `fan_in = dims[1]·r`, `fan_out = dims[0]·r` with `r` the product of
/// `dims[2..]` (the receptive field of a conv kernel; 1 for a linear weight).
///
/// ```
/// use tamer::nn::init::fan_in_and_fan_out;
/// assert_eq!(fan_in_and_fan_out(&[64, 32]).unwrap(), (32, 64)); // Linear(32, 64)
/// assert_eq!(fan_in_and_fan_out(&[16, 3, 5, 5]).unwrap(), (75, 400)); // Conv2d(3, 16, 5)
/// assert!(fan_in_and_fan_out(&[7]).is_err());
/// ```
pub fn fan_in_and_fan_out(dims: &[usize]) -> Result<(usize, usize)> {
    if dims.len() < 2 {
        return Err(Error::shape(
            "fan_in_and_fan_out",
            format!("fan in and fan out need a weight of at least 2 dims, got shape {dims:?}"),
        ));
    }
    let receptive: usize = dims[2..].iter().product();
    Ok((dims[1] * receptive, dims[0] * receptive))
}

/// Which fan Kaiming initialisation preserves the variance of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    /// Forward activations (PyTorch's default).
    FanIn,
    /// Backward gradients.
    FanOut,
}

/// The nonlinearity following a layer, for [`Nonlinearity::gain`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Nonlinearity {
    /// Identity (also linear/conv layers and sigmoid): gain 1.
    Linear,
    Sigmoid,
    /// Gain 5/3.
    Tanh,
    /// Gain √2.
    Relu,
    /// Leaky ReLU with the given negative slope: gain `√(2/(1+slope²))`.
    /// PyTorch's default layer init is `LeakyRelu(√5)`.
    LeakyRelu(f64),
    /// Gain 3/4.
    Selu,
}

impl Nonlinearity {
    /// `torch.nn.init.calculate_gain`.
    pub fn gain(self) -> f64 {
        match self {
            Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
            Nonlinearity::Tanh => 5.0 / 3.0,
            Nonlinearity::Relu => 2f64.sqrt(),
            Nonlinearity::LeakyRelu(slope) => (2.0 / (1.0 + slope * slope)).sqrt(),
            Nonlinearity::Selu => 0.75,
        }
    }
}

fn set_from(param: &Param, make: impl FnOnce(&[usize], crate::DType) -> Result<Tensor>) -> Result<()> {
    if in_skeleton() {
        // A placeholder, about to be replaced: nothing to draw.
        return Ok(());
    }
    let t = param.tensor();
    let values = make(t.dims(), t.dtype())?;
    param.set(&values)
}

/// Fill with `value`.
pub fn constant_(param: &Param, value: f64) -> Result<()> {
    set_from(param, |dims, dtype| Tensor::full(dims.to_vec(), value, dtype))
}
pub fn zeros_(param: &Param) -> Result<()> {
    constant_(param, 0.0)
}
pub fn ones_(param: &Param) -> Result<()> {
    constant_(param, 1.0)
}

/// Uniform on `[low, high)`.
pub fn uniform_(param: &Param, low: f64, high: f64, rng: &mut impl Rng) -> Result<()> {
    set_from(param, |dims, dtype| Tensor::uniform(dims.to_vec(), low, high, dtype, rng))
}

/// Normal `N(mean, std²)`.
///
/// ```
/// use tamer::nn::{init, Param};
/// use tamer::{rng, DType, Tensor};
/// let p = Param::new(Tensor::zeros([64, 64], DType::F32).unwrap());
/// init::normal_(&p, 0.0, 0.02, &mut rng(0)).unwrap();
/// let v = p.tensor().to_f64_vec().unwrap();
/// assert!(v.iter().any(|&x| x != 0.0) && v.iter().all(|x| x.abs() < 0.2));
/// ```
pub fn normal_(param: &Param, mean: f64, std: f64, rng: &mut impl Rng) -> Result<()> {
    set_from(param, |dims, dtype| Tensor::normal(dims.to_vec(), mean, std, dtype, rng))
}

fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + erf_f64(x / std::f64::consts::SQRT_2))
}

/// Normal `N(mean, std²)` truncated to `[a, b]` (absolute bounds, like
/// `torch.nn.init.trunc_normal_` and timm's). Note timm's default bounds are
/// `a = −2, b = 2` in absolute units, so with `std = 0.02` the truncation
/// is at ±100σ and has no effect; use [`timm_trunc_normal_`] for that call.
///
/// Sampled exactly by rejection. Intervals holding less than 1e-4 of the
/// normal's mass are rejected with an error rather than sampled slowly.
///
/// ```
/// use tamer::nn::{init, Param};
/// use tamer::{rng, DType, Tensor};
/// let p = Param::new(Tensor::zeros([1000], DType::F64).unwrap());
/// init::trunc_normal_(&p, 0.0, 1.0, -0.5, 0.5, &mut rng(0)).unwrap();
/// assert!(p.tensor().to_vec::<f64>().unwrap().iter().all(|x| x.abs() <= 0.5));
/// assert!(init::trunc_normal_(&p, 0.0, 1.0, 10.0, 11.0, &mut rng(0)).is_err());
/// ```
pub fn trunc_normal_(param: &Param, mean: f64, std: f64, a: f64, b: f64, rng: &mut impl Rng) -> Result<()> {
    const OP: &str = "trunc_normal_";
    if !(std > 0.0 && std.is_finite() && mean.is_finite()) {
        return Err(Error::value(OP, format!("std {std} must be positive and finite, mean {mean} finite")));
    }
    if a.is_nan() || b.is_nan() || a >= b {
        return Err(Error::value(OP, format!("lower bound {a} must be below upper bound {b}")));
    }
    let mass = normal_cdf((b - mean) / std) - normal_cdf((a - mean) / std);
    if mass.is_nan() || mass < 1e-4 {
        return Err(Error::value(
            OP,
            format!("[{a}, {b}] holds only {mass:.3e} of N({mean}, {std}²); too little to sample by rejection"),
        ));
    }
    set_from(param, |dims, dtype| {
        let n: usize = dims.iter().product();
        let values: Vec<f64> = (0..n)
            .map(|_| loop {
                let z: f64 = StandardNormal.sample(rng);
                let x = mean + std * z;
                if (a..=b).contains(&x) {
                    break x;
                }
            })
            .collect();
        Tensor::from_vec(values, dims.to_vec())?.to_dtype(dtype)
    })
}

/// timm's `trunc_normal_(t, std=std)`: mean 0 and absolute bounds ±2 (ViT
/// weights, position embeddings and the CLS token use `std = 0.02`).
pub fn timm_trunc_normal_(param: &Param, std: f64, rng: &mut impl Rng) -> Result<()> {
    trunc_normal_(param, 0.0, std, -2.0, 2.0, rng)
}

/// Glorot uniform: `U(±gain·√(6/(fan_in+fan_out)))`.
pub fn xavier_uniform_(param: &Param, gain: f64, rng: &mut impl Rng) -> Result<()> {
    let (fan_in, fan_out) = fan_in_and_fan_out(&param.dims())?;
    let bound = gain * (6.0 / (fan_in + fan_out) as f64).sqrt();
    uniform_(param, -bound, bound, rng)
}

/// Glorot normal: `N(0, gain²·2/(fan_in+fan_out))`.
pub fn xavier_normal_(param: &Param, gain: f64, rng: &mut impl Rng) -> Result<()> {
    let (fan_in, fan_out) = fan_in_and_fan_out(&param.dims())?;
    normal_(param, 0.0, gain * (2.0 / (fan_in + fan_out) as f64).sqrt(), rng)
}

fn kaiming_std(param: &Param, mode: FanMode, nonlinearity: Nonlinearity) -> Result<f64> {
    let (fan_in, fan_out) = fan_in_and_fan_out(&param.dims())?;
    let fan = match mode {
        FanMode::FanIn => fan_in,
        FanMode::FanOut => fan_out,
    };
    if fan == 0 {
        return Err(Error::shape("kaiming", format!("weight of shape {:?} has a zero fan", param.dims())));
    }
    Ok(nonlinearity.gain() / (fan as f64).sqrt())
}

/// He uniform: `U(±√3·gain/√fan)`. `kaiming_uniform_(w, FanIn, LeakyRelu(√5))`
/// is PyTorch's default `Linear`/`Conv2d` weight init, `U(±1/√fan_in)`.
pub fn kaiming_uniform_(param: &Param, mode: FanMode, nonlinearity: Nonlinearity, rng: &mut impl Rng) -> Result<()> {
    let bound = 3f64.sqrt() * kaiming_std(param, mode, nonlinearity)?;
    uniform_(param, -bound, bound, rng)
}

/// He normal: `N(0, gain²/fan)`.
pub fn kaiming_normal_(param: &Param, mode: FanMode, nonlinearity: Nonlinearity, rng: &mut impl Rng) -> Result<()> {
    let std = kaiming_std(param, mode, nonlinearity)?;
    normal_(param, 0.0, std, rng)
}

/// GPT-2's base standard deviation.
pub const GPT2_STD: f64 = 0.02;

/// GPT-2's std for projections that write into the residual stream:
/// `0.02/√(2·n_layer)` (two residual branches per block).
pub fn gpt2_residual_std(n_layer: usize) -> f64 {
    GPT2_STD / (2.0 * n_layer.max(1) as f64).sqrt()
}

/// nanoGPT's `_init_weights` over a whole module: every parameter of rank ≥ 2
/// (linear weights, embeddings) is drawn from `N(0, 0.02²)`, except those whose
/// name matches one of `residual_patterns` (glob, e.g. `"*c_proj.weight"`),
/// which get [`gpt2_residual_std`]; parameters named `bias` or `*.bias` are
/// zeroed. Other rank-1 parameters (LayerNorm weights) are left as they are.
/// Returns the number of parameters drawn with the residual std.
pub fn gpt2_init<M: Module + ?Sized>(module: &M, n_layer: usize, residual_patterns: &[&str], rng: &mut impl Rng) -> Result<usize> {
    let res_std = gpt2_residual_std(n_layer);
    let mut n_res = 0;
    for (name, p) in module.named_params() {
        if p.dims().len() >= 2 {
            let residual = residual_patterns.iter().any(|pat| name_matches(pat, &name));
            n_res += residual as usize;
            normal_(&p, 0.0, if residual { res_std } else { GPT2_STD }, rng)?;
        } else if name == "bias" || name.ends_with(".bias") {
            zeros_(&p)?;
        }
    }
    Ok(n_res)
}

/// Admin's profile-free residual scale for a post-LN stack of `num_sublayers`
/// residual branches (`N = 2·layers` for attention + MLP blocks):
/// `ω = √((N+1)/ln(N+1) − 1)`. Each branch computes `x·ω + f(x)` before its norm.
///
/// ```
/// let w = tamer::nn::init::admin_omega(12).unwrap(); // 6 layers
/// assert!((w - (13.0f64 / 13f64.ln() - 1.0).sqrt()).abs() < 1e-12);
/// assert!(tamer::nn::init::admin_omega(0).is_err());
/// ```
pub fn admin_omega(num_sublayers: usize) -> Result<f64> {
    if num_sublayers == 0 {
        return Err(Error::value("admin_omega", "need at least one residual sublayer (N = 2·layers)"));
    }
    let n1 = (num_sublayers + 1) as f64;
    Ok((n1 / n1.ln() - 1.0).sqrt())
}

/// [`admin_omega`] with `N = 2·n_layers`.
pub fn admin_omega_for_layers(n_layers: usize) -> Result<f64> {
    admin_omega(2 * n_layers)
}

/// Admin's profiling variant (`adaptive-profiling` in the reference
/// implementation): ω for each residual sublayer, in forward order, from the
/// output variances `Var[f_i]` of the branches measured in one forward pass at
/// initialisation. With a unit-variance (layer-normed) stream entering each
/// sublayer, `ω_1 = 1` and `ω_{i+1}² = ω_i² + Var[f_i]`, i.e.
/// `ω_i = √(1 + Σ_{j<i} Var[f_j])` — the paper's `√(Σ_{j<i} Var[f_j])` with the
/// embedding counted as branch 0.
///
/// When the stream's variance differs from 1, drive [`AdminProfiler`] instead.
///
/// ```
/// let w = tamer::nn::init::admin_omegas_from_variances(&[3.0, 5.0, 7.0]).unwrap();
/// assert_eq!(w, vec![1.0, 2.0, 3.0]);
/// ```
pub fn admin_omegas_from_variances(branch_variances: &[f64]) -> Result<Vec<f64>> {
    let mut prof = AdminProfiler::new();
    let mut out = Vec::with_capacity(branch_variances.len());
    for &v in branch_variances {
        let w = prof.omega();
        out.push(w);
        prof.record(w * w, v)?;
    }
    Ok(out)
}

/// The exact profiling recurrence of the Admin reference code, one sublayer at a
/// time during a forward pass at initialisation:
///
/// 1. `ω = profiler.omega()` and set it on the sublayer (it computes `x·ω + f(x)`);
/// 2. measure `Var[x·ω]` (the scaled residual) and `Var[f(x)]` (the branch output),
///    each over all elements, and call `profiler.record(var_residual, var_branch)`;
///    the next sublayer's ω becomes `√(Var[x·ω] + Var[f(x)])`.
///
/// Start at ω = 1.
#[derive(Clone, Debug)]
pub struct AdminProfiler {
    omega: f64,
}

impl Default for AdminProfiler {
    fn default() -> Self {
        Self::new()
    }
}

impl AdminProfiler {
    pub fn new() -> Self {
        AdminProfiler { omega: 1.0 }
    }
    /// ω for the next sublayer.
    pub fn omega(&self) -> f64 {
        self.omega
    }
    /// Record the measured variances of the current sublayer; returns the next ω.
    pub fn record(&mut self, var_scaled_residual: f64, var_branch: f64) -> Result<f64> {
        if !(var_scaled_residual >= 0.0 && var_branch >= 0.0 && (var_scaled_residual + var_branch).is_finite()) {
            return Err(Error::value(
                "AdminProfiler::record",
                format!("variances must be finite and non-negative, got {var_scaled_residual} and {var_branch}"),
            ));
        }
        self.omega = (var_scaled_residual + var_branch).sqrt();
        Ok(self.omega)
    }
}
