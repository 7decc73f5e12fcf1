//! CPU kernels for the indexing family (`backend/contract/index.rs`).
//!
//! Every kernel sees its input as `[outer, axis, inner]`: the axes before the
//! indexed one, the indexed one, and the axes after it. Storage offsets of the
//! outer and inner parts are computed once (`sub_offsets`), so the strided
//! path costs one table lookup per element; when the inner part is contiguous
//! (always for a contiguous input), whole rows are copied with `memcpy` —
//! `index_select` along axis 0 of a `[V, D]` table (the embedding lookup) is
//! one row copy per id. Each fast kernel has a `*_reference` twin that walks
//! the output element by element; the tests compare the two.

use super::{contiguous_or_gather, gather as gather_layout, Contiguous, CpuElem, CpuStorage, PARALLEL_THRESHOLD};
use crate::backend::contract::check_indices_dtype;
use crate::backend::contract::index::{
    check_cat, check_gather, check_gather_backward, check_index_add, check_index_select, check_index_select_backward, check_scatter_add, IndexKernels,
};
use crate::cpu_float_dispatch;
use crate::types::{Float, Layout, Shape};
use crate::{Error, Result};
use rayon::prelude::*;

/// Like `cpu_float_dispatch!`, for kernels that only move data: every dtype.
macro_rules! any_dtype_dispatch {
    ($storage:expr, |$v:ident : $T:ident| $body:expr) => {
        match $storage {
            CpuStorage::F16($v) => {
                #[allow(dead_code)]
                type $T = half::f16;
                $body
            }
            CpuStorage::BF16($v) => {
                #[allow(dead_code)]
                type $T = half::bf16;
                $body
            }
            CpuStorage::F32($v) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            CpuStorage::F64($v) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            CpuStorage::I64($v) => {
                #[allow(dead_code)]
                type $T = i64;
                $body
            }
        }
    };
}

/// Rows handed to one rayon task: at least a few thousand elements, so the
/// scheduling cost stays small next to the copying.
fn min_rows(row_len: usize) -> usize {
    (4096 / row_len.max(1)).max(1)
}

/// Storage offsets (relative to the layout's offset) of a sub-block with `dims` and `strides`, row-major.
fn sub_offsets(dims: &[usize], strides: &[usize]) -> Vec<usize> {
    Layout::new(Shape::new(dims), strides.to_vec(), 0).offsets_vec()
}

/// Row-major multi-index of flat position `flat` in `dims` (references only).
fn unravel(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for (i, &d) in idx.iter_mut().zip(dims).rev() {
        *i = flat % d.max(1);
        flat /= d.max(1);
    }
    idx
}

fn offset_of(layout: &Layout, idx: &[usize]) -> usize {
    layout.offset() + idx.iter().zip(layout.strides()).map(|(i, s)| i * s).sum::<usize>()
}

/// The ids' values in row-major order, once they are known to be i64.
fn ids_slice<'a>(op: &'static str, ids: &'a CpuStorage, layout: &Layout) -> Result<Contiguous<'a, i64>> {
    check_indices_dtype(op, "indices", ids.dtype())?;
    let v = <i64 as CpuElem>::slice(ids).ok_or_else(|| Error::dtype(op, "indices are not i64"))?;
    Ok(contiguous_or_gather(v, layout))
}

fn typed<'a, T: CpuElem>(op: &'static str, s: &'a CpuStorage, expected: crate::DType) -> Result<&'a [T]> {
    T::slice(s).ok_or_else(|| Error::dtype(op, format!("operands have dtypes {expected} and {}; expected the same dtype", s.dtype())))
}

// ---- index_select / index_add ------------------------------------------------------

