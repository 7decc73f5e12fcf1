//! CPU kernels for cross_entropy (`backend/contract/nn/cross_entropy.rs`).
//!
//! logits: `[rows, C]` (leading axes flattened), targets: `[rows]`. Forward per
//! row: `max`, `log_sum = ln Σ exp(x − max)` and
//! `loss = log_sum + (1−ε)(max − x_t) + ε/C · Σ_c (max − x_c)`, which is
//! `−Σ q_c log_softmax_c` written so that large logits (±1e4) lose no digits.
//! Backward per row: `g · (exp((x − max) − log_sum) − q)`.

use super::softmax::{exp_shifted_into, row_max, sum_exp_shifted};
use crate::backend::contract::check_indices_dtype;
use crate::backend::contract::nn::cross_entropy::{
    check_cross_entropy, check_cross_entropy_backward, CrossEntropyForward, CrossEntropyKernels, CrossEntropyOptions,
};
use crate::backend::contract::nn::softmax::SoftmaxKind;
use crate::backend::contract::row_len;
use crate::backend::cpu::alloc;
use crate::backend::cpu::{contiguous_or_gather, simd, wrap_float, Contiguous, CpuElem, CpuStorage, PARALLEL_THRESHOLD};
use crate::backend::BackendStorage;
use crate::cpu_float_dispatch;
use crate::types::{Float, Layout};
use crate::{Error, Result};
use rayon::prelude::*;

const OP: &str = "cross_entropy";

/// The targets' values in row-major order, once they are known to be i64.
fn target_values<'a>(targets: &'a CpuStorage, layout: &Layout) -> Result<Contiguous<'a, i64>> {
    check_indices_dtype(OP, "targets", targets.dtype())?;
    let t = <i64 as CpuElem>::slice(targets).ok_or_else(|| Error::dtype(OP, "targets are not i64"))?;
    Ok(contiguous_or_gather(t, layout))
}

/// Rows per rayon task: enough elements to pay for the split.
fn min_rows(c: usize) -> usize {
    (PARALLEL_THRESHOLD / 4 / c.max(1)).max(1)
}

/// x: [rows, c] contiguous → (loss, max, log_sum) per row; ignored rows get zeros.
pub fn cross_entropy_rows<T: Float>(x: &[T], c: usize, targets: &[Option<usize>], epsilon: f64) -> Vec<(T, T, T)> {
    let keep = <T as Float>::from_f64(1.0 - epsilon);
    let spread = <T as Float>::from_f64(epsilon / c as f64);
    let row = |r: usize| -> (T, T, T) {
        let Some(k) = targets[r] else {
            return (T::ZERO, T::ZERO, T::ZERO);
        };
        let xr = &x[r * c..(r + 1) * c];
        let max = row_max(xr);
        let log_sum = sum_exp_shifted(xr, max).ln();
        let mut loss = log_sum + keep * (max - xr[k]);
        if epsilon > 0.0 {
            let gap: T = xr.iter().map(|&v| max - v).sum();
            loss += spread * gap;
        }
        (loss, max, log_sum)
    };
    if x.len() < PARALLEL_THRESHOLD {
        (0..targets.len()).map(row).collect()
    } else {
        crate::backend::cpu::warm::keep_workers_warm();
        (0..targets.len()).into_par_iter().with_min_len(min_rows(c)).map(row).collect()
    }
}

/// dlogits: [rows, c] = `row_grad[r] · (softmax − q)`, 0 for ignored rows.
pub fn cross_entropy_backward_rows<T: Float>(x: &[T], c: usize, targets: &[Option<usize>], max: &[T], log_sum: &[T], row_grad: &[T], epsilon: f64) -> Vec<T> {
    let keep = <T as Float>::from_f64(1.0 - epsilon);
    let spread = <T as Float>::from_f64(epsilon / c as f64);
    let mut dx = alloc::zeroed(x.len());
    super::softmax::for_each_row(&mut dx, c, |r, d| {
        let Some(k) = targets[r] else { return };
        let g = row_grad[r];
        exp_shifted_into(&x[r * c..(r + 1) * c], max[r], log_sum[r], d);
        for v in d.iter_mut() {
            *v = g * (*v - spread);
        }
        d[k] = d[k] - g * keep;
    });
    dx
}

