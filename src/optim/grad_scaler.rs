//! Dynamic loss scaling for mixed-precision training, with
//! `torch.cuda.amp.GradScaler`'s semantics and defaults.
//!
//! f16 gradients underflow to zero below about 6e-8. Multiplying the loss by
//! a large scale S before `backward()` multiplies every gradient by S too,
//! lifting small ones into range; the gradients are divided by S again
//! before the optimizer sees them. If the scale was too large some gradient
//! overflows to inf (or becomes NaN): that step is skipped and S is halved.
//! After `growth_interval` steps in a row without overflow S is doubled, so
//! it stays near the largest value that does not overflow.
//!
//! One training step:
//!
//! ```
//! use tamer::nn::{Linear, Module};
//! use tamer::optim::{GradScaler, Optimizer, Sgd, SgdConfig};
//! use tamer::{rng, DType, Tensor};
//! let model = Linear::new(3, 1, true, &mut rng(0)).unwrap();
//! let mut opt = Sgd::new(model.named_params(), SgdConfig::new(0.1)).unwrap();
//! let mut scaler = GradScaler::new();
//! let x = Tensor::randn([8, 3], DType::F32, &mut rng(1)).unwrap();
//! let loss = model.forward(&x).unwrap().square().unwrap().mean_all().unwrap();
//! let mut grads = scaler.scale(&loss).unwrap().backward().unwrap();
//! let found_inf = scaler.unscale_and_check(&mut grads).unwrap();
//! if !found_inf {
//!     // the gradients are unscaled: clip them here if you clip
//!     opt.step(&grads).unwrap();
//! }
//! scaler.update(found_inf);
//! assert_eq!(scaler.get_scale(), 65536.0);
//! ```
//!
//! The scale is a power of two by default (65536 = 2^16, growth ×2, backoff
//! ×0.5), so scaling and unscaling are exact in binary floating point: the
//! unscaled gradients equal, bit for bit, those of the unscaled loss (barring
//! overflow, which is what the check is for, and underflow, which is what the
//! scaling prevents).
//!
//! Device-independent: the scaling and the inf/NaN check are tensor ops on
//! the gradients' own devices, with one host read per device per step.

use super::{fmt_f64, Optimizer, OptimizerState};
use crate::{DType, Device, Error, GradStore, NoGradGuard, Result, Tensor};

/// Dynamic loss scaler (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct GradScaler {
    /// Kept as an f32 value, as torch keeps it in an f32 tensor.
    scale: f32,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: u64,
    /// Steps without inf/NaN since the last change of the scale.
    growth_tracker: u64,
    enabled: bool,
}

impl Default for GradScaler {
    fn default() -> Self {
        Self::new()
    }
}

impl GradScaler {
    /// torch's defaults: init_scale 65536 (2^16), growth_factor 2,
    /// backoff_factor 0.5, growth_interval 2000.
    pub fn new() -> GradScaler {
        GradScaler {
            scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            growth_tracker: 0,
            enabled: true,
        }
    }

    /// A scaler with its own constants: `init_scale` > 0 and finite in f32,
    /// `growth_factor` > 1, `backoff_factor` in (0, 1), `growth_interval` >= 1.
    pub fn with_config(init_scale: f64, growth_factor: f64, backoff_factor: f64, growth_interval: u64) -> Result<GradScaler> {
        const OP: &str = "GradScaler::with_config";
        check_constants(OP, init_scale, growth_factor, backoff_factor, growth_interval)?;
        Ok(GradScaler {
            scale: init_scale as f32,
            growth_factor,
            backoff_factor,
            growth_interval,
            growth_tracker: 0,
            enabled: true,
        })
    }

    /// A disabled scaler passes the loss and gradients through untouched and
    /// never skips a step (torch's `enabled=False`), so one training loop
    /// serves f32 and f16 runs.
    pub fn enabled(mut self, enabled: bool) -> GradScaler {
        self.enabled = enabled;
        self
    }
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
    /// The current scale (1 when disabled).
    pub fn get_scale(&self) -> f64 {
        if self.enabled {
            self.scale as f64
        } else {
            1.0
        }
    }
    pub fn growth_factor(&self) -> f64 {
        self.growth_factor
    }
    pub fn backoff_factor(&self) -> f64 {
        self.backoff_factor
    }
    pub fn growth_interval(&self) -> u64 {
        self.growth_interval
    }
    /// Clean steps since the scale last changed.
    pub fn growth_tracker(&self) -> u64 {
        self.growth_tracker
    }

    /// `loss · scale`, to call `backward()` on (differentiable: every
    /// gradient comes out multiplied by the scale).
    pub fn scale(&self, loss: &Tensor) -> Result<Tensor> {
        if !self.enabled {
            return Ok(loss.clone());
        }
        loss.scale(self.scale as f64)
    }

