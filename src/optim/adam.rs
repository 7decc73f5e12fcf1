//! Adam and AdamW, as `torch.optim.Adam` and `torch.optim.AdamW`.

use super::device::{adam_step, follow, zeros_state};
use super::slots::Slots;
use super::{buffer_tensor, check_hyper, fmt_f64, split_param_groups, tensor_buffer, DecayRule, Optimizer, OptimizerState, ParamGroup};
use crate::backend::contract::optim::AdamStep;
use crate::backend::Storage;
use crate::nn::Param;
use crate::{GradStore, Result, Tensor};

/// Adam's hyperparameters. [`AdamConfig::adam`] and [`AdamConfig::adamw`]
/// give `torch.optim.Adam`'s and `torch.optim.AdamW`'s defaults.
#[derive(Clone, Debug)]
pub struct AdamConfig {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    /// For the parameters `decay_rule` selects (in [`Adam::new`]).
    pub weight_decay: f64,
    /// AdamW (`p ← p·(1 − lr·wd)` before the update) when true; Adam's L2
    /// penalty (`g ← g + wd·p`) when false.
    pub decoupled: bool,
    pub amsgrad: bool,
    /// Which parameters `weight_decay` applies to; [`DecayRule::Torch`]
    /// (all of them, as PyTorch) by default.
    pub decay_rule: DecayRule,
}

impl AdamConfig {
    /// Adam: betas (0.9, 0.999), eps 1e-8, no weight decay (coupled L2 when set).
    pub fn adam(lr: f64) -> AdamConfig {
        AdamConfig {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            amsgrad: false,
            decay_rule: DecayRule::Torch,
        }
    }
    /// AdamW: as Adam, with decoupled weight decay 0.01, on every parameter
    /// ([`DecayRule::Torch`]): `torch.optim.AdamW(model.parameters(), lr)`
    /// exactly. nanoGPT and timm decay only matrices and embeddings (timm not
    /// position embeddings either): add `.decay_rule(DecayRule::NanoGpt)` or
    /// `.decay_rule(DecayRule::timm(&model))` to train as they do.
    pub fn adamw(lr: f64) -> AdamConfig {
        AdamConfig {
            weight_decay: 1e-2,
            decoupled: true,
            ..AdamConfig::adam(lr)
        }
    }
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
        self
    }
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    pub fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self
    }
    pub fn decay_rule(mut self, rule: DecayRule) -> Self {
        self.decay_rule = rule;
        self
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "Adam::new";
        check_hyper(OP, "lr", self.lr, 0.0, f64::INFINITY, true)?;
        check_hyper(OP, "beta1", self.betas.0, 0.0, 1.0, false)?;
        check_hyper(OP, "beta2", self.betas.1, 0.0, 1.0, false)?;
        check_hyper(OP, "eps", self.eps, 0.0, f64::INFINITY, true)?;
        check_hyper(OP, "weight_decay", self.weight_decay, 0.0, f64::INFINITY, true)
    }
}

/// A parameter's state; the buffers live on the parameter's device.
struct AdamState {
    /// Updates this parameter has had (PyTorch's per-parameter `state['step']`).
    step: u64,
    exp_avg: Storage,
    exp_avg_sq: Storage,
    max_exp_avg_sq: Option<Storage>,
}

/// Adam / AdamW with `torch.optim.Adam`'s update (t counts this parameter's updates):
///
/// ```text
/// g ← g + wd·p  (Adam)        p ← p·(1 − lr·wd)  (AdamW)
/// m ← lerp(m, g, 1 − β₁)      v ← β₂·v + (1 − β₂)·g²     v̂ ← max(v̂, v) (AMSGrad)
/// p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
/// ```
///
/// ```
/// use tamer::nn::Param;
/// use tamer::optim::{Adam, AdamConfig, Optimizer};
/// use tamer::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![1.0f64, -2.0], [2]).unwrap());
/// let mut opt = Adam::new(vec![("w".into(), w.clone())], AdamConfig::adam(0.1)).unwrap();
/// let grads = w.tensor().square().unwrap().sum_all().unwrap().backward().unwrap();
/// opt.step(&grads).unwrap();
/// // The first step moves every coordinate by about lr against its gradient's sign.
/// let w1 = w.tensor().to_vec::<f64>().unwrap();
/// assert!((w1[0] - 0.9).abs() < 1e-7 && (w1[1] + 1.9).abs() < 1e-7);
/// ```
pub struct Adam {
    config: AdamConfig,
    core: Slots<AdamState>,
}

impl Adam {
    /// Adam over named parameters (e.g. `model.named_params()`), with weight
    /// decay on the ones `config.decay_rule` selects.
    pub fn new(named_params: Vec<(String, Param)>, config: AdamConfig) -> Result<Adam> {
        let groups = split_param_groups(named_params, config.weight_decay, &config.decay_rule);
        Adam::with_groups(groups, config)
    }
    /// Adam over explicit groups; each group's `weight_decay` applies and
    /// `config.weight_decay` / `config.decay_rule` are ignored.
    pub fn with_groups(groups: Vec<ParamGroup>, config: AdamConfig) -> Result<Adam> {
        config.validate()?;
        let core = Slots::new("Adam::new", groups)?;
        Ok(Adam { config, core })
    }
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }
}

