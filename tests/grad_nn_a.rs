//! Fused nn ops (softmax, log_softmax, layer_norm, cross_entropy, dropout):
//! gradient checks over random shapes and layouts, forward values against
//! composite or hand-computed references (f32 and f64, extreme logits
//! included), and error messages.

use proptest::prelude::*;
use tamer::ops::nn::cross_entropy::{CrossEntropyOptions, Reduction};
use tamer::testing::strategies::{shape, tensor, tensor_with, view_kind, ViewKind};
use tamer::testing::{check_gradients, GradCheckConfig};
use tamer::{rng, DType, ErrorKind, Tensor};

fn cfg() -> GradCheckConfig {
    GradCheckConfig::default()
}

/// Softmax the composite way (max subtraction with plain tensor ops).
fn softmax_composite(x: &Tensor, axis: isize) -> Tensor {
    let shifted = x.sub(&x.max(&[axis], true).unwrap()).unwrap();
    let e = shifted.exp().unwrap();
    e.div(&e.sum(&[axis], true).unwrap()).unwrap()
}

fn log_softmax_composite(x: &Tensor, axis: isize) -> Tensor {
    let shifted = x.sub(&x.max(&[axis], true).unwrap()).unwrap();
    let log_sum = shifted.exp().unwrap().sum(&[axis], true).unwrap().log().unwrap();
    shifted.sub(&log_sum).unwrap()
}

fn layer_norm_composite(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Tensor {
    let centered = x.sub(&x.mean(&[-1], true).unwrap()).unwrap();
    let var = x.var(&[-1], true, 0).unwrap();
    let mut y = centered.mul(&var.add_scalar(eps).unwrap().rsqrt().unwrap()).unwrap();
    if let Some(w) = w {
        y = y.mul(w).unwrap();
    }
    if let Some(b) = b {
        y = y.add(b).unwrap();
    }
    y
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

/// Deterministic class indices in `0..c`; every `ignore_every`-th row (never row 0) gets `-100`.
fn targets(dims: &[usize], c: usize, seed: u64, ignore_every: Option<usize>) -> Tensor {
    let n: usize = dims.iter().product();
    let t: Vec<i64> = (0..n)
        .map(|r| match ignore_every {
            Some(k) if r > 0 && r % k == 0 => -100,
            _ => ((r as u64).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503)) % c as u64) as i64,
        })
        .collect();
    Tensor::from_vec(t, dims.to_vec()).unwrap()
}

