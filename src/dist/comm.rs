//! The transport under a [`ProcessGroup`](super::ProcessGroup): a few
//! collectives on host buffers of one element type, and the [`Single`]
//! process that every build has.
//!
//! A backend only moves and adds numbers; checking that the ranks agree on
//! what they exchange, packing tensors into buckets and building the result
//! tensors is the process group's work, so that every backend behaves alike.

use crate::Result;

/// A mutable host buffer of one of the element types the collectives move.
///
/// ```
/// use tamer::dist::HostBuf;
/// let mut data = vec![1.0f32, 2.0];
/// let buf = HostBuf::F32(&mut data);
/// assert_eq!(buf.len(), 2);
/// ```
#[derive(Debug)]
pub enum HostBuf<'a> {
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
    /// Whole numbers: the agreement checks (element counts, shape hashes).
    U64(&'a mut [u64]),
}

impl HostBuf<'_> {
    /// The number of elements.
    ///
    /// ```
    /// use tamer::dist::HostBuf;
    /// assert!(HostBuf::U64(&mut []).is_empty());
    /// ```
    pub fn len(&self) -> usize {
        match self {
            HostBuf::F32(b) => b.len(),
            HostBuf::F64(b) => b.len(),
            HostBuf::U64(b) => b.len(),
        }
    }
    /// Whether the buffer holds no element.
    ///
    /// ```
    /// use tamer::dist::HostBuf;
    /// assert!(!HostBuf::F64(&mut [1.0]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The element type's name, for messages.
    ///
    /// ```
    /// use tamer::dist::HostBuf;
    /// assert_eq!(HostBuf::F32(&mut []).type_name(), "f32");
    /// ```
    pub fn type_name(&self) -> &'static str {
        match self {
            HostBuf::F32(_) => "f32",
            HostBuf::F64(_) => "f64",
            HostBuf::U64(_) => "u64",
        }
    }
}

/// What a backend provides: rank and size, and collectives on host buffers.
///
/// Every rank calls the same collectives in the same order with buffers of
/// the same type and length (the [`ProcessGroup`](super::ProcessGroup)
/// checks this before it calls a backend). Sums of `U64` buffers are not
/// needed: integers are only gathered and broadcast.
///
/// ```
/// use tamer::dist::{Communicator, HostBuf, Single};
/// let single = Single;
/// let mut data = vec![3.0f64];
/// single.all_reduce_sum(HostBuf::F64(&mut data)).unwrap();
/// assert_eq!(data, [3.0]);
/// assert_eq!((single.rank(), single.world_size(), single.name()), (0, 1, "single"));
/// ```
pub trait Communicator {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn world_size(&self) -> usize;
    /// This process's rank among the processes on its machine (which GPU to use).
    fn local_rank(&self) -> usize;
    /// The backend's name, for logs ("single", "mpi").
    fn name(&self) -> &'static str;
    /// Replace `buf` with the element-wise sum over the ranks (every rank gets it).
    fn all_reduce_sum(&self, buf: HostBuf<'_>) -> Result<()>;
    /// Replace `buf` with root's `buf`.
    fn broadcast(&self, buf: HostBuf<'_>, root: usize) -> Result<()>;
    /// Fill `recv` (`world_size × send.len()`) with every rank's `send`, in rank order.
    fn all_gather(&self, send: HostBuf<'_>, recv: HostBuf<'_>) -> Result<()>;
    /// Sum `send` (`world_size × recv.len()`) over the ranks and give rank r
    /// the r-th block of the sum in `recv`.
    fn reduce_scatter_sum(&self, send: HostBuf<'_>, recv: HostBuf<'_>) -> Result<()>;
    /// Return once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// End every process of the job with exit code `code` (MPI_Abort),
    /// from any thread, without waiting for the other ranks. The default,
    /// for a world of one, exits this process.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// One process, no MPI: world size 1, every collective the identity (a
/// gather or scatter copies). The default, so a trainer can always call the
/// collectives.
///
/// ```
/// use tamer::dist::{Communicator, HostBuf, Single};
/// let (mut send, mut recv) = (vec![1.0f32, 2.0], vec![0.0f32; 2]);
/// Single.all_gather(HostBuf::F32(&mut send), HostBuf::F32(&mut recv)).unwrap();
/// assert_eq!(recv, [1.0, 2.0]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Communicator for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn name(&self) -> &'static str {
        "single"
    }
    fn all_reduce_sum(&self, _buf: HostBuf<'_>) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _buf: HostBuf<'_>, root: usize) -> Result<()> {
        check_root("broadcast", root, 1)
    }
    fn all_gather(&self, send: HostBuf<'_>, recv: HostBuf<'_>) -> Result<()> {
        copy_same("all_gather", send, recv)
    }
    fn reduce_scatter_sum(&self, send: HostBuf<'_>, recv: HostBuf<'_>) -> Result<()> {
        copy_same("reduce_scatter", send, recv)
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// An error unless `root` is a rank of a world of `world` processes.
pub(crate) fn check_root(op: &'static str, root: usize, world: usize) -> Result<()> {
    if root >= world {
        crate::bail!(value, op, "root rank {root} is outside the world of {world} process(es) (expected 0..{world})");
    }
    Ok(())
}

/// An error unless `recv` is `factor ×` as long as `send` and of its type.
pub(crate) fn check_lengths(op: &'static str, send: &HostBuf<'_>, recv: &HostBuf<'_>, send_factor: usize, recv_factor: usize) -> Result<()> {
    if send.type_name() != recv.type_name() {
        crate::bail!(
            dtype,
            op,
            "send buffer is {} and receive buffer {}; expected one type",
            send.type_name(),
            recv.type_name()
        );
    }
    if send.len() * send_factor != recv.len() * recv_factor {
        crate::bail!(
            shape,
            op,
            "send buffer of {} and receive buffer of {} elements; expected {} × {} = {} × {}",
            send.len(),
            recv.len(),
            send.len(),
            send_factor,
            recv.len(),
            recv_factor
        );
    }
    Ok(())
}

fn copy_same(op: &'static str, send: HostBuf<'_>, recv: HostBuf<'_>) -> Result<()> {
    check_lengths(op, &send, &recv, 1, 1)?;
    match (send, recv) {
        (HostBuf::F32(s), HostBuf::F32(r)) => r.copy_from_slice(s),
        (HostBuf::F64(s), HostBuf::F64(r)) => r.copy_from_slice(s),
        (HostBuf::U64(s), HostBuf::U64(r)) => r.copy_from_slice(s),
        // check_lengths refused mixed types above.
        _ => crate::bail!(dtype, op, "send and receive buffers of different types"),
    }
    Ok(())
}
