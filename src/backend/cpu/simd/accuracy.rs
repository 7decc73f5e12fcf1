//! How accurate the formula kernels of `math.rs` are, measured on a dense
//! sweep of f32 inputs (every 97th bit pattern of each sign, about 44 million
//! values over the whole f32 range) against f64 references; and the three
//! ISAs' bodies against each other, bit for bit.
//!
//! Errors are in ulps of the exact result (the f32 spacing at its magnitude;
//! subnormal results count in units of the smallest subnormal). Where the
//! result is a difference of terms that nearly cancel (the backward passes
//! of GELU and SiLU, both zero at their minimum), or where the f32 rounding of
//! an intermediate the function amplifies cannot be avoided (the tanh-form
//! GELU's `2u = x·(C1 + C3·x²)` in the far tail), the error is measured in
//! ulps of the size of those terms instead, which says the same thing away
//! from the cancellation and something meaningful near it. Each test prints
//! the worst error it measured and where, and asserts a bound just above it.

use super::{Isa, Simd, VectorUnary};
use crate::types::{erf_f64, erfc_f64};
use rayon::prelude::*;

/// The sweep takes every `STEP`-th bit pattern.
const STEP: u32 = 97;
/// Patterns per block handed to a kernel.
const BLOCK: u32 = 1 << 20;

/// The f32 spacing at `|v|`: `2^(e−23)` for `2^e ≤ |v| < 2^(e+1)`, the smallest
/// subnormal below the normal range.
fn ulp(v: f64) -> f64 {
    let a = v.abs().min(f32::MAX as f64);
    if a < f32::MIN_POSITIVE as f64 {
        return 2f64.powi(-149);
    }
    let exponent = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    2f64.powi(exponent - 23)
}

/// Every `step`-th bit pattern of each sign whose value is finite and has a
/// magnitude of at most `max_abs`, in blocks.
fn sweep(step: u32, max_abs: f32) -> Vec<Vec<f32>> {
    let top = max_abs.to_bits();
    (0..=top / BLOCK)
        .map(|b| {
            let (start, end) = (b * BLOCK, ((b + 1) * BLOCK).min(top + 1));
            let first = start.div_ceil(step) * step;
            (first..end)
                .step_by(step as usize)
                .flat_map(|bits| [f32::from_bits(bits), -f32::from_bits(bits)])
                .collect()
        })
        .collect()
}

/// A kernel under test: `simd`'s body on `x`, into `out`.
type KernelFn = dyn Fn(Simd, &[f32], &mut [f32]) + Sync;
type Kernel<'a> = &'a KernelFn;

/// The worst error of `kernel` over `inputs`, in ulps of `scale(x, exact)`,
/// and the input where it occurs. Non-finite results must match the
/// reference's (NaN for NaN, infinities of the same sign).
fn worst_error(simd: Simd, kernel: Kernel, inputs: &[Vec<f32>], exact: &(dyn Fn(f64) -> f64 + Sync), scale: &(dyn Fn(f64, f64) -> f64 + Sync)) -> (f64, f32) {
    inputs
        .par_iter()
        .map(|x| {
            let mut y = vec![0.0; x.len()];
            kernel(simd, x, &mut y);
            let mut worst = (0.0f64, 0.0f32);
            for (&x, &got) in x.iter().zip(&y) {
                let want = exact(x as f64);
                let narrowed = want as f32;
                if !narrowed.is_finite() || !got.is_finite() {
                    let same = got == narrowed || (got.is_nan() && narrowed.is_nan());
                    assert!(same, "{}: f({x:e}) = {got:e}, expected {want:e}", simd.isa().name());
                    continue;
                }
                let err = (got as f64 - want).abs() / ulp(scale(x as f64, want));
                if err > worst.0 {
                    worst = (err, x);
                }
            }
            worst
        })
        .reduce(|| (0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a })
}

