//! Unary ops: finite-difference gradient checks over random shapes and views,
//! and forward values against f64 std functions (f32 and f64, small and threaded sizes).

use proptest::prelude::*;
use tamer::testing::{check_gradients, proptest_config, strategies, GradCheckConfig};
use tamer::{DType, Result, Tensor};

fn shapes() -> impl Strategy<Value = Vec<usize>> {
    strategies::shape(0..=3, 1..=4)
}

/// Rewrite `x`'s values through `f`, keeping its (possibly non-contiguous) layout.
fn remap(x: &Tensor, f: impl Fn(f64) -> f64) -> Tensor {
    let values: Vec<f64> = x.to_vec::<f64>().unwrap().into_iter().map(f).collect();
    x.assign(&Tensor::from_vec(values, x.dims().to_vec()).unwrap()).unwrap();
    x.clone()
}

/// Values in `[0.5, 2.5)`: inside the domain of log, sqrt, rsqrt and non-integer powers.
fn positive(x: &Tensor) -> Tensor {
    remap(x, |v| v.abs() + 0.5)
}

/// Push values lying within 1e-3 of a kink of a piecewise function 0.01 away from it.
fn away_from(x: &Tensor, kinks: &[f64]) -> Tensor {
    let kinks = kinks.to_vec();
    remap(x, move |v| match kinks.iter().find(|&&k| (v - k).abs() < 1e-3) {
        Some(&k) => k + 0.01,
        None => v,
    })
}

fn grad_ok(f: impl Fn(&Tensor) -> Result<Tensor>, x: Tensor) -> std::result::Result<(), TestCaseError> {
    let layout = format!("{:?} strides {:?}", x.dims(), x.layout().strides());
    let report = check_gradients(|xs| f(&xs[0]), &[x], &GradCheckConfig::default()).unwrap();
    prop_assert!(report.passed(), "{layout}: {report}");
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn grad_neg(x in strategies::tensor(shapes())) { grad_ok(|x| x.neg(), x)?; }
    #[test]
    fn grad_abs(x in strategies::tensor(shapes())) { grad_ok(|x| x.abs(), away_from(&x, &[0.0]))?; }
    #[test]
    fn grad_exp(x in strategies::tensor(shapes())) { grad_ok(|x| x.exp(), x)?; }
    #[test]
    fn grad_log(x in strategies::tensor(shapes())) { grad_ok(|x| x.log(), positive(&x))?; }
    #[test]
    fn grad_sqrt(x in strategies::tensor(shapes())) { grad_ok(|x| x.sqrt(), positive(&x))?; }
    #[test]
    fn grad_rsqrt(x in strategies::tensor(shapes())) { grad_ok(|x| x.rsqrt(), positive(&x))?; }
    #[test]
    fn grad_square(x in strategies::tensor(shapes())) { grad_ok(|x| x.square(), x)?; }
    #[test]
    fn grad_tanh(x in strategies::tensor(shapes())) { grad_ok(|x| x.tanh(), x)?; }
    #[test]
    fn grad_sigmoid(x in strategies::tensor(shapes())) { grad_ok(|x| x.sigmoid(), x)?; }
    #[test]
    fn grad_relu(x in strategies::tensor(shapes())) { grad_ok(|x| x.relu(), away_from(&x, &[0.0]))?; }
    #[test]
    fn grad_gelu(x in strategies::tensor(shapes())) { grad_ok(|x| x.gelu(), x)?; }
    #[test]
    fn grad_gelu_tanh(x in strategies::tensor(shapes())) { grad_ok(|x| x.gelu_tanh(), x)?; }
    #[test]
    fn grad_silu(x in strategies::tensor(shapes())) { grad_ok(|x| x.silu(), x)?; }
    #[test]
    fn grad_sin(x in strategies::tensor(shapes())) { grad_ok(|x| x.sin(), x)?; }
    #[test]
    fn grad_cos(x in strategies::tensor(shapes())) { grad_ok(|x| x.cos(), x)?; }
    #[test]
    fn grad_powf_any_exponent_on_positive_inputs(x in strategies::tensor(shapes()), e in prop_oneof![Just(0.5), Just(-1.5), Just(2.7), -3.0..3.0f64]) {
        grad_ok(move |x| x.powf(e), positive(&x))?;
    }
    #[test]
    fn grad_powf_integer_exponent_on_any_input(x in strategies::tensor(shapes()), e in 0i32..=4) {
        grad_ok(move |x| x.powf(e as f64), x)?;
    }
    #[test]
    fn grad_affine(x in strategies::tensor(shapes()), a in -3.0..3.0f64, b in -3.0..3.0f64) {
        grad_ok(move |x| x.affine(a, b), x)?;
    }
    #[test]
    fn grad_scale_and_add_scalar(x in strategies::tensor(shapes()), a in -3.0..3.0f64) {
        grad_ok(move |x| x.scale(a)?.add_scalar(a), x)?;
    }
    #[test]
    fn grad_clamp(x in strategies::tensor(shapes()), lo in -1.5..0.0f64, width in 0.1..2.0f64) {
        let hi = lo + width;
        grad_ok(move |x| x.clamp(lo, hi), away_from(&x, &[lo, hi]))?;
    }
    #[test]
    fn grad_to_dtype_f64_identity(x in strategies::tensor(shapes())) {
        grad_ok(|x| x.to_dtype(DType::F64), x)?;
    }
    /// Several unary ops chained on a view, so gradients pass between them.
    #[test]
    fn grad_chain(x in strategies::tensor(shapes())) {
        grad_ok(|x| x.tanh()?.exp()?.sigmoid()?.gelu()?.sin()?.square()?.add_scalar(1.0)?.sqrt(), x)?;
    }
}

