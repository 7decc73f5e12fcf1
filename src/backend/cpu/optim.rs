//! The optimizer updates on the CPU (`backend/contract/optim.rs`): one pass
//! over a parameter's elements computes the new moments and the new value,
//! instead of the half-dozen full-size temporaries a chain of tensor ops would
//! allocate.
//!
//! Each element follows `torch.optim`'s single-tensor code operation by
//! operation, with the scalars rounded to the parameter's dtype as PyTorch's
//! CPU kernels round them (the contract's coefficient structs), so f32 results
//! agree with PyTorch's to a few ulps (PyTorch's vectorised loops use FMA in
//! places, so not bit for bit). `tests/integration/optim_fused.rs` checks
//! these loops against plain tensor-op implementations of the same formulas;
//! `cuda/optim.cu` holds the same formulas for CUDA parameters.

use super::alloc::CollectPooled;
use super::{contiguous_or_gather, gather, CpuElem, CpuStorage, PARALLEL_THRESHOLD};
use crate::backend::contract::optim::{
    check_scaled, check_sum_squares, check_update, AdamCoeffs, AdamDecay, AdamState, AdamStep, OptimKernels, SgdCoeffs, SgdStep,
};
use crate::backend::contract::unsupported_dtype;
use crate::backend::BackendStorage;
use crate::types::{DType, Float, Layout};
use crate::{Error, Result};
use rayon::prelude::*;

/// Elements per rayon task for large parameters.
const CHUNK: usize = 1 << 14;

/// Run `f` over matching pieces of `p`, `g` and up to three state buffers
/// (an unused buffer is an empty slice and stays empty in every piece):
/// whole slices when small, chunks on rayon's pool when large.
#[allow(clippy::type_complexity)]
fn for_pieces<T: Send + Sync>(p: &mut [T], g: &[T], a: &mut [T], b: &mut [T], c: &mut [T], f: impl Fn(&mut [T], &[T], &mut [T], &mut [T], &mut [T]) + Sync) {
    let n = p.len();
    if n < PARALLEL_THRESHOLD {
        return f(p, g, a, b, c);
    }
    fn split<T>(s: &mut [T], n: usize) -> Vec<&mut [T]> {
        if s.is_empty() {
            (0..n.div_ceil(CHUNK)).map(|_| <&mut [T]>::default()).collect()
        } else {
            s.chunks_mut(CHUNK).collect()
        }
    }
    let pieces: Vec<(&mut [T], &[T], &mut [T], &mut [T], &mut [T])> = p
        .chunks_mut(CHUNK)
        .zip(g.chunks(CHUNK))
        .zip(split(a, n))
        .zip(split(b, n))
        .zip(split(c, n))
        .map(|((((p, g), a), b), c)| (p, g, a, b, c))
        .collect();
    crate::backend::cpu::warm::keep_workers_warm();
    pieces.into_par_iter().for_each(|(p, g, a, b, c)| f(p, g, a, b, c));
}

/// p: `[n]`, g: `[n]`, buf: `[n]` or empty when momentum is off.
pub fn sgd_update<T: Float>(p: &mut [T], g: &[T], buf: &mut [T], c: &SgdCoeffs<T>) {
    // As for Adam: the loop-invariant choices are const parameters.
    let wd = c.weight_decay.unwrap_or(T::ZERO);
    let mu = c.momentum.unwrap_or(T::ZERO);
    macro_rules! run {
        ($wd:literal, $mom:literal, $nest:literal, $init:literal) => {
            for_pieces(p, g, buf, &mut [], &mut [], |p, g, buf, _, _| {
                sgd_loop::<T, $wd, $mom, $nest, $init>(p, g, buf, c, wd, mu)
            })
        };
    }
    let has_wd = c.weight_decay.is_some();
    match (c.momentum.is_some(), has_wd, c.nesterov, c.init_buffer) {
        (false, false, _, _) => run!(false, false, false, false),
        (false, true, _, _) => run!(true, false, false, false),
        (true, false, false, false) => run!(false, true, false, false),
        (true, false, false, true) => run!(false, true, false, true),
        (true, false, true, false) => run!(false, true, true, false),
        (true, false, true, true) => run!(false, true, true, true),
        (true, true, false, false) => run!(true, true, false, false),
        (true, true, false, true) => run!(true, true, false, true),
        (true, true, true, false) => run!(true, true, true, false),
        (true, true, true, true) => run!(true, true, true, true),
    }
}

