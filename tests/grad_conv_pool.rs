//! conv2d, max_pool2d and avg_pool2d: gradient checks over random small
//! shapes and layouts, forward values against the naive references, and errors.

use proptest::prelude::*;
use tamer::backend::cpu::nn::conv::{conv2d_backward_reference, conv2d_reference};
use tamer::backend::cpu::nn::pool::{avg_pool2d_reference, max_pool2d_reference};
use tamer::ops::nn::conv::Conv2dParams;
use tamer::ops::nn::pool::Pool2dParams;
use tamer::testing::strategies::{tensor_with, view_kind, ViewKind};
use tamer::testing::{check_gradients, GradCheckConfig};
use tamer::{DType, ErrorKind, Tensor};

#[derive(Clone, Debug)]
struct ConvCase {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    bias: bool,
}

impl ConvCase {
    fn params(&self) -> Conv2dParams {
        let ((kh, kw), (sh, sw), (ph, pw)) = (self.kernel, self.stride, self.padding);
        Conv2dParams {
            batch: self.n,
            in_channels: self.c,
            in_h: self.h,
            in_w: self.w,
            out_channels: self.o,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            out_h: (self.h + 2 * ph - kh) / sh + 1,
            out_w: (self.w + 2 * pw - kw) / sw + 1,
        }
    }
}

/// Tiny convolutions whose kernel always fits the padded input.
fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        1..=2usize,
        1..=3usize,
        1..=3usize,
        1..=3usize,
        1..=3usize,
        0..=2usize,
        0..=1usize,
        1..=2usize,
        1..=3usize,
        any::<bool>(),
    )
        .prop_flat_map(|(n, c, kh, kw, o, ph, pw, sh, sw, bias)| {
            let h_min = kh.saturating_sub(2 * ph).max(1);
            let w_min = kw.saturating_sub(2 * pw).max(1);
            (h_min..=h_min + 4, w_min..=w_min + 4).prop_map(move |(h, w)| ConvCase {
                n,
                c,
                h,
                w,
                o,
                kernel: (kh, kw),
                stride: (sh, sw),
                padding: (ph, pw),
                bias,
            })
        })
}

#[derive(Clone, Debug)]
struct PoolCase {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
}

impl PoolCase {
    fn params(&self) -> Pool2dParams {
        Pool2dParams {
            batch: self.n,
            channels: self.c,
            in_h: self.h,
            in_w: self.w,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            out_h: (self.h + 2 * self.padding.0 - self.kernel.0) / self.stride.0 + 1,
            out_w: (self.w + 2 * self.padding.1 - self.kernel.1) / self.stride.1 + 1,
        }
    }
}

