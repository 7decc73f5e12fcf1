//! conv2d: gradient checks over random small shapes and layouts, forward
//! and backward values against the naive references, a CNN stem's
//! gradients, and errors.

use crate::common::{assert_close, err_message};
use proptest::prelude::*;
use tamer::backend::cpu::nn::conv::{conv2d_backward_reference, conv2d_reference};
use tamer::ops::nn::conv::Conv2dParams;
use tamer::testing::strategies::{tensor_with, view_kind, ViewKind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
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

/// Convolutions whose kernel equals their stride, without padding (a ViT's
/// patch embedding), whose gradients the CPU backend computes as one GEMM over the batch;
/// the input may leave rows and columns that no patch covers.
fn patch_case() -> impl Strategy<Value = ConvCase> {
    (
        1..=3usize,
        1..=2usize,
        1..=3usize,
        1..=3usize,
        1..=3usize,
        0..=2usize,
        0..=2usize,
        1..=3usize,
        1..=3usize,
        any::<bool>(),
    )
        .prop_map(|(n, c, kh, kw, o, extra_h, extra_w, oh, ow, bias)| ConvCase {
            n,
            c,
            h: oh * kh + extra_h.min(kh - 1),
            w: ow * kw + extra_w.min(kw - 1),
            o,
            kernel: (kh, kw),
            stride: (kh, kw),
            padding: (0, 0),
            bias,
        })
}

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn patch_conv2d_gradients(case in patch_case(), kx in view_kind(), seed in any::<u64>()) {
        let x = tensor_with(&[case.n, case.c, case.h, case.w], kx, seed);
        let w = tensor_with(&[case.o, case.c, case.kernel.0, case.kernel.1], ViewKind::Contiguous, seed ^ 1);
        let mut inputs = vec![x, w];
        if case.bias {
            inputs.push(tensor_with(&[case.o], ViewKind::Contiguous, seed ^ 2));
        }
        let (stride, padding) = (case.stride, case.padding);
        let f = |xs: &[Tensor]| xs[0].conv2d(&xs[1], xs.get(2), stride, padding);
        let report = check_gradients(f, &inputs, &GradCheckConfig::default()).unwrap();
        prop_assert!(report.passed(), "{case:?} {kx:?}: {report}");
    }

    #[test]
    fn patch_conv2d_matches_reference(case in patch_case(), seed in any::<u64>()) {
        let p = case.params();
        let x = tensor_with(&[case.n, case.c, case.h, case.w], ViewKind::Contiguous, seed);
        let w = tensor_with(&[case.o, case.c, case.kernel.0, case.kernel.1], ViewKind::Contiguous, seed ^ 1);
        let b = tensor_with(&[case.o], ViewKind::Contiguous, seed ^ 2);
        let (xv, wv, bv) = (x.to_vec::<f64>().unwrap(), w.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
        let y = x.conv2d(&w, case.bias.then_some(&b), case.stride, case.padding).unwrap();
        assert_close(&y.to_vec::<f64>().unwrap(), &conv2d_reference(&xv, &wv, case.bias.then_some(&bv[..]), &p), 1e-12, "y");
        let (x, w) = (x.variable(), w.variable());
        let y = x.conv2d(&w, None, case.stride, case.padding).unwrap();
        let dy = tensor_with(&p.output_dims(), ViewKind::Contiguous, seed ^ 3);
        let grads = y.backward_with_grad(&dy).unwrap();
        let (dx, dw, _) = conv2d_backward_reference(&xv, &wv, &dy.to_vec::<f64>().unwrap(), &p);
        assert_close(&grads.get(&x).unwrap().to_vec::<f64>().unwrap(), &dx, 1e-12, "dx");
        assert_close(&grads.get(&w).unwrap().to_vec::<f64>().unwrap(), &dw, 1e-12, "dw");
    }

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
        assert_close(&y.to_vec::<f64>().unwrap(), &want, 1e-12, "f64 forward");
        // The same in f32.
        let y32 = x.to_dtype(DType::F32).unwrap().conv2d(&w.to_dtype(DType::F32).unwrap(), None, case.stride, case.padding).unwrap();
        assert_close(&y32.to_f64_vec().unwrap(), &conv2d_reference(&xv, &wv, None, &p), 1e-5, "f32 forward");
    }
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
    assert_close(&f(&y), &conv2d_reference(&f(&x), &f(&w), Some(&f(&b)), &p), 1e-4, "y");
    assert_close(&f(grads.get(&x).unwrap()), &dx, 1e-4, "dx");
    assert_close(&f(grads.get(&w).unwrap()), &dw, 1e-4, "dw");
    assert_close(&f(grads.get(&b).unwrap()), &db, 1e-4, "db");
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
