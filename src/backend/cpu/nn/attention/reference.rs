//! The reference kernels: attention written as plainly as possible, one
//! query row (forward, dQ) or one key row (dK, dV) at a time, with an exact
//! two-pass softmax and f64 accumulation. Slow; the flash kernels are tested
//! against them (`tests.rs`), and `TAMER_ATTENTION=reference` runs them.
//!
//! A query that sees no key gets a zero output row and `lse = −∞`, and passes
//! no gradient (the CUDA kernels' convention).

use super::{BackwardIn, BackwardOut, Grad, Layouts};
use crate::backend::contract::nn::attention::AttnDims;
use crate::types::Float;

/// Whether query `i` sees key `j`.
fn visible(dims: &AttnDims, i: usize, j: usize) -> bool {
    dims.causal_diagonal.is_none_or(|diagonal| j as i64 <= i as i64 + diagonal)
}

/// `Σ_c a[c]·b[c]` over `n` elements, in f64.
fn dot<T: Float>(a: &[T], b: &[T], n: usize) -> f64 {
    a[..n].iter().zip(&b[..n]).map(|(x, y)| x.to_f64() * y.to_f64()).sum()
}

/// The scaled score of query `i` and key `j` of head `g`.
fn score<T: Float>(q: &[T], k: &[T], l: &Layouts, dims: &AttnDims, g: usize, i: usize, j: usize) -> f64 {
    dot(&q[l.q.row(g, i)..], &k[l.k.row(g, j)..], dims.d) * dims.scale
}

/// Forward: `out` rows where `layouts.o` puts them, `lse` `[BH, Tq]`.
/// Callers checked that every row lies inside its slice.
pub fn forward<T: Float>((q, k, v): (&[T], &[T], &[T]), layouts: &Layouts, dims: &AttnDims, out: &mut [T], lse: &mut [T]) {
    let mut acc = vec![0f64; dims.dv];
    for g in 0..dims.bh {
        for i in 0..dims.tq {
            let seen = || (0..dims.tk).filter(|&j| visible(dims, i, j));
            let max = seen().map(|j| score(q, k, layouts, dims, g, i, j)).fold(f64::NEG_INFINITY, f64::max);
            acc.fill(0.0);
            let mut total = 0.0;
            for j in seen() {
                let p = (score(q, k, layouts, dims, g, i, j) - max).exp();
                total += p;
                let vj = &v[layouts.v.row(g, j)..];
                for (a, x) in acc.iter_mut().zip(&vj[..dims.dv]) {
                    *a += p * x.to_f64();
                }
            }
            let o = &mut out[layouts.o.row(g, i)..][..dims.dv];
            for (o, a) in o.iter_mut().zip(&acc) {
                *o = T::from_f64(if total > 0.0 { a / total } else { 0.0 });
            }
            // total = 0: the row saw no key; max = −∞ and ln 0 = −∞.
            lse[g * dims.tq + i] = T::from_f64(max + total.ln());
        }
    }
}

/// The probability `P_ij = exp(s_ij − lse_i)` (0 for a hidden pair or a row
/// that sees no key) and `dS_ij = P_ij (dP_ij − δ_i)`, `δ_i = Σ_c dO_ic O_ic`.
fn p_and_ds<T: Float>(x: &BackwardIn<'_, T>, l: &Layouts, dims: &AttnDims, g: usize, i: usize, j: usize) -> (f64, f64) {
    let lse = x.lse[g * dims.tq + i].to_f64();
    if !visible(dims, i, j) || lse == f64::NEG_INFINITY {
        return (0.0, 0.0);
    }
    let p = (score(x.q, x.k, l, dims, g, i, j) - lse).exp();
    let dp = dot(&x.dout[l.dout.row(g, i)..], &x.v[l.v.row(g, j)..], dims.dv);
    let delta = dot(&x.dout[l.dout.row(g, i)..], &x.o[l.o.row(g, i)..], dims.dv);
    (p, p * (dp - delta))
}

/// Backward: dQ, dK, dV rows where `layouts.dq`, `.dk`, `.dv` put them.
pub fn backward<T: Float>(x: &BackwardIn<'_, T>, layouts: &Layouts, dims: &AttnDims, mut grads: BackwardOut<'_, T>) {
    let (mut acc_d, mut acc_v) = (vec![0f64; dims.d], vec![0f64; dims.dv]);
    for g in 0..dims.bh {
        // dQ_i = Σ_j dS_ij K_j · scale
        for i in 0..dims.tq {
            acc_d.fill(0.0);
            for j in 0..dims.tk {
                let (_, ds) = p_and_ds(x, layouts, dims, g, i, j);
                for (a, kc) in acc_d.iter_mut().zip(&x.k[layouts.k.row(g, j)..][..dims.d]) {
                    *a += ds * dims.scale * kc.to_f64();
                }
            }
            for (o, a) in grads.buffer(Grad::Q)[layouts.dq.row(g, i)..][..dims.d].iter_mut().zip(&acc_d) {
                *o = T::from_f64(*a);
            }
        }
        // dK_j = Σ_i dS_ij Q_i · scale,  dV_j = Σ_i P_ij dO_i
        for j in 0..dims.tk {
            acc_d.fill(0.0);
            acc_v.fill(0.0);
            for i in 0..dims.tq {
                let (p, ds) = p_and_ds(x, layouts, dims, g, i, j);
                for (a, qc) in acc_d.iter_mut().zip(&x.q[layouts.q.row(g, i)..][..dims.d]) {
                    *a += ds * dims.scale * qc.to_f64();
                }
                for (a, gc) in acc_v.iter_mut().zip(&x.dout[layouts.dout.row(g, i)..][..dims.dv]) {
                    *a += p * gc.to_f64();
                }
            }
            for (o, a) in grads.buffer(Grad::K)[layouts.dk.row(g, j)..][..dims.d].iter_mut().zip(&acc_d) {
                *o = T::from_f64(*a);
            }
            for (o, a) in grads.buffer(Grad::V)[layouts.dv.row(g, j)..][..dims.dv].iter_mut().zip(&acc_v) {
                *o = T::from_f64(*a);
            }
        }
    }
}
