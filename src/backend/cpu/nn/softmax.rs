//! CPU kernels for softmax (`backend/contract/nn/softmax.rs`), plus the row
//! helpers the other row-wise kernels (layer_norm, cross_entropy) share.
//!
//! Every kernel here sees `x: [rows, C]` (the leading axes flattened), one
//! contiguous row at a time. f32 rows go through `cpu::simd`; f64 through
//! the generic scalar code.

use crate::backend::contract::nn::softmax::{check_softmax, check_softmax_backward, SoftmaxKernels, SoftmaxKind};
use crate::backend::contract::row_len;
use crate::backend::cpu::simd;
use crate::backend::cpu::{contiguous_or_gather, wrap_float, CpuElem, CpuStorage, PARALLEL_THRESHOLD};
use crate::cpu_float_dispatch;
use crate::types::{Float, Layout};
use crate::{Error, Result};
use rayon::prelude::*;

/// Fill `out: [rows, c]` one row at a time with `f(row, out_row)`; rows are
/// split across rayon workers once the whole is large enough to pay for it.
pub(crate) fn for_each_row<T: Send>(out: &mut [T], c: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if out.is_empty() || c == 0 {
        return;
    }
    if out.len() < PARALLEL_THRESHOLD {
        out.chunks_mut(c).enumerate().for_each(|(r, o)| f(r, o));
    } else {
        crate::backend::cpu::warm::keep_workers_warm();
        let min_rows = (PARALLEL_THRESHOLD / 4 / c).max(1);
        out.par_chunks_mut(c).enumerate().with_min_len(min_rows).for_each(|(r, o)| f(r, o));
    }
}

#[inline]
pub(crate) fn row_max<T: Float>(row: &[T]) -> T {
    row.iter().fold(T::NEG_INFINITY, |m, &x| m.max(x))
}

/// `Σ exp(x − max)` over one row. f32 goes through the SIMD exp in blocks
/// that fit on the stack.
pub(crate) fn sum_exp_shifted<T: Float>(row: &[T], max: T) -> T {
    if let Some(row) = T::as_f32_slice(row) {
        const BLOCK: usize = 256;
        let m = max.to_f64() as f32;
        let (mut shifted, mut e) = ([0f32; BLOCK], [0f32; BLOCK]);
        let mut total = 0f32;
        for chunk in row.chunks(BLOCK) {
            let n = chunk.len();
            for (d, &x) in shifted[..n].iter_mut().zip(chunk) {
                *d = x - m;
            }
            simd::exp_f32(&shifted[..n], &mut e[..n]);
            total += e[..n].iter().sum::<f32>();
        }
        return T::from_f64(total as f64);
    }
    row.iter().map(|&x| (x - max).exp()).sum()
}

/// `dst = exp((x − max) − extra)` over one row (f32 through the SIMD exp in
/// blocks). With `extra = ln Σ exp(x − max)` this is the softmax.
pub(crate) fn exp_shifted_into<T: Float>(row: &[T], max: T, extra: T, dst: &mut [T]) {
    if let (Some(row), Some(dst)) = (T::as_f32_slice(row), T::as_f32_slice_mut(dst)) {
        const BLOCK: usize = 256;
        let (m, e) = (max.to_f64() as f32, extra.to_f64() as f32);
        let mut shifted = [0f32; BLOCK];
        for (chunk, out) in row.chunks(BLOCK).zip(dst.chunks_mut(BLOCK)) {
            let n = chunk.len();
            for (d, &x) in shifted[..n].iter_mut().zip(chunk) {
                *d = (x - m) - e;
            }
            simd::exp_f32(&shifted[..n], out);
        }
        return;
    }
    for (d, &x) in dst.iter_mut().zip(row) {
        *d = ((x - max) - extra).exp();
    }
}

/// softmax of one row.
fn softmax_row<T: Float>(src: &[T], dst: &mut [T]) {
    if let (Some(s), Some(d)) = (T::as_f32_slice(src), T::as_f32_slice_mut(dst)) {
        simd::softmax_row_f32(s, d);
        return;
    }
    let max = row_max(src);
    let mut sum = T::ZERO;
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = (s - max).exp();
        sum += *d;
    }
    let inv = T::ONE / sum;
    for d in dst.iter_mut() {
        *d = *d * inv;
    }
}

/// log-softmax of one row: `x − max − ln Σ exp(x − max)`.
fn log_softmax_row<T: Float>(src: &[T], dst: &mut [T]) {
    let max = row_max(src);
    let log_sum = sum_exp_shifted(src, max).ln();
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = (s - max) - log_sum;
    }
}

