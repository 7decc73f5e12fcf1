//! What the trainer does differently on several ranks
//! ([`Trainer::with_process_group`](super::Trainer::with_process_group)):
//! rank 0's parameters everywhere at the start, gradients averaged after
//! backward (before clipping, so that the norm, the clip and the optimizer
//! step are the same on every rank), and agreement on failures that one rank
//! alone would meet (a full disk on rank 0), so that no rank is left waiting
//! in a collective.

use crate::dist::{ProcessGroup, ReduceOp};
use crate::nn::Param;
use crate::{Error, GradStore, Result, Tensor};

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

/// Replace each parameter's gradient with its mean over the ranks (moved
/// through the host when it lives on a device). Every rank must hold
/// gradients for the same parameters; the process group refuses otherwise.
pub(super) fn average_grads(pg: &ProcessGroup, params: &[Param], grads: &mut GradStore) -> Result<()> {
    if pg.world_size() == 1 {
        return Ok(());
    }
    let mut keys = Vec::new();
    let mut host = Vec::new();
    for p in params {
        let t = p.tensor();
        if let Some(g) = grads.get(&t) {
            host.push(g.to_cpu()?);
            keys.push((t, g.device()));
        }
    }
    let mean = pg.all_reduce(&host, ReduceOp::Mean)?;
    for ((t, device), g) in keys.into_iter().zip(mean) {
        grads.insert(&t, g.to_device(device)?);
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
