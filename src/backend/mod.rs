//! Backends own the bytes and run the kernels.
//!
//! `Storage` is the device-erased storage a tensor points to. The kernel
//! contract, what every op family needs from a device, is in `contract/` (one
//! file per family: the kernel trait, its argument structs and validators); a
//! backend is any storage type implementing all of it, which
//! [`BackendStorage`] states. The CPU backend is `cpu/` (with its SIMD
//! kernels, private to it), the CUDA backend `cuda/` (feature `cuda`).
//!
//! The backends are listed in this file only, each once in: the `Storage`
//! enum, its `BackendRef` impl, `dispatch!` (a kernel on the operands'
//! backend: every op reaches its kernels through it) and `on_device!`
//! (storage made on a given `Device`); every method of `Storage` goes
//! through those two macros, except that the host's storage is the CPU
//! backend's (`from_vec`, `as_cpu`, `to_cpu` ...), and `Device::cuda` opens
//! a CUDA device.

pub mod caching_alloc;
pub mod contract;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::types::{DType, Device, Element, Layout};
use crate::{Error, Result};
pub use caching_alloc::MemoryStats;
use contract::binary::BinaryKernels;
use contract::index::IndexKernels;
use contract::matmul::MatmulKernels;
use contract::nn::attention::AttentionKernels;
use contract::nn::conv::ConvKernels;
use contract::nn::cross_entropy::CrossEntropyKernels;
use contract::nn::dropout::DropoutKernels;
use contract::nn::layer_norm::LayerNormKernels;
use contract::nn::pool::PoolKernels;
use contract::nn::softmax::SoftmaxKernels;
use contract::optim::OptimKernels;
use contract::reduce::ReduceKernels;
use contract::unary::UnaryKernels;
pub use cpu::CpuStorage;
/// The GPU collectives' transport, for `dist` (which names no backend).
#[cfg(feature = "nccl")]
pub use cuda::nccl;
#[cfg(feature = "cuda")]
pub use cuda::CudaStorage;
use std::borrow::Cow;

/// Everything a backend must provide: generic storage management plus every
/// op family's kernel trait (one per file of `contract/`).
pub trait BackendStorage:
    Sized
    + UnaryKernels
    + BinaryKernels
    + ReduceKernels
    + MatmulKernels
    + IndexKernels
    + SoftmaxKernels
    + LayerNormKernels
    + CrossEntropyKernels
    + ConvKernels
    + PoolKernels
    + DropoutKernels
    + AttentionKernels
    + OptimKernels
{
    fn dtype(&self) -> DType;
    fn device(&self) -> Device;
    /// Number of elements held (not bytes).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copy the elements `layout` selects into a new, contiguous storage.
    fn copy_contiguous(&self, layout: &Layout) -> Result<Self>;
    /// Convert (contiguous result) to another dtype.
    fn to_dtype(&self, layout: &Layout, dtype: DType) -> Result<Self>;
    /// Write `src` (contiguous, `dst_layout.numel()` elements) into the elements
    /// of `self` selected by `dst_layout`. Used by in-place updates and `cat`.
    fn copy_into(&mut self, dst_layout: &Layout, src: &Self, src_layout: &Layout) -> Result<()>;
    /// `len` elements of `value` (rounded to `dtype`) on `device`, one of this
    /// backend's devices.
    fn full_on(device: Device, dtype: DType, len: usize, value: f64) -> Result<Self>;
    /// `len` zeros of `dtype` on `device`, one of this backend's devices.
    fn zeros_on(device: Device, dtype: DType, len: usize) -> Result<Self>;
    /// A copy of host data on `device`, one of this backend's devices.
    fn from_host(device: Device, host: &CpuStorage) -> Result<Self>;
    /// The whole storage, copied to the host.
    fn to_host(&self) -> Result<CpuStorage>;
}

impl Device {
    /// The CUDA device `ordinal`, initialised and checked: an error if this
    /// build lacks the `cuda` feature, the machine has no driver or NVRTC, or
    /// the ordinal does not exist.
    ///
    /// ```
    /// // On a machine without a GPU this is an error, not a panic.
    /// match tamer::Device::cuda(0) {
    ///     Ok(d) => assert_eq!(d.to_string(), "cuda:0"),
    ///     Err(e) => println!("no CUDA here: {e}"),
    /// }
    /// ```
    pub fn cuda(ordinal: usize) -> crate::Result<Device> {
        #[cfg(feature = "cuda")]
        {
            crate::backend::cuda::device(ordinal)?;
            Ok(Device::Cuda(ordinal))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = ordinal;
            Err(crate::Error::device("cuda", crate::types::NO_CUDA_FEATURE))
        }
    }

