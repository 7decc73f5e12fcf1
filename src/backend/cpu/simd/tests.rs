//! Every kernel of every ISA this CPU supports (scalar, AVX2, AVX-512, each
//! called through its own table, not only the dispatcher) against f64
//! references, over lengths that hit empty input, pure tails, one vector,
//! vector + tail and many vectors, and for the formula kernels, which run
//! two vectors at a time, pairs followed by a lone vector and a tail (53 =
//! 32 + 16 + 5 and 61 = 32 + 16 + 13 at 16 lanes, 61 = 48 + 8 + 5 at 8).

use super::{scalar, select, Isa, Simd};
use crate::backend::contract::unary::{Gelu, GeluTanh, UnaryFn};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LENS: [usize; 11] = [0, 1, 7, 15, 16, 17, 33, 53, 61, 1000, 4097];

/// Max relative error of `exp` for normal results: 2 ulp (2⁻²² ≈ 2.4e-7).
const EXP_REL_TOL: f64 = 2.4e-7;
/// Max error of both GELUs: `GELU_ABS_TOL` absolute, or 2 ulp relative for large outputs.
const GELU_ABS_TOL: f64 = 1e-6;

fn isas() -> Vec<Simd> {
    Simd::available()
}

/// The ISAs the CPU has according to the flags the operating system lists in
/// /proc/cpuinfo: an account independent of `is_x86_feature_detected!`.
/// `None` where there is no such file (not Linux) or no flags line.
fn isas_listed_in_cpuinfo() -> Option<Vec<Isa>> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("flags"))?;
    let flags: Vec<&str> = line.split(':').nth(1)?.split_whitespace().collect();
    let has = |f: &str| flags.contains(&f);
    let mut isas = vec![Isa::Scalar];
    if cfg!(target_arch = "x86_64") && has("avx2") && has("fma") {
        isas.push(Isa::Avx2);
    }
    if cfg!(target_arch = "x86_64") && has("avx512f") {
        isas.push(Isa::Avx512);
    }
    Some(isas)
}

fn uniform(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// `n` values: random in `[lo, hi)` with `specials` spread over the slice.
fn with_specials(seed: u64, n: usize, lo: f32, hi: f32, specials: &[f32]) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed ^ n as u64);
    let mut v = uniform(&mut rng, n, lo, hi);
    for (i, &s) in specials.iter().enumerate() {
        if n > 0 {
            v[(i * 7919) % n] = s;
        }
    }
    v
}

fn same(a: f32, b: f32) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Error of `got` against `want` (f64), for a kernel that must match `want`
/// to `abs_tol` or to `rel_tol` of `|want|`. Non-finite values must match exactly.
fn check_close(what: &str, isa: Isa, x: &[f32], got: &[f32], want: impl Fn(f64) -> f64, abs_tol: f64, rel_tol: f64) -> f64 {
    let mut worst = 0.0f64;
    for (&xi, &g) in x.iter().zip(got) {
        let w = want(xi as f64);
        let wf = w as f32;
        if !wf.is_finite() || !g.is_finite() {
            assert!(same(g, wf), "{what}/{}: f({xi:e}) = {g:e}, expected {wf:e}", isa.name());
            continue;
        }
        let err = (g as f64 - w).abs();
        let scaled = err / abs_tol.max(rel_tol * w.abs());
        assert!(scaled <= 1.0, "{what}/{}: f({xi:e}) = {g:e}, expected {w:e} (error {err:e})", isa.name());
        worst = worst.max(scaled);
    }
    worst
}

#[test]
fn detection_finds_the_isas_the_cpu_lists() {
    let available: Vec<Isa> = isas().into_iter().map(Simd::isa).collect();
    eprintln!("simd ISAs under test: {available:?}");
    let Some(listed) = isas_listed_in_cpuinfo() else {
        eprintln!("no /proc/cpuinfo flags to check the detected ISAs against");
        return;
    };
    assert_eq!(available, listed, "ISAs detected at run time vs the flags in /proc/cpuinfo");
}