/// x: [outer, size, inner] (any strides) -> out: [outer, n, inner] contiguous, n = ids.len().
pub fn index_select_fast<T: Copy + Default + Send + Sync + 'static>(x: &[T], layout: &Layout, axis: usize, ids: &[i64]) -> Vec<T> {
    let (dims, strides) = (layout.dims(), layout.strides());
    let outer = sub_offsets(&dims[..axis], &strides[..axis]);
    let inner = sub_offsets(&dims[axis + 1..], &strides[axis + 1..]);
    let inner_contiguous = inner.iter().enumerate().all(|(k, &o)| k == o);
    let (n, ii, base, stride) = (ids.len(), inner.len(), layout.offset(), strides[axis]);
    let mut out = super::alloc::zeroed(outer.len() * n * ii);
    if out.is_empty() {
        return out;
    }
    // Output row r is (outer o, selected j).
    let fill = |r: usize, row: &mut [T]| {
        let start = base + outer[r / n] + ids[r % n] as usize * stride;
        if inner_contiguous {
            row.copy_from_slice(&x[start..start + ii]);
        } else {
            for (d, &k) in row.iter_mut().zip(&inner) {
                *d = x[start + k];
            }
        }
    };
    if out.len() >= PARALLEL_THRESHOLD {
        crate::backend::cpu::warm::keep_workers_warm();
        out.par_chunks_mut(ii).enumerate().with_min_len(min_rows(ii)).for_each(|(r, row)| fill(r, row));
    } else {
        out.chunks_mut(ii).enumerate().for_each(|(r, row)| fill(r, row));
    }
    out
}

/// The plain reference: one multi-index per output element.
pub fn index_select_reference<T: Copy>(x: &[T], layout: &Layout, axis: usize, ids: &[i64]) -> Vec<T> {
    let mut dims = layout.dims().to_vec();
    dims[axis] = ids.len();
    (0..dims.iter().product::<usize>())
        .map(|e| {
            let mut idx = unravel(e, &dims);
            idx[axis] = ids[idx[axis]] as usize;
            x[offset_of(layout, &idx)]
        })
        .collect()
}

/// `out = x` (contiguous copy) with `src[o, j, :]` added into `out[o, ids[j], :]`.
/// x: [outer, size, inner], src: [outer, n, inner], any strides.
pub fn index_add_fast<T: Float>(x: &[T], x_layout: &Layout, axis: usize, ids: &[i64], src: &[T], src_layout: &Layout) -> Vec<T> {
    let mut out = gather_layout(x, x_layout);
    index_add_into(&mut out, x_layout.dims(), axis, ids, src, src_layout);
    out
}

/// out: [outer, size, inner] contiguous (`dims`); src: [outer, n, inner], any strides.
fn index_add_into<T: Float>(out: &mut [T], dims: &[usize], axis: usize, ids: &[i64], src: &[T], src_layout: &Layout) {
    let src = contiguous_or_gather(src, src_layout);
    let (size, inner, n) = (dims[axis], dims[axis + 1..].iter().product::<usize>(), ids.len());
    if out.is_empty() || inner == 0 || n == 0 {
        return;
    }
    // Bucket the positions j by target (CSR): each output row then sums its sources in
    // increasing j, the same order on one thread or many, and rows never race.
    let mut starts = vec![0usize; size + 1];
    for &i in ids {
        starts[i as usize + 1] += 1;
    }
    for v in 0..size {
        starts[v + 1] += starts[v];
    }
    let mut next = starts.clone();
    let mut order = vec![0usize; n];
    for (j, &i) in ids.iter().enumerate() {
        order[next[i as usize]] = j;
        next[i as usize] += 1;
    }
    // Output row r is (outer o, target v).
    let add_row = |r: usize, row: &mut [T]| {
        let (o, v) = (r / size, r % size);
        for &j in &order[starts[v]..starts[v + 1]] {
            for (d, &s) in row.iter_mut().zip(&src[(o * n + j) * inner..][..inner]) {
                *d += s;
            }
        }
    };
    if out.len() >= PARALLEL_THRESHOLD {
        crate::backend::cpu::warm::keep_workers_warm();
        out.par_chunks_mut(inner)
            .enumerate()
            .with_min_len(min_rows(inner))
            .for_each(|(r, row)| add_row(r, row));
    } else {
        out.chunks_mut(inner).enumerate().for_each(|(r, row)| add_row(r, row));
    }
}

pub fn index_add_reference<T: Float>(x: &[T], x_layout: &Layout, axis: usize, ids: &[i64], src: &[T], src_layout: &Layout) -> Vec<T> {
    let mut out = gather_layout(x, x_layout);
    let out_layout = Layout::contiguous(x_layout.shape().clone());
    for (e, o) in src_layout.offsets().enumerate() {
        let mut idx = unravel(e, src_layout.dims());
        idx[axis] = ids[idx[axis]] as usize;
        out[offset_of(&out_layout, &idx)] += src[o];
    }
    out
}