/// Tiny poolings with padding at most half the kernel (PyTorch's rule).
fn pool_case() -> impl Strategy<Value = PoolCase> {
    (1..=2usize, 1..=3usize, 1..=3usize, 1..=3usize, 1..=3usize, 1..=3usize)
        .prop_flat_map(|(n, c, kh, kw, sh, sw)| (Just((n, c, kh, kw, sh, sw)), 0..=kh / 2, 0..=kw / 2))
        .prop_flat_map(|((n, c, kh, kw, sh, sw), ph, pw)| {
            let h_min = kh.saturating_sub(2 * ph).max(1);
            let w_min = kw.saturating_sub(2 * pw).max(1);
            (h_min..=h_min + 5, w_min..=w_min + 5).prop_map(move |(h, w)| PoolCase {
                n,
                c,
                h,
                w,
                kernel: (kh, kw),
                stride: (sh, sw),
                padding: (ph, pw),
            })
        })
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "element {i}: {g} vs {w}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn conv2d_gradients(case in conv_case(), kx in view_kind(), kw in view_kind(), seed in any::<u64>()) {
        let x = tensor_with(&[case.n, case.c, case.h, case.w], kx, seed);
        let w = tensor_with(&[case.o, case.c, case.kernel.0, case.kernel.1], kw, seed ^ 1);
        let mut inputs = vec![x, w];
        if case.bias {
            inputs.push(tensor_with(&[case.o], ViewKind::Sliced, seed ^ 2));
        }
        let (stride, padding) = (case.stride, case.padding);
        let f = |xs: &[Tensor]| xs[0].conv2d(&xs[1], xs.get(2), stride, padding);
        let report = check_gradients(f, &inputs, &GradCheckConfig::default()).unwrap();
        prop_assert!(report.passed(), "{case:?} {kx:?} {kw:?}: {report}");
    }

    #[test]
    fn conv2d_forward_matches_reference(case in conv_case(), kx in view_kind(), kw in view_kind(), seed in any::<u64>()) {
        let x = tensor_with(&[case.n, case.c, case.h, case.w], kx, seed);
        let w = tensor_with(&[case.o, case.c, case.kernel.0, case.kernel.1], kw, seed ^ 1);
        let b = tensor_with(&[case.o], ViewKind::Contiguous, seed ^ 2);
        let bias = case.bias.then_some(&b);
        let y = x.conv2d(&w, bias, case.stride, case.padding).unwrap();
        let p = case.params();
        prop_assert_eq!(y.dims(), &p.output_dims()[..]);
        let (xv, wv, bv) = (x.to_vec::<f64>().unwrap(), w.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
        let want = conv2d_reference(&xv, &wv, case.bias.then_some(&bv[..]), &p);
        assert_close(&y.to_vec::<f64>().unwrap(), &want, 1e-12);
        // The same in f32.
        let y32 = x.to_dtype(DType::F32).unwrap().conv2d(&w.to_dtype(DType::F32).unwrap(), None, case.stride, case.padding).unwrap();
        assert_close(&y32.to_f64_vec().unwrap(), &conv2d_reference(&xv, &wv, None, &p), 1e-5);
    }

    #[test]
    fn max_pool2d_gradients(case in pool_case(), kind in view_kind(), seed in any::<u64>()) {
        let x = tensor_with(&[case.n, case.c, case.h, case.w], kind, seed);
        let (k, s, p) = (case.kernel, case.stride, case.padding);
        let report = check_gradients(|xs| xs[0].max_pool2d(k, s, p), &[x], &GradCheckConfig::default()).unwrap();
        prop_assert!(report.passed(), "{case:?} {kind:?}: {report}");
    }

    #[test]
    fn avg_pool2d_gradients(case in pool_case(), kind in view_kind(), include in any::<bool>(), seed in any::<u64>()) {
        let x = tensor_with(&[case.n, case.c, case.h, case.w], kind, seed);
        let (k, s, p) = (case.kernel, case.stride, case.padding);
        let report = check_gradients(|xs| xs[0].avg_pool2d(k, s, p, include), &[x], &GradCheckConfig::default()).unwrap();
        prop_assert!(report.passed(), "{case:?} {kind:?} include_pad={include}: {report}");
    }

    #[test]
    fn pools_match_reference(case in pool_case(), kind in view_kind(), seed in any::<u64>()) {
        // Small integers, so that windows hold ties.
        let x = rounded(&[case.n, case.c, case.h, case.w], kind, seed);
        let p = case.params();
        let xv = x.to_vec::<f64>().unwrap();
        let (y, idx) = x.max_pool2d_with_indices(case.kernel, case.stride, case.padding).unwrap();
        let (ry, ri) = max_pool2d_reference(&xv, &p);
        prop_assert_eq!(y.dims(), &p.output_dims()[..]);
        prop_assert_eq!(y.to_vec::<f64>().unwrap(), ry);
        prop_assert_eq!(idx.to_vec::<i64>().unwrap(), ri);
        for include in [true, false] {
            let y = x.avg_pool2d(case.kernel, case.stride, case.padding, include).unwrap();
            assert_close(&y.to_vec::<f64>().unwrap(), &avg_pool2d_reference(&xv, &p, include), 1e-12);
        }
    }
}

/// Integers in -4..4 laid out as `kind` says (Sliced falls back to Permuted).
fn rounded(dims: &[usize], kind: ViewKind, seed: u64) -> Tensor {
    let values = |t: Tensor| -> Vec<f64> { t.to_vec::<f64>().unwrap().iter().map(|v| (v * 2.0).round()).collect() };
    if kind == ViewKind::Contiguous {
        return Tensor::from_vec(values(tensor_with(dims, kind, seed)), dims.to_vec()).unwrap();
    }
    let rev: Vec<usize> = dims.iter().rev().copied().collect();
    let perm: Vec<usize> = (0..dims.len()).rev().collect();
    let stored = Tensor::from_vec(values(tensor_with(&rev, ViewKind::Contiguous, seed)), rev).unwrap();
    let x = stored.permute(&perm).unwrap();
    assert!(!x.is_contiguous() || dims.iter().filter(|&&d| d > 1).count() < 2);
    x
}