    /// How many CUDA devices this machine has (those `CUDA_VISIBLE_DEVICES`
    /// leaves visible): an error when there is no driver, no NVRTC, or this
    /// build lacks the `cuda` feature.
    ///
    /// ```
    /// match tamer::Device::cuda_count() {
    ///     Ok(n) => assert!(n >= 1),
    ///     Err(e) => println!("no CUDA here: {e}"),
    /// }
    /// ```
    pub fn cuda_count() -> crate::Result<usize> {
        #[cfg(feature = "cuda")]
        {
            crate::backend::cuda::availability()
        }
        #[cfg(not(feature = "cuda"))]
        {
            Err(crate::Error::device("cuda", crate::types::NO_CUDA_FEATURE))
        }
    }

    /// Wait until every kernel queued on this device has finished, as
    /// `torch.cuda.synchronize()`: timings of GPU work read the clock after
    /// it. Kernels on the host run as they are called, so there it returns at once.
    ///
    /// ```
    /// tamer::Device::Cpu.synchronize().unwrap();
    /// ```
    pub fn synchronize(self) -> crate::Result<()> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => crate::backend::cuda::synchronize(ordinal),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(crate::Error::device("synchronize", crate::types::NO_CUDA_FEATURE)),
        }
    }
}

/// The storage behind a tensor, on whichever device it lives.
#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    #[cfg(feature = "cuda")]
    Cuda(CudaStorage),
}

/// Run a kernel on the backend storages of an op's operands.
///
/// `dispatch!(OP, [a = &*x.storage(), b = &*y.storage()] => a.binary(..)?)`
/// matches every operand against the same backend variant, binds the inner
/// storages to `a`, `b`, evaluates the body and wraps its result back into
/// that variant. With `|wrap| body` the body does the wrapping itself (for
/// kernels returning several storages). Operands on different devices are a
/// device error naming the op. `dispatch!(storage, |s| body)` runs an
/// infallible body on one storage (its dtype, its length) and returns what
/// the body returns. With `on_device!` (for storage made on a `Device`) this
/// is where the backends are listed, so adding one means adding an arm here,
/// not in every op.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch {
    ($op:expr, [$($x:ident = $e:expr),+ $(,)?], |$wrap:ident| $body:expr) => {
        match ($($e,)+) {
            ($($crate::backend::Storage::Cpu($x),)+) => {
                #[allow(unused_variables)]
                let $wrap = $crate::backend::Storage::Cpu;
                $body
            }
            #[cfg(feature = "cuda")]
            ($($crate::backend::Storage::Cuda($x),)+) => {
                #[allow(unused_variables)]
                let $wrap = $crate::backend::Storage::Cuda;
                $body
            }
            #[cfg(feature = "cuda")]
            #[allow(unreachable_patterns)]
            other => return Err($crate::backend::mixed_devices($op, &other)),
        }
    };
    ($op:expr, [$($x:ident = $e:expr),+ $(,)?] => $body:expr) => {
        $crate::dispatch!($op, [$($x = $e),+], |wrap| wrap($body))
    };
    ($storage:expr, |$x:ident| $body:expr) => {
        match $storage {
            $crate::backend::Storage::Cpu($x) => $body,
            #[cfg(feature = "cuda")]
            $crate::backend::Storage::Cuda($x) => $body,
        }
    };
}

/// What the caching allocator of `device` holds: bytes in use by live
/// tensors, their peak, bytes cached for reuse, and how many requests went to
/// the system (or the driver) against how many the cache served. The CPU's
/// pool is `backend::cpu::alloc`, a GPU's `backend::caching_alloc` in its
/// `CudaDevice`; both keep whole size-class blocks, so the figures are in
/// block bytes.
///
/// ```
/// use tamer::{DType, Device, Tensor};
/// let x = Tensor::zeros([1024], DType::F32).unwrap();
/// let stats = tamer::memory_stats(Device::Cpu).unwrap();
/// assert!(stats.bytes_in_use >= 4096); // x's buffer, and anything else alive
/// drop(x);
/// ```
pub fn memory_stats(device: Device) -> Result<MemoryStats> {
    match device {
        Device::Cpu => Ok(cpu::alloc::memory_stats()),
        #[cfg(feature = "cuda")]
        Device::Cuda(ordinal) => cuda::memory_stats(ordinal),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(Error::device("memory_stats", crate::types::NO_CUDA_FEATURE)),
    }
}

