//! softmax and log_softmax: gradient checks over random shapes and every axis,
//! forward values against the composite reference (f32 and f64, extreme
//! logits included), and error messages.

use crate::common::{assert_close, values};
use crate::cross_entropy::targets;
use proptest::prelude::*;
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::testing::strategies::{shape, tensor};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{rng, DType, ErrorKind, Tensor};

fn cfg() -> GradCheckConfig {
    GradCheckConfig::default()
}

/// Softmax the composite way (max subtraction with plain tensor ops).
pub fn softmax_composite(x: &Tensor, axis: isize) -> Tensor {
    let shifted = x.sub(&x.max(&[axis], true).unwrap()).unwrap();
    let e = shifted.exp().unwrap();
    e.div(&e.sum(&[axis], true).unwrap()).unwrap()
}

pub fn log_softmax_composite(x: &Tensor, axis: isize) -> Tensor {
    let shifted = x.sub(&x.max(&[axis], true).unwrap()).unwrap();
    let log_sum = shifted.exp().unwrap().sum(&[axis], true).unwrap().log().unwrap();
    shifted.sub(&log_sum).unwrap()
}

// ---- gradient checks ------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config(24))]

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
fn fused_softmax_gradients_match_the_composite_ones_in_f32() {
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
