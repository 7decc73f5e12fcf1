//! Packing a list of tensors into flat host buffers (one per element type),
//! cutting them into fixed-size buckets, and building the tensors back.

use crate::types::Shape;
use crate::{DType, Device, Error, Result, Tensor};
use std::ops::Range;

/// The ranges that cut `total` elements into buckets of `bucket_elems`
/// (the last one shorter); none for `total == 0`.
///
/// ```
/// use tamer::dist::bucket_ranges;
/// assert_eq!(bucket_ranges(10, 4), vec![0..4, 4..8, 8..10]);
/// assert!(bucket_ranges(0, 4).is_empty());
/// ```
pub fn bucket_ranges(total: usize, bucket_elems: usize) -> Vec<Range<usize>> {
    let step = bucket_elems.max(1);
    (0..total).step_by(step).map(|start| start..(start + step).min(total)).collect()
}

/// Where one tensor sits in the packed buffers.
struct Slot {
    dtype: DType,
    offset: usize,
    shape: Shape,
}

/// The tensors of a collective, flattened: f32 ones end to end in `f32`,
/// f64 ones in `f64`, in list order.
pub(crate) struct Packed {
    pub f32: Vec<f32>,
    pub f64: Vec<f64>,
    slots: Vec<Slot>,
}

/// An error unless `t` is a CPU tensor of f32 or f64.
pub(crate) fn check_tensor(op: &'static str, index: usize, t: &Tensor) -> Result<()> {
    if t.device() != Device::Cpu {
        return Err(Error::device(
            op,
            format!(
                "tensor {index} (shape {}) is on {}; this group's collectives take CPU tensors (move it with to_cpu, or give the group an NCCL communicator on that GPU: ProcessGroup::with_nccl, feature nccl)",
                t.shape(),
                t.device()
            ),
        ));
    }
    if !matches!(t.dtype(), DType::F32 | DType::F64) {
        return Err(Error::dtype(
            op,
            format!("tensor {index} (shape {}) is {}; expected f32 or f64", t.shape(), t.dtype()),
        ));
    }
    Ok(())
}

impl Packed {
    /// Copy `tensors` (CPU, f32 or f64, any layout) into flat buffers.
    pub fn pack(op: &'static str, tensors: &[Tensor]) -> Result<Packed> {
        let mut packed = Packed {
            f32: Vec::new(),
            f64: Vec::new(),
            slots: Vec::with_capacity(tensors.len()),
        };
        for (i, t) in tensors.iter().enumerate() {
            check_tensor(op, i, t)?;
            let offset = match t.dtype() {
                DType::F32 => {
                    let at = packed.f32.len();
                    packed.f32.extend(t.to_vec::<f32>()?);
                    at
                }
                _ => {
                    let at = packed.f64.len();
                    packed.f64.extend(t.to_vec::<f64>()?);
                    at
                }
            };
            packed.slots.push(Slot {
                dtype: t.dtype(),
                offset,
                shape: t.shape().clone(),
            });
        }
        Ok(packed)
    }

    /// What every rank must agree on before exchanging these buffers: the
    /// number of tensors, the element counts per type, and a hash of the
    /// dtypes and shapes in order.
    pub fn signature(&self) -> [u64; 4] {
        let mut hash = Fnv::new();
        for s in &self.slots {
            hash.add(s.dtype as u64);
            hash.add(s.shape.dims().len() as u64);
            for &d in s.shape.dims() {
                hash.add(d as u64);
            }
        }
        [self.slots.len() as u64, self.f32.len() as u64, self.f64.len() as u64, hash.0]
    }

    /// The tensors back, with the (exchanged) values of the buffers.
    pub fn unpack(self) -> Result<Vec<Tensor>> {
        self.slots
            .iter()
            .map(|s| {
                let n = s.shape.numel();
                match s.dtype {
                    DType::F32 => Tensor::from_vec(self.f32[s.offset..s.offset + n].to_vec(), s.shape.clone()),
                    _ => Tensor::from_vec(self.f64[s.offset..s.offset + n].to_vec(), s.shape.clone()),
                }
            })
            .collect()
    }
}

