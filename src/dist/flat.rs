//! Collectives that write into the tensors' own storage, through host
//! buffers the caller keeps between calls: a training step that averages its
//! gradients this way allocates nothing once the buffers have grown to the
//! model's size (the first step), where [`ProcessGroup::all_reduce`] makes a
//! packed copy and new result tensors every time. Also the flat-buffer
//! collectives ZeRO-1 is built on ([`ProcessGroup::reduce_scatter_host`],
//! [`ProcessGroup::all_gather_host`]).

use super::bucket::{check_tensor, tensor_signature};
use super::comm::HostBuf;
use super::{bucket_ranges, Kind, ProcessGroup, ReduceOp};
use crate::types::Element;
use crate::{Error, Result, Tensor};
use std::ops::DivAssign;

/// Host buffers, one per element type, that in-place collectives pack
/// tensors into. Keep one alive across training steps: its capacity grows
/// to the largest exchange once and is reused after.
///
/// ```
/// use tamer::dist::{FlatBuffers, ProcessGroup, ReduceOp};
/// use tamer::Tensor;
/// let mut buffers = FlatBuffers::default();
/// let g = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
/// ProcessGroup::single().all_reduce_in_place(&[g.clone()], ReduceOp::Mean, &mut buffers).unwrap();
/// assert_eq!(g.to_vec::<f32>().unwrap(), [1.0, 2.0]);
/// ```
#[derive(Debug, Default)]
pub struct FlatBuffers {
    f32: Vec<f32>,
    f64: Vec<f64>,
}

impl FlatBuffers {
    /// Bytes of host memory the buffers hold (their capacity).
    ///
    /// ```
    /// assert_eq!(tamer::dist::FlatBuffers::default().capacity_bytes(), 0);
    /// ```
    pub fn capacity_bytes(&self) -> usize {
        self.f32.capacity() * 4 + self.f64.capacity() * 8
    }
}

/// The float types the collectives move, with their host buffer.
pub(crate) trait Wire: Element + Default + DivAssign {
    /// `data` as a buffer a backend exchanges.
    fn host_buf(data: &mut [Self]) -> HostBuf<'_>;
    /// This type's buffer of `buffers`.
    fn buffer(buffers: &mut FlatBuffers) -> &mut Vec<Self>;
}

impl Wire for f32 {
    fn host_buf(data: &mut [f32]) -> HostBuf<'_> {
        HostBuf::F32(data)
    }
    fn buffer(buffers: &mut FlatBuffers) -> &mut Vec<f32> {
        &mut buffers.f32
    }
}

impl Wire for f64 {
    fn host_buf(data: &mut [f64]) -> HostBuf<'_> {
        HostBuf::F64(data)
    }
    fn buffer(buffers: &mut FlatBuffers) -> &mut Vec<f64> {
        &mut buffers.f64
    }
}

/// `f` on the elements of `t`, a CPU tensor of `T` with a contiguous layout
/// (no copy); None for any other tensor.
pub(crate) fn read_host<T: Element, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Option<R> {
    let range = t.layout().contiguous_range()?;
    let storage = t.storage();
    let data = T::downcast(storage.as_cpu()?.elements())?;
    Some(f(data.get(range)?))
}

/// `f` on the elements of `t`, a CPU tensor of `T` with a contiguous layout,
/// writable in place (every handle and view of the storage sees the writes);
/// None for any other tensor. Bypasses autodiff: for gradients and
/// parameters between steps.
pub(crate) fn write_host<T: Element, R>(t: &Tensor, f: impl FnOnce(&mut [T]) -> R) -> Option<R> {
    let range = t.layout().contiguous_range()?;
    let mut storage = t.storage_mut();
    let cpu = storage.as_cpu_mut()?;
    let data = T::downcast_mut(cpu.elements_mut())?;
    Some(f(data.get_mut(range)?))
}

