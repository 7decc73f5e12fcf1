//! dropout: gradient checks with a fixed seed, the gradient as the mask over
//! the keep probability, identity, zeros and drop statistics, and errors.

use crate::common::{assert_close, values};
use proptest::prelude::*;
use tamer::testing::strategies::{shape, tensor};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{rng, DType, ErrorKind, Tensor};

fn cfg() -> GradCheckConfig {
    GradCheckConfig::default()
}

// ---- gradient checks ------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn dropout_gradients_with_a_fixed_seed(x in tensor(shape(1..=3, 1..=5)), p in 0.0f64..0.9, seed in any::<u64>()) {
        // A fresh RNG of the same seed per call: every evaluation draws the same mask.
        let report = check_gradients(|xs| xs[0].dropout(p, true, &mut rng(seed)), &[x], &cfg()).unwrap();
        prop_assert!(report.passed(), "p {p}: {report}");
    }
}

#[test]
fn dropout_gradient_is_the_mask_over_keep_probability() {
    let x = Tensor::randn([6, 7], DType::F64, &mut rng(3)).unwrap().variable();
    let p = 0.3;
    let y = x.dropout(p, true, &mut rng(42)).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let mask = values(&Tensor::dropout_mask([6, 7], p, DType::F64, &mut rng(42)).unwrap());
    let want: Vec<f64> = mask.iter().map(|m| m / (1.0 - p)).collect();
    assert_close(&values(g.get(&x).unwrap()), &want, 1e-15, "dx");
    // The forward used that same mask.
    let fwd: Vec<f64> = values(&x).iter().zip(&want).map(|(x, m)| x * m).collect();
    assert_close(&values(&y), &fwd, 1e-15, "y");
    assert!(mask.contains(&0.0) && mask.contains(&1.0));
}

// ---- forward values -------------------------------------------------------------------

#[test]
fn dropout_identity_zeros_and_statistics() {
    let x = Tensor::randn([50, 40], DType::F32, &mut rng(8)).unwrap();
    // Evaluation or p = 0: the input itself.
    assert_eq!(values(&x.dropout(0.5, false, &mut rng(1)).unwrap()), values(&x));
    assert_eq!(values(&x.dropout(0.0, true, &mut rng(1)).unwrap()), values(&x));
    // p = 1: zeros, and a zero gradient.
    let v = x.to_dtype(DType::F64).unwrap().variable();
    let y = v.dropout(1.0, true, &mut rng(1)).unwrap();
    assert!(values(&y).iter().all(|&e| e == 0.0));
    assert!(values(y.sum_all().unwrap().backward().unwrap().get(&v).unwrap()).iter().all(|&e| e == 0.0));
    // Reference: x · mask / (1 − p); different seeds give different masks.
    let p = 0.4;
    let fused = values(&x.dropout(p, true, &mut rng(77)).unwrap());
    let mask = values(&Tensor::dropout_mask([50, 40], p, DType::F32, &mut rng(77)).unwrap());
    let reference: Vec<f64> = values(&x)
        .iter()
        .zip(&mask)
        .map(|(x, m)| (*x as f32 * (*m as f32 * (1.0 / (1.0 - p) as f32))) as f64)
        .collect();
    assert_close(&fused, &reference, 1e-6, "dropout");
    assert_ne!(fused, values(&x.dropout(p, true, &mut rng(78)).unwrap()));
    let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / mask.len() as f64;
    assert!((dropped - p).abs() < 0.05, "dropped fraction {dropped}");
}

// ---- errors ---------------------------------------------------------------------------

#[test]
fn dropout_errors() {
    let x = Tensor::zeros([4], DType::F32).unwrap();
    for p in [-0.1, 1.01, f64::NAN] {
        let e = x.dropout(p, true, &mut rng(0)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Value);
        assert!(e.to_string().contains("dropout") && e.to_string().contains("[0, 1]"), "{e}");
    }
    let i = Tensor::from_vec(vec![1i64, 2], [2]).unwrap();
    assert_eq!(i.dropout(0.5, true, &mut rng(0)).unwrap_err().kind, ErrorKind::DType);
}
