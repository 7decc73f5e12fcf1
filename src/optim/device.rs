//! Where an optimizer's work runs: on the parameter's device.
//!
//! Every function here takes tensors and state buffers wherever they live and
//! reaches the backend's update kernels (`OptimKernels`, in
//! `backend/contract/optim.rs`) through `dispatch!`, like every op: the
//! threaded CPU loops for CPU parameters, the kernels of `cuda/optim.cu` for
//! CUDA parameters. Both run the same formulas on the same dtype-rounded
//! scalars.
//!
//! Optimizer state is a [`Storage`]: a state buffer lives on its parameter's
//! device, created there at the first step ([`zeros_state`]) and moved to it
//! lazily, at the first step after the parameter moved ([`follow`]); `state_dict` copies it to the host
//! and `load_state_dict` copies it back to the parameter's device (`mod.rs`).

use crate::backend::contract::optim::{AdamState, AdamStep, OptimKernels, SgdStep};
use crate::backend::{operand_mut, BackendRef, Storage};
use crate::profile::{self, per_element, Cost};
use crate::types::Layout;
use crate::{DType, Device, Error, Result, Tensor};

/// A zero state buffer for parameter `t`: its dtype, its element count, its device.
pub(crate) fn zeros_state(t: &Tensor) -> Result<Storage> {
    Storage::zeros_on(t.device(), t.dtype(), t.numel())
}

/// Move a state buffer to `device` if it is elsewhere: the parameter was moved
/// (`Module::to_device`) after the optimizer had taken steps.
pub(crate) fn follow(buf: &mut Storage, device: Device) -> Result<()> {
    if buf.device() != device {
        *buf = buf.to_device(device)?;
    }
    Ok(())
}

/// The gradient must be where its parameter is.
fn check_grad_device(op: &'static str, name: &str, t: &Tensor, g: &Tensor) -> Result<()> {
    if g.device() != t.device() {
        return Err(Error::device(
            op,
            format!(
                "parameter '{name}' is on {} but its gradient is on {}; expected the same device",
                t.device(),
                g.device()
            ),
        ));
    }
    Ok(())
}

/// One Adam/AdamW update of parameter `t` (named `name` in errors) with
/// gradient `g` and the state `m`, `v` (and `vmax` with AMSGrad), all on `t`'s device.
#[allow(clippy::too_many_arguments)]
pub(crate) fn adam_step(
    op: &'static str,
    name: &str,
    t: &Tensor,
    g: &Tensor,
    m: &mut Storage,
    v: &mut Storage,
    vmax: Option<&mut Storage>,
    h: &AdamStep,
) -> Result<()> {
    check_grad_device(op, name, t, g)?;
    let kind = if h.decoupled { "adamw" } else { "adam" };
    // p, g, m, v (and the running max) read; p, m, v (and the max) written.
    let moved = if vmax.is_some() { 9 } else { 7 } * t.numel();
    let _op = profile::op(kind, || Cost::flops(per_element::ADAM * t.numel()).moving(t.dtype(), moved))?;
    let gs = g.storage();
    let mut ps = t.storage_mut();
    crate::dispatch!(op, [p = &mut *ps, gs = &*gs, m = m, v = v], |_wrap| {
        let vmax = vmax.map(|b| operand_mut(op, "state max_exp_avg_sq", b)).transpose()?;
        p.adam_step(op, name, t.layout(), gs, g.layout(), AdamState { m, v, vmax }, h)?
    });
    Ok(())
}

/// One SGD update of `t` with gradient `g`; `buf` is the momentum buffer,
/// required when `h.momentum` is not 0.
pub(crate) fn sgd_step(op: &'static str, name: &str, t: &Tensor, g: &Tensor, buf: Option<&mut Storage>, h: &SgdStep) -> Result<()> {
    check_grad_device(op, name, t, g)?;
    // p, g (and the momentum buffer) read; p (and the buffer) written.
    let moved = if buf.is_some() { 5 } else { 3 } * t.numel();
    let _op = profile::op("sgd", || Cost::flops(per_element::SGD * t.numel()).moving(t.dtype(), moved))?;
    let gs = g.storage();
    let mut ps = t.storage_mut();
    crate::dispatch!(op, [p = &mut *ps, gs = &*gs], |_wrap| {
        let buf = buf.map(|b| operand_mut(op, "the momentum buffer", b)).transpose()?;
        p.sgd_step(op, name, t.layout(), gs, g.layout(), buf, h)?
    });
    Ok(())
}

