//! The CUDA backend: device buffers from a caching allocator, and kernels of
//! our own (cuda/*.cu) compiled by NVRTC at first use.
//!
//! `CudaStorage` implements the same kernel traits as `CpuStorage` (the
//! contract in `backend/contract/`), one file per op family mirroring
//! `backend/cpu/` (`unary.rs` implements `contract::unary::UnaryKernels`,
//! `nn/layer_norm.rs` `contract::nn::layer_norm::LayerNormKernels`, ...).
//! Each launches the kernels of the matching `cuda/<family>.cu`. Only built with the `cuda` feature; at run time a
//! machine without a driver gets an error from [`Device::cuda`](crate::Device::cuda),
//! never a panic.

pub mod binary;
pub mod device;
pub mod index;
pub mod kernels;
pub mod layout;
pub mod matmul;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod nn;
pub mod optim;
pub mod reduce;
pub mod unary;

pub use device::{availability, device, elementwise_config, Arg, CudaDevice};
pub use layout::StridedLayout;

use crate::backend::cpu::CpuStorage;
use crate::backend::BackendStorage;
use crate::types::{DType, Device, Layout};
use crate::{Error, Result};
use device::driver_error;
use std::sync::Arc;

/// A block of device memory from the device's caching allocator, returned to
/// it on drop.
struct DeviceBuffer {
    ptr: u64,
    class: usize,
    dev: Arc<CudaDevice>,
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        self.dev.release_bytes(self.ptr, self.class);
    }
}

/// `len` elements of `dtype` on a CUDA device.
pub struct CudaStorage {
    buf: DeviceBuffer,
    len: usize,
    dtype: DType,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage(cuda:{}, {} x {})", self.buf.dev.ordinal(), self.len, self.dtype)
    }
}

/// The kernel name for `base` at `dtype`: `exp_f32`, `copy_b16` ...
pub fn kernel_name(base: &str, dtype: DType) -> String {
    format!("{base}_{}", dtype.name())
}

/// Kernels that only move elements are chosen by element width.
fn width_suffix(dtype: DType) -> &'static str {
    match dtype.size_in_bytes() {
        2 => "b16",
        4 => "b32",
        _ => "b64",
    }
}

impl CudaStorage {
    /// Uninitialised storage for `len` elements (every kernel that allocates
    /// its output writes every element).
    pub fn alloc(dev: &Arc<CudaDevice>, dtype: DType, len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(dtype.size_in_bytes())
            .ok_or_else(|| Error::shape("cuda alloc", format!("{len} elements of {dtype} overflow")))?;
        let (ptr, class) = dev.alloc_bytes(bytes)?;
        Ok(CudaStorage {
            buf: DeviceBuffer { ptr, class, dev: dev.clone() },
            len,
            dtype,
        })
    }

    /// Zero-filled storage (all-zero bits are 0 in every dtype).
    pub fn zeros(dev: &Arc<CudaDevice>, dtype: DType, len: usize) -> Result<Self> {
        let s = Self::alloc(dev, dtype, len)?;
        dev.bind()?;
        // SAFETY: the range lies inside the freshly allocated block.
        unsafe { cudarc::driver::result::memset_d8_async(s.ptr(), 0, len * dtype.size_in_bytes(), dev.stream().cu_stream()) }
            .map_err(|e| driver_error("cuda zeros", e))?;
        Ok(s)
    }

    /// Every element equal to `value` (converted to the dtype on the device).
    pub fn full(dev: &Arc<CudaDevice>, dtype: DType, len: usize, value: f64) -> Result<Self> {
        let s = Self::alloc(dev, dtype, len)?;
        if len > 0 {
            dev.launch(
                &kernels::COPY,
                &kernel_name("fill", dtype),
                elementwise_config(len),
                &[Arg::Ptr(s.ptr()), Arg::I64(len as i64), Arg::F64(value)],
            )?;
        }
        Ok(s)
    }

