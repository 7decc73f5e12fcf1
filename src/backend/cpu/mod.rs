//! The CPU backend: storage as plain `Vec`s, scalar reference kernels, SIMD
//! fast paths (`simd/`, used by nothing outside this backend), its own f32
//! GEMM (`gemm/`; f64 products and convolutions use matrixmultiply) and rayon
//! for threads.
//!
//! Kernel files mirror the contract's families: `unary.rs` implements
//! `contract::unary::UnaryKernels`, `nn/layer_norm.rs`
//! `contract::nn::layer_norm::LayerNormKernels`, and so on.

pub mod alloc;
pub mod binary;
#[cfg(test)]
mod contract_errors;
// tamer's f32 GEMM (packing, micro-kernels per ISA). Public and hidden like
// `simd`, only so that benches/matmul.rs can time each ISA's kernel directly.
#[doc(hidden)]
pub mod gemm;
pub mod index;
#[cfg(test)]
mod kernels_f32;
pub mod matmul;
pub mod nn;
pub mod optim;
pub mod reduce;
// Public only for benches/ops.rs, which times each ISA's kernel on its own
// (a bench is another crate); hidden because it is no part of the API: only
// this backend calls it, which tests/integration/architecture.rs checks.
#[doc(hidden)]
pub mod simd;
#[cfg(test)]
mod test_data;
pub mod unary;
pub(crate) mod warm;

use crate::backend::BackendStorage;
use crate::types::{DType, Device, Element, ElementSlice, ElementSliceMut, ElementVec, Float, Layout};
use crate::{Error, Result};
use alloc::CollectPooled;
use half::{bf16, f16};

/// Elementwise work below this many elements stays on the calling thread:
/// waking rayon's workers costs a few microseconds, more than the work itself.
pub const PARALLEL_THRESHOLD: usize = 1 << 15;

/// A tensor's elements on the host. Its buffer comes from, and goes back to
/// when the storage drops, the pool of [`alloc`] (a buffer the pool did not
/// hand out goes back to the system).
#[derive(Debug, PartialEq)]
pub enum CpuStorage {
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

impl Drop for CpuStorage {
    fn drop(&mut self) {
        match self {
            CpuStorage::F16(v) => alloc::recycle(std::mem::take(v)),
            CpuStorage::BF16(v) => alloc::recycle(std::mem::take(v)),
            CpuStorage::F32(v) => alloc::recycle(std::mem::take(v)),
            CpuStorage::F64(v) => alloc::recycle(std::mem::take(v)),
            CpuStorage::I64(v) => alloc::recycle(std::mem::take(v)),
        }
    }
}

impl Clone for CpuStorage {
    fn clone(&self) -> Self {
        match self {
            CpuStorage::F16(v) => CpuStorage::F16(alloc::copied(v)),
            CpuStorage::BF16(v) => CpuStorage::BF16(alloc::copied(v)),
            CpuStorage::F32(v) => CpuStorage::F32(alloc::copied(v)),
            CpuStorage::F64(v) => CpuStorage::F64(alloc::copied(v)),
            CpuStorage::I64(v) => CpuStorage::I64(alloc::copied(v)),
        }
    }
}

/// An [`Element`] as the CPU backend holds it: typed access to the `Vec`
/// of a `CpuStorage` of that dtype. Every `Element` is one.
pub trait CpuElem: Element {
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
    fn wrap(v: Vec<Self>) -> CpuStorage;
}

impl<T: Element> CpuElem for T {
    fn slice(s: &CpuStorage) -> Option<&[T]> {
        T::downcast(s.elements())
    }
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [T]> {
        T::downcast_mut(s.elements_mut())
    }
    fn wrap(v: Vec<T>) -> CpuStorage {
        CpuStorage::from(T::tag(v))
    }
}

impl From<ElementVec> for CpuStorage {
    fn from(v: ElementVec) -> CpuStorage {
        match v {
            ElementVec::F16(v) => CpuStorage::F16(v),
            ElementVec::BF16(v) => CpuStorage::BF16(v),
            ElementVec::F32(v) => CpuStorage::F32(v),
            ElementVec::F64(v) => CpuStorage::F64(v),
            ElementVec::I64(v) => CpuStorage::I64(v),
        }
    }
}

/// Run `$body` with `$v` bound to the typed slice and `$T` to f32 or f64; other
/// dtypes are an error naming `$op`. This is how kernels stay generic over floats.
#[macro_export]
#[doc(hidden)]
macro_rules! cpu_float_dispatch {
    ($op:expr, $storage:expr, |$v:ident : $T:ident| $body:expr) => {
        match $storage {
            $crate::backend::cpu::CpuStorage::F32($v) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::backend::cpu::CpuStorage::F64($v) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            other => Err($crate::backend::contract::unsupported_dtype($op, other.dtype())),
        }
    };
}

/// Elements of `data` selected by `layout`, in row-major order, in a buffer
/// from the pool.
pub fn gather<T: Copy + 'static>(data: &[T], layout: &Layout) -> Vec<T> {
    match layout.contiguous_range() {
        Some(r) => alloc::copied(&data[r]),
        None => layout.offsets().map(|o| data[o]).collect_pooled(),
    }
}

