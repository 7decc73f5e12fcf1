//! CPU kernels for layer_norm (`backend/contract/nn/layer_norm.rs`).
//!
//! x: `[rows, C]` (leading axes flattened), weight/bias: `[C]`, mean/rstd: `[rows]`.
//! The forward is one pass per row (f32 rows through `simd::layer_norm_row_f32`).
//! The backward is two passes per row; weight and bias gradients are summed
//! over rows per rayon task, then the task partials are added.

use crate::backend::contract::nn::layer_norm::{check_layer_norm, check_layer_norm_backward, LayerNormForward, LayerNormGrads, LayerNormKernels};
use crate::backend::contract::row_len;
use crate::backend::cpu::alloc::{self, CollectPooled};
use crate::backend::cpu::simd;
use crate::backend::cpu::{build_in_parts, contiguous_or_gather, wrap_float, Contiguous, CpuElem, CpuStorage, PARALLEL_THRESHOLD};
use crate::backend::{described, BackendStorage};
use crate::cpu_float_dispatch;
use crate::types::{Float, Layout};
use crate::{Error, Result};

/// Normalise one row into `dst`; returns `(mean, rstd)`.
fn forward_row<T: Float>(src: &[T], w: Option<&[T]>, b: Option<&[T]>, eps: T, dst: &mut [T]) -> (T, T) {
    if let (Some(s), Some(d)) = (T::as_f32_slice(src), T::as_f32_slice_mut(dst)) {
        let w = w.and_then(T::as_f32_slice);
        let b = b.and_then(T::as_f32_slice);
        let (m, r) = simd::layer_norm_row_f32(s, w, b, eps.to_f64() as f32, d);
        return (T::from_f64(m as f64), T::from_f64(r as f64));
    }
    let n = T::from_f64(src.len() as f64);
    let mean = src.iter().copied().sum::<T>() / n;
    let var = src.iter().map(|&x| (x - mean) * (x - mean)).sum::<T>() / n;
    let rstd = T::ONE / (var + eps).sqrt();
    for (j, (d, &x)) in dst.iter_mut().zip(src).enumerate() {
        let xhat = (x - mean) * rstd;
        let scaled = match w {
            Some(w) => xhat * w[j],
            None => xhat,
        };
        *d = match b {
            Some(b) => scaled + b[j],
            None => scaled,
        };
    }
    (mean, rstd)
}

/// Rows per rayon task for `rows` rows of `c`: a few tasks per worker, none
/// under a quarter of [`PARALLEL_THRESHOLD`] elements.
fn rows_per_task(rows: usize, c: usize) -> usize {
    let parts = rayon::current_num_threads().max(1) * 4;
    rows.div_ceil(parts).max((PARALLEL_THRESHOLD / 4 / c.max(1)).max(1))
}

/// x: `[rows, c]` contiguous → (y: `[rows, c]`, mean: `[rows]`, rstd: `[rows]`).
///
/// `y` is built task by task ([`build_in_parts`]): each task zeroes its own
/// rows in its core's cache instead of the calling thread zeroing all of `y`
/// first, a serial pass over the output.
pub fn layer_norm_rows<T: Float>(x: &[T], c: usize, w: Option<&[T]>, b: Option<&[T]>, eps: T) -> (Vec<T>, Vec<T>, Vec<T>) {
    let rows = x.len().checked_div(c).unwrap_or(0);
    if rows == 0 {
        return (alloc::zeroed(x.len()), alloc::zeroed(0), alloc::zeroed(0));
    }
    let per_task = rows_per_task(rows, c);
    let (y, stats) = build_in_parts(x.len(), per_task * c, x.len() >= PARALLEL_THRESHOLD, |start, part| {
        part.chunks_exact_mut(c)
            .enumerate()
            .map(|(k, o)| {
                let r = start / c + k;
                forward_row(&x[r * c..(r + 1) * c], w, b, eps, o)
            })
            .collect::<Vec<_>>()
    });
    // One list first: `collect_pooled` takes its buffer from the pool only
    // for an iterator of known length, which a flattened one is not.
    let stats: Vec<(T, T)> = stats.into_iter().flatten().collect();
    let (mean, rstd) = (stats.iter().map(|s| s.0).collect_pooled(), stats.iter().map(|s| s.1).collect_pooled());
    (y, mean, rstd)
}

