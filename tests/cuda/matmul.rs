//! Matrix products on CUDA: our kernels against the CPU, against the naive
//! reference kernel and against cuBLAS.
//!
//! f32 tolerances allow for a different summation order over k (up to 257
//! terms of randn products); bf16/f16 results are compared after both sides
//! rounded the same f32-accumulated product once to the 16-bit type.

use crate::harness::{assert_close, assert_on, gpu, grad, randn, randn64};
use crate::parity_test;
use tamer::backend::cuda::matmul::{with_backend, MatmulBackend};
use tamer::{DType, Device, Result, Tensor};

const SIZES: [(usize, usize, usize); 4] = [(1, 1, 1), (7, 13, 5), (64, 64, 64), (129, 65, 257)];

/// `a @ b` for every `(m, k, n)` of SIZES in `dtype`, inputs seeded by size.
fn products(dev: Device, f64_inputs: bool) -> Result<Vec<Tensor>> {
    let mut out = vec![];
    for (i, &(m, k, n)) in SIZES.iter().enumerate() {
        let (a, b) = if f64_inputs {
            (randn64(&[m, k], 10 + i as u64), randn64(&[k, n], 20 + i as u64))
        } else {
            (randn(&[m, k], 10 + i as u64), randn(&[k, n], 20 + i as u64))
        };
        out.push(a.to_device(dev)?.matmul(&b.to_device(dev)?)?);
    }
    Ok(out)
}

parity_test!(f32_sizes_match_the_cpu, 1e-5, 1e-4, |dev| { products(dev, false) });
parity_test!(f64_sizes_match_the_cpu, 1e-12, 1e-12, |dev| { products(dev, true) });

/// Transposed, narrowed (unaligned, so no vector loads) and offset operands.
fn strided(dev: Device, f64_inputs: bool) -> Result<Vec<Tensor>> {
    let r = |d: &[usize], s: u64| if f64_inputs { randn64(d, s) } else { randn(d, s) };
    let (m, k, n) = (129, 67, 130);
    let at = r(&[k, m], 1).to_device(dev)?.t()?; // [m, k], m-contiguous
    let bt = r(&[n, k], 2).to_device(dev)?.t()?; // [k, n], k-contiguous
    let a = r(&[m, k], 3).to_device(dev)?;
    let b = r(&[k, n], 4).to_device(dev)?;
    let a_narrow = r(&[m, k + 3], 5).to_device(dev)?.narrow(1, 1, k)?; // row stride k+3, offset 1
    let b_narrow = r(&[k + 2, n + 1], 6).to_device(dev)?.narrow(0, 2, k)?.narrow(1, 1, n)?;
    // Every other column: no unit stride on A at all.
    let a_step = r(&[m, 2 * k], 7).to_device(dev)?.reshape([m, k, 2])?.narrow(2, 0, 1)?.reshape([m, k])?;
    Ok(vec![
        at.matmul(&b)?,
        a.matmul(&bt)?,
        at.matmul(&bt)?,
        a_narrow.matmul(&b_narrow)?,
        a_narrow.matmul(&bt)?,
        at.matmul(&b_narrow)?,
        a_step.matmul(&b)?,
        // x @ xᵀ through one storage.
        a.matmul(&a.t()?)?,
    ])
}

parity_test!(f32_transposed_and_strided_operands, 1e-5, 1e-4, |dev| { strided(dev, false) });
parity_test!(f64_transposed_and_strided_operands, 1e-12, 1e-12, |dev| { strided(dev, true) });

/// Batch dims broadcast both ways, a shared right operand (folded into one
/// taller product), permuted batch axes and size-1 batch dims.
fn batched(dev: Device, f64_inputs: bool) -> Result<Vec<Tensor>> {
    let r = |d: &[usize], s: u64| if f64_inputs { randn64(d, s) } else { randn(d, s) };
    let x = r(&[3, 1, 33, 17], 1).to_device(dev)?;
    let y = r(&[4, 17, 9], 2).to_device(dev)?;
    let w = r(&[17, 40], 3).to_device(dev)?;
    let xb = r(&[2, 5, 33, 17], 4).to_device(dev)?;
    let perm = r(&[33, 2, 17, 5], 5).to_device(dev)?.permute(&[1, 3, 0, 2])?; // [2, 5, 33, 17], strided batch
    let v = r(&[1, 1, 17, 6], 6).to_device(dev)?;
    Ok(vec![
        x.matmul(&y)?,    // [3, 1] x [4] -> [3, 4, 33, 9]
        xb.matmul(&w)?,   // shared W: one [330, 17] @ [17, 40] product
        perm.matmul(&w)?, // shared W, batch axes that do not merge
        perm.matmul(&xb.transpose(-1, -2)?)?,
        xb.matmul(&v)?, // size-1 batch dims broadcast
        r(&[1, 5, 7], 7).to_device(dev)?.matmul(&r(&[1, 7, 3], 8).to_device(dev)?)?,
    ])
}