/// Borrow the selected elements without a copy when the layout is contiguous;
/// otherwise gather them into a scratch buffer from the pool.
pub fn contiguous_or_gather<'a, T: Copy + 'static>(data: &'a [T], layout: &Layout) -> Contiguous<'a, T> {
    match layout.contiguous_range() {
        Some(r) => Contiguous::Borrowed(&data[r]),
        None => Contiguous::Gathered(layout.offsets().map(|o| data[o]).collect_pooled()),
    }
}

/// A kernel's operand as one contiguous slice: borrowed from the storage, or
/// gathered into a buffer of the pool, which goes back to it on drop.
#[derive(Debug)]
pub enum Contiguous<'a, T: Copy + 'static> {
    Borrowed(&'a [T]),
    Gathered(Vec<T>),
}

impl<T: Copy + 'static> std::ops::Deref for Contiguous<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Contiguous::Borrowed(s) => s,
            Contiguous::Gathered(v) => v,
        }
    }
}

impl<T: Copy + 'static> Drop for Contiguous<'_, T> {
    fn drop(&mut self) {
        if let Contiguous::Gathered(v) = self {
            alloc::recycle(std::mem::take(v));
        }
    }
}

impl CpuStorage {
    /// The elements, tagged with their dtype.
    pub fn elements(&self) -> ElementSlice<'_> {
        match self {
            CpuStorage::F16(v) => ElementSlice::F16(v),
            CpuStorage::BF16(v) => ElementSlice::BF16(v),
            CpuStorage::F32(v) => ElementSlice::F32(v),
            CpuStorage::F64(v) => ElementSlice::F64(v),
            CpuStorage::I64(v) => ElementSlice::I64(v),
        }
    }
    /// The elements, tagged with their dtype, mutably.
    pub fn elements_mut(&mut self) -> ElementSliceMut<'_> {
        match self {
            CpuStorage::F16(v) => ElementSliceMut::F16(v),
            CpuStorage::BF16(v) => ElementSliceMut::BF16(v),
            CpuStorage::F32(v) => ElementSliceMut::F32(v),
            CpuStorage::F64(v) => ElementSliceMut::F64(v),
            CpuStorage::I64(v) => ElementSliceMut::I64(v),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::I64(_) => DType::I64,
        }
    }

    /// A zero-filled storage of `len` elements.
    pub fn zeros(dtype: DType, len: usize) -> Self {
        match dtype {
            DType::F16 => CpuStorage::F16(alloc::zeroed(len)),
            DType::BF16 => CpuStorage::BF16(alloc::zeroed(len)),
            DType::F32 => CpuStorage::F32(alloc::zeroed(len)),
            DType::F64 => CpuStorage::F64(alloc::zeroed(len)),
            DType::I64 => CpuStorage::I64(alloc::zeroed(len)),
        }
    }

    /// Every element as f64 (used by `to_vec`, Display and the gradient checker).
    pub fn to_f64_vec(&self, layout: &Layout) -> Vec<f64> {
        fn go<T: CpuElem>(v: &[T], l: &Layout) -> Vec<f64> {
            match l.contiguous_range() {
                Some(r) => v[r].iter().map(|x| x.to_f64()).collect(),
                None => l.offsets().map(|o| v[o].to_f64()).collect(),
            }
        }
        match self {
            CpuStorage::F16(v) => go(v, layout),
            CpuStorage::BF16(v) => go(v, layout),
            CpuStorage::F32(v) => go(v, layout),
            CpuStorage::F64(v) => go(v, layout),
            CpuStorage::I64(v) => go(v, layout),
        }
    }

    /// A storage of `dtype` from f64 values (creation helpers use this).
    pub fn from_f64_vec(values: &[f64], dtype: DType) -> Self {
        fn go<T: CpuElem>(v: &[f64]) -> CpuStorage {
            T::wrap(v.iter().map(|&x| T::from_f64(x)).collect_pooled())
        }
        match dtype {
            DType::F16 => go::<f16>(values),
            DType::BF16 => go::<bf16>(values),
            DType::F32 => go::<f32>(values),
            DType::F64 => go::<f64>(values),
            DType::I64 => go::<i64>(values),
        }
    }

    /// The elements as a `Vec<T>` for the caller to keep (the pool lets the
    /// buffer go), or the storage back if it holds another dtype.
    pub fn into_vec<T: CpuElem>(mut self) -> std::result::Result<Vec<T>, CpuStorage> {
        if self.dtype() != T::DTYPE {
            return Err(self);
        }
        let elements = match &mut self {
            CpuStorage::F16(v) => ElementVec::F16(std::mem::take(v)),
            CpuStorage::BF16(v) => ElementVec::BF16(std::mem::take(v)),
            CpuStorage::F32(v) => ElementVec::F32(std::mem::take(v)),
            CpuStorage::F64(v) => ElementVec::F64(std::mem::take(v)),
            CpuStorage::I64(v) => ElementVec::I64(std::mem::take(v)),
        };
        let v = alloc::untag::<T>(elements).unwrap_or_default();
        alloc::disown(&v);
        Ok(v)
    }

    /// The contiguous elements as a typed `Vec`, if `T` is this storage's dtype.
    pub fn typed<T: CpuElem>(&self, op: &'static str, layout: &Layout) -> Result<Vec<T>> {
        let data = T::slice(self).ok_or_else(|| Error::dtype(op, format!("expected dtype {}, got {}", T::DTYPE, self.dtype())))?;
        // The caller keeps this `Vec` (it is what `Tensor::to_vec` returns), so
        // it comes from the system, not the pool.
        Ok(match layout.contiguous_range() {
            Some(r) => data[r].to_vec(),
            None => layout.offsets().map(|o| data[o]).collect(),
        })
    }
}