/// Give every buffer the caching allocator of `device` keeps for reuse back to
/// the system (or the driver); buffers of live tensors stay. Like PyTorch's
/// `torch.cuda.empty_cache`.
pub fn empty_cache(device: Device) -> Result<()> {
    match device {
        Device::Cpu => {
            cpu::alloc::empty_cache();
            Ok(())
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(ordinal) => cuda::device(ordinal)?.empty_cache(),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(Error::device("empty_cache", crate::types::NO_CUDA_FEATURE)),
    }
}

/// Start measuring [`MemoryStats::peak_bytes_in_use`] of `device` again from
/// the bytes in use now.
pub fn reset_peak_memory(device: Device) -> Result<()> {
    match device {
        Device::Cpu => {
            cpu::alloc::reset_peak_memory();
            Ok(())
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(ordinal) => {
            cuda::device(ordinal)?.reset_peak_memory();
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(Error::device("reset_peak_memory", crate::types::NO_CUDA_FEATURE)),
    }
}

/// The error for operands on different devices (tuples of `&Storage`).
#[doc(hidden)]
pub fn mixed_devices(op: &'static str, operands: &dyn std::fmt::Debug) -> Error {
    Error::device(
        op,
        format!("operands live on different devices ({operands:?}); expected them all on one device: move them with .to_device()"),
    )
}

/// Typed access to one backend's storage inside a `Storage`, for operands
/// that `dispatch!` does not match itself (optional ones, lists of parts).
pub trait BackendRef: Sized {
    fn from_storage(s: &Storage) -> Option<&Self>;
    fn from_storage_mut(s: &mut Storage) -> Option<&mut Self>;
}
impl BackendRef for CpuStorage {
    fn from_storage(s: &Storage) -> Option<&Self> {
        match s {
            Storage::Cpu(c) => Some(c),
            #[cfg(feature = "cuda")]
            _ => None,
        }
    }
    fn from_storage_mut(s: &mut Storage) -> Option<&mut Self> {
        match s {
            Storage::Cpu(c) => Some(c),
            #[cfg(feature = "cuda")]
            _ => None,
        }
    }
}
#[cfg(feature = "cuda")]
impl BackendRef for CudaStorage {
    fn from_storage(s: &Storage) -> Option<&Self> {
        match s {
            Storage::Cuda(c) => Some(c),
            _ => None,
        }
    }
    fn from_storage_mut(s: &mut Storage) -> Option<&mut Self> {
        match s {
            Storage::Cuda(c) => Some(c),
            _ => None,
        }
    }
}

/// An optional operand (a layer norm's weight, a convolution's bias) as the
/// backend type `S` of the other operands; a device mismatch is an error
/// naming `op`.
pub fn optional_operand<'a, S: BackendRef>(op: &'static str, operand: Option<(&'a Storage, &'a Layout)>) -> Result<Option<(&'a S, &'a Layout)>> {
    let Some((s, layout)) = operand else { return Ok(None) };
    match S::from_storage(s) {
        Some(inner) => Ok(Some((inner, layout))),
        None => Err(Error::device(
            op,
            format!("an optional operand of shape {} lives on {}, unlike the input", layout.shape(), s.device()),
        )),
    }
}

/// An optional operand of a backend's kernel as the contract's validators
/// take it: its dtype and layout.
pub fn described<'a, S: BackendStorage>(operand: Option<(&S, &'a Layout)>) -> Option<(DType, &'a Layout)> {
    operand.map(|(s, layout)| (s.dtype(), layout))
}

/// A mutable operand that `dispatch!` does not match (an optional optimizer
/// state buffer) as the backend type `S`; a device mismatch is an error.
pub fn operand_mut<'a, S: BackendRef>(op: &'static str, what: &str, s: &'a mut Storage) -> Result<&'a mut S> {
    let device = s.device();
    S::from_storage_mut(s).ok_or_else(|| Error::device(op, format!("{what} lives on {device}, unlike the other operands")))
}

