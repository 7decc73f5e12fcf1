//! Moving tensors between devices.

use super::Tensor;
use crate::autograd::BackwardOp;
use crate::profile::{self, Cost};
use crate::types::{Device, Layout};
use crate::Result;

impl Tensor {
    /// This tensor on `device`: the same tensor when it is already there, else
    /// a contiguous copy. Differentiable: the gradient flows back to the
    /// source device, so a CPU parameter used on a GPU still gets its gradient.
    ///
    /// ```
    /// use tamer::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
    /// assert!(x.to_device(Device::Cpu).unwrap().same_storage(&x));
    /// // Without a GPU (or without the `cuda` feature) asking for one is an error.
    /// if let Err(e) = x.to_device(Device::Cuda(0)) {
    ///     assert!(e.to_string().contains("cuda"), "{e}");
    /// }
    /// ```
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self.clone());
        }
        let _op = profile::op("to_device", || Cost::copy(self.dtype(), 2 * self.numel()))?;
        let contiguous = self.storage().copy_contiguous(self.layout())?;
        let moved = contiguous.to_device(device)?;
        Ok(Tensor::from_op(
            moved,
            Layout::contiguous(self.shape().clone()),
            vec![self.clone()],
            ToDeviceBackward { source: self.device() },
        ))
    }

    /// Shorthand for `to_device(Device::Cpu)`.
    pub fn to_cpu(&self) -> Result<Tensor> {
        self.to_device(Device::Cpu)
    }
}

struct ToDeviceBackward {
    source: Device,
}

impl BackwardOp for ToDeviceBackward {
    fn name(&self) -> &'static str {
        "to_device"
    }
    fn backward(&self, _inputs: &[Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad.to_device(self.source)?)])
    }
}