parity_test!(f32_batched_with_broadcast_batch_dims, 1e-5, 1e-4, |dev| { batched(dev, false) });
parity_test!(f64_batched_with_broadcast_batch_dims, 1e-12, 1e-12, |dev| { batched(dev, true) });

parity_test!(empty_and_k_zero_products, 0.0, 0.0, |dev| {
    let z = |d: &[usize]| Tensor::zeros(d.to_vec(), DType::F32).and_then(|t| t.to_device(dev));
    let k0 = z(&[3, 0])?.matmul(&z(&[0, 4])?)?; // zeros [3, 4]
    let k0_batched = z(&[2, 5, 0])?.matmul(&z(&[2, 0, 3])?)?;
    let m0 = z(&[0, 5])?.matmul(&randn(&[5, 3], 1).to_device(dev)?)?;
    let k0_f64 = Tensor::zeros([4, 0], DType::F64)?
        .to_device(dev)?
        .matmul(&Tensor::zeros([0, 2], DType::F64)?.to_device(dev)?)?;
    Ok(vec![k0, k0_batched, m0, k0_f64])
});

parity_test!(vector_operands_promote_like_torch, 1e-5, 1e-4, |dev| {
    let v = randn(&[37], 1).to_device(dev)?;
    let m = randn(&[37, 20], 2).to_device(dev)?;
    let batched = randn(&[3, 20, 37], 3).to_device(dev)?;
    Ok(vec![v.matmul(&m)?, m.t()?.matmul(&v)?, batched.matmul(&v)?])
});

/// Gradients of both operands through `backward_with_grad` (no loss reduction
/// needed): 2-D, transposed operands, and x[B, T, C] @ W[C, D].
fn grads(dev: Device, f64_inputs: bool) -> Result<Vec<Tensor>> {
    let r = |d: &[usize], s: u64| if f64_inputs { randn64(d, s) } else { randn(d, s) };
    let mut out = vec![];
    // 2-D
    let a = r(&[65, 33], 1).to_device(dev)?.variable();
    let b = r(&[33, 130], 2).to_device(dev)?.variable();
    let y = a.matmul(&b)?;
    let g = y.backward_with_grad(&r(&[65, 130], 3).to_device(dev)?)?;
    out.extend([y, g.get(&a).cloned().expect("grad a"), g.get(&b).cloned().expect("grad b")]);
    // Aᵀ @ Bᵀ with the variables stored transposed.
    let at = r(&[33, 65], 4).to_device(dev)?.variable();
    let bt = r(&[130, 33], 5).to_device(dev)?.variable();
    let y = at.t()?.matmul(&bt.t()?)?;
    let g = y.backward_with_grad(&r(&[65, 130], 6).to_device(dev)?)?;
    out.extend([y, g.get(&at).cloned().expect("grad at"), g.get(&bt).cloned().expect("grad bt")]);
    // A shared weight: dW = x[B·T, C]ᵀ @ g[B·T, D].
    let x = r(&[3, 17, 24], 7).to_device(dev)?.variable();
    let w = r(&[24, 40], 8).to_device(dev)?.variable();
    let y = x.matmul(&w)?;
    let g = y.backward_with_grad(&r(&[3, 17, 40], 9).to_device(dev)?)?;
    out.extend([y, g.get(&x).cloned().expect("grad x"), g.get(&w).cloned().expect("grad w")]);
    Ok(out)
}

parity_test!(f32_gradients_of_both_operands, 1e-5, 1e-4, |dev| { grads(dev, false) });
parity_test!(f64_gradients_of_both_operands, 1e-12, 1e-12, |dev| { grads(dev, true) });

// Needs the CUDA sum reduction as well (sum_to_shape over the broadcast batch dim).
parity_test!(f32_gradients_through_a_broadcast_batch, 1e-5, 1e-4, |dev| {
    let a = randn(&[1, 20, 16], 1).to_device(dev)?.variable();
    let b = randn(&[4, 16, 12], 2).to_device(dev)?.variable();
    let y = a.matmul(&b)?;
    let g = y.backward_with_grad(&randn(&[4, 20, 12], 3).to_device(dev)?)?;
    Ok(vec![g.get(&a).cloned().expect("grad a"), g.get(&b).cloned().expect("grad b")])
});