// ---- gather / scatter_add ----------------------------------------------------------

/// `out[i] = x[i with i[axis] = ids[i]]`; x any strides; ids, out: `ids_dims`, contiguous.
pub fn gather_fast<T: Copy + Default + Send + Sync + 'static>(x: &[T], layout: &Layout, axis: usize, ids: &[i64], ids_dims: &[usize]) -> Vec<T> {
    let strides = layout.strides();
    // x's strides over the ids-shaped block: ids may be smaller than x off `axis`.
    let outer = sub_offsets(&ids_dims[..axis], &strides[..axis]);
    let inner = sub_offsets(&ids_dims[axis + 1..], &strides[axis + 1..]);
    let (na, ii, base, stride) = (ids_dims[axis], inner.len(), layout.offset(), strides[axis]);
    let mut out = super::alloc::zeroed(ids.len());
    if out.is_empty() {
        return out;
    }
    // Output row r (of the inner block) is (outer q, position j along axis).
    let fill = |r: usize, row: &mut [T]| {
        let start = base + outer[r / na];
        for ((d, &i), &k) in row.iter_mut().zip(&ids[r * ii..(r + 1) * ii]).zip(&inner) {
            *d = x[start + i as usize * stride + k];
        }
    };
    if out.len() >= PARALLEL_THRESHOLD {
        crate::backend::cpu::warm::keep_workers_warm();
        out.par_chunks_mut(ii).enumerate().with_min_len(min_rows(ii)).for_each(|(r, row)| fill(r, row));
    } else {
        out.chunks_mut(ii).enumerate().for_each(|(r, row)| fill(r, row));
    }
    out
}

pub fn gather_reference<T: Copy>(x: &[T], layout: &Layout, axis: usize, ids: &[i64], ids_dims: &[usize]) -> Vec<T> {
    ids.iter()
        .enumerate()
        .map(|(e, &i)| {
            let mut idx = unravel(e, ids_dims);
            idx[axis] = i as usize;
            x[offset_of(layout, &idx)]
        })
        .collect()
}

/// `out = x` (contiguous copy) with `src[i]` added at `i` with `i[axis] = ids[i]`.
/// x: [x dims], any strides; ids: `ids_dims` contiguous; src: `ids_dims`, any strides.
pub fn scatter_add_fast<T: Float>(x: &[T], x_layout: &Layout, axis: usize, ids: &[i64], ids_dims: &[usize], src: &[T], src_layout: &Layout) -> Vec<T> {
    let mut out = gather_layout(x, x_layout);
    scatter_add_into(&mut out, x_layout.shape(), axis, ids, ids_dims, src, src_layout);
    out
}

/// out: `x_shape`, contiguous; ids: `ids_dims` contiguous; src: `ids_dims`, any strides.
fn scatter_add_into<T: Float>(out: &mut [T], x_shape: &Shape, axis: usize, ids: &[i64], ids_dims: &[usize], src: &[T], src_layout: &Layout) {
    let src = contiguous_or_gather(src, src_layout);
    if out.is_empty() || ids.is_empty() {
        return;
    }
    let x_dims = x_shape.dims();
    let cs = x_shape.contiguous_strides();
    let x_inner = cs[axis];
    let slab = x_dims[axis] * x_inner;
    // Output slab p (one per outer coordinate of x) receives only the ids block q with
    // the same outer coordinates, so slabs can be filled independently.
    let slab_strides: Vec<usize> = cs[..axis].iter().map(|s| s / slab).collect();
    let mut q_of_p = vec![usize::MAX; out.len() / slab];
    for (q, p) in sub_offsets(&ids_dims[..axis], &slab_strides).into_iter().enumerate() {
        q_of_p[p] = q;
    }
    let inner = sub_offsets(&ids_dims[axis + 1..], &cs[axis + 1..]);
    let (ii, block) = (inner.len(), ids_dims[axis..].iter().product::<usize>());
    let add_slab = |p: usize, dst: &mut [T]| {
        let q = q_of_p[p];
        if q == usize::MAX {
            return;
        }
        let (ids_q, src_q) = (&ids[q * block..(q + 1) * block], &src[q * block..(q + 1) * block]);
        for (row_ids, row_src) in ids_q.chunks(ii).zip(src_q.chunks(ii)) {
            for ((&i, &s), &k) in row_ids.iter().zip(row_src).zip(&inner) {
                dst[i as usize * x_inner + k] += s;
            }
        }
    };
    if out.len() >= PARALLEL_THRESHOLD && q_of_p.len() > 1 {
        crate::backend::cpu::warm::keep_workers_warm();
        out.par_chunks_mut(slab).enumerate().for_each(|(p, dst)| add_slab(p, dst));
    } else {
        out.chunks_mut(slab).enumerate().for_each(|(p, dst)| add_slab(p, dst));
    }
}

