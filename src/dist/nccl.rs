//! The process group's collectives on CUDA tensors, through NCCL (feature
//! `nccl`).
//!
//! The layout is llm.c's: a launcher starts the ranks, the host
//! communicator (MPI, or the world of one) carries NCCL's unique id from
//! rank 0 to the others, and each rank joins one NCCL communicator on its
//! own GPU. This file turns tensors into the contiguous storage runs the
//! backend's transport (`backend::nccl`) exchanges; every call is queued on
//! the device's stream, ordered with the kernels around it.

use super::bucket::tensor_signature;
use super::{Communicator, HostBuf, Kind, ProcessGroup, ReduceOp};
use crate::backend::nccl::{nccl_version as library_version, unique_id, NcclComm, Run, UniqueId};
use crate::{DType, Device, Error, Result, Tensor};

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

/// Overlapped gradient buckets ([`OverlapReducer`](super::OverlapReducer))
/// summed on the communicator's own stream, after the bucket's fill on the
/// device's stream, while the backward pass's kernels run on.
impl super::overlap::DeviceExchange for Nccl {
    fn device(&self) -> Device {
        self.comm.device()
    }
    fn start_sum(&self, bucket: &Tensor) -> Result<()> {
        const OP: &str = "OverlapReducer (nccl)";
        self.in_place(OP, std::slice::from_ref(bucket), |runs| self.comm.start_all_reduce_sum_on_side(OP, runs))
    }
    fn wait(&self) -> Result<()> {
        self.comm.join_side("OverlapReducer (nccl)")
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

    /// An error unless every tensor can be exchanged here: on this GPU, f32,
    /// f64, bf16 or f16, and (`in_place`) contiguous with storage of its own
    /// in the list. The process group runs it on every rank before the
    /// ranks agree, so a rank that would fail tells the others instead of
    /// leaving them inside NCCL.
    pub(crate) fn validate(&self, op: &'static str, tensors: &[Tensor], in_place: bool) -> Result<()> {
        if in_place {
            check_distinct(op, tensors)?;
        }
        for (i, t) in tensors.iter().enumerate() {
            if t.device() != self.device() {
                crate::bail!(
                    device,
                    op,
                    "tensor {i} (shape {}) is on {}; this rank's NCCL communicator is on {}",
                    t.shape(),
                    t.device(),
                    self.device()
                );
            }
            if !matches!(t.dtype(), DType::F32 | DType::F64 | DType::BF16 | DType::F16) {
                crate::bail!(
                    dtype,
                    op,
                    "tensor {i} (shape {}) is {}; NCCL here exchanges f32, f64, bf16 or f16",
                    t.shape(),
                    t.dtype()
                );
            }
            if in_place && t.layout().contiguous_range().is_none() {
                crate::bail!(
                    shape,
                    op,
                    "tensor {i} (shape {}) is not contiguous; NCCL exchanges contiguous tensors",
                    t.shape()
                );
            }
        }
        Ok(())
    }

    /// The sum or mean over the ranks of each tensor, in its own storage.
    /// The tensors must pass [`validate`](Self::validate) in place.
    ///
    /// The mean is the sum divided by the number of ranks, as the host path
    /// computes it, not NCCL's `ncclAvg`, which scales each input by a
    /// rounded 1/n first (for bf16 a 16-bit 1/n: means off by up to 0.4 %
    /// on 3 ranks).
    pub(crate) fn all_reduce_in_place(&self, tensors: &[Tensor], op: ReduceOp) -> Result<()> {
        const OP: &str = "all_reduce (nccl)";
        self.in_place(OP, tensors, |runs| self.comm.all_reduce_sum_in_place(OP, runs))?;
        if op == ReduceOp::Mean {
            self.divide_by_world(tensors)?;
        }
        Ok(())
    }

    /// `exchange` on the storage runs of `tensors`, validated for an
    /// in-place collective and held under their write locks meanwhile.
    fn in_place(&self, op: &'static str, tensors: &[Tensor], exchange: impl FnOnce(&[Run<'_>]) -> Result<()>) -> Result<()> {
        self.validate(op, tensors, true)?;
        let guards: Vec<_> = tensors.iter().map(|t| t.storage_mut()).collect();
        let runs = tensors
            .iter()
            .zip(&guards)
            .enumerate()
            .map(|(i, (t, s))| run(op, i, t, s))
            .collect::<Result<Vec<_>>>()?;
        exchange(&runs)
    }

    /// Each `t /= world` in its own storage, queued on the device after the
    /// sum: a division, as the host path's, not a multiplication by a rounded
    /// 1/world. The divisor is filled on the device, once per dtype.
    fn divide_by_world(&self, tensors: &[Tensor]) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let mut divisors: Vec<Tensor> = Vec::new();
        for t in tensors {
            let n = match divisors.iter().find(|d| d.dtype() == t.dtype()) {
                Some(d) => d.clone(),
                None => {
                    let d = Tensor::full_on(Vec::<usize>::new(), self.world_size() as f64, t.dtype(), t.device())?;
                    divisors.push(d.clone());
                    d
                }
            };
            t.assign(&t.div(&n)?)?;
        }
        Ok(())
    }

    /// Root's values in each tensor, in its own storage (the same conditions).
    pub(crate) fn broadcast_in_place(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        const OP: &str = "broadcast (nccl)";
        self.in_place(OP, tensors, |runs| self.comm.broadcast_in_place(OP, runs, root))
    }

    /// Every rank's `tensor` (contiguous) stacked in rank order: `[world, ...]`.
    pub(crate) fn all_gather(&self, tensor: &Tensor) -> Result<Tensor> {
        const OP: &str = "all_gather (nccl)";
        self.validate(OP, std::slice::from_ref(tensor), false)?;
        let mut dims = vec![self.world_size()];
        dims.extend_from_slice(tensor.dims());
        let out = Tensor::zeros_on(dims, tensor.dtype(), tensor.device())?;
        {
            let (send, recv) = (tensor.storage(), out.storage_mut());
            self.comm.all_gather(OP, &run(OP, 0, tensor, &send)?, &run(OP, 1, &out, &recv)?)?;
        }
        Ok(out)
    }

    /// The sum or mean over the ranks of `tensor` (contiguous), this rank's
    /// block of `world` equal blocks along the first axis (`dims`, the
    /// block's shape); the mean as in [`all_reduce_in_place`](Self::all_reduce_in_place).
    pub(crate) fn reduce_scatter(&self, tensor: &Tensor, op: ReduceOp, dims: Vec<usize>) -> Result<Tensor> {
        const OP: &str = "reduce_scatter (nccl)";
        self.validate(OP, std::slice::from_ref(tensor), false)?;
        let out = Tensor::zeros_on(dims, tensor.dtype(), tensor.device())?;
        {
            let (send, recv) = (tensor.storage(), out.storage_mut());
            self.comm.reduce_scatter_sum(OP, &run(OP, 0, tensor, &send)?, &run(OP, 1, &out, &recv)?)?;
        }
        if op == ReduceOp::Mean {
            self.divide_by_world(std::slice::from_ref(&out))?;
        }
        Ok(out)
    }
}

