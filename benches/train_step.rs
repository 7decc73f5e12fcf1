//! Training-step benchmark: the time of one whole training step of small
//! transformers, on the CPU or a GPU, one JSON line per configuration and thread count.
//!
//! ```sh
//! cargo bench --bench train_step                                 # the four small configs, all cores
//! cargo bench --bench train_step -- --config gpt-tiny,vit-tiny --threads 1
//! scripts/bench_train_step.sh                                    # interleaved with PyTorch's twin
//! cargo bench --features cuda --bench train_step -- --device cuda --autocast bf16 --config gpt2
//! ```
//!
//! A step is what a training loop does for one batch: the forward pass, the mean
//! cross-entropy loss (read back as a number, as `loss.item()` is), the backward pass,
//! one AdamW update of every parameter, and dropping the graph and the gradients.
//! Each configuration trains on one fixed random batch: `--warmup` steps (3) that are
//! not timed, then `--steps` (15) timed one by one. It prints
//!
//! ```text
//! {"bench":"train_step","impl":"tamer","config":"gpt-tiny","params":818176,"threads":2,"batch":32,
//!  "step_ms":..,"min_ms":..,"tokens_or_images_per_s":..,"page_faults_per_step":..,"load_avg":..,
//!  "loss_first":..,"loss_last":..,"device":"cpu","autocast":"none","model_flops_per_step":..,
//!  "model_tflops":..}
//! ```
//!
//! On a GPU (`--device cuda`, the `cuda` feature) each timed step ends with
//! [`Device::synchronize`](tamer::Device::synchronize), so it counts the kernels it
//! queued; `--autocast bf16` (or `f16`) runs the forward pass and the loss under
//! [`tamer::autocast`], as PyTorch's `torch.autocast` does.
//! `model_flops_per_step` is the model's arithmetic by the formula of PaLM's appendix B
//! that nanoGPT's `estimate_mfu` uses: `6·N + 12·L·d·T` per token, N the parameters
//! less the position embedding, L layers of width d over T tokens, times the tokens of a
//! step; `model_tflops` is that per median step, so MFU = `model_tflops` / the chip's peak.
//!
//! `step_ms` is the median of the timed steps and `min_ms` the fastest; the rate counts
//! tokens (B·T) for a GPT and images for a ViT per median step. `page_faults_per_step`
//! is the growth of `getrusage`'s minor page faults over the timed steps divided by their
//! number (memory the step asked the kernel for afresh; null off Linux). `load_avg` is
//! the one-minute load average when the configuration finished: on a shared machine a
//! figure taken under load is slower than the code is. `loss_first` and `loss_last` are
//! the losses of the first warm-up step and the last timed step: the run trained (the
//! loss fell) and both implementations start near the same value (ln 65 ≈ 4.17 for the
//! GPTs, ln 10 ≈ 2.30 for the ViTs).
//!
//! # The models (`benches/torch_train_step.py` builds the same ones in PyTorch)
//!
//! Shared by all four: pre-LN transformer blocks `x + attn(LN(x))`, `x + mlp(LN(x))`;
//! LayerNorm with weight and bias, eps 1e-5; every Linear with a bias (but the GPT's
//! head); attention from one fused `qkv` Linear `[d → 3d]`, heads of `d/heads`, softmax
//! of `q·kᵀ/√(d/heads)`, the heads merged, then a `proj` Linear `[d → d]`; an MLP
//! `Linear(d → m)`, exact (erf) GELU, `Linear(m → d)`; no dropout anywhere; float32.
//! The optimizer is AdamW, lr 3e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on
//! every parameter (`torch.optim.AdamW(model.parameters(), lr=3e-4)`; tamer's
//! `AdamConfig::adamw` with its default `DecayRule::Torch`, checked below).
//!
//! | config | model | batch | parameters |
//! |---|---|---|---|
//! | `gpt-tiny` | GPT: vocab 65, context 64, 4 layers, 4 heads, d 128, MLP 512 | 32 × 64 tokens | 818,176 |
//! | `gpt-small` | GPT: vocab 65, context 256, 6 layers, 6 heads, d 384, MLP 1536 | 16 × 256 tokens | 10,795,776 |
//! | `vit-tiny` | ViT: 28×28×1, patch 4 (49 patches + CLS), d 64, 4 layers, 4 heads, MLP 128, 10 classes | 128 images | 139,018 |
//! | `vit-cifar` | ViT: 32×32×3, patch 4 (64 patches + CLS), d 192, 6 layers, 3 heads, MLP 384, 10 classes | 64 images | 1,806,538 |
//! | `gpt2` | GPT-2 124M's shape: vocab 50,304, context 1024, 12 layers, 12 heads, d 768, MLP 3072, tied head | 8 × 1024 tokens | 124,475,904 |
//!
//! `gpt2` is for GPUs (a CPU step takes minutes); it runs only when named.
//!
//! - **GPT** (nanoGPT's layout): token embedding `[65, d]` plus a learned position
//!   embedding `[T, d]`, the blocks with causal attention (PyTorch's `is_causal=True`),
//!   a final LayerNorm, and an untied head `Linear(d → 65)` without bias (`gpt2`'s head
//!   is the token embedding, as GPT-2's). The loss is
//!   the cross-entropy of all B·T next-token predictions, from random tokens and random
//!   targets.
//! - **ViT** (timm's layout): the patch embedding is a `Conv2d(C → d, kernel = stride
//!   = 4)` with bias, flattened to tokens; a learned class token is put first and a
//!   learned position embedding `[1, N + 1, d]` added; the blocks attend without a mask;
//!   a final LayerNorm over every token; the class token's output goes to the head
//!   `Linear(d → 10)`. The loss is the cross-entropy against random labels, the images
//!   standard normal noise.
//!
//! Each parameter count is checked before timing: a model that differs from the one
//! above is an error, not a figure.

