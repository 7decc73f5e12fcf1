//! Gradient, forward-value and error tests for `Tensor::matmul`.

use proptest::prelude::*;
use tamer::testing::strategies::{broadcast_pair, tensor_with, view_kind, ViewKind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{DType, Tensor};

fn dims(batch: &[usize], rows: usize, cols: usize) -> Vec<usize> {
    let mut d = batch.to_vec();
    d.extend([rows, cols]);
    d
}

/// Plain reference for `[batch.., m, k] @ [batch.., k, n]` with numpy-broadcast batch dims.
fn reference(a: &Tensor, b: &Tensor) -> (Vec<usize>, Vec<f64>) {
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k, n) = (a.dims()[ra - 2], a.dims()[ra - 1], b.dims()[rb - 1]);
    let batch = tamer::Shape::new(&a.dims()[..ra - 2])
        .broadcast_with("ref", &tamer::Shape::new(&b.dims()[..rb - 2]))
        .unwrap();
    let (av, bv) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    let (ba, bb) = (a.dims()[..ra - 2].to_vec(), b.dims()[..rb - 2].to_vec());
    // Row-major index of batch entry `idx` in an operand whose batch dims are `own`.
    let entry = |own: &[usize], idx: &[usize]| -> usize {
        let lead = idx.len() - own.len();
        own.iter().enumerate().fold(0, |acc, (i, &d)| acc * d + if d == 1 { 0 } else { idx[lead + i] })
    };
    let mut out = Vec::new();
    let mut idx = vec![0; batch.rank()];
    for _ in 0..batch.numel() {
        let (ea, eb) = (entry(&ba, &idx), entry(&bb, &idx));
        for i in 0..m {
            for j in 0..n {
                out.push((0..k).map(|q| av[(ea * m + i) * k + q] * bv[(eb * k + q) * n + j]).sum());
            }
        }
        for ax in (0..idx.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < batch.dims()[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    (dims(batch.dims(), m, n), out)
}

fn assert_close(got: &Tensor, want: (Vec<usize>, Vec<f64>)) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.dims(), &want.0[..]);
    for (x, y) in got.to_f64_vec().unwrap().iter().zip(&want.1) {
        prop_assert!((x - y).abs() <= 1e-10 * (1.0 + y.abs()), "{} vs {}", x, y);
    }
    Ok(())
}

fn grad_ok(f: impl Fn(&[Tensor]) -> tamer::Result<Tensor>, inputs: &[Tensor]) -> Result<(), TestCaseError> {
    let report = check_gradients(f, inputs, &GradCheckConfig::default()).unwrap();
    prop_assert!(report.passed(), "{}", report);
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn matrices((m, k, n) in (1..6usize, 1..6usize, 1..6usize), ka in view_kind(), kb in view_kind(), seed in any::<u64>()) {
        let a = tensor_with(&[m, k], ka, seed);
        let b = tensor_with(&[k, n], kb, seed ^ 1);
        assert_close(&a.matmul(&b).unwrap(), reference(&a, &b))?;
        grad_ok(|xs| xs[0].matmul(&xs[1]), &[a, b])?;
    }

    /// `a @ bᵀ` and `aᵀ @ b` with the transpose taken inside, as a linear layer does.
    #[test]
    fn transposed_operands((m, k, n) in (1..6usize, 1..6usize, 1..6usize), ka in view_kind(), kb in view_kind(), seed in any::<u64>()) {
        let a = tensor_with(&[m, k], ka, seed);
        let w = tensor_with(&[n, k], kb, seed ^ 1);
        assert_close(&a.matmul(&w.t().unwrap()).unwrap(), reference(&a, &w.t().unwrap().contiguous().unwrap()))?;
        grad_ok(|xs| xs[0].matmul(&xs[1].t()?), &[a.clone(), w])?;
        let c = tensor_with(&[m, n], kb, seed ^ 2);
        grad_ok(|xs| xs[0].t()?.matmul(&xs[1]), &[a, c])?;
    }

    /// Batch dims that broadcast: [2, 1] vs [3], [b] vs none, [1] vs [b], ...
    #[test]
    fn broadcast_batches(
        (ba, bb) in broadcast_pair(2, 3),
        drop in 0..3usize,
        (m, k, n) in (1..4usize, 1..4usize, 1..4usize),
        ka in view_kind(), kb in view_kind(), seed in any::<u64>(),
    ) {
        // Sometimes one side has no batch dims at all ([b, m, k] @ [k, n] and the converse).
        let ba = if drop == 1 { vec![] } else { ba };
        let bb = if drop == 2 { vec![] } else { bb };
        let a = tensor_with(&dims(&ba, m, k), ka, seed);
        let b = tensor_with(&dims(&bb, k, n), kb, seed ^ 1);
        assert_close(&a.matmul(&b).unwrap(), reference(&a, &b))?;
        grad_ok(|xs| xs[0].matmul(&xs[1]), &[a, b])?;
    }

    /// A weight shared by a batch, used transposed: x[B, T, C] @ W[D, C]ᵀ.
    #[test]
    fn shared_weight_transposed((bt, t, c, d) in (1..4usize, 1..4usize, 1..5usize, 1..5usize), kx in view_kind(), kw in view_kind(), seed in any::<u64>()) {
        let x = tensor_with(&[bt, t, c], kx, seed);
        let w = tensor_with(&[d, c], kw, seed ^ 1);
        grad_ok(|xs| xs[0].matmul(&xs[1].t()?), &[x, w])?;
    }

    /// Batched attention-style products with a sliced batch: q @ kᵀ over [B, H, T, D].
    #[test]
    fn attention_scores((b, h, t, d) in (1..3usize, 1..3usize, 1..4usize, 1..4usize), seed in any::<u64>()) {
        let q = tensor_with(&[b, h, t, d], ViewKind::Sliced, seed);
        let k = tensor_with(&[b, h, t, d], ViewKind::Permuted, seed ^ 1);
        grad_ok(|xs| xs[0].matmul(&xs[1].transpose(-2, -1)?), &[q, k])?;
    }

    /// 1-D operands as torch.matmul promotes them.
    #[test]
    fn vectors((batch, m, k) in (0..3usize, 1..4usize, 1..5usize), kind in view_kind(), seed in any::<u64>()) {
        let v = tensor_with(&[k], ViewKind::Contiguous, seed);
        let w = tensor_with(&[k], ViewKind::Sliced, seed ^ 1);
        let bdims: Vec<usize> = (0..batch).map(|i| i + 2).collect();
        let mat = tensor_with(&dims(&bdims, m, k), kind, seed ^ 2);
        grad_ok(|xs| xs[0].matmul(&xs[1]), &[v.clone(), w.clone()])?;
        grad_ok(|xs| xs[0].matmul(&xs[1]), &[mat.clone(), w.clone()])?;
        grad_ok(|xs| xs[0].matmul(&xs[1].t()?), &[v.clone(), mat.clone()])?;
        let mv = mat.matmul(&w).unwrap();
        let want = reference(&mat, &w.reshape([k, 1]).unwrap());
        prop_assert_eq!(mv.dims(), &want.0[..want.0.len() - 1]);
        assert_close(&mv.reshape(want.0.clone()).unwrap(), want)?;
    }
}

#[test]
fn f32_and_f64_agree_and_k_zero_gives_zeros() {
    let a = Tensor::randn([3, 17, 33], DType::F64, &mut tamer::rng(1)).unwrap();
    let b = Tensor::randn([33, 9], DType::F64, &mut tamer::rng(2)).unwrap();
    let exact = a.matmul(&b).unwrap().to_vec::<f64>().unwrap();
    let single = a.to_dtype(DType::F32).unwrap().matmul(&b.to_dtype(DType::F32).unwrap()).unwrap();
    for (x, y) in single.to_vec::<f32>().unwrap().iter().zip(&exact) {
        assert!((*x as f64 - y).abs() < 1e-4 * (1.0 + y.abs()));
    }
    let e = Tensor::zeros([2, 4, 0], DType::F32)
        .unwrap()
        .matmul(&Tensor::zeros([0, 3], DType::F32).unwrap())
        .unwrap();
    assert_eq!(e.dims(), &[2, 4, 3]);
    assert!(e.to_vec::<f32>().unwrap().iter().all(|&x| x == 0.0));
}

#[test]
fn large_threaded_products_are_right() {
    // Big enough to be split across threads; checked against the f64 reference.
    let a = Tensor::randn([300, 200], DType::F64, &mut tamer::rng(3)).unwrap();
    let b = Tensor::randn([130, 200], DType::F64, &mut tamer::rng(4)).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let got = pool.install(|| a.matmul(&b.t().unwrap())).unwrap();
    let bt = b.t().unwrap().contiguous().unwrap();
    let want = reference(&a, &bt);
    assert_eq!(got.dims(), &want.0[..]);
    for (x, y) in got.to_vec::<f64>().unwrap().iter().zip(&want.1) {
        assert!((x - y).abs() < 1e-9 * (1.0 + y.abs()));
    }
}

#[test]
fn errors_name_both_shapes_and_the_inner_dims() {
    let a = Tensor::ones([2, 3], DType::F32).unwrap();
    let err = a.matmul(&Tensor::ones([4, 5], DType::F32).unwrap()).unwrap_err();
    assert_eq!(err.kind, tamer::ErrorKind::Shape);
    assert_eq!(
        err.to_string(),
        "matmul: shapes [2, 3] and [4, 5] are incompatible: expected lhs.k (3) == rhs.k (4)"
    );

    let err = Tensor::ones([3], DType::F32)
        .unwrap()
        .matmul(&Tensor::ones([4], DType::F32).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("[3] and [4]") && err.contains("lhs.k (3) == rhs.k (4)"), "{err}");

    let err = Tensor::ones([2, 3, 4], DType::F32)
        .unwrap()
        .matmul(&Tensor::ones([3, 4, 5], DType::F32).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("[2, 3, 4] and [3, 4, 5]") && err.contains("batch dims [2] and [3]"), "{err}");

    let err = Tensor::scalar(2.0f32).matmul(&a).unwrap_err().to_string();
    assert!(err.contains("[] and [2, 3]") && err.contains("at least one dimension"), "{err}");

    let err = a.matmul(&Tensor::ones([3, 2], DType::F64).unwrap()).unwrap_err();
    assert_eq!(err.kind, tamer::ErrorKind::DType);
    assert!(err.to_string().contains("f32 and f64"), "{err}");

    let idx = Tensor::from_vec(vec![1i64, 2, 3, 4], [2, 2]).unwrap();
    let err = idx.matmul(&idx).unwrap_err().to_string();
    assert!(err.contains("matmul") && err.contains("i64"), "{err}");
}

// ---------------------------------------------------------------------------
// The fused linear layer (`nn::functional::linear`, `nn::Linear`): one op,
// `x·Wᵀ + b`, with one backward node.
// ---------------------------------------------------------------------------

/// `x·Wᵀ (+ b)` as the composition the fused op replaces.
fn linear_composed(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> tamer::Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => y.add(b),
        None => Ok(y),
    }
}

