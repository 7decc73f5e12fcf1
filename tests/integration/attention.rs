//! Scaled dot-product attention: the masks against PyTorch and against an
//! explicit loop, gradients by finite differences (both causal alignments,
//! Tq < Tk and Tq > Tk), and the hand-written backward against autodiff
//! through the composite graph; the CPU's fused kernels (flash and reference)
//! against the composite graph through the public op, forward and gradients.

use proptest::prelude::*;
use tamer::backend::contract::nn::attention::{with_attention_impl, AttentionImpl, AttnDims, FusedKernel};
use tamer::backend::cpu::nn::attention::{flash, select};
use tamer::checkpoint::fixture;
use tamer::testing::strategies::{tensor_with, tensor_with_dtype, view_kind, ViewKind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{AttnMask, CausalAlign, DType, Tensor};

const TOP_LEFT: AttnMask = AttnMask::Causal(CausalAlign::TopLeft);
const BOTTOM_RIGHT: AttnMask = AttnMask::Causal(CausalAlign::BottomRight);

fn any_mask() -> impl Strategy<Value = AttnMask> {
    prop::sample::select(vec![AttnMask::None, TOP_LEFT, BOTTOM_RIGHT])
}

/// Whether query `i` sees key `j`, written from PyTorch's definitions
/// (`torch.nn.attention.bias.CausalVariant`) rather than with tamer's code:
/// upper-left is `torch.tril(ones(Tq, Tk))`, lower-right is
/// `torch.tril(ones(Tq, Tk), diagonal=Tk - Tq)`.
fn pytorch_visible(mask: AttnMask, i: usize, j: usize, tq: usize, tk: usize) -> bool {
    match mask {
        AttnMask::None => true,
        AttnMask::Causal(CausalAlign::TopLeft) => j <= i,
        AttnMask::Causal(CausalAlign::BottomRight) => j + tq <= i + tk,
    }
}

/// The definition in f64, one loop per output element, for contiguous
/// `q [bh, tq, d]`, `k [bh, tk, d]`, `v [bh, tk, dv]`: a query that sees no
/// key gets zeros (PyTorch's math backend).
fn naive_attention(q: &[f64], k: &[f64], v: &[f64], (bh, tq, tk, d, dv): (usize, usize, usize, usize, usize), mask: AttnMask) -> Vec<f64> {
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0.0; bh * tq * dv];
    for b in 0..bh {
        for i in 0..tq {
            let seen: Vec<usize> = (0..tk).filter(|&j| pytorch_visible(mask, i, j, tq, tk)).collect();
            let scores: Vec<f64> = seen
                .iter()
                .map(|&j| (0..d).map(|c| q[(b * tq + i) * d + c] * k[(b * tk + j) * d + c]).sum::<f64>() * scale)
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for (&j, w) in seen.iter().zip(&weights) {
                for c in 0..dv {
                    out[(b * tq + i) * dv + c] += w / total * v[(b * tk + j) * dv + c];
                }
            }
        }
    }
    out
}

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

