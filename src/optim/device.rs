//! Where an optimizer's work runs: on the parameter's device.
//!
//! Every function here takes tensors and state buffers wherever they live and
//! sends the work to the matching implementation: the threaded CPU loops of
//! `kernels.rs` for CPU parameters, the kernels of `cuda/optim.cu` (launched by
//! `backend/cuda/optim.rs`) for CUDA parameters. Both run the same formulas on
//! the same dtype-rounded scalars.
//!
//! Optimizer state is a [`Storage`]: a state buffer lives on its parameter's
//! device, created there at the first step ([`zeros_state`]) and moved along
//! when the parameter moves ([`follow`]); `state_dict` copies it to the host
//! and `load_state_dict` copies it back to the parameter's device (`mod.rs`).

use super::kernels::{adam_update, axpy as cpu_axpy, sgd_update, state_slice, sum_squares as cpu_sum_squares, with_grad_slice, AdamCoeffs, SgdCoeffs};
use crate::backend::cpu::CpuElem;
use crate::backend::Storage;
use crate::tensor::Float;
use crate::{Device, Error, Result, Tensor};

/// A zero state buffer for parameter `t`: its dtype, its element count, its device.
pub(crate) fn zeros_state(t: &Tensor) -> Result<Storage> {
    Storage::zeros_on(t.device(), t.dtype(), t.numel())
}

/// Move a state buffer to `device` if it is elsewhere: the parameter was moved
/// (`Module::to_device`) after the optimizer had taken steps.
pub(crate) fn follow(buf: &mut Storage, device: Device) -> Result<()> {
    if buf.device() != device {
        *buf = buf.to_device(device)?;
    }
    Ok(())
}

/// The gradient must be where its parameter is.
fn check_grad_device(op: &'static str, name: &str, t: &Tensor, g: &Tensor) -> Result<()> {
    if g.device() != t.device() {
        return Err(Error::device(
            op,
            format!(
                "parameter '{name}' is on {} but its gradient is on {}; expected the same device",
                t.device(),
                g.device()
            ),
        ));
    }
    Ok(())
}

