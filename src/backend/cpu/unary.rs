//! CPU kernels for the unary family (`backend/contract/unary.rs`).

use super::alloc::CollectPooled;
use super::simd;
use super::{contiguous_or_gather, par_map, CpuStorage};
use crate::backend::contract::unary::{check_unary, check_unary_backward, UnaryFn, UnaryKernels, VectorUnary};
use crate::cpu_float_dispatch;
use crate::types::{Float, Layout};
use crate::Result;

/// The plain reference: one scalar call per element.
pub fn unary_reference<T: Float, U: UnaryFn>(src: &[T], f: U) -> Vec<T> {
    src.iter().map(|&x| f.apply(x)).collect()
}

impl UnaryKernels for CpuStorage {
    fn unary<U: UnaryFn>(&self, layout: &Layout, f: U) -> Result<Self> {
        check_unary(U::NAME, self.dtype(), <Self as UnaryKernels>::DTYPES)?;
        simd::selected(U::NAME)?;
        cpu_float_dispatch!(U::NAME, self, |v: T| {
            let src = contiguous_or_gather(v, layout);
            let out: Vec<T> = apply::<T, U>(&src, f);
            Ok(super::wrap_float(out))
        })
    }

    fn unary_backward<U: UnaryFn>(&self, x_layout: &Layout, y: &Self, y_layout: &Layout, dy: &Self, dy_layout: &Layout, f: U) -> Result<Self> {
        check_unary_backward(
            U::NAME,
            (self.dtype(), x_layout),
            (y.dtype(), y_layout),
            (dy.dtype(), dy_layout),
            <Self as UnaryKernels>::DTYPES,
        )?;
        cpu_float_dispatch!(U::NAME, self, |xv: T| {
            let (Some(yv), Some(gv)) = (<T as super::CpuElem>::slice(y), <T as super::CpuElem>::slice(dy)) else {
                return Err(crate::Error::dtype(U::NAME, "backward operands have mixed dtypes"));
            };
            let x = contiguous_or_gather(xv, x_layout);
            let y = contiguous_or_gather(yv, y_layout);
            let g = contiguous_or_gather(gv, dy_layout);
            let out: Vec<T> = x
                .iter()
                .zip(y.iter())
                .zip(g.iter())
                .map(|((&x, &y), &g)| g * f.derivative(x, y))
                .collect_pooled();
            Ok(super::wrap_float(out))
        })
    }
}

/// The SIMD kernel for a function that names one.
fn vector_kernel(v: VectorUnary) -> fn(&[f32], &mut [f32]) {
    match v {
        VectorUnary::Exp => simd::exp_f32,
        VectorUnary::Gelu => simd::gelu_erf_f32,
        VectorUnary::GeluTanh => simd::gelu_tanh_f32,
    }
}

/// f32 goes through the function's SIMD kernel where it names one; everything
/// else through the scalar formula. Both split across threads when large.
fn apply<T: Float, U: UnaryFn>(src: &[T], f: U) -> Vec<T> {
    par_map(src, |s: &[T], d: &mut [T]| match (U::VECTORIZED, T::as_f32_slice(s), T::as_f32_slice_mut(d)) {
        (Some(v), Some(s), Some(d)) => vector_kernel(v)(s, d),
        _ => {
            for (d, &s) in d.iter_mut().zip(s) {
                *d = f.apply(s);
            }
        }
    })
}
