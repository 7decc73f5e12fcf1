//! Several processes training one model: a [`ProcessGroup`] with the
//! collectives data-parallel training needs.
//!
//! Processes are started by a launcher (`mpirun -np 2 ...`, Slurm's `srun`);
//! [`ProcessGroup::from_env`] joins them (with the `mpi` feature) or, when the
//! process was not started by one, is a world of one ([`Single`]), which needs
//! no MPI and whose collectives are the identity, so a trainer can always
//! call them.
//!
//! Every collective first has the ranks agree on what they exchange (the
//! number of tensors, their dtypes and shapes, the root): a rank that passes
//! other tensors gets an error naming the ranks and what differs, on every
//! rank alike, where an unchecked exchange would hang or mix up buffers.
//! The tensors are CPU tensors of f32 or f64; lists are packed into one flat
//! buffer per dtype and exchanged in buckets of a fixed number of elements
//! ([`ProcessGroup::with_bucket_elems`]). With the `nccl` feature,
//! [`ProcessGroup::with_nccl`] adds a communicator on the rank's GPU, and
//! the same collectives then take CUDA tensors (f32, f64, bf16, f16) and
//! exchange them GPU to GPU, each in its own storage, on the device's stream.
//!
//! ```
//! use tamer::dist::{ProcessGroup, ReduceOp};
//! use tamer::Tensor;
//! let pg = ProcessGroup::from_env().unwrap(); // not under mpirun: a world of one
//! assert_eq!((pg.rank(), pg.world_size()), (0, 1));
//! let g = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
//! let mean = pg.all_reduce(&[g], ReduceOp::Mean).unwrap();
//! assert_eq!(mean[0].to_vec::<f32>().unwrap(), [1.0, 2.0]);
//! ```

mod abort;
mod bucket;
mod comm;
mod flat;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
mod overlap;

pub use bucket::bucket_ranges;
pub use comm::{Communicator, HostBuf, Single};
pub use flat::FlatBuffers;
pub(crate) use flat::{read_host, write_host, Wire};
#[cfg(feature = "mpi")]
pub use mpi::Mpi;
#[cfg(feature = "nccl")]
pub use nccl::{nccl_version, Nccl};
pub use overlap::{OverlapReducer, StepSync};

use crate::{Error, Result, Tensor};
use bucket::{check_tensor, Fnv, Packed};
use std::sync::Arc;

/// Elements per bucket unless told otherwise: 8 MiB of f32.
pub const DEFAULT_BUCKET_ELEMS: usize = 1 << 21;

/// Environment variables through which launchers give the world size
/// (OpenMPI's mpirun, MPICH's and Intel's Hydra, Slurm's PMI).
pub const LAUNCHER_SIZE_VARS: [&str; 2] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];

/// How an all-reduce combines the ranks' values.
///
/// ```
/// use tamer::dist::ReduceOp;
/// assert_ne!(ReduceOp::Sum, ReduceOp::Mean);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// The element-wise sum over the ranks.
    Sum,
    /// The sum divided by the world size (averaged gradients).
    Mean,
}

/// Which collective a signature is for, so that ranks calling different
/// collectives at once are told so rather than mixing buffers.
#[derive(Clone, Copy)]
enum Kind {
    AllReduce = 1,
    Broadcast = 2,
    AllGather = 3,
    ReduceScatter = 4,
    Scalars = 5,
}

/// A group of processes and the collectives over them.
///
/// Cloning is cheap and shares the backend.
///
/// ```
/// use tamer::dist::ProcessGroup;
/// let pg = ProcessGroup::single();
/// assert!(pg.is_root());
/// assert_eq!(pg.backend_name(), "single");
/// ```
#[derive(Clone)]
pub struct ProcessGroup {
    comm: Arc<dyn Communicator + Send + Sync>,
    bucket_elems: usize,
    /// The GPU communicator for CUDA tensors, once `with_nccl` made one.
    #[cfg(feature = "nccl")]
    nccl: Option<Arc<Nccl>>,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ProcessGroup {{ backend: {}, rank: {}, world_size: {}, local_rank: {}, bucket_elems: {}, gpu backend: {} }}",
            self.comm.name(),
            self.rank(),
            self.world_size(),
            self.local_rank(),
            self.bucket_elems,
            self.gpu_backend_name().unwrap_or("none")
        )
    }
}

