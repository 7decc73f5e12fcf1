//! CPU kernels for the unary family (`backend/contract/unary.rs`).
//!
//! Forward `y = f(x)` and backward `dx = dy·f'(x, y)` are each one pass over
//! the elements, split across rayon workers above [`PARALLEL_THRESHOLD`]
//! elements (in chunks whose boundaries change no result: every element is
//! computed on its own). f32 data of a function that names a vector kernel
//! ([`UnaryFn::VECTORIZED`]) runs it (`simd::unary_f32`, and
//! `simd::unary_backward_f32`, which reads only the one of `x` and `y` it
//! needs); everything else runs the function's scalar formulas, which are also
//! the references ([`unary_reference`], [`unary_backward_reference`]).

use super::simd::{self, Reads};
use super::{build_in_parts, chunk_len, contiguous_or_gather, par_map, CpuElem, CpuStorage, PARALLEL_THRESHOLD};
use crate::backend::contract::unary::{check_unary, check_unary_backward, UnaryFn, UnaryKernels};
use crate::cpu_float_dispatch;
use crate::types::{Float, Layout};
use crate::{Error, Result};

/// The plain reference: one scalar call per element.
pub fn unary_reference<T: Float, U: UnaryFn>(src: &[T], f: U) -> Vec<T> {
    src.iter().map(|&x| f.apply(x)).collect()
}

/// The plain backward reference: `dy · f'(x, y)` per element.
pub fn unary_backward_reference<T: Float, U: UnaryFn>(x: &[T], y: &[T], dy: &[T], f: U) -> Vec<T> {
    x.iter().zip(y).zip(dy).map(|((&x, &y), &g)| g * f.derivative(x, y)).collect()
}

impl UnaryKernels for CpuStorage {
    fn unary<U: UnaryFn>(&self, layout: &Layout, f: U) -> Result<Self> {
        check_unary(U::NAME, self.dtype(), <Self as UnaryKernels>::DTYPES)?;
        simd::selected(U::NAME)?;
        cpu_float_dispatch!(U::NAME, self, |v: T| {
            let src = contiguous_or_gather(v, layout);
            Ok(super::wrap_float(forward(&src, f)))
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
        simd::selected(U::NAME)?;
        cpu_float_dispatch!(U::NAME, self, |xv: T| {
            let (Some(yv), Some(gv)) = (<T as CpuElem>::slice(y), <T as CpuElem>::slice(dy)) else {
                return Err(Error::dtype(U::NAME, "backward operands have mixed dtypes"));
            };
            let g = contiguous_or_gather(gv, dy_layout);
            let dx = match U::VECTORIZED.filter(|_| T::as_f32_slice(gv).is_some()) {
                // The vector kernel reads one of x and y: gather only that one.
                Some(vf) => {
                    let (data, layout) = match simd::backward_reads(vf) {
                        Reads::Input => (&xv[..], x_layout),
                        Reads::Output => (yv, y_layout),
                    };
                    let values = contiguous_or_gather(data, layout);
                    par_chunks_map(&[&values, &g], |[v, g], dx| {
                        if let (Some(v), Some(g), Some(dx)) = (T::as_f32_slice(v), T::as_f32_slice(g), T::as_f32_slice_mut(dx)) {
                            simd::unary_backward_f32(vf, v, g, dx);
                        }
                    })
                }
                None => {
                    let (x, y) = (contiguous_or_gather(xv, x_layout), contiguous_or_gather(yv, y_layout));
                    par_chunks_map(&[&x, &y, &g], |[x, y, g], dx| {
                        for (((d, &x), &y), &g) in dx.iter_mut().zip(x).zip(y).zip(g) {
                            *d = g * f.derivative(x, y);
                        }
                    })
                }
            };
            Ok(super::wrap_float(dx))
        })
    }
}

/// `y = f(x)`: f32 through the function's vector kernel where it names one,
/// else the scalar formula.
fn forward<T: Float, U: UnaryFn>(src: &[T], f: U) -> Vec<T> {
    par_map(src, |s: &[T], d: &mut [T]| match (U::VECTORIZED, T::as_f32_slice(s), T::as_f32_slice_mut(d)) {
        (Some(v), Some(s), Some(d)) => simd::unary_f32(v, s, d),
        _ => {
            for (d, &s) in d.iter_mut().zip(s) {
                *d = f.apply(s);
            }
        }
    })
}

/// `k(inputs, out)` over the same chunk of every input and of the output
/// (all as long as the first input), split across rayon workers above
/// [`PARALLEL_THRESHOLD`] elements.
fn par_chunks_map<T: Float, const N: usize>(inputs: &[&[T]; N], k: impl Fn([&[T]; N], &mut [T]) + Sync) -> Vec<T> {
    let n = inputs.first().map_or(0, |s| s.len());
    let parallel = n >= PARALLEL_THRESHOLD;
    let chunk = if parallel { chunk_len(n) } else { n };
    build_in_parts(n, chunk, parallel, |start, o| k(inputs.map(|s| &s[start..start + o.len()]), o)).0
}