    /// A copy of a host storage on `dev`.
    pub fn from_cpu(dev: &Arc<CudaDevice>, cpu: &CpuStorage) -> Result<Self> {
        let len = BackendStorage::len(cpu);
        let s = Self::alloc(dev, cpu.dtype(), len)?;
        dev.bind()?;
        let stream = dev.stream().cu_stream();
        // SAFETY: the destination block holds `len` elements of this dtype; the
        // stream is synchronised before the host slice can go away.
        let r = unsafe {
            use cudarc::driver::result::memcpy_htod_async as htod;
            match cpu {
                CpuStorage::F16(v) => htod(s.ptr(), v, stream),
                CpuStorage::BF16(v) => htod(s.ptr(), v, stream),
                CpuStorage::F32(v) => htod(s.ptr(), v, stream),
                CpuStorage::F64(v) => htod(s.ptr(), v, stream),
                CpuStorage::I64(v) => htod(s.ptr(), v, stream),
            }
        };
        r.map_err(|e| driver_error("to_device", e))?;
        dev.synchronize()?;
        Ok(s)
    }

    /// The whole storage copied to the host (waits for queued kernels).
    pub fn to_cpu(&self) -> Result<CpuStorage> {
        let dev = &self.buf.dev;
        dev.bind()?;
        let stream = dev.stream().cu_stream();
        let mut out = CpuStorage::zeros(self.dtype, self.len);
        // SAFETY: the host Vec holds `len` elements; synchronised before use.
        let r = unsafe {
            use cudarc::driver::result::memcpy_dtoh_async as dtoh;
            match &mut out {
                CpuStorage::F16(v) => dtoh(v, self.ptr(), stream),
                CpuStorage::BF16(v) => dtoh(v, self.ptr(), stream),
                CpuStorage::F32(v) => dtoh(v, self.ptr(), stream),
                CpuStorage::F64(v) => dtoh(v, self.ptr(), stream),
                CpuStorage::I64(v) => dtoh(v, self.ptr(), stream),
            }
        };
        r.map_err(|e| driver_error("to_cpu", e))?;
        dev.synchronize()?;
        Ok(out)
    }

    /// Device address of element 0.
    pub fn ptr(&self) -> u64 {
        self.buf.ptr
    }
    /// Device address of element `offset`.
    pub fn ptr_at(&self, offset: usize) -> u64 {
        self.buf.ptr + (offset * self.dtype.size_in_bytes()) as u64
    }
    pub fn cuda_device(&self) -> &Arc<CudaDevice> {
        &self.buf.dev
    }

    /// Error unless `other` lives on the same device.
    pub fn check_same_device(&self, op: &'static str, other: &CudaStorage) -> Result<()> {
        if self.buf.dev.ordinal() != other.buf.dev.ordinal() {
            return Err(Error::device(
                op,
                format!(
                    "operands are on cuda:{} and cuda:{}; expected the same device",
                    self.buf.dev.ordinal(),
                    other.buf.dev.ordinal()
                ),
            ));
        }
        Ok(())
    }

    /// `(pointer, layout)` arguments for a kernel that reads a possibly strided view.
    pub fn strided_args(&self, op: &'static str, layout: &Layout) -> Result<[Arg; 2]> {
        Ok([Arg::Ptr(self.ptr()), Arg::Layout(StridedLayout::new(op, layout)?)])
    }
}

/// The CUDA device behind `device`; the CPU is an error naming `op`.
fn cuda_device_of(op: &'static str, device: Device) -> Result<Arc<CudaDevice>> {
    match device {
        Device::Cuda(ordinal) => self::device(ordinal),
        Device::Cpu => Err(Error::device(op, "the CUDA backend was asked for storage on the CPU")),
    }
}