/// The plain reference: log-softmax from the reference kernel, then
/// `−Σ q_c log p_c` term by term.
pub fn cross_entropy_reference<T: Float>(x: &[T], c: usize, targets: &[i64], epsilon: f64, ignore_index: Option<i64>) -> Vec<T> {
    let logp = super::softmax::softmax_reference(x, c, SoftmaxKind::LogSoftmax);
    let mut out = Vec::new();
    for (r, &t) in targets.iter().enumerate() {
        if Some(t) == ignore_index {
            out.push(T::ZERO);
            continue;
        }
        let mut loss = T::ZERO;
        for j in 0..c {
            let onehot = if j as i64 == t { 1.0 } else { 0.0 };
            let q = <T as Float>::from_f64((1.0 - epsilon) * onehot + epsilon / c as f64);
            loss += -(q * logp[r * c + j]);
        }
        out.push(loss);
    }
    out
}

/// The plain reference backward: `g · (softmax − q)` element by element.
pub fn cross_entropy_backward_reference<T: Float>(x: &[T], c: usize, targets: &[i64], row_grad: &[T], epsilon: f64, ignore_index: Option<i64>) -> Vec<T> {
    let p = super::softmax::softmax_reference(x, c, SoftmaxKind::Softmax);
    let mut out = Vec::new();
    for (r, &t) in targets.iter().enumerate() {
        for j in 0..c {
            if Some(t) == ignore_index {
                out.push(T::ZERO);
                continue;
            }
            let onehot = if j as i64 == t { 1.0 } else { 0.0 };
            let q = <T as Float>::from_f64((1.0 - epsilon) * onehot + epsilon / c as f64);
            out.push(row_grad[r] * (p[r * c + j] - q));
        }
    }
    out
}

impl CrossEntropyKernels for CpuStorage {
    fn cross_entropy(
        &self,
        logits_layout: &Layout,
        targets: &Self,
        targets_layout: &Layout,
        options: &CrossEntropyOptions,
    ) -> Result<CrossEntropyForward<Self>> {
        let values = target_values(targets, targets_layout)?;
        let t = check_cross_entropy((self.dtype(), logits_layout), (&values, targets_layout.shape()), options.ignore_index)?;
        simd::selected(OP)?;
        cpu_float_dispatch!(OP, self, |v: T| {
            let c = row_len(logits_layout);
            let x = contiguous_or_gather(v, logits_layout);
            let per_row = cross_entropy_rows(&x, c, &t, options.label_smoothing);
            let mut losses = alloc::with_capacity(t.len());
            let mut row_max = alloc::with_capacity(t.len());
            let mut row_log_sum = alloc::with_capacity(t.len());
            for (l, m, s) in per_row {
                losses.push(l);
                row_max.push(m);
                row_log_sum.push(s);
            }
            Ok(CrossEntropyForward {
                losses: wrap_float(losses),
                row_max: wrap_float(row_max),
                row_log_sum: wrap_float(row_log_sum),
                count: t.iter().filter(|k| k.is_some()).count(),
            })
        })
    }