proptest! {
    #![proptest_config(proptest_config(24))]

    /// Every mask, Tq below, equal to and above Tk (bottom-right rows that see
    /// no key included: their gradient is zero on both sides).
    #[test]
    fn gradients_match_finite_differences(
        batch in 1usize..=2, tq in 1usize..=4, tk in 1usize..=5, d in 1usize..=4, dv in 1usize..=3,
        mask in any_mask(), kinds in (view_kind(), view_kind(), view_kind()), seed in any::<u64>(),
    ) {
        let q = tensor_with(&[batch, tq, d], kinds.0, seed);
        let k = tensor_with(&[batch, tk, d], kinds.1, seed ^ 1);
        let v = tensor_with(&[batch, tk, dv], kinds.2, seed ^ 2);
        let f = |xs: &[Tensor]| xs[0].scaled_dot_product_attention(&xs[1], &xs[2], mask, None);
        let report = check_gradients(f, &[q, k, v], &GradCheckConfig::default()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }

    #[test]
    fn forward_matches_an_explicit_loop(
        bh in 1usize..=3, tq in 1usize..=6, tk in 1usize..=6, d in 1usize..=5, dv in 1usize..=4,
        mask in any_mask(), seed in any::<u64>(),
    ) {
        let q = tensor_with(&[bh, tq, d], ViewKind::Contiguous, seed);
        let k = tensor_with(&[bh, tk, d], ViewKind::Contiguous, seed ^ 3);
        let v = tensor_with(&[bh, tk, dv], ViewKind::Contiguous, seed ^ 5);
        let out = q.scaled_dot_product_attention(&k, &v, mask, None).unwrap().to_f64_vec().unwrap();
        let (qs, ks, vs) = (q.to_f64_vec().unwrap(), k.to_f64_vec().unwrap(), v.to_f64_vec().unwrap());
        prop_assert!(close(&out, &naive_attention(&qs, &ks, &vs, (bh, tq, tk, d, dv), mask), 1e-12));
    }

    /// The op's own backward (from the kept probabilities) against autodiff
    /// through matmul, masked softmax and matmul.
    #[test]
    fn fused_matches_the_composite_graph(
        heads in 1usize..=3, tq in 1usize..=6, tk in 1usize..=6, d in 1usize..=5, mask in any_mask(), seed in any::<u64>(),
    ) {
        let q = tensor_with(&[2, heads, tq, d], ViewKind::Permuted, seed).variable();
        let k = tensor_with(&[2, heads, tk, d], ViewKind::Sliced, seed ^ 7).variable();
        let v = tensor_with(&[2, heads, tk, d], ViewKind::Contiguous, seed ^ 9).variable();
        let fused = q.scaled_dot_product_attention(&k, &v, mask, None).unwrap();
        let reference = q.attention_probs(&k, mask, None).unwrap().matmul(&v).unwrap();
        prop_assert!(close(&fused.to_f64_vec().unwrap(), &reference.to_f64_vec().unwrap(), 1e-12));
        let w = tensor_with(fused.dims(), ViewKind::Contiguous, seed ^ 11);
        let gf = fused.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = reference.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        for x in [&q, &k, &v] {
            let (a, b) = (gf.get(x).unwrap().to_f64_vec().unwrap(), gr.get(x).unwrap().to_f64_vec().unwrap());
            prop_assert!(a.iter().all(|g| g.is_finite()), "{a:?}");
            prop_assert!(close(&a, &b, 1e-10));
        }
    }
}

/// `scripts/make_attention_fixtures.py`: PyTorch's `F.scaled_dot_product_attention`
/// in f64 with no mask, `is_causal=True` and `causal_lower_right`, for Tq < Tk,
/// Tq == Tk and Tq > Tk: outputs and the gradients of `(out * w).sum()`.
#[test]
fn matches_pytorch_for_both_causal_alignments() {
    let fx = fixture("attention_masks.safetensors").unwrap();
    let mut compared = 0;
    for case in ["tq3_tk5", "tq4_tk4", "tq5_tk3"] {
        let input = |name: &str| fx.get(&format!("{case}.{name}")).unwrap().clone().variable();
        let (q, k, v) = (input("q"), input("k"), input("v"));
        let w = fx.get(&format!("{case}.w")).unwrap();
        for (torch_name, mask) in [("none", AttnMask::None), ("upper_left", TOP_LEFT), ("lower_right", BOTTOM_RIGHT)] {
            let out = q.scaled_dot_product_attention(&k, &v, mask, None).unwrap();
            let grads = out.mul(w).unwrap().sum_all().unwrap().backward().unwrap();
            let key = |what: &str| format!("{case}.{torch_name}.{what}");
            fx.check_close(&key("out"), &out, 1e-12, 1e-12).unwrap();
            for (what, x) in [("dq", &q), ("dk", &k), ("dv", &v)] {
                fx.check_close(&key(what), grads.get(x).unwrap(), 1e-11, 1e-12).unwrap();
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 9);
}

#[test]
fn masks_match_pytorchs_documented_patterns() {
    // torch.nn.attention.bias.CausalVariant's docs, shape (3, 4).
    let pattern = |mask: AttnMask| -> Vec<Vec<u8>> { (0..3).map(|i| (0..4).map(|j| mask.is_visible(i, j, 3, 4) as u8).collect()).collect() };
    assert_eq!(pattern(TOP_LEFT), [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]]);
    assert_eq!(pattern(BOTTOM_RIGHT), [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]);
    assert_eq!(pattern(AttnMask::None), [[1; 4]; 3]);
    assert_eq!(TOP_LEFT.causal_diagonal(3, 4), Some(0));
    assert_eq!(BOTTOM_RIGHT.causal_diagonal(3, 4), Some(1));
    assert_eq!(BOTTOM_RIGHT.causal_diagonal(5, 2), Some(-3));
    assert_eq!(AttnMask::None.causal_diagonal(3, 4), None);
    assert_eq!(AttnMask::default(), AttnMask::None);
}

#[test]
fn the_alignments_differ_exactly_when_tq_differs_from_tk() {
    let attend = |tq: usize, tk: usize, mask| {
        let q = tensor_with(&[2, tq, 4], ViewKind::Contiguous, 1);
        let k = tensor_with(&[2, tk, 4], ViewKind::Contiguous, 2);
        let v = tensor_with(&[2, tk, 3], ViewKind::Contiguous, 3);
        q.scaled_dot_product_attention(&k, &v, mask, None).unwrap().to_f64_vec().unwrap()
    };
    assert_eq!(attend(4, 4, TOP_LEFT), attend(4, 4, BOTTOM_RIGHT));
    assert_ne!(attend(2, 5, TOP_LEFT), attend(2, 5, BOTTOM_RIGHT));
    assert_ne!(attend(5, 2, TOP_LEFT), attend(5, 2, BOTTOM_RIGHT));
    // The last query of a bottom-right mask sees every key, as without a mask.
    let (last, full) = (attend(2, 5, BOTTOM_RIGHT), attend(2, 5, AttnMask::None));
    assert_eq!(&last[3..6], &full[3..6]);
}

#[test]
fn a_query_that_sees_no_key_gets_zeros_and_passes_no_gradient() {
    // Bottom-right, 4 queries over 2 keys: queries 0 and 1 see nothing.
    let q = tensor_with(&[1, 4, 3], ViewKind::Contiguous, 4).variable();
    let k = tensor_with(&[1, 2, 3], ViewKind::Contiguous, 5).variable();
    let v = tensor_with(&[1, 2, 2], ViewKind::Contiguous, 6).variable();
    let out = q.scaled_dot_product_attention(&k, &v, BOTTOM_RIGHT, None).unwrap();
    let values = out.to_f64_vec().unwrap();
    assert_eq!(&values[..4], &[0.0; 4]);
    assert!(values[4..].iter().all(|x| x.is_finite() && *x != 0.0), "{values:?}");
    let probs = q.attention_probs(&k, BOTTOM_RIGHT, None).unwrap().to_f64_vec().unwrap();
    assert_eq!(probs, [0.0, 0.0, 0.0, 0.0, probs[4], 0.0, probs[6], probs[7]]);
    assert_eq!(probs[4], 1.0);
    assert!((probs[6] + probs[7] - 1.0).abs() < 1e-15);
    let grads = out.sum_all().unwrap().backward().unwrap();
    let dq = grads.get(&q).unwrap().to_f64_vec().unwrap();
    assert_eq!(&dq[..6], &[0.0; 6]);
    for x in [&q, &k, &v] {
        assert!(grads.get(x).unwrap().to_f64_vec().unwrap().iter().all(|g| g.is_finite()));
    }
}

#[test]
fn causal_attention_ignores_the_future() {
    // Changing the last key/value must not change any output but the last query's.
    let mut r = tamer::rng(3);
    let q = Tensor::randn([1, 5, 4], DType::F32, &mut r).unwrap();
    let k = Tensor::randn([1, 5, 4], DType::F32, &mut r).unwrap();
    let v = Tensor::randn([1, 5, 4], DType::F32, &mut r).unwrap();
    let out = q.scaled_dot_product_attention(&k, &v, TOP_LEFT, None).unwrap().to_vec::<f32>().unwrap();
    let bump = Tensor::from_vec([vec![0.0f32; 16], vec![5.0; 4]].concat(), [1, 5, 4]).unwrap();
    let out2 = q
        .scaled_dot_product_attention(&k.add(&bump).unwrap(), &v.add(&bump).unwrap(), TOP_LEFT, None)
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
    let err = q.scaled_dot_product_attention(&k, &k, AttnMask::None, None).unwrap_err().to_string();
    assert!(
        err.contains("scaled_dot_product_attention") && err.contains("[2, 3, 4]") && err.contains("[2, 3, 5]"),
        "{err}"
    );
    let other_batch = Tensor::zeros([3, 3, 4], DType::F32).unwrap();
    let err = q.scaled_dot_product_attention(&q, &other_batch, TOP_LEFT, None).unwrap_err().to_string();
    assert!(err.contains("v [3, 3, 4]") && err.contains("equal leading dims"), "{err}");
    let err = q.attention_probs(&k, BOTTOM_RIGHT, None).unwrap_err().to_string();
    assert!(err.contains("attention_probs") && err.contains("k [2, 3, 5]"), "{err}");
    let vector = Tensor::zeros([4], DType::F32).unwrap();
    let err = vector
        .scaled_dot_product_attention(&vector, &vector, AttnMask::None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rank >= 2"), "{err}");
    // Operands of different ranks are an error, whichever one is short.
    for (k, v) in [(&vector, &q), (&q, &vector)] {
        let err = q.scaled_dot_product_attention(k, v, BOTTOM_RIGHT, None).unwrap_err().to_string();
        assert!(err.contains("[4]") && err.contains("one rank"), "{err}");
    }
    let err = q.attention_probs(&vector, TOP_LEFT, None).unwrap_err().to_string();
    assert!(err.contains("k [4]") && err.contains("one rank"), "{err}");
    let f64q = Tensor::zeros([2, 3, 4], DType::F64).unwrap();
    let err = f64q.scaled_dot_product_attention(&q, &q, AttnMask::None, None).unwrap_err().to_string();
    assert!(err.contains("scaled_dot_product_attention"), "{err}");
}

/// `[o, dq, dk, dv]` of the op under `imp`, for q `[2, 3, tq, d]` (a
/// permuted view, as a head split makes it), k `[2, 3, tk, d]` and v
/// `[2, 3, tk, dv]` (a sliced view) of `dtype`, with a random output weighting.
fn attention_case(imp: AttentionImpl, dtype: DType, (tq, tk, d, dv): (usize, usize, usize, usize), mask: AttnMask, seed: u64) -> Vec<Vec<f64>> {
    let q = tensor_with_dtype(&[2, 3, tq, d], ViewKind::Permuted, seed, dtype).variable();
    let k = tensor_with_dtype(&[2, 3, tk, d], ViewKind::Contiguous, seed ^ 1, dtype).variable();
    let v = tensor_with_dtype(&[2, 3, tk, dv], ViewKind::Sliced, seed ^ 2, dtype).variable();
    let w = tensor_with_dtype(&[2, 3, tq, dv], ViewKind::Contiguous, seed ^ 3, dtype);
    with_attention_impl(imp, || {
        let o = q.scaled_dot_product_attention(&k, &v, mask, None).unwrap();
        let grads = o.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let mut out = vec![o.to_f64_vec().unwrap()];
        out.extend([&q, &k, &v].map(|x| grads.get(x).unwrap().to_f64_vec().unwrap()));
        out
    })
}

#[test]
fn the_cpu_takes_the_fused_path_for_f32_and_f64() {
    let dims = AttnDims {
        bh: 6,
        tq: 5,
        tk: 7,
        d: 16,
        dv: 16,
        causal_diagonal: Some(2),
        scale: 0.25,
    };
    with_attention_impl(AttentionImpl::Flash, || {
        assert_eq!(select(DType::F32, &dims).unwrap(), Some(FusedKernel::Flash));
        assert_eq!(select(DType::F64, &dims).unwrap(), Some(FusedKernel::Flash));
        assert_eq!(select(DType::BF16, &dims).unwrap(), None);
        assert_eq!(select(DType::F32, &AttnDims { tk: 0, ..dims }).unwrap(), None);
    });
    with_attention_impl(AttentionImpl::Reference, || {
        assert_eq!(select(DType::F64, &dims).unwrap(), Some(FusedKernel::Reference))
    });
    with_attention_impl(AttentionImpl::Composite, || assert_eq!(select(DType::F32, &dims).unwrap(), None));
}

proptest! {
    #![proptest_config(proptest_config(12))]

    /// The flash and reference kernels against the composite graph through
    /// the public op: several tiles each way, Tq != Tk, odd head dims, every
    /// mask, f32 and f64, forward and the three gradients.
    #[test]
    fn cpu_fused_kernels_match_the_composite_graph(
        tq in 1usize..=flash::BR + 9, tk in 1usize..=flash::BC + 9, d in 1usize..=19, dv in 1usize..=19,
        mask in any_mask(), seed in any::<u64>(),
    ) {
        for (dtype, tol) in [(DType::F64, 1e-11), (DType::F32, 3e-5)] {
            let composite = attention_case(AttentionImpl::Composite, dtype, (tq, tk, d, dv), mask, seed);
            for imp in [AttentionImpl::Flash, AttentionImpl::Reference] {
                let fused = attention_case(imp, dtype, (tq, tk, d, dv), mask, seed);
                for (name, (a, b)) in ["o", "dq", "dk", "dv"].iter().zip(fused.iter().zip(&composite)) {
                    prop_assert!(a.iter().all(|x| x.is_finite()), "{imp:?} {dtype} {name}: {a:?}");
                    prop_assert!(close(a, b, tol), "{imp:?} {dtype} {name}");
                }
            }
        }
    }

    /// The finite-difference check on the CPU's flash path, with more queries
    /// and keys than one tile holds.
    #[test]
    fn flash_gradients_match_finite_differences_across_tiles(
        tq in flash::BR - 2..=flash::BR + 6, tk in flash::BC - 2..=flash::BC + 6, mask in any_mask(), seed in any::<u64>(),
    ) {
        let q = tensor_with(&[1, tq, 2], ViewKind::Contiguous, seed);
        let k = tensor_with(&[1, tk, 2], ViewKind::Permuted, seed ^ 1);
        let v = tensor_with(&[1, tk, 1], ViewKind::Contiguous, seed ^ 2);
        let f = |xs: &[Tensor]| xs[0].scaled_dot_product_attention(&xs[1], &xs[2], mask, None);
        let report = with_attention_impl(AttentionImpl::Flash, || check_gradients(f, &[q, k, v], &GradCheckConfig::default())).unwrap();
        prop_assert!(report.passed(), "{report}");
    }
}

/// The split, attention and merge `Tensor::qkv_attention` stands for, written
/// with views and the public op.
fn split_attend_merge(qkv: &Tensor, n_head: usize, mask: AttnMask) -> tamer::Result<Tensor> {
    let (b, t, c) = (qkv.dims()[0], qkv.dims()[1], qkv.dims()[2] / 3);
    let heads = qkv.reshape([b, t, 3, n_head, c / n_head])?.permute(&[2, 0, 3, 1, 4])?;
    let part = |i: usize| heads.narrow(0, i, 1)?.squeeze(0);
    let y = part(0)?.scaled_dot_product_attention(&part(1)?, &part(2)?, mask, None)?;
    y.permute(&[0, 2, 1, 3])?.reshape([b, t, c])
}

/// A `[b, t, 3c]` qkv of `dtype`: contiguous, or a `[t, b, 3c]` tensor
/// permuted (unit-stride channels, strided rows), or one whose channels are
/// strided (the op's fallback).
fn packed_qkv(b: usize, t: usize, c3: usize, layout: u8, dtype: DType, seed: u64) -> Tensor {
    match layout {
        0 => tensor_with_dtype(&[b, t, c3], ViewKind::Contiguous, seed, dtype),
        1 => tensor_with_dtype(&[t, b, c3], ViewKind::Contiguous, seed, dtype).permute(&[1, 0, 2]).unwrap(),
        _ => tensor_with_dtype(&[b, t, c3], ViewKind::Permuted, seed, dtype),
    }
}

proptest! {
    #![proptest_config(proptest_config(16))]

    /// The packed op against split + attention + merge: values and the
    /// gradient of qkv, f32 and f64, every mask, for qkv laid out three ways,
    /// on the fused path and with the composite graph forced.
    #[test]
    fn qkv_attention_matches_split_attention_and_merge(
        b in 1usize..=2, t in 1usize..=flash::BR + 5, n_head in 1usize..=3, d in 1usize..=9,
        layout in 0u8..3, mask in any_mask(), seed in any::<u64>(),
    ) {
        let c3 = 3 * n_head * d;
        for (dtype, tol) in [(DType::F64, 1e-11), (DType::F32, 3e-5)] {
            for imp in [AttentionImpl::Flash, AttentionImpl::Composite] {
                let qkv = packed_qkv(b, t, c3, layout, dtype, seed).variable();
                let w = tensor_with_dtype(&[b, t, c3 / 3], ViewKind::Contiguous, seed ^ 5, dtype);
                let run = |f: &dyn Fn(&Tensor) -> tamer::Result<Tensor>| with_attention_impl(imp, || {
                    let y = f(&qkv).unwrap();
                    let g = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
                    (y.to_f64_vec().unwrap(), g.get(&qkv).unwrap().to_f64_vec().unwrap())
                });
                let (y, g) = run(&|x| x.qkv_attention(n_head, mask, None));
                let (y_ref, g_ref) = run(&|x| split_attend_merge(x, n_head, mask));
                prop_assert!(close(&y, &y_ref, tol), "{imp:?} {dtype} output");
                prop_assert!(g.iter().all(|x| x.is_finite()), "{imp:?} {dtype}: {g:?}");
                prop_assert!(close(&g, &g_ref, tol), "{imp:?} {dtype} gradient");
            }
        }
    }

    #[test]
    fn qkv_attention_gradients_match_finite_differences(
        b in 1usize..=2, t in 1usize..=5, n_head in 1usize..=2, d in 1usize..=3, layout in 0u8..3, mask in any_mask(), seed in any::<u64>(),
    ) {
        let qkv = packed_qkv(b, t, 3 * n_head * d, layout, DType::F64, seed);
        let f = |xs: &[Tensor]| xs[0].qkv_attention(n_head, mask, None);
        let report = check_gradients(f, &[qkv], &GradCheckConfig::default()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }
}

#[test]
fn qkv_attention_shape_errors_name_the_op() {
    let causal = TOP_LEFT;
    for (dims, n_head) in [
        (vec![2, 3, 12], 0),
        (vec![2, 3, 12], 3),
        (vec![2, 3, 10], 1),
        (vec![2, 12], 2),
        (vec![2, 3, 0], 1),
    ] {
        let qkv = Tensor::zeros(dims.as_slice(), DType::F32).unwrap();
        let err = qkv.qkv_attention(n_head, causal, None).unwrap_err().to_string();
        assert!(
            err.contains("qkv_attention") && err.contains("3·C") && err.contains(&format!("n_head = {n_head}")),
            "{err}"
        );
    }
    let ints = Tensor::zeros([1, 2, 6], DType::I64).unwrap();
    let err = ints.qkv_attention(1, causal, None).unwrap_err().to_string();
    assert!(err.contains("qkv_attention") && err.contains("float"), "{err}");
}

proptest! {
    #![proptest_config(proptest_config(12))]

    /// q, k, v cut out of one `[B, T, 3, H, D]` tensor by permute and narrow
    /// (the views a head split makes, whose rows the CPU kernels read in
    /// place): the fused op against the composite graph, values and the
    /// gradient of the packed tensor.
    #[test]
    fn fused_attention_on_head_split_views_matches_the_composite_graph(
        b in 1usize..=2, t in 1usize..=flash::BR + 5, h in 1usize..=3, d in 1usize..=9, mask in any_mask(), seed in any::<u64>(),
    ) {
        for (dtype, tol) in [(DType::F64, 1e-11), (DType::F32, 3e-5)] {
            let packed = tensor_with_dtype(&[b, t, 3, h, d], ViewKind::Contiguous, seed, dtype).variable();
            let w = tensor_with_dtype(&[b, h, t, d], ViewKind::Contiguous, seed ^ 3, dtype);
            let run = |imp| with_attention_impl(imp, || {
                let heads = packed.permute(&[2, 0, 3, 1, 4]).unwrap();
                let part = |i: usize| heads.narrow(0, i, 1).unwrap().squeeze(0).unwrap();
                let y = part(0).scaled_dot_product_attention(&part(1), &part(2), mask, None).unwrap();
                let g = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
                (y.to_f64_vec().unwrap(), g.get(&packed).unwrap().to_f64_vec().unwrap())
            });
            let ((y, g), (y_ref, g_ref)) = (run(AttentionImpl::Flash), run(AttentionImpl::Composite));
            prop_assert!(close(&y, &y_ref, tol), "{dtype} output");
            prop_assert!(close(&g, &g_ref, tol), "{dtype} gradient");
        }
    }
}