#[test]
fn conv2d_backward_matches_reference_in_f32_on_a_batch_large_enough_to_go_parallel() {
    let p = ConvCase {
        n: 8,
        c: 3,
        h: 12,
        w: 12,
        o: 16,
        kernel: (3, 3),
        stride: (1, 1),
        padding: (1, 1),
        bias: true,
    }
    .params();
    let mut r = tamer::rng(7);
    let x = Tensor::uniform(p.input_dims().to_vec(), -1.0, 1.0, DType::F32, &mut r).unwrap().variable();
    let w = Tensor::uniform(p.weight_dims().to_vec(), -1.0, 1.0, DType::F32, &mut r).unwrap().variable();
    let b = Tensor::uniform([p.out_channels], -1.0, 1.0, DType::F32, &mut r).unwrap().variable();
    let dy = Tensor::uniform(p.output_dims().to_vec(), -1.0, 1.0, DType::F32, &mut r).unwrap();
    let y = x.conv2d(&w, Some(&b), (1, 1), (1, 1)).unwrap();
    let grads = y.backward_with_grad(&dy).unwrap();
    let f = |t: &Tensor| t.to_f64_vec().unwrap();
    let (dx, dw, db) = conv2d_backward_reference(&f(&x), &f(&w), &f(&dy), &p);
    assert_close(&f(&y), &conv2d_reference(&f(&x), &f(&w), Some(&f(&b)), &p), 1e-4);
    assert_close(&f(grads.get(&x).unwrap()), &dx, 1e-4);
    assert_close(&f(grads.get(&w).unwrap()), &dw, 1e-4);
    assert_close(&f(grads.get(&b).unwrap()), &db, 1e-4);
}

#[test]
fn conv2d_only_computes_the_gradients_asked_for() {
    let x = Tensor::ones([1, 2, 3, 3], DType::F64).unwrap(); // data, not a variable
    let w = Tensor::ones([1, 2, 2, 2], DType::F64).unwrap().variable();
    let y = x.conv2d(&w, None, (1, 1), (0, 0)).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.len(), 1);
    // Each weight tap sees every one of the 4 output positions, over ones.
    assert_eq!(grads.get(&w).unwrap().to_vec::<f64>().unwrap(), vec![4.0; 8]);
}

#[test]
fn max_pool2d_routes_ties_to_the_first_maximum_and_treats_padding_as_minus_infinity() {
    // [[1, 3], [3, 2]]: the 2×2 window ties between (0,1) and (1,0).
    let x = Tensor::from_vec(vec![1.0f64, 3.0, 3.0, 2.0], [1, 1, 2, 2]).unwrap().variable();
    let y = x.max_pool2d((2, 2), (2, 2), (0, 0)).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![0.0, 1.0, 0.0, 0.0]);
    // All-negative input with padding: padding must not win with 0.
    let x = Tensor::full([1, 1, 2, 2], -5.0, DType::F32).unwrap();
    let y = x.max_pool2d((3, 3), (1, 1), (1, 1)).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![-5.0; 4]);
}

#[test]
fn max_pool2d_propagates_nan_like_pytorch() {
    let x = Tensor::from_vec(vec![1.0f32, f32::NAN, 5.0, 2.0, 0.0, 1.0, 3.0, 4.0], [1, 2, 2, 2]).unwrap();
    let (y, idx) = x.max_pool2d_with_indices((2, 2), (2, 2), (0, 0)).unwrap();
    let y = y.to_vec::<f32>().unwrap();
    assert!(y[0].is_nan() && y[1] == 4.0, "{y:?}");
    assert_eq!(idx.to_vec::<i64>().unwrap(), vec![1, 3]);
}

#[test]
fn avg_pool2d_backward_spreads_evenly() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], [1, 1, 2, 2]).unwrap().variable();
    let g = x.avg_pool2d((2, 2), (2, 2), (0, 0), true).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![0.25; 4]);
    // Padding 1, stride 2: each element sits in exactly one window with one real tap.
    let g = x.avg_pool2d((2, 2), (2, 2), (1, 1), false).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![1.0; 4]);
    let g = x.avg_pool2d((2, 2), (2, 2), (1, 1), true).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![0.25; 4]);
}

#[test]
fn cnn_stem_gradients() {
    // conv → relu → max pool → avg pool, as a small CNN stem would use them.
    let x = tensor_with(&[2, 1, 6, 6], ViewKind::Contiguous, 11);
    let w = tensor_with(&[3, 1, 3, 3], ViewKind::Permuted, 12);
    let b = tensor_with(&[3], ViewKind::Contiguous, 13);
    let f = |xs: &[Tensor]| {
        xs[0]
            .conv2d(&xs[1], Some(&xs[2]), (1, 1), (1, 1))?
            .relu()?
            .max_pool2d((2, 2), (2, 2), (0, 0))?
            .avg_pool2d((3, 3), (1, 1), (1, 1), true)
    };
    let report = check_gradients(f, &[x, w, b], &GradCheckConfig::default()).unwrap();
    assert!(report.passed(), "{report}");
}

