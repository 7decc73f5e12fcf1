//! f32 property tests of the fast CPU kernels against their plain references,
//! at the sizes where the fast paths change behaviour.
//!
//! The gradient checks run in f64 on about a hundred elements, so they never
//! reach the f32 SIMD bodies with their vector tails, nor the rayon split that
//! starts at [`PARALLEL_THRESHOLD`] elements. Here every fused kernel (softmax,
//! log-softmax, layer norm, cross-entropy, forward and backward) and the SIMD
//! elementwise kernels (the unary functions forward and backward, contiguous
//! and strided, add/sub/mul, `where_cond` with broadcast operands) run on f32
//! data whose row lengths sit at the SIMD edges
//! (one below, at and above 8 and 16 lanes and their multiples, and around
//! the 256-element blocks of the blocked `exp`), both in small tensors and in
//! tensors above the threshold, each under a 1-thread and a 4-thread pool.
//!
//! Every result is compared with the reference kernel evaluated in f64 on the
//! same (f32) inputs, within a tolerance that f32 rounding explains but a
//! wrong constant or a wrong row offset does not. Results computed row by row
//! must also be bit-identical under both pools: splitting rows across threads
//! must never change a value. The SIMD instruction set is the one the process
//! runs with (detected, or chosen with `TAMER_SIMD`), so CI runs this module
//! once per ISA the machine has.

use super::binary::{binary_reference, where_reference};
use super::nn::cross_entropy::{cross_entropy_backward_reference, cross_entropy_backward_rows, cross_entropy_reference, cross_entropy_rows};
use super::nn::layer_norm::{layer_norm_backward_reference, layer_norm_backward_rows, layer_norm_reference, layer_norm_rows};
use super::nn::softmax::{softmax_backward_reference, softmax_backward_rows, softmax_reference, softmax_rows};
use super::unary::{unary_backward_reference, unary_reference};
use super::{CpuStorage, PARALLEL_THRESHOLD};
use crate::backend::contract::binary::{Add, BinaryKernels, Mul, Sub};
use crate::backend::contract::nn::softmax::SoftmaxKind;
use crate::backend::contract::unary::{Exp, Gelu, GeluTanh, Sigmoid, Silu, Tanh, UnaryFn, UnaryKernels};
use crate::testing::proptest_config;
use crate::types::{Layout, Shape};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::OnceLock;

/// Row lengths at the SIMD edges: around 8 (AVX2) and 16 (AVX-512) lanes and
/// their multiples, and around the 256-element blocks of the blocked `exp`.
const ROW_LENS: [usize; 18] = [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 65, 255, 256, 257, 513, 1000];

/// The thread counts every case runs under.
const THREADS: [usize; 2] = [1, 4];

fn pool(threads: usize) -> &'static rayon::ThreadPool {
    static POOLS: OnceLock<Vec<rayon::ThreadPool>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| {
        THREADS
            .iter()
            .map(|&n| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .expect("a rayon pool for the kernel tests")
            })
            .collect()
    });
    &pools[THREADS.iter().position(|&n| n == threads).expect("a thread count from THREADS")]
}

/// `kernel`'s result under each pool of [`THREADS`], in that order.
fn under_each_pool<R: Send>(kernel: impl Fn() -> R + Sync) -> Vec<R> {
    THREADS.iter().map(|&n| pool(n).install(&kernel)).collect()
}

/// `(rows, c)`: a row length from [`ROW_LENS`] and either a few rows (the
/// single-threaded path) or enough rows to pass [`PARALLEL_THRESHOLD`].
fn rows_and_len() -> impl Strategy<Value = (usize, usize)> {
    (proptest::sample::select(&ROW_LENS[..]), any::<bool>(), 0..3usize).prop_map(|(c, large, extra)| {
        let rows = if large { PARALLEL_THRESHOLD.div_ceil(c) + extra } else { 1 + extra };
        (rows, c)
    })
}