/// Accumulators of one task: dweight and dbias partial sums over its rows.
struct Partial<T> {
    dw: Vec<T>,
    db: Vec<T>,
}

/// x, dy: `[rows, c]`; mean, rstd: `[rows]` → (dx: `[rows, c]`, dweight: `[c]`, dbias: `[c]`).
/// dweight/dbias are returned empty unless asked for.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward_rows<T: Float>(
    x: &[T],
    dy: &[T],
    c: usize,
    w: Option<&[T]>,
    mean: &[T],
    rstd: &[T],
    want_dw: bool,
    want_db: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let rows = mean.len();
    if rows == 0 || c == 0 {
        return (
            alloc::zeroed(x.len()),
            vec![T::ZERO; if want_dw { c } else { 0 }],
            vec![T::ZERO; if want_db { c } else { 0 }],
        );
    }
    let n = T::from_f64(c as f64);
    // One task: rows starting at `first`, written into `dx_chunk`.
    let task = |first: usize, dx_chunk: &mut [T]| -> Partial<T> {
        let mut p = Partial {
            dw: vec![T::ZERO; if want_dw { c } else { 0 }],
            db: vec![T::ZERO; if want_db { c } else { 0 }],
        };
        for (k, dxr) in dx_chunk.chunks_mut(c).enumerate() {
            let r = first + k;
            let (xr, gr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
            let (m, s) = (mean[r], rstd[r]);
            if let (Some(x32), Some(g32), Some(dx32)) = (T::as_f32_slice(xr), T::as_f32_slice(gr), T::as_f32_slice_mut(dxr)) {
                // f32 rows: the SIMD kernel computes the same formulas (tested against the scalar path below).
                let w32 = w.and_then(T::as_f32_slice);
                let dw32 = if want_dw { T::as_f32_slice_mut(&mut p.dw) } else { None };
                let db32 = if want_db { T::as_f32_slice_mut(&mut p.db) } else { None };
                simd::layer_norm_backward_row_f32(x32, g32, w32, m.to_f64() as f32, s.to_f64() as f32, dx32, dw32, db32);
                continue;
            }
            let wj = |j: usize| w.map_or(T::ONE, |w| w[j]);
            let (mut sum_g, mut sum_gx) = (T::ZERO, T::ZERO);
            for (j, (&xv, &gv)) in xr.iter().zip(gr).enumerate() {
                let g = gv * wj(j);
                sum_g += g;
                sum_gx += g * ((xv - m) * s);
            }
            let (mean_g, mean_gx) = (sum_g / n, sum_gx / n);
            for (j, ((d, &xv), &gv)) in dxr.iter_mut().zip(xr).zip(gr).enumerate() {
                let xhat = (xv - m) * s;
                *d = s * (gv * wj(j) - mean_g - xhat * mean_gx);
            }
            if want_dw {
                for ((a, &xv), &gv) in p.dw.iter_mut().zip(xr).zip(gr) {
                    *a += gv * ((xv - m) * s);
                }
            }
            if want_db {
                for (a, &gv) in p.db.iter_mut().zip(gr) {
                    *a += gv;
                }
            }
        }
        p
    };
    // dx is built task by task ([`build_in_parts`]): each task zeroes its own
    // rows in its core's cache, not the calling thread all of dx first.
    let per_task = if x.len() < PARALLEL_THRESHOLD { rows } else { rows_per_task(rows, c) };
    let (dx, partials) = build_in_parts(x.len(), per_task * c, x.len() >= PARALLEL_THRESHOLD, |start, chunk| task(start / c, chunk));
    let mut total = Partial {
        dw: alloc::zeroed(if want_dw { c } else { 0 }),
        db: alloc::zeroed(if want_db { c } else { 0 }),
    };
    for p in partials {
        for (a, v) in total.dw.iter_mut().zip(p.dw) {
            *a += v;
        }
        for (a, v) in total.db.iter_mut().zip(p.db) {
            *a += v;
        }
    }
    (dx, total.dw, total.db)
}

