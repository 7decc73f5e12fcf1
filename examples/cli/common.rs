//! Flag types and value parsers shared by the training examples' command lines.

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerKind {
    Adamw,
    Adam,
    /// SGD with Nesterov momentum 0.9.
    Sgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

/// `--schedule inverse-sqrt`: with warmup, a linear ramp from
/// `lr / (warmup + 1)` at step 0 (so the first step already trains) to `lr`
/// at step `warmup`, then `lr · √(warmup / step)`; without, `lr / √max(step, 1)`.
pub fn inverse_sqrt(lr: f64, warmup: u64) -> tamer::Result<tamer::optim::InverseSqrt> {
    let init = if warmup > 0 { lr / (warmup as f64 + 1.0) } else { 0.0 };
    tamer::optim::InverseSqrt::new(lr, warmup, init)
}

/// The error for `--device cuda` until the CUDA backend lands.
pub fn cuda_unavailable() -> String {
    if cfg!(feature = "cuda") {
        "--device cuda: no usable CUDA device; use --device cpu".to_string()
    } else {
        "--device cuda: this binary was built without the cuda feature (rebuild with --features cuda); use --device cpu".to_string()
    }
}

pub fn positive_usize(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive whole number, got {s:?}")),
    }
}

pub fn positive_u64(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive whole number, got {s:?}")),
    }
}

pub fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("expected a positive number, got {s:?}")),
    }
}

pub fn non_negative_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x >= 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("expected a number >= 0, got {s:?}")),
    }
}

pub fn unit_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..1.0).contains(&x) => Ok(x),
        _ => Err(format!("expected a number in [0, 1), got {s:?}")),
    }
}

/// `--device cuda` needs a build with the `cuda` feature: an error (at flag
/// validation, before any work) when this binary has none.
pub fn cuda_available() -> Result<(), String> {
    if cfg!(feature = "cuda") {
        Ok(())
    } else {
        Err(cuda_unavailable())
    }
}

/// The device `--device` names: the CPU, or CUDA device 0, initialised here so
/// that a machine without a driver or GPU fails with the driver's reason
/// before the data is loaded.
pub fn device(kind: DeviceKind) -> tamer::Result<tamer::Device> {
    match kind {
        DeviceKind::Cpu => Ok(tamer::Device::Cpu),
        DeviceKind::Cuda => tamer::Device::cuda(0),
    }
}