    /// Divide every gradient in `grads` by the scale (replacing it in the
    /// store, as [`clip_grad_norm`](super::clip_grad_norm) does) and report
    /// whether any element of any gradient is inf or NaN. The multiplier is
    /// `1/scale` rounded to f32, as torch's; exact for power-of-two scales.
    /// Call it once per step, before clipping and `step`. Disabled: no-op, false.
    pub fn unscale_and_check(&self, grads: &mut GradStore) -> Result<bool> {
        if !self.enabled {
            return Ok(false);
        }
        let _guard = NoGradGuard::new();
        let inv = (1.0 / self.scale as f64) as f32 as f64;
        let ids: Vec<_> = grads.iter().map(|(id, _)| *id).collect();
        // Per device, the sum over gradients of Σ (g · 0): 0 when every
        // element is finite, NaN as soon as one is inf or NaN (inf · 0 = NaN),
        // exactly, however large the finite gradients are. Read once per device.
        let mut flags: Vec<(Device, Tensor)> = Vec::new();
        for id in ids {
            let Some(g) = grads.get_by_id(id) else { continue };
            if !g.dtype().is_float() {
                continue;
            }
            let unscaled = g.scale(inv)?;
            let flag = unscaled.scale(0.0)?.sum_all()?.to_dtype(DType::F32)?;
            match flags.iter_mut().find(|(d, _)| *d == unscaled.device()) {
                Some((_, acc)) => *acc = acc.add(&flag)?,
                None => flags.push((unscaled.device(), flag)),
            }
            grads.insert_by_id(id, unscaled);
        }
        for (_, flag) in &flags {
            if !flag.to_scalar()?.is_finite() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// After a step's check: back off (scale × backoff_factor, tracker reset)
    /// when `found_inf`, else count a clean step and grow the scale by
    /// growth_factor after growth_interval of them in a row (unless that
    /// would overflow f32). Disabled: no-op.
    pub fn update(&mut self, found_inf: bool) {
        if !self.enabled {
            return;
        }
        if found_inf {
            self.scale = (self.scale as f64 * self.backoff_factor) as f32;
            self.growth_tracker = 0;
            return;
        }
        let successful = self.growth_tracker + 1;
        if successful >= self.growth_interval {
            let grown = (self.scale as f64 * self.growth_factor) as f32;
            if grown.is_finite() {
                self.scale = grown;
            }
            self.growth_tracker = 0;
        } else {
            self.growth_tracker = successful;
        }
    }

    /// The whole step: unscale and check `grads`, run `opt.step` unless an
    /// inf/NaN was found, update the scale. Returns whether the optimizer stepped.
    pub fn step(&mut self, opt: &mut dyn Optimizer, grads: &mut GradStore) -> Result<bool> {
        let found_inf = self.unscale_and_check(grads)?;
        if !found_inf {
            opt.step(grads)?;
        }
        self.update(found_inf);
        Ok(!found_inf)
    }

    /// The scaler's state as checkpoint metadata (no tensors): the scale, the
    /// constants and the growth tracker, under `kind = grad_scaler`. Combine
    /// with a model's checkpoint with [`OptimizerState::prefixed`].
    pub fn state_dict(&self) -> OptimizerState {
        let mut state = OptimizerState::default();
        let m = &mut state.metadata;
        m.insert("kind".into(), "grad_scaler".into());
        m.insert("scale".into(), fmt_f64(self.scale as f64));
        m.insert("growth_factor".into(), fmt_f64(self.growth_factor));
        m.insert("backoff_factor".into(), fmt_f64(self.backoff_factor));
        m.insert("growth_interval".into(), self.growth_interval.to_string());
        m.insert("growth_tracker".into(), self.growth_tracker.to_string());
        m.insert("enabled".into(), self.enabled.to_string());
        state
    }

    /// Restore what [`GradScaler::state_dict`] saved (validated as in
    /// [`GradScaler::with_config`]).
    pub fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        const OP: &str = "GradScaler::load_state_dict";
        match state.metadata.get("kind").map(String::as_str) {
            Some("grad_scaler") => {}
            Some(other) => return Err(Error::value(OP, format!("the state is a '{other}', expected a 'grad_scaler'"))),
            None => return Err(Error::value(OP, "the state has no 'kind' entry: it was not made by GradScaler::state_dict")),
        }
        let scale = state.meta_f64(OP, "scale")?;
        let growth_factor = state.meta_f64(OP, "growth_factor")?;
        let backoff_factor = state.meta_f64(OP, "backoff_factor")?;
        let growth_interval = state.meta_u64(OP, "growth_interval")?;
        let growth_tracker = state.meta_u64(OP, "growth_tracker")?;
        let enabled = match state.metadata.get("enabled").map(String::as_str) {
            Some("true") => true,
            Some("false") => false,
            other => return Err(Error::value(OP, format!("state entry 'enabled' = {other:?}: expected true or false"))),
        };
        check_constants(OP, scale, growth_factor, backoff_factor, growth_interval)?;
        *self = GradScaler {
            scale: scale as f32,
            growth_factor,
            backoff_factor,
            growth_interval,
            growth_tracker,
            enabled,
        };
        Ok(())
    }
}

fn check_constants(op: &'static str, scale: f64, growth_factor: f64, backoff_factor: f64, growth_interval: u64) -> Result<()> {
    if !(scale > 0.0 && (scale as f32).is_finite()) {
        return Err(Error::value(op, format!("scale = {scale}: expected a positive value finite in f32")));
    }
    if !(growth_factor > 1.0 && growth_factor.is_finite()) {
        return Err(Error::value(op, format!("growth_factor = {growth_factor}: expected a finite value > 1")));
    }
    if !(backoff_factor > 0.0 && backoff_factor < 1.0) {
        return Err(Error::value(op, format!("backoff_factor = {backoff_factor}: expected a value in (0, 1)")));
    }
    if growth_interval == 0 {
        return Err(Error::value(op, "growth_interval = 0: expected at least 1"));
    }
    Ok(())
}
