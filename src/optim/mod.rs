//! Optimizers, learning-rate schedules, gradient clipping and accumulation.
//!
//! - [`Sgd`] (momentum, dampening, Nesterov, coupled L2 weight decay) and
//!   [`Adam`] (Adam with coupled L2 decay, or AdamW with decoupled decay;
//!   optional AMSGrad) follow `torch.optim`'s single-tensor update formulas
//!   operation by operation; `tests/integration/optim_reference.rs` compares trajectories
//!   with PyTorch's. Each update is one kernel of the parameter's backend
//!   (`OptimKernels`, reached through `device.rs`): a fused loop over the
//!   parameter's data on the CPU (`backend/cpu/optim.rs`), threaded for large
//!   parameters, one launch on CUDA (`cuda/optim.cu`); the state lives on the
//!   parameter's device.
//! - Parameters come in [`ParamGroup`]s, each with its own weight decay and
//!   learning-rate scale. [`Sgd::new`] and [`Adam::new`] split named
//!   parameters by a [`DecayRule`], named after the code it reproduces: the
//!   default, [`DecayRule::Torch`], decays every parameter as
//!   `torch.optim.AdamW(model.parameters())` does; [`DecayRule::NanoGpt`] and
//!   [`DecayRule::timm`] split as nanoGPT and timm do (see [`decay`]).
//!   [`DecaySummary`] says which parameters a set of groups decays; the
//!   trainer logs it at the start of every run.
//! - A parameter with no gradient in the [`GradStore`] (frozen, or unused in
//!   this forward pass) is skipped: its state and step count stay as they were,
//!   as in PyTorch when `p.grad is None`.
//! - [`Optimizer::state_dict`] / [`Optimizer::load_state_dict`] save and
//!   restore the state as named tensors plus string metadata, the shape of a
//!   safetensors checkpoint ([`OptimizerState::save`], [`OptimizerState::load`]).
//! - [`schedule`]: learning-rate schedules and the [`Scheduler`] that applies
//!   them; [`clip_grad_norm`]; [`GradAccumulator`].
//!
//! ```
//! use tamer::nn::{Linear, Module};
//! use tamer::optim::{Adam, AdamConfig, Optimizer, Scheduler, WarmupCosine};
//! use tamer::{rng, DType, Tensor};
//! let model = Linear::new(3, 1, true, &mut rng(0)).unwrap();
//! let mut opt = Adam::new(model.named_params(), AdamConfig::adamw(0.1).weight_decay(0.01)).unwrap();
//! let mut sched = Scheduler::new(WarmupCosine::new(0.1, 5, 100, 0.01).unwrap());
//! let x = Tensor::randn([8, 3], DType::F32, &mut rng(1)).unwrap();
//! let y = x.sum(&[1], true).unwrap();
//! let loss_at = || model.forward(&x).unwrap().sub(&y).unwrap().square().unwrap().mean_all().unwrap();
//! let first = loss_at().to_scalar().unwrap();
//! for _ in 0..100 {
//!     let mut grads = loss_at().backward().unwrap();
//!     tamer::optim::clip_grad_norm(&mut grads, &model.params(), 1.0).unwrap();
//!     sched.apply(&mut opt).unwrap();
//!     opt.step(&grads).unwrap();
//!     sched.advance();
//! }
//! assert!(loss_at().to_scalar().unwrap() < first / 100.0);
//! ```

mod accumulate;
mod adam;
mod clip;
pub mod decay;
mod device;
mod grad_scaler;
pub mod schedule;
mod sgd;
mod slots;
mod zero;

pub use accumulate::GradAccumulator;
pub use adam::{Adam, AdamConfig};
pub use clip::{clip_grad_norm, grad_norm};
pub use decay::{compact_names, split_param_groups, DecayFn, DecayRule, DecaySummary};
pub use grad_scaler::GradScaler;
pub use schedule::{Anneal, Constant, InverseSqrt, LrSchedule, OneCycle, Scheduler, WarmupCosine, WarmupLinear};
pub use sgd::{Sgd, SgdConfig};
pub use zero::{ShardSplit, Zero1};

