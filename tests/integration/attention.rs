//! Scaled dot-product attention: gradients by finite differences, and the
//! fused op against the composite (matmul + masked softmax + matmul) graph.

use proptest::prelude::*;
use tamer::testing::strategies::{tensor_with, view_kind, ViewKind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{DType, Tensor};

/// The plain composite: autodiff through each op.
fn attention_reference(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> tamer::Result<Tensor> {
    let d = q.dims()[q.rank() - 1];
    let (tq, tk) = (q.dims()[q.rank() - 2], k.dims()[k.rank() - 2]);
    let mut s = q.matmul(&k.t()?)?.scale(1.0 / (d as f64).sqrt())?;
    if causal {
        let mask: Vec<f64> = (0..tq).flat_map(|i| (0..tk).map(move |j| if j > i + (tk - tq) { 1.0 } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, [tq, tk])?.to_dtype(q.dtype())?;
        s = s.masked_fill(&mask, f64::NEG_INFINITY)?;
    }
    s.softmax(-1)?.matmul(v)
}

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn gradients_match_finite_differences(
        batch in 1usize..=2, tq in 1usize..=4, extra in 0usize..=2, d in 1usize..=4, dv in 1usize..=3,
        causal in any::<bool>(), kinds in (view_kind(), view_kind(), view_kind()), seed in any::<u64>(),
    ) {
        let tk = tq + extra;
        let q = tensor_with(&[batch, tq, d], kinds.0, seed);
        let k = tensor_with(&[batch, tk, d], kinds.1, seed ^ 1);
        let v = tensor_with(&[batch, tk, dv], kinds.2, seed ^ 2);
        let f = |xs: &[Tensor]| xs[0].scaled_dot_product_attention(&xs[1], &xs[2], causal, None);
        let report = check_gradients(f, &[q, k, v], &GradCheckConfig::default()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }

    #[test]
    fn fused_matches_the_composite_graph(heads in 1usize..=3, t in 1usize..=6, d in 1usize..=5, causal in any::<bool>(), seed in any::<u64>()) {
        let q = tensor_with(&[2, heads, t, d], ViewKind::Permuted, seed).variable();
        let k = tensor_with(&[2, heads, t, d], ViewKind::Sliced, seed ^ 7).variable();
        let v = tensor_with(&[2, heads, t, d], ViewKind::Contiguous, seed ^ 9).variable();
        let fused = q.scaled_dot_product_attention(&k, &v, causal, None).unwrap();
        let reference = attention_reference(&q, &k, &v, causal).unwrap();
        prop_assert!(close(&fused.to_f64_vec().unwrap(), &reference.to_f64_vec().unwrap(), 1e-12));
        let w = tensor_with(fused.dims(), ViewKind::Contiguous, seed ^ 11);
        let gf = fused.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = reference.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        for x in [&q, &k, &v] {
            prop_assert!(close(&gf.get(x).unwrap().to_f64_vec().unwrap(), &gr.get(x).unwrap().to_f64_vec().unwrap(), 1e-10));
        }
    }
}

#[test]
fn causal_attention_ignores_the_future() {
    // Changing the last key/value must not change any output but the last query's.
    let mut r = tamer::rng(3);
    let q = Tensor::randn([1, 5, 4], DType::F32, &mut r).unwrap();
    let k = Tensor::randn([1, 5, 4], DType::F32, &mut r).unwrap();
    let v = Tensor::randn([1, 5, 4], DType::F32, &mut r).unwrap();
    let out = q.scaled_dot_product_attention(&k, &v, true, None).unwrap().to_vec::<f32>().unwrap();
    let bump = Tensor::from_vec([vec![0.0f32; 16], vec![5.0; 4]].concat(), [1, 5, 4]).unwrap();
    let out2 = q
        .scaled_dot_product_attention(&k.add(&bump).unwrap(), &v.add(&bump).unwrap(), true, None)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(out[..16], out2[..16]);
    assert_ne!(out[16..], out2[16..]);
    // The first query attends only to the first key: its output is v[0].
    assert_eq!(&out[..4], &v.to_vec::<f32>().unwrap()[..4]);
}

#[test]
fn shape_errors_name_the_operands() {
    let q = Tensor::zeros([2, 3, 4], DType::F32).unwrap();
    let k = Tensor::zeros([2, 3, 5], DType::F32).unwrap();
    let err = q.scaled_dot_product_attention(&k, &k, false, None).unwrap_err().to_string();
    assert!(
        err.contains("scaled_dot_product_attention") && err.contains("[2, 3, 4]") && err.contains("[2, 3, 5]"),
        "{err}"
    );
    let short = Tensor::zeros([2, 2, 4], DType::F32).unwrap();
    let err = q.scaled_dot_product_attention(&short, &short, true, None).unwrap_err().to_string();
    assert!(err.contains("causal"), "{err}");
    let f64q = Tensor::zeros([2, 3, 4], DType::F64).unwrap();
    assert!(f64q.scaled_dot_product_attention(&q, &q, false, None).is_err());
}