/// An error unless every tensor can be written in place: CPU, f32 or f64,
/// contiguous, and no two sharing storage (which would be reduced twice).
fn check_in_place(op: &'static str, tensors: &[Tensor]) -> Result<()> {
    for (i, t) in tensors.iter().enumerate() {
        check_tensor(op, i, t)?;
        if t.layout().contiguous_range().is_none() {
            return Err(Error::shape(
                op,
                format!(
                    "tensor {i} (shape {}) is not contiguous; in-place collectives need contiguous tensors",
                    t.shape()
                ),
            ));
        }
        if let Some(j) = tensors[..i].iter().position(|u| u.same_storage(t)) {
            return Err(Error::value(
                op,
                format!("tensors {j} and {i} share storage; each would be reduced twice (pass copies of their own)"),
            ));
        }
    }
    Ok(())
}

impl ProcessGroup {
    /// The sum or mean over the ranks of each tensor, written into the
    /// tensors themselves: they are packed into `buffers`, exchanged in
    /// buckets of [`bucket_elems`](Self::bucket_elems) and unpacked into
    /// their own storage. The tensors must be CPU tensors of f32 or f64 with
    /// contiguous layouts, no two sharing storage (an error otherwise, before
    /// anything is exchanged). Results equal [`all_reduce`](Self::all_reduce)'s
    /// bit for bit. CUDA tensors on a group with an NCCL communicator
    /// ([`with_nccl`](Self::with_nccl), feature `nccl`) are reduced by NCCL
    /// in their own storage, without buckets (`buffers` is not used).
    ///
    /// ```
    /// use tamer::dist::{FlatBuffers, ProcessGroup, ReduceOp};
    /// use tamer::Tensor;
    /// let pg = ProcessGroup::single();
    /// let g = Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap();
    /// let mut buffers = FlatBuffers::default();
    /// pg.all_reduce_in_place(&[g.clone()], ReduceOp::Sum, &mut buffers).unwrap();
    /// // Two handles of one storage would be reduced twice: refused.
    /// assert!(pg.all_reduce_in_place(&[g.clone(), g.clone()], ReduceOp::Sum, &mut buffers).is_err());
    /// ```
    pub fn all_reduce_in_place(&self, tensors: &[Tensor], op: ReduceOp, buffers: &mut FlatBuffers) -> Result<()> {
        const OP: &str = "all_reduce_in_place";
        #[cfg(feature = "nccl")]
        if let Some(gpu) = self.nccl_route(OP, tensors)? {
            return self.nccl_all_reduce_in_place(gpu, tensors, op);
        }
        check_in_place(OP, tensors)?;
        if self.world_size() == 1 {
            return Ok(());
        }
        // The same signature as `all_reduce`'s packing.
        self.agree(OP, Kind::AllReduce, &tensor_signature(tensors, &[]))?;
        self.reduce_typed::<f32>(OP, tensors, op, buffers)?;
        self.reduce_typed::<f64>(OP, tensors, op, buffers)
    }

    /// Pack the tensors of type `T`, all-reduce them bucket by bucket, unpack.
    fn reduce_typed<T: Wire>(&self, op_name: &'static str, tensors: &[Tensor], op: ReduceOp, buffers: &mut FlatBuffers) -> Result<()> {
        let mine: Vec<&Tensor> = tensors.iter().filter(|t| t.dtype() == T::DTYPE).collect();
        if mine.is_empty() {
            return Ok(());
        }
        let flat = T::buffer(buffers);
        flat.clear();
        for t in &mine {
            read_host::<T, _>(t, |data| flat.extend_from_slice(data)).ok_or_else(|| not_host(op_name))?;
        }
        for range in bucket_ranges(flat.len(), self.bucket_elems) {
            self.comm.all_reduce_sum(T::host_buf(&mut flat[range]))?;
        }
        if op == ReduceOp::Mean {
            let world = T::from_f64(self.world_size() as f64);
            flat.iter_mut().for_each(|x| *x /= world);
        }
        let mut at = 0;
        for t in &mine {
            let n = t.numel();
            write_host::<T, _>(t, |data| data.copy_from_slice(&flat[at..at + n])).ok_or_else(|| not_host(op_name))?;
            at += n;
        }
        Ok(())
    }