// ---- gradient checks ------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn softmax_gradients_on_every_axis((x, axis) in tensor(shape(1..=3, 1..=5)).prop_flat_map(|x| {
        let r = x.rank() as isize;
        (Just(x), -r..r)
    })) {
        let report = check_gradients(|xs| xs[0].softmax(axis), &[x], &cfg()).unwrap();
        prop_assert!(report.passed(), "axis {axis}: {report}");
    }

    #[test]
    fn log_softmax_gradients_on_every_axis((x, axis) in tensor(shape(1..=3, 1..=5)).prop_flat_map(|x| {
        let r = x.rank() as isize;
        (Just(x), -r..r)
    })) {
        let report = check_gradients(|xs| xs[0].log_softmax(axis), &[x], &cfg()).unwrap();
        prop_assert!(report.passed(), "axis {axis}: {report}");
    }

    #[test]
    fn layer_norm_gradients_for_x_weight_and_bias(
        lead in shape(0..=2, 1..=4),
        c in 3usize..=6,
        kind in view_kind(),
        seed in any::<u64>(),
        affine in 0usize..4,
    ) {
        let mut dims = lead.clone();
        dims.push(c);
        let x = tensor_with(&dims, kind, seed);
        let w = tensor_with(&[c], ViewKind::Contiguous, seed ^ 1);
        let b = tensor_with(&[c], ViewKind::Sliced, seed ^ 2);
        let (use_w, use_b) = (affine & 1 == 1, affine & 2 == 2);
        let mut inputs = vec![x];
        if use_w { inputs.push(w); }
        if use_b { inputs.push(b); }
        let f = |xs: &[Tensor]| {
            let w = use_w.then(|| &xs[1]);
            let b = use_b.then(|| &xs[1 + usize::from(use_w)]);
            xs[0].layer_norm(w, b, 1e-5)
        };
        let report = check_gradients(f, &inputs, &cfg()).unwrap();
        prop_assert!(report.passed(), "dims {dims:?} weight {use_w} bias {use_b}: {report}");
    }

    #[test]
    fn cross_entropy_gradients_wrt_logits(
        lead in shape(1..=2, 1..=4),
        c in 1usize..=6,
        kind in view_kind(),
        seed in any::<u64>(),
        smoothing in prop_oneof![Just(0.0), Just(0.1), Just(0.35)],
        ignore in any::<bool>(),
        reduction in prop_oneof![Just(Reduction::Mean), Just(Reduction::Sum), Just(Reduction::None)],
    ) {
        let mut dims = lead.clone();
        dims.push(c);
        let logits = tensor_with(&dims, kind, seed);
        let t = targets(&lead, c, seed, ignore.then_some(3));
        let mut opts = CrossEntropyOptions::default().with_label_smoothing(smoothing).with_reduction(reduction);
        if ignore {
            opts = opts.with_ignore_index(-100);
        }
        let report = check_gradients(|xs| xs[0].cross_entropy(&t, opts), &[logits], &cfg()).unwrap();
        prop_assert!(report.passed(), "dims {dims:?} {opts:?}: {report}");
    }

    #[test]
    fn dropout_gradients_with_a_fixed_seed(x in tensor(shape(1..=3, 1..=5)), p in 0.0f64..0.9, seed in any::<u64>()) {
        // A fresh RNG of the same seed per call: every evaluation draws the same mask.
        let report = check_gradients(|xs| xs[0].dropout(p, true, &mut rng(seed)), &[x], &cfg()).unwrap();
        prop_assert!(report.passed(), "p {p}: {report}");
    }

    #[test]
    fn softmax_inside_a_bigger_graph(x in tensor(shape(2..=2, 3..=5))) {
        // softmax feeding layer_norm feeding cross-entropy: gradients compose.
        let c = x.dims()[1];
        let t = targets(&[x.dims()[0]], c, 3, None);
        let f = |xs: &[Tensor]| xs[0].softmax(0)?.scale(3.0)?.layer_norm(None, None, 1e-5)?.cross_entropy(&t, CrossEntropyOptions::default());
        let report = check_gradients(f, &[x], &cfg()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }
}

#[test]
fn dropout_gradient_is_the_mask_over_keep_probability() {
    let x = Tensor::randn([6, 7], DType::F64, &mut rng(3)).unwrap().variable();
    let p = 0.3;
    let y = x.dropout(p, true, &mut rng(42)).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let mask = values(&Tensor::dropout_mask([6, 7], p, DType::F64, &mut rng(42)).unwrap());
    let want: Vec<f64> = mask.iter().map(|m| m / (1.0 - p)).collect();
    assert_close(&values(g.get(&x).unwrap()), &want, 1e-15, "dx");
    // The forward used that same mask.
    let fwd: Vec<f64> = values(&x).iter().zip(&want).map(|(x, m)| x * m).collect();
    assert_close(&values(&y), &fwd, 1e-15, "y");
    assert!(mask.contains(&0.0) && mask.contains(&1.0));
}

#[test]
fn fused_gradients_match_the_composite_ones_in_f32() {
    let x = Tensor::randn([5, 9], DType::F32, &mut rng(11)).unwrap().scale(3.0).unwrap().variable();
    let w = Tensor::randn([5, 9], DType::F32, &mut rng(12)).unwrap();
    let grad_of = |y: Tensor| values(y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap().get(&x).unwrap());
    for axis in [0isize, 1] {
        assert_close(&grad_of(x.softmax(axis).unwrap()), &grad_of(softmax_composite(&x, axis)), 1e-5, "softmax");
        assert_close(
            &grad_of(x.log_softmax(axis).unwrap()),
            &grad_of(log_softmax_composite(&x, axis)),
            1e-5,
            "log_softmax",
        );
    }
    let lw = Tensor::randn([9], DType::F32, &mut rng(13)).unwrap();
    let lb = Tensor::randn([9], DType::F32, &mut rng(14)).unwrap();
    assert_close(
        &grad_of(x.layer_norm(Some(&lw), Some(&lb), 1e-5).unwrap()),
        &grad_of(layer_norm_composite(&x, Some(&lw), Some(&lb), 1e-5)),
        1e-4,
        "layer_norm",
    );
}

