//! CPU kernels for the binary family (`backend/contract/binary.rs`).
//!
//! The walk is row by row over the last axis: each row of the output reads one
//! row of each operand with that operand's innermost stride (1, 0 when
//! broadcast, or anything). Rows whose operands are both unit-stride go to the
//! function's SIMD kernel where it names one (add, sub, mul), else to its
//! scalar formula. `where_cond` walks rows the same way, selecting with
//! `simd::select_f32` where each operand's row is unit-stride or a single
//! value (stride 0, a broadcast). Rows are split across threads.

use super::alloc::CollectPooled;
use super::simd::{self, Operand};
use super::{chunk_len, CpuElem, CpuStorage, PARALLEL_THRESHOLD};
use crate::backend::contract::binary::{check_binary, check_where_cond, BinaryFn, BinaryKernels, VectorBinary};
use crate::cpu_float_dispatch;
use crate::types::{Float, Layout, Shape};
use crate::{Error, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

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

/// Run `row(r, out_row)` over the `inner`-long rows of `out`: on this thread
/// below `PARALLEL_THRESHOLD` elements, else split across the rayon pool in
/// runs of rows big enough to be worth a task.
fn for_each_row<T: Send>(out: &mut [T], inner: usize, row: impl Fn((usize, &mut [T])) + Send + Sync) {
    if out.len() < PARALLEL_THRESHOLD {
        out.chunks_mut(inner).enumerate().for_each(row);
    } else {
        crate::backend::cpu::warm::keep_workers_warm();
        let min_rows = (PARALLEL_THRESHOLD / 4 / inner).max(1);
        out.par_chunks_mut(inner).enumerate().with_min_len(min_rows).for_each(row);
    }
}

/// `f(a[i], b[i])` for two equally long contiguous operands, into a fresh
/// buffer written once. Each block of `BLOCK` elements is computed into a
/// buffer on the stack (it stays in L1) and copied into the output's
/// uninitialised memory, so the output is not zero-filled first only to be
/// overwritten: that fill was a whole extra pass over memory, and a residual
/// add (`[B·T, C] + [B·T, C]`, memory-bound) ran at 21.8 GB/s with it against
/// the SIMD kernel's 30 into a ready buffer (`benches/ops.rs`, 2²² elements).
fn binary_contiguous<T: Float, B: BinaryFn>(a: &[T], b: &[T], f: B) -> Vec<T> {
    const BLOCK: usize = 1024;
    let n = a.len().min(b.len());
    let mut out: Vec<T> = super::alloc::with_capacity(n);
    let run = |start: usize, dst: &mut [MaybeUninit<T>]| {
        let mut block = [T::ZERO; BLOCK];
        for (i, dst) in dst.chunks_mut(BLOCK).enumerate() {
            let (s, len) = (start + i * BLOCK, dst.len());
            slice_apply(f, &a[s..s + len], &b[s..s + len], &mut block[..len]);
            for (slot, &v) in dst.iter_mut().zip(&block[..len]) {
                slot.write(v);
            }
        }
    };
    let spare = &mut out.spare_capacity_mut()[..n];
    if n < PARALLEL_THRESHOLD {
        run(0, spare);
    } else {
        crate::backend::cpu::warm::keep_workers_warm();
        let chunk = chunk_len(n);
        spare.par_chunks_mut(chunk).enumerate().for_each(|(i, dst)| run(i * chunk, dst));
    }
    // SAFETY: the blocks cover the first n elements of the capacity, and each
    // wrote every element of its block.
    unsafe { out.set_len(n) };
    out
}

fn binary_rows<T: Float, B: BinaryFn>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: B) -> Vec<T> {
    let n = la.numel();
    if n == 0 {
        return super::alloc::zeroed(n);
    }
    if let (Some(ra), Some(rb)) = (la.contiguous_range(), lb.contiguous_range()) {
        return binary_contiguous(&a[ra], &b[rb], f);
    }
    let mut out = super::alloc::zeroed(n);
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
    for_each_row(&mut out, inner, row);
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

/// The plain reference of `where_cond`: walk the three layouts' offsets in lockstep.
pub fn where_reference<T: Float>(c: &[T], lc: &Layout, t: &[T], lt: &Layout, f: &[T], lf: &Layout) -> Vec<T> {
    lc.offsets()
        .zip(lt.offsets())
        .zip(lf.offsets())
        .map(|((ci, ti), fi)| if c[ci] != T::ZERO { t[ti] } else { f[fi] })
        .collect()
}

/// One operand's elements along an output row: `data[start + k·stride]`.
#[derive(Clone, Copy)]
struct RowOf<'a, T> {
    data: &'a [T],
    start: usize,
    stride: usize,
}

impl<'a, T: Float> RowOf<'a, T> {
    fn at(&self, k: usize) -> T {
        self.data[self.start + k * self.stride]
    }

    /// The row as a SIMD operand when it is f32 and unit-stride (a slice) or
    /// stride 0 (one value); other rows are walked element by element.
    fn as_f32_operand(&self, len: usize) -> Option<Operand<'a>> {
        match self.stride {
            1 => T::as_f32_slice(&self.data[self.start..self.start + len]).map(Operand::Slice),
            0 => T::as_f32_slice(&self.data[self.start..=self.start]).map(|v| Operand::Value(v[0])),
            _ => None,
        }
    }
}

