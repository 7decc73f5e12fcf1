//! nn layers: gradient checks with respect to inputs and parameters, forward
//! values against plain references, train/eval behaviour, freezing, parameter
//! names, initialiser statistics, position encodings and error messages.

use proptest::prelude::*;
use tamer::nn::init::{self, FanMode, Nonlinearity};
use tamer::nn::{
    name_matches, sincos_1d, sincos_2d, Activation, BatchNorm2d, Conv2d, DropPath, Dropout, Embedding, LayerNorm, LearnedPosEmbed, Linear, Mlp, Module, Param,
};
use tamer::testing::strategies::{tensor_with, view_kind, ViewKind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{rng, DType, Tensor};

fn cfg() -> GradCheckConfig {
    GradCheckConfig::default()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

fn contiguous(dims: &[usize], seed: u64) -> Tensor {
    tensor_with(dims, ViewKind::Contiguous, seed)
}

fn wrap(t: &Tensor) -> Param {
    Param::wrap(t.clone())
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt())
}

fn f64_param(dims: &[usize]) -> Param {
    Param::new(Tensor::zeros(dims.to_vec(), DType::F64).unwrap())
}

// ---------------------------------------------------------------------------
// Gradient checks: the layer is built inside the closure from the checker's
// inputs (Param::wrap keeps them in the graph), so parameters are checked too.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config(16))]

    #[test]
    fn linear_grad(batch in prop::collection::vec(1usize..=3, 0..=2), fin in 1usize..=4, fout in 1usize..=3,
                   bias in any::<bool>(), kind in view_kind(), seed in any::<u64>()) {
        let mut xd = batch.clone();
        xd.push(fin);
        let mut inputs = vec![tensor_with(&xd, kind, seed), tensor_with(&[fout, fin], kind, seed ^ 1)];
        if bias {
            inputs.push(contiguous(&[fout], seed ^ 2));
        }
        let f = |xs: &[Tensor]| Linear { weight: wrap(&xs[1]), bias: xs.get(2).map(wrap) }.forward(&xs[0]);
        let report = check_gradients(f, &inputs, &cfg()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }

    #[test]
    fn layer_norm_grad(batch in prop::collection::vec(1usize..=3, 1..=2), c in 2usize..=5, bias in any::<bool>(),
                       kind in view_kind(), seed in any::<u64>()) {
        let mut xd = batch.clone();
        xd.push(c);
        let mut inputs = vec![tensor_with(&xd, kind, seed), contiguous(&[c], seed ^ 1)];
        if bias {
            inputs.push(contiguous(&[c], seed ^ 2));
        }
        let f = |xs: &[Tensor]| LayerNorm { weight: wrap(&xs[1]), bias: xs.get(2).map(wrap), eps: 1e-5 }.forward(&xs[0]);
        let report = check_gradients(f, &inputs, &cfg()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }

    #[test]
    fn embedding_grad(num in 1usize..=5, dim in 1usize..=4, ids_shape in prop::collection::vec(1usize..=3, 1..=2),
                      kind in view_kind(), seed in any::<u64>()) {
        let n: usize = ids_shape.iter().product();
        // Repeated ids included: their gradients must sum.
        let ids: Vec<i64> = (0..n).map(|k| ((k as u64 * 7 + seed % 11) % num as u64) as i64).collect();
        let ids = Tensor::from_vec(ids, ids_shape.clone()).unwrap();
        let f = |xs: &[Tensor]| Embedding { weight: wrap(&xs[0]) }.forward(&ids);
        let report = check_gradients(f, &[tensor_with(&[num, dim], kind, seed)], &cfg()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }

    #[test]
    fn conv2d_grad(n in 1usize..=2, c in 1usize..=2, o in 1usize..=2, h in 2usize..=4, w in 2usize..=4,
                   k in 1usize..=2, s in 1usize..=2, p in 0usize..=1, bias in any::<bool>(),
                   kind in view_kind(), seed in any::<u64>()) {
        let mut inputs = vec![tensor_with(&[n, c, h, w], kind, seed), tensor_with(&[o, c, k, k], kind, seed ^ 1)];
        if bias {
            inputs.push(contiguous(&[o], seed ^ 2));
        }
        let f = |xs: &[Tensor]| Conv2d { weight: wrap(&xs[1]), bias: xs.get(2).map(wrap), stride: (s, s), padding: (p, p) }.forward(&xs[0]);
        let report = check_gradients(f, &inputs, &cfg()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }

    #[test]
    fn batch_norm_train_grad(n in 1usize..=3, c in 1usize..=3, h in 1usize..=3, w in 2usize..=3,
                             kind in view_kind(), seed in any::<u64>()) {
        prop_assume!(n * h * w >= 3);
        let inputs = vec![tensor_with(&[n, c, h, w], kind, seed), contiguous(&[c], seed ^ 1), contiguous(&[c], seed ^ 2)];
        let f = |xs: &[Tensor]| {
            let mut bn = BatchNorm2d::new(c)?;
            bn.to_dtype(DType::F64)?;
            bn.weight = wrap(&xs[1]);
            bn.bias = wrap(&xs[2]);
            bn.forward(&xs[0])
        };
        let report = check_gradients(f, &inputs, &cfg()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }

    #[test]
    fn batch_norm_eval_grad(n in 1usize..=2, c in 1usize..=3, h in 1usize..=3, w in 1usize..=3,
                            kind in view_kind(), seed in any::<u64>()) {
        let inputs = vec![tensor_with(&[n, c, h, w], kind, seed), contiguous(&[c], seed ^ 1), contiguous(&[c], seed ^ 2)];
        let rm = contiguous(&[c], seed ^ 3);
        let rv = contiguous(&[c], seed ^ 4).abs().unwrap().add_scalar(0.5).unwrap();
        let f = |xs: &[Tensor]| {
            let mut bn = BatchNorm2d::new(c)?;
            bn.to_dtype(DType::F64)?;
            bn.running_mean.set(&rm)?;
            bn.running_var.set(&rv)?;
            bn.set_training(false);
            bn.weight = wrap(&xs[1]);
            bn.bias = wrap(&xs[2]);
            bn.forward(&xs[0])
        };
        let report = check_gradients(f, &inputs, &cfg()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }

    #[test]
    fn dropout_and_drop_path_grad(dims in prop::collection::vec(1usize..=4, 1..=3), p in prop_oneof![Just(0.0), Just(0.3), Just(0.5)],
                                  kind in view_kind(), seed in any::<u64>()) {
        let x = tensor_with(&dims, kind, seed);
        // A fresh layer per call: the same seed gives the same mask every time.
        let report = check_gradients(|xs: &[Tensor]| Dropout::new(p, seed)?.forward(&xs[0]), std::slice::from_ref(&x), &cfg()).unwrap();
        prop_assert!(report.passed(), "dropout: {report}");
        let report = check_gradients(|xs: &[Tensor]| DropPath::new(p, seed)?.forward(&xs[0]), &[x], &cfg()).unwrap();
        prop_assert!(report.passed(), "drop path: {report}");
    }

    #[test]
    fn mlp_grad(batch in prop::collection::vec(1usize..=2, 1..=2), fin in 1usize..=3, hidden in 1usize..=4, fout in 1usize..=3,
                tanh in any::<bool>(), kind in view_kind(), seed in any::<u64>()) {
        let mut xd = batch.clone();
        xd.push(fin);
        let inputs = vec![
            tensor_with(&xd, kind, seed),
            contiguous(&[hidden, fin], seed ^ 1),
            contiguous(&[hidden], seed ^ 2),
            contiguous(&[fout, hidden], seed ^ 3),
            contiguous(&[fout], seed ^ 4),
        ];
        let act = if tanh { Activation::GeluTanh } else { Activation::Gelu };
        let f = |xs: &[Tensor]| {
            let fc1 = Linear { weight: wrap(&xs[1]), bias: Some(wrap(&xs[2])) };
            let fc2 = Linear { weight: wrap(&xs[3]), bias: Some(wrap(&xs[4])) };
            Mlp::from_layers(fc1, fc2, act, Dropout::new(0.25, seed)?).forward(&xs[0])
        };
        let report = check_gradients(f, &inputs, &cfg()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }

    #[test]
    fn learned_pos_embed_grad(b in 1usize..=2, t in 1usize..=3, extra in 0usize..=2, dim in 1usize..=3,
                              kind in view_kind(), seed in any::<u64>()) {
        let inputs = vec![tensor_with(&[b, t, dim], kind, seed), contiguous(&[1, t + extra, dim], seed ^ 1)];
        let f = |xs: &[Tensor]| LearnedPosEmbed { weight: wrap(&xs[1]) }.forward(&xs[0]);
        let report = check_gradients(f, &inputs, &cfg()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }
}

// ---------------------------------------------------------------------------
// Forward values against plain references.
// ---------------------------------------------------------------------------

#[test]
fn linear_matches_explicit_loops() {
    let (b, fin, fout) = (5, 4, 3);
    let x = tensor_with(&[b, fin], ViewKind::Permuted, 1);
    let w = contiguous(&[fout, fin], 2);
    let bias = contiguous(&[fout], 3);
    let y = Linear::from_tensors(w.clone(), Some(bias.clone())).unwrap().forward(&x).unwrap();
    let (xv, wv, bv) = (values(&x.contiguous().unwrap()), values(&w), values(&bias));
    let mut expect = vec![0.0; b * fout];
    for i in 0..b {
        for o in 0..fout {
            expect[i * fout + o] = bv[o] + (0..fin).map(|k| xv[i * fin + k] * wv[o * fin + k]).sum::<f64>();
        }
    }
    assert_close(&values(&y), &expect, 1e-12, "linear");
    let no_bias = Linear::from_tensors(w, None).unwrap();
    assert_eq!(no_bias.named_params().len(), 1);
    assert_eq!((no_bias.in_features(), no_bias.out_features()), (fin, fout));
}

#[test]
fn conv2d_matches_explicit_loops() {
    let (n, c, h, w, o, k, s, p) = (2, 2, 5, 4, 3, 3, 2, 1);
    let x = contiguous(&[n, c, h, w], 4);
    let wt = contiguous(&[o, c, k, k], 5);
    let bias = contiguous(&[o], 6);
    let conv = Conv2d::from_tensors(wt.clone(), Some(bias.clone()), (s, s), (p, p)).unwrap();
    let y = conv.forward(&x).unwrap();
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    assert_eq!(y.dims(), &[n, o, oh, ow]);
    let (xv, wv, bv) = (values(&x), values(&wt), values(&bias));
    let mut expect = Vec::new();
    for ni in 0..n {
        for oi in 0..o {
            for r in 0..oh {
                for q in 0..ow {
                    let mut acc = bv[oi];
                    for ci in 0..c {
                        for a in 0..k {
                            for bb in 0..k {
                                let (ir, iq) = ((r * s + a) as isize - p as isize, (q * s + bb) as isize - p as isize);
                                if ir >= 0 && iq >= 0 && (ir as usize) < h && (iq as usize) < w {
                                    acc += xv[((ni * c + ci) * h + ir as usize) * w + iq as usize] * wv[((oi * c + ci) * k + a) * k + bb];
                                }
                            }
                        }
                    }
                    expect.push(acc);
                }
            }
        }
    }
    assert_close(&values(&y), &expect, 1e-12, "conv2d");
    assert_eq!(conv.kernel_size(), (3, 3));
}

#[test]
fn layer_norm_and_embedding_values() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 6.0], [2, 4]).unwrap();
    let w = Tensor::from_vec(vec![1.0f64, 2.0, 0.5, -1.0], [4]).unwrap();
    let b = Tensor::from_vec(vec![0.1f64, 0.2, 0.3, 0.4], [4]).unwrap();
    let y = LayerNorm::from_tensors(w.clone(), Some(b.clone()), 1e-5).unwrap().forward(&x).unwrap();
    let (xv, wv, bv) = (values(&x), values(&w), values(&b));
    let mut expect = Vec::new();
    for row in xv.chunks(4) {
        let m = row.iter().sum::<f64>() / 4.0;
        let var = row.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 4.0;
        for (j, v) in row.iter().enumerate() {
            expect.push((v - m) / (var + 1e-5).sqrt() * wv[j] + bv[j]);
        }
    }
    assert_close(&values(&y), &expect, 1e-12, "layer_norm");
    let ln = LayerNorm::new(4, 1e-6, false).unwrap();
    assert_eq!(ln.named_params().len(), 1);
    assert_eq!(values(&ln.weight.tensor()), vec![1.0; 4]);

    let table = contiguous(&[5, 3], 7);
    let emb = Embedding::from_tensor(table.clone()).unwrap();
    let ids = Tensor::from_vec(vec![4i64, 0, 4], [3]).unwrap();
    let e = values(&emb.forward(&ids).unwrap());
    let t = values(&table);
    assert_eq!(e, [&t[12..15], &t[0..3], &t[12..15]].concat());
    let big = Embedding::new(200, 50, &mut rng(0)).unwrap();
    let (m, s) = mean_std(&values(&big.weight.tensor()));
    assert!(m.abs() < 0.02 && (s - 1.0).abs() < 0.02, "N(0,1) init: mean {m}, std {s}");
}

fn bn_reference(x: &[f64], dims: [usize; 4], mean: &[f64], var: &[f64], w: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    let [n, c, h, wd] = dims;
    let mut out = vec![0.0; x.len()];
    for ni in 0..n {
        for ci in 0..c {
            for k in 0..h * wd {
                let i = (ni * c + ci) * h * wd + k;
                out[i] = (x[i] - mean[ci]) / (var[ci] + eps).sqrt() * w[ci] + b[ci];
            }
        }
    }
    out
}

fn channel_stats(x: &[f64], dims: [usize; 4]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [n, c, h, w] = dims;
    let cnt = (n * h * w) as f64;
    let (mut mean, mut biased, mut unbiased) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
    for ci in 0..c {
        let vals: Vec<f64> = (0..n).flat_map(|ni| (0..h * w).map(move |k| (ni * c + ci) * h * w + k)).map(|i| x[i]).collect();
        mean[ci] = vals.iter().sum::<f64>() / cnt;
        let ss = vals.iter().map(|v| (v - mean[ci]).powi(2)).sum::<f64>();
        biased[ci] = ss / cnt;
        unbiased[ci] = ss / (cnt - 1.0);
    }
    (mean, biased, unbiased)
}

#[test]
fn batch_norm_train_eval_and_running_stats_follow_torch() {
    let dims = [3, 2, 2, 3];
    let mut bn = BatchNorm2d::new(2).unwrap();
    bn.to_dtype(DType::F64).unwrap();
    let w = Tensor::from_vec(vec![1.5f64, -0.5], [2]).unwrap();
    let b = Tensor::from_vec(vec![0.25f64, 1.0], [2]).unwrap();
    bn.weight.set(&w).unwrap();
    bn.bias.set(&b).unwrap();
    let (wv, bv) = (values(&w), values(&b));
    let (mut rm, mut rv) = (vec![0.0; 2], vec![1.0; 2]);
    for step in 0..2u64 {
        let x = tensor_with(&dims, ViewKind::Sliced, 10 + step).affine(2.0, step as f64).unwrap();
        let xv = values(&x.contiguous().unwrap());
        let (mean, biased, unbiased) = channel_stats(&xv, dims);
        let y = bn.forward(&x).unwrap();
        assert_close(&values(&y), &bn_reference(&xv, dims, &mean, &biased, &wv, &bv, 1e-5), 1e-10, "train output");
        for ci in 0..2 {
            rm[ci] = 0.9 * rm[ci] + 0.1 * mean[ci];
            rv[ci] = 0.9 * rv[ci] + 0.1 * unbiased[ci];
        }
        assert_close(&values(&bn.running_mean.tensor()), &rm, 1e-12, "running_mean");
        assert_close(&values(&bn.running_var.tensor()), &rv, 1e-12, "running_var");
    }
    assert_eq!(bn.num_batches_tracked.tensor().to_vec::<i64>().unwrap(), vec![2]);

    bn.set_training(false);
    let before = values(&bn.running_mean.tensor());
    let x = contiguous(&dims, 99);
    let xv = values(&x);
    let y = bn.forward(&x).unwrap();
    assert_close(&values(&y), &bn_reference(&xv, dims, &rm, &rv, &wv, &bv, 1e-5), 1e-10, "eval output");
    // Eval leaves the statistics alone.
    assert_eq!(values(&bn.running_mean.tensor()), before, "running_mean after eval");
    assert_eq!(bn.num_batches_tracked.tensor().to_vec::<i64>().unwrap(), vec![2]);
    // Buffers are not parameters and get no gradient.
    assert_eq!(bn.named_params().len(), 2);
    assert!(bn.named_buffers().iter().all(|(_, p)| !p.is_trainable()));
}

#[test]
fn dropout_and_drop_path_modes() {
    let x = Tensor::ones([64, 3, 2], DType::F64).unwrap();
    let mut d = Dropout::new(0.5, 1).unwrap();
    let mut dp = DropPath::new(0.25, 2).unwrap();
    let y = values(&d.forward(&x).unwrap());
    assert!(y.iter().all(|&v| v == 0.0 || v == 2.0) && y.contains(&0.0));
    let y = values(&dp.forward(&x).unwrap());
    let mut dropped = 0;
    for s in y.chunks(6) {
        let keep = s.iter().all(|&v| (v - 4.0 / 3.0).abs() < 1e-12);
        let drop = s.iter().all(|&v| v == 0.0);
        assert!(keep || drop, "per-sample decision: {s:?}");
        dropped += drop as usize;
    }
    assert!((4..=30).contains(&dropped), "dropped {dropped} of 64 samples at p = 0.25");
    // Masks advance: two calls differ, but a re-seeded layer repeats the first.
    let first = values(&DropPath::new(0.5, 9).unwrap().forward(&x).unwrap());
    let again = DropPath::new(0.5, 9).unwrap();
    assert_eq!(values(&again.forward(&x).unwrap()), first);
    assert_ne!(values(&again.forward(&x).unwrap()), first);
    // Eval mode and p = 0 are the identity; p = 1 drops everything.
    d.set_training(false);
    dp.set_training(false);
    assert_eq!(values(&d.forward(&x).unwrap()), vec![1.0; 384]);
    assert_eq!(values(&dp.forward(&x).unwrap()), vec![1.0; 384]);
    assert_eq!(values(&DropPath::new(0.0, 3).unwrap().forward(&x).unwrap()), vec![1.0; 384]);
    assert_eq!(values(&DropPath::new(1.0, 3).unwrap().forward(&x).unwrap()), vec![0.0; 384]);

    let mut mlp = Mlp::new(3, 8, 2, true, 0.9, &mut rng(0)).unwrap();
    let e = mlp.forward(&contiguous(&[4, 3], 5)).unwrap_err().to_string();
    assert!(e.contains("Linear") && e.contains("f64") && e.contains("f32") && e.contains("to_dtype"), "{e}");
    mlp.to_dtype(DType::F64).unwrap();
    let x = contiguous(&[4, 3], 5);
    let a = values(&mlp.forward(&x).unwrap());
    mlp.set_training(false);
    let b = values(&mlp.forward(&x).unwrap());
    let c = values(&mlp.forward(&x).unwrap());
    assert_eq!(b, c, "eval mode is deterministic");
    assert_ne!(a, b, "train mode dropped something at p = 0.9");
}

// ---------------------------------------------------------------------------
// Module convention: names, counts, freezing, dtype conversion.
// ---------------------------------------------------------------------------

#[test]
fn names_counts_and_freezing() {
    let mlp = Mlp::new(4, 6, 3, true, 0.0, &mut rng(1)).unwrap();
    mlp.to_dtype(DType::F64).unwrap();
    let names: Vec<String> = mlp.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
    assert_eq!(mlp.num_params(), 4 * 6 + 6 + 6 * 3 + 3);
    // Handles taken while trainable: the keys a gradient would be stored under.
    let handles: Vec<(String, Tensor)> = mlp.named_params().into_iter().map(|(n, p)| (n, p.tensor())).collect();
    assert_eq!(mlp.set_trainable_matching("fc1.*", false), 2);
    assert_eq!(mlp.num_trainable_params(), 6 * 3 + 3);
    let x = contiguous(&[2, 4], 3);
    let grads = mlp.forward(&x).unwrap().sum_all().unwrap().backward().unwrap();
    for (name, p) in mlp.named_params() {
        let expect_grad = !name_matches("fc1.*", &name);
        assert_eq!(p.is_trainable(), expect_grad, "{name}");
        let h = &handles.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(grads.get(h).is_some(), expect_grad, "gradient presence for {name}");
        if expect_grad {
            assert!(grads.get(&p.tensor()).is_some(), "{name}");
        }
    }
    mlp.set_trainable_matching("*", true);
    assert_eq!(mlp.num_trainable_params(), mlp.num_params());

    let conv = Conv2d::new(3, 4, (2, 2), (1, 1), (0, 0), false, &mut rng(2)).unwrap();
    assert_eq!(conv.named_params().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), ["weight"]);
    let bn = BatchNorm2d::new(4).unwrap();
    bn.to_dtype(DType::F64).unwrap();
    assert_eq!(bn.running_var.tensor().dtype(), DType::F64);
    assert_eq!(bn.num_batches_tracked.tensor().dtype(), DType::I64, "index buffers keep their dtype");
    assert!(bn.to_dtype(DType::I64).is_err());
}

// ---------------------------------------------------------------------------
// Initialisers.
// ---------------------------------------------------------------------------

#[test]
fn fans_and_gains_follow_pytorch() {
    assert_eq!(init::fan_in_and_fan_out(&[10, 20]).unwrap(), (20, 10));
    assert_eq!(init::fan_in_and_fan_out(&[8, 3, 3, 5]).unwrap(), (45, 120));
    assert_eq!(init::fan_in_and_fan_out(&[4, 2, 7]).unwrap(), (14, 28));
    let err = init::fan_in_and_fan_out(&[5]).unwrap_err().to_string();
    assert!(err.contains("[5]"), "{err}");
    assert_eq!(Nonlinearity::Linear.gain(), 1.0);
    assert_eq!(Nonlinearity::Relu.gain(), 2f64.sqrt());
    assert_eq!(Nonlinearity::Tanh.gain(), 5.0 / 3.0);
    assert!((Nonlinearity::LeakyRelu(0.01).gain() - (2.0 / 1.0001f64).sqrt()).abs() < 1e-15);
    assert!((Nonlinearity::LeakyRelu(5f64.sqrt()).gain() - (1.0 / 3f64).sqrt()).abs() < 1e-15);
}

#[test]
fn default_layer_inits_match_pytorch_bounds() {
    let lin = Linear::new(50, 400, true, &mut rng(3)).unwrap();
    let bound = 1.0 / 50f64.sqrt();
    let w = values(&lin.weight.tensor());
    assert!(w.iter().all(|v| v.abs() <= bound));
    let (m, s) = mean_std(&w);
    assert!(
        m.abs() < 0.01 * bound * 10.0 && (s / (bound / 3f64.sqrt()) - 1.0).abs() < 0.02,
        "mean {m} std {s}"
    );
    assert!(values(&lin.bias.as_ref().unwrap().tensor()).iter().all(|v| v.abs() <= bound));
    let conv = Conv2d::new(3, 64, (5, 5), (1, 1), (2, 2), true, &mut rng(4)).unwrap();
    let bound = 1.0 / 75f64.sqrt();
    let w = values(&conv.weight.tensor());
    assert!(w.iter().all(|v| v.abs() <= bound));
    let (_, s) = mean_std(&w);
    assert!((s / (bound / 3f64.sqrt()) - 1.0).abs() < 0.03, "conv std {s}");
}

#[test]
fn initialiser_statistics() {
    let r = &mut rng(5);
    let p = f64_param(&[200, 300]); // fan_in 300, fan_out 200
    init::normal_(&p, 1.0, 0.5, r).unwrap();
    let (m, s) = mean_std(&values(&p.tensor()));
    assert!((m - 1.0).abs() < 0.005 && (s - 0.5).abs() < 0.005, "normal: {m} {s}");

    init::xavier_uniform_(&p, 2.0, r).unwrap();
    let bound = 2.0 * (6.0f64 / 500.0).sqrt();
    let v = values(&p.tensor());
    assert!(v.iter().all(|x| x.abs() <= bound));
    assert!((mean_std(&v).1 / (bound / 3f64.sqrt()) - 1.0).abs() < 0.01);

    init::xavier_normal_(&p, 1.0, r).unwrap();
    assert!((mean_std(&values(&p.tensor())).1 / (2.0f64 / 500.0).sqrt() - 1.0).abs() < 0.01);

    init::kaiming_normal_(&p, FanMode::FanIn, Nonlinearity::Relu, r).unwrap();
    assert!((mean_std(&values(&p.tensor())).1 / (2.0f64 / 300.0).sqrt() - 1.0).abs() < 0.01);
    init::kaiming_normal_(&p, FanMode::FanOut, Nonlinearity::Relu, r).unwrap();
    assert!((mean_std(&values(&p.tensor())).1 / (2.0f64 / 200.0).sqrt() - 1.0).abs() < 0.01);
    init::kaiming_uniform_(&p, FanMode::FanIn, Nonlinearity::Linear, r).unwrap();
    let bound = (3.0f64 / 300.0).sqrt();
    assert!(values(&p.tensor()).iter().all(|x| x.abs() <= bound));

    // Truncated at ±2σ: std of the truncated normal is √(1 − 2·2φ(2)/(Φ(2) − Φ(−2))) ≈ 0.8796.
    init::trunc_normal_(&p, 0.0, 1.0, -2.0, 2.0, r).unwrap();
    let v = values(&p.tensor());
    assert!(v.iter().all(|x| x.abs() <= 2.0));
    let (m, s) = mean_std(&v);
    assert!(m.abs() < 0.01 && (s - 0.8796).abs() < 0.006, "trunc normal: {m} {s}");
    // Asymmetric bounds shift the mean and are respected.
    init::trunc_normal_(&p, 0.5, 1.0, 0.0, 3.0, r).unwrap();
    assert!(values(&p.tensor()).iter().all(|x| (0.0..=3.0).contains(x)));
    // timm's default: absolute ±2 bounds, which barely touch std 0.02.
    init::timm_trunc_normal_(&p, 0.02, r).unwrap();
    let (m, s) = mean_std(&values(&p.tensor()));
    assert!(m.abs() < 2e-4 && (s - 0.02).abs() < 2e-4, "timm trunc normal: {m} {s}");

    init::zeros_(&p).unwrap();
    assert!(values(&p.tensor()).iter().all(|&x| x == 0.0));
    init::ones_(&p).unwrap();
    assert!(values(&p.tensor()).iter().all(|&x| x == 1.0));
    // dtype is kept.
    let q = Param::new(Tensor::zeros([10, 10], DType::F32).unwrap());
    init::normal_(&q, 0.0, 1.0, r).unwrap();
    assert_eq!(q.tensor().dtype(), DType::F32);
}

#[test]
fn gpt2_and_admin_inits() {
    struct Toy {
        wte: Embedding,
        c_fc: Linear,
        c_proj: Linear,
        ln: LayerNorm,
    }
    impl Module for Toy {
        fn named_params(&self) -> Vec<(String, Param)> {
            let mut v = tamer::nn::prefixed("wte", self.wte.named_params());
            v.extend(tamer::nn::prefixed("mlp.c_fc", self.c_fc.named_params()));
            v.extend(tamer::nn::prefixed("mlp.c_proj", self.c_proj.named_params()));
            v.extend(tamer::nn::prefixed("ln_f", self.ln.named_params()));
            v
        }
        fn set_training(&mut self, _: bool) {}
    }
    let r = &mut rng(6);
    let toy = Toy {
        wte: Embedding::new(300, 100, r).unwrap(),
        c_fc: Linear::new(100, 400, true, r).unwrap(),
        c_proj: Linear::new(400, 100, true, r).unwrap(),
        ln: LayerNorm::new(100, 1e-5, true).unwrap(),
    };
    assert_eq!(init::gpt2_init(&toy, 6, &["*c_proj.weight"], r).unwrap(), 1);
    let std_of = |p: &Param| mean_std(&values(&p.tensor())).1;
    assert!((std_of(&toy.wte.weight) / 0.02 - 1.0).abs() < 0.02);
    assert!((std_of(&toy.c_fc.weight) / 0.02 - 1.0).abs() < 0.02);
    let res = init::gpt2_residual_std(6);
    assert!((res - 0.02 / 12f64.sqrt()).abs() < 1e-15);
    assert!((std_of(&toy.c_proj.weight) / res - 1.0).abs() < 0.02);
    assert!(values(&toy.c_fc.bias.as_ref().unwrap().tensor()).iter().all(|&v| v == 0.0));
    assert!(values(&toy.ln.weight.tensor()).iter().all(|&v| v == 1.0), "LayerNorm weights untouched");

    let n = 2 * 6;
    let expect = ((n as f64 + 1.0) / (n as f64 + 1.0).ln() - 1.0).sqrt();
    assert!((init::admin_omega(n).unwrap() - expect).abs() < 1e-15);
    assert_eq!(init::admin_omega_for_layers(6).unwrap(), init::admin_omega(12).unwrap());
    // ω_i² = 1 + Σ_{j<i} Var[f_j].
    let w = init::admin_omegas_from_variances(&[0.5, 1.5, 2.0, 4.0]).unwrap();
    assert_close(&w, &[1.0, 1.5f64.sqrt(), 3f64.sqrt(), 5f64.sqrt()], 1e-15, "admin profiled");
    let mut prof = init::AdminProfiler::new();
    assert_eq!(prof.omega(), 1.0);
    assert_eq!(prof.record(1.0, 3.0).unwrap(), 2.0);
    assert_eq!(prof.omega(), 2.0);
    assert!(prof.record(-1.0, 1.0).is_err());
}

// ---------------------------------------------------------------------------
// Position encodings.
// ---------------------------------------------------------------------------

#[test]
fn sincos_position_encodings_hand_values() {
    // dim 4: [sin p, cos p, sin(p/100), cos(p/100)].
    let pe = values(&sincos_1d(3, 4).unwrap());
    let mut expect = Vec::new();
    for p in 0..3 {
        let p = p as f64;
        expect.extend([p.sin(), p.cos(), (p / 100.0).sin(), (p / 100.0).cos()]);
    }
    assert_close(&pe, &expect, 1e-7, "sincos_1d");

    // 2×2 grid, dim 8 (q = 2, ω = [1, 1/100]); token r·2 + c = [sin cω, cos cω, sin rω, cos rω].
    let pe = values(&sincos_2d(2, 2, 8, false).unwrap());
    let mut expect = Vec::new();
    for r in 0..2 {
        for c in 0..2 {
            for coord in [c as f64, r as f64] {
                expect.extend([coord.sin(), (coord / 100.0).sin(), coord.cos(), (coord / 100.0).cos()]);
            }
        }
    }
    assert_close(&pe, &expect, 1e-7, "sincos_2d");
    let with_cls = sincos_2d(3, 2, 16, true).unwrap();
    assert_eq!(with_cls.dims(), &[7, 16]);
    assert!(values(&with_cls)[..16].iter().all(|&v| v == 0.0));
    assert_close(
        &values(&with_cls)[16..],
        &values(&sincos_2d(3, 2, 16, false).unwrap()),
        0.0,
        "cls row prepended",
    );

    let learned = LearnedPosEmbed::new(64, 32, &mut rng(8)).unwrap();
    assert_eq!(learned.weight.dims(), vec![1, 64, 32]);
    let (m, s) = mean_std(&values(&learned.weight.tensor()));
    assert!(m.abs() < 0.002 && (s - 0.02).abs() < 0.002, "learned pos init: {m} {s}");
}

// ---------------------------------------------------------------------------
// Errors name the layer and the shapes.
// ---------------------------------------------------------------------------

#[test]
fn errors_name_layer_and_shapes() {
    let r = &mut rng(9);
    let f32_ones = |d: &[usize]| Tensor::ones(d.to_vec(), DType::F32).unwrap();
    let msg = |e: tamer::Error| e.to_string();

    let e = msg(Linear::new(4, 3, true, r).unwrap().forward(&f32_ones(&[2, 5])).unwrap_err());
    assert!(e.contains("Linear") && e.contains("[2, 5]") && e.contains('4'), "{e}");
    assert!(msg(Linear::new(0, 3, true, r).unwrap_err()).contains("in_features"));
    let e = msg(Linear::from_tensors(f32_ones(&[3, 4]), Some(f32_ones(&[4]))).unwrap_err());
    assert!(e.contains("bias") && e.contains("[4]"), "{e}");

    let e = msg(LayerNorm::new(4, 1e-5, true).unwrap().forward(&f32_ones(&[2, 3])).unwrap_err());
    assert!(e.contains("LayerNorm") && e.contains("[2, 3]"), "{e}");

    let emb = Embedding::new(5, 2, r).unwrap();
    let e = msg(emb.forward(&f32_ones(&[3])).unwrap_err());
    assert!(e.contains("Embedding") && e.contains("i64"), "{e}");
    let e = msg(emb.forward(&Tensor::from_indices(&[1, 7])).unwrap_err());
    assert!(e.contains("Embedding") && e.contains('7'), "{e}");

    let conv = Conv2d::new(3, 2, (3, 3), (1, 1), (0, 0), true, r).unwrap();
    let e = msg(conv.forward(&f32_ones(&[1, 2, 5, 5])).unwrap_err());
    assert!(e.contains("Conv2d") && e.contains("[1, 2, 5, 5]"), "{e}");
    let e = msg(conv.forward(&f32_ones(&[1, 3, 2, 2])).unwrap_err());
    assert!(e.contains("Conv2d"), "{e}");

    let bn = BatchNorm2d::new(3).unwrap();
    let e = msg(bn.forward(&f32_ones(&[2, 4, 2, 2])).unwrap_err());
    assert!(e.contains("BatchNorm2d") && e.contains("[2, 4, 2, 2]"), "{e}");
    let e = msg(bn.forward(&f32_ones(&[1, 3, 1, 1])).unwrap_err());
    assert!(e.contains("BatchNorm2d") && e.contains("more than one value"), "{e}");

    assert!(msg(Dropout::new(1.5, 0).unwrap_err()).contains("1.5"));
    assert!(msg(DropPath::new(-0.1, 0).unwrap_err()).contains("DropPath"));
    let e = msg(DropPath::new(0.5, 0).unwrap().forward(&Tensor::scalar(1.0f32)).unwrap_err());
    assert!(e.contains("DropPath") && e.contains("scalar"), "{e}");

    let pe = LearnedPosEmbed::new(4, 2, r).unwrap();
    let e = msg(pe.forward(&f32_ones(&[1, 5, 2])).unwrap_err());
    assert!(e.contains("LearnedPosEmbed") && e.contains("[1, 5, 2]"), "{e}");
    assert!(msg(sincos_1d(3, 5).unwrap_err()).contains("even"));
    assert!(msg(sincos_2d(2, 2, 6, false).unwrap_err()).contains("multiple of 4"));

    let p = f64_param(&[4]);
    assert!(msg(init::trunc_normal_(&p, 0.0, 1.0, 1.0, -1.0, r).unwrap_err()).contains("below"));
    assert!(msg(init::xavier_uniform_(&p, 1.0, r).unwrap_err()).contains("[4]"));
    assert!(init::admin_omega(0).is_err());
}
