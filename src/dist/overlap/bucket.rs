//! A bucket's buffer: on the host (exchanged by the communication thread
//! through the group's [`Communicator`](crate::dist::Communicator)), or on the
//! parameters' GPU (exchanged on a stream of the GPU backend's own, see
//! [`DeviceExchange`]). Either way: the gradients end to end, then one status
//! element (0, or 1 on a rank that was missing gradients; summed over the
//! ranks like the rest).

use super::OP;
use crate::dist::comm::HostBuf;
use crate::dist::flat::{read_host, write_host};
use crate::tensor::TensorId;
use crate::types::{Layout, Shape};
use crate::{DType, Device, Error, GradStore, Result, Tensor};

/// How buckets on a GPU travel: the sum over the ranks started on a stream
/// of the exchange's own, after the work queued so far on the device's
/// stream (the bucket's fill), so that the backward pass's kernels keep
/// running meanwhile; [`wait`](Self::wait) makes the device's stream wait
/// for every sum started, before anything reads them. Neither blocks the host.
pub(crate) trait DeviceExchange: Send + Sync {
    /// The device whose tensors it exchanges.
    fn device(&self) -> Device;
    /// Start replacing `bucket` (contiguous, on [`device`](Self::device))
    /// with its sum over the ranks.
    fn start_sum(&self, bucket: &Tensor) -> Result<()>;
    /// Order the device's stream after every sum started.
    fn wait(&self) -> Result<()>;
}

/// A bucket's buffer.
pub(super) enum Bucket {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// A flat tensor on the exchange's device.
    Device(Tensor),
}

impl Bucket {
    /// A bucket of `len` elements of `dtype`: on the host, or on `device`.
    pub fn zeros(dtype: DType, len: usize, device: Option<Device>) -> Result<Bucket> {
        Ok(match (device, dtype) {
            (Some(d), _) => Bucket::Device(Tensor::zeros_on([len], dtype, d)?),
            (None, DType::F32) => Bucket::F32(vec![0.0; len]),
            (None, _) => Bucket::F64(vec![0.0; len]),
        })
    }