/// `n` values uniform in `[centre − spread, centre + spread)`.
fn uniform(seed: u64, n: usize, centre: f32, spread: f32) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| centre + spread * rng.random_range(-1.0f32..1.0)).collect()
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// `got[i]` must lie within `ulps` units of f32 rounding of `scale(i)` from
/// `want[i]`, where `scale(i)` is the size of the terms that element is
/// computed from (so that cancellation does not demand the impossible);
/// non-finite values must match.
fn assert_close(what: &str, got: &[f32], want: &[f64], ulps: f64, scale: impl Fn(usize) -> f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: lengths differ", what);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !w.is_finite() || !g.is_finite() {
            prop_assert!(g as f64 == w || (g.is_nan() && w.is_nan()), "{}[{}]: {:e}, expected {:e}", what, i, g, w);
            continue;
        }
        let err = (g as f64 - w).abs();
        let tol = ulps * U * scale(i) + f32::MIN_POSITIVE as f64 * U;
        prop_assert!(err <= tol, "{}[{}]: {:e}, expected {:e} (error {:e} > tolerance {:e})", what, i, g, w, err, tol);
    }
    Ok(())
}

/// Results from the two pools must be bit-identical: rows are independent.
fn assert_same_under_each_pool(what: &str, results: &[Vec<f32>]) -> Result<(), TestCaseError> {
    for (k, r) in results.iter().enumerate().skip(1) {
        let first_difference = r.iter().zip(&results[0]).position(|(a, b)| a.to_bits() != b.to_bits());
        prop_assert!(
            first_difference.is_none() && r.len() == results[0].len(),
            "{}: {} threads and {} thread differ first at element {:?}",
            what,
            THREADS[k],
            THREADS[0],
            first_difference
        );
    }
    Ok(())
}

/// Unit roundoff scale of f32 (one ulp of 1).
const U: f64 = f32::EPSILON as f64;

/// Per row: the largest element and the row's range (max − min).
fn row_max_and_range(x: &[f64], c: usize) -> Vec<(f64, f64)> {
    x.chunks(c)
        .map(|row| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let min = row.iter().copied().fold(f64::INFINITY, f64::min);
            (max, max - min)
        })
        .collect()
}

fn check_softmax(rows: usize, c: usize, seed: u64, spread: f32) -> Result<(), TestCaseError> {
    let x = uniform(seed, rows * c, 0.0, spread);
    let dy = uniform(seed ^ 1, rows * c, 0.0, 1.0);
    let x64 = widen(&x);
    let stats = row_max_and_range(&x64, c);
    // exp(x − max) carries the rounding of x − max, relative to |x − max|, and
    // every entry shares the row sum's, relative to the row's range and growing
    // like √c over the row.
    let shift = |i: usize| 1.0 + (x64[i] - stats[i / c].0).abs() + stats[i / c].1 + (c as f64).sqrt();
    for kind in [SoftmaxKind::Softmax, SoftmaxKind::LogSoftmax] {
        let name = kind.name();
        let ys = under_each_pool(|| softmax_rows(&x, c, kind));
        assert_same_under_each_pool(name, &ys)?;
        let want = softmax_reference(&x64, c, kind);
        for (y, threads) in ys.iter().zip(THREADS) {
            let name = &format!("{name}, {threads} threads");
            match kind {
                SoftmaxKind::Softmax => assert_close(name, y, &want, 8.0, |i| want[i] * shift(i))?,
                SoftmaxKind::LogSoftmax => assert_close(name, y, &want, 8.0, |i| shift(i) + (c as f64).ln())?,
            }
        }

        // The backward of the fast forward's output, against the O(c²) Jacobian product in f64.
        let y = &ys[0];
        let backward_name = format!("{name} backward");
        let dxs = under_each_pool(|| softmax_backward_rows(y, &dy, c, kind));
        assert_same_under_each_pool(&backward_name, &dxs)?;
        let (y64, dy64) = (widen(y), widen(&dy));
        let want = softmax_backward_reference(&y64, &dy64, c, kind);
        // dxⱼ = yⱼ·(dyⱼ − Σ y·dy) (or dyⱼ − e^yⱼ·Σ dy): a few ulp of the terms it
        // is made of, not of the (possibly cancelled) result, and a few more for
        // the row sum (the scalar body adds it serially).
        let row_sums: Vec<f64> = (0..rows)
            .map(|r| match kind {
                SoftmaxKind::Softmax => (r * c..(r + 1) * c).map(|j| (y64[j] * dy64[j]).abs()).sum(),
                SoftmaxKind::LogSoftmax => (r * c..(r + 1) * c).map(|j| dy64[j].abs()).sum(),
            })
            .collect();
        for (dx, threads) in dxs.iter().zip(THREADS) {
            assert_close(&format!("{backward_name}, {threads} threads"), dx, &want, 16.0, |j| match kind {
                SoftmaxKind::Softmax => y64[j] * (dy64[j].abs() + row_sums[j / c]),
                SoftmaxKind::LogSoftmax => dy64[j].abs() + y64[j].exp() * row_sums[j / c],
            })?;
        }
    }
    Ok(())
}