pub fn scatter_add_reference<T: Float>(x: &[T], x_layout: &Layout, axis: usize, ids: &[i64], ids_dims: &[usize], src: &[T], src_layout: &Layout) -> Vec<T> {
    let mut out = gather_layout(x, x_layout);
    let out_layout = Layout::contiguous(x_layout.shape().clone());
    for ((e, &i), o) in ids.iter().enumerate().zip(src_layout.offsets()) {
        let mut idx = unravel(e, ids_dims);
        idx[axis] = i as usize;
        out[offset_of(&out_layout, &idx)] += src[o];
    }
    out
}

// ---- cat ---------------------------------------------------------------------------

/// parts: [outer, s_p, inner] (any strides) -> out: [outer, Σ s_p, inner]. Each outer
/// slab of the output is the parts' slabs back to back.
///
/// v2 (rows): a strided part is copied straight from its storage, slab by slab
/// through its strides, instead of gathered whole first through the generic
/// offset iterator (and then copied again). vit-tiny's class token cat
/// (`[128, 1, 64]` expanded ++ the patch embedding's transposed `[128, 49, 64]`)
/// took 1.1 ms per call that way.
pub fn cat_fast<T: Copy + Default + Send + Sync + 'static>(parts: &[(&[T], &Layout)], axis: usize) -> Vec<T> {
    let Some((_, l0)) = parts.first() else {
        return Vec::new();
    };
    let dims = l0.dims();
    let (outer, inner) = (dims[..axis].iter().product::<usize>(), dims[axis + 1..].iter().product::<usize>());
    let sizes: Vec<usize> = parts.iter().map(|(_, l)| l.dims()[axis] * inner).collect();
    let slab: usize = sizes.iter().sum();
    let mut out = super::alloc::zeroed(outer * slab);
    if out.is_empty() {
        return out;
    }
    let fill = |o: usize, dst: &mut [T]| {
        let mut at = 0;
        for ((data, layout), &len) in parts.iter().zip(&sizes) {
            let dst = &mut dst[at..at + len];
            match layout.contiguous_range() {
                Some(r) => dst.copy_from_slice(&data[r][o * len..(o + 1) * len]),
                None => {
                    let (ld, ls) = (layout.dims(), layout.strides());
                    // The offset of outer slab `o`: its index over the leading axes.
                    let (mut rest, mut base) = (o, layout.offset());
                    for d in (0..axis).rev() {
                        base += (rest % ld[d]) * ls[d];
                        rest /= ld[d];
                    }
                    strided_copy(data, base, &ld[axis..], &ls[axis..], dst);
                }
            }
            at += len;
        }
    };
    if out.len() >= PARALLEL_THRESHOLD && outer > 1 {
        crate::backend::cpu::warm::keep_workers_warm();
        out.par_chunks_mut(slab)
            .enumerate()
            .with_min_len(min_rows(slab))
            .for_each(|(o, dst)| fill(o, dst));
    } else {
        out.chunks_mut(slab).enumerate().for_each(|(o, dst)| fill(o, dst));
    }
    out
}