/// `acc += scale · g` in place (gradient accumulation); same shape, dtype and device.
pub(crate) fn axpy(op: &'static str, acc: &Tensor, g: &Tensor, scale: f64) -> Result<()> {
    if acc.device() != g.device() {
        return Err(Error::device(
            op,
            format!(
                "the accumulated gradient is on {} but the new one is on {}; expected the same device",
                acc.device(),
                g.device()
            ),
        ));
    }
    let _op = profile::op("axpy", || Cost::flops(per_element::AXPY * g.numel()).moving(g.dtype(), 3 * g.numel()))?;
    let gs = g.storage();
    let mut accs = acc.storage_mut();
    crate::dispatch!(op, [a = &mut *accs, gs = &*gs], |_wrap| a.axpy(op, acc.layout(), gs, g.layout(), scale)?);
    Ok(())
}

/// `g · s` as a new contiguous tensor with no history, on `g`'s device
/// (`Tensor::scale`'s values: `s·x + 0` in the gradient's dtype).
pub(crate) fn scaled(op: &'static str, g: &Tensor, s: f64) -> Result<Tensor> {
    if !matches!(g.dtype(), DType::F32 | DType::F64) {
        return Ok(g.scale(s)?.detach());
    }
    let _op = profile::op("scaled", || Cost::elementwise(g.dtype(), g.numel(), g.numel()))?;
    let storage = crate::dispatch!(op, [x = &*g.storage()] => x.scaled(op, g.layout(), s)?);
    Ok(Tensor::from_storage(storage, Layout::contiguous(g.shape().clone())))
}

/// `Σ x²` of each tensor, in f64, in order. The tensors of each device are
/// summed by one call of that backend (on a GPU: the deterministic two-pass
/// kernel, the results back in one copy). Adding the returned values in order
/// (on the host, in f64) gives the squared global norm.
pub(crate) fn sum_squares(op: &'static str, tensors: &[Tensor]) -> Result<Vec<f64>> {
    let mut by_device: Vec<(Device, Vec<usize>)> = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        match by_device.iter_mut().find(|(d, _)| *d == t.device()) {
            Some((_, ids)) => ids.push(i),
            None => by_device.push((t.device(), vec![i])),
        }
    }
    let elements: usize = tensors.iter().map(Tensor::numel).sum();
    let _op = profile::op("sum_squares", || {
        Cost::flops(2 * elements).moving(tensors.first().map_or(DType::F32, Tensor::dtype), elements)
    })?;
    let mut out = vec![0.0; tensors.len()];
    for (_, ids) in by_device {
        let group: Vec<&Tensor> = ids.iter().map(|&i| &tensors[i]).collect();
        let guards: Vec<_> = group.iter().map(|t| t.storage()).collect();
        let storages: Vec<&Storage> = guards.iter().map(|g| &**g).collect();
        let sums = crate::dispatch!(op, [first = storages[0]], |_wrap| sum_squares_on(first, op, &storages, &group)?);
        for (i, s) in ids.into_iter().zip(sums) {
            out[i] = s;
        }
    }
    Ok(out)
}

/// One backend's `sum_squares` over storages that all live on the device of
/// `first` (whose type picks the backend).
fn sum_squares_on<S: OptimKernels + BackendRef>(_first: &S, op: &'static str, storages: &[&Storage], tensors: &[&Tensor]) -> Result<Vec<f64>> {
    let parts = storages
        .iter()
        .zip(tensors)
        .map(|(s, t)| {
            S::from_storage(s).map(|inner| (inner, t.layout())).ok_or_else(|| {
                Error::device(
                    op,
                    format!("a gradient of shape {} lives on {}, unlike the others of its group", t.shape(), t.device()),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    S::sum_squares(op, &parts)
}
