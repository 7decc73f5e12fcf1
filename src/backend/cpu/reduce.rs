//! CPU kernels for the reductions (`backend/contract/reduce.rs`).
//!
//! The layout is permuted so the reduced axes come last; then every output
//! element owns one consecutive run of the walk. Fast paths: reduced axes that
//! are trailing and contiguous (row reductions) and leading axes of a
//! contiguous tensor (column sums, the bias-gradient case).

use super::alloc::{CollectPooled, ParCollectPooled};
use super::{simd, CpuElem, CpuStorage, PARALLEL_THRESHOLD};
use crate::backend::contract::reduce::{check_argmax, check_reduce, ReduceKernels, ReduceOp};
use crate::cpu_float_dispatch;
use crate::types::{Float, Layout};
use crate::Result;
use rayon::prelude::*;

#[inline]
fn combine<T: Float>(op: ReduceOp, acc: T, x: T) -> T {
    match op {
        ReduceOp::Sum => acc + x,
        // NaN propagates, as in PyTorch.
        ReduceOp::Max => {
            if x > acc || x.is_nan() {
                x
            } else {
                acc
            }
        }
        ReduceOp::Min => {
            if x < acc || x.is_nan() {
                x
            } else {
                acc
            }
        }
    }
}

fn identity<T: Float>(op: ReduceOp) -> T {
    match op {
        ReduceOp::Sum => T::ZERO,
        ReduceOp::Max => T::NEG_INFINITY,
        ReduceOp::Min => T::INFINITY,
    }
}

/// Reduce one contiguous run. Sums use 8 independent accumulators so the
/// compiler can vectorise and the rounding error grows more slowly.
fn reduce_slice<T: Float>(op: ReduceOp, xs: &[T]) -> T {
    if op == ReduceOp::Sum {
        let mut acc = [T::ZERO; 8];
        let chunks = xs.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for k in 0..8 {
                acc[k] += c[k];
            }
        }
        let mut total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for &x in rest {
            total += x;
        }
        return total;
    }
    xs.iter().fold(identity(op), |a, &x| combine(op, a, x))
}

/// `acc += row` for every `acc.len()`-long row of `rows`, in order, with the
/// SIMD add when `T` is f32 (the bias gradient of a linear layer: the column
/// sums of `dY`); false, touching nothing, for other types. Each row adds
/// into the other of two buffers (the vector kernel writes a separate
/// output), so the sums are exactly the scalar loop's, in the same order.
///
/// The two buffers are stack arrays of [`SUM_BLOCK`] columns, the columns
/// taken one block at a time: this runs inside parallel tasks, and scratch
/// from the pool there made the number of blocks live at once depend on how
/// the tasks overlapped, so a steady training step now and then took a new
/// block from the system (`tests/memory.rs` caught it on a 2-core machine).
fn sum_rows_f32<T: Float>(acc: &mut [T], rows: &[T]) -> bool {
    let cols = acc.len();
    let (Some(acc), Some(rows)) = (T::as_f32_slice_mut(acc), T::as_f32_slice(rows)) else {
        return false;
    };
    if cols == 0 {
        return true;
    }
    let (mut a, mut b) = ([0.0f32; SUM_BLOCK], [0.0f32; SUM_BLOCK]);
    for start in (0..cols).step_by(SUM_BLOCK) {
        let block = start..cols.min(start + SUM_BLOCK);
        let width = block.len();
        let (mut sum, mut next) = (&mut a[..width], &mut b[..width]);
        sum.copy_from_slice(&acc[block.clone()]);
        for row in rows.chunks_exact(cols) {
            simd::add_f32(sum, &row[block.clone()], next);
            std::mem::swap(&mut sum, &mut next);
        }
        acc[block].copy_from_slice(sum);
    }
    true
}

/// Columns per block of [`sum_rows_f32`]: two blocks (4 KiB) sit on the
/// stack and in L1 while every row's slice of them streams past.
const SUM_BLOCK: usize = 512;

/// Permutation moving `axes` to the end (kept axes first, in order).
fn reduced_last(rank: usize, axes: &[usize]) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
    perm.extend_from_slice(axes);
    perm
}