fn check_layer_norm(rows: usize, c: usize, seed: u64, centre: f32, affine: bool) -> Result<(), TestCaseError> {
    let x = uniform(seed, rows * c, centre, 2.0);
    let dy = uniform(seed ^ 1, rows * c, 0.0, 1.0);
    let w = uniform(seed ^ 2, c, 1.0, 0.5);
    let b = uniform(seed ^ 3, c, 0.0, 1.0);
    let (w, b) = if affine { (Some(&w[..]), Some(&b[..])) } else { (None, None) };
    let eps = 1e-5f32;
    let forwards = under_each_pool(|| layer_norm_rows(&x, c, w, b, eps));
    for (name, pick) in [("layer_norm y", 0), ("layer_norm mean", 1), ("layer_norm rstd", 2)] {
        let part = |f: &(Vec<f32>, Vec<f32>, Vec<f32>)| [&f.0, &f.1, &f.2][pick].clone();
        assert_same_under_each_pool(name, &forwards.iter().map(part).collect::<Vec<_>>())?;
    }
    let (x64, dy64) = (widen(&x), widen(&dy));
    let (w64, b64) = (w.map(widen), b.map(widen));
    let weight = |j: usize| w64.as_ref().map_or(1.0, |w| w[j % c].abs());
    let bias = |j: usize| b64.as_ref().map_or(0.0, |b| b[j % c].abs());
    let (want_y, want_mean, want_rstd) = layer_norm_reference(&x64, c, w64.as_deref(), b64.as_deref(), eps as f64);
    // The mean's rounding is relative to the centre; x − mean then carries it
    // relative to the row's spread (1/rstd): that ratio scales every later error,
    // as does the row sums' rounding, growing like √c.
    let conditioning = |r: usize| 1.0 + centre.abs() as f64 * want_rstd[r] + (c as f64).sqrt();
    let xhat = |j: usize| (x64[j] - want_mean[j / c]) * want_rstd[j / c];
    for ((y, mean, rstd), threads) in forwards.iter().zip(THREADS) {
        let at = |what: &str| format!("{what}, {threads} threads");
        assert_close(&at("layer_norm mean"), mean, &want_mean, 8.0, |r| centre.abs() as f64 + 1.0 / want_rstd[r])?;
        assert_close(&at("layer_norm rstd"), rstd, &want_rstd, 8.0, |r| want_rstd[r] * conditioning(r))?;
        assert_close(&at("layer_norm y"), y, &want_y, 8.0, |j| {
            (1.0 + xhat(j).abs()) * weight(j) * conditioning(j / c) + bias(j)
        })?;
    }

    // The backward from the fast forward's statistics, against the O(c²) Jacobian product in f64.
    let (mean, rstd) = (&forwards[0].1, &forwards[0].2);
    let backwards = under_each_pool(|| layer_norm_backward_rows(&x, &dy, c, w, mean, rstd, affine, affine));
    assert_same_under_each_pool("layer_norm dx", &backwards.iter().map(|b| b.0.clone()).collect::<Vec<_>>())?;
    let (want_dx, want_dw, want_db) = layer_norm_backward_reference(&x64, &dy64, c, w64.as_deref(), eps as f64);
    // dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·w: a few ulp of
    // rstd·(|g| + mean|g|·(1 + |x̂|)).
    let mean_abs_g: Vec<f64> = (0..rows)
        .map(|r| (r * c..(r + 1) * c).map(|j| dy64[j].abs() * weight(j)).sum::<f64>() / c as f64)
        .collect();
    // x̂ itself is off by the mean's rounding times rstd, whatever its size.
    let abs_dw_terms: Vec<f64> = (0..c)
        .map(|k| (0..rows).map(|r| dy64[r * c + k].abs() * (1.0 + xhat(r * c + k).abs()) * conditioning(r)).sum())
        .collect();
    let abs_db_terms: Vec<f64> = (0..c).map(|k| (0..rows).map(|r| dy64[r * c + k].abs()).sum()).collect();
    for ((dx, dw, db), threads) in backwards.iter().zip(THREADS) {
        let at = |what: &str| format!("{what}, {threads} threads");
        assert_close(&at("layer_norm dx"), dx, &want_dx, 8.0, |j| {
            let r = j / c;
            want_rstd[r] * conditioning(r) * (dy64[j].abs() * weight(j) + mean_abs_g[r] * (1.0 + xhat(j).abs()))
        })?;
        if affine {
            // Sums over rows, split into per-task partials: a few ulp of Σ|terms|.
            assert_close(&at("layer_norm dweight"), dw, &want_dw, 8.0, |k| abs_dw_terms[k])?;
            assert_close(&at("layer_norm dbias"), db, &want_db, 8.0, |k| abs_db_terms[k])?;
        } else {
            prop_assert!(dw.is_empty() && db.is_empty(), "layer_norm backward filled weight gradients nobody asked for");
        }
    }
    Ok(())
}