use clap::{Parser, ValueEnum};
use rand::Rng;
use std::time::Instant;
use tamer::models::{Gpt, GptConfig, VisionTransformer, VitConfig};
use tamer::nn::Module;
use tamer::optim::{Adam, AdamConfig, Optimizer};
use tamer::{rng, CrossEntropyOptions, DType, Device, Error, Result, Tensor};

const OP: &str = "train_step";

/// Time one training step of small transformers on the CPU or a GPU (see the bench's docs).
#[derive(Parser, Debug)]
#[command(name = "train_step")]
struct Args {
    /// Configurations to run, repeated or comma-separated [default: the four small ones].
    #[arg(long = "config", value_enum, value_delimiter = ',')]
    configs: Vec<ConfigName>,
    /// Rayon threads, repeated or comma-separated: one pool of each size [default: all cores].
    #[arg(long = "threads", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    threads: Vec<u16>,
    /// Timed steps per configuration (the median and the minimum are reported).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
    steps: u32,
    /// Untimed steps first: they page in the weights and grow the allocator's heap.
    #[arg(long, default_value_t = 3)]
    warmup: u32,
    /// Where to train: `cpu`, `cuda` or `cuda:N` (the `cuda` feature).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// Compute the forward pass's matrix products in this 16-bit type (GPU only).
    #[arg(long, value_enum, default_value_t = Autocast::None)]
    autocast: Autocast,
    /// Passed by `cargo bench` to every bench binary; nothing to do with it here.
    #[arg(long, hide = true)]
    bench: bool,
}