/// The plain reference: walk the permuted layout, one run per output element.
pub fn reduce_reference<T: Float>(x: &[T], layout: &Layout, axes: &[usize], op: ReduceOp) -> Vec<T> {
    let red: usize = axes.iter().map(|&a| layout.dims()[a]).product();
    let out_len = layout.numel() / red.max(1);
    if red == 0 {
        return super::alloc::filled(
            layout.dims().iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).product(),
            identity(op),
        );
    }
    let perm = reduced_last(layout.rank(), axes);
    let Ok(p) = layout.permute("reduce", &perm) else {
        return Vec::new();
    };
    let offsets: Vec<usize> = p.offsets().collect();
    (0..out_len)
        .map(|o| offsets[o * red..(o + 1) * red].iter().fold(identity(op), |a, &i| combine(op, a, x[i])))
        .collect_pooled()
}

fn reduce_fast<T: Float>(x: &[T], layout: &Layout, axes: &[usize], op: ReduceOp) -> Vec<T> {
    let rank = layout.rank();
    let red: usize = axes.iter().map(|&a| layout.dims()[a]).product();
    let n = layout.numel();
    if red == 0 || n == 0 {
        return reduce_reference(x, layout, axes, op);
    }
    let out_len = n / red;
    let trailing = axes.iter().enumerate().all(|(i, &a)| a == rank - axes.len() + i);
    let leading = axes.iter().enumerate().all(|(i, &a)| a == i);
    if let Some(r) = layout.contiguous_range() {
        let xs = &x[r];
        if trailing {
            // Row reductions: each output is one contiguous run of `red` elements.
            let rows = xs.chunks(red);
            return if n >= PARALLEL_THRESHOLD {
                crate::backend::cpu::warm::keep_workers_warm();
                xs.par_chunks(red)
                    .with_min_len((PARALLEL_THRESHOLD / red).max(1))
                    .map(|row| reduce_slice(op, row))
                    .collect_pooled()
            } else {
                rows.map(|row| reduce_slice(op, row)).collect_pooled()
            };
        }
        if leading {
            // Column reductions: fold whole rows into an accumulator row.
            let cols = out_len;
            let fold_rows = |rows: &[T]| {
                let mut acc = super::alloc::filled(cols, identity::<T>(op));
                if op == ReduceOp::Sum && sum_rows_f32(&mut acc, rows) {
                    return acc;
                }
                for row in rows.chunks(cols) {
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a = combine(op, *a, v);
                    }
                }
                acc
            };
            if n < PARALLEL_THRESHOLD || red < 2 {
                return fold_rows(xs);
            }
            let rows_per_task = red.div_ceil(rayon::current_num_threads().max(1));
            crate::backend::cpu::warm::keep_workers_warm();
            let partial: Vec<Vec<T>> = xs.par_chunks(rows_per_task * cols).map(fold_rows).collect();
            let mut acc = super::alloc::filled(cols, identity::<T>(op));
            for p in partial {
                for (a, &v) in acc.iter_mut().zip(&p) {
                    *a = combine(op, *a, v);
                }
                super::alloc::recycle(p);
            }
            return acc;
        }
        if let Some((outer, kept, inner)) = sandwich(layout.dims(), axes) {
            // Reduced axes before and after the kept ones: `[outer, kept, inner] → [kept]`
            // (batch-norm statistics over (N, H, W) of [N, C, H, W]). Each output folds
            // `outer` contiguous runs of `inner` elements; outputs are independent tasks.
            let reduce_one = |k: usize| {
                (0..outer).fold(identity::<T>(op), |acc, i| {
                    let start = (i * kept + k) * inner;
                    combine(op, acc, reduce_slice(op, &xs[start..start + inner]))
                })
            };
            return if n >= PARALLEL_THRESHOLD {
                crate::backend::cpu::warm::keep_workers_warm();
                (0..kept).into_par_iter().map(reduce_one).collect_pooled()
            } else {
                (0..kept).map(reduce_one).collect_pooled()
            };
        }
    }
    reduce_reference(x, layout, axes, op)
}

/// `(outer, kept, inner)` sizes when `axes` are a leading run and a trailing
/// run of axes with at least one kept axis between them.
fn sandwich(dims: &[usize], axes: &[usize]) -> Option<(usize, usize, usize)> {
    let rank = dims.len();
    let lead = axes.iter().enumerate().take_while(|&(i, &a)| a == i).count();
    let trail = &axes[lead..];
    if lead == 0 || trail.is_empty() || trail.iter().enumerate().any(|(i, &a)| a != rank - trail.len() + i) || lead >= rank - trail.len() {
        return None;
    }
    let outer = dims[..lead].iter().product();
    let kept = dims[lead..rank - trail.len()].iter().product();
    let inner = dims[rank - trail.len()..].iter().product();
    Some((outer, kept, inner))
}

