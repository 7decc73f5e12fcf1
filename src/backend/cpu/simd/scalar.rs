//! Scalar references: plain loops over libm and the `UnaryFn` formulas. They
//! define what the vector kernels must compute, and they are what a CPU
//! without AVX2 (or a non-x86 build) runs.

use super::{Isa, Kernels, LnBackwardIn};
use crate::backend::contract::unary::{Gelu, GeluTanh, UnaryFn};

pub(super) static KERNELS: Kernels = Kernels {
    isa: Isa::Scalar,
    exp: exp_f32,
    gelu_erf: gelu_erf_f32,
    gelu_tanh: gelu_tanh_f32,
    add: add_f32,
    sub: sub_f32,
    mul: mul_f32,
    sum: sum_f32,
    max: max_f32,
    dot: dot_f32,
    softmax_row: softmax_row_f32,
    softmax_backward_row: softmax_backward_row_f32,
    layer_norm_row: layer_norm_row_f32,
    layer_norm_backward_row: ln_backward,
};

pub fn exp_f32(src: &[f32], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s.exp();
    }
}

pub fn gelu_erf_f32(src: &[f32], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = Gelu.apply(s);
    }
}

pub fn gelu_tanh_f32(src: &[f32], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = GeluTanh.apply(s);
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
