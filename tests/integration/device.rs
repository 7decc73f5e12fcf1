//! Devices in the default build (and on any machine): moving a module to the
//! CPU is a no-op, asking for CUDA where it cannot be had is a clear error
//! that leaves the module where it was, and the device-aware constructors and
//! the optimizer state stay on the host. The GPU side is
//! tests/cuda/device.rs and tests/cuda/optim.rs.

use tamer::models::{Gpt, GptConfig};
use tamer::nn::{Linear, Module, Param};
use tamer::optim::{clip_grad_norm, Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use tamer::{rng, DType, Device, Tensor};

fn tiny_gpt() -> Gpt {
    let cfg = GptConfig {
        vocab_size: 11,
        block_size: 8,
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        ..GptConfig::gpt_tiny()
    };
    Gpt::new(cfg, &mut rng(0)).unwrap()
}

#[test]
fn to_device_cpu_is_a_no_op() {
    let gpt = tiny_gpt();
    let before: Vec<Tensor> = gpt.named_params().iter().map(|(_, p)| p.tensor()).collect();
    gpt.to_device(Device::Cpu).unwrap();
    assert_eq!(gpt.device(), Device::Cpu);
    for ((name, p), t) in gpt.named_params().iter().zip(&before) {
        let now = p.tensor();
        assert!(now.same_storage(t), "{name} was copied");
        assert_eq!(now.id(), t.id(), "{name} got a new handle: its gradients would be keyed differently");
    }
    assert!(gpt.lm_head.weight.same(&gpt.wte.weight), "tied weights must stay one parameter");
    // A module without parameters is on the CPU.
    assert_eq!(tamer::nn::Dropout::new(0.1, 0).unwrap().device(), Device::Cpu);
}

#[test]
fn asking_for_cuda_where_there_is_none_is_a_clear_error() {
    if Device::cuda(0).is_ok() {
        return; // a machine with a GPU and the feature: tests/cuda/device.rs covers it
    }
    let err = Device::cuda(0).unwrap_err().to_string();
    assert!(err.contains("cuda"), "{err}");
    if !cfg!(feature = "cuda") {
        assert!(err.contains("--features cuda"), "the error should say how to get CUDA: {err}");
    }
    let lin = Linear::new(4, 3, true, &mut rng(1)).unwrap();
    let w = lin.weight.tensor();
    let e = lin.to_device(Device::Cuda(0)).unwrap_err().to_string();
    assert!(e.contains("Module::to_device") && e.contains("cuda"), "{e}");
    // Nothing moved: the module is still whole on the CPU.
    assert!(lin.named_params().iter().all(|(_, p)| p.tensor().device() == Device::Cpu));
    assert!(lin.weight.tensor().same_storage(&w));
    assert!(Tensor::zeros_on([2], DType::F32, Device::Cuda(0)).is_err());
    assert!(Tensor::full_on([2], 1.0, DType::F32, Device::Cuda(0)).is_err());
}

#[test]
fn device_constructors_on_the_cpu() {
    let z = Tensor::zeros_on([2, 3], DType::F64, Device::Cpu).unwrap();
    assert_eq!((z.dims(), z.to_vec::<f64>().unwrap()), (&[2usize, 3][..], vec![0.0; 6]));
    let f = Tensor::full_on([3], -1.5, DType::F32, Device::Cpu).unwrap();
    assert_eq!(f.to_vec::<f32>().unwrap(), vec![-1.5; 3]);
}

#[test]
fn optimizer_state_and_clipping_stay_on_the_host() {
    let w = Param::new(Tensor::from_vec(vec![3.0f32, 4.0], [2]).unwrap());
    let named = vec![("w".to_string(), w.clone())];
    let mut adam = Adam::new(named.clone(), AdamConfig::adamw(0.1)).unwrap();
    let mut sgd = Sgd::new(named, SgdConfig::new(0.1).momentum(0.9)).unwrap();
    let mut grads = w.tensor().square().unwrap().sum_all().unwrap().backward().unwrap();
    let norm = clip_grad_norm(&mut grads, std::slice::from_ref(&w), 1.0).unwrap();
    assert!((norm - 10.0).abs() < 1e-5, "{norm}");
    assert_eq!(grads.get(&w.tensor()).unwrap().device(), Device::Cpu);
    adam.step(&grads).unwrap();
    sgd.step(&grads).unwrap();
    for state in [adam.state_dict().unwrap(), sgd.state_dict().unwrap()] {
        assert!(!state.tensors.is_empty());
        assert!(state.tensors.iter().all(|(_, t)| t.device() == Device::Cpu));
    }
    // Param::set copies values to the parameter's device (here: stays on the host).
    w.set(&Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap()).unwrap();
    assert_eq!(w.tensor().to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
}
