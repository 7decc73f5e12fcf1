//! Transfers between the host and the GPU (every dtype bit exact), the
//! device-aware constructors, gradients across devices, memory reuse, and
//! modules moved between devices (tied weights stay tied, buffers move).

use crate::harness::{gpu, randn};
use crate::parity_test;
use tamer::models::{Gpt, GptConfig};
use tamer::nn::{BatchNorm2d, Module};
use tamer::{rng, DType, Device, Tensor};

#[test]
fn round_trip_keeps_every_dtype_bit_exact() {
    let Some(dev) = gpu() else { return };
    let x = randn(&[3, 5, 7], 1);
    for dtype in [DType::F32, DType::F64, DType::BF16, DType::F16] {
        let t = x.to_dtype(dtype).unwrap();
        let back = t.to_device(dev).unwrap().to_cpu().unwrap();
        assert_eq!(back.device(), Device::Cpu);
        assert_eq!(t.to_f64_vec().unwrap(), back.to_f64_vec().unwrap(), "{dtype}");
    }
    let ids = Tensor::from_indices(&[3, -1, 7, i64::MAX]);
    assert_eq!(ids.to_device(dev).unwrap().to_vec::<i64>().unwrap(), vec![3, -1, 7, i64::MAX]);
}

parity_test!(zeros_and_full_like_stay_on_the_device, 0.0, 0.0, |dev| {
    let x = randn(&[3, 3], 5).to_device(dev)?;
    let z = x.zeros_like()?;
    let f = x.full_like(2.5)?;
    assert_eq!(z.device(), dev);
    assert_eq!(f.device(), dev);
    Ok(vec![z, f])
});

#[test]
fn gradients_flow_back_across_devices() {
    let Some(dev) = gpu() else { return };
    let w = randn(&[4], 6).variable();
    let loss = w.to_device(dev).unwrap().square().unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let gw = g.get(&w).unwrap();
    assert_eq!(gw.device(), Device::Cpu);
    let expect: Vec<f32> = w.to_vec::<f32>().unwrap().iter().map(|v| 2.0 * v).collect();
    assert_eq!(gw.to_vec::<f32>().unwrap(), expect);
}

#[test]
fn memory_is_reused_across_steps() {
    let Some(dev) = gpu() else { return };
    let Device::Cuda(ordinal) = dev else { unreachable!() };
    let x = randn(&[256, 256], 7).to_device(dev).unwrap();
    for _ in 0..3 {
        let _ = x.exp().unwrap().sum_all().unwrap().to_scalar().unwrap();
    }
    let before = tamer::backend::cuda::memory_stats(ordinal).unwrap();
    for _ in 0..20 {
        let _ = x.exp().unwrap().sum_all().unwrap().to_scalar().unwrap();
    }
    let after = tamer::backend::cuda::memory_stats(ordinal).unwrap();
    assert_eq!(
        after.raw_allocations, before.raw_allocations,
        "a steady loop should allocate nothing new: {before:?} -> {after:?}"
    );
    assert!(after.reuses > before.reuses);
}

#[test]
fn to_device_keeps_tied_weights_tied_and_moves_buffers() {
    let Some(dev) = gpu() else { return };
    let cfg = GptConfig {
        vocab_size: 11,
        block_size: 8,
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        ..GptConfig::gpt_tiny()
    };
    let gpt = Gpt::new(cfg, &mut rng(0)).unwrap();
    let before: Vec<Vec<f64>> = gpt.named_params().iter().map(|(_, p)| p.tensor().to_f64_vec().unwrap()).collect();
    gpt.to_device(dev).unwrap();
    assert_eq!(gpt.device(), dev);
    assert!(gpt.named_params().iter().all(|(_, p)| p.tensor().device() == dev));
    assert!(gpt.lm_head.weight.same(&gpt.wte.weight), "tied weights must stay one parameter");
    assert!(gpt.lm_head.weight.tensor().same_storage(&gpt.wte.weight.tensor()));
    let after: Vec<Vec<f64>> = gpt.named_params().iter().map(|(_, p)| p.tensor().to_f64_vec().unwrap()).collect();
    assert_eq!(before, after, "moving must not change values");
    gpt.to_device(dev).unwrap(); // already there: a no-op

    let bn = BatchNorm2d::new(3).unwrap();
    bn.to_device(dev).unwrap();
    for (name, b) in bn.named_buffers() {
        assert_eq!(b.tensor().device(), dev, "buffer {name}");
    }
    assert_eq!(bn.named_buffers()[2].1.tensor().to_vec::<i64>().unwrap(), vec![0]);
    bn.to_device(Device::Cpu).unwrap();
    assert!(bn
        .named_params()
        .iter()
        .chain(&bn.named_buffers())
        .all(|(_, p)| p.tensor().device() == Device::Cpu));
}