// ---- forward values -------------------------------------------------------------------

#[test]
fn softmax_matches_the_composite_reference_f32_f64_and_extreme_logits() {
    for dtype in [DType::F32, DType::F64] {
        for spread in [1.0, 30.0, 1e4] {
            let x = Tensor::randn([4, 3, 17], dtype, &mut rng(5)).unwrap().scale(spread).unwrap();
            for axis in [-1isize, 0, 1] {
                let fused = x.softmax(axis).unwrap();
                assert!(fused.is_contiguous());
                let tol = if dtype == DType::F32 { 1e-6 } else { 1e-14 };
                assert_close(&values(&fused), &values(&softmax_composite(&x, axis)), tol, "softmax");
                // log-softmax of ±1e4 logits is ~1e4 in size: its error scales with the input.
                let ltol = tol * spread.max(1.0);
                assert_close(
                    &values(&x.log_softmax(axis).unwrap()),
                    &values(&log_softmax_composite(&x, axis)),
                    ltol,
                    "log_softmax",
                );
                assert!(values(&fused).iter().all(|v| v.is_finite()));
            }
        }
    }
    // ±1e4 side by side: the large one takes all the mass, nothing overflows.
    let x = Tensor::from_vec(vec![1e4f32, -1e4, 0.0, 1e4, 1e4, -1e4], [2, 3]).unwrap();
    assert_eq!(x.softmax(-1).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 0.0, 0.0, 0.5, 0.5, 0.0]);
    let l = x.log_softmax(-1).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(&l[..3], &[0.0, -2e4, -1e4]);
    assert!((l[3] + std::f32::consts::LN_2).abs() < 1e-6 && l[5] < -1.99e4);
}

#[test]
fn softmax_hand_computed_and_non_contiguous_input() {
    // softmax([0, ln 2, ln 3]) = [1, 2, 3] / 6
    let x = Tensor::from_vec(vec![0.0f64, 2f64.ln(), 3f64.ln()], [3]).unwrap();
    assert_close(&values(&x.softmax(0).unwrap()), &[1.0 / 6.0, 2.0 / 6.0, 0.5], 1e-15, "softmax");
    // A transposed input along its last axis equals the softmax of the copy.
    let base = Tensor::randn([5, 4], DType::F64, &mut rng(2)).unwrap();
    let t = base.t().unwrap();
    assert!(!t.is_contiguous());
    assert_close(
        &values(&t.softmax(-1).unwrap()),
        &values(&t.contiguous().unwrap().softmax(-1).unwrap()),
        0.0,
        "strided",
    );
    // A scalar is a row of one.
    assert_eq!(Tensor::scalar(3.0f64).softmax(0).unwrap().to_scalar().unwrap(), 1.0);
    assert_eq!(Tensor::scalar(3.0f64).log_softmax(-1).unwrap().to_scalar().unwrap(), 0.0);
    // Empty tensors pass through.
    assert_eq!(Tensor::zeros([0, 3], DType::F32).unwrap().softmax(-1).unwrap().dims(), &[0, 3]);
}

#[test]
fn layer_norm_matches_the_composite_reference() {
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 2e-5 } else { 1e-12 };
        let x = Tensor::randn([3, 4, 24], dtype, &mut rng(9))
            .unwrap()
            .scale(5.0)
            .unwrap()
            .add_scalar(2.0)
            .unwrap();
        let w = Tensor::randn([24], dtype, &mut rng(10)).unwrap();
        let b = Tensor::randn([24], dtype, &mut rng(11)).unwrap();
        for (wo, bo) in [(None, None), (Some(&w), None), (None, Some(&b)), (Some(&w), Some(&b))] {
            let fused = x.layer_norm(wo, bo, 1e-5).unwrap();
            assert_close(&values(&fused), &values(&layer_norm_composite(&x, wo, bo, 1e-5)), tol, "layer_norm");
        }
        // Non-contiguous input (last axis strided).
        let xt = x.transpose(0, 2).unwrap();
        let fused = xt.layer_norm(None, None, 1e-5).unwrap();
        assert_close(&values(&fused), &values(&layer_norm_composite(&xt, None, None, 1e-5)), tol, "strided");
    }
    // Hand-computed: [1, 3] has mean 2 and variance 1.
    let x = Tensor::from_vec(vec![1.0f64, 3.0], [1, 2]).unwrap();
    assert_close(&values(&x.layer_norm(None, None, 0.0).unwrap()), &[-1.0, 1.0], 1e-15, "hand");
}

