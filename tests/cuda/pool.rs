//! max and avg pooling forward and backward, ties, padding and NaN: CUDA
//! against the CPU, exactly (the kernels sum in the CPU's order).
//!
//! Gradients are taken with `backward_with_grad` and a seeded upstream
//! gradient on the device, so the backward kernels under test are the only
//! arithmetic between the output and the input gradient.

use crate::harness::{coarse, input, with_grads};
use crate::parity_test;
use tamer::{DType, Tensor};

// ---- pooling -------------------------------------------------------------------------

/// (N, C, H, W, kernel, stride, padding)
type PoolCase = (usize, usize, usize, usize, (usize, usize), (usize, usize), (usize, usize));
const POOL_CASES: [PoolCase; 6] = [
    (1, 1, 4, 4, (2, 2), (2, 2), (0, 0)),
    (2, 3, 5, 7, (3, 2), (1, 2), (1, 1)),
    (1, 2, 6, 5, (3, 3), (2, 1), (1, 0)),
    (2, 3, 1, 4, (1, 3), (1, 1), (0, 1)),
    (2, 2, 9, 8, (4, 5), (3, 2), (2, 2)),
    (4, 8, 33, 31, (3, 3), (2, 2), (1, 1)),
];

parity_test!(max_pool_with_ties_padding_and_nan, 0.0, 0.0, |dev| {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F64] {
        for (i, &(n, c, h, w, k, s, p)) in POOL_CASES.iter().enumerate() {
            // Coarse values tie inside most windows; a channels-last view for odd cases.
            let seed = 400 + i as u64;
            let (x, xv) = if i % 2 == 1 {
                let x = coarse(&[n, h, w, c], seed, dtype).to_device(dev)?.variable();
                let xv = x.permute(&[0, 3, 1, 2])?;
                (x, xv)
            } else {
                let x = coarse(&[n, c, h, w], seed, dtype).to_device(dev)?.variable();
                (x.clone(), x)
            };
            let (y, idx) = xv.max_pool2d_with_indices(k, s, p)?;
            out.push(idx);
            out.extend(with_grads(y, seed + 50, &[&x])?);
        }
        // NaN wins (the last one of a window), an all -inf window reports its first tap.
        let mut v = vec![1.0f64; 2 * 16];
        v[5] = f64::NAN;
        v[6] = f64::NAN;
        v[16..].fill(f64::NEG_INFINITY);
        let x = Tensor::from_vec(v, [2, 1, 4, 4])?.to_dtype(dtype)?.to_device(dev)?;
        let (y, idx) = x.max_pool2d_with_indices((3, 3), (1, 1), (1, 1))?;
        out.push(y);
        out.push(idx);
    }
    Ok(out)
});

parity_test!(avg_pool_both_divisors_forward_and_backward, 0.0, 0.0, |dev| {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F64] {
        for (i, &(n, c, h, w, k, s, p)) in POOL_CASES.iter().enumerate() {
            let x = input(&[n, c, w, h], 500 + i as u64, dtype).to_device(dev)?.variable();
            let xv = x.transpose(2, 3)?; // [n, c, h, w], strided
            for include in [true, false] {
                out.extend(with_grads(xv.avg_pool2d(k, s, p, include)?, 550 + i as u64, &[&x])?);
            }
        }
    }
    Ok(out)
});
