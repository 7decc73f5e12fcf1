//! Fused optimizer updates: one pass over a parameter's elements computes the
//! new moments and the new value, instead of the half-dozen full-size
//! temporaries a chain of tensor ops would allocate.
//!
//! Each element follows `torch.optim`'s single-tensor code operation by
//! operation, with the scalars rounded to the parameter's dtype as PyTorch's
//! CPU kernels round them, so f32 results agree with PyTorch's to a few ulps
//! (PyTorch's vectorised loops use FMA in places, so not bit for bit).
//! `tests/integration/optim_fused.rs` checks these loops against plain tensor-op
//! implementations of the same formulas.
//!
//! These are the CPU loops; `cuda/optim.cu` holds the same formulas for CUDA
//! parameters, taking the coefficient structs below as they are, and
//! `device.rs` picks one or the other by the parameter's device.

use crate::backend::cpu::{contiguous_or_gather, CpuElem, CpuStorage, PARALLEL_THRESHOLD};
use crate::backend::Storage;
use crate::tensor::Float;
use crate::{Error, Result, Tensor};
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
    pieces.into_par_iter().for_each(|(p, g, a, b, c)| f(p, g, a, b, c));
}

/// SGD's scalars, already in the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgdCoeffs<T> {
    pub neg_lr: T,
    pub weight_decay: Option<T>,
    /// `None` when momentum is 0 (no buffer).
    pub momentum: Option<T>,
    pub one_minus_dampening: T,
    pub nesterov: bool,
    /// The buffer is being created: it starts as the gradient, undamped (as PyTorch).
    pub init_buffer: bool,
}

/// p: [n], g: [n], buf: [n] or empty when momentum is off.
pub(crate) fn sgd_update<T: Float>(p: &mut [T], g: &[T], buf: &mut [T], c: &SgdCoeffs<T>) {
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

/// How Adam applies weight decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AdamDecay<T> {
    None,
    /// Adam: grad += wd · param.
    Coupled(T),
    /// AdamW: param *= 1 − lr · wd, before the update.
    Decoupled(T),
}

/// Adam's scalars for one step, already in the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamCoeffs<T> {
    pub decay: AdamDecay<T>,
    /// lerp weight 1 − β₁, and 1 − weight (PyTorch's lerp takes the second
    /// form when the weight is at least 0.5).
    pub w: T,
    pub one_minus_w: T,
    pub w_small: bool,
    pub beta2: T,
    pub one_minus_beta2: T,
    /// sqrt(1 − β₂^t)
    pub bc2_sqrt: T,
    pub eps: T,
    /// −lr / (1 − β₁^t)
    pub neg_step_size: T,
}

impl<T: Float> AdamCoeffs<T> {
    /// The scalars of step `t` (1-based), computed in f64 as PyTorch computes them in Python.
    pub fn new(lr: f64, betas: (f64, f64), eps: f64, weight_decay: f64, decoupled: bool, t: u64) -> Self {
        let (beta1, beta2) = betas;
        let step = t as f64;
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let w = T::from_f64(1.0 - beta1);
        let decay = match (weight_decay != 0.0, decoupled) {
            (false, _) => AdamDecay::None,
            (true, false) => AdamDecay::Coupled(T::from_f64(weight_decay)),
            (true, true) => AdamDecay::Decoupled(T::from_f64(1.0 - lr * weight_decay)),
        };
        AdamCoeffs {
            decay,
            w,
            one_minus_w: T::ONE - w,
            w_small: w.abs() < T::from_f64(0.5),
            beta2: T::from_f64(beta2),
            one_minus_beta2: T::from_f64(1.0 - beta2),
            bc2_sqrt: T::from_f64(bias_correction2.sqrt()),
            eps: T::from_f64(eps),
            neg_step_size: T::from_f64(-(lr / bias_correction1)),
        }
    }
}