#[inline(always)]
fn sgd_loop<T: Float, const WD: bool, const MOMENTUM: bool, const NESTEROV: bool, const INIT: bool>(
    p: &mut [T],
    g: &[T],
    buf: &mut [T],
    c: &SgdCoeffs<T>,
    wd: T,
    mu: T,
) {
    // Equal lengths up front let the compiler drop the bounds checks.
    let n = p.len();
    let g = &g[..n];
    let buf = if MOMENTUM { &mut buf[..n] } else { buf };
    for i in 0..n {
        let pi = p[i];
        // grad = grad.add(param, alpha=weight_decay)
        let mut d = if WD { g[i] + wd * pi } else { g[i] };
        if MOMENTUM {
            // buf.mul_(momentum).add_(grad, alpha=1 - dampening), or buf = grad the first time
            let b = if INIT { d } else { buf[i] * mu + c.one_minus_dampening * d };
            buf[i] = b;
            d = if NESTEROV { d + mu * b } else { b };
        }
        // param.add_(grad, alpha=-lr)
        p[i] = pi + c.neg_lr * d;
    }
}

/// p, g, m (exp_avg), v (exp_avg_sq): `[n]`; vmax (max_exp_avg_sq): `[n]` with
/// AMSGrad, else empty.
pub fn adam_update<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], vmax: &mut [T], c: &AdamCoeffs<T>) {
    // Every loop-invariant choice becomes a const parameter, so each variant's
    // loop is branch-free and vectorises.
    macro_rules! run {
        ($decay:expr, $wd:expr) => {
            match (vmax.is_empty(), c.w_small) {
                (true, true) => for_pieces(p, g, m, v, vmax, |p, g, m, v, _| {
                    adam_loop::<T, $decay, false, true>(p, g, m, v, &mut [], c, $wd)
                }),
                (true, false) => for_pieces(p, g, m, v, vmax, |p, g, m, v, _| {
                    adam_loop::<T, $decay, false, false>(p, g, m, v, &mut [], c, $wd)
                }),
                (false, true) => for_pieces(p, g, m, v, vmax, |p, g, m, v, x| {
                    adam_loop::<T, $decay, true, true>(p, g, m, v, x, c, $wd)
                }),
                (false, false) => for_pieces(p, g, m, v, vmax, |p, g, m, v, x| {
                    adam_loop::<T, $decay, true, false>(p, g, m, v, x, c, $wd)
                }),
            }
        };
    }
    match c.decay {
        AdamDecay::None => run!(DECAY_NONE, T::ZERO),
        AdamDecay::Coupled(wd) => run!(DECAY_COUPLED, wd),
        AdamDecay::Decoupled(f) => run!(DECAY_DECOUPLED, f),
    }
}

const DECAY_NONE: u8 = 0;
const DECAY_COUPLED: u8 = 1;
const DECAY_DECOUPLED: u8 = 2;