proptest! {
    #![proptest_config(proptest_config(32))]

    /// The f64 gradients of x, W and b over 0 to 3 leading axes (a vector
    /// input included), strided x, W and b, with and without a bias.
    #[test]
    fn linear_gradients(batch in prop::collection::vec(1usize..=3, 0..=3), fin in 1usize..=4, fout in 1usize..=3,
                        bias in any::<bool>(), kx in view_kind(), kw in view_kind(), seed in any::<u64>()) {
        let mut xd = batch.clone();
        xd.push(fin);
        let mut inputs = vec![tensor_with(&xd, kx, seed), tensor_with(&[fout, fin], kw, seed ^ 1)];
        if bias {
            inputs.push(tensor_with(&[fout], kw, seed ^ 2));
        }
        grad_ok(|xs| tamer::nn::functional::linear(&xs[0], &xs[1], xs.get(2)), &inputs)?;
    }

    /// The values are those of `matmul` then `add`, in f64 (to rounding) and
    /// f32, for strided inputs and biases.
    #[test]
    fn linear_is_matmul_plus_add(batch in prop::collection::vec(1usize..=4, 1..=3), fin in 1usize..=40, fout in 1usize..=40,
                                 bias in any::<bool>(), kx in view_kind(), kw in view_kind(), seed in any::<u64>()) {
        let mut xd = batch.clone();
        xd.push(fin);
        for dtype in [DType::F64, DType::F32] {
            let x = tamer::testing::strategies::tensor_with_dtype(&xd, kx, seed, dtype);
            let w = tamer::testing::strategies::tensor_with_dtype(&[fout, fin], kw, seed ^ 1, dtype);
            let b = tamer::testing::strategies::tensor_with_dtype(&[fout], kx, seed ^ 2, dtype);
            let b = bias.then_some(&b);
            let fused = tamer::nn::functional::linear(&x, &w, b).unwrap();
            let composed = linear_composed(&x, &w, b).unwrap();
            prop_assert_eq!(fused.dims(), composed.dims());
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            for (f, c) in fused.to_f64_vec().unwrap().iter().zip(composed.to_f64_vec().unwrap()) {
                prop_assert!((f - c).abs() <= tol * (1.0 + c.abs() + fin as f64), "{:?}: fused {} vs composed {}", dtype, f, c);
            }
        }
    }
}