/// The fused linear op `x·Wᵀ + b` and its three gradients, with and without a
/// bias, on a `[B, T, C]` input and on a transposed (strided) weight.
fn linear_cases(dev: Device, f64_inputs: bool) -> Result<Vec<Tensor>> {
    let r = |d: &[usize], s: u64| if f64_inputs { randn64(d, s) } else { randn(d, s) };
    let x = r(&[3, 17, 24], 1).to_device(dev)?.variable();
    let w = r(&[40, 24], 2).to_device(dev)?.variable();
    let b = r(&[40], 3).to_device(dev)?.variable();
    let y = tamer::nn::functional::linear(&x, &w, Some(&b))?;
    let g = y.backward_with_grad(&r(&[3, 17, 40], 4).to_device(dev)?)?;
    let mut out = vec![y, grad(&g, &x)?, grad(&g, &w)?, grad(&g, &b)?];
    let wt = r(&[24, 33], 5).to_device(dev)?.variable(); // used as its transpose [33, 24]
    let y = tamer::nn::functional::linear(&x, &wt.t()?, None)?;
    let g = y.backward_with_grad(&r(&[3, 17, 33], 6).to_device(dev)?)?;
    out.extend([y, grad(&g, &x)?, grad(&g, &wt)?]);
    Ok(out)
}

parity_test!(f32_fused_linear_and_its_gradients, 1e-5, 1e-4, |dev| { linear_cases(dev, false) });
parity_test!(f64_fused_linear_and_its_gradients, 1e-12, 1e-12, |dev| { linear_cases(dev, true) });

// ---- bf16 / f16 ----------------------------------------------------------------

/// `a @ b` in `dtype` on the GPU; on the CPU (which has no 16-bit matmul) the
/// same product of the same rounded inputs in f32, rounded once to `dtype`.
/// Both returned as f32.
fn half_product(dev: Device, dtype: DType, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if dev.is_cuda() {
        a.to_device(dev)?.matmul(&b.to_device(dev)?)?.to_dtype(DType::F32)
    } else {
        a.to_dtype(DType::F32)?.matmul(&b.to_dtype(DType::F32)?)?.to_dtype(dtype)?.to_dtype(DType::F32)
    }
}

fn half_cases(dev: Device, dtype: DType) -> Result<Vec<Tensor>> {
    let h = |d: &[usize], s: u64| randn(d, s).to_dtype(dtype);
    let mut out = vec![];
    for (i, &(m, k, n)) in SIZES.iter().enumerate() {
        out.push(half_product(dev, dtype, &h(&[m, k], 30 + i as u64)?, &h(&[k, n], 40 + i as u64)?)?);
    }
    let (m, k, n) = (130, 72, 136);
    let a = h(&[m, k], 1)?;
    let b = h(&[k, n], 2)?;
    let at = h(&[k, m], 3)?.t()?; // m-contiguous: staged [k][m], ldmatrix.trans
    let bt = h(&[n, k], 4)?.t()?; // k-contiguous: staged [n][k]
    let a_odd = h(&[m, k + 1], 5)?.narrow(1, 1, k)?; // unaligned rows: scalar loads
    let b_odd = h(&[k, n + 3], 6)?.narrow(1, 3, n)?;
    for (x, y) in [(&a, &b), (&at, &b), (&a, &bt), (&at, &bt), (&a_odd, &b_odd), (&a_odd, &bt)] {
        out.push(half_product(dev, dtype, x, y)?);
    }
    // Ragged edges in every dim (k not a multiple of 8 or 32), odd n.
    out.push(half_product(dev, dtype, &h(&[131, 45], 7)?, &h(&[45, 67], 8)?)?);
    // Batched with a broadcast left operand.
    out.push(half_product(dev, dtype, &h(&[1, 40, 24], 9)?, &h(&[3, 24, 56], 10)?)?);
    Ok(out)
}

parity_test!(bf16_tensor_cores_match_f32_rounded_once, 1e-2, 1e-2, |dev| { half_cases(dev, DType::BF16) });
parity_test!(f16_tensor_cores_match_f32_rounded_once, 1e-3, 2e-3, |dev| { half_cases(dev, DType::F16) });

