//! Optimizer behaviour on the GPU: state on the device and through the host,
//! state following a module between devices, the global gradient norm,
//! clipping and accumulation (the step kernels themselves are in
//! optim_fused.rs).

use crate::harness::{assert_all_close, assert_close, gpu, randn, randn64};
use crate::optim_fused::{grads, params, ATOL, RTOL};
use crate::parity_test;
use tamer::nn::{Linear, Module, Param};
use tamer::optim::{clip_grad_norm, grad_norm, Adam, AdamConfig, GradAccumulator, Optimizer, OptimizerState, Sgd, SgdConfig};
use tamer::{rng, DType, Device, GradStore, Result, Tensor};

/// The state after two GPU steps goes to the host (and a file), then into a
/// fresh GPU optimizer and a fresh CPU optimizer over copies of the
/// parameters: the next step must agree with the original's (bit for bit on
/// the same device).
#[test]
fn optimizer_state_round_trips_through_the_host() {
    let Some(dev) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("tamer-cuda-optim-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    type Make = fn(Vec<(String, Param)>) -> Result<Box<dyn Optimizer>>;
    let makers: [(&str, Make); 2] = [
        ("adamw-amsgrad", |n| Ok(Box::new(Adam::new(n, AdamConfig::adamw(1e-2).amsgrad(true))?))),
        ("sgd-nesterov", |n| {
            Ok(Box::new(Sgd::new(n, SgdConfig::new(0.05).momentum(0.9).nesterov(true))?))
        }),
    ];
    for (what, make) in makers {
        let named = params(dev).unwrap();
        let mut opt = make(named.clone()).unwrap();
        for k in 0..2 {
            opt.step(&grads(&named, k, dev).unwrap()).unwrap();
        }
        let state = opt.state_dict().unwrap();
        assert!(!state.tensors.is_empty(), "{what}: no state");
        assert!(
            state.tensors.iter().all(|(_, t)| t.device() == Device::Cpu),
            "{what}: state_dict must hold host copies"
        );
        let path = dir.join(format!("{what}.safetensors"));
        state.save(&path).unwrap();
        let loaded = OptimizerState::load(&path).unwrap();
        let snapshot: Vec<Tensor> = named.iter().map(|(_, p)| p.tensor().to_cpu().unwrap()).collect();
        let copy_on = |d: Device| -> Vec<(String, Param)> {
            named
                .iter()
                .zip(&snapshot)
                .map(|((n, _), t)| (n.clone(), Param::new(t.to_device(d).unwrap())))
                .collect()
        };

        opt.step(&grads(&named, 2, dev).unwrap()).unwrap();
        let gpu_copy = copy_on(dev);
        let mut resumed = make(gpu_copy.clone()).unwrap();
        resumed.load_state_dict(&loaded).unwrap();
        resumed.step(&grads(&gpu_copy, 2, dev).unwrap()).unwrap();
        let cpu_copy = copy_on(Device::Cpu);
        let mut on_cpu = make(cpu_copy.clone()).unwrap();
        on_cpu.load_state_dict(&loaded).unwrap();
        on_cpu.step(&grads(&cpu_copy, 2, Device::Cpu).unwrap()).unwrap();

        for (((name, a), (_, b)), (_, c)) in named.iter().zip(&gpu_copy).zip(&cpu_copy) {
            let (a, b) = (a.tensor(), b.tensor());
            assert_eq!((a.device(), b.device(), c.tensor().device()), (dev, dev, Device::Cpu), "{what}: {name}");
            let bits = |t: &Tensor| t.to_f64_vec().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{what}: {name}: the reloaded GPU optimizer diverged from the original");
            assert_close(&format!("{what}: {name} continued on the CPU"), &c.tensor(), &a, ATOL, RTOL);
        }
        // The reloaded state lives on the device again and reads back the same.
        assert_all_close(
            what,
            &opt.state_dict().unwrap().tensors.into_iter().map(|(_, t)| t).collect::<Vec<_>>(),
            &resumed.state_dict().unwrap().tensors.into_iter().map(|(_, t)| t).collect::<Vec<_>>(),
            0.0,
            0.0,
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A module moved to the GPU after some CPU steps, and back: the optimizer's
/// state follows its parameters, and the trajectory is the CPU's.
#[test]
fn state_follows_a_module_between_devices() {
    let Some(dev) = gpu() else { return };
    let run = |devices: &[Device]| -> Vec<Tensor> {
        let lin = Linear::new(16, 8, true, &mut rng(0)).unwrap();
        let mut opt = Adam::new(lin.named_params(), AdamConfig::adamw(1e-2).weight_decay(0.1)).unwrap();
        for (k, &d) in devices.iter().enumerate() {
            lin.to_device(d).unwrap();
            assert_eq!(lin.device(), d);
            let named = lin.named_params();
            opt.step(&grads(&named, k as u64, d).unwrap()).unwrap();
        }
        lin.named_params().iter().map(|(_, p)| p.tensor()).collect()
    };
    let cpu = run(&[Device::Cpu; 4]);
    let moved = run(&[Device::Cpu, dev, dev, Device::Cpu]);
    assert!(moved.iter().all(|t| t.device() == Device::Cpu));
    assert_all_close("state_follows_a_module_between_devices", &cpu, &moved, ATOL, RTOL);
}

/// Gradients with no parameter in common layout: sizes around the block
/// size, one past the reduction's block limit (1024 blocks of 256), an f64
/// one, a strided one, a parameter listed twice and one without a gradient.
fn norm_case(dev: Device) -> Result<(GradStore, Vec<Param>)> {
    let shapes: [&[usize]; 5] = [&[1], &[31], &[33, 33], &[300_001], &[257]];
    let mut params = Vec::new();
    let mut store = GradStore::default();
    for (i, dims) in shapes.iter().enumerate() {
        let p = Param::new(Tensor::zeros(dims.to_vec(), DType::F32)?.to_device(dev)?);
        store.insert(&p.tensor(), randn(dims, 50 + i as u64).scale(0.01)?.to_device(dev)?);
        params.push(p);
    }
    let p64 = Param::new(Tensor::zeros([1000], DType::F64)?.to_device(dev)?);
    store.insert(&p64.tensor(), randn64(&[1000], 60).to_device(dev)?);
    let strided = Param::new(Tensor::zeros([5, 7], DType::F32)?.to_device(dev)?);
    store.insert(&strided.tensor(), randn(&[7, 5], 61).to_device(dev)?.t()?);
    let no_grad = Param::new(Tensor::zeros([4], DType::F32)?.to_device(dev)?);
    params.push(p64);
    params.push(strided);
    params.push(params[2].clone()); // tied: counted once
    params.push(no_grad);
    Ok((store, params))
}

parity_test!(global_norm_matches_the_cpu, 0.0, 1e-12, |dev| {
    let (grads, params) = norm_case(dev)?;
    let norm = grad_norm(&grads, &params)?;
    // Deterministic: the same bits every time.
    assert_eq!(norm.to_bits(), grad_norm(&grads, &params)?.to_bits());
    // A 16-bit gradient is widened exactly on the device.
    let h = Param::new(Tensor::zeros([65], DType::BF16)?.to_device(dev)?);
    let mut g16 = GradStore::default();
    g16.insert(&h.tensor(), randn(&[65], 62).to_dtype(DType::BF16)?.to_device(dev)?);
    let norm16 = grad_norm(&g16, &[h])?;
    // The norms are host numbers; on the run's device they pass the harness's device check.
    Ok(vec![Tensor::scalar(norm).to_device(dev)?, Tensor::scalar(norm16).to_device(dev)?])
});

parity_test!(clipping_matches_the_cpu, ATOL, RTOL, |dev| {
    let (mut grads, params) = norm_case(dev)?;
    let norm = clip_grad_norm(&mut grads, &params, 0.5)?;
    let mut out = vec![Tensor::scalar(norm).to_device(dev)?];
    for p in &params {
        if let Some(g) = grads.get(&p.tensor()) {
            assert_eq!(g.device(), dev);
            out.push(g.clone());
        }
    }
    // Below the limit nothing is scaled.
    let (mut loose, params2) = norm_case(dev)?;
    let before: Vec<Tensor> = params2.iter().filter_map(|p| loose.get(&p.tensor()).cloned()).collect();
    clip_grad_norm(&mut loose, &params2, 1e9)?;
    for (p, b) in params2.iter().filter(|p| loose.get(&p.tensor()).is_some()).zip(&before) {
        assert!(loose.get(&p.tensor()).is_some_and(|g| g.same_storage(b)));
    }
    Ok(out)
});

parity_test!(grad_accumulator_matches_the_cpu, ATOL, RTOL, |dev| {
    let a = Tensor::zeros([33, 17], DType::F32)?.to_device(dev)?.variable();
    let b = Tensor::zeros([1000], DType::F64)?.to_device(dev)?.variable();
    let c = Tensor::zeros([5, 4], DType::F32)?.to_device(dev)?.variable();
    let mut acc = GradAccumulator::new(3)?;
    for pass in 0..3u64 {
        let mut g = GradStore::default();
        g.insert(&a, randn(&[33, 17], 70 + pass).to_device(dev)?);
        if pass != 1 {
            g.insert(&b, randn64(&[1000], 80 + pass).to_device(dev)?);
        }
        if pass != 0 {
            // strided: the transpose of a [4, 5] gradient
            g.insert(&c, randn(&[4, 5], 90 + pass).to_device(dev)?.t()?);
        }
        acc.add(&g)?;
    }
    assert!(acc.is_ready());
    let sum = acc.take();
    let out: Vec<Tensor> = [&a, &b, &c].iter().map(|t| sum.get(t).cloned().expect("accumulated")).collect();
    assert!(out.iter().all(|t| t.device() == dev));
    Ok(out)
});