    /// What the communication thread exchanges; None for a device bucket.
    pub fn host_buf(&mut self) -> Option<HostBuf<'_>> {
        match self {
            Bucket::F32(b) => Some(HostBuf::F32(b)),
            Bucket::F64(b) => Some(HostBuf::F64(b)),
            Bucket::Device(_) => None,
        }
    }

    fn len(&self) -> usize {
        match self {
            Bucket::F32(b) => b.len(),
            Bucket::F64(b) => b.len(),
            Bucket::Device(t) => t.numel(),
        }
    }

    /// Copy `grad`'s elements in at `offset`; false when it does not fit
    /// there (another device, or past the end).
    pub fn fill(&mut self, offset: usize, grad: &Tensor) -> Result<bool> {
        let n = grad.numel();
        if offset + n >= self.len() {
            return Ok(false); // the last element is the status
        }
        if let Bucket::Device(flat) = self {
            if grad.device() != flat.device() || grad.dtype() != flat.dtype() {
                return Ok(false);
            }
            // Queued on the device's stream, like the kernels that made `grad`.
            flat.narrow(0, offset, n)?.reshape(grad.shape().clone())?.assign(grad)?;
            return Ok(true);
        }
        // A gradient that is a strided view (rare) is read through a contiguous copy.
        let contiguous;
        let g = if grad.layout().contiguous_range().is_some() {
            grad
        } else {
            contiguous = grad.contiguous()?;
            &contiguous
        };
        let dst = offset..offset + n;
        Ok(match self {
            Bucket::F32(b) => read_host::<f32, _>(g, |src| b[dst].copy_from_slice(src)).is_some(),
            Bucket::F64(b) => read_host::<f64, _>(g, |src| b[dst].copy_from_slice(src)).is_some(),
            Bucket::Device(_) => false,
        })
    }

    /// This rank's status: 1 when it was missing gradients.
    pub fn set_status(&mut self, failed: bool) -> Result<()> {
        let v = f64::from(u8::from(failed));
        let last = self.len() - 1;
        match self {
            Bucket::F32(b) => b[last] = v as f32,
            Bucket::F64(b) => b[last] = v,
            Bucket::Device(t) => t.narrow(0, last, 1)?.assign(&Tensor::full_on([1], v, t.dtype(), t.device())?)?,
        }
        Ok(())
    }

    /// The mean: the sum divided by the world size, as the flat path
    /// divides (a division, not a multiplication by a rounded reciprocal).
    /// The status element stays a count. A world of one leaves it as it is.
    pub fn divide_by(&mut self, world: usize) -> Result<()> {
        if world == 1 {
            return Ok(());
        }
        let body = self.len() - 1;
        match self {
            Bucket::F32(b) => b[..body].iter_mut().for_each(|x| *x /= world as f32),
            Bucket::F64(b) => b[..body].iter_mut().for_each(|x| *x /= world as f64),
            Bucket::Device(t) => {
                let grads = t.narrow(0, 0, body)?;
                let divisor = Tensor::full_on(Vec::<usize>::new(), world as f64, t.dtype(), t.device())?;
                grads.assign(&grads.div(&divisor)?)?;
            }
        }
        Ok(())
    }

    /// The summed status of a host bucket: how many ranks were missing
    /// gradients. (A device bucket's is read with the others' at once:
    /// [`failed_ranks_on_device`].)
    pub fn failed_ranks(&self) -> Result<usize> {
        let last = self.len() - 1;
        let v = match self {
            Bucket::F32(b) => f64::from(b[last]),
            Bucket::F64(b) => b[last],
            Bucket::Device(_) => crate::bail!(value, OP, "a device bucket's status is read with failed_ranks_on_device"),
        };
        Ok(v.round() as usize)
    }

    /// The mean's elements of one gradient written into its tensor in
    /// `grads` (in its own storage when nothing else holds it, else a new
    /// tensor of its own replaces it in `grads`).
    pub fn write_back(&self, offset: usize, shape: &Shape, id: TensorId, grads: &mut GradStore) -> Result<()> {
        let n = shape.numel();
        if offset + n >= self.len() {
            crate::bail!(value, OP, "a gradient of {n} elements at {offset} past a bucket of {}", self.len());
        }
        let own = grads.get_by_id(id).filter(|g| g.is_sole_owner() && g.layout().contiguous_range().is_some());
        let fresh = match self {
            Bucket::Device(flat) => {
                let mean = flat.narrow(0, offset, n)?.reshape(shape.clone())?;
                if let Some(g) = own.filter(|g| g.device() == flat.device()) {
                    return g.assign(&mean);
                }
                // A copy, not a view: the bucket is refilled next step.
                let copy = mean.storage().copy_contiguous(mean.layout())?;
                Tensor::from_storage(copy, Layout::contiguous(shape.clone()))
            }
            Bucket::F32(b) => {
                let src = &b[offset..offset + n];
                if own.and_then(|g| write_host::<f32, _>(g, |dst| dst.copy_from_slice(src))).is_some() {
                    return Ok(());
                }
                Tensor::from_vec(src.to_vec(), shape.clone())?
            }
            Bucket::F64(b) => {
                let src = &b[offset..offset + n];
                if own.and_then(|g| write_host::<f64, _>(g, |dst| dst.copy_from_slice(src))).is_some() {
                    return Ok(());
                }
                Tensor::from_vec(src.to_vec(), shape.clone())?
            }
        };
        grads.insert_by_id(id, fresh);
        Ok(())
    }
}

/// The largest summed status of the device buckets among `buckets`: their
/// status elements gathered on the device and read with one copy to the
/// host (after the exchange's `wait`).
pub(super) fn failed_ranks_on_device<'a>(buckets: impl Iterator<Item = &'a Bucket>) -> Result<usize> {
    let mut statuses = Vec::new();
    for b in buckets {
        if let Bucket::Device(t) = b {
            // In one dtype, for the gather: the counts are small whole numbers.
            statuses.push(t.narrow(0, t.numel() - 1, 1)?.to_dtype(DType::F64)?);
        }
    }
    if statuses.is_empty() {
        return Ok(0);
    }
    let most = Tensor::cat(&statuses, 0)?.to_f64_vec()?.into_iter().fold(0.0, f64::max);
    Ok(most.round() as usize)
}

/// An error naming the bucket when one is missing (out, not back).
pub(super) fn not_back(b: usize) -> Error {
    Error::value(OP, format!("bucket {b} did not come back from the exchange"))
}
