//! What the trainer does differently on several ranks
//! ([`Trainer::with_process_group`](super::Trainer::with_process_group)):
//! rank 0's parameters everywhere at the start, gradients averaged after
//! backward (before clipping, so that the norm, the clip and the optimizer
//! step are the same on every rank), and agreement on failures that one rank
//! alone would meet (a full disk on rank 0), so that no rank is left waiting
//! in a collective.

use super::TrainConfig;
use crate::dist::{FlatBuffers, OverlapReducer, ProcessGroup, ReduceOp};
use crate::nn::Param;
use crate::optim::{owned_copy, GradAccumulator};
use crate::{DType, Device, Error, GradStore, Result, Tensor};

/// Whether the trainer leaves the collectives out: in a world of one, unless
/// the group has a GPU backend, which was asked for and runs (so that a
/// one-GPU run checks the path several GPUs take; NCCL's mean over one rank
/// leaves every value as it is).
fn skips_collectives(pg: &ProcessGroup) -> bool {
    pg.world_size() == 1 && pg.gpu_backend_name().is_none()
}

/// Copy rank 0's parameter values to every rank: GPU to GPU where the
/// group exchanges on the parameters' device (NCCL), else through host copies.
pub(super) fn broadcast_params(pg: &ProcessGroup, params: &[Param]) -> Result<()> {
    if skips_collectives(pg) {
        return Ok(());
    }
    let direct = params.first().is_some_and(|p| {
        p.tensor().device() != Device::Cpu
            && params
                .iter()
                .all(|q| pg.exchanges_on(q.tensor().device()) && q.tensor().device() == p.tensor().device())
    });
    let sent: Vec<Tensor> = if direct {
        params.iter().map(|p| p.tensor()).collect()
    } else if pg.world_size() == 1 {
        return Ok(()); // the GPU backend serves other devices' parameters; one rank has nothing to send
    } else {
        params.iter().map(|p| p.tensor().to_cpu()).collect::<Result<_>>()?
    };
    let root = pg.broadcast(&sent, 0)?;
    for (p, t) in params.iter().zip(&root) {
        p.set(t)?;
    }
    Ok(())
}

/// Replace each parameter's gradient with its mean over the ranks. Every
/// rank must hold gradients for the same parameters; the process group
/// refuses otherwise.
///
/// A gradient that the store alone holds, contiguous, on a device the group
/// exchanges on (the CPU, or the GPU of its NCCL communicator) is averaged
/// in its own storage (on the CPU through `buffers`, kept by the trainer,
/// so that a steady step allocates nothing); any other gradient (shared
/// with another parameter's, or not contiguous) gets a copy of its own on
/// that device first, and a gradient on a GPU without NCCL goes through a
/// host copy that then replaces it, moved back to its device.
pub(super) fn average_grads(pg: &ProcessGroup, params: &[Param], grads: &mut GradStore, buffers: &mut FlatBuffers) -> Result<()> {
    if skips_collectives(pg) {
        return Ok(());
    }
    let (mut on_host, mut on_gpu) = (Vec::new(), Vec::new());
    let mut copied = Vec::new();
    for p in params {
        let t = p.tensor();
        let Some(g) = grads.get(&t) else { continue };
        let device = g.device();
        let direct = pg.exchanges_on(device);
        // The CPU's gradients, and a GPU's the group cannot exchange on, go through the host.
        let to_host = device == Device::Cpu || !direct;
        if pg.world_size() == 1 && to_host {
            continue; // one rank runs only its GPU backend's path (see skips_collectives)
        }
        // Checked before any clone below adds a handle.
        let own = direct && g.is_sole_owner() && g.layout().contiguous_range().is_some();
        let work = if to_host { &mut on_host } else { &mut on_gpu };
        if own {
            work.push(g.clone());
            continue;
        }
        // A transfer from another device is already a contiguous copy of its own.
        let copy = if direct { owned_copy(g)? } else { g.to_cpu()? };
        copied.push((to_host, work.len(), t, device));
        work.push(copy);
    }
    if pg.world_size() > 1 {
        pg.all_reduce_in_place(&on_host, ReduceOp::Mean, buffers)?;
    }
    if !on_gpu.is_empty() {
        pg.all_reduce_in_place(&on_gpu, ReduceOp::Mean, buffers)?;
    }
    for (host, i, t, device) in copied {
        let reduced = if host { &on_host[i] } else { &on_gpu[i] };
        grads.insert(&t, reduced.to_device(device)?);
    }
    Ok(())
}

