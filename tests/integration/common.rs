//! Helpers shared by the test modules.
#![allow(dead_code)]

use std::path::PathBuf;
use tamer::nn::{Module, Param};
use tamer::testing::{numeric_derivative, GradCheckConfig};
use tamer::{no_grad, DType, Result, Tensor};

/// The shared data sets, outside the repository (read-only); the variable
/// `TAMER_SHARED_DATA` points the tests at another copy.
pub const SHARED_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data");

#[path = "../shared/skip.rs"]
mod shared_skip;

/// `path` under [`SHARED_DATA`] (or `TAMER_SHARED_DATA`) when it exists;
/// otherwise a visible skip (see [`skip`]) and `None`, or, with
/// `TAMER_REQUIRE_DATA=1` (which CI sets), a failure of the calling test.
pub fn shared_data(path: &str) -> Option<PathBuf> {
    shared_data_files(&[path]).map(|mut found| found.remove(0))
}

/// Every one of `paths` under the shared data, or one skip (or failure) naming
/// all those that are absent.
pub fn shared_data_files(paths: &[&str]) -> Option<Vec<PathBuf>> {
    let root = std::env::var_os("TAMER_SHARED_DATA").map_or_else(|| PathBuf::from(SHARED_DATA), PathBuf::from);
    let full: Vec<PathBuf> = paths.iter().map(|p| root.join(p)).collect();
    let absent: Vec<String> = full.iter().filter(|p| !p.exists()).map(|p| p.display().to_string()).collect();
    if absent.is_empty() {
        return Some(full);
    }
    let reason = format!("{} absent", absent.join(", ") + if absent.len() == 1 { " is" } else { " are" });
    if data_required() {
        panic!("TAMER_REQUIRE_DATA=1 but {reason}");
    }
    skip(&reason);
    None
}

/// Whether `TAMER_REQUIRE_DATA` asks for missing data to fail the tests that need it.
fn data_required() -> bool {
    shared_skip::required("TAMER_REQUIRE_DATA")
}

/// Say on the terminal that the calling test skipped its work and why: a
/// `SKIPPED` line on stderr past the harness's output capture, counted over
/// the run (tests/shared/skip.rs).
pub fn skip(reason: &str) {
    shared_skip::announce(reason);
}

/// Fixed weights in [0.5, 1.5) with varying signs, so `Σ w ⊙ y` sees every output element.
pub fn probe_weights(dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let w: Vec<f64> = (0..n)
        .map(|k| {
            let h = (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
            let u = (h >> 11) as f64 / (1u64 << 53) as f64;
            if k % 3 == 1 {
                -(0.5 + u)
            } else {
                0.5 + u
            }
        })
        .collect();
    Tensor::from_vec(w, dims.to_vec()).unwrap()
}

/// Finite-difference check of the gradients of `Σ w ⊙ f()` with respect to every
/// parameter of `module` (f64), with `check_gradients`' difference stencil,
/// default step and tolerances. Each element is perturbed in place through `Param::set`, so the
/// module under test is the real one. Returns
/// `(elements checked, failures with name, index, analytic, numeric)`.
pub fn check_param_gradients<M: Module + ?Sized>(module: &M, f: impl Fn() -> Result<Tensor>) -> (usize, Vec<String>) {
    let GradCheckConfig { eps, atol, rtol } = GradCheckConfig::default();
    let out = f().unwrap();
    let w = probe_weights(out.dims());
    let loss_of = |y: Tensor| y.mul(&w).unwrap().sum_all().unwrap();
    let grads = loss_of(out).backward().unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (name, p) in module.named_params() {
        let t = p.tensor();
        assert_eq!(t.dtype(), DType::F64, "{name} must be f64 for a gradient check");
        let analytic = grads.get(&t).map(|g| g.to_f64_vec().unwrap()).unwrap_or_else(|| vec![0.0; t.numel()]);
        let base = t.to_f64_vec().unwrap();
        let dims = t.dims().to_vec();
        let eval_at = |j: usize, delta: f64| -> f64 {
            let mut v = base.clone();
            v[j] += delta;
            p.set(&Tensor::from_vec(v, dims.clone()).unwrap()).unwrap();
            no_grad(|| loss_of(f().unwrap()).to_scalar().unwrap())
        };
        for (j, a) in analytic.iter().enumerate() {
            let numeric = numeric_derivative(eps, |delta| Ok(eval_at(j, delta))).unwrap();
            checked += 1;
            let within = (a - numeric).abs() <= atol + rtol * numeric.abs();
            if !within {
                failures.push(format!("{name}[{j}]: analytic {a:.8e} vs numeric {numeric:.8e}"));
            }
        }
        p.set(&Tensor::from_vec(base, dims).unwrap()).unwrap();
    }
    (checked, failures)
}

/// `x` with its values replaced, in place and keeping its layout, by an evenly
/// spaced grid over [-2, 2] in the order the old values had: every two
/// elements at least 4/n apart, so that no max, min or pooling window holds a
/// tie or a near-tie that a finite difference step would cross.
pub fn spread_apart(x: &Tensor) -> Tensor {
    let values = x.to_f64_vec().unwrap();
    let n = values.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut spread = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        spread[i] = -2.0 + 4.0 * (rank as f64 + 0.5) / n as f64;
    }
    x.assign(&Tensor::from_vec(spread, x.dims().to_vec()).unwrap()).unwrap();
    x.clone()
}

pub fn names<M: Module + ?Sized>(m: &M) -> Vec<String> {
    m.named_params().into_iter().map(|(n, _)| n).collect()
}

pub fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

/// Population standard deviation of a parameter's values.
pub fn std_of(p: &Param) -> f64 {
    let v = p.tensor().to_f64_vec().unwrap();
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt()
}

/// A tensor's elements as f64 (any dtype).
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

/// The error of a failed op: its kind and its message.
pub fn err_message<T: std::fmt::Debug>(r: Result<T>) -> (tamer::ErrorKind, String) {
    let e = r.unwrap_err();
    (e.kind.clone(), e.to_string())
}