#[test]
fn kink_conventions_match_pytorch() {
    // relu'(0) = 0, |x|'(0) = 0, clamp passes the gradient at its bounds.
    let x = Tensor::from_vec(vec![-1.0f64, 0.0, 1.0], [3]).unwrap().variable();
    let grad = |y: Tensor| y.sum_all().unwrap().backward().unwrap().get(&x).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(grad(x.relu().unwrap()), vec![0.0, 0.0, 1.0]);
    assert_eq!(grad(x.abs().unwrap()), vec![-1.0, 0.0, 1.0]);
    assert_eq!(grad(x.clamp(-1.0, 0.0).unwrap()), vec![1.0, 1.0, 0.0]);
}

#[test]
fn cast_through_f32_passes_the_gradient_back_as_f64() {
    let x = Tensor::from_vec(vec![0.25f64, -1.5, 3.0], [3]).unwrap().variable();
    let y = x.to_dtype(DType::F32).unwrap().square().unwrap().sum_all().unwrap();
    assert_eq!(y.dtype(), DType::F32);
    let g = y.backward().unwrap();
    let gx = g.get(&x).unwrap();
    assert_eq!(gx.dtype(), DType::F64);
    assert_eq!(gx.to_vec::<f64>().unwrap(), vec![0.5, -3.0, 6.0]);
}

// ---- forward values -----------------------------------------------------------------

/// erf by its Maclaurin series: an independent reference for |x| <= 3
/// (the largest term is ~1e2, so the result is good to ~1e-14).
fn erf_series(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= -x * x / n as f64;
        let t = term / (2 * n + 1) as f64;
        sum += t;
        if t.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

struct Case {
    name: &'static str,
    op: fn(&Tensor) -> Result<Tensor>,
    reference: fn(f64) -> f64,
    lo: f64,
    hi: f64,
}

fn cases() -> Vec<Case> {
    let c = |name: &'static str, op: fn(&Tensor) -> Result<Tensor>, reference: fn(f64) -> f64, lo: f64, hi: f64| Case { name, op, reference, lo, hi };
    vec![
        c("neg", |x: &Tensor| x.neg(), |x: f64| -x, -5.0, 5.0),
        c("abs", |x: &Tensor| x.abs(), f64::abs, -5.0, 5.0),
        c("exp", |x: &Tensor| x.exp(), f64::exp, -20.0, 20.0),
        c("log", |x: &Tensor| x.log(), f64::ln, 1e-3, 100.0),
        c("sqrt", |x: &Tensor| x.sqrt(), f64::sqrt, 0.0, 100.0),
        c("rsqrt", |x: &Tensor| x.rsqrt(), |x| 1.0 / x.sqrt(), 1e-3, 100.0),
        c("square", |x: &Tensor| x.square(), |x| x * x, -10.0, 10.0),
        c("tanh", |x: &Tensor| x.tanh(), f64::tanh, -8.0, 8.0),
        c("sigmoid", |x: &Tensor| x.sigmoid(), sigmoid, -30.0, 30.0),
        c("relu", |x: &Tensor| x.relu(), |x| x.max(0.0), -5.0, 5.0),
        c("gelu", |x: &Tensor| x.gelu(), |x| 0.5 * x * (1.0 + erf_series(x / 2f64.sqrt())), -4.0, 4.0),
        c(
            "gelu_tanh",
            |x: &Tensor| x.gelu_tanh(),
            |x| 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()),
            -6.0,
            6.0,
        ),
        c("silu", |x: &Tensor| x.silu(), |x| x * sigmoid(x), -30.0, 30.0),
        c("sin", |x: &Tensor| x.sin(), f64::sin, -10.0, 10.0),
        c("cos", |x: &Tensor| x.cos(), f64::cos, -10.0, 10.0),
        c("powf(2.5)", |x: &Tensor| x.powf(2.5), |x| x.powf(2.5), 0.0, 10.0),
        c("powf(-1)", |x: &Tensor| x.powf(-1.0), |x| 1.0 / x, 0.1, 10.0),
        c("powf(3) of negatives", |x: &Tensor| x.powf(3.0), |x| x * x * x, -4.0, 4.0),
        c("affine", |x: &Tensor| x.affine(-1.5, 0.25), |x| -1.5 * x + 0.25, -5.0, 5.0),
        c("clamp", |x: &Tensor| x.clamp(-0.5, 1.25), |x| x.clamp(-0.5, 1.25), -3.0, 3.0),
        c("to_dtype", |x: &Tensor| x.to_dtype(x.dtype()), |x| x, -3.0, 3.0),
    ]
}