impl Default for ProcessGroup {
    fn default() -> Self {
        ProcessGroup::single()
    }
}

impl ProcessGroup {
    /// A world of one process.
    ///
    /// ```
    /// assert_eq!(tamer::dist::ProcessGroup::single().world_size(), 1);
    /// ```
    pub fn single() -> ProcessGroup {
        ProcessGroup::new(Arc::new(Single))
    }

    /// A group over any backend.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tamer::dist::{ProcessGroup, Single};
    /// assert_eq!(ProcessGroup::new(Arc::new(Single)).rank(), 0);
    /// ```
    pub fn new(comm: Arc<dyn Communicator + Send + Sync>) -> ProcessGroup {
        ProcessGroup {
            comm,
            bucket_elems: DEFAULT_BUCKET_ELEMS,
            #[cfg(feature = "nccl")]
            nccl: None,
        }
    }

    /// The same group with an NCCL communicator on `device`, this rank's
    /// GPU (feature `nccl`): from then on the collectives exchange CUDA
    /// tensors on that GPU directly, GPU to GPU. Every rank must call it
    /// (rank 0's NCCL id reaches the others through this group's host
    /// collectives). An error, never a panic, when the device is not a GPU
    /// or NCCL is missing.
    ///
    /// ```
    /// # #[cfg(feature = "nccl")] {
    /// use tamer::dist::ProcessGroup;
    /// // On a machine without a GPU or without NCCL this is an error saying which.
    /// match ProcessGroup::single().with_nccl(tamer::Device::Cuda(0)) {
    ///     Ok(pg) => assert_eq!(pg.gpu_backend_name(), Some("nccl")),
    ///     Err(e) => println!("no NCCL here: {e}"),
    /// }
    /// assert!(ProcessGroup::single().with_nccl(tamer::Device::Cpu).is_err());
    /// # }
    /// ```
    #[cfg(feature = "nccl")]
    pub fn with_nccl(mut self, device: crate::Device) -> Result<ProcessGroup> {
        self.nccl = Some(Arc::new(Nccl::init(self.comm.as_ref(), device)?));
        Ok(self)
    }

    /// The NCCL communicator, if [`with_nccl`](Self::with_nccl) made one.
    #[cfg(feature = "nccl")]
    pub fn nccl(&self) -> Option<&Nccl> {
        self.nccl.as_deref()
    }

