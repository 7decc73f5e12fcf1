//! softmax and log_softmax: forward and backward over rows of every length,
//! strided views and other axes.

use crate::harness::{grad, randn, randn64};
use crate::parity_test;
use tamer::{DType, Device, Result, Tensor};

/// softmax and log_softmax over the last axis, and their gradients through
/// `loss = Σ y ⊙ w`.
fn softmax_pair(x: &Tensor, seed: u64, dev: Device) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    for log in [false, true] {
        let y = if log { x.log_softmax(-1)? } else { x.softmax(-1)? };
        let w = Tensor::randn(x.dims().to_vec(), x.dtype(), &mut tamer::rng(seed))?.to_device(dev)?;
        let g = y.mul(&w)?.sum_all()?.backward()?;
        out.push(y);
        out.push(grad(&g, x)?);
    }
    Ok(out)
}

parity_test!(softmax_rows_of_every_length_f32, 1e-6, 1e-5, |dev| {
    let mut out = Vec::new();
    for (k, c) in [1usize, 7, 33, 1000, 1025, 5000].into_iter().enumerate() {
        let x = randn(&[5, c], 30 + k as u64).scale(3.0)?.to_device(dev)?.variable();
        out.extend(softmax_pair(&x, 40 + k as u64, dev)?);
    }
    Ok(out)
});

parity_test!(softmax_rows_of_every_length_f64, 1e-13, 1e-12, |dev| {
    let mut out = Vec::new();
    for (k, c) in [1usize, 7, 1000, 5000].into_iter().enumerate() {
        let x = randn64(&[4, c], 50 + k as u64).scale(3.0)?.to_device(dev)?.variable();
        out.extend(softmax_pair(&x, 60 + k as u64, dev)?);
    }
    Ok(out)
});

parity_test!(softmax_rows_of_fifty_thousand, 1e-7, 1e-5, |dev| {
    let x = randn(&[3, 50_000], 70).scale(4.0)?.to_device(dev)?.variable();
    softmax_pair(&x, 71, dev)
});

parity_test!(softmax_of_strided_views_and_other_axes, 1e-6, 1e-5, |dev| {
    let base = randn(&[40, 6, 9], 72).to_device(dev)?;
    // The class axis strided (a transpose), a narrowed slice, a broadcast row,
    // a scalar, and softmax along axis 0 (moved last internally).
    let t = base.permute(&[1, 2, 0])?.variable();
    let n = base.narrow(0, 3, 30)?.narrow(2, 1, 7)?.variable();
    let b = randn(&[1, 1, 9], 73).to_device(dev)?.broadcast_as([4, 5, 9])?.variable();
    let mut out = softmax_pair(&t, 74, dev)?;
    out.extend(softmax_pair(&n, 75, dev)?);
    out.extend(softmax_pair(&b, 76, dev)?);
    out.push(Tensor::scalar(2.5f32).to_device(dev)?.softmax(0)?);
    out.push(base.softmax(0)?);
    out.push(base.log_softmax(1)?);
    out.push(Tensor::zeros([0, 4], DType::F32)?.to_device(dev)?.softmax(-1)?);
    Ok(out)
});