use crate::backend::Storage;
use crate::nn::Param;
use crate::types::Layout;
use crate::{DType, Error, GradStore, Result, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// What every optimizer provides. There is no `zero_grad`: gradients come
/// fresh from each `backward()` as a [`GradStore`] and are passed to `step`.
pub trait Optimizer: Send {
    /// "sgd", "adam" or "adamw"; stored in the state dict and checked on load.
    fn name(&self) -> &'static str;
    /// One update of every parameter that has a gradient in `grads`.
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// The base learning rate (each group multiplies it by its `lr_scale`).
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    /// SGD's momentum or Adam's β₁: what one-cycle momentum cycling changes.
    fn momentum(&self) -> f64;
    fn set_momentum(&mut self, momentum: f64) -> Result<()>;
    /// How many times `step` has run.
    fn step_count(&self) -> u64;
    /// The parameter groups (each parameter once).
    fn param_groups(&self) -> &[ParamGroup];
    /// Every parameter, in group order, each once: what to clip.
    fn params(&self) -> Vec<Param> {
        self.param_groups().iter().flat_map(|g| g.params.iter().map(|(_, p)| p.clone())).collect()
    }
    /// A snapshot of the state: tensors named `state.<param name>.<buffer>`,
    /// metadata with the optimizer's name, hyperparameters and step counts.
    fn state_dict(&self) -> Result<OptimizerState>;
    /// Restore a snapshot taken by an optimizer of the same kind over
    /// parameters of the same names and shapes. Parameters the snapshot has no
    /// state for start fresh; state for names this optimizer does not have is
    /// an error (a renamed model would otherwise silently lose it). The
    /// learning rate and momentum (β₁) are taken from the snapshot; the other
    /// settings the state depends on (Adam's β₂, eps and AMSGrad, SGD's
    /// dampening and Nesterov) must match, or the load is an error.
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()>;
    /// A new optimizer of this kind, with these settings and no state, over
    /// `groups`: what [`Zero1`] builds over each rank's pieces of the
    /// parameters. Kinds that cannot say so.
    fn fresh_over(&self, groups: Vec<ParamGroup>) -> Result<Box<dyn Optimizer>> {
        let _ = groups;
        Err(Error::value(
            "Optimizer::fresh_over",
            format!("the '{}' optimizer cannot be rebuilt over other parameters", self.name()),
        ))
    }
    /// This optimizer as a [`Zero1`], if it is one (its state is sharded
    /// over ranks, and its `state_dict` is a collective).
    fn zero1(&self) -> Option<&Zero1> {
        None
    }
    /// [`zero1`](Self::zero1), mutably: what a trainer calls to average
    /// and clip a sharded optimizer's gradients.
    fn zero1_mut(&mut self) -> Option<&mut Zero1> {
        None
    }
}

/// Parameters sharing hyperparameters, as PyTorch's `param_groups`.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    pub params: Vec<(String, Param)>,
    pub weight_decay: f64,
    /// The group's learning rate is the optimizer's times this (1 by default;
    /// e.g. layer-wise decay when fine-tuning).
    pub lr_scale: f64,
}

impl ParamGroup {
    pub fn new(params: Vec<(String, Param)>, weight_decay: f64) -> ParamGroup {
        ParamGroup {
            params,
            weight_decay,
            lr_scale: 1.0,
        }
    }
    pub fn with_lr_scale(mut self, lr_scale: f64) -> ParamGroup {
        self.lr_scale = lr_scale;
        self
    }
}

/// An optimizer's state: tensors and string metadata, as a safetensors
/// checkpoint holds them.
#[derive(Clone, Debug, Default)]
pub struct OptimizerState {
    pub tensors: Vec<(String, Tensor)>,
    pub metadata: BTreeMap<String, String>,
}

