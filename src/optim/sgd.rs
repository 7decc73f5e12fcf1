//! Stochastic gradient descent, as `torch.optim.SGD`.

use super::device::{follow, sgd_step, zeros_state};
use super::slots::Slots;
use super::{buffer_tensor, check_hyper, fmt_f64, split_param_groups, tensor_buffer, DecayRule, Optimizer, OptimizerState, ParamGroup};
use crate::backend::contract::optim::SgdStep;
use crate::backend::Storage;
use crate::nn::Param;
use crate::{Error, GradStore, Result, Tensor};

/// SGD's hyperparameters; [`SgdConfig::new`] gives PyTorch's defaults.
#[derive(Clone, Debug)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    /// L2 penalty added to the gradient (`grad + wd · param`), for the
    /// parameters `decay_rule` selects (in [`Sgd::new`]).
    pub weight_decay: f64,
    /// Which parameters `weight_decay` applies to; [`DecayRule::Torch`]
    /// (all of them, as `torch.optim.SGD(model.parameters())`) by default.
    pub decay_rule: DecayRule,
}

impl SgdConfig {
    /// Plain SGD at `lr`: no momentum, dampening or weight decay.
    pub fn new(lr: f64) -> SgdConfig {
        SgdConfig {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            decay_rule: DecayRule::Torch,
        }
    }
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    pub fn dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    pub fn decay_rule(mut self, rule: DecayRule) -> Self {
        self.decay_rule = rule;
        self
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "Sgd::new";
        check_hyper(OP, "lr", self.lr, 0.0, f64::INFINITY, true)?;
        check_hyper(OP, "momentum", self.momentum, 0.0, f64::INFINITY, true)?;
        check_hyper(OP, "dampening", self.dampening, f64::MIN, f64::INFINITY, true)?;
        check_hyper(OP, "weight_decay", self.weight_decay, 0.0, f64::INFINITY, true)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::value(
                OP,
                format!(
                    "Nesterov momentum needs momentum > 0 and dampening 0, got momentum {} and dampening {}",
                    self.momentum, self.dampening
                ),
            ));
        }
        Ok(())
    }
}

/// A parameter's state; the buffer lives on the parameter's device.
struct SgdState {
    momentum_buffer: Storage,
}

/// SGD with optional momentum, dampening, Nesterov momentum and L2 weight
/// decay, with `torch.optim.SGD`'s update:
///
/// ```text
/// g ← g + wd·p                        (weight decay)
/// b ← g (first step),  μ·b + (1−τ)·g  (momentum μ, dampening τ)
/// g ← g + μ·b (Nesterov),  b (otherwise)
/// p ← p − lr·g
/// ```
///
/// ```
/// use tamer::nn::Param;
/// use tamer::optim::{Optimizer, Sgd, SgdConfig};
/// use tamer::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![1.0f64, -2.0], [2]).unwrap());
/// let mut opt = Sgd::new(vec![("w".into(), w.clone())], SgdConfig::new(0.1).momentum(0.9)).unwrap();
/// for _ in 0..2 {
///     let grads = w.tensor().square().unwrap().sum_all().unwrap().backward().unwrap(); // g = 2w
///     opt.step(&grads).unwrap();
/// }
/// // step 1: b = 2w₀ = [2, −4], w₁ = [0.8, −1.6]; step 2: b = 0.9·b + 2w₁ = [3.4, −6.8]
/// let w2 = w.tensor().to_vec::<f64>().unwrap();
/// assert!((w2[0] - 0.46).abs() < 1e-12 && (w2[1] + 0.92).abs() < 1e-12);
/// ```
pub struct Sgd {
    config: SgdConfig,
    core: Slots<SgdState>,
}

impl Sgd {
    /// SGD over named parameters (e.g. `model.named_params()`), with weight
    /// decay on the ones `config.decay_rule` selects.
    pub fn new(named_params: Vec<(String, Param)>, config: SgdConfig) -> Result<Sgd> {
        let groups = split_param_groups(named_params, config.weight_decay, &config.decay_rule);
        Sgd::with_groups(groups, config)
    }
    /// SGD over explicit groups; each group's `weight_decay` applies and
    /// `config.weight_decay` / `config.decay_rule` are ignored.
    pub fn with_groups(groups: Vec<ParamGroup>, config: SgdConfig) -> Result<Sgd> {
        config.validate()?;
        let core = Slots::new("Sgd::new", groups)?;
        Ok(Sgd { config, core })
    }
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

fn step_slot(name: &str, t: &Tensor, g: &Tensor, state: &mut Option<SgdState>, h: SgdStep) -> Result<()> {
    const OP: &str = "Sgd::step";
    if h.momentum == 0.0 {
        return sgd_step(OP, name, t, g, None, &h);
    }
    match state {
        Some(s) => {
            follow(&mut s.momentum_buffer, t.device())?;
            sgd_step(OP, name, t, g, Some(&mut s.momentum_buffer), &h)
        }
        None => {
            // The first step creates the buffer; it is kept only once the update succeeded.
            let mut buf = zeros_state(t)?;
            sgd_step(OP, name, t, g, Some(&mut buf), &SgdStep { init_buffer: true, ..h })?;
            *state = Some(SgdState { momentum_buffer: buf });
            Ok(())
        }
    }
}

impl Optimizer for Sgd {
    fn name(&self) -> &'static str {
        "sgd"
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let cfg = &self.config;
        self.core.step("Sgd::step", grads, |name, t, g, state, group| {
            let h = SgdStep {
                lr: cfg.lr * group.lr_scale,
                weight_decay: group.weight_decay,
                momentum: cfg.momentum,
                dampening: cfg.dampening,
                nesterov: cfg.nesterov,
                init_buffer: false,
            };
            step_slot(name, t, g, state, h)
        })
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }
    fn momentum(&self) -> f64 {
        self.config.momentum
    }
    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        check_hyper("Sgd::set_momentum", "momentum", momentum, 0.0, f64::INFINITY, true)?;
        self.config.momentum = momentum;
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
            ("momentum", fmt_f64(c.momentum)),
            ("dampening", fmt_f64(c.dampening)),
            ("nesterov", c.nesterov.to_string()),
        ];
        self.core.state_dict(self.name(), c.lr, &settings, |name, s, dims, st| {
            st.tensors
                .push((format!("state.{name}.momentum_buffer"), buffer_tensor(&s.momentum_buffer, dims)?));
            Ok(())
        })
    }

    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        const OP: &str = "Sgd::load_state_dict";
        let (steps, lr) = self.core.check_state(OP, self.name(), state)?;
        let momentum = state.meta_f64(OP, "momentum")?;
        // What loading does not restore must agree (momentum and lr are set by schedules, so they are loaded).
        state.expect_f64(OP, "dampening", self.config.dampening)?;
        state.expect_bool(OP, "nesterov", self.config.nesterov)?;
        self.core.replace_states(steps, |name, param| {
            let key = format!("state.{name}.momentum_buffer");
            match state.get(&key) {
                Some(t) => Ok(Some(SgdState {
                    momentum_buffer: tensor_buffer(OP, &key, t, param)?,
                })),
                None => Ok(None),
            }
        })?;
        self.config.lr = lr;
        self.config.momentum = momentum;
        Ok(())
    }

    fn fresh_over(&self, groups: Vec<ParamGroup>) -> Result<Box<dyn Optimizer>> {
        Ok(Box::new(Sgd::with_groups(groups, self.config.clone())?))
    }
}
