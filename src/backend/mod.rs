//! Backends own the bytes and run the kernels.
//!
//! `Storage` is the device-erased storage a tensor points to. Each op family
//! declares the kernels it needs as a trait next to its forward/backward code
//! (`ops::unary::UnaryKernels`, `ops::binary::BinaryKernels`, ...); a backend
//! is any storage type implementing all of them, which `BackendStorage` states.
//! The CPU backend implements them in `cpu/`; a CUDA storage will implement the
//! same traits and become one more `Storage` variant, leaving the autodiff and
//! the public API untouched.

pub mod cpu;
pub mod simd;

use crate::ops;
use crate::tensor::{DType, Device, Layout};
use crate::Result;
pub use cpu::CpuStorage;

/// Everything a backend must provide: generic storage management plus every op
/// family's kernel trait.
pub trait BackendStorage:
    Sized
    + ops::unary::UnaryKernels
    + ops::binary::BinaryKernels
    + ops::reduce::ReduceKernels
    + ops::matmul::MatmulKernels
    + ops::index::IndexKernels
    + ops::nn::NnKernels
{
    fn dtype(&self) -> DType;
    fn device(&self) -> Device;
    /// Number of elements held (not bytes).
    fn len(&self) -> usize;
    /// Copy the elements `layout` selects into a new, contiguous storage.
    fn copy_contiguous(&self, layout: &Layout) -> Result<Self>;
    /// Convert (contiguous result) to another dtype.
    fn to_dtype(&self, layout: &Layout, dtype: DType) -> Result<Self>;
    /// Write `src` (contiguous, `dst_layout.numel()` elements) into the elements
    /// of `self` selected by `dst_layout`. Used by in-place updates and `cat`.
    fn copy_into(&mut self, dst_layout: &Layout, src: &Self, src_layout: &Layout) -> Result<()>;
}

/// The storage behind a tensor, on whichever device it lives.
#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
        }
    }
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn copy_contiguous(&self, layout: &Layout) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => Ok(Storage::Cpu(s.copy_contiguous(layout)?)),
        }
    }
    pub fn to_dtype(&self, layout: &Layout, dtype: DType) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => Ok(Storage::Cpu(s.to_dtype(layout, dtype)?)),
        }
    }
    pub fn copy_into(&mut self, dst_layout: &Layout, src: &Storage, src_layout: &Layout) -> Result<()> {
        match (self, src) {
            (Storage::Cpu(d), Storage::Cpu(s)) => d.copy_into(dst_layout, s, src_layout),
        }
    }
    pub fn as_cpu(&self) -> Option<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Some(s),
        }
    }
}
