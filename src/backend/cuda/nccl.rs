//! NCCL on CUDA storage: the GPU-to-GPU transport under
//! [`tamer::dist`](crate::dist)'s process group (feature `nccl`).
//!
//! This module knows device memory and NCCL, nothing of tensors: the
//! process group hands it contiguous runs of storages ([`Run`]) and carries
//! the unique id between the ranks itself. Every call is queued on the
//! device's stream, so it is ordered after the kernels that wrote its
//! buffers and before those that read them, and the host never waits;
//! except the overlapped gradient sums, queued on a side stream of the
//! communicator's own after an event of the device's stream, which the
//! device's stream joins before reading them (`start_all_reduce_sum_on_side`,
//! `join_side`).
//!
//! cudarc loads `libnccl.so` at run time: a build with the feature needs no
//! NCCL, and a machine without it gets an error, never a panic. The
//! `nvidia-nccl-cu13` wheel ships the library as `libnccl.so.2` only;
//! `scripts/nccl-lib.sh` makes the `libnccl.so` link cudarc looks for.
//!
//! Dropping the communicator first lets its queued collectives finish (one
//! dropped right after a gradient all-reduce must not cancel it), watching
//! NCCL's asynchronous error: a peer that died shows there, or as no progress
//! for [`DROP_WAIT`]; then it aborts (`ncclCommAbort` frees everything
//! without waiting for the peers), else it is destroyed. A collective that
//! never completes while the communicator lives (a peer killed mid-step) is
//! the launcher's to end: `mpirun` stops the job when a rank dies.

use super::device::driver_error;
use super::{device as cuda_device, CudaDevice};
use crate::backend::Storage;
use crate::types::{DType, Device};
use crate::{Error, Result};
use cudarc::driver::CudaStream;
use cudarc::nccl::{result as nccl, sys};
use std::ffi::c_void;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long dropping a communicator waits for its queued collectives.
pub const DROP_WAIT: Duration = Duration::from_secs(30);

/// NCCL's unique id, as the 16 words the host collectives carry.
pub type UniqueId = [u64; 16];

/// A contiguous run of a storage's elements: `len` from element `start`.
pub struct Run<'a> {
    pub storage: &'a Storage,
    pub start: usize,
    pub len: usize,
}

const MISSING: &str = "NCCL (libnccl.so) was not found: install NCCL, or run scripts/nccl-lib.sh to link the one in python's nvidia-nccl wheel and put its folder on LD_LIBRARY_PATH";

fn nccl_error(op: &'static str, e: nccl::NcclError) -> Error {
    Error::device(op, format!("NCCL failed: {e:?}"))
}

/// The version of the NCCL library this process loads (`ncclGetVersion`:
/// 22703 for 2.27.3), or an error saying it is missing. Needs no GPU.
pub fn nccl_version() -> Result<i32> {
    const OP: &str = "nccl_version";
    // SAFETY: only tries to dlopen the library.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::device(OP, MISSING));
    }
    nccl::get_nccl_version().map_err(|e| nccl_error(OP, e))
}

/// A fresh unique id (rank 0 makes it; the others receive it).
pub fn unique_id() -> Result<UniqueId> {
    nccl_version()?;
    let id = nccl::get_uniqueid().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
    let mut words = [0u64; 16];
    for (w, bytes) in words.iter_mut().zip(id.internal.chunks_exact(8)) {
        *w = u64::from_le_bytes(std::array::from_fn(|i| bytes[i] as u8));
    }
    Ok(words)
}

/// NCCL's element type for `dtype` (integers are not exchanged).
fn wire_type(op: &'static str, dtype: DType) -> Result<sys::ncclDataType_t> {
    Ok(match dtype {
        DType::F32 => sys::ncclDataType_t::ncclFloat32,
        DType::F64 => sys::ncclDataType_t::ncclFloat64,
        DType::BF16 => sys::ncclDataType_t::ncclBfloat16,
        DType::F16 => sys::ncclDataType_t::ncclFloat16,
        other => crate::bail!(dtype, op, "a buffer of {other}; NCCL here exchanges f32, f64, bf16 or f16"),
    })
}

/// One rank's NCCL communicator on its GPU.
pub struct NcclComm {
    comm: Mutex<RawComm>,
    dev: Arc<CudaDevice>,
    /// The communicator's own stream, made at its first use: collectives
    /// queued there overlap with the kernels of the device's stream.
    side: Mutex<Option<Arc<CudaStream>>>,
    rank: usize,
    world: usize,
    version: i32,
}