/// The widest ISA this CPU has: the dense sweeps run on it; the others are
/// compared with it bit for bit.
fn widest() -> Simd {
    Simd::available()
        .into_iter()
        .last()
        .unwrap_or_else(|| unreachable!("the scalar ISA is always available"))
}

/// Measure `kernel` against `exact` over the sweep of `|x| ≤ max_abs`,
/// print the figure and assert it is at most `bound` ulps.
fn check(name: &str, kernel: Kernel, max_abs: f32, exact: &(dyn Fn(f64) -> f64 + Sync), scale: &(dyn Fn(f64, f64) -> f64 + Sync), bound: f64) {
    let simd = widest();
    let (ulps, at) = worst_error(simd, kernel, &sweep(STEP, max_abs), exact, scale);
    eprintln!(
        "{name}/{}: worst error {ulps:.3} ulp at x = {at:e} (every {STEP}th f32, |x| ≤ {max_abs:e})",
        simd.isa().name()
    );
    assert!(ulps <= bound, "{name}/{}: {ulps} ulp at x = {at:e}, bound {bound}", simd.isa().name());
}

fn of_result(_x: f64, exact: f64) -> f64 {
    exact
}

fn forward(f: VectorUnary) -> impl Fn(Simd, &[f32], &mut [f32]) + Sync {
    move |s: Simd, x: &[f32], y: &mut [f32]| s.unary_f32(f, x, y)
}

/// The backward kernel with `dy = 1`: the derivative itself.
fn derivative(f: VectorUnary) -> impl Fn(Simd, &[f32], &mut [f32]) + Sync {
    move |s: Simd, x: &[f32], d: &mut [f32]| s.unary_backward_f32(f, x, &vec![1.0; x.len()], d)
}