impl BackendStorage for CudaStorage {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn full_on(device: Device, dtype: DType, len: usize, value: f64) -> Result<Self> {
        Self::full(&cuda_device_of("full", device)?, dtype, len, value)
    }
    fn zeros_on(device: Device, dtype: DType, len: usize) -> Result<Self> {
        Self::zeros(&cuda_device_of("zeros", device)?, dtype, len)
    }
    fn from_host(device: Device, host: &CpuStorage) -> Result<Self> {
        Self::from_cpu(&cuda_device_of("to_device", device)?, host)
    }
    fn to_host(&self) -> Result<CpuStorage> {
        self.to_cpu()
    }
    fn device(&self) -> Device {
        Device::Cuda(self.buf.dev.ordinal())
    }
    fn len(&self) -> usize {
        self.len
    }
    fn copy_contiguous(&self, layout: &Layout) -> Result<Self> {
        let dev = self.cuda_device();
        let n = layout.numel();
        let out = Self::alloc(dev, self.dtype, n)?;
        if n == 0 {
            return Ok(out);
        }
        if let Some(r) = layout.contiguous_range() {
            dev.bind()?;
            // SAFETY: both ranges lie inside their blocks; same stream, so ordered.
            unsafe { cudarc::driver::result::memcpy_dtod_async(out.ptr(), self.ptr_at(r.start), n * self.dtype.size_in_bytes(), dev.stream().cu_stream()) }
                .map_err(|e| driver_error("copy_contiguous", e))?;
            return Ok(out);
        }
        let [src, sl] = self.strided_args("copy_contiguous", layout)?;
        let name = format!("copy_strided_{}", width_suffix(self.dtype));
        dev.launch(
            &kernels::COPY,
            &name,
            elementwise_config(n),
            &[src, sl, Arg::Ptr(out.ptr()), Arg::I64(n as i64)],
        )?;
        Ok(out)
    }
    fn to_dtype(&self, layout: &Layout, dtype: DType) -> Result<Self> {
        if dtype == self.dtype {
            return self.copy_contiguous(layout);
        }
        let dev = self.cuda_device();
        let n = layout.numel();
        let out = Self::alloc(dev, dtype, n)?;
        if n > 0 {
            let [src, sl] = self.strided_args("to_dtype", layout)?;
            let name = format!("cast_{}_{}", self.dtype.name(), dtype.name());
            dev.launch(
                &kernels::COPY,
                &name,
                elementwise_config(n),
                &[src, sl, Arg::Ptr(out.ptr()), Arg::I64(n as i64)],
            )?;
        }
        Ok(out)
    }
    fn copy_into(&mut self, dst_layout: &Layout, src: &Self, src_layout: &Layout) -> Result<()> {
        if dst_layout.numel() != src_layout.numel() {
            return Err(Error::shape(
                "copy_into",
                format!(
                    "destination {} and source {} hold different numbers of elements",
                    dst_layout.shape(),
                    src_layout.shape()
                ),
            ));
        }
        if self.dtype != src.dtype {
            return Err(Error::dtype("copy_into", format!("destination is {} but source is {}", self.dtype, src.dtype)));
        }
        self.check_same_device("copy_into", src)?;
        let n = dst_layout.numel();
        if n == 0 {
            return Ok(());
        }
        let dev = self.cuda_device().clone();
        let [d, dl] = self.strided_args("copy_into", dst_layout)?;
        let [s, sl] = src.strided_args("copy_into", src_layout)?;
        let name = format!("copy_into_{}", width_suffix(self.dtype));
        dev.launch(&kernels::COPY, &name, elementwise_config(n), &[d, dl, s, sl, Arg::I64(n as i64)])
    }
}

/// Whether CUDA tensors can be made here (driver, NVRTC and a device).
pub fn is_available() -> bool {
    availability().is_ok()
}

/// The caching allocator's figures for device `ordinal`.
pub fn memory_stats(ordinal: usize) -> Result<crate::backend::caching_alloc::MemoryStats> {
    Ok(device(ordinal)?.memory_stats())
}

/// Wait for every queued kernel of device `ordinal`.
pub fn synchronize(ordinal: usize) -> Result<()> {
    device(ordinal)?.synchronize()
}
