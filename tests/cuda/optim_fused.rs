//! The fused optimizer kernels (cuda/optim.cu) against the CPU loops, step
//! by step: AdamW, Adam with L2 and AMSGrad, SGD with momentum, dampening
//! and Nesterov, over parameters of assorted shapes and dtypes with strided
//! gradients. (tests/integration/optim_fused.rs checks the CPU loops against
//! plain tensor ops.)
//!
//! The tests feed seeded gradients straight into a `GradStore`, so they
//! exercise only the optimizer's kernels.

use crate::harness::{assert_all_close, assert_on, gpu, randn, randn64};
use crate::parity_test;
use tamer::nn::Param;
use tamer::optim::{Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use tamer::{rng, DType, Device, GradStore, Result, Tensor};

/// Optimizer results must agree to 1e-6 relative (they are expected to agree
/// bit for bit: cuda/optim.cu rounds exactly as the CPU loops).
pub const ATOL: f64 = 1e-9;
pub const RTOL: f64 = 1e-6;

/// Parameters of assorted shapes and dtypes on `dev`: an f32 matrix (33×17,
/// 2-D: decayed by the default rule), an f32 vector longer than a block
/// (1031), an f64 matrix (40×25) and a single f32 element.
pub fn params(dev: Device) -> Result<Vec<(String, Param)>> {
    Ok(vec![
        ("w".into(), Param::new(randn(&[33, 17], 1).to_device(dev)?)),
        ("b".into(), Param::new(randn(&[1031], 2).to_device(dev)?)),
        ("w64".into(), Param::new(randn64(&[40, 25], 3).to_device(dev)?)),
        ("s".into(), Param::new(randn(&[1], 4).to_device(dev)?)),
    ])
}

/// Seeded gradients for `named` at step `k`, identical on every device. On odd
/// steps every matrix gradient is a transposed (strided) view.
pub fn grads(named: &[(String, Param)], k: u64, dev: Device) -> Result<GradStore> {
    let mut store = GradStore::default();
    for (i, (_, p)) in named.iter().enumerate() {
        let t = p.tensor();
        let seed = 1000 * k + i as u64;
        let g = if t.rank() == 2 && k % 2 == 1 {
            let d = t.dims();
            Tensor::randn([d[1], d[0]], t.dtype(), &mut rng(seed))?.to_device(dev)?.t()?
        } else {
            Tensor::randn(t.dims().to_vec(), t.dtype(), &mut rng(seed))?.to_device(dev)?
        };
        store.insert(&t, g);
    }
    Ok(store)
}

/// The parameters, then every tensor of the optimizer's state dict (which
/// must be host copies, whatever device the state lives on).
fn outputs(named: &[(String, Param)], opt: &dyn Optimizer) -> Result<Vec<Tensor>> {
    let mut out: Vec<Tensor> = named.iter().map(|(_, p)| p.tensor()).collect();
    let device = out.first().map_or(Device::Cpu, |t| t.device());
    for (name, t) in opt.state_dict()?.tensors {
        assert_eq!(t.device(), Device::Cpu, "state_dict entry {name} must be a host copy");
        // Compared on the run's device, like every output (the harness checks that).
        out.push(t.to_device(device)?);
    }
    Ok(out)
}

fn run_adam(dev: Device, cfg: &AdamConfig, steps: u64) -> Result<Vec<Tensor>> {
    let named = params(dev)?;
    // Two groups: decayed matrices; the vectors without decay at half the learning rate.
    let groups = vec![
        ParamGroup::new(vec![named[0].clone(), named[2].clone()], cfg.weight_decay),
        ParamGroup::new(vec![named[1].clone(), named[3].clone()], 0.0).with_lr_scale(0.5),
    ];
    let mut opt = Adam::with_groups(groups, cfg.clone())?;
    for k in 0..steps {
        opt.step(&grads(&named, k, dev)?)?;
    }
    for (name, p) in &named {
        assert_eq!(p.tensor().device(), dev, "parameter {name} left its device");
    }
    outputs(&named, &opt)
}

fn run_sgd(dev: Device, cfg: &SgdConfig, steps: u64) -> Result<Vec<Tensor>> {
    let named = params(dev)?;
    let mut opt = Sgd::new(named.clone(), cfg.clone())?;
    for k in 0..steps {
        opt.step(&grads(&named, k, dev)?)?;
    }
    outputs(&named, &opt)
}

/// How many elements of two runs agree to the bit (printed: the kernels are
/// meant to be bit-exact, the assertion only asks for 1e-6).
fn report_exact(test: &str, cpu: &[Tensor], cuda: &[Tensor]) {
    let (mut same, mut total) = (0usize, 0usize);
    for (a, b) in cpu.iter().zip(cuda) {
        let (a, b) = (a.to_f64_vec().expect("cpu values"), b.to_f64_vec().expect("cuda values"));
        total += a.len();
        same += a.iter().zip(&b).filter(|(x, y)| x.to_bits() == y.to_bits()).count();
    }
    println!("{test}: {same}/{total} elements bit-identical to the CPU");
}

/// Run `body` on the CPU and the GPU, compare, and report bit-exactness.
fn optimizer_parity(test: &str, body: impl Fn(Device) -> Result<Vec<Tensor>>) {
    let Some(dev) = gpu() else { return };
    let cpu = body(Device::Cpu).unwrap_or_else(|e| panic!("{test}: the CPU run failed: {e}"));
    let cuda = body(dev).unwrap_or_else(|e| panic!("{test}: the CUDA run failed: {e}"));
    assert_on(test, Device::Cpu, &cpu);
    assert_on(test, dev, &cuda);
    assert_all_close(test, &cpu, &cuda, ATOL, RTOL);
    report_exact(test, &cpu, &cuda);
}

#[test]
fn adamw_steps_match_the_cpu() {
    // β₁ 0.9: lerp weight 0.1 < 0.5 (the first lerp form).
    let cfg = AdamConfig::adamw(1e-2).weight_decay(0.1);
    optimizer_parity("adamw_steps_match_the_cpu", |dev| run_adam(dev, &cfg, 4));
}

#[test]
fn adam_l2_amsgrad_and_large_lerp_weight_match_the_cpu() {
    // Coupled decay, AMSGrad, and β₁ 0.3 (lerp weight 0.7: the second lerp form).
    let cfg = AdamConfig::adam(3e-3).betas(0.3, 0.99).weight_decay(0.01).amsgrad(true);
    optimizer_parity("adam_l2_amsgrad_and_large_lerp_weight_match_the_cpu", |dev| run_adam(dev, &cfg, 4));
}

#[test]
fn sgd_nesterov_with_decay_matches_the_cpu() {
    let cfg = SgdConfig::new(0.05)
        .momentum(0.9)
        .nesterov(true)
        .weight_decay(1e-2)
        .decay_rule(tamer::optim::DecayRule::Torch);
    optimizer_parity("sgd_nesterov_with_decay_matches_the_cpu", |dev| run_sgd(dev, &cfg, 3));
}

#[test]
fn sgd_dampened_and_plain_match_the_cpu() {
    let damp = SgdConfig::new(0.1).momentum(0.5).dampening(0.1);
    optimizer_parity("sgd_dampened_matches_the_cpu", |dev| run_sgd(dev, &damp, 3));
    let plain = SgdConfig::new(0.1);
    optimizer_parity("sgd_plain_matches_the_cpu", |dev| run_sgd(dev, &plain, 2));
}

parity_test!(empty_parameters_take_a_step, 0.0, 0.0, |dev| {
    let e = Param::new(Tensor::zeros([0, 4], DType::F32)?.to_device(dev)?);
    let w = Param::new(randn(&[3], 9).to_device(dev)?);
    let named = vec![("e".to_string(), e.clone()), ("w".to_string(), w.clone())];
    let mut opt = Adam::new(named.clone(), AdamConfig::adamw(1e-2))?;
    opt.step(&grads(&named, 0, dev)?)?;
    let mut sgd = Sgd::new(named.clone(), SgdConfig::new(0.1).momentum(0.9))?;
    sgd.step(&grads(&named, 1, dev)?)?;
    Ok(vec![e.tensor(), w.tensor()])
});