/// `Φ(x)`, accurate in the lower tail.
fn phi(x: f64) -> f64 {
    0.5 * erfc_f64(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// The standard normal density.
fn density(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn exp_is_within_one_and_a_half_ulp() {
    check("exp", &forward(VectorUnary::Exp), 104.0, &f64::exp, &of_result, 1.5);
}

#[test]
fn erf_is_within_a_few_ulp() {
    check("erf", &|s: Simd, x: &[f32], y: &mut [f32]| s.erf_f32(x, y), f32::MAX, &erf_f64, &of_result, 2.0);
}

#[test]
fn gelu_is_within_a_few_ulp() {
    check("gelu", &forward(VectorUnary::Gelu), f32::MAX, &|x| x * phi(x), &of_result, 4.0);
}

#[test]
fn gelu_derivative_is_within_a_few_ulp_of_its_terms() {
    let exact = |x: f64| phi(x) + x * density(x);
    let terms = |x: f64, _: f64| phi(x) + (x * density(x)).abs();
    check("gelu backward", &derivative(VectorUnary::Gelu), f32::MAX, &exact, &terms, 4.0);
}

#[test]
fn tanh_is_within_a_few_ulp() {
    check("tanh", &forward(VectorUnary::Tanh), f32::MAX, &f64::tanh, &of_result, 2.0);
}

#[test]
fn sigmoid_and_silu_are_within_a_few_ulp() {
    check("sigmoid", &forward(VectorUnary::Sigmoid), f32::MAX, &sigmoid, &of_result, 3.0);
    check("silu", &forward(VectorUnary::Silu), f32::MAX, &|x| x * sigmoid(x), &of_result, 4.0);
    let exact = |x: f64| sigmoid(x) * (1.0 + x * (1.0 - sigmoid(x)));
    let terms = |x: f64, _: f64| sigmoid(x) * (1.0 + (x * (1.0 - sigmoid(x))).abs());
    check("silu backward", &derivative(VectorUnary::Silu), f32::MAX, &exact, &terms, 4.5);
}

#[test]
fn gelu_tanh_is_within_a_few_ulp_of_its_conditioning() {
    // y = x·σ(t), t = 2u = 2√(2/π)·(x + 0.044715·x³), in f64 as a sigmoid: the
    // contract's `x/2·(1 + tanh u)` cancels in f64 too for x below about −5.
    const C: f64 = 2.0 * 0.797_884_560_802_865_4;
    let t = |x: f64| C * (x + 0.044715 * x * x * x);
    let dt = |x: f64| C * (1.0 + 3.0 * 0.044715 * x * x);
    // The f32 rounding of t moves y by |y|·σ(−t)·|t|·ε.
    let conditioned = move |x: f64, y: f64| y.abs() * (1.0 + sigmoid(-t(x)) * t(x).abs());
    check(
        "gelu_tanh",
        &forward(VectorUnary::GeluTanh),
        f32::MAX,
        &|x| x * sigmoid(t(x)),
        &conditioned,
        3.0,
    );
    // y' = σ(t) + x·σ(t)·σ(−t)·t'; the rounding of t moves both terms by their size times |t|·ε.
    let exact = move |x: f64| sigmoid(t(x)) + x * sigmoid(t(x)) * sigmoid(-t(x)) * dt(x);
    let terms = move |x: f64, _: f64| (sigmoid(t(x)) + (x * sigmoid(t(x)) * sigmoid(-t(x)) * dt(x)).abs()) * (1.0 + t(x).abs());
    check("gelu_tanh backward", &derivative(VectorUnary::GeluTanh), f32::MAX, &exact, &terms, 3.0);
}

#[test]
fn every_isa_computes_every_formula_bit_for_bit_alike() {
    // A coarser sweep: the scalar body is slow, and any difference in a formula
    // shows on most inputs.
    let inputs = sweep(STEP * 13, f32::MAX);
    let functions = [
        VectorUnary::Exp,
        VectorUnary::Gelu,
        VectorUnary::GeluTanh,
        VectorUnary::Tanh,
        VectorUnary::Sigmoid,
        VectorUnary::Silu,
    ];
    let mut kernels: Vec<(String, Box<KernelFn>)> = Vec::new();
    for f in functions {
        kernels.push((format!("{f:?}"), Box::new(forward(f))));
        kernels.push((format!("{f:?} backward"), Box::new(derivative(f))));
    }
    kernels.push(("erf".into(), Box::new(|s: Simd, x: &[f32], y: &mut [f32]| s.erf_f32(x, y))));
    let simds = Simd::available();
    if simds.len() < 2 {
        eprintln!("one ISA on this CPU: nothing to compare");
    }
    for (name, kernel) in &kernels {
        inputs.par_iter().for_each(|x| {
            let outputs: Vec<(Isa, Vec<f32>)> = simds
                .iter()
                .map(|&s| {
                    let mut y = vec![0.0; x.len()];
                    kernel(s, x, &mut y);
                    (s.isa(), y)
                })
                .collect();
            for (isa, y) in &outputs[1..] {
                let (first_isa, first) = &outputs[0];
                let differ = first.iter().zip(y).position(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()));
                if let Some(i) = differ {
                    panic!("{name}: {first_isa:?} and {isa:?} differ at x = {:e}: {:e} vs {:e}", x[i], first[i], y[i]);
                }
            }
        });
    }
}

/// `f`'s vector kernels (forward, and backward with `dy = 1`) against the
/// contract's f64 formulas at special values: a zero result keeps the
/// reference's sign (forward only: a derivative's zero has no meaningful sign), infinities and NaN come out as the reference's do.
fn check_specials<U: crate::backend::contract::unary::UnaryFn>(f: U) {
    let Some(v) = U::VECTORIZED else {
        unreachable!("{} has no vector kernel", U::NAME)
    };
    // With the edges of GELU's pieces (1 and 2, and the floats just below),
    // and repeated to 4 × 27 values so that every ISA's two-vector loop runs.
    let below = |v: f32| f32::from_bits(v.to_bits() - 1);
    let magnitudes = [
        0.0,
        1e-40,
        1e-30,
        0.5,
        below(1.0),
        1.0,
        below(2.0),
        2.0,
        20.0,
        100.0,
        1e30,
        f32::MAX,
        f32::INFINITY,
    ];
    let once: Vec<f32> = magnitudes.iter().flat_map(|&m| [m, -m]).chain([f32::NAN]).collect();
    let x: Vec<f32> = once.iter().cycle().take(4 * once.len()).copied().collect();
    let reads = super::backward_reads(v);
    for simd in Simd::available() {
        let mut y = vec![0.0; x.len()];
        simd.unary_f32(v, &x, &mut y);
        let read = if reads == super::Reads::Input { &x } else { &y };
        let mut d = vec![0.0; x.len()];
        simd.unary_backward_f32(v, read, &vec![1.0; x.len()], &mut d);
        for (i, &xi) in x.iter().enumerate() {
            let want_y = f.apply(xi as f64);
            // The backward formula from y reads the f32 y the forward returned.
            let want_d = f.derivative(xi as f64, if reads == super::Reads::Input { want_y } else { y[i] as f64 });
            for (what, got, want) in [("forward", y[i], want_y), ("backward", d[i], want_d)] {
                let ctx = format!("{} {what}/{}: f({xi:e}) = {got:e}, expected {want:e}", U::NAME, simd.isa().name());
                if !want.is_finite() || !(want as f32).is_finite() {
                    assert!(got == want as f32 || (got.is_nan() && want.is_nan()), "{ctx}");
                } else {
                    assert!((got as f64 - want).abs() <= 1e-6 * want.abs().max(1.0), "{ctx}");
                    if want == 0.0 && what == "forward" {
                        assert_eq!(got.is_sign_negative(), want.is_sign_negative(), "{ctx}: sign of zero");
                    }
                }
            }
        }
    }
}

#[test]
fn special_values_follow_the_reference() {
    use crate::backend::contract::unary::{Exp, Gelu, GeluTanh, Sigmoid, Silu, Tanh};
    check_specials(Exp);
    check_specials(Gelu);
    check_specials(GeluTanh);
    check_specials(Tanh);
    check_specials(Sigmoid);
    check_specials(Silu);
}

/// Values below 2 in size take a path of their own when a whole vector lies
/// there (GELU and its derivative: polynomials without the exponential; erf,
/// `|z| < √2`: the normal tail's first piece with splatted coefficients), and
/// otherwise lanes are computed both ways and selected, or looked up: every
/// lane must get the same bits either way, or a value's result would depend
/// on its neighbours (and the ISAs, whose vectors group values differently,
/// would disagree). Each value of a
/// sweep inside the first piece is computed once among small neighbours and
/// once with a large value in every 4th place, which sends every vector, of
/// 4, 8 or 16 lanes, down the lookup path.
#[test]
fn the_first_piece_gives_the_same_bits_whether_or_not_a_vector_leaves_it() {
    let small: Vec<f32> = (0..40_000).map(|i| -1.99 + i as f32 * 1e-4).collect();
    let mixed: Vec<f32> = small.iter().enumerate().map(|(i, &x)| if i % 4 == 3 { 3.5 } else { x }).collect();
    let kernels: [(&str, Box<KernelFn>); 3] = [
        ("gelu", Box::new(forward(VectorUnary::Gelu))),
        ("gelu backward", Box::new(derivative(VectorUnary::Gelu))),
        ("erf", Box::new(|s: Simd, x: &[f32], y: &mut [f32]| s.erf_f32(x, y))),
    ];
    for simd in Simd::available() {
        for (name, kernel) in &kernels {
            let (mut alone, mut among_large) = (vec![0.0; small.len()], vec![0.0; small.len()]);
            kernel(simd, &small, &mut alone);
            kernel(simd, &mixed, &mut among_large);
            for (i, (&a, &b)) in alone.iter().zip(&among_large).enumerate().filter(|(i, _)| i % 4 != 3) {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{name}/{} at x = {:e}: {a:e} alone, {b:e} beside large values",
                    simd.isa().name(),
                    small[i]
                );
            }
        }
    }
}