impl ReduceKernels for CpuStorage {
    fn reduce(&self, layout: &Layout, axes: &[usize], op: ReduceOp) -> Result<Self> {
        check_reduce(op, (self.dtype(), layout), axes)?;
        simd::selected(op.name())?;
        cpu_float_dispatch!(op.name(), self, |x: T| Ok(super::wrap_float(reduce_fast(x, layout, axes, op))))
    }

    fn argmax(&self, layout: &Layout, axis: usize) -> Result<Self> {
        check_argmax((self.dtype(), layout), axis)?;
        cpu_float_dispatch!("argmax", self, |x: T| {
            let red = layout.dims()[axis];
            let perm = reduced_last(layout.rank(), &[axis]);
            let offsets = layout.permute("argmax", &perm)?.offsets_vec();
            let out: Vec<i64> = offsets
                .chunks(red.max(1))
                .map(|run| {
                    let mut best = 0;
                    for (k, &o) in run.iter().enumerate() {
                        if x[o] > x[run[best]] || (x[o].is_nan() && !x[run[best]].is_nan()) {
                            best = k;
                        }
                    }
                    best as i64
                })
                .collect();
            Ok(<i64 as CpuElem>::wrap(out))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_data::ramp;
    use super::*;

    #[test]
    fn fast_paths_match_the_reference() {
        let dims = [5usize, 7, 300];
        let n: usize = dims.iter().product();
        let x: Vec<f64> = ramp(n, 10.0, 0);
        let l = Layout::contiguous(dims);
        for axes in [vec![2], vec![1, 2], vec![0], vec![0, 1], vec![1], vec![0, 2], vec![0, 1, 2]] {
            for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
                let fast = reduce_fast(&x, &l, &axes, op);
                let slow = reduce_reference(&x, &l, &axes, op);
                assert_eq!(fast.len(), slow.len());
                for (a, b) in fast.iter().zip(&slow) {
                    assert!((a - b).abs() < 1e-9, "{op:?} {axes:?}: {a} vs {b}");
                }
            }
        }
    }

    /// f32 column sums (the SIMD rows) add in the scalar loop's order: equal
    /// to the reference bit for bit, on one thread and split over several.
    #[test]
    fn f32_column_sums_match_the_reference_exactly() {
        for &(rows, cols) in &[(7usize, 13usize), (300, 257), (1, 40), (2000, 33), (9, 512), (5, 1030), (40, 1536)] {
            let x: Vec<f32> = ramp::<f64>(rows * cols, 3.0, 1).iter().map(|&v| v as f32).collect();
            let l = Layout::contiguous([rows, cols]);
            let want = reduce_reference(&x, &l, &[0], ReduceOp::Sum);
            let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            assert_eq!(one.install(|| reduce_fast(&x, &l, &[0], ReduceOp::Sum)), want, "{rows}x{cols}");
            if rows * cols >= PARALLEL_THRESHOLD {
                // Split among threads, each part summed in order, the parts added in order.
                let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
                let got = pool.install(|| reduce_fast(&x, &l, &[0], ReduceOp::Sum));
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{rows}x{cols}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn batch_norm_statistics_take_the_sandwich_path_and_match() {
        // [N, C, H, W] reduced over (0, 2, 3), large enough to run in parallel.
        let dims = [16usize, 8, 20, 30];
        assert_eq!(sandwich(&dims, &[0, 2, 3]), Some((16, 8, 600)));
        assert_eq!(sandwich(&dims, &[0, 1]), None);
        assert_eq!(sandwich(&dims, &[1, 3]), None);
        let n: usize = dims.iter().product();
        let mut x: Vec<f64> = ramp(n, 10.0, 0);
        x[12345] = f64::NAN;
        let l = Layout::contiguous(dims);
        for axes in [vec![0, 2, 3], vec![0, 3], vec![0, 1, 3]] {
            for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
                let fast = reduce_fast(&x, &l, &axes, op);
                let slow = reduce_reference(&x, &l, &axes, op);
                assert_eq!(fast.len(), slow.len());
                for (a, b) in fast.iter().zip(&slow) {
                    assert!((a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-9, "{op:?} {axes:?}: {a} vs {b}");
                }
            }
        }
    }
}
