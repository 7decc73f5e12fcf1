//! The MPI backend (feature `mpi`): rsmpi over the system's MPI library
//! (OpenMPI on Debian), for CPU tensors.
//!
//! MPI is initialised once per process (a second [`Mpi::init`] is an error)
//! and finalised when the last handle to the backend is dropped. Calls are
//! serialised by a lock, with MPI initialised at `MPI_THREAD_SERIALIZED`, so
//! a process group may be used from any thread.

use super::comm::{check_lengths, check_root, Communicator, HostBuf};
use crate::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::environment::{Threading, Universe};
use mpi::topology::Communicator as _;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::sync::Mutex;

/// The world communicator of processes started by `mpirun` (or `srun`).
///
/// ```no_run
/// # #[cfg(feature = "mpi")] {
/// use tamer::dist::{Communicator, Mpi};
/// let mpi = Mpi::init().unwrap();
/// println!("rank {} of {}", mpi.rank(), mpi.world_size());
/// # }
/// ```
pub struct Mpi {
    // Dropping it finalises MPI: kept for as long as the backend lives.
    _universe: Universe,
    rank: usize,
    size: usize,
    local_rank: usize,
    /// MPI runs at `MPI_THREAD_SERIALIZED`: one call at a time, from any
    /// thread; the lock also guards the send copies of all-reduces.
    lock: Mutex<SendCopies>,
}

/// The send side of an all-reduce (rsmpi has no `MPI_IN_PLACE`): buffers kept
/// for the process's life, so that a steady all-reduce allocates nothing.
#[derive(Default)]
struct SendCopies {
    f32: Vec<f32>,
    f64: Vec<f64>,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi {{ rank: {}, size: {}, local_rank: {} }}", self.rank, self.size, self.local_rank)
    }
}

impl Mpi {
    /// Initialise MPI and take the world communicator.
    ///
    /// Errors when MPI was already initialised in this process, or when the
    /// library cannot give serialised multi-threading.
    ///
    /// ```no_run
    /// # #[cfg(feature = "mpi")] {
    /// let mpi = tamer::dist::Mpi::init().unwrap();
    /// # }
    /// ```
    pub fn init() -> Result<Mpi> {
        let op = "Mpi::init";
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized).ok_or_else(|| {
            Error::value(
                op,
                "MPI is already initialised in this process (it can be only once): share the first ProcessGroup",
            )
        })?;
        if threading < Threading::Serialized {
            return Err(Error::device(
                op,
                format!("the MPI library gives thread level {threading:?}; expected at least Serialized"),
            ));
        }
        let world = universe.world();
        let rank = usize::try_from(world.rank()).map_err(|_| Error::device(op, "MPI gave a negative rank"))?;
        let size = usize::try_from(world.size()).map_err(|_| Error::device(op, "MPI gave a negative world size"))?;
        // The processes sharing this machine's memory, ordered by world rank.
        let local_rank = usize::try_from(world.split_shared(world.rank()).rank()).map_err(|_| Error::device(op, "MPI gave a negative local rank"))?;
        Ok(Mpi {
            _universe: universe,
            rank,
            size,
            local_rank,
            lock: Mutex::new(SendCopies::default()),
        })
    }

    /// The world communicator and the send copies, with the call lock held while `f` runs.
    fn with_world<R>(&self, f: impl FnOnce(&SimpleCommunicator, &mut SendCopies) -> R) -> R {
        // A poisoned lock means a panic elsewhere mid-call; MPI itself aborts on
        // its own errors, so the communicator is still usable.
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        f(&SimpleCommunicator::world(), &mut guard)
    }
}

/// MPI counts are C ints: an error for a buffer longer than that.
fn count(op: &'static str, buf: &HostBuf<'_>, factor: usize) -> Result<()> {
    match buf.len().checked_mul(factor) {
        Some(n) if i32::try_from(n).is_ok() => Ok(()),
        _ => Err(Error::value(
            op,
            format!("{} elements × {factor} exceed MPI's count limit ({}); use smaller buckets", buf.len(), i32::MAX),
        )),
    }
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn name(&self) -> &'static str {
        "mpi"
    }
    fn all_reduce_sum(&self, buf: HostBuf<'_>) -> Result<()> {
        count("all_reduce", &buf, 1)?;
        self.with_world(|w, copies| match buf {
            HostBuf::F32(b) => {
                copies.f32.clear();
                copies.f32.extend_from_slice(b);
                w.all_reduce_into(&copies.f32[..], b, SystemOperation::sum());
                Ok(())
            }
            HostBuf::F64(b) => {
                copies.f64.clear();
                copies.f64.extend_from_slice(b);
                w.all_reduce_into(&copies.f64[..], b, SystemOperation::sum());
                Ok(())
            }
            HostBuf::U64(_) => Err(Error::dtype("all_reduce", "u64 buffers are gathered and broadcast, not summed")),
        })
    }
    fn broadcast(&self, buf: HostBuf<'_>, root: usize) -> Result<()> {
        check_root("broadcast", root, self.size)?;
        count("broadcast", &buf, 1)?;
        let root = root as i32; // below the world size, itself an i32
        self.with_world(|w, _| {
            let p = w.process_at_rank(root);
            match buf {
                HostBuf::F32(b) => p.broadcast_into(b),
                HostBuf::F64(b) => p.broadcast_into(b),
                HostBuf::U64(b) => p.broadcast_into(b),
            }
        });
        Ok(())
    }
    fn all_gather(&self, send: HostBuf<'_>, recv: HostBuf<'_>) -> Result<()> {
        check_lengths("all_gather", &send, &recv, self.size, 1)?;
        count("all_gather", &send, self.size)?;
        self.with_world(|w, _| {
            match (send, recv) {
                (HostBuf::F32(s), HostBuf::F32(r)) => w.all_gather_into(&s[..], r),
                (HostBuf::F64(s), HostBuf::F64(r)) => w.all_gather_into(&s[..], r),
                (HostBuf::U64(s), HostBuf::U64(r)) => w.all_gather_into(&s[..], r),
                _ => return Err(Error::dtype("all_gather", "send and receive buffers of different types")),
            }
            Ok(())
        })
    }
    fn reduce_scatter_sum(&self, send: HostBuf<'_>, recv: HostBuf<'_>) -> Result<()> {
        check_lengths("reduce_scatter", &send, &recv, 1, self.size)?;
        count("reduce_scatter", &send, 1)?;
        self.with_world(|w, _| {
            match (send, recv) {
                (HostBuf::F32(s), HostBuf::F32(r)) => w.reduce_scatter_block_into(&s[..], r, SystemOperation::sum()),
                (HostBuf::F64(s), HostBuf::F64(r)) => w.reduce_scatter_block_into(&s[..], r, SystemOperation::sum()),
                _ => return Err(Error::dtype("reduce_scatter", "expected f32 or f64 buffers of one type")),
            }
            Ok(())
        })
    }
    fn abort(&self, code: i32) -> ! {
        // Without the call lock: the rank may be failing inside a call that holds it.
        SimpleCommunicator::world().abort(code)
    }
    fn barrier(&self) -> Result<()> {
        self.with_world(|w, _| w.barrier());
        Ok(())
    }
}
