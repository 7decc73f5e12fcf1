//! conv2d forward and gradients, f32 and f64, NCHW and channels-last inputs:
//! CUDA against the CPU (through a matmul, so with the usual tolerances).
//!
//! Gradients are taken with `backward_with_grad` and a seeded upstream
//! gradient on the device, so the backward kernels under test are the only
//! arithmetic between the output and the input gradient.

use crate::harness::{gradcheck_on_gpu, input, randn64, with_grads};
use crate::parity_test;
use tamer::{DType, Device, Result, Tensor};

// ---- conv2d --------------------------------------------------------------------------

/// (N, C, H, W, O, kernel, stride, padding)
type ConvCase = (usize, usize, usize, usize, usize, (usize, usize), (usize, usize), (usize, usize));
const CONV_CASES: [ConvCase; 6] = [
    (2, 3, 5, 4, 2, (3, 2), (1, 1), (1, 1)),
    (2, 2, 7, 6, 3, (3, 3), (2, 3), (2, 1)),
    (3, 4, 4, 5, 5, (1, 1), (1, 1), (0, 0)), // pointwise: no im2col
    (2, 3, 6, 6, 2, (1, 1), (2, 2), (1, 0)),
    (1, 2, 2, 2, 2, (4, 4), (1, 1), (1, 1)), // the kernel covers the padded input
    (4, 3, 33, 31, 8, (3, 3), (1, 1), (1, 1)),
];

fn conv_case(dev: Device, dtype: DType, c: &ConvCase, seed: u64, channels_last: bool) -> Result<Vec<Tensor>> {
    let &(n, ci, h, w, o, k, s, p) = c;
    let (x, xv) = if channels_last {
        // Stored [N, H, W, C], viewed as [N, C, H, W].
        let x = input(&[n, h, w, ci], seed, dtype).to_device(dev)?.variable();
        let xv = x.permute(&[0, 3, 1, 2])?;
        (x, xv)
    } else {
        let x = input(&[n, ci, h, w], seed, dtype).to_device(dev)?.variable();
        (x.clone(), x)
    };
    let wt = input(&[o, ci, k.0, k.1], seed + 1, dtype).to_device(dev)?.variable();
    let b = input(&[o], seed + 2, dtype).to_device(dev)?.variable();
    let y = xv.conv2d(&wt, Some(&b), s, p)?;
    let mut out = with_grads(y, seed + 3, &[&x, &wt, &b])?;
    out.push(xv.conv2d(&wt, None, s, p)?);
    Ok(out)
}

parity_test!(conv2d_f32_forward_and_gradients, 1e-4, 1e-4, |dev| {
    let mut out = Vec::new();
    for (i, c) in CONV_CASES.iter().enumerate() {
        out.extend(conv_case(dev, DType::F32, c, 200 + 10 * i as u64, i % 2 == 1)?);
    }
    Ok(out)
});

parity_test!(conv2d_f64_forward_and_gradients, 1e-11, 1e-11, |dev| {
    let mut out = Vec::new();
    for (i, c) in CONV_CASES.iter().enumerate() {
        out.extend(conv_case(dev, DType::F64, c, 300 + 10 * i as u64, i % 2 == 0)?);
    }
    Ok(out)
});

// ---- gradient checks on the device --------------------------------------------
// f64 finite differences taken by re-running the CUDA kernels (`check_gradients`
// with inputs on the GPU), beside the CPU-vs-CUDA comparisons above.

#[test]
fn gradcheck_conv2d() {
    gradcheck_on_gpu("conv2d", &[randn64(&[1, 2, 5, 5], 12), randn64(&[3, 2, 3, 3], 13)], |x| {
        x[0].conv2d(&x[1], None, (1, 1), (1, 1))
    });
}