    /// The backend for CUDA tensors ("nccl"), if any: without one the
    /// collectives take CPU tensors only.
    ///
    /// ```
    /// assert_eq!(tamer::dist::ProcessGroup::single().gpu_backend_name(), None);
    /// ```
    pub fn gpu_backend_name(&self) -> Option<&'static str> {
        #[cfg(feature = "nccl")]
        if self.nccl.is_some() {
            return Some("nccl");
        }
        None
    }

    /// Whether the collectives exchange tensors on `device` without a host
    /// copy: the CPU's always, a GPU's when this group's NCCL communicator
    /// is on it.
    ///
    /// ```
    /// use tamer::{dist::ProcessGroup, Device};
    /// assert!(ProcessGroup::single().exchanges_on(Device::Cpu));
    /// assert!(!ProcessGroup::single().exchanges_on(Device::Cuda(0)));
    /// ```
    pub fn exchanges_on(&self, device: crate::Device) -> bool {
        if device == crate::Device::Cpu {
            return true;
        }
        #[cfg(feature = "nccl")]
        if let Some(n) = &self.nccl {
            return n.device() == device;
        }
        false
    }

    /// What sums the gradient buckets of [`OverlapReducer`] on `device`, a
    /// GPU: this group's NCCL communicator, when it is on that GPU and can
    /// take `params`' dtypes.
    pub(crate) fn device_exchange(&self, op: &'static str, device: crate::Device, params: &[Tensor]) -> Result<Arc<dyn overlap::DeviceExchange>> {
        #[cfg(feature = "nccl")]
        if let Some(n) = self.nccl.as_ref().filter(|n| n.device() == device) {
            n.validate(op, params, false)?;
            return Ok(n.clone());
        }
        let _ = params;
        crate::bail!(
            device,
            op,
            "gradients on {device}, and this group exchanges CPU tensors only{}",
            if cfg!(feature = "nccl") {
                " (give it an NCCL communicator on that GPU: ProcessGroup::with_nccl)"
            } else {
                " (GPU tensors need the nccl feature and ProcessGroup::with_nccl)"
            }
        );
    }

    /// The world of processes MPI started (feature `mpi`): initialises MPI,
    /// once per process.
    ///
    /// ```no_run
    /// # #[cfg(feature = "mpi")] {
    /// let pg = tamer::dist::ProcessGroup::mpi().unwrap();
    /// # }
    /// ```
    #[cfg(feature = "mpi")]
    pub fn mpi() -> Result<ProcessGroup> {
        Ok(ProcessGroup::new(Arc::new(Mpi::init()?)))
    }

    /// The world the launcher started, read from its environment
    /// ([`LAUNCHER_SIZE_VARS`]): under `mpirun`/`srun` with the `mpi`
    /// feature, the MPI world; otherwise a world of one. A launcher's world
    /// of several processes in a build without the `mpi` feature is an
    /// error, not several independent runs.
    ///
    /// ```
    /// let pg = tamer::dist::ProcessGroup::from_env().unwrap();
    /// assert!(pg.world_size() >= 1);
    /// ```
    pub fn from_env() -> Result<ProcessGroup> {
        let Some((var, size)) = launcher_world_size()? else {
            return Ok(ProcessGroup::single());
        };
        #[cfg(feature = "mpi")]
        {
            let _ = (var, size);
            ProcessGroup::mpi()
        }
        #[cfg(not(feature = "mpi"))]
        {
            if size > 1 {
                crate::bail!(
                    device,
                    "ProcessGroup::from_env",
                    "the launcher started {size} processes ({var}={size}) but tamer was built without the `mpi` feature; rebuild with --features mpi"
                );
            }
            Ok(ProcessGroup::single())
        }
    }

    /// The same group, exchanging at most `n` elements per collective call.
    ///
    /// ```
    /// let pg = tamer::dist::ProcessGroup::single().with_bucket_elems(1024).unwrap();
    /// assert_eq!(pg.bucket_elems(), 1024);
    /// assert!(tamer::dist::ProcessGroup::single().with_bucket_elems(0).is_err());
    /// ```
    pub fn with_bucket_elems(mut self, n: usize) -> Result<ProcessGroup> {
        if n == 0 || i32::try_from(n).is_err() {
            crate::bail!(value, "ProcessGroup::with_bucket_elems", "bucket size {n} must be in 1..={}", i32::MAX);
        }
        self.bucket_elems = n;
        Ok(self)
    }

    /// Elements per bucket.
    ///
    /// ```
    /// use tamer::dist::{ProcessGroup, DEFAULT_BUCKET_ELEMS};
    /// assert_eq!(ProcessGroup::single().bucket_elems(), DEFAULT_BUCKET_ELEMS);
    /// ```
    pub fn bucket_elems(&self) -> usize {
        self.bucket_elems
    }
    /// This process's rank, `0..world_size()`.
    ///
    /// ```
    /// assert_eq!(tamer::dist::ProcessGroup::single().rank(), 0);
    /// ```
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }
    /// The number of processes.
    ///
    /// ```
    /// assert_eq!(tamer::dist::ProcessGroup::single().world_size(), 1);
    /// ```
    pub fn world_size(&self) -> usize {
        self.comm.world_size()
    }
    /// This process's rank among those on its machine.
    ///
    /// ```
    /// assert_eq!(tamer::dist::ProcessGroup::single().local_rank(), 0);
    /// ```
    pub fn local_rank(&self) -> usize {
        self.comm.local_rank()
    }
    /// Whether this is rank 0, the one that writes files and prints.
    ///
    /// ```
    /// assert!(tamer::dist::ProcessGroup::single().is_root());
    /// ```
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }
    /// The backend's name ("single", "mpi").
    ///
    /// ```
    /// assert_eq!(tamer::dist::ProcessGroup::single().backend_name(), "single");
    /// ```
    pub fn backend_name(&self) -> &'static str {
        self.comm.name()
    }

    /// The element-wise sum or mean of each tensor over the ranks, as new
    /// tensors of the same shapes and dtypes (every rank gets them).
    ///
    /// ```
    /// use tamer::dist::{ProcessGroup, ReduceOp};
    /// use tamer::Tensor;
    /// let pg = ProcessGroup::single();
    /// let t = [Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap(), Tensor::scalar(3.0f32)];
    /// let sum = pg.all_reduce(&t, ReduceOp::Sum).unwrap();
    /// assert_eq!(sum[0].to_vec::<f64>().unwrap(), [1.0, 2.0]);
    /// assert!(pg.all_reduce(&[Tensor::scalar(1i64)], ReduceOp::Sum).is_err());
    /// ```
    pub fn all_reduce(&self, tensors: &[Tensor], op: ReduceOp) -> Result<Vec<Tensor>> {
        const OP: &str = "all_reduce";
        #[cfg(feature = "nccl")]
        if let Some(gpu) = self.nccl_route(OP, tensors)? {
            return self.nccl_all_reduce(gpu, tensors, op);
        }
        if self.world_size() == 1 {
            return identity(OP, tensors);
        }
        let mut packed = Packed::pack(OP, tensors)?;
        self.agree(OP, Kind::AllReduce, &packed.signature())?;
        let world = self.world_size();
        for range in bucket_ranges(packed.f32.len(), self.bucket_elems) {
            self.comm.all_reduce_sum(HostBuf::F32(&mut packed.f32[range]))?;
        }
        for range in bucket_ranges(packed.f64.len(), self.bucket_elems) {
            self.comm.all_reduce_sum(HostBuf::F64(&mut packed.f64[range]))?;
        }
        if op == ReduceOp::Mean {
            packed.f32.iter_mut().for_each(|x| *x /= world as f32);
            packed.f64.iter_mut().for_each(|x| *x /= world as f64);
        }
        packed.unpack()
    }

    /// Root's tensors on every rank (each rank passes tensors of the same
    /// shapes and dtypes; only root's values matter).
    ///
    /// ```
    /// use tamer::dist::ProcessGroup;
    /// use tamer::Tensor;
    /// let pg = ProcessGroup::single();
    /// let got = pg.broadcast(&[Tensor::scalar(2.0f32)], 0).unwrap();
    /// assert_eq!(got[0].to_scalar().unwrap(), 2.0);
    /// assert!(pg.broadcast(&[Tensor::scalar(2.0f32)], 1).is_err()); // no rank 1
    /// ```
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<Vec<Tensor>> {
        const OP: &str = "broadcast";
        comm::check_root(OP, root, self.world_size())?;
        #[cfg(feature = "nccl")]
        if let Some(gpu) = self.nccl_route(OP, tensors)? {
            return self.nccl_broadcast(gpu, tensors, root);
        }
        if self.world_size() == 1 {
            return identity(OP, tensors);
        }
        let mut packed = Packed::pack(OP, tensors)?;
        let mut sig = packed.signature().to_vec();
        sig.push(root as u64);
        self.agree(OP, Kind::Broadcast, &sig)?;
        for range in bucket_ranges(packed.f32.len(), self.bucket_elems) {
            self.comm.broadcast(HostBuf::F32(&mut packed.f32[range]), root)?;
        }
        for range in bucket_ranges(packed.f64.len(), self.bucket_elems) {
            self.comm.broadcast(HostBuf::F64(&mut packed.f64[range]), root)?;
        }
        packed.unpack()
    }

    /// Every rank's `tensor` stacked in rank order: shape `[world_size, ...]`.
    ///
    /// ```
    /// use tamer::dist::ProcessGroup;
    /// use tamer::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
    /// let all = ProcessGroup::single().all_gather(&t).unwrap();
    /// assert_eq!(all.dims(), &[1, 2]);
    /// ```
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Tensor> {
        const OP: &str = "all_gather";
        #[cfg(feature = "nccl")]
        if let Some(gpu) = self.nccl_route(OP, std::slice::from_ref(tensor))? {
            return self.nccl_all_gather(gpu, tensor);
        }
        let mut packed = Packed::pack(OP, std::slice::from_ref(tensor))?;
        let world = self.world_size();
        let mut dims = vec![world];
        dims.extend_from_slice(tensor.dims());
        if world > 1 {
            self.agree(OP, Kind::AllGather, &packed.signature())?;
        }
        let n = tensor.numel();
        if tensor.dtype() == crate::DType::F32 {
            let mut recv = vec![0f32; n * world];
            self.comm.all_gather(HostBuf::F32(&mut packed.f32), HostBuf::F32(&mut recv))?;
            Tensor::from_vec(recv, dims)
        } else {
            let mut recv = vec![0f64; n * world];
            self.comm.all_gather(HostBuf::F64(&mut packed.f64), HostBuf::F64(&mut recv))?;
            Tensor::from_vec(recv, dims)
        }
    }

    /// The sum or mean over the ranks of `tensor`, cut along its first axis
    /// into `world_size` equal blocks: rank r gets block r (shape
    /// `[dims[0] / world_size, ...]`). The first axis must divide evenly.
    ///
    /// ```
    /// use tamer::dist::{ProcessGroup, ReduceOp};
    /// use tamer::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], [2, 2]).unwrap();
    /// let mine = ProcessGroup::single().reduce_scatter(&t, ReduceOp::Sum).unwrap();
    /// assert_eq!(mine.to_vec::<f64>().unwrap(), [1.0, 2.0, 3.0, 4.0]);
    /// assert!(ProcessGroup::single().reduce_scatter(&Tensor::scalar(1.0f32), ReduceOp::Sum).is_err());
    /// ```
    pub fn reduce_scatter(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor> {
        const OP: &str = "reduce_scatter";
        let world = self.world_size();
        let Some(&rows) = tensor.dims().first() else {
            crate::bail!(
                shape,
                OP,
                "a scalar cannot be cut into {world} blocks; expected a tensor whose first axis divides by {world}"
            );
        };
        if !rows.is_multiple_of(world) {
            crate::bail!(shape, OP, "first axis of shape {} does not divide into {world} equal blocks", tensor.shape());
        }
        let mut dims = tensor.dims().to_vec();
        dims[0] = rows / world;
        #[cfg(feature = "nccl")]
        if let Some(gpu) = self.nccl_route(OP, std::slice::from_ref(tensor))? {
            return self.nccl_reduce_scatter(gpu, tensor, op, dims);
        }
        check_tensor(OP, 0, tensor)?;
        let mut packed = Packed::pack(OP, std::slice::from_ref(tensor))?;
        if world > 1 {
            self.agree(OP, Kind::ReduceScatter, &packed.signature())?;
        }
        let block = tensor.numel() / world;
        if tensor.dtype() == crate::DType::F32 {
            let mut recv = vec![0f32; block];
            self.comm.reduce_scatter_sum(HostBuf::F32(&mut packed.f32), HostBuf::F32(&mut recv))?;
            if op == ReduceOp::Mean {
                recv.iter_mut().for_each(|x| *x /= world as f32);
            }
            Tensor::from_vec(recv, dims)
        } else {
            let mut recv = vec![0f64; block];
            self.comm.reduce_scatter_sum(HostBuf::F64(&mut packed.f64), HostBuf::F64(&mut recv))?;
            if op == ReduceOp::Mean {
                recv.iter_mut().for_each(|x| *x /= world as f64);
            }
            Tensor::from_vec(recv, dims)
        }
    }

    /// The sum or mean of a few host numbers over the ranks, in place
    /// (losses, sample counts and metrics for logging).
    ///
    /// ```
    /// use tamer::dist::{ProcessGroup, ReduceOp};
    /// let mut v = [1.5, 2.0];
    /// ProcessGroup::single().all_reduce_scalars(&mut v, ReduceOp::Mean).unwrap();
    /// assert_eq!(v, [1.5, 2.0]);
    /// ```
    pub fn all_reduce_scalars(&self, values: &mut [f64], op: ReduceOp) -> Result<()> {
        let world = self.world_size();
        if world == 1 {
            return Ok(());
        }
        self.agree("all_reduce_scalars", Kind::Scalars, &[values.len() as u64])?;
        self.comm.all_reduce_sum(HostBuf::F64(values))?;
        if op == ReduceOp::Mean {
            values.iter_mut().for_each(|x| *x /= world as f64);
        }
        Ok(())
    }

    /// Return once every rank has called it.
    ///
    /// ```
    /// tamer::dist::ProcessGroup::single().barrier().unwrap();
    /// ```
    pub fn barrier(&self) -> Result<()> {
        self.comm.barrier()
    }

    /// Whether the ranks agree, compared through an all-gather of each
    /// rank's `signature`. Every rank sees the same gathered values, so on
    /// a mismatch every rank returns the same error (no rank is left waiting).
    fn agree(&self, op: &'static str, kind: Kind, signature: &[u64]) -> Result<()> {
        let world = self.world_size();
        let mut mine = Vec::with_capacity(signature.len() + 2);
        mine.push(kind as u64);
        mine.push(signature.len() as u64);
        mine.extend_from_slice(signature);
        // Hash the variable-length tail, so every rank sends the same count
        // even when the ranks called different collectives.
        let mut hash = Fnv::new();
        mine.iter().for_each(|&w| hash.add(w));
        let mut send = [
            kind as u64,
            signature.first().copied().unwrap_or(0),
            signature.get(1).copied().unwrap_or(0),
            signature.get(2).copied().unwrap_or(0),
            hash.0,
        ];
        let mut all = vec![0u64; send.len() * world];
        self.comm.all_gather(HostBuf::U64(&mut send), HostBuf::U64(&mut all))?;
        let blocks: Vec<&[u64]> = all.chunks(send.len()).collect();
        let differing: Vec<usize> = (1..world).filter(|&r| blocks[r] != blocks[0]).collect();
        if differing.is_empty() {
            return Ok(());
        }
        let describe = |b: &[u64]| {
            let name = match b[0] {
                1 => "all_reduce",
                2 => "broadcast",
                3 => "all_gather",
                4 => "reduce_scatter",
                5 => "all_reduce_scalars",
                _ => "an unknown collective",
            };
            if b[0] == Kind::Scalars as u64 {
                format!("{name} of {} value(s)", b[1])
            } else {
                format!(
                    "{name} of {} tensor(s), {} f32 and {} f64 elements (layout hash {:016x})",
                    b[1], b[2], b[3], b[4]
                )
            }
        };
        let lines: Vec<String> = std::iter::once(0)
            .chain(differing)
            .map(|r| format!("rank {r}: {}", describe(blocks[r])))
            .collect();
        Err(Error::shape(
            op,
            format!(
                "the ranks disagree on what to exchange (every rank must pass tensors of the same dtypes and shapes, in the same order, to the same collective); {}",
                lines.join("; ")
            ),
        ))
    }
}

/// The world size a launcher set in the environment, with the variable
/// that gave it; None when no launcher started this process.
fn launcher_world_size() -> Result<Option<(&'static str, usize)>> {
    for var in LAUNCHER_SIZE_VARS {
        if let Ok(v) = std::env::var(var) {
            let size = v.trim().parse::<usize>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                Error::value(
                    "ProcessGroup::from_env",
                    format!("{var}={v:?} is not a world size (expected a whole number >= 1)"),
                )
            })?;
            return Ok(Some((var, size)));
        }
    }
    Ok(None)
}

/// World size one: the tensors themselves (cut from the graph), after the
/// checks a larger world would make.
fn identity(op: &'static str, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
    tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            check_tensor(op, i, t)?;
            Ok(t.detach())
        })
        .collect()
}

#[cfg(test)]
mod tests;