/// One piece of [`adam_update`]. `wd` is the coupled decay or the decoupled
/// factor `1 − lr·wd`, as `DECAY` says.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn adam_loop<T: Float, const DECAY: u8, const AMSGRAD: bool, const W_SMALL: bool>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    vmax: &mut [T],
    c: &AdamCoeffs<T>,
    wd: T,
) {
    // Equal lengths up front let the compiler drop the bounds checks.
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    let vmax = if AMSGRAD { &mut vmax[..n] } else { vmax };
    for i in 0..n {
        let mut pi = p[i];
        let mut gi = g[i];
        if DECAY == DECAY_COUPLED {
            gi += wd * pi;
        } else if DECAY == DECAY_DECOUPLED {
            pi = pi * wd;
        }
        // exp_avg.lerp_(grad, 1 - beta1)
        let mi = if W_SMALL {
            m[i] + c.w * (gi - m[i])
        } else {
            gi - (gi - m[i]) * c.one_minus_w
        };
        m[i] = mi;
        // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        let vi = v[i] * c.beta2 + c.one_minus_beta2 * gi * gi;
        v[i] = vi;
        let vv = if AMSGRAD {
            let x = vmax[i].max(vi);
            vmax[i] = x;
            x
        } else {
            vi
        };
        // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        let denom = vv.sqrt() / c.bc2_sqrt + c.eps;
        // param.addcdiv_(exp_avg, denom, value=-step_size)
        p[i] = pi + c.neg_step_size * mi / denom;
    }
}

/// acc += scale · g, elementwise (acc: `[n]` owned by the caller, g: `[n]`).
pub fn axpy<T: Float>(acc: &mut [T], g: &[T], scale: T) {
    for_pieces(acc, g, &mut [], &mut [], &mut [], |acc, g, _, _, _| {
        for (a, &x) in acc.iter_mut().zip(g) {
            *a += scale * x;
        }
    });
}

/// Σ x² of a run, accumulated in f64: eight independent partial sums (the
/// loop vectorises, and the error stays that of pairwise-ish summation in
/// f64), threaded in fixed chunks added in order when long (rayon's own
/// reduction tree depends on scheduling, and a norm that changes in the last
/// bit from run to run would break exact resumes).
fn sum_squares_of<T: CpuElem>(x: &[T]) -> f64 {
    fn serial<T: CpuElem>(x: &[T]) -> f64 {
        let mut acc = [0.0f64; 8];
        let chunks = x.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, v) in acc.iter_mut().zip(c) {
                *a += v.to_f64() * v.to_f64();
            }
        }
        acc.iter().sum::<f64>() + rest.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>()
    }
    if x.len() < PARALLEL_THRESHOLD {
        serial(x)
    } else {
        crate::backend::cpu::warm::keep_workers_warm();
        let partial: Vec<f64> = x.par_chunks(CHUNK).map(serial).collect();
        partial.iter().sum()
    }
}

/// Run `f` on the parameter's elements as one mutable slice in row-major
/// order: where they lie when contiguous, else gathered into a buffer and
/// written back (for a layout whose elements overlap, a broadcast, the last
/// write wins).
fn update_in_place<T: CpuElem, R>(op: &'static str, p: &mut CpuStorage, layout: &Layout, f: impl FnOnce(&mut [T]) -> R) -> Result<R> {
    let dtype = p.dtype();
    let data = T::slice_mut(p).ok_or_else(|| Error::dtype(op, format!("parameter of dtype {dtype}, the update expected {}", T::DTYPE)))?;
    match layout.contiguous_range() {
        Some(r) => Ok(f(&mut data[r])),
        None => {
            let mut buf = gather(data, layout);
            let out = f(&mut buf);
            for (o, &v) in layout.offsets().zip(&buf) {
                data[o] = v;
            }
            super::alloc::recycle(buf);
            Ok(out)
        }
    }
}

/// A whole state buffer (or a second operand) as a typed slice.
fn typed<'a, T: CpuElem>(op: &'static str, what: &str, s: &'a CpuStorage) -> Result<&'a [T]> {
    T::slice(s).ok_or_else(|| Error::dtype(op, format!("{what} has dtype {}, expected {}", s.dtype(), T::DTYPE)))
}

fn typed_mut<'a, T: CpuElem>(op: &'static str, what: &str, s: &'a mut CpuStorage) -> Result<&'a mut [T]> {
    let dtype = s.dtype();
    T::slice_mut(s).ok_or_else(|| Error::dtype(op, format!("{what} has dtype {dtype}, expected {}", T::DTYPE)))
}