fn step_slot(name: &str, t: &Tensor, g: &Tensor, state: &mut Option<AdamState>, cfg: &AdamConfig, lr: f64, wd: f64) -> Result<()> {
    const OP: &str = "Adam::step";
    let mut fresh = None;
    let s = match state {
        Some(s) => s,
        None => fresh.insert(AdamState {
            step: 0,
            exp_avg: zeros_state(t)?,
            exp_avg_sq: zeros_state(t)?,
            max_exp_avg_sq: if cfg.amsgrad { Some(zeros_state(t)?) } else { None },
        }),
    };
    let h = AdamStep {
        lr,
        betas: cfg.betas,
        eps: cfg.eps,
        weight_decay: wd,
        decoupled: cfg.decoupled,
        step: s.step + 1,
    };
    // AMSGrad switched on after some steps starts its running max from zero.
    if cfg.amsgrad && s.max_exp_avg_sq.is_none() {
        s.max_exp_avg_sq = Some(zeros_state(t)?);
    }
    follow(&mut s.exp_avg, t.device())?;
    follow(&mut s.exp_avg_sq, t.device())?;
    let vmax = match (&mut s.max_exp_avg_sq, cfg.amsgrad) {
        (Some(b), true) => {
            follow(b, t.device())?;
            Some(b)
        }
        _ => None,
    };
    adam_step(OP, name, t, g, &mut s.exp_avg, &mut s.exp_avg_sq, vmax, &h)?;
    s.step += 1;
    if let Some(f) = fresh {
        *state = Some(f);
    }
    Ok(())
}

impl Optimizer for Adam {
    fn name(&self) -> &'static str {
        if self.config.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let cfg = &self.config;
        self.core.step("Adam::step", grads, |name, t, g, state, group| {
            step_slot(name, t, g, state, cfg, cfg.lr * group.lr_scale, group.weight_decay)
        })
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }
    fn momentum(&self) -> f64 {
        self.config.betas.0
    }
    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        check_hyper("Adam::set_momentum", "beta1", momentum, 0.0, 1.0, false)?;
        self.config.betas.0 = momentum;
        Ok(())
    }
    fn step_count(&self) -> u64 {
        self.core.steps
    }
    fn param_groups(&self) -> &[ParamGroup] {
        &self.core.groups
    }

    fn state_dict(&self) -> Result<OptimizerState> {
        let c = &self.config;
        let settings = [
            ("beta1", fmt_f64(c.betas.0)),
            ("beta2", fmt_f64(c.betas.1)),
            ("eps", fmt_f64(c.eps)),
            ("amsgrad", c.amsgrad.to_string()),
        ];
        self.core.state_dict(self.name(), c.lr, &settings, |n, s, dims, st| {
            st.metadata.insert(format!("state.{n}.step"), s.step.to_string());
            st.tensors.push((format!("state.{n}.exp_avg"), buffer_tensor(&s.exp_avg, dims)?));
            st.tensors.push((format!("state.{n}.exp_avg_sq"), buffer_tensor(&s.exp_avg_sq, dims)?));
            if let Some(b) = &s.max_exp_avg_sq {
                st.tensors.push((format!("state.{n}.max_exp_avg_sq"), buffer_tensor(b, dims)?));
            }
            Ok(())
        })
    }

    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        const OP: &str = "Adam::load_state_dict";
        let (steps, lr) = self.core.check_state(OP, self.name(), state)?;
        let beta1 = state.meta_f64(OP, "beta1")?;
        // What loading does not restore must agree (β₁ and lr are set by schedules, so they are loaded).
        state.expect_f64(OP, "beta2", self.config.betas.1)?;
        state.expect_f64(OP, "eps", self.config.eps)?;
        state.expect_bool(OP, "amsgrad", self.config.amsgrad)?;
        self.core.replace_states(steps, |n, param| {
            let step_key = format!("state.{n}.step");
            if !state.metadata.contains_key(&step_key) {
                return Ok(None);
            }
            let buffer = |what: &str| -> Result<Option<Storage>> {
                let key = format!("state.{n}.{what}");
                state.get(&key).map(|t| tensor_buffer(OP, &key, t, param)).transpose()
            };
            let missing = |what: &str| crate::Error::value(OP, format!("the state has '{step_key}' but no 'state.{n}.{what}'"));
            Ok(Some(AdamState {
                step: state.meta_u64(OP, &step_key)?,
                exp_avg: buffer("exp_avg")?.ok_or_else(|| missing("exp_avg"))?,
                exp_avg_sq: buffer("exp_avg_sq")?.ok_or_else(|| missing("exp_avg_sq"))?,
                max_exp_avg_sq: buffer("max_exp_avg_sq")?,
            }))
        })?;
        self.config.lr = lr;
        self.config.betas.0 = beta1;
        Ok(())
    }

    fn fresh_over(&self, groups: Vec<ParamGroup>) -> Result<Box<dyn Optimizer>> {
        Ok(Box::new(Adam::with_groups(groups, self.config.clone())?))
    }
}