/// CI runs the kernel tests once per ISA with `TAMER_SIMD` set and this test
/// among them: it fails when the variable's ISA is not the one in use.
#[test]
fn the_kernels_run_with_the_isa_asked_for_or_the_widest_listed() {
    let asked = std::env::var(select::VARIABLE).ok().filter(|v| !v.trim().is_empty());
    let in_use = super::selected("simd test").map(Simd::isa);
    eprintln!("simd ISA in use: {in_use:?} ({}={asked:?})", select::VARIABLE);
    match asked {
        Some(name) => assert_eq!(in_use.map(Isa::name), Ok(name.trim()), "{}={name}", select::VARIABLE),
        None => match isas_listed_in_cpuinfo() {
            Some(listed) => assert_eq!(in_use, Ok(*listed.last().unwrap()), "the widest ISA /proc/cpuinfo lists"),
            None => eprintln!("no /proc/cpuinfo flags to check the ISA in use against"),
        },
    }
}

#[test]
fn exp_matches_f64_for_all_isas_and_lengths() {
    let specials = [
        0.0,
        -0.0,
        1.0,
        88.72,
        88.8,
        89.0,
        1e30,
        -87.3,
        -100.0,
        -103.9,
        -104.0,
        -1e30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    for simd in isas() {
        for &n in &LENS {
            for (lo, hi) in [(-110.0, 95.0), (-1.0, 1.0), (-1e-6, 1e-6)] {
                let x = with_specials(1, n, lo, hi, &specials);
                let mut y = vec![0.0; n];
                simd.exp_f32(&x, &mut y);
                for (&xi, &yi) in x.iter().zip(&y) {
                    let w = (xi as f64).exp();
                    if w < f32::MIN_POSITIVE as f64 && yi.is_finite() {
                        // Subnormal results carry fewer bits: within one subnormal ulp.
                        assert!(
                            (yi as f64 - w).abs() <= 2f64.powi(-149),
                            "exp/{}: exp({xi:e}) = {yi:e}, expected {w:e}",
                            simd.isa().name()
                        );
                    } else {
                        check_close("exp", simd.isa(), &[xi], &[yi], f64::exp, 0.0, EXP_REL_TOL);
                    }
                }
            }
        }
    }
}

/// The flash kernels' score rows: `e^(x·scale − shift)` in place, each value
/// the same bits as the two steps then `exp_f32` give, and the sum close to
/// the f64 sum of those values (masked tail lanes add nothing).
#[test]
fn exp_affine_sum_matches_the_steps_done_apart() {
    let mut rng = StdRng::seed_from_u64(7);
    for simd in isas() {
        for &n in &LENS {
            for (scale, shift) in [(0.125f32, 3.5f32), (1.0, 0.0), (-0.7, -2.0)] {
                let x = uniform(&mut rng, n, -20.0, 20.0);
                let steps: Vec<f32> = x.iter().map(|&v| v * scale - shift).collect();
                let mut want = vec![0.0; n];
                simd.exp_f32(&steps, &mut want);
                let mut got = x.clone();
                let sum = simd.exp_affine_sum_f32(&mut got, scale, shift);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.to_bits(), w.to_bits(), "{}: n = {n}, element {i}: {g:e}, expected {w:e}", simd.isa().name());
                }
                let exact: f64 = want.iter().map(|&w| f64::from(w)).sum();
                // A sum of n positive f32s in any order is within n·2⁻²⁴ of
                // the exact one, relatively.
                let bound = n as f64 * 2f64.powi(-24) * exact.abs() + f64::from(f32::MIN_POSITIVE);
                assert!(
                    (f64::from(sum) - exact).abs() <= bound,
                    "{}: n = {n}: sum {sum:e}, expected {exact:e}",
                    simd.isa().name()
                );
            }
        }
    }
}

#[test]
fn exp_dense_sweep_stays_within_two_ulp() {
    // 2²⁰ points over the whole range that has a normal, finite result.
    let x: Vec<f32> = (0..1 << 20).map(|i| -87.3 + 176.0 * i as f32 / (1 << 20) as f32).collect();
    for simd in isas() {
        let mut y = vec![0.0; x.len()];
        simd.exp_f32(&x, &mut y);
        let worst = check_close("exp", simd.isa(), &x, &y, f64::exp, 0.0, EXP_REL_TOL);
        eprintln!("exp/{}: worst relative error = {:.3e}", simd.isa().name(), worst * EXP_REL_TOL);
    }
}