/// Run `$body` with `$T` the parameter's dtype (f32 or f64).
macro_rules! with_float {
    ($op:expr, $dtype:expr, |$T:ident| $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            other => Err(unsupported_dtype($op, other)),
        }
    };
}

impl OptimKernels for CpuStorage {
    fn adam_step(
        &mut self,
        op: &'static str,
        name: &str,
        layout: &Layout,
        grad: &Self,
        grad_layout: &Layout,
        state: AdamState<'_, Self>,
        h: &AdamStep,
    ) -> Result<()> {
        let AdamState { m, v, vmax } = state;
        let mut states = vec![("exp_avg", m.dtype(), m.len()), ("exp_avg_sq", v.dtype(), v.len())];
        if let Some(x) = &vmax {
            states.push(("max_exp_avg_sq", x.dtype(), x.len()));
        }
        check_update(op, name, (self.dtype(), layout), (grad.dtype(), grad_layout), &states)?;
        with_float!(op, self.dtype(), |T| {
            let c = AdamCoeffs::<T>::new(h);
            let g = contiguous_or_gather(typed::<T>(op, "gradient", grad)?, grad_layout);
            let (m, v) = (typed_mut::<T>(op, "exp_avg", m)?, typed_mut::<T>(op, "exp_avg_sq", v)?);
            let vmax: &mut [T] = match vmax {
                Some(x) => typed_mut::<T>(op, "max_exp_avg_sq", x)?,
                None => &mut [],
            };
            update_in_place::<T, _>(op, self, layout, |p| adam_update(p, &g, m, v, vmax, &c))
        })
    }

    fn sgd_step(
        &mut self,
        op: &'static str,
        name: &str,
        layout: &Layout,
        grad: &Self,
        grad_layout: &Layout,
        momentum_buffer: Option<&mut Self>,
        h: &SgdStep,
    ) -> Result<()> {
        let states: Vec<_> = momentum_buffer.iter().map(|b| ("momentum_buffer", b.dtype(), b.len())).collect();
        check_update(op, name, (self.dtype(), layout), (grad.dtype(), grad_layout), &states)?;
        if h.momentum != 0.0 && momentum_buffer.is_none() {
            return Err(Error::value(op, format!("parameter '{name}': momentum is on but there is no momentum buffer")));
        }
        with_float!(op, self.dtype(), |T| {
            let c = SgdCoeffs::<T>::new(h);
            let g = contiguous_or_gather(typed::<T>(op, "gradient", grad)?, grad_layout);
            let buf: &mut [T] = match momentum_buffer {
                Some(b) if c.momentum.is_some() => typed_mut::<T>(op, "momentum_buffer", b)?,
                _ => &mut [],
            };
            update_in_place::<T, _>(op, self, layout, |p| sgd_update(p, &g, buf, &c))
        })
    }

    fn axpy(&mut self, op: &'static str, layout: &Layout, x: &Self, x_layout: &Layout, scale: f64) -> Result<()> {
        check_update(op, "accumulated gradient", (self.dtype(), layout), (x.dtype(), x_layout), &[])?;
        with_float!(op, self.dtype(), |T| {
            let g = contiguous_or_gather(typed::<T>(op, "gradient", x)?, x_layout);
            let scale = <T as Float>::from_f64(scale);
            update_in_place::<T, _>(op, self, layout, |acc| axpy(acc, &g, scale))
        })
    }

    fn scaled(&self, op: &'static str, layout: &Layout, a: f64) -> Result<Self> {
        check_scaled(op, self.dtype())?;
        with_float!(op, self.dtype(), |T| {
            let x = contiguous_or_gather(typed::<T>(op, "gradient", self)?, layout);
            let a = <T as Float>::from_f64(a);
            Ok(T::wrap(x.iter().map(|&v| a * v + T::ZERO).collect_pooled()))
        })
    }

