//! layer_norm: gradient checks for the input, weight and bias over random
//! shapes and layouts, forward values against the composite reference, and
//! error messages.

use crate::common::{assert_close, values};
use proptest::prelude::*;
use tamer::testing::strategies::{shape, tensor_with, view_kind, ViewKind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{rng, DType, ErrorKind, Tensor};

fn cfg() -> GradCheckConfig {
    GradCheckConfig::default()
}

/// Layer norm over the last axis the composite way (mean, variance, rsqrt).
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

// ---- gradient checks ------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config(24))]

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
}

#[test]
fn fused_layer_norm_gradients_match_the_composite_ones_in_f32() {
    let x = Tensor::randn([5, 9], DType::F32, &mut rng(11)).unwrap().scale(3.0).unwrap().variable();
    let w = Tensor::randn([5, 9], DType::F32, &mut rng(12)).unwrap();
    let grad_of = |y: Tensor| values(y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap().get(&x).unwrap());
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

// ---- errors ---------------------------------------------------------------------------

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