/// `dst` (contiguous, as long as `dims`' product) = the elements of `src` at
/// `base + Σ index·stride` over `dims`, in row-major order.
fn strided_copy<T: Copy>(src: &[T], base: usize, dims: &[usize], strides: &[usize], dst: &mut [T]) {
    match (dims, strides) {
        ([], _) | (_, []) => {
            if let Some(d) = dst.first_mut() {
                *d = src[base];
            }
        }
        ([_], [1]) => dst.copy_from_slice(&src[base..base + dst.len()]),
        ([_], [s]) => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = src[base + i * s];
            }
        }
        ([n, dims @ ..], [s, strides @ ..]) => {
            let step = dims.iter().product::<usize>();
            for (i, dst) in dst.chunks_mut(step.max(1)).take(*n).enumerate() {
                strided_copy(src, base + i * s, dims, strides, dst);
            }
        }
    }
}

pub fn cat_reference<T: Copy>(parts: &[(&[T], &Layout)], axis: usize) -> Vec<T> {
    let Some((_, l0)) = parts.first() else {
        return Vec::new();
    };
    let mut dims = l0.dims().to_vec();
    dims[axis] = parts.iter().map(|(_, l)| l.dims()[axis]).sum();
    (0..dims.iter().product::<usize>())
        .map(|e| {
            let mut idx = unravel(e, &dims);
            let mut p = 0;
            while idx[axis] >= parts[p].1.dims()[axis] {
                idx[axis] -= parts[p].1.dims()[axis];
                p += 1;
            }
            parts[p].0[offset_of(parts[p].1, &idx)]
        })
        .collect()
}

// ---- the trait ---------------------------------------------------------------------

impl IndexKernels for CpuStorage {
    fn index_select(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout) -> Result<Self> {
        const OP: &str = "index_select";
        let ids = ids_slice(OP, ids, ids_layout)?;
        check_index_select(layout, axis, &ids)?;
        any_dtype_dispatch!(self, |x: T| Ok(<T as CpuElem>::wrap(index_select_fast(x, layout, axis, &ids))))
    }

    fn index_add(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout, src: &Self, src_layout: &Layout) -> Result<Self> {
        const OP: &str = "index_add";
        let ids = ids_slice(OP, ids, ids_layout)?;
        check_index_add((self.dtype(), layout), axis, &ids, (src.dtype(), src_layout))?;
        cpu_float_dispatch!(OP, self, |x: T| {
            let s = typed::<T>(OP, src, self.dtype())?;
            Ok(super::wrap_float(index_add_fast(x, layout, axis, &ids, s, src_layout)))
        })
    }

    fn gather(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout) -> Result<Self> {
        const OP: &str = "gather";
        let ids_v = ids_slice(OP, ids, ids_layout)?;
        check_gather(layout, axis, ids_layout, &ids_v)?;
        any_dtype_dispatch!(self, |x: T| Ok(<T as CpuElem>::wrap(gather_fast(x, layout, axis, &ids_v, ids_layout.dims()))))
    }

    fn scatter_add(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout, src: &Self, src_layout: &Layout) -> Result<Self> {
        const OP: &str = "scatter_add";
        let ids_v = ids_slice(OP, ids, ids_layout)?;
        check_scatter_add((self.dtype(), layout), axis, ids_layout, &ids_v, (src.dtype(), src_layout))?;
        cpu_float_dispatch!(OP, self, |x: T| {
            let s = typed::<T>(OP, src, self.dtype())?;
            Ok(super::wrap_float(scatter_add_fast(x, layout, axis, &ids_v, ids_layout.dims(), s, src_layout)))
        })
    }

    fn index_select_backward(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout, input_shape: &Shape) -> Result<Self> {
        const OP: &str = "index_select_backward";
        let ids = ids_slice(OP, ids, ids_layout)?;
        check_index_select_backward((self.dtype(), layout), axis, &ids, input_shape)?;
        cpu_float_dispatch!(OP, self, |g: T| {
            // Zeroed allocation is lazy: rows no id touches cost nothing (most of a vocabulary).
            let mut out = vec![T::ZERO; input_shape.numel()];
            index_add_into(&mut out, input_shape.dims(), axis, &ids, g, layout);
            Ok(super::wrap_float(out))
        })
    }