/// The communicator handle. NCCL allows one thread at a time per
/// communicator; the `Mutex` around it sees to that.
struct RawComm(sys::ncclComm_t);

// SAFETY: the handle is an opaque pointer NCCL lets any thread use, one at
// a time (the Mutex in `NcclComm`).
unsafe impl Send for RawComm {}

impl Drop for NcclComm {
    fn drop(&mut self) {
        let comm = self.comm.get_mut().unwrap_or_else(|p| p.into_inner()).0;
        let finished = self.wait_for_queued_work(comm);
        // SAFETY: the handle came from ncclCommInitRank and is released once.
        // The results are ignored: nothing is left to report them to.
        unsafe {
            if finished {
                let _ = nccl::comm_destroy(comm);
            } else {
                let _ = nccl::comm_abort(comm);
            }
        }
    }
}

impl NcclComm {
    /// Whether everything queued on the device's stream finished within
    /// [`DROP_WAIT`] without an asynchronous NCCL error.
    fn wait_for_queued_work(&self, comm: sys::ncclComm_t) -> bool {
        if self.dev.bind().is_err() {
            return false;
        }
        // Collectives queued on the side stream count too.
        let side = self.side.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if side.is_some_and(|side| self.dev.stream().join(&side).is_err()) {
            return false;
        }
        let Ok(done) = self.dev.stream().record_event(None) else { return false };
        let deadline = Instant::now() + DROP_WAIT;
        loop {
            match done.try_is_complete() {
                Ok(true) => return true,
                Ok(false) => {}
                Err(_) => return false,
            }
            let mut state = sys::ncclResult_t::ncclSuccess;
            // SAFETY: a live handle and a place for the answer.
            let asked = unsafe { sys::ncclCommGetAsyncError(comm, &mut state) };
            let healthy = |r: sys::ncclResult_t| matches!(r, sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress);
            if !healthy(asked) || !healthy(state) || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl std::fmt::Debug for NcclComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NcclComm {{ rank: {}, world_size: {}, device: cuda:{}, version: {} }}",
            self.rank,
            self.world,
            self.dev.ordinal(),
            self.version
        )
    }
}

impl NcclComm {
    /// What joining on `device` needs that this rank can check alone: a
    /// CUDA device that opens, and NCCL 2.10 or later.
    pub fn check(op: &'static str, device: Device) -> Result<(Arc<CudaDevice>, i32)> {
        let Device::Cuda(ordinal) = device else {
            crate::bail!(
                device,
                op,
                "NCCL exchanges CUDA tensors; got device {device} (the host collectives serve CPU tensors)"
            );
        };
        let dev = cuda_device(ordinal)?;
        let version = nccl_version()?;
        if version < 21000 {
            // bf16 (ncclBfloat16) came with 2.10.
            crate::bail!(device, op, "NCCL {version} is older than 2.10, which tamer needs");
        }
        Ok((dev, version))
    }