impl OptimizerState {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Write to a safetensors file (atomically).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::checkpoint::save_with_metadata(path, &self.tensors, &self.metadata)
    }
    /// Read what [`OptimizerState::save`] wrote.
    pub fn load(path: impl AsRef<Path>) -> Result<OptimizerState> {
        let ckpt = crate::checkpoint::read(path)?;
        Ok(OptimizerState {
            tensors: ckpt.tensors,
            metadata: ckpt.metadata,
        })
    }

    /// Every tensor and metadata key prefixed with `prefix` (e.g. "optim."),
    /// to store the state beside a model's tensors in one checkpoint.
    pub fn prefixed(&self, prefix: &str) -> OptimizerState {
        OptimizerState {
            tensors: self.tensors.iter().map(|(n, t)| (format!("{prefix}{n}"), t.clone())).collect(),
            metadata: self.metadata.iter().map(|(k, v)| (format!("{prefix}{k}"), v.clone())).collect(),
        }
    }
    /// The entries whose names start with `prefix`, with it removed: the
    /// inverse of [`OptimizerState::prefixed`] on a combined checkpoint.
    pub fn strip_prefix(tensors: &[(String, Tensor)], metadata: &BTreeMap<String, String>, prefix: &str) -> OptimizerState {
        OptimizerState {
            tensors: tensors
                .iter()
                .filter_map(|(n, t)| n.strip_prefix(prefix).map(|s| (s.to_string(), t.clone())))
                .collect(),
            metadata: metadata
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone())))
                .collect(),
        }
    }

    pub(crate) fn meta_f64(&self, op: &'static str, key: &str) -> Result<f64> {
        let v = self
            .metadata
            .get(key)
            .ok_or_else(|| Error::value(op, format!("optimizer state has no '{key}' entry")))?;
        v.parse::<f64>()
            .map_err(|_| Error::value(op, format!("optimizer state entry '{key}' = '{v}' is not a number")))
    }
    pub(crate) fn meta_u64(&self, op: &'static str, key: &str) -> Result<u64> {
        let v = self
            .metadata
            .get(key)
            .ok_or_else(|| Error::value(op, format!("optimizer state has no '{key}' entry")))?;
        v.parse::<u64>()
            .map_err(|_| Error::value(op, format!("optimizer state entry '{key}' = '{v}' is not a step count")))
    }
    /// An error unless the saved `key` is `current`: a setting the state
    /// depends on and that loading does not change (e.g. Adam's β₂).
    pub(crate) fn expect_f64(&self, op: &'static str, key: &str, current: f64) -> Result<()> {
        let saved = self.meta_f64(op, key)?;
        if saved == current || (saved.is_nan() && current.is_nan()) {
            return Ok(());
        }
        Err(setting_mismatch(op, key, &saved, &current))
    }
    pub(crate) fn expect_bool(&self, op: &'static str, key: &str, current: bool) -> Result<()> {
        let v = self
            .metadata
            .get(key)
            .ok_or_else(|| Error::value(op, format!("optimizer state has no '{key}' entry")))?;
        let saved: bool = v
            .parse()
            .map_err(|_| Error::value(op, format!("optimizer state entry '{key}' = '{v}' is not true or false")))?;
        if saved == current {
            return Ok(());
        }
        Err(setting_mismatch(op, key, &saved, &current))
    }
    fn check_kind(&self, op: &'static str, name: &str) -> Result<()> {
        match self.metadata.get("optimizer") {
            Some(k) if k == name => Ok(()),
            Some(k) => Err(Error::value(op, format!("the state was saved by a '{k}' optimizer, this one is '{name}'"))),
            None => Err(Error::value(op, "the state has no 'optimizer' entry: it was not made by Optimizer::state_dict")),
        }
    }
}

fn setting_mismatch(op: &'static str, key: &str, saved: &dyn std::fmt::Display, current: &dyn std::fmt::Display) -> Error {
    Error::value(
        op,
        format!("the state was saved with {key} = {saved}, this optimizer has {key} = {current}; configure it as the saved run was"),
    )
}

/// One parameter the optimizer updates, and its per-parameter state.
pub(crate) struct Slot<S> {
    pub name: String,
    pub param: Param,
    pub group: usize,
    pub state: Option<S>,
}

/// The slots of `groups`, each parameter once. A parameter in two groups is
/// an error: which group's hyperparameters would apply is ambiguous.
pub(crate) fn make_slots<S>(op: &'static str, groups: &[ParamGroup]) -> Result<Vec<Slot<S>>> {
    let mut seen: Vec<(Tensor, usize, String)> = Vec::new();
    let mut slots = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        if !(g.weight_decay >= 0.0 && g.weight_decay.is_finite()) {
            return Err(Error::value(
                op,
                format!("group {gi} has weight decay {}, expected a finite value >= 0", g.weight_decay),
            ));
        }
        if !(g.lr_scale >= 0.0 && g.lr_scale.is_finite()) {
            return Err(Error::value(
                op,
                format!("group {gi} has lr_scale {}, expected a finite value >= 0", g.lr_scale),
            ));
        }
        for (name, p) in &g.params {
            let t = p.tensor();
            match seen.iter().find(|(s, _, _)| same_param(s, &t)) {
                Some((_, other, _)) if *other == gi => continue,
                Some((_, other, first)) => {
                    return Err(Error::value(
                        op,
                        format!("parameter '{name}' is in group {other} (as '{first}') and in group {gi}; put each parameter in one group"),
                    ))
                }
                None => {}
            }
            if slots.iter().any(|s: &Slot<S>| &s.name == name) {
                return Err(Error::value(
                    op,
                    format!("two different parameters are named '{name}'; state names must be unique"),
                ));
            }
            seen.push((t, gi, name.clone()));
            slots.push(Slot {
                name: name.clone(),
                param: p.clone(),
                group: gi,
                state: None,
            });
        }
    }
    Ok(slots)
}