impl BackendStorage for CpuStorage {
    fn dtype(&self) -> DType {
        CpuStorage::dtype(self)
    }
    // The CPU is one device, `Device::Cpu`, so the constructors ignore theirs.
    fn full_on(_device: Device, dtype: DType, len: usize, value: f64) -> Result<Self> {
        fn go<T: CpuElem>(len: usize, value: f64) -> CpuStorage {
            T::wrap(alloc::filled(len, T::from_f64(value)))
        }
        Ok(match dtype {
            DType::F16 => go::<f16>(len, value),
            DType::BF16 => go::<bf16>(len, value),
            DType::F32 => go::<f32>(len, value),
            DType::F64 => go::<f64>(len, value),
            DType::I64 => go::<i64>(len, value),
        })
    }
    fn zeros_on(_device: Device, dtype: DType, len: usize) -> Result<Self> {
        Ok(CpuStorage::zeros(dtype, len))
    }
    fn from_host(_device: Device, host: &CpuStorage) -> Result<Self> {
        Ok(host.clone())
    }
    fn to_host(&self) -> Result<CpuStorage> {
        Ok(self.clone())
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn len(&self) -> usize {
        match self {
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
        }
    }
    fn copy_contiguous(&self, layout: &Layout) -> Result<Self> {
        Ok(match self {
            CpuStorage::F16(v) => CpuStorage::F16(gather(v, layout)),
            CpuStorage::BF16(v) => CpuStorage::BF16(gather(v, layout)),
            CpuStorage::F32(v) => CpuStorage::F32(gather(v, layout)),
            CpuStorage::F64(v) => CpuStorage::F64(gather(v, layout)),
            CpuStorage::I64(v) => CpuStorage::I64(gather(v, layout)),
        })
    }
    fn to_dtype(&self, layout: &Layout, dtype: DType) -> Result<Self> {
        if self.dtype() == dtype {
            return self.copy_contiguous(layout);
        }
        // f32 <-> f16/bf16 directly: going through f64 would double-round.
        Ok(match (self, dtype) {
            (CpuStorage::F32(v), DType::F16) => CpuStorage::F16(contiguous_or_gather(v, layout).iter().map(|&x| f16::from_f32(x)).collect_pooled()),
            (CpuStorage::F32(v), DType::BF16) => CpuStorage::BF16(contiguous_or_gather(v, layout).iter().map(|&x| bf16::from_f32(x)).collect_pooled()),
            (CpuStorage::F16(v), DType::F32) => CpuStorage::F32(contiguous_or_gather(v, layout).iter().map(|&x| f32::from(x)).collect_pooled()),
            (CpuStorage::BF16(v), DType::F32) => CpuStorage::F32(contiguous_or_gather(v, layout).iter().map(|&x| f32::from(x)).collect_pooled()),
            _ => CpuStorage::from_f64_vec(&self.to_f64_vec(layout), dtype),
        })
    }
    fn copy_into(&mut self, dst_layout: &Layout, src: &Self, src_layout: &Layout) -> Result<()> {
        fn go<T: CpuElem>(dst: &mut [T], dl: &Layout, src: &[T], sl: &Layout) {
            let values = contiguous_or_gather(src, sl);
            match dl.contiguous_range() {
                Some(r) => dst[r].copy_from_slice(&values),
                None => {
                    for (o, &v) in dl.offsets().zip(values.iter()) {
                        dst[o] = v;
                    }
                }
            }
        }
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
        match (self, src) {
            (CpuStorage::F16(d), CpuStorage::F16(s)) => go(d, dst_layout, s, src_layout),
            (CpuStorage::BF16(d), CpuStorage::BF16(s)) => go(d, dst_layout, s, src_layout),
            (CpuStorage::F32(d), CpuStorage::F32(s)) => go(d, dst_layout, s, src_layout),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => go(d, dst_layout, s, src_layout),
            (CpuStorage::I64(d), CpuStorage::I64(s)) => go(d, dst_layout, s, src_layout),
            (d, s) => return Err(Error::dtype("copy_into", format!("destination is {} but source is {}", d.dtype(), s.dtype()))),
        }
        Ok(())
    }
}

/// Apply `f` elementwise from `src` into a Vec from the pool, splitting across
/// rayon workers above `PARALLEL_THRESHOLD` (see [`build_in_parts`]).
pub fn par_map<T: Copy + Send + Sync, U: Copy + Send + Sync + Default + 'static>(src: &[T], f: impl Fn(&[T], &mut [U]) + Sync) -> Vec<U> {
    let n = src.len();
    let chunk = if n < PARALLEL_THRESHOLD { n } else { chunk_len(n) };
    build_in_parts(n, chunk, n >= PARALLEL_THRESHOLD, |start, part| f(&src[start..start + part.len()], part)).0
}