/// Keep `slot` holding the reducer that averages the gradients during the
/// backward pass, when this run can use one: [`TrainConfig::overlap_grad_sync`],
/// no ZeRO-1, and every trainable parameter on one device the group
/// exchanges on: the CPU (f32 or f64) with several ranks, or the GPU of the
/// group's NCCL communicator, with any number of ranks (so that one GPU
/// checks that path too). The same on every rank, as the ranks agreed on
/// the model and the configuration. Called before each step: a parameter
/// frozen or unfrozen since the reducer was made gets a new one (with a new
/// plan, agreed again), on every rank at the same step.
pub(super) fn refresh_overlap(slot: &mut Option<OverlapReducer>, pg: &ProcessGroup, params: &[Param], config: &TrainConfig, zero1: bool) -> Result<()> {
    if skips_collectives(pg) || !config.overlap_grad_sync || zero1 {
        *slot = None;
        return Ok(());
    }
    let trainable = || params.iter().filter(|p| p.is_trainable()).map(Param::tensor);
    if slot.as_ref().is_some_and(|r| r.is_for_ids(trainable().map(|t| t.id()))) {
        return Ok(());
    }
    let trainable: Vec<Tensor> = trainable().collect();
    let device = trainable.first().map_or(Device::Cpu, Tensor::device);
    let eligible = trainable.iter().all(|t| t.device() == device)
        && match device {
            Device::Cpu => pg.world_size() > 1 && trainable.iter().all(|t| matches!(t.dtype(), DType::F32 | DType::F64)),
            gpu => pg.exchanges_on(gpu),
        };
    *slot = match eligible {
        true => Some(OverlapReducer::new(pg, &trainable)?),
        false => None,
    };
    Ok(())
}

/// The backward pass of a step's last micro-batch with each gradient sent
/// to the other ranks as soon as it is final, and the averaged gradients;
/// with `acc` (gradient accumulation), each is first added to the earlier
/// micro-batches' sum, and the sums are sent.
pub(super) fn backward_overlapped(loss: &Tensor, reducer: &mut OverlapReducer, acc: Option<GradAccumulator>) -> Result<GradStore> {
    let mut sync = reducer.begin();
    let mut grads = match acc {
        None => loss.backward_with_hook(|v, g| sync.ready(v, g))?,
        Some(mut acc) => {
            loss.backward_with_hook(|v, g| {
                let sum = acc.add_one(v.id(), g)?;
                sync.ready(v, sum)
            })?;
            acc.end_pass();
            acc.take()
        }
    };
    sync.finish(&mut grads)?;
    Ok(grads)
}

/// `r` on every rank when it is Ok everywhere; otherwise each failing rank
/// returns its own error and the others one saying which ranks failed.
pub(super) fn all_ok<T>(pg: &ProcessGroup, op: &'static str, r: Result<T>) -> Result<T> {
    if pg.world_size() == 1 {
        return r;
    }
    let mut failed = vec![0.0; pg.world_size()];
    failed[pg.rank()] = f64::from(u8::from(r.is_err()));
    pg.all_reduce_scalars(&mut failed, ReduceOp::Sum)?;
    let ranks: Vec<String> = failed.iter().enumerate().filter(|(_, &f)| f > 0.0).map(|(i, _)| i.to_string()).collect();
    match r {
        Ok(_) if !ranks.is_empty() => Err(Error::value(
            op,
            format!("rank(s) {} failed (see their message); this rank stops with them", ranks.join(", ")),
        )),
        r => r,
    }
}