    /// Sum `send` (`world_size × recv.len()` elements) over the ranks and
    /// give rank r the r-th block of the sum in `recv`: the flat-buffer
    /// reduce-scatter (one exchange, no copy), after the ranks agree on the
    /// type, the lengths and `check` (a hash of what the buffers hold).
    ///
    /// ```
    /// use tamer::dist::{HostBuf, ProcessGroup};
    /// let (mut send, mut recv) = (vec![1.0f32, 2.0], vec![0.0f32; 2]);
    /// ProcessGroup::single().reduce_scatter_host(HostBuf::F32(&mut send), HostBuf::F32(&mut recv), 7).unwrap();
    /// assert_eq!(recv, [1.0, 2.0]);
    /// ```
    pub fn reduce_scatter_host(&self, send: HostBuf<'_>, recv: HostBuf<'_>, check: u64) -> Result<()> {
        const OP: &str = "reduce_scatter_host";
        if self.world_size() > 1 {
            self.agree(OP, Kind::ReduceScatter, &host_signature(&send, check))?;
        }
        self.comm.reduce_scatter_sum(send, recv)
    }

    /// Fill `recv` (`world_size × send.len()` elements) with every rank's
    /// `send`, in rank order: the flat-buffer all-gather, after the ranks
    /// agree on the type, the length and `check`.
    ///
    /// ```
    /// use tamer::dist::{HostBuf, ProcessGroup};
    /// let (mut send, mut recv) = (vec![3.0f64], vec![0.0f64]);
    /// ProcessGroup::single().all_gather_host(HostBuf::F64(&mut send), HostBuf::F64(&mut recv), 0).unwrap();
    /// assert_eq!(recv, [3.0]);
    /// ```
    pub fn all_gather_host(&self, send: HostBuf<'_>, recv: HostBuf<'_>, check: u64) -> Result<()> {
        const OP: &str = "all_gather_host";
        if self.world_size() > 1 {
            self.agree(OP, Kind::AllGather, &host_signature(&send, check))?;
        }
        self.comm.all_gather(send, recv)
    }
}

/// What ranks compare before a flat-buffer collective: one buffer, its
/// element count by type, and the caller's check.
fn host_signature(send: &HostBuf<'_>, check: u64) -> [u64; 4] {
    let n = send.len() as u64;
    match send {
        HostBuf::F32(_) => [1, n, 0, check],
        _ => [1, 0, n, check],
    }
}

fn not_host(op: &'static str) -> Error {
    // check_in_place ran first: reaching this means a tensor changed under the call.
    Error::device(op, "a tensor was no longer a contiguous CPU tensor of its dtype when it was read or written")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_slices_see_the_elements_of_contiguous_cpu_tensors_only() {
        let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).unwrap();
        assert_eq!(read_host::<f32, _>(&t, |d| d.to_vec()), Some(vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(read_host::<f64, _>(&t, |d| d.len()), None, "another element type");
        let transposed = t.transpose(0, 1).unwrap();
        assert_eq!(read_host::<f32, _>(&transposed, |d| d.len()), None, "not contiguous");
        let view = t.clone();
        write_host::<f32, _>(&t, |d| d[0] = 9.0).unwrap();
        assert_eq!(view.to_vec::<f32>().unwrap()[0], 9.0, "writes land in the shared storage");
    }

    #[test]
    fn in_place_refuses_what_it_cannot_write_once() {
        let pg = ProcessGroup::single();
        let mut b = FlatBuffers::default();
        let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).unwrap();
        let e = pg.all_reduce_in_place(&[t.transpose(0, 1).unwrap()], ReduceOp::Sum, &mut b).unwrap_err();
        assert!(e.message.contains("not contiguous"), "{e}");
        let e = pg.all_reduce_in_place(&[t.clone(), t.clone()], ReduceOp::Sum, &mut b).unwrap_err();
        assert!(e.message.contains("tensors 0 and 1 share storage"), "{e}");
        let i = Tensor::from_vec(vec![1i64], [1]).unwrap();
        assert!(pg.all_reduce_in_place(&[i], ReduceOp::Sum, &mut b).is_err());
    }
}