/// `dx = y ⊙ (dy − Σ dy ⊙ y)` for one row.
fn softmax_backward_row<T: Float>(y: &[T], dy: &[T], dx: &mut [T]) {
    if let (Some(y32), Some(dy32), Some(dx32)) = (T::as_f32_slice(y), T::as_f32_slice(dy), T::as_f32_slice_mut(dx)) {
        return simd::softmax_backward_row_f32(y32, dy32, dx32);
    }
    let dot: T = y.iter().zip(dy).map(|(&y, &g)| y * g).sum();
    for ((d, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
        *d = y * (g - dot);
    }
}

/// `dx = dy − exp(y) ⊙ Σ dy` for one row (`exp(y)` is the softmax).
fn log_softmax_backward_row<T: Float>(y: &[T], dy: &[T], dx: &mut [T]) {
    let total: T = dy.iter().copied().sum();
    if let (Some(y32), Some(dx32)) = (T::as_f32_slice(y), T::as_f32_slice_mut(dx)) {
        simd::exp_f32(y32, dx32);
        for (d, &g) in dx.iter_mut().zip(dy) {
            *d = g - *d * total;
        }
        return;
    }
    for ((d, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
        *d = g - y.exp() * total;
    }
}

/// x: [rows, c] contiguous → y: [rows, c].
pub fn softmax_rows<T: Float>(x: &[T], c: usize, kind: SoftmaxKind) -> Vec<T> {
    let mut out = crate::backend::cpu::alloc::zeroed(x.len());
    for_each_row(&mut out, c, |r, o| {
        let src = &x[r * c..(r + 1) * c];
        match kind {
            SoftmaxKind::Softmax => softmax_row(src, o),
            SoftmaxKind::LogSoftmax => log_softmax_row(src, o),
        }
    });
    out
}

/// y, dy: [rows, c] contiguous → dx: [rows, c].
pub fn softmax_backward_rows<T: Float>(y: &[T], dy: &[T], c: usize, kind: SoftmaxKind) -> Vec<T> {
    let mut out = crate::backend::cpu::alloc::zeroed(y.len());
    for_each_row(&mut out, c, |r, o| {
        let (y, dy) = (&y[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
        match kind {
            SoftmaxKind::Softmax => softmax_backward_row(y, dy, o),
            SoftmaxKind::LogSoftmax => log_softmax_backward_row(y, dy, o),
        }
    });
    out
}

/// The plain reference: each output element from its own formula, one thread.
pub fn softmax_reference<T: Float>(x: &[T], c: usize, kind: SoftmaxKind) -> Vec<T> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(c.max(1)) {
        let mut max = T::NEG_INFINITY;
        for &v in row {
            if v > max {
                max = v;
            }
        }
        let mut denom = T::ZERO;
        for &v in row {
            denom += (v - max).exp();
        }
        for &v in row {
            out.push(match kind {
                SoftmaxKind::Softmax => (v - max).exp() / denom,
                SoftmaxKind::LogSoftmax => v - max - denom.ln(),
            });
        }
    }
    out
}

/// The plain reference backward: the full Jacobian-vector product `dxⱼ = Σᵢ dyᵢ ∂yᵢ/∂xⱼ`,
/// O(c²) per row, with `∂yᵢ/∂xⱼ = yᵢ(δᵢⱼ − yⱼ)` (softmax) or `δᵢⱼ − pⱼ` (log-softmax).
pub fn softmax_backward_reference<T: Float>(y: &[T], dy: &[T], c: usize, kind: SoftmaxKind) -> Vec<T> {
    let mut out = Vec::with_capacity(y.len());
    for (yr, gr) in y.chunks(c.max(1)).zip(dy.chunks(c.max(1))) {
        for j in 0..yr.len() {
            let mut acc = T::ZERO;
            for i in 0..yr.len() {
                let delta = if i == j { T::ONE } else { T::ZERO };
                acc += match kind {
                    SoftmaxKind::Softmax => gr[i] * yr[i] * (delta - yr[j]),
                    SoftmaxKind::LogSoftmax => gr[i] * (delta - yr[j].exp()),
                };
            }
            out.push(acc);
        }
    }
    out
}

impl SoftmaxKernels for CpuStorage {
    fn softmax_last(&self, layout: &Layout, kind: SoftmaxKind) -> Result<Self> {
        check_softmax(kind, (self.dtype(), layout))?;
        simd::selected(kind.name())?;
        cpu_float_dispatch!(kind.name(), self, |v: T| {
            let x = contiguous_or_gather(v, layout);
            Ok(wrap_float(softmax_rows(&x, row_len(layout), kind)))
        })
    }

    fn softmax_last_backward(&self, y_layout: &Layout, dy: &Self, dy_layout: &Layout, kind: SoftmaxKind) -> Result<Self> {
        let op = kind.name();
        check_softmax_backward(kind, (self.dtype(), y_layout), (dy.dtype(), dy_layout))?;
        simd::selected(op)?;
        cpu_float_dispatch!(op, self, |yv: T| {
            let gv = <T as CpuElem>::slice(dy).ok_or_else(|| Error::dtype(op, "backward operands have mixed dtypes"))?;
            let y = contiguous_or_gather(yv, y_layout);
            let g = contiguous_or_gather(gv, dy_layout);
            Ok(wrap_float(softmax_backward_rows(&y, &g, row_len(y_layout), kind)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::test_data::{assert_close, ramp};

    fn data<T: Float>(n: usize, spread: f64) -> Vec<T> {
        ramp(n, spread, 0)
    }

    fn fast_matches_reference<T: Float>(tol: f64) {
        // Small rows, one long row, an odd width, and the threaded path.
        for (rows, c, spread) in [(3, 5, 4.0), (1, 1000, 10.0), (7, 33, 2e4), (300, 257, 8.0), (2, 1, 1.0)] {
            let x = data::<T>(rows * c, spread);
            let dy = data::<T>(rows * c + 3, 3.0)[3..].to_vec();
            for kind in [SoftmaxKind::Softmax, SoftmaxKind::LogSoftmax] {
                let y = softmax_rows(&x, c, kind);
                assert_close(&y, &softmax_reference(&x, c, kind), tol, kind.name());
                if rows * c <= 2000 {
                    let dx = softmax_backward_rows(&y, &dy, c, kind);
                    assert_close(&dx, &softmax_backward_reference(&y, &dy, c, kind), tol * 10.0, "backward");
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
    fn sum_exp_blocks_agree_with_the_scalar_sum() {
        let x = data::<f32>(1000, 6.0);
        let max = row_max(&x);
        let blocked = sum_exp_shifted(&x, max) as f64;
        let plain: f64 = x.iter().map(|&v| ((v - max) as f64).exp()).sum();
        assert!((blocked - plain).abs() < 1e-4 * plain, "{blocked} vs {plain}");
    }
}