#[test]
fn cross_entropy_matches_hand_computed_values() {
    // Uniform logits: loss ln C whatever the target and smoothing.
    let x = Tensor::zeros([2, 4], DType::F64).unwrap();
    let t = Tensor::from_vec(vec![1i64, 3], [2]).unwrap();
    for eps in [0.0, 0.2, 1.0] {
        let l = x.cross_entropy(&t, CrossEntropyOptions::default().with_label_smoothing(eps)).unwrap();
        assert!((l.to_scalar().unwrap() - 4f64.ln()).abs() < 1e-14);
    }
    // Label smoothing: q = (1−ε)·onehot + ε/C.
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], [1, 3]).unwrap();
    let t = Tensor::from_vec(vec![0i64], [1]).unwrap();
    let eps = 0.3;
    let logp: Vec<f64> = {
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        [1.0, 2.0, 3.0].iter().map(|v| v - lse).collect()
    };
    let want = -((1.0 - eps) * logp[0] + eps / 3.0 * logp.iter().sum::<f64>());
    let got = x.cross_entropy(&t, CrossEntropyOptions::default().with_label_smoothing(eps)).unwrap();
    assert!((got.to_scalar().unwrap() - want).abs() < 1e-14);
}

#[test]
fn cross_entropy_reductions_ignore_index_and_batched_shapes() {
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 1e-5 } else { 1e-13 };
        let logits = Tensor::randn([2, 3, 5], dtype, &mut rng(4)).unwrap().scale(2.0).unwrap();
        let t = Tensor::from_vec(vec![0i64, 4, -100, 2, -100, 1], [2, 3]).unwrap();
        let opts = CrossEntropyOptions::default().with_ignore_index(-100).with_label_smoothing(0.1);
        // Per-row reference: −Σ q log p from the composite log-softmax.
        let logp = values(&log_softmax_composite(&logits, -1));
        let tv = t.to_vec::<i64>().unwrap();
        let per_row: Vec<f64> = (0..6)
            .map(|r| {
                if tv[r] == -100 {
                    return 0.0;
                }
                (0..5)
                    .map(|c| -((if c as i64 == tv[r] { 0.9 } else { 0.0 }) + 0.1 / 5.0) * logp[r * 5 + c])
                    .sum()
            })
            .collect();
        let none = logits.cross_entropy(&t, opts.with_reduction(Reduction::None)).unwrap();
        assert_eq!(none.dims(), &[2, 3]);
        assert_close(&values(&none), &per_row, tol, "none");
        let sum: f64 = per_row.iter().sum();
        assert_close(
            &[logits.cross_entropy(&t, opts.with_reduction(Reduction::Sum)).unwrap().to_scalar().unwrap()],
            &[sum],
            tol,
            "sum",
        );
        let mean = logits.cross_entropy(&t, opts).unwrap();
        assert_eq!(mean.dims(), &[] as &[usize]);
        assert_close(&[mean.to_scalar().unwrap()], &[sum / 4.0], tol, "mean over 4 kept rows");
        // [B, T, C] equals the flattened [B·T, C].
        let flat = logits.reshape([6, 5]).unwrap().cross_entropy(&t.reshape([6]).unwrap(), opts).unwrap();
        assert_eq!(flat.to_scalar().unwrap(), mean.to_scalar().unwrap());
    }
    // Every row ignored: the mean is NaN (0/0) as in PyTorch, the gradient 0.
    let x = Tensor::randn([2, 3], DType::F64, &mut rng(1)).unwrap().variable();
    let t = Tensor::from_vec(vec![-100i64, -100], [2]).unwrap();
    let l = x.cross_entropy(&t, CrossEntropyOptions::default().with_ignore_index(-100)).unwrap();
    assert!(l.to_scalar().unwrap().is_nan());
    assert_eq!(values(l.backward().unwrap().get(&x).unwrap()), vec![0.0; 6]);
}

