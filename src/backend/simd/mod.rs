//! Explicit x86-64 SIMD kernels for the hot elementwise and row-wise ops,
//! chosen at run time with `is_x86_feature_detected!`. Each public function
//! has a scalar reference beside it and a test comparing the two.
//!
//! (Scalar versions for now; the AVX2/AVX-512 bodies land in this module.)

use crate::ops::unary::{Gelu, GeluTanh, UnaryFn};

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

pub fn mul_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a * b;
    }
}

/// Numerically stable softmax of one row: `dst = exp(src - max) / Σ exp(src - max)`.
pub fn softmax_row_f32(src: &[f32], dst: &mut [f32]) {
    let max = src.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
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

/// Layer norm of one row: `dst = (src - mean) * rstd * gamma + beta`; returns `(mean, rstd)`
/// for the backward pass. `gamma`/`beta` of `None` mean 1 and 0.
pub fn layer_norm_row_f32(src: &[f32], gamma: Option<&[f32]>, beta: Option<&[f32]>, eps: f32, dst: &mut [f32]) -> (f32, f32) {
    let n = src.len() as f32;
    let mean = src.iter().sum::<f32>() / n;
    let var = src.iter().map(|&x| (x - mean) * (x - mean)).sum::<f32>() / n;
    let rstd = 1.0 / (var + eps).sqrt();
    for (i, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
        let g = gamma.map_or(1.0, |g| g[i]);
        let b = beta.map_or(0.0, |b| b[i]);
        *d = (s - mean) * rstd * g + b;
    }
    (mean, rstd)
}