/// The process group's NCCL route: which collectives go to NCCL, and the
/// agreement every rank makes before any NCCL call.
impl ProcessGroup {
    /// The NCCL communicator when `tensors` are GPU tensors it serves; None
    /// for CPU tensors (the host path, which refuses any others). A list on
    /// several devices is an error.
    pub(super) fn nccl_route(&self, op: &'static str, tensors: &[Tensor]) -> Result<Option<&Nccl>> {
        let Some(first) = tensors.first() else { return Ok(None) };
        if let Some(i) = tensors.iter().position(|t| t.device() != first.device()) {
            crate::bail!(
                device,
                op,
                "tensor 0 is on {} and tensor {i} on {}; one collective exchanges tensors of one device",
                first.device(),
                tensors[i].device()
            );
        }
        if first.device() == Device::Cpu {
            return Ok(None);
        }
        Ok(self.nccl.as_deref())
    }

    /// New tensors holding each tensor's sum or mean over the ranks.
    pub(super) fn nccl_all_reduce(&self, gpu: &Nccl, tensors: &[Tensor], op: ReduceOp) -> Result<Vec<Tensor>> {
        const OP: &str = "all_reduce";
        let copies = self.agree_on_gpu(OP, Kind::AllReduce, gpu, tensors, &[], true, || own_copies(tensors))?;
        gpu.all_reduce_in_place(&copies, op)?;
        Ok(copies)
    }

    /// The sum or mean over the ranks written into the tensors themselves.
    pub(super) fn nccl_all_reduce_in_place(&self, gpu: &Nccl, tensors: &[Tensor], op: ReduceOp) -> Result<()> {
        const OP: &str = "all_reduce_in_place";
        self.agree_on_gpu(OP, Kind::AllReduce, gpu, tensors, &[], true, || Ok(tensors.to_vec()))?;
        gpu.all_reduce_in_place(tensors, op)
    }

    /// New tensors holding root's values.
    pub(super) fn nccl_broadcast(&self, gpu: &Nccl, tensors: &[Tensor], root: usize) -> Result<Vec<Tensor>> {
        const OP: &str = "broadcast";
        let copies = self.agree_on_gpu(OP, Kind::Broadcast, gpu, tensors, &[root as u64], true, || own_copies(tensors))?;
        gpu.broadcast_in_place(&copies, root)?;
        Ok(copies)
    }

