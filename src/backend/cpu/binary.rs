//! CPU kernels for the binary family (`backend/contract/binary.rs`).
//!
//! The walk is row by row over the last axis: each row of the output reads one
//! row of each operand with that operand's innermost stride (1, 0 when
//! broadcast, or anything). Rows whose operands are both unit-stride go to the
//! function's SIMD kernel where it names one (add, sub, mul), else to its
//! scalar formula. Rows are split across threads.

use super::alloc::CollectPooled;
use super::{simd, CpuElem, CpuStorage, PARALLEL_THRESHOLD};
use crate::backend::contract::binary::{check_binary, check_where_cond, BinaryFn, BinaryKernels, VectorBinary};
use crate::cpu_float_dispatch;
use crate::types::{Float, Layout, Shape};
use crate::{Error, Result};
use rayon::prelude::*;

/// The plain reference: walk both layouts' offsets in lockstep.
pub fn binary_reference<T: Float, B: BinaryFn>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: B) -> Vec<T> {
    la.offsets().zip(lb.offsets()).map(|(i, j)| f.apply(a[i], b[j])).collect_pooled()
}

/// Storage offsets of each row start (all axes but the last) and the last axis' stride.
fn rows(layout: &Layout) -> (Vec<usize>, usize) {
    let rank = layout.rank();
    if rank == 0 {
        return (vec![layout.offset()], 1);
    }
    let outer = Layout::new(Shape::new(&layout.dims()[..rank - 1]), layout.strides()[..rank - 1].to_vec(), layout.offset());
    (outer.offsets_vec(), layout.strides()[rank - 1])
}

fn binary_rows<T: Float, B: BinaryFn>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: B) -> Vec<T> {
    let n = la.numel();
    let mut out = super::alloc::zeroed(n);
    if n == 0 {
        return out;
    }
    if let (Some(ra), Some(rb)) = (la.contiguous_range(), lb.contiguous_range()) {
        let (a, b) = (&a[ra], &b[rb]);
        let apply = |(o, (a, b)): (&mut [T], (&[T], &[T]))| slice_apply(f, a, b, o);
        if n < PARALLEL_THRESHOLD {
            apply((&mut out, (a, b)));
        } else {
            let chunk = super::chunk_len(n);
            out.par_chunks_mut(chunk).zip(a.par_chunks(chunk).zip(b.par_chunks(chunk))).for_each(apply);
        }
        return out;
    }
    let inner = la.dims().last().copied().unwrap_or(1);
    let ((rows_a, sa), (rows_b, sb)) = (rows(la), rows(lb));
    let row = |(r, o): (usize, &mut [T])| {
        let (oa, ob) = (rows_a[r], rows_b[r]);
        match (sa, sb) {
            (1, 1) => slice_apply(f, &a[oa..oa + inner], &b[ob..ob + inner], o),
            (1, 0) => {
                let bv = b[ob];
                for (o, &x) in o.iter_mut().zip(&a[oa..oa + inner]) {
                    *o = f.apply(x, bv);
                }
            }
            (0, 1) => {
                let av = a[oa];
                for (o, &y) in o.iter_mut().zip(&b[ob..ob + inner]) {
                    *o = f.apply(av, y);
                }
            }
            _ => {
                for (k, o) in o.iter_mut().enumerate() {
                    *o = f.apply(a[oa + k * sa], b[ob + k * sb]);
                }
            }
        }
    };
    if n < PARALLEL_THRESHOLD {
        out.chunks_mut(inner).enumerate().for_each(row);
    } else {
        let min_rows = (PARALLEL_THRESHOLD / 4 / inner).max(1);
        out.par_chunks_mut(inner).enumerate().with_min_len(min_rows).for_each(row);
    }
    out
}

/// The SIMD kernel for a function that names one.
fn vector_kernel(v: VectorBinary) -> fn(&[f32], &[f32], &mut [f32]) {
    match v {
        VectorBinary::Add => simd::add_f32,
        VectorBinary::Sub => simd::sub_f32,
        VectorBinary::Mul => simd::mul_f32,
    }
}

/// One unit-stride row: the SIMD kernel for f32 where the function names one,
/// else the scalar formula.
#[inline]
fn slice_apply<T: Float, B: BinaryFn>(f: B, a: &[T], b: &[T], out: &mut [T]) {
    if let (Some(v), Some(a), Some(b)) = (B::VECTORIZED, T::as_f32_slice(a), T::as_f32_slice(b)) {
        if let Some(o) = T::as_f32_slice_mut(out) {
            return vector_kernel(v)(a, b, o);
        }
    }
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = f.apply(a, b);
    }
}

impl BinaryKernels for CpuStorage {
    fn binary<B: BinaryFn>(&self, lhs_layout: &Layout, rhs: &Self, rhs_layout: &Layout, f: B) -> Result<Self> {
        check_binary(B::NAME, (self.dtype(), lhs_layout), (rhs.dtype(), rhs_layout), <Self as BinaryKernels>::DTYPES)?;
        simd::selected(B::NAME)?;
        cpu_float_dispatch!(B::NAME, self, |a: T| {
            let b = <T as CpuElem>::slice(rhs).ok_or_else(|| Error::dtype(B::NAME, format!("operands have dtypes {} and {}", self.dtype(), rhs.dtype())))?;
            Ok(super::wrap_float(binary_rows(a, lhs_layout, b, rhs_layout, f)))
        })
    }

    fn where_cond(&self, cond_layout: &Layout, on_true: &Self, true_layout: &Layout, on_false: &Self, false_layout: &Layout) -> Result<Self> {
        check_where_cond(
            (self.dtype(), cond_layout),
            (on_true.dtype(), true_layout),
            (on_false.dtype(), false_layout),
            <Self as BinaryKernels>::DTYPES,
        )?;
        cpu_float_dispatch!("where_cond", self, |c: T| {
            let (Some(t), Some(f)) = (<T as CpuElem>::slice(on_true), <T as CpuElem>::slice(on_false)) else {
                return Err(Error::dtype("where_cond", "condition and values must share a dtype"));
            };
            let out: Vec<T> = cond_layout
                .offsets()
                .zip(true_layout.offsets())
                .zip(false_layout.offsets())
                .map(|((ci, ti), fi)| if c[ci] != T::ZERO { t[ti] } else { f[fi] })
                .collect_pooled();
            Ok(super::wrap_float(out))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::contract::binary::{Add, Mul, Sub};

    fn check<B: BinaryFn>(f: B, da: &[usize], db: &[usize]) {
        let (sa, sb) = (Shape::new(da), Shape::new(db));
        let out = sa.broadcast_with("t", &sb).unwrap();
        let a: Vec<f32> = (0..sa.numel()).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..sb.numel()).map(|i| (i as f32 * 0.11).cos()).collect();
        let la = Layout::contiguous(sa).broadcast_as("t", &out).unwrap();
        let lb = Layout::contiguous(sb).broadcast_as("t", &out).unwrap();
        assert_eq!(binary_rows(&a, &la, &b, &lb, f), binary_reference(&a, &la, &b, &lb, f));
    }

    #[test]
    fn fast_paths_match_the_reference() {
        check(Add, &[3, 5], &[3, 5]);
        check(Mul, &[3, 5], &[5]);
        check(Sub, &[3, 1], &[1, 5]);
        check(Add, &[2, 3, 4], &[3, 1]);
        check(Mul, &[300, 257], &[257]); // threaded path
        check(Add, &[300, 257], &[300, 1]);
        check(Sub, &[], &[4]);
    }
}