    fn sum_squares(op: &'static str, parts: &[(&Self, &Layout)]) -> Result<Vec<f64>> {
        check_sum_squares(op, parts.iter().map(|(s, _)| s.dtype()))?;
        Ok(parts
            .iter()
            .map(|&(s, l)| match s {
                CpuStorage::F32(v) => sum_squares_of(&contiguous_or_gather(v, l)),
                CpuStorage::F64(v) => sum_squares_of(&contiguous_or_gather(v, l)),
                other => sum_squares_of(&other.to_f64_vec(l)),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_data::ramp;
    use super::*;

    /// The kernels give the contract's errors.
    #[test]
    fn the_kernels_give_the_contracts_errors() {
        let l = Layout::contiguous([2]);
        let half = CpuStorage::F16(vec![half::f16::ONE; 2]);
        assert_eq!(half.scaled("clip", &l, 0.5).unwrap_err(), check_scaled("clip", DType::F16).unwrap_err());
        let mut p = CpuStorage::BF16(vec![half::bf16::ONE; 2]);
        let g = p.clone();
        let want = check_update("accumulate", "accumulated gradient", (DType::BF16, &l), (DType::BF16, &l), &[]).unwrap_err();
        assert_eq!(p.axpy("accumulate", &l, &g, &l, 1.0).unwrap_err(), want);
        let ints = CpuStorage::I64(vec![1, 2]);
        let f = CpuStorage::F32(vec![3.0, 4.0]);
        let got = CpuStorage::sum_squares("grad_norm", &[(&f, &l), (&ints, &l)]).unwrap_err();
        assert_eq!(got, check_sum_squares("grad_norm", [DType::F32, DType::I64]).unwrap_err());
        // 16-bit parts are summed in f64, exactly.
        let sums = CpuStorage::sum_squares("grad_norm", &[(&f, &l), (&half, &l)]).unwrap();
        assert_eq!(sums, vec![25.0, 2.0]);
    }

    // The threaded path splits the work differently from the serial one; every
    // element must still get exactly the serial result.
    #[test]
    fn chunked_adam_equals_one_piece() {
        let n = PARALLEL_THRESHOLD + 3 * CHUNK + 17;
        let init = |k: usize| -> Vec<f32> { ramp(n, 2.0, k * 104_729) };
        let g = init(1);
        let c = AdamCoeffs::<f32>::new(&AdamStep {
            lr: 1e-2,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.1,
            decoupled: true,
            step: 3,
        });
        let (mut p1, mut m1, mut v1, mut x1) = (init(2), init(3), init(4).iter().map(|x| x * x).collect::<Vec<_>>(), vec![0.5f32; n]);
        let (mut p2, mut m2, mut v2, mut x2) = (p1.clone(), m1.clone(), v1.clone(), x1.clone());
        adam_update(&mut p1, &g, &mut m1, &mut v1, &mut x1, &c);
        for s in (0..n).step_by(1000) {
            let e = (s + 1000).min(n);
            adam_update(&mut p2[s..e], &g[s..e], &mut m2[s..e], &mut v2[s..e], &mut x2[s..e], &c);
        }
        assert_eq!((p1, m1, v1, x1), (p2, m2, v2, x2));
    }

    #[test]
    fn chunked_sgd_equals_one_piece() {
        let n = PARALLEL_THRESHOLD + CHUNK / 2;
        let g: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
        let c = SgdCoeffs {
            neg_lr: -0.1,
            weight_decay: Some(0.01),
            momentum: Some(0.9),
            one_minus_dampening: 0.9,
            nesterov: true,
            init_buffer: false,
        };
        let (mut p1, mut b1) = (vec![1.0f64; n], vec![0.25f64; n]);
        let (mut p2, mut b2) = (p1.clone(), b1.clone());
        sgd_update(&mut p1, &g, &mut b1, &c);
        for s in (0..n).step_by(999) {
            let e = (s + 999).min(n);
            sgd_update(&mut p2[s..e], &g[s..e], &mut b2[s..e], &c);
        }
        assert_eq!((p1, b1), (p2, b2));
    }
}