    fn gather_backward(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout, input_shape: &Shape) -> Result<Self> {
        const OP: &str = "gather_backward";
        let ids_v = ids_slice(OP, ids, ids_layout)?;
        check_gather_backward((self.dtype(), layout), axis, ids_layout, &ids_v, input_shape)?;
        cpu_float_dispatch!(OP, self, |g: T| {
            let mut out = vec![T::ZERO; input_shape.numel()];
            scatter_add_into(&mut out, input_shape, axis, &ids_v, ids_layout.dims(), g, layout);
            Ok(super::wrap_float(out))
        })
    }

    fn cat(parts: &[(&Self, &Layout)], axis: usize) -> Result<Self> {
        const OP: &str = "cat";
        check_cat(parts.iter().map(|&(s, l)| (s.dtype(), l)), axis)?;
        let Some(&(first, _)) = parts.first() else {
            return Err(Error::value(OP, "expected at least one tensor, got an empty list"));
        };
        any_dtype_dispatch!(first, |_v: T| {
            let typed_parts = parts
                .iter()
                .map(|&(s, l)| Ok((typed::<T>(OP, s, first.dtype())?, l)))
                .collect::<Result<Vec<_>>>()?;
            Ok(<T as CpuElem>::wrap(cat_fast(&typed_parts, axis)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_data::ramp;
    use super::*;
    fn ids(n: usize, size: usize, seed: usize) -> Vec<i64> {
        (0..n).map(|j| ((j * 31 + seed * 17 + j * j) % size) as i64).collect()
    }
    /// Contiguous, permuted (all axes reversed) and sliced layouts of `dims`, over storage big enough for each.
    fn layouts(dims: &[usize]) -> Vec<Layout> {
        let rev: Vec<usize> = dims.iter().rev().copied().collect();
        let perm: Vec<usize> = (0..dims.len()).rev().collect();
        let mut big = dims.to_vec();
        big[0] += 2;
        let last = big.len() - 1;
        big[last] += 3;
        let sliced = Layout::contiguous(big).narrow(0, 1, dims[0]).narrow(last, 2, dims[last]);
        vec![Layout::contiguous(dims), Layout::contiguous(rev).permute("t", &perm).unwrap(), sliced]
    }
    const SHAPES: &[&[usize]] = &[&[7], &[5, 3], &[4, 1, 6], &[3, 4, 2, 5], &[400, 170]];

    #[test]
    fn index_select_and_index_add_match_the_reference() {
        for dims in SHAPES {
            for l in layouts(dims) {
                let x = ramp::<f64>(l.required_len() + 3, 10.0, 0);
                for axis in 0..dims.len() {
                    for n in [0, 1, 5, 2 * dims[axis] + 1] {
                        let ids = ids(n, dims[axis], axis);
                        let fast = index_select_fast(&x, &l, axis, &ids);
                        assert_eq!(fast, index_select_reference(&x, &l, axis, &ids), "{dims:?} axis {axis} n {n}");
                        let mut sd = dims.to_vec();
                        sd[axis] = n;
                        for sl in layouts(&sd).into_iter().filter(|_| n > 0) {
                            let src = ramp::<f64>(sl.required_len(), 10.0, 0);
                            let fast = index_add_fast(&x, &l, axis, &ids, &src, &sl);
                            assert_eq!(fast, index_add_reference(&x, &l, axis, &ids, &src, &sl), "{dims:?} axis {axis} n {n}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gather_and_scatter_add_match_the_reference() {
        for dims in SHAPES {
            for l in layouts(dims) {
                let x = ramp::<f64>(l.required_len(), 10.0, 0);
                for axis in 0..dims.len() {
                    // ids smaller than x off the axis and of any length along it
                    let mut id_dims: Vec<usize> = dims.iter().map(|&d| d.div_ceil(2)).collect();
                    id_dims[axis] = dims[axis] + 2;
                    let n: usize = id_dims.iter().product();
                    let ids = ids(n, dims[axis], axis + 3);
                    let fast = gather_fast(&x, &l, axis, &ids, &id_dims);
                    assert_eq!(fast, gather_reference(&x, &l, axis, &ids, &id_dims), "{dims:?} axis {axis}");
                    for sl in layouts(&id_dims) {
                        let src = ramp::<f64>(sl.required_len() + 1, 10.0, 0);
                        let fast = scatter_add_fast(&x, &l, axis, &ids, &id_dims, &src, &sl);
                        assert_eq!(fast, scatter_add_reference(&x, &l, axis, &ids, &id_dims, &src, &sl), "{dims:?} axis {axis}");
                    }
                }
            }
        }
    }

    #[test]
    fn backward_kernels_equal_adds_into_zeros() {
        let shape = Shape::new([6, 5, 4]);
        for axis in 0..3 {
            let size = shape.dims()[axis];
            let mut gd = shape.dims().to_vec();
            gd[axis] = 2 * size + 1;
            let ids_v = ids(gd[axis], size, axis);
            for gl in layouts(&gd) {
                let g = CpuStorage::F64(ramp::<f64>(gl.required_len(), 10.0, 0));
                let ids_s = CpuStorage::I64(ids_v.clone());
                let dx = g.index_select_backward(&gl, axis, &ids_s, &Layout::contiguous([ids_v.len()]), &shape).unwrap();
                let zeros = CpuStorage::F64(vec![0.0; shape.numel()]);
                let via_add = zeros
                    .index_add(&Layout::contiguous(shape.clone()), axis, &ids_s, &Layout::contiguous([ids_v.len()]), &g, &gl)
                    .unwrap();
                assert_eq!(dx, via_add);
            }
            let gd2: Vec<usize> = shape.dims().iter().enumerate().map(|(d, &n)| if d == axis { 3 } else { n - 1 }).collect();
            let ids_v = ids(gd2.iter().product(), size, axis + 1);
            let ids_s = CpuStorage::I64(ids_v);
            let il = Layout::contiguous(gd2.clone());
            for gl in layouts(&gd2) {
                let g = CpuStorage::F64(ramp::<f64>(gl.required_len(), 10.0, 0));
                let dx = g.gather_backward(&gl, axis, &ids_s, &il, &shape).unwrap();
                let zeros = CpuStorage::F64(vec![0.0; shape.numel()]);
                assert_eq!(dx, zeros.scatter_add(&Layout::contiguous(shape.clone()), axis, &ids_s, &il, &g, &gl).unwrap());
            }
        }
    }

    #[test]
    fn cat_matches_the_reference() {
        for dims in SHAPES {
            for axis in 0..dims.len() {
                let mut layouts_all = Vec::new();
                for (k, extra) in [0usize, 2, 1].into_iter().enumerate() {
                    let mut d = dims.to_vec();
                    d[axis] = extra + k;
                    layouts_all.push(layouts(&d).swap_remove(k % 3));
                }
                let datas: Vec<Vec<f64>> = layouts_all.iter().map(|l| ramp::<f64>(l.required_len() + 2, 10.0, 0)).collect();
                let parts: Vec<(&[f64], &Layout)> = datas.iter().map(|d| d.as_slice()).zip(&layouts_all).collect();
                assert_eq!(cat_fast(&parts, axis), cat_reference(&parts, axis), "{dims:?} axis {axis}");
            }
        }
    }

    #[test]
    fn bad_indices_are_errors_naming_value_size_and_op() {
        let x = CpuStorage::F32(vec![0.0; 6]);
        let l = Layout::contiguous([3, 2]);
        let bad = CpuStorage::I64(vec![0, 3]);
        let err = x.index_select(&l, 0, &bad, &Layout::contiguous([2])).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Index);
        assert!(
            err.to_string().contains("index_select") && err.message.contains("index 3") && err.message.contains("size 3"),
            "{err}"
        );
        let neg = CpuStorage::I64(vec![-1]);
        let err = x.gather(&l, 1, &neg, &Layout::contiguous([1, 1])).unwrap_err();
        assert!(err.message.contains("-1") && err.message.contains("negative"), "{err}");
        let float_ids = CpuStorage::F32(vec![0.0]);
        assert_eq!(
            x.index_select(&l, 0, &float_ids, &Layout::contiguous([1])).unwrap_err().kind,
            crate::ErrorKind::DType
        );
        assert_eq!(x.index_select(&l, 2, &bad, &Layout::contiguous([2])).unwrap_err().kind, crate::ErrorKind::Axis);
    }
}