/// The plain reference forward: textbook formulas, one row after another.
pub fn layer_norm_reference<T: Float>(x: &[T], c: usize, w: Option<&[T]>, b: Option<&[T]>, eps: T) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (mut y, mut means, mut rstds) = (Vec::new(), Vec::new(), Vec::new());
    let n = T::from_f64(c as f64);
    for row in x.chunks(c.max(1)) {
        let mut mean = T::ZERO;
        for &v in row {
            mean += v;
        }
        mean = mean / n;
        let mut var = T::ZERO;
        for &v in row {
            var += (v - mean) * (v - mean);
        }
        var = var / n;
        let std = (var + eps).sqrt();
        for (j, &v) in row.iter().enumerate() {
            let wj = w.map_or(T::ONE, |w| w[j]);
            let bj = b.map_or(T::ZERO, |b| b[j]);
            y.push((v - mean) / std * wj + bj);
        }
        means.push(mean);
        rstds.push(T::ONE / std);
    }
    (y, means, rstds)
}

/// The plain reference backward: the full Jacobian-vector product, O(c²) per row,
/// with `∂x̂ᵢ/∂xⱼ = rstd·(δᵢⱼ − 1/c − x̂ᵢx̂ⱼ/c)`.
pub fn layer_norm_backward_reference<T: Float>(x: &[T], dy: &[T], c: usize, w: Option<&[T]>, eps: T) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (_, means, rstds) = layer_norm_reference(x, c, None, None, eps);
    let n = T::from_f64(c as f64);
    let (mut dx, mut dw, mut db) = (Vec::new(), vec![T::ZERO; c], vec![T::ZERO; c]);
    for (r, (row, g)) in x.chunks(c.max(1)).zip(dy.chunks(c.max(1))).enumerate() {
        let (m, s) = (means[r], rstds[r]);
        let xhat: Vec<T> = row.iter().map(|&v| (v - m) * s).collect();
        for j in 0..c {
            let mut acc = T::ZERO;
            for i in 0..c {
                let delta = if i == j { T::ONE } else { T::ZERO };
                acc += g[i] * w.map_or(T::ONE, |w| w[i]) * s * (delta - T::ONE / n - xhat[i] * xhat[j] / n);
            }
            dx.push(acc);
            dw[j] += g[j] * xhat[j];
            db[j] += g[j];
        }
    }
    (dx, dw, db)
}