fn err_message(r: tamer::Result<Tensor>) -> (ErrorKind, String) {
    let e = r.unwrap_err();
    (e.kind.clone(), e.to_string())
}

#[test]
fn conv2d_errors_name_the_shapes() {
    let x = Tensor::zeros([2, 3, 5, 5], DType::F32).unwrap();
    let w = Tensor::zeros([4, 3, 3, 3], DType::F32).unwrap();

    let (kind, msg) = err_message(x.reshape([6, 5, 5]).unwrap().conv2d(&w, None, (1, 1), (0, 0)));
    assert_eq!(kind, ErrorKind::Shape);
    assert!(msg.contains("conv2d") && msg.contains("rank 4") && msg.contains("[6, 5, 5]"), "{msg}");

    let (_, msg) = err_message(x.conv2d(&w.reshape([4, 27]).unwrap(), None, (1, 1), (0, 0)));
    assert!(msg.contains("weight") && msg.contains("[4, 27]"), "{msg}");

    let w2 = Tensor::zeros([4, 2, 3, 3], DType::F32).unwrap();
    let (kind, msg) = err_message(x.conv2d(&w2, None, (1, 1), (0, 0)));
    assert_eq!(kind, ErrorKind::Shape);
    assert!(
        msg.contains("[4, 2, 3, 3]") && msg.contains("[2, 3, 5, 5]") && msg.contains("channels"),
        "{msg}"
    );

    let big = Tensor::zeros([4, 3, 8, 3], DType::F32).unwrap();
    let (kind, msg) = err_message(x.conv2d(&big, None, (1, 1), (1, 1)));
    assert_eq!(kind, ErrorKind::Shape);
    assert!(
        msg.contains("kernel height 8") && msg.contains("padded input height 7") && msg.contains("[4, 3, 8, 3]"),
        "{msg}"
    );

    let (kind, msg) = err_message(x.conv2d(&w, None, (1, 0), (0, 0)));
    assert_eq!(kind, ErrorKind::Value);
    assert!(msg.contains("stride") && msg.contains("width"), "{msg}");

    let bad_bias = Tensor::zeros([3], DType::F32).unwrap();
    let (_, msg) = err_message(x.conv2d(&w, Some(&bad_bias), (1, 1), (0, 0)));
    assert!(msg.contains("bias") && msg.contains("[3]") && msg.contains("[4]"), "{msg}");

    let (kind, msg) = err_message(x.conv2d(&w.to_dtype(DType::F64).unwrap(), None, (1, 1), (0, 0)));
    assert_eq!(kind, ErrorKind::DType);
    assert!(msg.contains("f32") && msg.contains("f64"), "{msg}");

    let (kind, msg) = err_message(x.to_dtype(DType::F16).unwrap().conv2d(&w.to_dtype(DType::F16).unwrap(), None, (1, 1), (0, 0)));
    assert_eq!(kind, ErrorKind::DType);
    assert!(msg.contains("f16"), "{msg}");
}

#[test]
fn pool_errors_name_the_shapes() {
    let x = Tensor::zeros([1, 2, 4, 4], DType::F32).unwrap();
    let (kind, msg) = err_message(x.reshape([2, 4, 4]).unwrap().max_pool2d((2, 2), (2, 2), (0, 0)));
    assert_eq!(kind, ErrorKind::Shape);
    assert!(msg.contains("max_pool2d") && msg.contains("[2, 4, 4]"), "{msg}");

    let (kind, msg) = err_message(x.avg_pool2d((2, 2), (2, 2), (2, 0), true));
    assert_eq!(kind, ErrorKind::Value);
    assert!(msg.contains("avg_pool2d") && msg.contains("half"), "{msg}");

    let (kind, msg) = err_message(x.max_pool2d((5, 2), (1, 1), (0, 0)));
    assert_eq!(kind, ErrorKind::Shape);
    assert!(msg.contains("kernel height 5") && msg.contains("[1, 2, 4, 4]"), "{msg}");

    let (kind, msg) = err_message(x.max_pool2d((2, 2), (0, 2), (0, 0)));
    assert_eq!(kind, ErrorKind::Value);
    assert!(msg.contains("stride"), "{msg}");

    let (kind, _) = err_message(Tensor::zeros([1, 1, 4, 4], DType::I64).unwrap().max_pool2d((2, 2), (2, 2), (0, 0)));
    assert_eq!(kind, ErrorKind::DType);
}
