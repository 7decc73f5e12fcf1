//! Flag types and value parsers shared by the training examples' command
//! lines, the flags both training examples have ([`RunFlags`]), and their
//! `main` ([`main_with`]).

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

/// `--autocast`: the forward pass's matrix products in f32 or bf16 (CUDA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AutocastKind {
    None,
    Bf16,
}

impl AutocastKind {
    /// The trainer's setting.
    pub fn dtype(self) -> Option<tamer::DType> {
        match self {
            AutocastKind::None => None,
            AutocastKind::Bf16 => Some(tamer::DType::BF16),
        }
    }
}

/// `--schedule`: what the learning rate does after the linear warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleKind {
    /// Cosine decay to the final learning rate at the last step.
    Cosine,
    /// Linear decay to the final learning rate at the last step.
    Linear,
    /// Constant.
    Constant,
    /// OneCycleLR (PyTorch's defaults: 30% up, cosine annealing); --warmup is ignored.
    Onecycle,
    /// Decay with 1/√step.
    InverseSqrt,
}

/// The error for `--device cuda` in a binary built without the backend, or on a machine without a usable device.
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

/// The device `--device` names for a rank of the job: the CPU, or the GPU of
/// the rank's local rank among those visible (0 for a single process; ranks
/// on one machine take one GPU each, as `torchrun` and llm.c do; a launcher
/// that gives each rank its own `CUDA_VISIBLE_DEVICES` leaves one, GPU 0),
/// initialised here so that a machine without a driver or GPU fails with the
/// driver's reason before the data is loaded.
pub fn rank_device(kind: DeviceKind, local_rank: usize) -> tamer::Result<tamer::Device> {
    match kind {
        DeviceKind::Cpu => Ok(tamer::Device::Cpu),
        DeviceKind::Cuda => tamer::Device::cuda(local_rank % tamer::Device::cuda_count()?.max(1)),
    }
}

/// The device for the run's description: "cuda:0", or "cuda:0 (bf16 autocast)".
pub fn device_label(device: tamer::Device, autocast: AutocastKind) -> String {
    match autocast.dtype() {
        Some(dtype) => format!("{device} ({dtype} autocast)"),
        None => device.to_string(),
    }
}

/// The group's backends for the log: "mpi", or "mpi + nccl" when CUDA
/// tensors go through NCCL.
pub fn backends(pg: &tamer::dist::ProcessGroup) -> String {
    match pg.gpu_backend_name() {
        Some(gpu) => format!("{} + {gpu}", pg.backend_name()),
        None => pg.backend_name().to_string(),
    }
}

/// The process group a CUDA run exchanges gradients through: with the
/// `nccl` feature, `--device cuda` and several ranks, an NCCL communicator
/// on the rank's GPU (GPU to GPU), unless `no_nccl`; otherwise `pg` as it
/// is (host copies over MPI; a single process exchanges nothing).
pub fn gpu_collectives(pg: tamer::dist::ProcessGroup, device: tamer::Device, no_nccl: bool) -> tamer::Result<tamer::dist::ProcessGroup> {
    #[cfg(feature = "nccl")]
    if device.is_cuda() && !no_nccl && pg.world_size() > 1 {
        return pg.with_nccl(device);
    }
    let _ = (device, no_nccl);
    Ok(pg)
}

/// The flags `train_vit` and `train_gpt` share: where the run goes and how
/// it is continued, where it runs, and the optimizer's shape.
#[derive(clap::Args, Debug, Clone)]
pub struct RunFlags {
    /// Continue the run in --out from its checkpoint (same flags as the original run).
    #[arg(long)]
    pub resume: bool,
    /// Start over in an --out that already holds a run, replacing its
    /// checkpoint, model and metrics (without it such a run is refused).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Stop after this many optimizer steps (a planned interruption; --resume continues).
    #[arg(long, value_name = "STEP")]
    pub stop_at: Option<u64>,
    /// Where to train.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Mixed precision: the forward pass and loss with CUDA matrix products in
    /// bf16 (as `torch.autocast`); --device cuda only.
    #[arg(long, value_enum, default_value_t = AutocastKind::None)]
    pub autocast: AutocastKind,
    /// With --device cuda in a build with the `nccl` feature, exchange the
    /// ranks' gradients through host copies over MPI instead of NCCL.
    #[arg(long)]
    pub no_nccl: bool,
    /// Worker threads for the compute pool [default: all cores].
    #[arg(long, value_parser = positive_usize)]
    pub threads: Option<usize>,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, value_parser = positive_usize, default_value_t = 1)]
    pub grad_accum: usize,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adamw)]
    pub optimizer: OptimizerKind,
    /// Refuse a run whose estimated memory (weights, gradients, optimizer
    /// state and one micro-batch's activations) exceeds this many GiB
    /// [default: the memory available, read from /proc/meminfo on Linux; 32
    /// GiB elsewhere].
    #[arg(long, value_name = "GIB", value_parser = positive_f64)]
    pub max_memory: Option<f64>,
    /// Clip gradients to this global L2 norm; 0 turns clipping off.
    #[arg(long, value_parser = non_negative_f64, default_value_t = 1.0)]
    pub clip: f64,
    /// Every N steps, write per-layer diagnostics to metrics.jsonl (gradient
    /// norms, update-to-weight ratios, and on a fixed probe batch the
    /// rank-collapse residual and attention entropy of every layer).
    #[arg(long, value_name = "N", value_parser = positive_u64)]
    pub diagnostics_every: Option<u64>,
    /// Shard the optimizer state over the ranks (ZeRO stage 1): each rank
    /// keeps and updates 1/world of it, then the parameters are all-gathered.
    #[arg(long, conflicts_with = "diagnostics_every")]
    pub zero1: bool,
    /// On several ranks, send each bucket of gradients to the other ranks
    /// as soon as it is final, during the backward pass (PyTorch DDP's
    /// overlap), instead of after it; the same results. CPU gradients go
    /// from a communication thread, GPU ones over NCCL on a stream of its own.
    #[arg(long, conflicts_with = "zero1")]
    pub overlap: bool,
}

impl RunFlags {
    /// The checks clap cannot make.
    pub fn validate(&self) -> Result<(), String> {
        if self.device == DeviceKind::Cuda {
            cuda_available()?;
        }
        if self.autocast != AutocastKind::None && self.device != DeviceKind::Cuda {
            return Err("--autocast bf16 needs --device cuda: autocast changes CUDA matrix products only".to_string());
        }
        Ok(())
    }
}

/// The examples' `main`: flags parsed and checked (an error exits with 2),
/// then `run` (an error exits with 1). Writing to a closed pipe
/// (`train_vit | head -1`) ends the process quietly with status 0.
pub fn main_with<A: clap::Parser>(validate: fn(&A) -> Result<(), String>, run: fn(&A) -> tamer::Result<()>) {
    super::pipe::exit_quietly_on_broken_pipe();
    let args = A::parse();
    if let Err(msg) = validate(&args) {
        eprintln!("error: {msg}");
        std::process::exit(2);
    }
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