/// An optional `[C]` operand as a typed contiguous slice (its dtype checked).
fn operand<'a, T: CpuElem>(op: &'static str, name: &str, p: Option<(&'a CpuStorage, &Layout)>) -> Result<Option<Contiguous<'a, T>>> {
    p.map(|(s, l)| {
        T::slice(s)
            .map(|d| contiguous_or_gather(d, l))
            .ok_or_else(|| Error::dtype(op, format!("{name} has dtype {}, expected {}", s.dtype(), T::DTYPE)))
    })
    .transpose()
}

impl LayerNormKernels for CpuStorage {
    fn layer_norm(&self, layout: &Layout, weight: Option<(&Self, &Layout)>, bias: Option<(&Self, &Layout)>, eps: f64) -> Result<LayerNormForward<Self>> {
        const OP: &str = "layer_norm";
        check_layer_norm((self.dtype(), layout), described(weight), described(bias))?;
        simd::selected(OP)?;
        cpu_float_dispatch!(OP, self, |v: T| {
            let c = row_len(layout);
            let w = operand::<T>(OP, "weight", weight)?;
            let b = operand::<T>(OP, "bias", bias)?;
            let x = contiguous_or_gather(v, layout);
            let (y, mean, rstd) = layer_norm_rows(&x, c, w.as_deref(), b.as_deref(), <T as Float>::from_f64(eps));
            Ok(LayerNormForward {
                y: wrap_float(y),
                mean: wrap_float(mean),
                rstd: wrap_float(rstd),
            })
        })
    }

    fn layer_norm_backward(
        &self,
        x_layout: &Layout,
        weight: Option<(&Self, &Layout)>,
        mean: &Self,
        rstd: &Self,
        dy: &Self,
        dy_layout: &Layout,
        want_dweight: bool,
        want_dbias: bool,
    ) -> Result<LayerNormGrads<Self>> {
        const OP: &str = "layer_norm";
        let (_, c) = check_layer_norm_backward(
            (self.dtype(), x_layout),
            described(weight),
            (mean.dtype(), mean.len()),
            (rstd.dtype(), rstd.len()),
            (dy.dtype(), dy_layout),
        )?;
        simd::selected(OP)?;
        cpu_float_dispatch!(OP, self, |v: T| {
            let mismatch = || Error::dtype(OP, format!("backward operands have mixed dtypes (input is {})", self.dtype()));
            let (Some(m), Some(r), Some(g)) = (<T as CpuElem>::slice(mean), <T as CpuElem>::slice(rstd), <T as CpuElem>::slice(dy)) else {
                return Err(mismatch());
            };
            let w = operand::<T>(OP, "weight", weight)?;
            let x = contiguous_or_gather(v, x_layout);
            let g = contiguous_or_gather(g, dy_layout);
            let (dx, dw, db) = layer_norm_backward_rows(&x, &g, c, w.as_deref(), m, r, want_dweight, want_dbias);
            Ok(LayerNormGrads {
                dx: wrap_float(dx),
                dweight: want_dweight.then(|| wrap_float(dw)),
                dbias: want_dbias.then(|| wrap_float(db)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::test_data::{assert_close, ramp as data};

    fn fast_matches_reference<T: Float>(tol: f64) {
        for (rows, c) in [(3, 5), (1, 700), (4, 33), (200, 200), (5, 1)] {
            let x = data::<T>(rows * c, 6.0, 0);
            let dy = data::<T>(rows * c, 2.0, 17);
            let w = data::<T>(c, 3.0, 5);
            let b = data::<T>(c, 1.0, 9);
            let eps = T::from_f64(1e-5);
            for (wo, bo) in [(None, None), (Some(&w[..]), Some(&b[..])), (Some(&w[..]), None)] {
                let (y, m, r) = layer_norm_rows(&x, c, wo, bo, eps);
                let (y_ref, m_ref, r_ref) = layer_norm_reference(&x, c, wo, bo, eps);
                assert_close(&y, &y_ref, tol, "y");
                assert_close(&m, &m_ref, tol, "mean");
                assert_close(&r, &r_ref, tol, "rstd");
                let (dx, dw, db) = layer_norm_backward_rows(&x, &dy, c, wo, &m, &r, true, true);
                if c <= 200 {
                    let (dx_ref, dw_ref, db_ref) = layer_norm_backward_reference(&x, &dy, c, wo, eps);
                    // dx sums cancelling terms of size rstd·|g|: compare on that scale.
                    assert_close(&dx, &dx_ref, tol * 50.0, "dx");
                    assert_close(&dw, &dw_ref, tol * 50.0, "dweight");
                    assert_close(&db, &db_ref, tol * 50.0, "dbias");
                }
            }
        }
    }

    #[test]
    fn fast_paths_match_the_reference_f32() {
        fast_matches_reference::<f32>(1e-5);
    }

    #[test]
    fn fast_paths_match_the_reference_f64() {
        fast_matches_reference::<f64>(1e-12);
    }

    #[test]
    fn threaded_backward_sums_partials_like_one_task() {
        let (rows, c) = (400, 128); // above PARALLEL_THRESHOLD: several tasks
        let x = data::<f64>(rows * c, 4.0, 3);
        let dy = data::<f64>(rows * c, 2.0, 11);
        let w = data::<f64>(c, 2.0, 1);
        let (_, m, r) = layer_norm_rows(&x, c, Some(&w), None, 1e-5);
        let (dx, dw, db) = layer_norm_backward_rows(&x, &dy, c, Some(&w), &m, &r, true, true);
        let (mut dw1, mut db1) = (vec![0.0; c], vec![0.0; c]);
        for rr in 0..rows {
            let (_, dwr, dbr) = layer_norm_backward_rows(
                &x[rr * c..(rr + 1) * c],
                &dy[rr * c..(rr + 1) * c],
                c,
                Some(&w),
                &m[rr..rr + 1],
                &r[rr..rr + 1],
                true,
                true,
            );
            for j in 0..c {
                dw1[j] += dwr[j];
                db1[j] += dbr[j];
            }
            let dxr = layer_norm_backward_rows(
                &x[rr * c..(rr + 1) * c],
                &dy[rr * c..(rr + 1) * c],
                c,
                Some(&w),
                &m[rr..rr + 1],
                &r[rr..rr + 1],
                false,
                false,
            )
            .0;
            assert_eq!(&dx[rr * c..(rr + 1) * c], &dxr[..]);
        }
        assert_close(&dw, &dw1, 1e-12, "dweight");
        assert_close(&db, &db1, 1e-12, "dbias");
    }
}
