//! What the trainer does differently on several ranks
//! ([`Trainer::with_process_group`](super::Trainer::with_process_group)):
//! rank 0's parameters everywhere at the start, gradients averaged after
//! backward (before clipping, so that the norm, the clip and the optimizer
//! step are the same on every rank), and agreement on failures that one rank
//! alone would meet (a full disk on rank 0), so that no rank is left waiting
//! in a collective.

use crate::dist::{FlatBuffers, ProcessGroup, ReduceOp};
use crate::nn::Param;
use crate::optim::owned_copy;
use crate::{Device, Error, GradStore, Result, Tensor};

/// Copy rank 0's parameter values to every rank.
pub(super) fn broadcast_params(pg: &ProcessGroup, params: &[Param]) -> Result<()> {
    if pg.world_size() == 1 {
        return Ok(());
    }
    let host: Vec<Tensor> = params.iter().map(|p| p.tensor().to_cpu()).collect::<Result<_>>()?;
    let root = pg.broadcast(&host, 0)?;
    for (p, t) in params.iter().zip(&root) {
        p.set(t)?;
    }
    Ok(())
}

/// Replace each parameter's gradient with its mean over the ranks. Every
/// rank must hold gradients for the same parameters; the process group
/// refuses otherwise.
///
/// A CPU gradient that the store alone holds is averaged in its own
/// storage, through `buffers` (kept by the trainer, so that a steady step
/// allocates nothing); any other gradient (on a device, shared with another
/// parameter's, or not contiguous) goes through a host copy of its own that
/// then replaces it, moved back to its device.
pub(super) fn average_grads(pg: &ProcessGroup, params: &[Param], grads: &mut GradStore, buffers: &mut FlatBuffers) -> Result<()> {
    if pg.world_size() == 1 {
        return Ok(());
    }
    let mut work = Vec::new();
    let mut copied = Vec::new();
    for p in params {
        let t = p.tensor();
        let Some(g) = grads.get(&t) else { continue };
        // Checked before any clone below adds a handle.
        let own = g.device() == Device::Cpu && g.is_sole_owner() && g.layout().contiguous_range().is_some();
        if own {
            work.push(g.clone());
        } else {
            let host = g.to_cpu()?;
            let host = if host.same_storage(g) || host.layout().contiguous_range().is_none() {
                owned_copy(&host)?
            } else {
                host
            };
            copied.push((work.len(), t, g.device()));
            work.push(host);
        }
    }
    pg.all_reduce_in_place(&work, ReduceOp::Mean, buffers)?;
    for (i, t, device) in copied {
        grads.insert(&t, work[i].to_device(device)?);
    }
    Ok(())
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