    /// Every rank's `tensor` stacked in rank order.
    pub(super) fn nccl_all_gather(&self, gpu: &Nccl, tensor: &Tensor) -> Result<Tensor> {
        const OP: &str = "all_gather";
        let one = std::slice::from_ref(tensor);
        let ready = self.agree_on_gpu(OP, Kind::AllGather, gpu, one, &[], false, || contiguous(tensor))?;
        gpu.all_gather(&ready[0])
    }

    /// This rank's block of the sum or mean over the ranks (`dims`, its shape).
    pub(super) fn nccl_reduce_scatter(&self, gpu: &Nccl, tensor: &Tensor, op: ReduceOp, dims: Vec<usize>) -> Result<Tensor> {
        const OP: &str = "reduce_scatter";
        let one = std::slice::from_ref(tensor);
        let ready = self.agree_on_gpu(OP, Kind::ReduceScatter, gpu, one, &[], false, || contiguous(tensor))?;
        gpu.reduce_scatter(&ready[0], op, dims)
    }

    /// The tensors a GPU collective exchanges (`prepare`'s, checked by the
    /// communicator), once every rank has agreed on the call with its own
    /// outcome folded into the agreement: a rank whose tensors cannot be
    /// exchanged returns its error and the others one naming it, before any
    /// NCCL call that would leave them waiting for it.
    #[allow(clippy::too_many_arguments)]
    fn agree_on_gpu(
        &self,
        op: &'static str,
        kind: Kind,
        gpu: &Nccl,
        tensors: &[Tensor],
        extra: &[u64],
        in_place: bool,
        prepare: impl FnOnce() -> Result<Vec<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        let prepared = prepare().and_then(|ready| gpu.validate(op, &ready, in_place).map(|()| ready));
        let mut signature = device_signature(tensors, prepared.is_ok()).to_vec();
        signature.extend_from_slice(extra);
        let agreed = self.agree(op, kind, &signature);
        let ready = prepared?;
        agreed?;
        Ok(ready)
    }
}

/// Contiguous copies with storage of their own, on their device.
fn own_copies(tensors: &[Tensor]) -> Result<Vec<Tensor>> {
    tensors
        .iter()
        .map(|t| {
            let s = t.storage().copy_contiguous(t.layout())?;
            Ok(Tensor::from_storage(s, crate::types::Layout::contiguous(t.shape().clone())))
        })
        .collect()
}

/// `t` itself when contiguous (NCCL reads it in place), else a contiguous copy.
fn contiguous(t: &Tensor) -> Result<Vec<Tensor>> {
    if t.layout().contiguous_range().is_some() {
        Ok(vec![t.clone()])
    } else {
        own_copies(std::slice::from_ref(t))
    }
}

/// What the ranks must agree on for device tensors, in the host path's
/// form: the count, f32 elements, other elements, and a hash of dtypes and
/// shapes, of the route (so that a rank on the host path and one on NCCL
/// disagree rather than wait in different transports) and of whether this
/// rank's tensors can be exchanged (`ok`).
fn device_signature(tensors: &[Tensor], ok: bool) -> [u64; 4] {
    const NCCL_ROUTE: u64 = 0x6e63_636c; // "nccl"
    tensor_signature(tensors, &[NCCL_ROUTE, u64::from(ok)])
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The element range a collective reads and writes: rows 2..5 of a
    /// [6, 4] tensor start 8 elements in and hold 12; a strided view has
    /// none (on the host here: the range does not depend on the device).
    #[test]
    fn a_run_covers_exactly_the_tensors_own_elements() {
        let whole = Tensor::from_vec((0..24).map(|v| v as f32).collect::<Vec<_>>(), [6, 4]).unwrap();
        let rows = whole.narrow(0, 2, 3).unwrap();
        let storage = rows.storage();
        let r = run("test", 0, &rows, &storage).unwrap();
        assert_eq!((r.start, r.len), (8, 12));
        let t = whole.transpose(0, 1).unwrap();
        let storage = t.storage();
        let e = run("test", 3, &t, &storage).err().unwrap();
        assert!(e.message.contains("tensor 3 (shape [4, 6]) is not contiguous"), "{e}");
    }

    #[test]
    fn tensors_sharing_storage_are_refused_before_any_lock() {
        let whole = Tensor::from_vec(vec![1.0f32; 8], [8]).unwrap();
        let (a, b) = (whole.narrow(0, 0, 4).unwrap(), whole.narrow(0, 4, 4).unwrap());
        let e = check_distinct("test", &[a, b]).unwrap_err();
        assert!(e.message.contains("tensors 0 and 1 share storage"), "{e}");
        let other = Tensor::from_vec(vec![1.0f32; 4], [4]).unwrap();
        check_distinct("test", &[whole, other]).unwrap();
    }
}