fn check_cross_entropy(rows: usize, c: usize, seed: u64, spread: f32, smoothing: f64) -> Result<(), TestCaseError> {
    let x = uniform(seed, rows * c, 0.0, spread);
    let ignore = -100i64;
    // Every 5th row ignored (row 0 never), the others a class spread over 0..c.
    let targets: Vec<i64> = (0..rows as u64)
        .map(|r| if r % 5 == 4 { ignore } else { ((r * 7919 + seed % 13) % c as u64) as i64 })
        .collect();
    let rows_of: Vec<Option<usize>> = targets.iter().map(|&t| (t != ignore).then_some(t as usize)).collect();
    let forwards = under_each_pool(|| cross_entropy_rows(&x, c, &rows_of, smoothing));
    let losses: Vec<Vec<f32>> = forwards.iter().map(|f| f.iter().map(|l| l.0).collect()).collect();
    assert_same_under_each_pool("cross_entropy", &losses)?;
    let x64 = widen(&x);
    let stats = row_max_and_range(&x64, c);
    let want = cross_entropy_reference(&x64, c, &targets, smoothing, Some(ignore));
    // −Σ q log p: a few ulp of the log-softmax terms, |x − max| + ln Σ ≤ range + ln c.
    let log_scale = |r: usize| 1.0 + stats[r].1 + (c as f64).ln();
    for (l, threads) in losses.iter().zip(THREADS) {
        assert_close(&format!("cross_entropy, {threads} threads"), l, &want, 8.0, log_scale)?;
    }

    let (max, log_sum): (Vec<f32>, Vec<f32>) = forwards[0].iter().map(|&(_, m, s)| (m, s)).unzip();
    let row_grad = uniform(seed ^ 1, rows, 0.0, 2.0);
    let dxs = under_each_pool(|| cross_entropy_backward_rows(&x, c, &rows_of, &max, &log_sum, &row_grad, smoothing));
    assert_same_under_each_pool("cross_entropy backward", &dxs)?;
    let want = cross_entropy_backward_reference(&x64, c, &targets, &widen(&row_grad), smoothing, Some(ignore));
    let probabilities = softmax_reference(&x64, c, SoftmaxKind::Softmax);
    // g·(p − q): p carries exp's rounding relative to the shift, q (1 − ε on
    // the target, ε/c everywhere) an ulp of itself; ignored rows must be exactly 0.
    let scale = |j: usize| {
        let (r, k) = (j / c, j % c);
        let Some(target) = rows_of[r] else { return 0.0 };
        let q = if k == target { 1.0 - smoothing } else { 0.0 } + smoothing / c as f64;
        row_grad[r].abs() as f64 * (probabilities[j] * log_scale(r) + q)
    };
    for (dx, threads) in dxs.iter().zip(THREADS) {
        assert_close(&format!("cross_entropy backward, {threads} threads"), dx, &want, 8.0, scale)?;
    }
    Ok(())
}

/// The layout of an `[rows, c]` operand of `n = rows·c` elements: contiguous,
/// or (when `transposed`) the transpose of a contiguous `[c, rows]`, which the
/// kernels must gather.
fn layout_of(rows: usize, c: usize, transposed: bool) -> Layout {
    if transposed {
        Layout::contiguous([c, rows]).permute("test", &[1, 0]).expect("a 2-d permutation")
    } else {
        Layout::contiguous([rows, c])
    }
}

/// The f32 payload of a kernel's result.
fn f32s(name: &str, out: crate::Result<CpuStorage>) -> Vec<f32> {
    match out.map(CpuStorage::into_vec::<f32>) {
        Ok(Ok(v)) => v,
        other => panic!("{name}: expected an f32 result, got {other:?}"),
    }
}