/// FNV-1a over 64-bit words: a stable hash (the same in every process and
/// build, unlike std's), enough to tell lists of shapes apart.
/// What ranks compare before exchanging `tensors`, in [`Packed::signature`]'s
/// form: the count, the f32 elements, the other elements, and a hash of
/// `salt` followed by each tensor's dtype and shape.
pub(crate) fn tensor_signature(tensors: &[Tensor], salt: &[u64]) -> [u64; 4] {
    let (mut n32, mut other) = (0u64, 0u64);
    let mut hash = Fnv::new();
    salt.iter().for_each(|&w| hash.add(w));
    for t in tensors {
        match t.dtype() {
            DType::F32 => n32 += t.numel() as u64,
            _ => other += t.numel() as u64,
        }
        hash.add(t.dtype() as u64);
        hash.add(t.dims().len() as u64);
        t.dims().iter().for_each(|&d| hash.add(d as u64));
    }
    [tensors.len() as u64, n32, other, hash.0]
}

pub(crate) struct Fnv(pub u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn add(&mut self, word: u64) {
        for b in word.to_le_bytes() {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_element_once_in_order() {
        for total in [0usize, 1, 7, 8, 9, 100] {
            for bucket in [1usize, 3, 8, 1000] {
                let ranges = bucket_ranges(total, bucket);
                let flat: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(flat, (0..total).collect::<Vec<_>>(), "total {total} bucket {bucket}");
                assert!(ranges.iter().all(|r| r.len() <= bucket && !r.is_empty()));
                assert_eq!(ranges.len(), total.div_ceil(bucket));
            }
        }
        // A zero bucket size is taken as 1, never an endless loop.
        assert_eq!(bucket_ranges(2, 0), vec![0..1, 1..2]);
    }

    #[test]
    fn pack_and_unpack_round_trip_mixed_dtypes_and_views() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
        let b = Tensor::from_vec(vec![0.5f64, -1.5], [2]).unwrap();
        let c = Tensor::scalar(7.0f32);
        let at = a.transpose(0, 1).unwrap(); // a strided view is packed in row-major order
        let packed = Packed::pack("test", &[at.clone(), b.clone(), c.clone()]).unwrap();
        assert_eq!(packed.f32, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0, 7.0]);
        assert_eq!(packed.f64, vec![0.5, -1.5]);
        let sig = packed.signature();
        assert_eq!(&sig[..3], &[3, 7, 2]);
        let back = packed.unpack().unwrap();
        assert_eq!(back[0].dims(), &[3, 2]);
        assert_eq!(back[0].to_vec::<f32>().unwrap(), at.to_vec::<f32>().unwrap());
        assert_eq!(back[1].to_vec::<f64>().unwrap(), vec![0.5, -1.5]);
        assert_eq!(back[2].dims(), &[] as &[usize]);
        assert_eq!(back[2].to_vec::<f32>().unwrap(), vec![7.0]);
    }

    #[test]
    fn the_signature_tells_shapes_apart_with_the_same_counts() {
        let t = |dims: &[usize]| Tensor::zeros(dims.to_vec(), DType::F32).unwrap();
        let s1 = Packed::pack("t", &[t(&[2, 3])]).unwrap().signature();
        let s2 = Packed::pack("t", &[t(&[3, 2])]).unwrap().signature();
        let s3 = Packed::pack("t", &[t(&[6])]).unwrap().signature();
        assert_eq!(s1[..3], s2[..3]);
        assert_ne!(s1[3], s2[3]);
        assert_ne!(s1[3], s3[3]);
        assert_eq!(s1, Packed::pack("t", &[t(&[2, 3])]).unwrap().signature());
    }

    #[test]
    fn other_dtypes_are_refused_with_the_tensor_named() {
        let i = Tensor::from_vec(vec![1i64, 2], [2]).unwrap();
        let e = Packed::pack("all_reduce", &[Tensor::scalar(1.0f32), i]).err().unwrap();
        assert_eq!(e.op, "all_reduce");
        assert!(e.message.contains("tensor 1") && e.message.contains("expected f32 or f64"), "{e}");
    }
}
