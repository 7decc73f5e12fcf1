//! The process group's collectives on CUDA tensors, through NCCL (feature
//! `nccl`).
//!
//! The layout is llm.c's: a launcher starts the ranks, the host
//! communicator (MPI, or the world of one) carries NCCL's unique id from
//! rank 0 to the others, and each rank joins one NCCL communicator on its
//! own GPU. This file turns tensors into the contiguous storage runs the
//! backend's transport (`backend::nccl`) exchanges; every call is queued on
//! the device's stream, ordered with the kernels around it.

use super::{Communicator, HostBuf, ReduceOp};
use crate::backend::nccl::{nccl_version as library_version, unique_id, NcclComm, Reduction, Run, UniqueId};
use crate::{Device, Error, Result, Tensor};

/// The version of the NCCL library this process loads (`ncclGetVersion`:
/// 22703 for 2.27.3), or an error saying it is missing. Needs no GPU: it
/// tells whether a GPU run would find NCCL.
///
/// ```
/// match tamer::dist::nccl_version() {
///     Ok(v) => assert!(v >= 21000, "NCCL {v}"),
///     Err(e) => assert!(e.to_string().contains("libnccl.so"), "{e}"),
/// }
/// ```
pub fn nccl_version() -> Result<i32> {
    library_version()
}

/// One rank's NCCL communicator on its GPU.
#[derive(Debug)]
pub struct Nccl {
    comm: NcclComm,
}

fn reduction(op: ReduceOp) -> Reduction {
    match op {
        ReduceOp::Sum => Reduction::Sum,
        ReduceOp::Mean => Reduction::Mean,
    }
}

impl Nccl {
    /// Join the NCCL communicator of every rank of `host`, on `device`
    /// (each rank its own GPU). Every rank of `host` must call it.
    pub(crate) fn init(host: &dyn Communicator, device: Device) -> Result<Nccl> {
        const OP: &str = "ProcessGroup::with_nccl";
        // Every rank learns whether every other can start NCCL before any
        // waits for rank 0's id: one that cannot would leave them waiting.
        let local = NcclComm::check(OP, device);
        let mut ready = [u64::from(local.is_ok())];
        let mut all = vec![0u64; host.world_size()];
        host.all_gather(HostBuf::U64(&mut ready), HostBuf::U64(&mut all))?;
        local?;
        if let Some(r) = all.iter().position(|&ok| ok == 0) {
            crate::bail!(device, OP, "rank {r} cannot start NCCL (its own error says why); no rank starts it");
        }
        // Rank 0 makes the id; the host collectives carry it to the others.
        // A rank 0 that cannot make one sends zeros, which every rank refuses.
        let mut id: UniqueId = [0; 16];
        if host.rank() == 0 {
            id = unique_id().unwrap_or([0; 16]);
        }
        host.broadcast(HostBuf::U64(&mut id), 0)?;
        if id.iter().all(|&w| w == 0) {
            crate::bail!(device, OP, "rank 0 could not make an NCCL unique id (ncclGetUniqueId failed there)");
        }
        let comm = NcclComm::join(OP, device, host.rank(), host.world_size(), id)?;
        Ok(Nccl { comm })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }
    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.comm.world_size()
    }
    /// The GPU this rank's collectives run on.
    pub fn device(&self) -> Device {
        self.comm.device()
    }
    /// NCCL's version code (`ncclGetVersion`).
    pub fn version(&self) -> i32 {
        self.comm.version()
    }

    /// The sum or mean over the ranks of each tensor, in its own storage.
    /// The tensors must be contiguous and no two may share storage.
    pub(crate) fn all_reduce_in_place(&self, tensors: &[Tensor], op: ReduceOp) -> Result<()> {
        const OP: &str = "all_reduce (nccl)";
        check_distinct(OP, tensors)?;
        let guards: Vec<_> = tensors.iter().map(|t| t.storage_mut()).collect();
        let runs = tensors
            .iter()
            .zip(&guards)
            .enumerate()
            .map(|(i, (t, s))| run(OP, i, t, s))
            .collect::<Result<Vec<_>>>()?;
        self.comm.all_reduce_in_place(OP, &runs, reduction(op))
    }

    /// Root's values in each tensor, in its own storage (the same conditions).
    pub(crate) fn broadcast_in_place(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        const OP: &str = "broadcast (nccl)";
        check_distinct(OP, tensors)?;
        let guards: Vec<_> = tensors.iter().map(|t| t.storage_mut()).collect();
        let runs = tensors
            .iter()
            .zip(&guards)
            .enumerate()
            .map(|(i, (t, s))| run(OP, i, t, s))
            .collect::<Result<Vec<_>>>()?;
        self.comm.broadcast_in_place(OP, &runs, root)
    }

    /// Every rank's `tensor` stacked in rank order: `[world, ...]`.
    pub(crate) fn all_gather(&self, tensor: &Tensor) -> Result<Tensor> {
        const OP: &str = "all_gather (nccl)";
        let mut dims = vec![self.world_size()];
        dims.extend_from_slice(tensor.dims());
        let out = Tensor::zeros_on(dims, tensor.dtype(), tensor.device())?;
        let (send, recv) = (tensor.storage(), out.storage());
        self.comm.all_gather(OP, &run(OP, 0, tensor, &send)?, &run(OP, 1, &out, &recv)?)?;
        drop((send, recv));
        Ok(out)
    }

    /// The sum or mean over the ranks of `tensor`, this rank's block of
    /// `world` equal blocks along the first axis (`dims`, the block's shape).
    pub(crate) fn reduce_scatter(&self, tensor: &Tensor, op: ReduceOp, dims: Vec<usize>) -> Result<Tensor> {
        const OP: &str = "reduce_scatter (nccl)";
        let out = Tensor::zeros_on(dims, tensor.dtype(), tensor.device())?;
        let (send, recv) = (tensor.storage(), out.storage());
        self.comm
            .reduce_scatter(OP, &run(OP, 0, tensor, &send)?, &run(OP, 1, &out, &recv)?, reduction(op))?;
        drop((send, recv));
        Ok(out)
    }
}

/// The storage run of tensor `index`, which must be contiguous.
fn run<'a>(op: &'static str, index: usize, t: &Tensor, storage: &'a crate::backend::Storage) -> Result<Run<'a>> {
    let range = t.layout().contiguous_range().ok_or_else(|| {
        Error::shape(
            op,
            format!("tensor {index} (shape {}) is not contiguous; NCCL exchanges contiguous tensors", t.shape()),
        )
    })?;
    Ok(Run {
        storage,
        start: range.start,
        len: range.len(),
    })
}

/// No two tensors sharing storage: each would be written twice (and its
/// lock taken twice).
fn check_distinct(op: &'static str, tensors: &[Tensor]) -> Result<()> {
    for (i, t) in tensors.iter().enumerate() {
        if let Some(j) = tensors[..i].iter().position(|u| u.same_storage(t)) {
            crate::bail!(
                value,
                op,
                "tensors {j} and {i} share storage; each would be written twice (pass copies of their own)"
            );
        }
    }
    Ok(())
}