/// A unary op, forward and backward, over `[rows, c]` (maybe strided) through
/// the kernel trait (so the rayon split is the one under test), against the
/// scalar formulas in f64 on the same f32 inputs. The forward must be within
/// `ulps` of `scale(want)`; the backward `dy·f'(x, y)` (from the fast
/// forward's `y`) within `ulps` of `|dy|·(1 + |f'|)`.
#[allow(clippy::too_many_arguments)]
fn check_unary<U: UnaryFn>(
    f: U,
    (rows, c): (usize, usize),
    transposed: bool,
    seed: u64,
    spread: f32,
    ulps: f64,
    scale: impl Fn(f64) -> f64,
) -> Result<(), TestCaseError> {
    let n = rows * c;
    let x = uniform(seed, n, 0.0, spread);
    let layout = layout_of(rows, c, transposed);
    let storage = CpuStorage::F32(x.clone());
    let ys: Vec<Vec<f32>> = under_each_pool(|| f32s(U::NAME, storage.unary(&layout, f)));
    assert_same_under_each_pool(U::NAME, &ys)?;
    // Element i of the result is element `offsets[i]` of the storage.
    let x_seen: Vec<f32> = layout.offsets().map(|o| x[o]).collect();
    let want = unary_reference(&widen(&x_seen), f);
    for (y, threads) in ys.iter().zip(THREADS) {
        assert_close(&format!("{}, {threads} threads", U::NAME), y, &want, ulps, |i| scale(want[i]))?;
    }

    // The backward, with x strided like the forward's input and y, dy contiguous.
    let y = &ys[0];
    let dy = uniform(seed ^ 1, n, 0.0, 1.0);
    let (ys_storage, dy_storage) = (CpuStorage::F32(y.clone()), CpuStorage::F32(dy.clone()));
    let out_layout = Layout::contiguous([rows, c]);
    let name = format!("{} backward", U::NAME);
    let dxs: Vec<Vec<f32>> = under_each_pool(|| f32s(&name, storage.unary_backward(&layout, &ys_storage, &out_layout, &dy_storage, &out_layout, f)));
    assert_same_under_each_pool(&name, &dxs)?;
    let (y64, dy64) = (widen(y), widen(&dy));
    let want = unary_backward_reference(&widen(&x_seen), &y64, &dy64, f);
    let derivative = unary_backward_reference(&widen(&x_seen), &y64, &vec![1.0; n], f);
    for (dx, threads) in dxs.iter().zip(THREADS) {
        assert_close(&format!("{name}, {threads} threads"), dx, &want, ulps, |i| {
            dy64[i].abs() * (1.0 + derivative[i].abs())
        })?;
    }
    Ok(())
}