/// `cpu`, `cuda` (device 0) or `cuda:N`, opened and checked.
fn parse_device(text: &str) -> std::result::Result<Device, String> {
    let ordinal = match text {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => Some(0),
        _ => text.strip_prefix("cuda:").and_then(|n| n.parse().ok()),
    };
    let ordinal = ordinal.ok_or_else(|| format!("expected cpu, cuda or cuda:N, got {text:?}"))?;
    Device::cuda(ordinal).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Autocast {
    None,
    Bf16,
    F16,
}

impl Autocast {
    fn name(self) -> &'static str {
        match self {
            Autocast::None => "none",
            Autocast::Bf16 => "bf16",
            Autocast::F16 => "f16",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ConfigName {
    GptTiny,
    GptSmall,
    VitTiny,
    VitCifar,
    Gpt2,
}

impl ConfigName {
    /// What runs when no `--config` is given (`gpt2` only when named).
    const DEFAULT: [ConfigName; 4] = [ConfigName::GptTiny, ConfigName::GptSmall, ConfigName::VitTiny, ConfigName::VitCifar];

    fn name(self) -> &'static str {
        match self {
            ConfigName::GptTiny => "gpt-tiny",
            ConfigName::GptSmall => "gpt-small",
            ConfigName::VitTiny => "vit-tiny",
            ConfigName::VitCifar => "vit-cifar",
            ConfigName::Gpt2 => "gpt2",
        }
    }

    /// The parameter count of the architecture in the bench's docs (and in PyTorch's twin).
    fn expected_params(self) -> usize {
        match self {
            ConfigName::GptTiny => 818_176,
            ConfigName::GptSmall => 10_795_776,
            ConfigName::VitTiny => 139_018,
            ConfigName::VitCifar => 1_806_538,
            ConfigName::Gpt2 => 124_475_904,
        }
    }
}

/// A model and the one batch it trains on (the models are boxed: they differ in size).
enum Workload {
    /// Token ids `[B, T]` and next-token targets `[B, T]`, both i64.
    Gpt { model: Box<Gpt>, tokens: Tensor, targets: Tensor },
    /// Images `[B, C, H, W]` (f32) and class labels `[B]` (i64).
    Vit {
        model: Box<VisionTransformer>,
        images: Tensor,
        labels: Tensor,
    },
}

impl Workload {
    /// Builds the configuration's model (initialised as nanoGPT or timm would) and its
    /// fixed random batch, from fixed seeds, on `device`.
    fn new(config: ConfigName, device: Device) -> Result<(Workload, usize)> {
        let (work, batch) = Workload::on_cpu(config)?;
        work.model().to_device(device)?;
        let work = match work {
            Workload::Gpt { model, tokens, targets } => Workload::Gpt {
                model,
                tokens: tokens.to_device(device)?,
                targets: targets.to_device(device)?,
            },
            Workload::Vit { model, images, labels } => Workload::Vit {
                model,
                images: images.to_device(device)?,
                labels: labels.to_device(device)?,
            },
        };
        Ok((work, batch))
    }

    fn on_cpu(config: ConfigName) -> Result<(Workload, usize)> {
        let mut rng = rng(0);
        match config {
            ConfigName::GptTiny | ConfigName::GptSmall | ConfigName::Gpt2 => {
                let (preset, batch) = match config {
                    ConfigName::GptTiny => (GptConfig::gpt_tiny(), 32),
                    ConfigName::GptSmall => (GptConfig::gpt_small(), 16),
                    _ => (GptConfig::gpt2(), 8),
                };
                // The presets are nanoGPT's (tied head, gpt-small without biases, with
                // dropout); the benchmark's models have every bias, no dropout, and an
                // untied head but for gpt2, which keeps GPT-2's.
                let config = GptConfig {
                    bias: true,
                    tie_weights: preset.tie_weights && config == ConfigName::Gpt2,
                    dropout: 0.0,
                    ..preset
                };
                let shape = [batch, config.block_size];
                let tokens = random_ids(shape, config.vocab_size, &mut rng)?;
                let targets = random_ids(shape, config.vocab_size, &mut rng)?;
                let model = Box::new(Gpt::new(config, &mut rng)?);
                Ok((Workload::Gpt { model, tokens, targets }, batch))
            }
            ConfigName::VitTiny | ConfigName::VitCifar => {
                let (preset, batch) = match config {
                    ConfigName::VitTiny => (VitConfig::vit_tiny(), 128),
                    _ => (VitConfig::vit_cifar(), 64),
                };
                // timm's ViTs use eps 1e-6; the benchmark uses PyTorch's LayerNorm default.
                let config = VitConfig { norm_eps: 1e-5, ..preset };
                let (h, w) = config.img_size;
                let images = Tensor::randn([batch, config.in_chans, h, w], DType::F32, &mut rng)?;
                let labels = random_ids([batch], config.num_classes, &mut rng)?;
                let model = Box::new(VisionTransformer::new(config, &mut rng)?);
                Ok((Workload::Vit { model, images, labels }, batch))
            }
        }
    }

    fn model(&self) -> &dyn Module {
        match self {
            Workload::Gpt { model, .. } => model.as_ref(),
            Workload::Vit { model, .. } => model.as_ref(),
        }
    }

    /// What one step processes: tokens for a GPT, images for a ViT.
    fn items_per_step(&self) -> usize {
        match self {
            Workload::Gpt { tokens, .. } => tokens.numel(),
            Workload::Vit { images, .. } => images.dims()[0],
        }
    }

    /// The step's arithmetic by PaLM's formula (see the bench's docs): `6·N + 12·L·d·T`
    /// per token, N the parameters less the position embedding.
    fn model_flops_per_step(&self) -> f64 {
        let (layers, width, seq, positions, sequences) = match self {
            Workload::Gpt { model, tokens, .. } => {
                let c = &model.config;
                (c.n_layer, c.n_embd, tokens.dims()[1], c.block_size * c.n_embd, tokens.dims()[0])
            }
            Workload::Vit { model, images, .. } => {
                let c = &model.config;
                let seq = model.num_tokens();
                (c.depth, c.embed_dim, seq, seq * c.embed_dim, images.dims()[0])
            }
        };
        let n = (self.model().num_params() - positions) as f64;
        let per_token = 6.0 * n + 12.0 * (layers * width * seq) as f64;
        per_token * (seq * sequences) as f64
    }

    /// The forward pass and the mean cross-entropy loss, with its graph.
    fn loss(&self) -> Result<Tensor> {
        match self {
            Workload::Gpt { model, tokens, targets } => {
                let (_logits, loss) = model.forward(tokens, Some(targets))?;
                loss.ok_or_else(|| Error::value(OP, "the GPT returned no loss for the targets it was given"))
            }
            Workload::Vit { model, images, labels } => model.forward(images)?.cross_entropy(labels, CrossEntropyOptions::default()),
        }
    }
}

/// i64 ids drawn uniformly from `0..n`.
fn random_ids<const R: usize>(shape: [usize; R], n: usize, rng: &mut impl Rng) -> Result<Tensor> {
    let ids = (0..shape.iter().product::<usize>()).map(|_| rng.random_range(0..n as i64)).collect();
    Tensor::from_vec(ids, shape)
}

/// One training step; returns the loss.
fn train_step(work: &Workload, opt: &mut Adam, autocast: Autocast) -> Result<f64> {
    let loss = match autocast {
        Autocast::None => work.loss()?,
        Autocast::Bf16 => tamer::autocast(DType::BF16, || work.loss())?,
        Autocast::F16 => tamer::autocast(DType::F16, || work.loss())?,
    };
    let value = loss.to_scalar()?;
    if !value.is_finite() {
        return Err(Error::value(OP, format!("the loss is {value}: the benchmark would time a diverged run")));
    }
    let grads = loss.backward()?;
    // The graph goes with the loss; the gradients after the update, at the end of the step.
    drop(loss);
    opt.step(&grads)?;
    Ok(value)
}

/// What one configuration measured.
struct Measurement {
    step_ms: Vec<f64>,
    page_faults: Option<u64>,
    loss_first: f64,
    loss_last: f64,
}

fn measure(work: &Workload, opt: &mut Adam, args: &Args) -> Result<Measurement> {
    let (warmup, steps) = (args.warmup, args.steps);
    let mut loss_first = None;
    for _ in 0..warmup {
        let loss = train_step(work, opt, args.autocast)?;
        loss_first.get_or_insert(loss);
    }
    args.device.synchronize()?;
    let faults_before = minor_page_faults();
    let mut step_ms = Vec::with_capacity(steps as usize);
    let mut loss_last = f64::NAN;
    for _ in 0..steps {
        let start = Instant::now();
        loss_last = train_step(work, opt, args.autocast)?;
        args.device.synchronize()?;
        step_ms.push(start.elapsed().as_secs_f64() * 1e3);
        loss_first.get_or_insert(loss_last);
    }
    let page_faults = minor_page_faults().zip(faults_before).map(|(after, before)| after.saturating_sub(before));
    Ok(Measurement {
        step_ms,
        page_faults,
        loss_first: loss_first.unwrap_or(f64::NAN),
        loss_last,
    })
}

/// AdamW as in PyTorch, checked to decay every parameter.
fn adamw(model: &dyn Module) -> Result<Adam> {
    const WEIGHT_DECAY: f64 = 0.01;
    let config = AdamConfig::adamw(3e-4).betas(0.9, 0.999).eps(1e-8).weight_decay(WEIGHT_DECAY);
    let opt = Adam::new(model.named_params(), config)?;
    let decayed: usize = opt
        .param_groups()
        .iter()
        .filter(|g| g.weight_decay == WEIGHT_DECAY)
        .flat_map(|g| &g.params)
        .map(|(_, p)| p.numel())
        .sum();
    if decayed != model.num_params() {
        return Err(Error::value(
            OP,
            format!(
                "AdamW decays {decayed} of {} parameters; the benchmark needs weight decay on every one",
                model.num_params()
            ),
        ));
    }
    Ok(opt)
}

fn run(config: ConfigName, args: &Args) -> Result<()> {
    let (work, batch) = Workload::new(config, args.device)?;
    let params = work.model().num_params();
    if params != config.expected_params() {
        return Err(Error::value(
            OP,
            format!(
                "{} has {params} parameters, expected {}: the model no longer matches the bench's docs and PyTorch's twin",
                config.name(),
                config.expected_params()
            ),
        ));
    }
    let mut opt = adamw(work.model())?;
    let m = measure(&work, &mut opt, args)?;
    let (median_ms, min_ms) = median_and_min(m.step_ms);
    let per_s = work.items_per_step() as f64 / (median_ms / 1e3);
    let faults_per_step = m.page_faults.map(|f| f as f64 / f64::from(args.steps));
    let flops = work.model_flops_per_step();
    println!(
        "{{\"bench\":\"train_step\",\"impl\":\"tamer\",\"config\":\"{}\",\"params\":{params},\"threads\":{},\"batch\":{batch},\
         \"step_ms\":{median_ms:.2},\"min_ms\":{min_ms:.2},\"tokens_or_images_per_s\":{per_s:.1},\"page_faults_per_step\":{},\
         \"load_avg\":{},\"loss_first\":{:.5},\"loss_last\":{:.5},\"device\":\"{}\",\"autocast\":\"{}\",\
         \"model_flops_per_step\":{flops:.4e},\"model_tflops\":{:.3}}}",
        config.name(),
        rayon::current_num_threads(),
        json_number(faults_per_step, 1),
        json_number(load_average(), 2),
        m.loss_first,
        m.loss_last,
        args.device,
        args.autocast.name(),
        flops / (median_ms / 1e3) / 1e12,
    );
    Ok(())
}

fn median_and_min(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 { ms[n / 2] } else { (ms[n / 2 - 1] + ms[n / 2]) / 2.0 };
    (median, ms[0])
}

fn json_number(x: Option<f64>, decimals: usize) -> String {
    x.map_or("null".to_string(), |x| format!("{x:.decimals$}"))
}

/// The one-minute load average from /proc/loadavg (None where there is none).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// This process's minor page faults so far (`getrusage(RUSAGE_SELF).ru_minflt`).
#[cfg(target_os = "linux")]
fn minor_page_faults() -> Option<u64> {
    use std::os::raw::{c_int, c_long};
    /// `struct rusage` of Linux: two `struct timeval`s, then fourteen longs.
    #[repr(C)]
    #[derive(Default)]
    struct Rusage {
        utime: [c_long; 2],
        stime: [c_long; 2],
        maxrss: c_long,
        ixrss: c_long,
        idrss: c_long,
        isrss: c_long,
        minflt: c_long,
        rest: [c_long; 9],
    }
    extern "C" {
        fn getrusage(who: c_int, usage: *mut Rusage) -> c_int;
    }
    const RUSAGE_SELF: c_int = 0;
    let mut usage = Rusage::default();
    // SAFETY: `usage` is a writable `struct rusage` of the layout Linux's libc declares.
    let rc = unsafe { getrusage(RUSAGE_SELF, &mut usage) };
    (rc == 0).then(|| u64::try_from(usage.minflt).unwrap_or(0))
}

#[cfg(not(target_os = "linux"))]
fn minor_page_faults() -> Option<u64> {
    None
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.autocast != Autocast::None && !args.device.is_cuda() {
        // tamer's autocast (as PyTorch's CUDA autocast) changes only CUDA products.
        return Err(Error::value(OP, format!("--autocast {} needs --device cuda", args.autocast.name())));
    }
    let configs = if args.configs.is_empty() {
        ConfigName::DEFAULT.to_vec()
    } else {
        args.configs.clone()
    };
    let threads = if args.threads.is_empty() {
        vec![std::thread::available_parallelism().map_or(1, |n| n.get())]
    } else {
        args.threads.iter().map(|&t| usize::from(t)).collect()
    };
    for &n in &threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Error::value(OP, format!("--threads {n}: {e}")))?;
        for &config in &configs {
            pool.install(|| run(config, &args))?;
        }
    }
    // `TAMER_PROFILE=1 cargo bench --bench train_step -- --config gpt-small`:
    // where the step's time goes, op by op (warm-up steps included).
    if tamer::profile::is_enabled() {
        eprintln!("{}", tamer::profile::report());
    }
    Ok(())
}