/// `n` values spread over `[lo, hi]` in a scrambled order (golden-ratio sequence), ends included.
fn inputs(n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n)
        .map(|i| match i {
            0 => lo,
            1 => hi,
            _ => lo + (hi - lo) * (i as f64 * 0.618_033_988_749_894_9).fract(),
        })
        .collect()
}

/// Compare `op` on f32 and f64 inputs of `n` elements (as a `[n/cols, cols]` view
/// of the given kind) with the f64 reference evaluated at the same (rounded) inputs.
fn check_forward(case: &Case, n: usize, transposed: bool) {
    let x64 = inputs(n, case.lo, case.hi);
    for dtype in [DType::F32, DType::F64] {
        let (rtol, atol) = if dtype == DType::F32 { (1e-5, 2e-6) } else { (1e-12, 1e-13) };
        let rounded: Vec<f64> = if dtype == DType::F32 {
            x64.iter().map(|&v| v as f32 as f64).collect()
        } else {
            x64.clone()
        };
        let base = Tensor::from_vec(rounded.clone(), [n]).unwrap().to_dtype(dtype).unwrap();
        // A transposed view reads the same values in a different order; compare against that order.
        let (x, order): (Tensor, Vec<usize>) = if transposed {
            let cols = 8;
            let rows = n / cols;
            let t = base.reshape([cols, rows]).unwrap().t().unwrap();
            assert!(!t.is_contiguous());
            (t, (0..rows).flat_map(|r| (0..cols).map(move |c| c * rows + r)).collect())
        } else {
            (base, (0..n).collect())
        };
        let y = (case.op)(&x).unwrap();
        assert_eq!(y.dtype(), dtype);
        assert_eq!(y.dims(), x.dims());
        let got = y.to_f64_vec().unwrap();
        for (k, &i) in order.iter().enumerate() {
            let want = (case.reference)(rounded[i]);
            let err = (got[k] - want).abs();
            assert!(
                err <= atol + rtol * want.abs(),
                "{} {dtype} n={n} transposed={transposed}: f({}) = {} but expected {want} (error {err:e})",
                case.name,
                rounded[i],
                got[k]
            );
        }
    }
}

#[test]
fn forward_values_match_f64_std_functions() {
    for case in cases() {
        check_forward(&case, 1000, false);
        check_forward(&case, 1000, true);
    }
}

#[test]
fn forward_values_on_the_threaded_path() {
    let n = (1 << 15) + 8 * 131; // above PARALLEL_THRESHOLD and not a multiple of a chunk
    for case in cases() {
        check_forward(&case, n, false);
        check_forward(&case, n, true);
    }
}

#[test]
fn special_values() {
    let x = Tensor::from_vec(vec![f32::NEG_INFINITY, -100.0, 0.0, 100.0, f32::INFINITY], [5]).unwrap();
    let v = |y: Result<Tensor>| y.unwrap().to_vec::<f32>().unwrap();
    // sigmoid and silu never overflow into NaN at the extremes.
    let s = v(x.sigmoid());
    assert!(s[0] == 0.0 && s[1] < 1e-40 && s[2] == 0.5 && s[3] == 1.0 && s[4] == 1.0, "{s:?}");
    let silu = v(x.narrow(0, 1, 3).unwrap().silu());
    assert!(silu[0].abs() < 1e-30 && silu[1] == 0.0 && (silu[2] - 100.0).abs() < 1e-4, "{silu:?}");
    assert_eq!(v(x.tanh()), vec![-1.0, -1.0, 0.0, 1.0, 1.0]);
    let e = v(x.exp());
    assert!(e[0] == 0.0 && e[1] < 1e-40 && e[2] == 1.0 && e[4] == f32::INFINITY, "{e:?}");
    assert_eq!(v(x.relu()), vec![0.0, 0.0, 0.0, 100.0, f32::INFINITY]);
    assert_eq!(v(x.clamp(-1.0, 1.0)), vec![-1.0, -1.0, 0.0, 1.0, 1.0]);
    assert_eq!(v(x.log())[2], f32::NEG_INFINITY);
    assert!(v(x.sqrt())[1].is_nan());
    let g = v(x.gelu());
    assert!(g[1] == 0.0 && g[3] == 100.0, "{g:?}");
}

#[test]
fn nan_propagates() {
    // NaN must not be hidden by relu or clamp: a diverging run should show NaN, as in PyTorch.
    for dtype in [DType::F32, DType::F64] {
        let x = Tensor::from_vec(vec![f64::NAN, 1.0], [2]).unwrap().to_dtype(dtype).unwrap();
        for (name, y) in [
            ("relu", x.relu()),
            ("clamp", x.clamp(-0.5, 0.5)),
            ("abs", x.abs()),
            ("gelu", x.gelu()),
            ("sigmoid", x.sigmoid()),
        ] {
            assert!(y.unwrap().to_f64_vec().unwrap()[0].is_nan(), "{name}({dtype} NaN) should be NaN");
        }
    }
}