    fn cross_entropy_backward(
        &self,
        logits_layout: &Layout,
        targets: &Self,
        targets_layout: &Layout,
        row_max: &Self,
        row_log_sum: &Self,
        row_grad: &Self,
        row_grad_layout: &Layout,
        options: &CrossEntropyOptions,
    ) -> Result<Self> {
        let values = target_values(targets, targets_layout)?;
        let t = check_cross_entropy_backward(
            (self.dtype(), logits_layout),
            (&values, targets_layout.shape()),
            options.ignore_index,
            (row_max.dtype(), row_max.len()),
            (row_log_sum.dtype(), row_log_sum.len()),
            (row_grad.dtype(), row_grad_layout),
        )?;
        simd::selected(OP)?;
        cpu_float_dispatch!(OP, self, |v: T| {
            let c = row_len(logits_layout);
            let (Some(m), Some(s), Some(g)) = (
                <T as CpuElem>::slice(row_max),
                <T as CpuElem>::slice(row_log_sum),
                <T as CpuElem>::slice(row_grad),
            ) else {
                return Err(Error::dtype(OP, format!("backward operands have mixed dtypes (logits are {})", self.dtype())));
            };
            let g = contiguous_or_gather(g, row_grad_layout);
            let x = contiguous_or_gather(v, logits_layout);
            Ok(wrap_float(cross_entropy_backward_rows(&x, c, &t, m, s, &g, options.label_smoothing)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::test_data::{assert_close, ramp as data};
    use crate::types::DType;

    fn fast_matches_reference<T: Float>(tol: f64) {
        for (rows, c, spread) in [(4, 5, 4.0), (3, 600, 10.0), (6, 7, 2e4), (300, 130, 6.0)] {
            let x = data::<T>(rows * c, spread, 0);
            let targets: Vec<i64> = (0..rows).map(|r| if r % 4 == 3 { -100 } else { ((r * 37) % c) as i64 }).collect();
            let row_grad = data::<T>(rows, 2.0, 7);
            for epsilon in [0.0, 0.1, 1.0] {
                let t: Vec<Option<usize>> = targets.iter().map(|&k| (k != -100).then_some(k as usize)).collect();
                let per_row = cross_entropy_rows(&x, c, &t, epsilon);
                let losses: Vec<T> = per_row.iter().map(|p| p.0).collect();
                // The reference goes through log p = x − max − log_sum: compare relative to the logits' size.
                let scale = spread.max(1.0);
                let want = cross_entropy_reference(&x, c, &targets, epsilon, Some(-100));
                for (a, b) in losses.iter().zip(&want) {
                    assert!((a.to_f64() - b.to_f64()).abs() <= tol * scale * (1.0 + b.to_f64().abs()), "loss {a} vs {b}");
                }
                let m: Vec<T> = per_row.iter().map(|p| p.1).collect();
                let s: Vec<T> = per_row.iter().map(|p| p.2).collect();
                let dx = cross_entropy_backward_rows(&x, c, &t, &m, &s, &row_grad, epsilon);
                let dx_ref = cross_entropy_backward_reference(&x, c, &targets, &row_grad, epsilon, Some(-100));
                assert_close(&dx, &dx_ref, tol, "dlogits");
            }
        }
    }

    #[test]
    fn fast_paths_match_the_reference_f32() {
        fast_matches_reference::<f32>(2e-5);
    }

    #[test]
    fn fast_paths_match_the_reference_f64() {
        fast_matches_reference::<f64>(1e-12);
    }

    /// The kernels give the contract's errors, in its order.
    #[test]
    fn the_kernels_give_the_contracts_errors() {
        let logits = CpuStorage::F32(vec![0.0; 15]);
        let (ll, tl) = (Layout::contiguous([3, 5]), Layout::contiguous([3]));
        let opts = CrossEntropyOptions::default().with_ignore_index(-100);
        let stats = CpuStorage::F32(vec![0.0; 3]);
        let backward = |x: &CpuStorage, t: &CpuStorage| x.cross_entropy_backward(&ll, t, &tl, &stats, &stats, &stats, &tl, &opts);
        // A target out of range, forward and backward.
        let bad = CpuStorage::I64(vec![0, 5, 1]);
        let want = check_cross_entropy((DType::F32, &ll), (&[0, 5, 1], tl.shape()), Some(-100)).unwrap_err();
        assert_eq!(logits.cross_entropy(&ll, &bad, &tl, &opts).err().unwrap(), want);
        let got = backward(&logits, &bad).unwrap_err();
        assert_eq!((got.kind, &got.message), (want.kind, &want.message));
        // Targets that are not i64 come first, then the logits' dtype.
        let float_targets = CpuStorage::F32(vec![0.0; 3]);
        let e = CpuStorage::F16(vec![half::f16::ZERO; 15])
            .cross_entropy(&ll, &float_targets, &tl, &opts)
            .err()
            .unwrap();
        assert_eq!(e, check_indices_dtype(OP, "targets", DType::F32).unwrap_err());
        let e = CpuStorage::I64(vec![0; 15])
            .cross_entropy(&ll, &CpuStorage::I64(vec![0; 3]), &tl, &opts)
            .err()
            .unwrap();
        assert!(e.message.starts_with("dtype i64 is not supported"), "{e}");
        // Mixed dtypes in the backward.
        let f64_logits = CpuStorage::F64(vec![0.0; 15]);
        let e = backward(&f64_logits, &CpuStorage::I64(vec![0; 3])).unwrap_err();
        assert!(e.message.contains("mixed dtypes (logits are f64)"), "{e}");
    }
}
