//! cross_entropy: gradient checks with respect to the logits over random
//! shapes, layouts, label smoothing, ignored targets and reductions; forward
//! values against hand-computed and composite references (extreme logits
//! included); error messages.

use crate::common::{assert_close, values};
use crate::softmax::log_softmax_composite;
use proptest::prelude::*;
use tamer::ops::nn::cross_entropy::{CrossEntropyOptions, Reduction};
use tamer::testing::strategies::{shape, tensor_with, view_kind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{rng, DType, ErrorKind, Tensor};

fn cfg() -> GradCheckConfig {
    GradCheckConfig::default()
}

/// Deterministic class indices in `0..c`; every `ignore_every`-th row (never row 0) gets `-100`.
pub fn targets(dims: &[usize], c: usize, seed: u64, ignore_every: Option<usize>) -> Tensor {
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
    #![proptest_config(proptest_config(24))]

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
}

// ---- forward values -------------------------------------------------------------------

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

// ---- errors ---------------------------------------------------------------------------

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
