//! max_pool2d and avg_pool2d: gradient checks over random small shapes and
//! layouts, forward values (ties included) against the naive references,
//! NaN propagation, and errors.

use crate::common::{assert_close, err_message, spread_apart};
use proptest::prelude::*;
use tamer::backend::cpu::nn::pool::{avg_pool2d_reference, max_pool2d_reference};
use tamer::ops::nn::pool::Pool2dParams;
use tamer::testing::strategies::{tensor_with, view_kind, ViewKind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{DType, ErrorKind, Tensor};

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

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn max_pool2d_gradients(case in pool_case(), kind in view_kind(), seed in any::<u64>()) {
        // Windows without near-ties: a finite difference step must not change their maxima.
        let x = spread_apart(&tensor_with(&[case.n, case.c, case.h, case.w], kind, seed));
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
            assert_close(&y.to_vec::<f64>().unwrap(), &avg_pool2d_reference(&xv, &p, include), 1e-12, "avg_pool2d");
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
    let perm: Vec<isize> = (0..dims.len() as isize).rev().collect();
    let stored = Tensor::from_vec(values(tensor_with(&rev, ViewKind::Contiguous, seed)), rev).unwrap();
    let x = stored.permute(&perm).unwrap();
    assert!(!x.is_contiguous() || dims.iter().filter(|&&d| d > 1).count() < 2);
    x
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