#[test]
fn exp_special_values_follow_libm() {
    let x = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0, -0.0, 88.8, 1e10, -110.0, -1e10];
    for simd in isas() {
        let mut y = [9.0f32; 9];
        simd.exp_f32(&x, &mut y);
        assert_eq!(y[0], f32::INFINITY, "{simd:?}");
        assert_eq!(y[1], 0.0, "{simd:?}");
        assert!(y[2].is_nan(), "{simd:?}");
        assert_eq!((y[3], y[4]), (1.0, 1.0), "{simd:?}");
        assert_eq!((y[5], y[6]), (f32::INFINITY, f32::INFINITY), "{simd:?}");
        assert_eq!((y[7], y[8]), (0.0, 0.0), "{simd:?}");
    }
}

fn gelu_ref(x: f64) -> f64 {
    Gelu.apply(x)
}

fn gelu_tanh_ref(x: f64) -> f64 {
    GeluTanh.apply(x)
}

#[test]
fn gelu_erf_matches_f64_for_all_isas_and_lengths() {
    let specials = [
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        5.0,
        -5.0,
        10.0,
        -10.0,
        1e30,
        -1e30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    for simd in isas() {
        let mut worst = 0.0f64;
        for &n in &LENS {
            for (lo, hi) in [(-8.0, 8.0), (-30.0, 30.0), (-1e-3, 1e-3)] {
                let x = with_specials(2, n, lo, hi, &specials);
                let mut y = vec![0.0; n];
                simd.gelu_erf_f32(&x, &mut y);
                worst = worst.max(check_close("gelu", simd.isa(), &x, &y, gelu_ref, GELU_ABS_TOL, EXP_REL_TOL));
            }
        }
        // A dense sweep where the erf approximation does its work.
        let x: Vec<f32> = (0..200_001).map(|i| -10.0 + i as f32 * 1e-4).collect();
        let mut y = vec![0.0; x.len()];
        simd.gelu_erf_f32(&x, &mut y);
        worst = worst.max(check_close("gelu", simd.isa(), &x, &y, gelu_ref, GELU_ABS_TOL, EXP_REL_TOL));
        eprintln!("gelu/{}: worst error = {:.3} of tolerance", simd.isa().name(), worst);
    }
}

#[test]
fn gelu_tanh_matches_f64_for_all_isas_and_lengths() {
    let specials = [
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        5.0,
        -5.0,
        10.0,
        -10.0,
        1e15,
        -1e15,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    for simd in isas() {
        let mut worst = 0.0f64;
        for &n in &LENS {
            for (lo, hi) in [(-8.0, 8.0), (-30.0, 30.0), (-1e-3, 1e-3)] {
                let x = with_specials(3, n, lo, hi, &specials);
                let mut y = vec![0.0; n];
                simd.gelu_tanh_f32(&x, &mut y);
                worst = worst.max(check_close("gelu_tanh", simd.isa(), &x, &y, gelu_tanh_ref, GELU_ABS_TOL, EXP_REL_TOL));
            }
        }
        let x: Vec<f32> = (0..200_001).map(|i| -10.0 + i as f32 * 1e-4).collect();
        let mut y = vec![0.0; x.len()];
        simd.gelu_tanh_f32(&x, &mut y);
        worst = worst.max(check_close("gelu_tanh", simd.isa(), &x, &y, gelu_tanh_ref, GELU_ABS_TOL, EXP_REL_TOL));
        eprintln!("gelu_tanh/{}: worst error = {:.3} of tolerance", simd.isa().name(), worst);
    }
}

#[test]
fn add_sub_mul_are_exact_for_all_isas_and_lengths() {
    for simd in isas() {
        for &n in &LENS {
            let a = with_specials(4, n, -1e3, 1e3, &[f32::INFINITY, f32::NAN, -0.0]);
            let b = with_specials(5, n, -1e3, 1e3, &[f32::NEG_INFINITY, 1.0]);
            let mut out = vec![0.0; n];
            for (name, f, r) in [
                (
                    "add",
                    Simd::add_f32 as fn(Simd, &[f32], &[f32], &mut [f32]),
                    scalar::add_f32 as fn(&[f32], &[f32], &mut [f32]),
                ),
                ("sub", Simd::sub_f32, scalar::sub_f32),
                ("mul", Simd::mul_f32, scalar::mul_f32),
            ] {
                let mut want = vec![0.0; n];
                r(&a, &b, &mut want);
                f(simd, &a, &b, &mut out);
                assert!(out.iter().zip(&want).all(|(&g, &w)| same(g, w)), "{name}/{} n={n}", simd.isa().name());
            }
        }
    }
}

#[test]
fn sum_dot_max_match_references() {
    for simd in isas() {
        for &n in &LENS {
            let a = with_specials(6, n, -10.0, 10.0, &[]);
            let b = with_specials(7, n, -10.0, 10.0, &[]);
            let sum64: f64 = a.iter().map(|&v| v as f64).sum();
            let abs64: f64 = a.iter().map(|&v| v.abs() as f64).sum();
            let tol = 1e-6 * abs64.max(1.0);
            assert!((simd.sum_f32(&a) as f64 - sum64).abs() <= tol, "sum/{} n={n}", simd.isa().name());
            let dot64: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let dabs: f64 = a.iter().zip(&b).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum();
            assert!(
                (simd.dot_f32(&a, &b) as f64 - dot64).abs() <= 1e-6 * dabs.max(1.0),
                "dot/{} n={n}",
                simd.isa().name()
            );
            assert_eq!(simd.max_f32(&a), scalar::max_f32(&a), "max/{} n={n}", simd.isa().name());
        }
        // max skips NaNs like f32::max; empty and all-NaN give -inf.
        assert_eq!(simd.max_f32(&[]), f32::NEG_INFINITY);
        assert_eq!(simd.max_f32(&[f32::NAN; 19]), f32::NEG_INFINITY);
        let mut v = vec![1.0f32; 37];
        v[3] = f32::NAN;
        v[36] = 2.0;
        assert_eq!(simd.max_f32(&v), 2.0, "{simd:?}");
        v[20] = f32::INFINITY;
        assert_eq!(simd.max_f32(&v), f32::INFINITY, "{simd:?}");
    }
}

fn softmax64(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let e: Vec<f64> = x.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[test]
fn softmax_rows_sum_to_one_and_match_f64() {
    for simd in isas() {
        for &n in LENS.iter().filter(|&&n| n > 0) {
            // Masked (-inf) entries only where the row keeps finite ones.
            let masked: &[f32] = if n >= 16 { &[f32::NEG_INFINITY; 3] } else { &[] };
            for (lo, hi, specials) in [(-5.0, 5.0, &[][..]), (-80.0, 80.0, &[][..]), (1e4, 1e4 + 30.0, &[][..]), (-5.0, 5.0, masked)] {
                let x = with_specials(8, n, lo, hi, specials);
                let mut y = vec![0.0; n];
                simd.softmax_row_f32(&x, &mut y);
                let want = softmax64(&x);
                let total: f64 = y.iter().map(|&v| v as f64).sum();
                assert!((total - 1.0).abs() <= 1e-5, "softmax/{} n={n}: row sums to {total}", simd.isa().name());
                for (i, (&g, &w)) in y.iter().zip(&want).enumerate() {
                    // Relative, as the row sum's f32 rounding scales every entry; the
                    // absolute floor covers results that underflow to subnormals.
                    assert!(
                        (g as f64 - w).abs() <= 5e-6 * w + 1e-44,
                        "softmax/{} n={n} [{i}]: {g:e} vs {w:e}",
                        simd.isa().name()
                    );
                    if x[i] == f32::NEG_INFINITY {
                        assert_eq!(g, 0.0);
                    }
                }
            }
        }
    }
}

#[test]
fn softmax_degenerate_rows_match_scalar() {
    // All -inf (a fully masked row), a +inf and a NaN all give NaN rows, like the
    // scalar reference and PyTorch; an empty row is a no-op.
    for simd in isas() {
        for row in [vec![f32::NEG_INFINITY; 19], vec![0.0, f32::INFINITY, 1.0], vec![1.0, f32::NAN, 3.0, 4.0]] {
            let mut y = vec![0.0; row.len()];
            let mut want = vec![0.0; row.len()];
            simd.softmax_row_f32(&row, &mut y);
            scalar::softmax_row_f32(&row, &mut want);
            assert!(y.iter().zip(&want).all(|(&a, &b)| same(a, b)), "{simd:?}: {row:?} -> {y:?}, expected {want:?}");
        }
        simd.softmax_row_f32(&[], &mut []);
    }
}

#[test]
fn softmax_backward_matches_f64() {
    for simd in isas() {
        for &n in &LENS {
            let mut y = with_specials(9, n, -3.0, 3.0, &[]);
            let sm = y.clone();
            simd.softmax_row_f32(&sm, &mut y);
            let dy = with_specials(10, n, -1.0, 1.0, &[]);
            let mut dx = vec![0.0; n];
            simd.softmax_backward_row_f32(&y, &dy, &mut dx);
            let dot: f64 = y.iter().zip(&dy).map(|(&a, &b)| a as f64 * b as f64).sum();
            for i in 0..n {
                let w = y[i] as f64 * (dy[i] as f64 - dot);
                assert!((dx[i] as f64 - w).abs() <= 1e-6, "softmax_backward/{} n={n} [{i}]", simd.isa().name());
            }
        }
    }
}

/// `(y, mean, rstd)` of one row in f64.
fn layer_norm64(x: &[f32], g: Option<&[f32]>, b: Option<&[f32]>, eps: f64) -> (Vec<f64>, f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let rstd = 1.0 / (var + eps).sqrt();
    let y = (0..x.len())
        .map(|i| (x[i] as f64 - mean) * rstd * g.map_or(1.0, |g| g[i] as f64) + b.map_or(0.0, |b| b[i] as f64))
        .collect();
    (y, mean, rstd)
}

#[test]
fn layer_norm_matches_f64_for_all_isas_and_lengths() {
    for simd in isas() {
        for &n in LENS.iter().filter(|&&n| n > 0) {
            // A large offset checks the statistics do not lose the spread to the mean's rounding.
            for (lo, hi) in [(-2.0, 2.0), (1000.0, 1004.0)] {
                let x = with_specials(11, n, lo, hi, &[]);
                let g = with_specials(12, n, 0.5, 1.5, &[]);
                let b = with_specials(13, n, -1.0, 1.0, &[]);
                for (gamma, beta) in [(None, None), (Some(&g[..]), None), (None, Some(&b[..])), (Some(&g[..]), Some(&b[..]))] {
                    let mut y = vec![0.0; n];
                    let (mean, rstd) = simd.layer_norm_row_f32(&x, gamma, beta, 1e-5, &mut y);
                    let (want, m64, r64) = layer_norm64(&x, gamma, beta, 1e-5);
                    let ctx = format!(
                        "layer_norm/{} n={n} range=({lo},{hi}) gamma={} beta={}",
                        simd.isa().name(),
                        gamma.is_some(),
                        beta.is_some()
                    );
                    let ulp = m64.abs() * f32::EPSILON as f64;
                    assert!((mean as f64 - m64).abs() <= ulp + 1e-7, "{ctx}: mean {mean} vs {m64}");
                    assert!((rstd as f64 - r64).abs() <= 1e-5 * r64, "{ctx}: rstd {rstd} vs {r64}");
                    for (i, (&got, &w)) in y.iter().zip(&want).enumerate() {
                        assert!((got as f64 - w).abs() <= 2e-6 * w.abs().max(1.0), "{ctx} [{i}]: {got} vs {w}");
                    }
                }
            }
        }
    }
}

#[test]
fn layer_norm_backward_matches_f64_and_accumulates() {
    for simd in isas() {
        for &n in LENS.iter().filter(|&&n| n > 0) {
            let x = with_specials(14, n, -2.0, 2.0, &[]);
            let g = with_specials(15, n, 0.5, 1.5, &[]);
            let dy = with_specials(16, n, -1.0, 1.0, &[]);
            let (_, m64, r64) = layer_norm64(&x, None, None, 1e-5);
            let (mean, rstd) = (m64 as f32, r64 as f32);
            for gamma in [None, Some(&g[..])] {
                let mut dx = vec![0.0; n];
                let mut dgamma = vec![0.5; n];
                let mut dbeta = vec![-0.5; n];
                simd.layer_norm_backward_row_f32(&x, &dy, gamma, mean, rstd, &mut dx, Some(&mut dgamma), Some(&mut dbeta));
                let xhat: Vec<f64> = x.iter().map(|&v| (v as f64 - m64) * r64).collect();
                let gg: Vec<f64> = (0..n).map(|i| dy[i] as f64 * gamma.map_or(1.0, |w| w[i] as f64)).collect();
                let g_mean = gg.iter().sum::<f64>() / n as f64;
                let gx_mean = gg.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / n as f64;
                let ctx = format!("layer_norm_backward/{} n={n} gamma={}", simd.isa().name(), gamma.is_some());
                for i in 0..n {
                    let w = r64 * (gg[i] - g_mean - xhat[i] * gx_mean);
                    assert!((dx[i] as f64 - w).abs() <= 1e-5 * w.abs().max(1.0), "{ctx} dx[{i}]: {} vs {w}", dx[i]);
                    let wg = 0.5 + dy[i] as f64 * xhat[i];
                    assert!((dgamma[i] as f64 - wg).abs() <= 1e-5, "{ctx} dgamma[{i}]: {} vs {wg}", dgamma[i]);
                    assert_eq!(dbeta[i], -0.5 + dy[i], "{ctx} dbeta[{i}]");
                }
                // Without gradient buffers only dx is written.
                let mut dx2 = vec![0.0; n];
                simd.layer_norm_backward_row_f32(&x, &dy, gamma, mean, rstd, &mut dx2, None, None);
                assert_eq!(dx, dx2, "{ctx}");
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_slice_position() {
    // Rayon hands kernels arbitrary sub-slices: each element must come out the same.
    let x = with_specials(17, 1000, -20.0, 20.0, &[]);
    for simd in isas() {
        type Kernel = fn(Simd, &[f32], &mut [f32]);
        for (name, f) in [
            ("exp", Simd::exp_f32 as Kernel),
            ("gelu", Simd::gelu_erf_f32),
            ("gelu_tanh", Simd::gelu_tanh_f32),
        ] {
            let mut whole = vec![0.0; x.len()];
            f(simd, &x, &mut whole);
            for split in [1, 5, 17, 333] {
                let mut parts = vec![0.0; x.len()];
                let (a, b) = parts.split_at_mut(split);
                f(simd, &x[..split], a);
                f(simd, &x[split..], b);
                assert_eq!(whole, parts, "{name}/{} split at {split}", simd.isa().name());
            }
        }
    }
}

#[test]
fn vector_isas_agree_bitwise_on_exp() {
    // AVX2 builds 2ⁿ in two exact halves, AVX-512 uses scalef: both round p·2ⁿ once.
    let x: Vec<f32> = (0..100_000).map(|i| -104.0 + 193.0 * i as f32 / 100_000.0).collect();
    let outs: Vec<Vec<f32>> = isas()
        .into_iter()
        .filter(|s| s.isa() != Isa::Scalar)
        .map(|s| {
            let mut y = vec![0.0; x.len()];
            s.exp_f32(&x, &mut y);
            y
        })
        .collect();
    if outs.len() < 2 {
        eprintln!("one vector ISA on this CPU: no second one to compare exp with");
    }
    for pair in outs.windows(2) {
        assert_eq!(pair[0], pair[1]);
    }
}

#[test]
fn mismatched_lengths_use_the_common_prefix() {
    for simd in isas() {
        let x = vec![0.0f32; 21];
        let mut y = vec![7.0f32; 40];
        simd.exp_f32(&x, &mut y);
        assert!(y[..21].iter().all(|&v| v == 1.0) && y[21..].iter().all(|&v| v == 7.0), "{simd:?}");
        let mut out = vec![7.0f32; 5];
        simd.add_f32(&x, &x[..3], &mut out);
        assert_eq!(out, [0.0, 0.0, 0.0, 7.0, 7.0], "{simd:?}");
        let mut y = vec![7.0f32; 19];
        let g = [2.0f32; 17];
        simd.layer_norm_row_f32(&x[..19], Some(&g), None, 1e-5, &mut y);
        assert_eq!(&y[17..], &[7.0, 7.0], "{simd:?}");
    }
}
