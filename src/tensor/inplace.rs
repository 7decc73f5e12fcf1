//! In-place updates, for optimizers and initialisers. They bypass autodiff:
//! call them on variables between steps, never inside a forward pass.

use super::Tensor;
use crate::backend::cpu::{gather, CpuElem};
use crate::backend::Storage;
use crate::{Error, Result};

impl Tensor {
    /// Overwrite this tensor's elements with `src`'s (same shape and dtype).
    /// Every view sharing the storage sees the change.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if self.shape() != src.shape() {
            return Err(Error::shape(
                "assign",
                format!("destination shape {} differs from source shape {}", self.shape(), src.shape()),
            ));
        }
        self.same_dtype_device("assign", src)?;
        if self.same_storage(src) {
            let copy = src.storage().copy_contiguous(src.layout())?;
            let layout = crate::tensor::Layout::contiguous(src.shape().clone());
            return self.storage_mut().copy_into(self.layout(), &copy, &layout);
        }
        let src_storage = src.storage();
        self.storage_mut().copy_into(self.layout(), &src_storage, src.layout())
    }
}

impl Tensor {
    /// Run `f` on the elements as one mutable slice of `T` in row-major order,
    /// bypassing autodiff: the fused optimizer loops write parameters through it.
    /// A contiguous tensor is updated where it lies; a strided one is gathered
    /// into a buffer and written back (for a layout whose elements overlap, a
    /// broadcast, the last write wins). `T` must be the tensor's dtype.
    pub(crate) fn update_cpu_slice<T: CpuElem, R>(&self, op: &'static str, f: impl FnOnce(&mut [T]) -> R) -> Result<R> {
        let (dtype, shape) = (self.dtype(), self.shape().clone());
        let layout = self.layout().clone();
        let mut guard = self.storage_mut();
        match &mut *guard {
            Storage::Cpu(cpu) => {
                let data = T::slice_mut(cpu)
                    .ok_or_else(|| Error::dtype(op, format!("tensor of shape {shape} has dtype {dtype}, the update expected {}", T::DTYPE)))?;
                match layout.contiguous_range() {
                    Some(r) => Ok(f(&mut data[r])),
                    None => {
                        let mut buf = gather(data, &layout);
                        let out = f(&mut buf);
                        for (o, v) in layout.offsets().zip(buf) {
                            data[o] = v;
                        }
                        Ok(out)
                    }
                }
            }
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => Err(Error::device(
                op,
                format!("tensor of shape {shape} is on {}: this host-side update needs a CPU tensor", self.device()),
            )),
        }
    }

    /// Run `f` on the elements as a contiguous run of a CUDA storage, bypassing
    /// autodiff: `f(storage, offset of the first element)`, `numel()` elements
    /// from there. The CUDA optimizer kernels write parameters through it. A
    /// strided tensor is copied to a contiguous buffer on the device, updated
    /// there and written back through its layout (the last write wins where a
    /// broadcast layout overlaps, as on the CPU).
    #[cfg(feature = "cuda")]
    pub(crate) fn update_cuda<R>(&self, op: &'static str, f: impl FnOnce(&mut crate::backend::CudaStorage, usize) -> Result<R>) -> Result<R> {
        use crate::backend::BackendStorage;
        let layout = self.layout().clone();
        let mut guard = self.storage_mut();
        let cuda = match &mut *guard {
            Storage::Cuda(c) => c,
            Storage::Cpu(_) => {
                return Err(Error::device(
                    op,
                    format!("tensor of shape {} is on the CPU: this device-side update needs a CUDA tensor", layout.shape()),
                ))
            }
        };
        match layout.contiguous_range() {
            Some(r) => f(cuda, r.start),
            None => {
                let mut tmp = cuda.copy_contiguous(&layout)?;
                let out = f(&mut tmp, 0)?;
                cuda.copy_into(&layout, &tmp, &crate::tensor::Layout::contiguous(layout.shape().clone()))?;
                Ok(out)
            }
        }
    }
}