/// Whether two parameter handles are the same parameter. A frozen parameter
/// hands out a new detached handle (new id) each time, so identity is the
/// same storage viewed through the same layout: updating such a pair twice
/// per step would be wrong whatever they are called.
pub(crate) fn same_param(a: &Tensor, b: &Tensor) -> bool {
    a.id() == b.id() || (a.same_storage(b) && a.layout() == b.layout())
}

/// The parameter's current handle and its gradient, if it has one; a gradient
/// of another shape or dtype is an error naming the parameter.
pub(crate) fn slot_grad(op: &'static str, name: &str, param: &Param, grads: &GradStore) -> Result<Option<(Tensor, Tensor)>> {
    let t = param.tensor();
    let Some(g) = grads.get(&t) else { return Ok(None) };
    if g.shape() != t.shape() || g.dtype() != t.dtype() {
        return Err(Error::shape(
            op,
            format!(
                "parameter '{name}' is {} {} but its gradient is {} {}",
                t.dtype(),
                t.shape(),
                g.dtype(),
                g.shape()
            ),
        ));
    }
    if !matches!(t.dtype(), DType::F32 | DType::F64) {
        return Err(crate::backend::contract::unsupported_dtype(op, t.dtype()));
    }
    // The update holds the parameter's write lock while reading the gradient;
    // a gradient aliasing the parameter's storage is copied first.
    let g = if g.same_storage(&t) { owned_copy(g)? } else { g.clone() };
    Ok(Some((t, g)))
}

/// A contiguous copy with storage of its own.
pub(crate) fn owned_copy(t: &Tensor) -> Result<Tensor> {
    let s = t.storage().copy_contiguous(t.layout())?;
    Ok(Tensor::from_storage(s, Layout::contiguous(t.shape().clone())))
}

/// A state buffer as a CPU tensor of `dims` (a copy, from the device when the
/// state lives on one: checkpoints hold host data, and later steps do not
/// change it).
pub(crate) fn buffer_tensor(buf: &Storage, dims: &[usize]) -> Result<Tensor> {
    let host = buf.to_device(crate::Device::Cpu)?;
    Ok(Tensor::from_storage(host, Layout::contiguous(dims.to_vec())))
}

/// A saved state tensor back as a buffer for `param`: same shape, converted
/// to the parameter's dtype, on the parameter's device.
pub(crate) fn tensor_buffer(op: &'static str, key: &str, t: &Tensor, param: &Tensor) -> Result<Storage> {
    if t.dims() != param.dims() {
        return Err(Error::shape(
            op,
            format!("state '{key}' has shape {}, the parameter has shape {}", t.shape(), param.shape()),
        ));
    }
    let t = if t.dtype() == param.dtype() { t.clone() } else { t.to_dtype(param.dtype())? };
    let copy = t.storage().copy_contiguous(t.layout())?;
    if copy.device() == param.device() {
        Ok(copy)
    } else {
        copy.to_device(param.device())
    }
}

/// Check that every `state.<name>.*` entry of `state` names a slot.
pub(crate) fn check_state_names<S>(op: &'static str, state: &OptimizerState, slots: &[Slot<S>], name: &str) -> Result<()> {
    state.check_kind(op, name)?;
    let known = |key: &str| {
        key.strip_prefix("state.")
            .is_some_and(|rest| slots.iter().any(|s| rest.strip_prefix(s.name.as_str()).is_some_and(|r| r.starts_with('.'))))
    };
    let unknown: Vec<&str> = state
        .tensors
        .iter()
        .map(|(n, _)| n.as_str())
        .chain(state.metadata.keys().map(|k| k.as_str()))
        .filter(|k| k.starts_with("state.") && !known(k))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::value(
            op,
            format!("the state has entries for parameters this optimizer does not have: {}", unknown.join(", ")),
        ));
    }
    Ok(())
}

/// A float as metadata: Rust's shortest round-trip formatting, so it parses back bit for bit.
pub(crate) fn fmt_f64(v: f64) -> String {
    format!("{v:?}")
}

pub(crate) fn check_hyper(op: &'static str, what: &str, v: f64, lo: f64, hi: f64, hi_inclusive: bool) -> Result<()> {
    let ok = v.is_finite() && v >= lo && if hi_inclusive { v <= hi } else { v < hi };
    if !ok {
        let close = if hi_inclusive { ']' } else { ')' };
        return Err(Error::value(op, format!("{what} = {v} is outside [{lo}, {hi}{close}")));
    }
    Ok(())
}