/// One Adam/AdamW update of parameter `t` (named `name` in errors) with
/// gradient `g` and the state `m`, `v` (and `vmax` with AMSGrad), all on `t`'s device.
#[allow(clippy::too_many_arguments)]
pub(crate) fn adam_step<T: Float + CpuElem>(
    op: &'static str,
    name: &str,
    t: &Tensor,
    g: &Tensor,
    m: &mut Storage,
    v: &mut Storage,
    vmax: Option<&mut Storage>,
    c: &AdamCoeffs<T>,
) -> Result<()> {
    check_grad_device(op, name, t, g)?;
    match t.device() {
        Device::Cpu => {
            let m = state_slice::<T>(op, name, m)?;
            let v = state_slice::<T>(op, name, v)?;
            let vmax: &mut [T] = match vmax {
                Some(b) => state_slice::<T>(op, name, b)?,
                None => &mut [],
            };
            with_grad_slice::<T, _>(op, g, |g| t.update_cpu_slice::<T, _>(op, |p| adam_update(p, g, m, v, vmax, c)))?
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => {
            let (m, v) = (cuda::state(op, name, m)?, cuda::state(op, name, v)?);
            let vmax = vmax.map(|b| cuda::state(op, name, b)).transpose()?;
            let n = t.numel();
            cuda::with_grad(op, g, |gs, g_off| {
                t.update_cuda(op, |p, p_off| crate::backend::cuda::optim::adam_step(p, p_off, gs, g_off, m, v, vmax, n, c))
            })
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(Error::device(op, crate::tensor::NO_CUDA_FEATURE)),
    }
}

/// One SGD update of `t` with gradient `g`; `buf` is the momentum buffer,
/// required when `c.momentum` is set.
pub(crate) fn sgd_step<T: Float + CpuElem>(op: &'static str, name: &str, t: &Tensor, g: &Tensor, buf: Option<&mut Storage>, c: &SgdCoeffs<T>) -> Result<()> {
    check_grad_device(op, name, t, g)?;
    if c.momentum.is_some() && buf.is_none() {
        return Err(Error::value(op, format!("parameter '{name}': momentum is on but there is no momentum buffer")));
    }
    match t.device() {
        Device::Cpu => {
            let buf: &mut [T] = match buf {
                Some(b) => state_slice::<T>(op, name, b)?,
                None => &mut [],
            };
            with_grad_slice::<T, _>(op, g, |g| t.update_cpu_slice::<T, _>(op, |p| sgd_update(p, g, buf, c)))?
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => {
            let buf = buf.map(|b| cuda::state(op, name, b)).transpose()?;
            let n = t.numel();
            cuda::with_grad(op, g, |gs, g_off| {
                t.update_cuda(op, |p, p_off| crate::backend::cuda::optim::sgd_step(p, p_off, gs, g_off, buf, n, c))
            })
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(Error::device(op, crate::tensor::NO_CUDA_FEATURE)),
    }
}

/// `acc += scale · g` in place (gradient accumulation); same shape, dtype and device.
pub(crate) fn axpy<T: Float + CpuElem>(op: &'static str, acc: &Tensor, g: &Tensor, scale: T) -> Result<()> {
    if acc.device() != g.device() {
        return Err(Error::device(
            op,
            format!(
                "the accumulated gradient is on {} but the new one is on {}; expected the same device",
                acc.device(),
                g.device()
            ),
        ));
    }
    match acc.device() {
        Device::Cpu => with_grad_slice::<T, _>(op, g, |g| acc.update_cpu_slice::<T, _>(op, |a| cpu_axpy(a, g, scale)))?,
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => {
            let n = acc.numel();
            cuda::with_grad(op, g, |gs, g_off| {
                acc.update_cuda(op, |a, a_off| crate::backend::cuda::optim::axpy(a, a_off, gs, g_off, n, scale))
            })
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(Error::device(op, crate::tensor::NO_CUDA_FEATURE)),
    }
}

/// `g · s` as a new contiguous tensor with no history, on `g`'s device
/// (`Tensor::scale`'s values: `s·x + 0` in the gradient's dtype).
pub(crate) fn scaled(op: &'static str, g: &Tensor, s: f64) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if g.device().is_cuda() {
        use crate::backend::cuda::optim::scaled_copy;
        let out = match g.dtype() {
            crate::DType::F32 => cuda::with_grad(op, g, |gs, off| scaled_copy::<f32>(op, gs, off, g.numel(), Float::from_f64(s)))?,
            crate::DType::F64 => cuda::with_grad(op, g, |gs, off| scaled_copy::<f64>(op, gs, off, g.numel(), Float::from_f64(s)))?,
            _ => return Ok(g.scale(s)?.detach()),
        };
        let layout = crate::tensor::Layout::contiguous(g.shape().clone());
        return Ok(Tensor::from_storage(Storage::Cuda(out), layout));
    }
    let _ = op;
    Ok(g.scale(s)?.detach())
}

/// `Σ x²` of each tensor, in f64, in order. CPU tensors are summed by the
/// threaded host loop; the CUDA tensors of each device are reduced on the
/// device by the deterministic two-pass kernel and come back as one scalar
/// per tensor, in one copy. Adding the returned values in order (on the
/// host, in f64) gives the squared global norm.
pub(crate) fn sum_squares(op: &'static str, tensors: &[Tensor]) -> Result<Vec<f64>> {
    let mut out = vec![0.0; tensors.len()];
    #[cfg(feature = "cuda")]
    let mut on_gpu: Vec<(Device, Vec<usize>)> = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        match t.device() {
            Device::Cpu => out[i] = cpu_sum_squares(op, t)?,
            #[cfg(feature = "cuda")]
            d @ Device::Cuda(_) => match on_gpu.iter_mut().find(|(dev, _)| *dev == d) {
                Some((_, ids)) => ids.push(i),
                None => on_gpu.push((d, vec![i])),
            },
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => return Err(Error::device(op, crate::tensor::NO_CUDA_FEATURE)),
        }
    }
    #[cfg(feature = "cuda")]
    for (_, ids) in on_gpu {
        let sums = cuda::sum_squares(op, ids.iter().map(|&i| &tensors[i]))?;
        for (i, s) in ids.into_iter().zip(sums) {
            out[i] = s;
        }
    }
    Ok(out)
}

/// The CUDA halves of the functions above.
#[cfg(feature = "cuda")]
mod cuda {
    use crate::backend::cuda::CudaStorage;
    use crate::backend::Storage;
    use crate::{Error, Result, Tensor};

    /// A state buffer as device storage (it lives on the parameter's device,
    /// see [`super::follow`]).
    pub fn state<'a>(op: &'static str, name: &str, buf: &'a mut Storage) -> Result<&'a mut CudaStorage> {
        match buf {
            Storage::Cuda(c) => Ok(c),
            other => Err(Error::device(
                op,
                format!("state of parameter '{name}' is on {} but the parameter is on a CUDA device", other.device()),
            )),
        }
    }

    /// `g` as a contiguous run of a device storage: `f(storage, offset of the first element)`.
    /// A strided gradient is copied to a contiguous buffer on the device first.
    pub fn with_grad<R>(op: &'static str, g: &Tensor, f: impl FnOnce(&CudaStorage, usize) -> Result<R>) -> Result<R> {
        let g = match g.layout().contiguous_range() {
            Some(_) => g.clone(),
            None => super::super::owned_copy(g)?,
        };
        let start = g.layout().contiguous_range().map_or(0, |r| r.start);
        let storage = g.storage();
        match &*storage {
            Storage::Cuda(c) => f(c, start),
            other => Err(Error::device(
                op,
                format!("gradient of shape {} is on {}, expected a CUDA device", g.shape(), other.device()),
            )),
        }
    }

    /// `Σ x²` of tensors that all live on one CUDA device (see
    /// `backend::cuda::optim::sum_squares`): one value per tensor.
    pub fn sum_squares<'a>(op: &'static str, tensors: impl Iterator<Item = &'a Tensor>) -> Result<Vec<f64>> {
        let owned: Vec<Tensor> = tensors
            .map(|t| match t.layout().contiguous_range() {
                Some(_) => Ok(t.clone()),
                None => super::super::owned_copy(t),
            })
            .collect::<Result<_>>()?;
        let guards: Vec<_> = owned.iter().map(Tensor::storage).collect();
        let mut runs = Vec::with_capacity(owned.len());
        for (t, s) in owned.iter().zip(&guards) {
            let Storage::Cuda(c) = &**s else {
                return Err(Error::device(
                    op,
                    format!("gradient of shape {} is on {}, expected a CUDA device", t.shape(), t.device()),
                ));
            };
            let start = t.layout().contiguous_range().map_or(0, |r| r.start);
            runs.push((c, start, t.numel()));
        }
        crate::backend::cuda::optim::sum_squares(op, &runs)
    }
}
