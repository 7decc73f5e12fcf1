//! layer_norm: forward and backward with and without weight and bias,
//! contiguous and strided inputs.

use crate::harness::{grad, gradcheck_on_gpu, randn, randn64};
use crate::parity_test;
use tamer::{Device, Result, Tensor};

/// Forward output and the gradients of x, weight and bias (those given).
fn layer_norm_case(x: &Tensor, c: usize, with_w: bool, with_b: bool, seed: u64, dev: Device) -> Result<Vec<Tensor>> {
    let dt = x.dtype();
    let mut rng = tamer::rng(seed);
    let w = Tensor::randn([c], dt, &mut rng)?.to_device(dev)?.variable();
    let b = Tensor::randn([c], dt, &mut rng)?.to_device(dev)?.variable();
    let r = Tensor::randn(x.dims().to_vec(), dt, &mut rng)?.to_device(dev)?;
    let (wo, bo) = (with_w.then_some(&w), with_b.then_some(&b));
    let y = x.layer_norm(wo, bo, 1e-5)?;
    let g = y.mul(&r)?.sum_all()?.backward()?;
    let mut out = vec![y, grad(&g, x)?];
    if with_w {
        out.push(grad(&g, &w)?);
    }
    if with_b {
        out.push(grad(&g, &b)?);
    }
    Ok(out)
}

// dweight/dbias add up to 2000 rows in f32: compare on the partial sums' scale.
parity_test!(layer_norm_with_and_without_parameters_f32, 1e-3, 1e-4, |dev| {
    let mut out = Vec::new();
    // Short rows (warp path), a row of one, long rows (block path), and many
    // rows (the parameter gradients split over several blocks).
    for (k, dims) in [vec![4usize, 7, 33], vec![6, 1], vec![3, 2000], vec![2000, 48]].into_iter().enumerate() {
        let c = dims[dims.len() - 1];
        for (with_w, with_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let x = randn(&dims, 80 + k as u64).scale(2.0)?.to_device(dev)?.variable();
            out.extend(layer_norm_case(&x, c, with_w, with_b, 90 + k as u64, dev)?);
        }
    }
    Ok(out)
});

parity_test!(layer_norm_with_and_without_parameters_f64, 1e-11, 1e-11, |dev| {
    let mut out = Vec::new();
    for (k, dims) in [vec![5usize, 31], vec![2, 1500], vec![3000, 40]].into_iter().enumerate() {
        let c = dims[dims.len() - 1];
        for (with_w, with_b) in [(false, false), (true, true)] {
            let x = randn64(&dims, 100 + k as u64).to_device(dev)?.variable();
            out.extend(layer_norm_case(&x, c, with_w, with_b, 110 + k as u64, dev)?);
        }
    }
    Ok(out)
});

parity_test!(layer_norm_of_strided_inputs, 1e-4, 1e-4, |dev| {
    let base = randn(&[24, 10, 30], 120).to_device(dev)?;
    let t = base.permute(&[1, 0, 2])?.narrow(2, 2, 25)?.variable();
    let p = base.permute(&[2, 0, 1])?.variable(); // the normalised axis strided
    let mut out = layer_norm_case(&t, 25, true, true, 121, dev)?;
    out.extend(layer_norm_case(&p, 10, true, false, 122, dev)?);
    Ok(out)
});

// ---- gradient checks on the device --------------------------------------------
// f64 finite differences taken by re-running the CUDA kernels (`check_gradients`
// with inputs on the GPU), beside the CPU-vs-CUDA comparisons above.

#[test]
fn gradcheck_matmul_softmax_layer_norm() {
    gradcheck_on_gpu(
        "layer_norm(softmax(a @ b))",
        &[randn64(&[2, 4, 3], 4), randn64(&[3, 5], 5), randn64(&[5], 6)],
        |x| x[0].matmul(&x[1])?.softmax(-1)?.layer_norm(Some(&x[2]), None, 1e-5),
    );
}
