//! Autocast on the GPU: products run in bf16/f16 with f32 results and
//! gradients, close to the CPU's f32 (where autocast changes nothing: see
//! tests/integration/autocast.rs).

use crate::harness::{gpu, randn};
use crate::parity_test;
use tamer::nn::{Linear, Module, MultiHeadSelfAttention};
use tamer::optim::GradScaler;
use tamer::{autocast, DType, Device, Result, Tensor};

// On the GPU the product runs in bf16 (inputs and output rounded to 8
// significant bits); the CPU run is f32 (autocast does nothing there). The
// gradients come back f32. Each output is divided by √(its sum's length) so
// its entries are O(1) and one absolute tolerance fits all.
parity_test!(autocast_bf16_matmul_is_close_to_f32, 3e-2, 2e-2, |dev| {
    let a = randn(&[2, 33, 64], 30).to_device(dev)?.variable();
    let b = randn(&[64, 40], 31).to_device(dev)?.variable();
    let c = autocast(DType::BF16, || a.matmul(&b))?;
    assert_eq!((c.dtype(), c.device()), (DType::F32, dev));
    let w = randn(c.dims(), 32).to_device(dev)?;
    let grads = c.mul(&w)?.sum_all()?.backward()?;
    let (ga, gb) = (grads.get(&a).cloned().unwrap(), grads.get(&b).cloned().unwrap());
    assert_eq!((ga.dtype(), gb.dtype()), (DType::F32, DType::F32));
    Ok(vec![c.scale(1.0 / 8.0)?, ga.scale(1.0 / 40f64.sqrt())?, gb.scale(1.0 / 66f64.sqrt())?])
});

#[test]
fn autocast_rounds_cuda_products_to_bf16() {
    let Some(dev) = gpu() else { return };
    let a = randn(&[8, 16], 33).to_device(dev).unwrap();
    let b = randn(&[16, 4], 34).to_device(dev).unwrap();
    let (plain, mixed) = (a.matmul(&b).unwrap(), autocast(DType::BF16, || a.matmul(&b)).unwrap());
    crate::harness::assert_on("autocast matmul", dev, &[plain.clone(), mixed.clone()]);
    let (plain, mixed) = (plain.to_vec::<f32>().unwrap(), mixed.to_vec::<f32>().unwrap());
    assert!(mixed.iter().all(|x| x.to_bits() & 0xffff == 0), "every autocast value is a bf16 number");
    assert_ne!(plain, mixed);
    // f64 operands are left alone.
    let a64 = a.to_dtype(DType::F64).unwrap();
    let b64 = b.to_dtype(DType::F64).unwrap();
    assert_eq!(autocast(DType::BF16, || a64.matmul(&b64)).unwrap().dtype(), DType::F64);
}

/// A tiny attention model (Linear in, causal self-attention on the flash
/// kernels, Linear out) on `dev`: the loss under autocast to `half`, its
/// gradients (of the loss times the scaler's scale, if given) and the parameters.
pub fn tiny_model_step(dev: Device, half: DType, scaler: Option<&GradScaler>) -> Result<(Tensor, tamer::GradStore, Vec<Tensor>)> {
    let mut r = tamer::rng(40);
    let inp = Linear::new(12, 64, true, &mut r)?;
    let attn = MultiHeadSelfAttention::new(64, 2, true, true, 0.0, 0.0, &mut r)?;
    let out = Linear::new(64, 5, true, &mut r)?;
    let params: Vec<_> = inp.params().into_iter().chain(attn.params()).chain(out.params()).collect();
    for p in &params {
        p.replace(p.tensor().to_device(dev)?);
    }
    let x = randn(&[3, 19, 12], 41).to_device(dev)?;
    let y = randn(&[3, 19, 5], 42).to_device(dev)?;
    let loss = autocast(half, || -> Result<Tensor> {
        let h = inp.forward(&x)?.gelu()?;
        let h = attn.forward(&h)?.add(&h)?;
        out.forward(&h)?.sub(&y)?.square()?.mean_all()
    })?;
    let grads = match scaler {
        Some(s) => s.scale(&loss)?.backward()?,
        None => loss.backward()?,
    };
    Ok((loss, grads, params.iter().map(|p| p.tensor()).collect()))
}

pub fn all_finite(t: &Tensor) -> bool {
    t.to_f64_vec().unwrap().iter().all(|v| v.is_finite())
}

#[test]
fn tiny_model_step_under_autocast_has_finite_f32_gradients() {
    let Some(dev) = gpu() else { return };
    let (cpu_loss, _, _) = tiny_model_step(Device::Cpu, DType::BF16, None).unwrap();
    let (loss, grads, params) = tiny_model_step(dev, DType::BF16, None).unwrap();
    let (l, lc) = (loss.to_scalar().unwrap(), cpu_loss.to_scalar().unwrap());
    assert!((l - lc).abs() <= 2e-2 * lc.abs() + 1e-3, "bf16 loss {l} vs f32 loss {lc}");
    for p in &params {
        let g = grads.get(p).expect("every parameter has a gradient");
        assert_eq!((g.dtype(), g.device(), g.dims()), (DType::F32, dev, p.dims()));
        assert!(all_finite(g));
    }
}