/// `out[k] = c[k] ≠ 0 ? t[k] : f[k]` along one row.
fn select_row<T: Float>(c: RowOf<T>, t: RowOf<T>, f: RowOf<T>, out: &mut [T]) {
    let n = out.len();
    if let (Some(c), Some(t), Some(f)) = (c.as_f32_operand(n), t.as_f32_operand(n), f.as_f32_operand(n)) {
        if let Some(out) = T::as_f32_slice_mut(out) {
            return simd::select_f32(c, t, f, out);
        }
    }
    for (k, o) in out.iter_mut().enumerate() {
        *o = if c.at(k) != T::ZERO { t.at(k) } else { f.at(k) };
    }
}

/// `where_cond` over layouts broadcast to one shape: row by row (or, when all
/// three are contiguous, in chunks of the whole), split across threads.
fn where_rows<T: Float>(c: &[T], lc: &Layout, t: &[T], lt: &Layout, f: &[T], lf: &Layout) -> Vec<T> {
    let n = lc.numel();
    let mut out = super::alloc::zeroed(n);
    if n == 0 {
        return out;
    }
    if let (Some(rc), Some(rt), Some(rf)) = (lc.contiguous_range(), lt.contiguous_range(), lf.contiguous_range()) {
        let part = |(i, o): (usize, &mut [T]), chunk: usize| {
            let row = |data, start: usize| RowOf {
                data,
                start: start + i * chunk,
                stride: 1,
            };
            select_row(row(c, rc.start), row(t, rt.start), row(f, rf.start), o)
        };
        if n < PARALLEL_THRESHOLD {
            part((0, &mut out), n);
        } else {
            crate::backend::cpu::warm::keep_workers_warm();
            let chunk = chunk_len(n);
            out.par_chunks_mut(chunk).enumerate().for_each(|p| part(p, chunk));
        }
        return out;
    }
    let inner = lc.dims().last().copied().unwrap_or(1);
    let ((rows_c, sc), (rows_t, st), (rows_f, sf)) = (rows(lc), rows(lt), rows(lf));
    let row = |(r, o): (usize, &mut [T])| {
        let (c, t, f) = (
            RowOf {
                data: c,
                start: rows_c[r],
                stride: sc,
            },
            RowOf {
                data: t,
                start: rows_t[r],
                stride: st,
            },
            RowOf {
                data: f,
                start: rows_f[r],
                stride: sf,
            },
        );
        select_row(c, t, f, o)
    };
    for_each_row(&mut out, inner, row);
    out
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
        simd::selected("where_cond")?;
        cpu_float_dispatch!("where_cond", self, |c: T| {
            let (Some(t), Some(f)) = (<T as CpuElem>::slice(on_true), <T as CpuElem>::slice(on_false)) else {
                return Err(Error::dtype("where_cond", "condition and values must share a dtype"));
            };
            Ok(super::wrap_float(where_rows(c, cond_layout, t, true_layout, f, false_layout)))
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

    /// `where_cond` of operands of shapes `dc`, `dt`, `df` (broadcast together),
    /// in f32 and f64, against the reference; the condition has zeros, ones and NaNs.
    fn check_where(dc: &[usize], dt: &[usize], df: &[usize]) {
        let (sc, st, sf) = (Shape::new(dc), Shape::new(dt), Shape::new(df));
        let out = sc.broadcast_with("t", &st).unwrap().broadcast_with("t", &sf).unwrap();
        let c: Vec<f64> = (0..sc.numel()).map(|i| [0.0, 1.0, -0.0, f64::NAN, 2.0][i % 5]).collect();
        let t: Vec<f64> = (0..st.numel()).map(|i| i as f64 * 0.5).collect();
        let f: Vec<f64> = (0..sf.numel()).map(|i| -(i as f64) - 1.0).collect();
        let [lc, lt, lf] = [&sc, &st, &sf].map(|s| Layout::contiguous(s.clone()).broadcast_as("t", &out).unwrap());
        let want = where_reference(&c, &lc, &t, &lt, &f, &lf);
        assert_eq!(where_rows(&c, &lc, &t, &lt, &f, &lf), want, "f64 {dc:?} {dt:?} {df:?}");
        let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let got = where_rows(&narrow(&c), &lc, &narrow(&t), &lt, &narrow(&f), &lf);
        assert_eq!(got, narrow(&want), "f32 {dc:?} {dt:?} {df:?}");
    }

    #[test]
    fn where_fast_paths_match_the_reference() {
        check_where(&[3, 17], &[3, 17], &[3, 17]);
        check_where(&[17], &[1], &[3, 17]); // masked_fill: a broadcast mask and a single value
        check_where(&[3, 1], &[3, 17], &[17]);
        check_where(&[2, 3, 5], &[3, 1], &[1]);
        check_where(&[], &[4], &[]);
        check_where(&[4, 64, 64], &[4, 64, 64], &[4, 64, 64]); // contiguous, threaded
        check_where(&[64, 64], &[1], &[8, 64, 64]); // rows, threaded
        check_where(&[8, 64, 1], &[8, 64, 65], &[1]);
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
        // Contiguous operands: blocks of 1024 through the stack, whole and cut,
        // on one thread and split among threads.
        check(Add, &[1023], &[1023]);
        check(Mul, &[3, 1025], &[3, 1025]);
        check(Sub, &[70000], &[70000]);
        check(Add, &[129, 1000], &[129, 1000]);
    }
}