#[test]
fn cross_entropy_is_stable_for_extreme_logits() {
    for dtype in [DType::F32, DType::F64] {
        let x = Tensor::from_vec(vec![1e4f64, -1e4, 0.0, -1e4, 1e4, 1e4], [2, 3])
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
            .variable();
        let t = Tensor::from_vec(vec![0i64, 1], [2]).unwrap();
        let none = x.cross_entropy(&t, CrossEntropyOptions::default().with_reduction(Reduction::None)).unwrap();
        let v = values(&none);
        // Row 0: the target holds all the mass (loss 0); row 1: two tied maxima (loss ln 2).
        assert!(v[0].abs() < 1e-6 && (v[1] - 2f64.ln()).abs() < 1e-6, "{v:?}");
        let smoothed = x.cross_entropy(&t, CrossEntropyOptions::default().with_label_smoothing(0.1)).unwrap();
        let s = smoothed.to_scalar().unwrap();
        // Row 0 pays ε/C·(0 + 2e4 + 1e4), row 1 pays ln 2 + ε/C·(2e4 + 0 + 0) - the composite agrees.
        let want = (0.1 / 3.0 * 3e4 + 2f64.ln() + 0.1 / 3.0 * 2e4) / 2.0;
        assert!((s - want).abs() < 1e-6 * want, "{s} vs {want}");
        let g = values(smoothed.backward().unwrap().get(&x).unwrap());
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        // Row 0: the softmax is onehot(0), and the mean over 2 rows halves p − q.
        let q0 = [0.9 + 0.1 / 3.0, 0.1 / 3.0, 0.1 / 3.0];
        let want0: Vec<f64> = [1.0, 0.0, 0.0].iter().zip(q0).map(|(p, q)| (p - q) / 2.0).collect();
        assert_close(&g[..3], &want0, 1e-6, "row 0 gradient");
    }
}

#[test]
fn dropout_identity_zeros_and_statistics() {
    let x = Tensor::randn([50, 40], DType::F32, &mut rng(8)).unwrap();
    // Evaluation or p = 0: the input itself.
    assert_eq!(values(&x.dropout(0.5, false, &mut rng(1)).unwrap()), values(&x));
    assert_eq!(values(&x.dropout(0.0, true, &mut rng(1)).unwrap()), values(&x));
    // p = 1: zeros, and a zero gradient.
    let v = x.to_dtype(DType::F64).unwrap().variable();
    let y = v.dropout(1.0, true, &mut rng(1)).unwrap();
    assert!(values(&y).iter().all(|&e| e == 0.0));
    assert!(values(y.sum_all().unwrap().backward().unwrap().get(&v).unwrap()).iter().all(|&e| e == 0.0));
    // Reference: x · mask / (1 − p); different seeds give different masks.
    let p = 0.4;
    let fused = values(&x.dropout(p, true, &mut rng(77)).unwrap());
    let mask = values(&Tensor::dropout_mask([50, 40], p, DType::F32, &mut rng(77)).unwrap());
    let reference: Vec<f64> = values(&x)
        .iter()
        .zip(&mask)
        .map(|(x, m)| (*x as f32 * (*m as f32 * (1.0 / (1.0 - p) as f32))) as f64)
        .collect();
    assert_close(&fused, &reference, 1e-6, "dropout");
    assert_ne!(fused, values(&x.dropout(p, true, &mut rng(78)).unwrap()));
    let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / mask.len() as f64;
    assert!((dropped - p).abs() < 0.05, "dropped fraction {dropped}");
}

// ---- errors ---------------------------------------------------------------------------

#[test]
fn softmax_errors() {
    let x = Tensor::zeros([2, 3], DType::F32).unwrap();
    let e = x.softmax(2).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Axis);
    assert!(e.to_string().contains("softmax") && e.to_string().contains("axis 2"), "{e}");
    assert!(x.log_softmax(-3).unwrap_err().to_string().contains("log_softmax"));
    let i = Tensor::from_vec(vec![1i64, 2], [2]).unwrap();
    let e = i.softmax(0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::DType);
    assert!(e.to_string().contains("i64"), "{e}");
}