    /// Join the communicator of `world` ranks as `rank`, on `device`, with
    /// the id every rank received from rank 0. Collective: every rank calls it.
    pub fn join(op: &'static str, device: Device, rank: usize, world: usize, id: UniqueId) -> Result<NcclComm> {
        let (dev, version) = Self::check(op, device)?;
        let mut raw = sys::ncclUniqueId { internal: [0; 128] };
        for (bytes, w) in raw.internal.chunks_exact_mut(8).zip(id) {
            for (b, v) in bytes.iter_mut().zip(w.to_le_bytes()) {
                *b = v as std::ffi::c_char;
            }
        }
        let ranks = i32::try_from(world).map_err(|_| Error::value(op, format!("{world} ranks are more than NCCL counts")))?;
        let me = i32::try_from(rank).map_err(|_| Error::value(op, format!("rank {rank} is more than NCCL counts")))?;
        dev.bind()?;
        let mut comm = std::ptr::null_mut();
        // SAFETY: `comm` receives the new handle; the id is the one every rank got.
        unsafe { nccl::comm_init_rank(&mut comm, ranks, raw, me) }.map_err(|e| nccl_error(op, e))?;
        Ok(NcclComm {
            comm: Mutex::new(RawComm(comm)),
            dev,
            side: Mutex::new(None),
            rank,
            world,
            version,
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.world
    }
    /// The GPU this rank's collectives run on.
    pub fn device(&self) -> Device {
        Device::Cuda(self.dev.ordinal())
    }
    /// NCCL's version code.
    pub fn version(&self) -> i32 {
        self.version
    }

    /// The device address of `run` and its NCCL element type, after checking
    /// that it lies in CUDA memory of this communicator's GPU.
    fn address(&self, op: &'static str, run: &Run<'_>) -> Result<(u64, sys::ncclDataType_t)> {
        let ty = wire_type(op, run.storage.dtype())?;
        let Storage::Cuda(s) = run.storage else {
            crate::bail!(
                device,
                op,
                "a buffer on {}; this rank's NCCL communicator is on {}",
                run.storage.device(),
                self.device()
            );
        };
        if s.cuda_device().ordinal() != self.dev.ordinal() {
            crate::bail!(
                device,
                op,
                "a buffer on cuda:{}; this rank's NCCL communicator is on {}",
                s.cuda_device().ordinal(),
                self.device()
            );
        }
        if run.start + run.len > run.storage.len() {
            crate::bail!(
                shape,
                op,
                "elements {}..{} of a storage of {}",
                run.start,
                run.start + run.len,
                run.storage.len()
            );
        }
        Ok((s.ptr_at(run.start), ty))
    }

    /// Run `calls` between ncclGroupStart and ncclGroupEnd (one launch for
    /// them all) on the device's stream, holding the communicator, with the
    /// device bound.
    fn grouped(&self, op: &'static str, calls: impl FnOnce(sys::ncclComm_t, sys::cudaStream_t) -> Result<()>) -> Result<()> {
        self.grouped_on(op, self.dev.stream(), calls)
    }

    /// [`grouped`](Self::grouped) on `stream`.
    fn grouped_on(&self, op: &'static str, stream: &CudaStream, calls: impl FnOnce(sys::ncclComm_t, sys::cudaStream_t) -> Result<()>) -> Result<()> {
        let comm = self.comm.lock().unwrap_or_else(|p| p.into_inner());
        self.dev.bind()?;
        let stream = stream.cu_stream() as sys::cudaStream_t;
        nccl::group_start().map_err(|e| nccl_error(op, e))?;
        let queued = calls(comm.0, stream);
        // The group is closed whatever happened inside it.
        let closed = nccl::group_end().map_err(|e| nccl_error(op, e));
        queued.and(closed.map(|_| ()))
    }

    /// Each run replaced by its sum over the ranks. (A mean is that sum
    /// divided by the world size, as the host path computes it, by the
    /// caller: NCCL's `ncclAvg` scales each input by a rounded 1/n first.)
    pub fn all_reduce_sum_in_place(&self, op: &'static str, runs: &[Run<'_>]) -> Result<()> {
        self.sum_in_place_on(op, self.dev.stream(), runs)
    }

    /// [`all_reduce_sum_in_place`](Self::all_reduce_sum_in_place) queued on `stream`.
    fn sum_in_place_on(&self, op: &'static str, stream: &CudaStream, runs: &[Run<'_>]) -> Result<()> {
        let addrs = runs.iter().map(|r| self.address(op, r)).collect::<Result<Vec<_>>>()?;
        self.grouped_on(op, stream, |comm, stream| {
            for (run, (ptr, ty)) in runs.iter().zip(addrs) {
                let p = ptr as *mut c_void;
                // SAFETY: `p` addresses run.len elements of type `ty` on this GPU (checked above).
                unsafe { nccl::all_reduce(p, p, run.len, ty, sys::ncclRedOp_t::ncclSum, comm, stream) }.map_err(|e| nccl_error(op, e))?;
            }
            Ok(())
        })
    }

    /// The side stream, made at the first call.
    fn side_stream(&self, op: &'static str) -> Result<Arc<CudaStream>> {
        let mut side = self.side.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = side.as_ref() {
            return Ok(s.clone());
        }
        self.dev.bind()?;
        let main = self.dev.stream();
        // SAFETY: defensive: with a second stream, cudarc would start
        // recording events on every `CudaSlice` a kernel uses, to order the
        // streams itself. tamer's storage is raw device pointers (no
        // `CudaSlice`), so this changes nothing today, and keeps any later
        // `CudaSlice` from silently starting that bookkeeping. tamer orders
        // the streams itself: every kernel runs on the device's stream; the
        // side stream runs only collectives on buffers whose writes it waits
        // for (an event of the device's stream) and that the device's stream
        // reads only after joining it again (`join_side`); and none of those
        // buffers is freed while the side stream may use them (their owner,
        // the overlapped reducer, joins before each step ends).
        unsafe { main.context().disable_event_tracking() };
        let made = main.fork().map_err(|e| driver_error(op, e))?;
        *side = Some(made.clone());
        Ok(made)
    }