/// `n` elements in a buffer from the pool, written part by part by
/// `write(start, part)` (parts of `part_len` elements from element `start`,
/// the last one shorter), on rayon's workers when `parallel`; returns the
/// buffer and each part's result, in order.
///
/// `write` must set every element of its part: a part holds the values its
/// buffer last held ([`alloc::overwritable`]), so nothing is zeroed first.
///
/// v1 zeroed the whole buffer on the calling thread first: for gpt-tiny's
/// GELU (`[2048, 512]`, 4 MB) a second pass over the output, about as long as
/// the 2-thread kernel itself. v2 had each task zero its own part while it was
/// in that core's cache (GELU forward 0.98 -> 0.54 ms median in
/// `cargo bench --bench ops`, `gelu_2048x512` on 2 threads, load 1.3-1.6),
/// which was still 4.5% of gpt-tiny's training step on 1 thread (perf). v3
/// zeroes nothing.
pub fn build_in_parts<T, R>(n: usize, part_len: usize, parallel: bool, write: impl Fn(usize, &mut [T]) -> R + Sync) -> (Vec<T>, Vec<R>)
where
    T: Copy + Send + Sync + Default + 'static,
    R: Send,
{
    use rayon::prelude::*;
    let mut out = alloc::overwritable::<T>(n);
    let part_len = part_len.max(1);
    let task = |(i, part): (usize, &mut [T])| write(i * part_len, part);
    let results = if parallel {
        warm::keep_workers_warm();
        out.par_chunks_mut(part_len).enumerate().map(task).collect()
    } else {
        out.chunks_mut(part_len).enumerate().map(task).collect()
    };
    (out, results)
}

/// Chunk size that gives each rayon worker a few chunks (for load balance)
/// while staying a multiple of 64 elements (whole cache lines, whole SIMD vectors).
pub fn chunk_len(n: usize) -> usize {
    let parts = rayon::current_num_threads().max(1) * 4;
    (n.div_ceil(parts)).div_ceil(64).max(1) * 64
}

/// Convenience for generic code: a float kernel's output storage.
pub fn wrap_float<T: Float + CpuElem>(v: Vec<T>) -> CpuStorage {
    T::wrap(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_in_parts_gives_each_part_its_own_elements_once() {
        for (n, part_len, parallel) in [(0, 1, false), (5, 64, false), (PARALLEL_THRESHOLD + 77, 4096, true), (1000, 3, true)] {
            // A buffer of the same size class full of NaNs goes back to the
            // pool first: the parts must write over whatever block is served.
            alloc::recycle(alloc::filled(n, f64::NAN));
            let (v, starts) = build_in_parts(n, part_len, parallel, |start, part: &mut [f64]| {
                for (k, x) in part.iter_mut().enumerate() {
                    *x = (start + k) as f64;
                }
                (start, part.len())
            });
            assert_eq!(v.len(), n);
            for (i, &x) in v.iter().enumerate() {
                assert_eq!(x, i as f64, "element {i} of {n} in parts of {part_len}");
            }
            let want_starts: Vec<(usize, usize)> = (0..n).step_by(part_len).map(|s| (s, part_len.min(n - s))).collect();
            assert_eq!(starts, want_starts, "parts of {n} by {part_len}, in order");
            alloc::recycle(v);
        }
    }
}