#[test]
fn layer_norm_errors() {
    let x = Tensor::zeros([2, 3], DType::F32).unwrap();
    let w4 = Tensor::ones([4], DType::F32).unwrap();
    let e = x.layer_norm(Some(&w4), None, 1e-5).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Shape);
    assert!(
        e.to_string().contains("weight has shape [4], expected [3]") && e.to_string().contains("[2, 3]"),
        "{e}"
    );
    let b = Tensor::ones([2, 3], DType::F32).unwrap();
    assert!(x.layer_norm(None, Some(&b), 1e-5).unwrap_err().to_string().contains("bias has shape [2, 3]"));
    let w64 = Tensor::ones([3], DType::F64).unwrap();
    let e = x.layer_norm(Some(&w64), None, 1e-5).unwrap_err();
    assert_eq!(e.kind, ErrorKind::DType);
    assert!(e.to_string().contains("f32") && e.to_string().contains("f64"), "{e}");
    assert_eq!(x.layer_norm(None, None, -1.0).unwrap_err().kind, ErrorKind::Value);
    assert!(x.layer_norm(None, None, f64::NAN).unwrap_err().to_string().contains("eps"));
    assert!(Tensor::scalar(1.0f32).layer_norm(None, None, 1e-5).unwrap_err().to_string().contains("scalar"));
}

#[test]
fn cross_entropy_errors() {
    let x = Tensor::zeros([3, 5], DType::F32).unwrap();
    let opts = CrossEntropyOptions::default();
    // A target out of range names the value and the number of classes.
    let t = Tensor::from_vec(vec![0i64, 7, 1], [3]).unwrap();
    let e = x.cross_entropy(&t, opts).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Index);
    assert!(e.to_string().contains("target 7") && e.to_string().contains("5 classes"), "{e}");
    let t = Tensor::from_vec(vec![0i64, -100, 1], [3]).unwrap();
    assert!(x.cross_entropy(&t, opts).unwrap_err().to_string().contains("target -100"));
    assert!(x.cross_entropy(&t, opts.with_ignore_index(-100)).is_ok());
    let e = x.cross_entropy(&t, opts.with_ignore_index(-1)).unwrap_err();
    assert!(e.to_string().contains("ignore index -1"), "{e}");
    // Shapes.
    let t = Tensor::from_vec(vec![0i64, 1], [2]).unwrap();
    let e = x.cross_entropy(&t, opts).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Shape);
    assert!(
        e.to_string().contains("[3, 5]") && e.to_string().contains("[3]") && e.to_string().contains("[2]"),
        "{e}"
    );
    assert!(Tensor::scalar(1.0f32).cross_entropy(&Tensor::scalar(0i64), opts).is_err());
    // Dtypes and options.
    let tf = Tensor::zeros([3], DType::F32).unwrap();
    let e = x.cross_entropy(&tf, opts).unwrap_err();
    assert_eq!(e.kind, ErrorKind::DType);
    assert!(e.to_string().contains("i64"), "{e}");
    let t = Tensor::from_vec(vec![0i64, 1, 2], [3]).unwrap();
    let e = x.cross_entropy(&t, opts.with_label_smoothing(1.5)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Value);
    assert!(e.to_string().contains("label_smoothing 1.5"), "{e}");
    let xi = Tensor::from_vec(vec![0i64; 15], [3, 5]).unwrap();
    assert_eq!(xi.cross_entropy(&t, opts).unwrap_err().kind, ErrorKind::DType);
}

#[test]
fn dropout_errors() {
    let x = Tensor::zeros([4], DType::F32).unwrap();
    for p in [-0.1, 1.01, f64::NAN] {
        let e = x.dropout(p, true, &mut rng(0)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Value);
        assert!(e.to_string().contains("dropout") && e.to_string().contains("[0, 1]"), "{e}");
    }
    let i = Tensor::from_vec(vec![1i64, 2], [2]).unwrap();
    assert_eq!(i.dropout(0.5, true, &mut rng(0)).unwrap_err().kind, ErrorKind::DType);
}
