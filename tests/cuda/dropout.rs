//! Dropout on the device: the Philox4x32-10 mask bit for bit against the
//! CPU reference, the device's Philox words, and the drop statistics.

use crate::harness::gpu;
use tamer::ops::nn::dropout::{philox4x32_10, philox_dropout_mask};
use tamer::{rng, DType, Device, Tensor};

// ---- dropout ---------------------------------------------------------------------------

/// The seed `Tensor::dropout` draws on a CUDA device from `rng(seed)`.
fn dropout_seed(seed: u64) -> u64 {
    use rand::RngCore;
    rng(seed).next_u64()
}

/// Bit-equal values, else the first differing element.
fn assert_same_mask(got: &Tensor, want: &Tensor, what: &str) {
    let (a, b) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x.to_bits() != y.to_bits()) {
        panic!("{what}: element {i}: device {} vs reference {}", a[i], b[i]);
    }
}

#[test]
fn dropout_mask_is_the_cpu_philox_reference_bit_for_bit() {
    let Some(dev) = gpu() else { return };
    for dtype in [DType::F32, DType::F64] {
        for (dims, p, seed) in [(vec![1001], 0.3, 1u64), (vec![7, 143], 0.5, 2), (vec![3], 0.9, 3), (vec![64, 1025], 0.1, 4)] {
            let x = Tensor::ones(dims.clone(), dtype).unwrap().to_device(dev).unwrap().variable();
            let y = x.dropout(p, true, &mut rng(seed)).unwrap();
            crate::harness::assert_on("dropout", dev, std::slice::from_ref(&y));
            let want = philox_dropout_mask(dims.clone(), p, dropout_seed(seed), dtype).unwrap();
            // 1 · mask is exact, so y is the device mask.
            assert_same_mask(&y, &want, &format!("{dtype} {dims:?} p {p}"));
            // Backward multiplies by the same mask.
            let g = y
                .backward_with_grad(&Tensor::ones(dims.clone(), dtype).unwrap().to_device(dev).unwrap())
                .unwrap();
            assert_same_mask(g.get(&x).unwrap(), &want, &format!("{dtype} {dims:?} p {p} grad"));
        }
        let x = Tensor::ones([33], dtype).unwrap().to_device(dev).unwrap();
        assert!(x.dropout(1.0, true, &mut rng(5)).unwrap().to_f64_vec().unwrap().iter().all(|&v| v == 0.0));
    }
}

#[test]
fn device_philox_words_match_the_reference() {
    let Some(dev) = gpu() else { return };
    let Device::Cuda(ordinal) = dev else { unreachable!() };
    let d = tamer::backend::cuda::device(ordinal).unwrap();
    for seed in [0u64, 0x0123_4567_89ab_cdef, u64::MAX] {
        let words = tamer::backend::cuda::nn::dropout::philox_raw(&d, 1000, seed).unwrap();
        for g in 0..1000usize {
            let want = philox4x32_10([g as u32, 0, 0, 0], [seed as u32, (seed >> 32) as u32]);
            assert_eq!(&words[4 * g..4 * g + 4], &want, "seed {seed:x} counter {g}");
        }
    }
}

#[test]
fn dropout_drops_about_p_on_the_gpu() {
    let Some(dev) = gpu() else { return };
    let n = 1 << 20;
    for (p, seed) in [(0.1, 11u64), (0.5, 12), (0.75, 13)] {
        let x = Tensor::ones([n], DType::F32).unwrap().to_device(dev).unwrap();
        let y = x.dropout(p, true, &mut rng(seed)).unwrap().to_vec::<f32>().unwrap();
        let scale = (1.0 / (1.0 - p)) as f32;
        assert!(y.iter().all(|&v| v == 0.0 || v == scale), "p {p}: values other than 0 and {scale}");
        let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (dropped - n as f64 * p).abs() <= 3.0 * sigma,
            "p {p}: {dropped} of {n} dropped, expected {} ± {:.0}",
            n as f64 * p,
            3.0 * sigma
        );
        // Different seeds, different masks; the same seed, the same mask.
        let again = x.dropout(p, true, &mut rng(seed)).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(again, y);
        let other = x.dropout(p, true, &mut rng(seed + 100)).unwrap().to_vec::<f32>().unwrap();
        assert_ne!(other, y);
    }
}