// Backward in bf16 on the GPU against f32 on the CPU from the same rounded values.
parity_test!(bf16_gradients_of_both_operands, 1e-2, 1e-2, |dev| {
    let h = |d: &[usize], s: u64| randn(d, s).to_dtype(DType::BF16);
    let (a, b, g) = (h(&[40, 48], 1)?, h(&[48, 24], 2)?, h(&[40, 24], 3)?);
    let (a, b, g) = if dev.is_cuda() {
        (a.to_device(dev)?.variable(), b.to_device(dev)?.variable(), g.to_device(dev)?)
    } else {
        (a.to_dtype(DType::F32)?.variable(), b.to_dtype(DType::F32)?.variable(), g.to_dtype(DType::F32)?)
    };
    let grads = a.matmul(&b)?.backward_with_grad(&g)?;
    let round = |t: &Tensor| t.to_dtype(DType::BF16)?.to_dtype(DType::F32);
    Ok(vec![round(grads.get(&a).expect("grad a"))?, round(grads.get(&b).expect("grad b"))?])
});

// ---- our kernels vs the naive kernel vs cuBLAS, all on the GPU -------------------

/// Relative Frobenius distance ‖x − y‖ / ‖y‖.
fn rel_err(x: &Tensor, y: &Tensor) -> f64 {
    let a = x.to_cpu().and_then(|t| t.to_f64_vec()).expect("values");
    let b = y.to_cpu().and_then(|t| t.to_f64_vec()).expect("values");
    let num: f64 = a.iter().zip(&b).map(|(p, q)| (p - q) * (p - q)).sum();
    let den: f64 = b.iter().map(|q| q * q).sum();
    (num / den.max(1e-300)).sqrt()
}

#[test]
fn own_kernels_and_cublas_agree_with_the_naive_kernel() {
    let Some(dev) = gpu() else { return };
    let cases: [(DType, f64); 4] = [(DType::F32, 1e-5), (DType::F64, 1e-13), (DType::BF16, 1e-2), (DType::F16, 2e-3)];
    for (dtype, tol) in cases {
        for (m, k, n, transposed) in [(256, 256, 256, false), (300, 129, 77, true), (1, 64, 1, false)] {
            let a = randn(&[m, k], 1).to_dtype(dtype).and_then(|t| t.to_device(dev)).unwrap();
            let b = randn(&[k, n], 2).to_dtype(dtype).and_then(|t| t.to_device(dev)).unwrap();
            let (a, b) = if transposed {
                (
                    a.t().unwrap().contiguous().unwrap().t().unwrap(),
                    b.t().unwrap().contiguous().unwrap().t().unwrap(),
                )
            } else {
                (a, b)
            };
            let naive = with_backend(MatmulBackend::Naive, || a.matmul(&b)).unwrap();
            let own = with_backend(MatmulBackend::Own, || a.matmul(&b)).unwrap();
            let what = format!("{dtype} [{m}, {k}] @ [{k}, {n}]{}", if transposed { " (transposed)" } else { "" });
            assert_on(&what, dev, &[own.clone(), naive.clone()]);
            let e = rel_err(&own, &naive);
            assert!(e <= tol, "{what}: own vs naive relative error {e:.3e} > {tol:e}");
            match with_backend(MatmulBackend::Cublas, || a.matmul(&b)) {
                Ok(blas) => {
                    assert_on(&what, dev, std::slice::from_ref(&blas));
                    let e = rel_err(&blas, &naive);
                    assert!(e <= tol, "{what}: cuBLAS vs naive relative error {e:.3e} > {tol:e}");
                }
                Err(err) if err.to_string().contains("libcublas.so was not found") => {
                    crate::harness::skip(&format!("the cuBLAS comparison: {err}"));
                }
                Err(err) => panic!("{what}: cuBLAS failed: {err}"),
            }
        }
    }
}

#[test]
fn naive_kernel_matches_the_cpu_on_strided_batches() {
    let Some(dev) = gpu() else { return };
    let cpu = batched(Device::Cpu, false).unwrap();
    let cuda = with_backend(MatmulBackend::Naive, || batched(dev, false)).unwrap();
    assert_on("naive batched", dev, &cuda);
    for (i, (x, y)) in cpu.iter().zip(&cuda).enumerate() {
        assert_close(&format!("naive batched output {i}"), x, y, 1e-5, 1e-4);
    }
}

#[test]
fn integer_operands_are_an_error_not_a_launch() {
    let Some(dev) = gpu() else { return };
    let i = Tensor::from_indices(&[1, 2, 3, 4]).reshape([2, 2]).and_then(|t| t.to_device(dev)).unwrap();
    let err = i.matmul(&i).unwrap_err().to_string();
    assert!(err.contains("matmul"), "{err}");
}
