//! The scalar bodies: what a CPU without AVX2 (or a non-x86 build) runs. The
//! formula kernels (`math.rs` over one `f32` lane, through `map1` and `map2`) compute
//! bit for bit what the vector bodies do; the row kernels are plain loops (over
//! libm's `exp` for softmax), the references the vector row kernels are
//! tested against.

use super::lanes::Lanes;
use super::{Elementwise1, Elementwise2, Isa, Kernels, LnBackwardIn, Operand};

pub(super) static KERNELS: Kernels = Kernels {
    isa: Isa::Scalar,
    add: add_f32,
    sub: sub_f32,
    mul: mul_f32,
    sum: sum_f32,
    max: max_f32,
    dot: dot_f32,
    exp_affine_sum: exp_affine_sum_f32,
    softmax_row: softmax_row_f32,
    softmax_backward_row: softmax_backward_row_f32,
    layer_norm_row: layer_norm_row_f32,
    layer_norm_backward_row: ln_backward,
};

/// `dst[i] = E(src[i])` for a formula of `math.rs`.
pub(super) fn map1<E: Elementwise1>(src: &[f32], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = E::apply(s);
    }
}

/// `out[i] = E(a[i], b[i])` for a formula of `math.rs`.
pub(super) fn map2<E: Elementwise2>(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = E::apply(a, b);
    }
}

/// [`super::Simd::select_f32`] on operands cut to `out`'s length.
pub(super) fn select(cond: Operand, on_true: Operand, on_false: Operand, out: &mut [f32]) {
    for (k, o) in out.iter_mut().enumerate() {
        *o = cond.at(k).select_nonzero(on_true.at(k), on_false.at(k));
    }
}

pub fn add_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a + b;
    }
}

pub fn sub_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a - b;
    }
}

pub fn mul_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a * b;
    }
}

pub fn sum_f32(x: &[f32]) -> f32 {
    x.iter().sum()
}

pub fn max_f32(x: &[f32]) -> f32 {
    x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(&a, &b)| a * b).sum()
}

pub fn exp_affine_sum_f32(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = super::math::exp(*v * scale - shift);
        sum += *v;
    }
    sum
}

pub fn softmax_row_f32(src: &[f32], dst: &mut [f32]) {
    // Rust's `max` skips NaNs, so a NaN only poisons the sum (and with it the row).
    let max = max_f32(src);
    let mut sum = 0.0;
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = (s - max).exp();
        sum += *d;
    }
    let inv = 1.0 / sum;
    for d in dst.iter_mut() {
        *d *= inv;
    }
}

pub fn softmax_backward_row_f32(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    let dot = dot_f32(y, dy);
    for ((d, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
        *d = y * (g - dot);
    }
}

/// Shifted two-pass statistics, as the vector kernels: `d = x - m0` is exact near
/// the mean and `c = mean(d)` corrects `m0`'s rounding.
pub fn layer_norm_row_f32(src: &[f32], gamma: Option<&[f32]>, beta: Option<&[f32]>, eps: f32, dst: &mut [f32]) -> (f32, f32) {
    let n = src.len() as f32;
    let m0 = src.iter().sum::<f32>() / n;
    let c = src.iter().map(|&x| x - m0).sum::<f32>() / n;
    let var = src.iter().map(|&x| (x - m0) * (x - m0)).sum::<f32>() / n - c * c;
    let var = if var < 0.0 { 0.0 } else { var };
    let rstd = 1.0 / (var + eps).sqrt();
    for (i, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
        let g = gamma.map_or(1.0, |g| g[i]);
        let b = beta.map_or(0.0, |b| b[i]);
        *d = ((s - m0) - c) * rstd * g + b;
    }
    (m0 + c, rstd)
}

/// See [`super::layer_norm_backward_row_f32`]; all slices have the same length.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward_row_f32(
    x: &[f32],
    dy: &[f32],
    gamma: Option<&[f32]>,
    mean: f32,
    rstd: f32,
    dx: &mut [f32],
    mut dgamma: Option<&mut [f32]>,
    mut dbeta: Option<&mut [f32]>,
) {
    let n = x.len();
    let (mut g_mean, mut gx_mean) = (0.0f32, 0.0f32);
    for i in 0..n {
        let xhat = (x[i] - mean) * rstd;
        let g = dy[i] * gamma.map_or(1.0, |w| w[i]);
        g_mean += g;
        gx_mean += g * xhat;
        if let Some(dg) = dgamma.as_deref_mut() {
            dg[i] += dy[i] * xhat;
        }
        if let Some(db) = dbeta.as_deref_mut() {
            db[i] += dy[i];
        }
    }
    g_mean /= n as f32;
    gx_mean /= n as f32;
    for i in 0..n {
        let xhat = (x[i] - mean) * rstd;
        let g = dy[i] * gamma.map_or(1.0, |w| w[i]);
        dx[i] = rstd * (g - g_mean - xhat * gx_mean);
    }
}

fn ln_backward(i: &LnBackwardIn, dx: &mut [f32], dgamma: Option<&mut [f32]>, dbeta: Option<&mut [f32]>) {
    layer_norm_backward_row_f32(i.x, i.dy, i.gamma, i.mean, i.rstd, dx, dgamma, dbeta)
}