/// One node for the layer: its backward gives x, W and b the gradients the
/// composition gives, in f32 too, with nothing required of inputs that are
/// not variables.
#[test]
fn linear_backward_matches_the_composition_and_skips_constants() {
    let x = Tensor::randn([3, 5, 7], DType::F32, &mut tamer::rng(4)).unwrap();
    let w = Tensor::randn([6, 7], DType::F32, &mut tamer::rng(5)).unwrap();
    let b = Tensor::randn([6], DType::F32, &mut tamer::rng(6)).unwrap();
    let (xv, wv, bv) = (x.variable(), w.variable(), b.variable());
    let weights = Tensor::randn([3, 5, 6], DType::F32, &mut tamer::rng(7)).unwrap();
    let loss = |y: Tensor| y.mul(&weights).unwrap().sum_all().unwrap();
    let fused = loss(tamer::nn::functional::linear(&xv, &wv, Some(&bv)).unwrap()).backward().unwrap();
    let composed = loss(linear_composed(&xv, &wv, Some(&bv)).unwrap()).backward().unwrap();
    for t in [&xv, &wv, &bv] {
        let (f, c) = (
            fused.get(t).unwrap().to_vec::<f32>().unwrap(),
            composed.get(t).unwrap().to_vec::<f32>().unwrap(),
        );
        assert_eq!(f.len(), c.len());
        for (a, b) in f.iter().zip(&c) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
    // Only the weight is a variable: only it gets a gradient.
    let only_w = loss(tamer::nn::functional::linear(&x, &wv, Some(&b)).unwrap()).backward().unwrap();
    assert_eq!(only_w.len(), 1);
    assert_eq!(only_w.get(&wv).unwrap().dims(), &[6, 7]);
    // A constant layer records nothing.
    assert!(!tamer::nn::functional::linear(&x, &w, Some(&b)).unwrap().requires_grad());
}

#[test]
fn linear_errors_name_the_op_and_the_shapes() {
    use tamer::nn::functional::linear;
    let x = Tensor::ones([2, 4], DType::F32).unwrap();
    let w = Tensor::ones([3, 4], DType::F32).unwrap();
    let msg = |r: tamer::Result<Tensor>| r.unwrap_err().to_string();
    let e = msg(linear(&x, &Tensor::ones([3, 4, 1], DType::F32).unwrap(), None));
    assert!(
        e.starts_with("linear") && e.contains("weight must be [out_features, in_features], got shape [3, 4, 1]"),
        "{e}"
    );
    let e = msg(linear(&Tensor::ones([2, 5], DType::F32).unwrap(), &w, None));
    assert!(e.contains("input shape [2, 5] must end in in_features 4 (weight shape [3, 4])"), "{e}");
    let e = msg(linear(&Tensor::scalar(1.0f32), &w, None));
    assert!(e.contains("input shape []"), "{e}");
    let e = msg(linear(&x, &w, Some(&Tensor::ones([4], DType::F32).unwrap())));
    assert!(e.contains("bias has shape [4], expected [3]"), "{e}");
    let e = msg(linear(&x, &w, Some(&Tensor::ones([3], DType::F64).unwrap())));
    assert!(e.starts_with("linear") && e.contains("dtypes f32 and f64"), "{e}");
    let e = msg(linear(&x.to_dtype(DType::F64).unwrap(), &w, None));
    assert!(
        e.starts_with("linear") && e.contains("input dtype f64") && e.contains("parameter dtype f32"),
        "{e}"
    );
    let e = msg(linear(&x.to_dtype(DType::I64).unwrap(), &w.to_dtype(DType::I64).unwrap(), None));
    assert!(e.contains("linear") && e.contains("i64"), "{e}");
    // Empty rows and an empty reduction: [0, 4] gives [0, 3]; in_features 0 gives the bias.
    assert_eq!(linear(&Tensor::ones([0, 4], DType::F32).unwrap(), &w, None).unwrap().dims(), &[0, 3]);
    let b = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]).unwrap();
    let y = linear(&Tensor::ones([2, 0], DType::F32).unwrap(), &Tensor::ones([3, 0], DType::F32).unwrap(), Some(&b)).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
}