/// p, g, m (exp_avg), v (exp_avg_sq): [n]; vmax (max_exp_avg_sq): [n] with
/// AMSGrad, else empty.
pub(crate) fn adam_update<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], vmax: &mut [T], c: &AdamCoeffs<T>) {
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

/// The gradient's elements in row-major order, borrowed when contiguous.
pub(crate) fn with_grad_slice<T: CpuElem, R>(op: &'static str, g: &Tensor, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let storage = g.storage();
    let cpu = storage
        .as_cpu()
        .ok_or_else(|| Error::device(op, format!("gradient on {} must be on the CPU", g.device())))?;
    let data = T::slice(cpu).ok_or_else(|| Error::dtype(op, format!("gradient of shape {} has dtype {}, expected {}", g.shape(), g.dtype(), T::DTYPE)))?;
    let data = contiguous_or_gather(data, g.layout());
    Ok(f(&data))
}

/// The typed data of a CPU optimizer state buffer (it has the parameter's
/// dtype unless the parameter was converted after the state was made).
pub(crate) fn state_slice<'a, T: CpuElem>(op: &'static str, name: &str, buf: &'a mut Storage) -> Result<&'a mut [T]> {
    // Without the cuda feature the match has one arm; with it, two.
    #[allow(clippy::infallible_destructuring_match)]
    let buf = match buf {
        Storage::Cpu(c) => c,
        #[cfg(feature = "cuda")]
        other => {
            return Err(Error::device(
                op,
                format!("state of parameter '{name}' is on {} but the parameter is on the CPU", other.device()),
            ))
        }
    };
    let dtype = buf.dtype();
    T::slice_mut(buf).ok_or_else(|| {
        Error::dtype(
            op,
            format!(
                "state of parameter '{name}' is {dtype} but the parameter is now {}; convert the model before creating the optimizer",
                T::DTYPE
            ),
        )
    })
}

/// Σ x² over a CPU tensor's elements, accumulated in f64.
pub(crate) fn sum_squares(op: &'static str, t: &Tensor) -> Result<f64> {
    let storage = t.storage();
    let cpu = storage
        .as_cpu()
        .ok_or_else(|| Error::device(op, format!("gradient on {} must be on the CPU", t.device())))?;
    fn ssq_serial<T: CpuElem>(x: &[T]) -> f64 {
        // Eight independent partial sums: the loop vectorises, and the error
        // stays that of pairwise-ish summation in f64.
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
    fn ssq<T: CpuElem>(x: &[T]) -> f64 {
        if x.len() < PARALLEL_THRESHOLD {
            ssq_serial(x)
        } else {
            // Partial sums collected in order and added serially: rayon's own
            // reduction tree depends on scheduling, and a norm that changes in
            // the last bit from run to run would break exact resumes.
            let partial: Vec<f64> = x.par_chunks(CHUNK).map(ssq_serial).collect();
            partial.iter().sum()
        }
    }
    Ok(match cpu {
        CpuStorage::F32(v) => ssq(&contiguous_or_gather(v, t.layout())),
        CpuStorage::F64(v) => ssq(&contiguous_or_gather(v, t.layout())),
        other => ssq(&other.to_f64_vec(t.layout())),
    })
}

/// acc += scale · g, elementwise (acc: [n] owned by the caller, g: [n]).
pub(crate) fn axpy<T: Float>(acc: &mut [T], g: &[T], scale: T) {
    for_pieces(acc, g, &mut [], &mut [], &mut [], |acc, g, _, _, _| {
        for (a, &x) in acc.iter_mut().zip(g) {
            *a += scale * x;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    // The threaded path splits the work differently from the serial one; every
    // element must still get exactly the serial result.
    #[test]
    fn chunked_adam_equals_one_piece() {
        let n = PARALLEL_THRESHOLD + 3 * CHUNK + 17;
        let init = |k: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7919 + k * 104729) % 1000) as f32 / 500.0 - 1.0).collect() };
        let g = init(1);
        let c = AdamCoeffs::<f32>::new(1e-2, (0.9, 0.999), 1e-8, 0.1, true, 3);
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
