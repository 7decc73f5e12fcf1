//! cross_entropy: forward and backward with label smoothing, ignored targets
//! and every reduction, strided logits, and out-of-range targets.

use crate::harness::{gpu, grad, gradcheck_on_gpu, randn, randn64};
use crate::parity_test;
use tamer::ops::nn::cross_entropy::{CrossEntropyOptions, Reduction};
use tamer::{Device, Result, Tensor};

/// Targets for `rows` rows of `c` classes; with `ignore`, every fifth row is -100.
pub fn targets(rows: usize, c: usize, seed: u64, ignore: bool) -> Result<Tensor> {
    let class = |r: usize| ((r as u64 * 7919 + seed * 31) % c as u64) as i64;
    let t: Vec<i64> = (0..rows).map(|r| if ignore && r % 5 == 3 { -100 } else { class(r) }).collect();
    Tensor::from_vec(t, [rows])
}

fn cross_entropy_case(logits: &Tensor, t: &Tensor, opts: CrossEntropyOptions, seed: u64, dev: Device) -> Result<Vec<Tensor>> {
    let loss = logits.cross_entropy(t, opts)?;
    let scalar = if opts.reduction == Reduction::None {
        let w = Tensor::randn(loss.dims().to_vec(), loss.dtype(), &mut tamer::rng(seed))?.to_device(dev)?;
        loss.mul(&w)?.sum_all()?
    } else {
        loss.clone()
    };
    let g = scalar.backward()?;
    Ok(vec![loss, grad(&g, logits)?])
}

fn cross_entropy_all(dims: &[usize], f64s: bool, seed: u64, dev: Device) -> Result<Vec<Tensor>> {
    let (rows, c) = (dims[..dims.len() - 1].iter().product::<usize>(), dims[dims.len() - 1]);
    let x = if f64s { randn64(dims, seed) } else { randn(dims, seed) };
    let x = x.scale(3.0)?.to_device(dev)?.variable();
    let t = targets(rows, c, seed, true)?.reshape(dims[..dims.len() - 1].to_vec())?.to_device(dev)?;
    let mut out = Vec::new();
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for smoothing in [0.0, 0.1] {
            let opts = CrossEntropyOptions::default()
                .with_ignore_index(-100)
                .with_label_smoothing(smoothing)
                .with_reduction(reduction);
            out.extend(cross_entropy_case(&x, &t, opts, seed + 1, dev)?);
        }
    }
    // Without an ignore index (every target valid).
    let valid = targets(rows, c, seed + 2, false)?.reshape(dims[..dims.len() - 1].to_vec())?.to_device(dev)?;
    out.extend(cross_entropy_case(&x, &valid, CrossEntropyOptions::default(), seed + 3, dev)?);
    Ok(out)
}

parity_test!(cross_entropy_smoothing_ignore_and_reductions_f32, 1e-5, 1e-4, |dev| {
    let mut out = cross_entropy_all(&[37, 5], false, 130, dev)?;
    out.extend(cross_entropy_all(&[4, 6, 1000], false, 131, dev)?);
    out.extend(cross_entropy_all(&[9, 3000], false, 132, dev)?);
    out.extend(cross_entropy_all(&[2, 1], false, 133, dev)?);
    Ok(out)
});

parity_test!(cross_entropy_smoothing_ignore_and_reductions_f64, 1e-12, 1e-11, |dev| {
    let mut out = cross_entropy_all(&[23, 7], true, 140, dev)?;
    out.extend(cross_entropy_all(&[5, 2000], true, 141, dev)?);
    Ok(out)
});

parity_test!(cross_entropy_of_strided_logits, 1e-5, 1e-4, |dev| {
    // Logits [N, C] as the transpose of a [C, N] buffer; targets strided too.
    let x = randn(&[11, 40], 150).scale(2.0)?.to_device(dev)?.t()?.variable();
    let t = targets(80, 11, 151, true)?.reshape([40, 2])?.to_device(dev)?.narrow(1, 1, 1)?.reshape([40])?;
    let opts = CrossEntropyOptions::default().with_ignore_index(-100).with_label_smoothing(0.1);
    let mut out = cross_entropy_case(&x, &t, opts, 152, dev)?;
    out.extend(cross_entropy_case(&x, &t, opts.with_reduction(Reduction::None), 153, dev)?);
    Ok(out)
});

#[test]
fn cross_entropy_rejects_an_out_of_range_target_on_cuda() {
    let Some(dev) = gpu() else { return };
    let logits = randn(&[4, 5], 160).to_device(dev).unwrap();
    for bad in [5i64, -1, 99] {
        let t = Tensor::from_vec(vec![0i64, 1, bad, 2], [4]).unwrap().to_device(dev).unwrap();
        let opts = CrossEntropyOptions::default().with_ignore_index(-100);
        let err = logits.cross_entropy(&t, opts).unwrap_err().to_string();
        assert!(
            err.contains(&format!("target {bad}")) && err.contains("5 classes") && err.contains("row 2"),
            "{err}"
        );
    }
    // The ignore index itself is fine, and the error leaves the device usable.
    let t = Tensor::from_vec(vec![0i64, -100, 4, 2], [4]).unwrap().to_device(dev).unwrap();
    let loss = logits.cross_entropy(&t, CrossEntropyOptions::default().with_ignore_index(-100)).unwrap();
    assert!(loss.to_scalar().unwrap().is_finite());
}

// ---- gradient checks on the device --------------------------------------------
// f64 finite differences taken by re-running the CUDA kernels (`check_gradients`
// with inputs on the GPU), beside the CPU-vs-CUDA comparisons above.

#[test]
fn gradcheck_cross_entropy_with_label_smoothing() {
    let targets = Tensor::from_indices(&[0, 3, 2, 1]);
    gradcheck_on_gpu("cross_entropy", &[randn64(&[4, 5], 7)], |x| {
        let t = targets.to_device(x[0].device())?;
        x[0].cross_entropy(
            &t,
            tamer::ops::nn::cross_entropy::CrossEntropyOptions {
                label_smoothing: 0.1,
                ..Default::default()
            },
        )
    });
}