/// Make a storage on `device`, with `$S` standing for the backend type of that
/// device: `on_device!("zeros", device, |S| S::zeros_on(device, dtype, len)?)`.
/// The constructors' counterpart of `dispatch!`, which picks the backend from
/// the operands: this one picks it from a [`Device`].
macro_rules! on_device {
    ($op:expr, $device:expr, |$S:ident| $body:expr) => {
        match $device {
            Device::Cpu => {
                type $S = CpuStorage;
                Storage::Cpu($body)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => {
                type $S = CudaStorage;
                Storage::Cuda($body)
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => return Err(Error::device($op, crate::types::NO_CUDA_FEATURE)),
        }
    };
}

impl Storage {
    // The host's storage is the CPU backend's.

    /// Host data, as the CPU backend's storage.
    pub fn from_vec<T: Element>(data: Vec<T>) -> Storage {
        Storage::Cpu(CpuStorage::from(T::tag(data)))
    }
    /// `values` rounded to `dtype`, on the host.
    pub fn from_f64s(values: &[f64], dtype: DType) -> Storage {
        Storage::Cpu(CpuStorage::from_f64_vec(values, dtype))
    }
    /// The CPU storage, if this is one (no copy).
    pub fn as_cpu(&self) -> Option<&CpuStorage> {
        CpuStorage::from_storage(self)
    }
    /// The CPU storage, writable, if this is one (no copy).
    pub fn as_cpu_mut(&mut self) -> Option<&mut CpuStorage> {
        CpuStorage::from_storage_mut(self)
    }
    /// This storage on the host: borrowed when it already is, else copied
    /// from the device (which waits for the device's queued work).
    pub fn to_cpu(&self) -> Result<std::borrow::Cow<'_, CpuStorage>> {
        match self.as_cpu() {
            Some(host) => Ok(std::borrow::Cow::Borrowed(host)),
            None => Ok(std::borrow::Cow::Owned(crate::dispatch!(self, |s| s.to_host())?)),
        }
    }
    /// The elements `layout` selects, copied to the host, as `T` (which must be
    /// the storage's dtype: otherwise an error naming `op`).
    pub fn to_vec<T: Element>(&self, op: &'static str, layout: &Layout) -> Result<Vec<T>> {
        let (host, layout) = self.selected_on_host(layout)?;
        host.typed::<T>(op, &layout)
    }
    /// The elements `layout` selects, copied to the host and converted to f64.
    pub fn to_f64_vec(&self, layout: &Layout) -> Result<Vec<f64>> {
        let (host, layout) = self.selected_on_host(layout)?;
        Ok(host.to_f64_vec(&layout))
    }
    /// The host storage that holds the elements `layout` selects, and their
    /// layout there. A device storage of which the layout selects only part
    /// (a row of a large buffer, one element of a bucket) is first compacted
    /// on the device, so that only those elements cross to the host, not the
    /// whole buffer.
    fn selected_on_host<'a>(&'a self, layout: &'a Layout) -> Result<(Cow<'a, CpuStorage>, Cow<'a, Layout>)> {
        if self.as_cpu().is_none() && layout.numel() < self.len() {
            let compact = self.copy_contiguous(layout)?;
            let host = crate::dispatch!(&compact, |s| s.to_host())?;
            return Ok((Cow::Owned(host), Cow::Owned(Layout::contiguous(layout.shape().clone()))));
        }
        Ok((self.to_cpu()?, Cow::Borrowed(layout)))
    }

    // Everything else goes through `dispatch!` (this storage's backend) or
    // `on_device!` (the backend of a device).

    pub fn dtype(&self) -> DType {
        crate::dispatch!(self, |s| s.dtype())
    }
    pub fn device(&self) -> Device {
        crate::dispatch!(self, |s| s.device())
    }
    pub fn len(&self) -> usize {
        crate::dispatch!(self, |s| s.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn copy_contiguous(&self, layout: &Layout) -> Result<Storage> {
        Ok(crate::dispatch!("copy_contiguous", [s = self] => s.copy_contiguous(layout)?))
    }
    pub fn to_dtype(&self, layout: &Layout, dtype: DType) -> Result<Storage> {
        Ok(crate::dispatch!("to_dtype", [s = self] => s.to_dtype(layout, dtype)?))
    }
    pub fn copy_into(&mut self, dst_layout: &Layout, src: &Storage, src_layout: &Layout) -> Result<()> {
        crate::dispatch!("copy_into", [d = self, s = src], |_wrap| d.copy_into(dst_layout, s, src_layout))
    }
    /// A copy of this storage on `device` (the elements of the whole storage,
    /// so any layout over it stays valid).
    pub fn to_device(&self, device: Device) -> Result<Storage> {
        if self.device() == device {
            return self.copy_contiguous(&Layout::contiguous([self.len()]));
        }
        let host = self.to_cpu()?;
        Ok(on_device!("to_device", device, |S| S::from_host(device, &host)?))
    }
    /// `len` elements of `value` (rounded to `dtype`) on `device`; on a GPU by
    /// a fill kernel, with no host buffer.
    pub fn full_on(device: Device, dtype: DType, len: usize, value: f64) -> Result<Storage> {
        Ok(on_device!("full", device, |S| S::full_on(device, dtype, len, value)?))
    }
    /// Zeros of `dtype` on `device`.
    pub fn zeros_on(device: Device, dtype: DType, len: usize) -> Result<Storage> {
        Ok(on_device!("zeros", device, |S| S::zeros_on(device, dtype, len)?))
    }
    /// Dropout's scaled keep mask for `n` elements of `dtype` on `device`,
    /// from that device's generator
    /// ([`DropoutKernels::dropout_mask`]).
    pub fn dropout_mask_on(device: Device, dtype: DType, n: usize, p: f64, rng: &mut dyn rand::RngCore) -> Result<Storage> {
        Ok(on_device!("dropout", device, |S| S::dropout_mask(device, dtype, n, p, rng)?))
    }
}