    /// Start replacing each run with its sum over the ranks, on the side
    /// stream, once the work queued so far on the device's stream is done
    /// (what wrote the runs): the device's stream goes on meanwhile. The
    /// runs must not be read, written or freed before [`join_side`](Self::join_side).
    pub fn start_all_reduce_sum_on_side(&self, op: &'static str, runs: &[Run<'_>]) -> Result<()> {
        let side = self.side_stream(op)?;
        let written = self.dev.stream().record_event(None).map_err(|e| driver_error(op, e))?;
        side.wait(&written).map_err(|e| driver_error(op, e))?;
        self.sum_in_place_on(op, &side, runs)
    }

    /// Order the device's stream after everything queued on the side stream.
    pub fn join_side(&self, op: &'static str) -> Result<()> {
        let side = self.side.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(side) = side {
            self.dev.bind()?;
            self.dev.stream().join(&side).map_err(|e| driver_error(op, e))?;
        }
        Ok(())
    }

    /// Each run replaced by root's.
    pub fn broadcast_in_place(&self, op: &'static str, runs: &[Run<'_>], root: usize) -> Result<()> {
        if root >= self.world {
            crate::bail!(value, op, "root rank {root} is outside the world of {} rank(s)", self.world);
        }
        let addrs = runs.iter().map(|r| self.address(op, r)).collect::<Result<Vec<_>>>()?;
        self.grouped(op, |comm, stream| {
            for (run, (ptr, ty)) in runs.iter().zip(addrs) {
                let p = ptr as *mut c_void;
                // SAFETY: as in all_reduce_in_place.
                unsafe { nccl::broadcast(p, p, run.len, ty, root as i32, comm, stream) }.map_err(|e| nccl_error(op, e))?;
            }
            Ok(())
        })
    }

    /// The addresses and element type of a gather's or scatter's two runs,
    /// after checking that `whole` holds `world` blocks of `block`'s length
    /// and type (`whole` is what an all-gather receives and a
    /// reduce-scatter sends).
    fn blocks(&self, op: &'static str, block: &Run<'_>, whole: &Run<'_>) -> Result<(u64, u64, sys::ncclDataType_t)> {
        let ((b, ty), (w, wty)) = (self.address(op, block)?, self.address(op, whole)?);
        if ty != wty || whole.len != block.len * self.world {
            crate::bail!(
                shape,
                op,
                "buffers of {} and {} elements; expected the larger {} × the smaller, of one type",
                block.len,
                whole.len,
                self.world
            );
        }
        Ok((b, w, ty))
    }

    /// `recv` (world × `send.len`) filled with every rank's `send`, in rank order.
    pub fn all_gather(&self, op: &'static str, send: &Run<'_>, recv: &Run<'_>) -> Result<()> {
        let (s, r, ty) = self.blocks(op, send, recv)?;
        self.grouped(op, |comm, stream| {
            // SAFETY: `blocks` checked that both runs lie in this GPU's memory with these lengths.
            unsafe { nccl::all_gather(s as *const c_void, r as *mut c_void, send.len, ty, comm, stream) }.map_err(|e| nccl_error(op, e))?;
            Ok(())
        })
    }

    /// `recv` = block `rank` of the sum over the ranks of `send` (world × `recv.len`).
    pub fn reduce_scatter_sum(&self, op: &'static str, send: &Run<'_>, recv: &Run<'_>) -> Result<()> {
        let (r, s, ty) = self.blocks(op, recv, send)?;
        self.grouped(op, |comm, stream| {
            // SAFETY: as in all_gather.
            unsafe { nccl::reduce_scatter(s as *const c_void, r as *mut c_void, recv.len, ty, sys::ncclRedOp_t::ncclSum, comm, stream) }
                .map_err(|e| nccl_error(op, e))?;
            Ok(())
        })
    }
}