/// `where_cond(c, t, f)` of `[rows, c]` operands, each contiguous, broadcast
/// from a row (`[c]`) or a column (`[rows, 1]`), or a single value, against the
/// reference: a selection, so bit for bit.
fn check_where((rows, c): (usize, usize), kinds: [usize; 3], seed: u64) -> Result<(), TestCaseError> {
    let out = Shape::new([rows, c]);
    let shape_of = |kind: usize| -> Vec<usize> {
        match kind {
            0 => vec![rows, c],
            1 => vec![c],
            2 => vec![rows, 1],
            _ => vec![1],
        }
    };
    let operand = |kind: usize, salt: u64| {
        let dims = shape_of(kind);
        let numel = dims.iter().product();
        let layout = Layout::contiguous(dims).broadcast_as("test", &out).expect("a broadcast operand");
        (uniform(seed ^ salt, numel, 0.0, 2.0), layout)
    };
    let (mut cond, lc) = operand(kinds[0], 1);
    // Zeros (of both signs), ones and NaNs in the condition.
    for (i, v) in cond.iter_mut().enumerate() {
        *v = [0.0, 1.0, -0.0, *v, f32::NAN][i % 5];
    }
    let ((t, lt), (f, lf)) = (operand(kinds[1], 2), operand(kinds[2], 3));
    let (sc, st, sf) = (CpuStorage::F32(cond.clone()), CpuStorage::F32(t.clone()), CpuStorage::F32(f.clone()));
    let outs: Vec<Vec<f32>> = under_each_pool(|| f32s("where_cond", sc.where_cond(&lc, &st, &lt, &sf, &lf)));
    let want = where_reference(&cond, &lc, &t, &lt, &f, &lf);
    for (got, threads) in outs.iter().zip(THREADS) {
        let first_difference = got.iter().zip(&want).position(|(g, w)| g.to_bits() != w.to_bits());
        prop_assert!(
            first_difference.is_none(),
            "where_cond {:?} ({} threads) differs from the reference at {:?}",
            kinds,
            threads,
            first_difference
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn softmax_and_log_softmax_match_the_reference(
        (rows, c) in rows_and_len(), seed in any::<u64>(), spread in prop_oneof![Just(1.0f32), Just(30.0f32)],
    ) {
        check_softmax(rows, c, seed, spread)?;
    }

    #[test]
    fn layer_norm_matches_the_reference(
        (rows, c) in rows_and_len(), seed in any::<u64>(), centre in prop_oneof![Just(0.0f32), Just(300.0f32)], affine in any::<bool>(),
    ) {
        check_layer_norm(rows, c, seed, centre, affine)?;
    }

    #[test]
    fn cross_entropy_matches_the_reference(
        (rows, c) in rows_and_len(), seed in any::<u64>(), spread in prop_oneof![Just(1.0f32), Just(30.0f32)],
        smoothing in prop_oneof![Just(0.0), Just(0.1)],
    ) {
        check_cross_entropy(rows, c, seed, spread, smoothing)?;
    }

    #[test]
    fn unary_functions_and_their_backward_match_the_reference(shape in rows_and_len(), transposed in any::<bool>(), seed in any::<u64>()) {
        // The documented accuracy (a few ulp of the result, `simd/math.rs`) with
        // margin; the GELUs' and SiLU's f32 results near 0 are measured against
        // the output scale, as their relative error is there.
        check_unary(Exp, shape, transposed, seed, 80.0, 4.0, f64::abs)?;
        check_unary(Gelu, shape, transposed, seed, 8.0, 8.0, |want| f64::max(1.0, want.abs()))?;
        check_unary(GeluTanh, shape, transposed, seed, 8.0, 8.0, |want| f64::max(1.0, want.abs()))?;
        check_unary(Tanh, shape, transposed, seed, 8.0, 4.0, |want| f64::max(1e-3, want.abs()))?;
        check_unary(Sigmoid, shape, transposed, seed, 30.0, 4.0, f64::abs)?;
        check_unary(Silu, shape, transposed, seed, 30.0, 8.0, |want| f64::max(1.0, want.abs()))?;
    }

    #[test]
    fn where_cond_matches_the_reference(shape in rows_and_len(), kinds in proptest::array::uniform3(0..4usize), seed in any::<u64>()) {
        check_where(shape, kinds, seed)?;
    }

    #[test]
    fn add_sub_mul_are_exact((rows, c) in rows_and_len(), seed in any::<u64>()) {
        let n = rows * c;
        let (a, b) = (uniform(seed, n, 0.0, 1e3), uniform(seed ^ 1, n, 0.0, 1e3));
        let layout = Layout::contiguous([n]);
        let (sa, sb) = (CpuStorage::F32(a.clone()), CpuStorage::F32(b.clone()));
        for (name, op) in [("add", 0), ("sub", 1), ("mul", 2)] {
            let outs: Vec<Vec<f32>> = under_each_pool(|| {
                let out = match op {
                    0 => sa.binary(&layout, &sb, &layout, Add),
                    1 => sa.binary(&layout, &sb, &layout, Sub),
                    _ => sa.binary(&layout, &sb, &layout, Mul),
                };
                match out.map(CpuStorage::into_vec::<f32>) {
                    Ok(Ok(v)) => v,
                    other => panic!("{name}: expected an f32 result, got {other:?}"),
                }
            });
            let want = match op {
                0 => binary_reference(&a, &layout, &b, &layout, Add),
                1 => binary_reference(&a, &layout, &b, &layout, Sub),
                _ => binary_reference(&a, &layout, &b, &layout, Mul),
            };
            for (out, threads) in outs.iter().zip(THREADS) {
                let first_difference = out.iter().zip(&want).position(|(g, w)| g.to_bits() != w.to_bits());
                prop_assert!(first_difference.is_none(), "{} ({} threads) differs from the reference at {:?}", name, threads, first_difference);
            }
        }
    }
}
