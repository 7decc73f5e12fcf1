//! Page faults per steady-state training step, with the CPU caching allocator
//! on (the default) and off (`--no-cache`, every freed buffer back to the
//! system at once, as before the pool).
//!
//! ```text
//! cargo run --release --example page_faults -- --config gpt-tiny --steps 10
//! cargo run --release --example page_faults -- --config vit-cifar --steps 10 --no-cache
//! ```
//!
//! Prints one JSON line: the minor page faults of the process per step over
//! `--steps` steps after `--warmup` steps (Linux's `/proc/self/stat` minflt,
//! the figure `getrusage(RUSAGE_SELF)` reports as `ru_minflt`), the step time,
//! and the pool's figures. Each step is a forward pass, the loss, the backward
//! pass and one AdamW update, on one fixed random batch.

use clap::Parser;
use std::time::Instant;
use tamer::models::{Gpt, GptConfig, VisionTransformer, VitConfig};
use tamer::nn::{Module, Param};
use tamer::optim::{Adam, AdamConfig, Optimizer};
use tamer::{CrossEntropyOptions, DType, Device, Result, Tensor};

#[derive(Parser)]
struct Args {
    /// gpt-tiny (batch 32), gpt-small (batch 16, no dropout) or vit-cifar (batch 64).
    #[arg(long, default_value = "gpt-tiny")]
    config: String,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Turn the CPU caching allocator off (a cache limit of 0 bytes).
    #[arg(long)]
    no_cache: bool,
}

/// One forward pass to the loss on the fixed batch.
type LossFn = dyn Fn() -> Result<Tensor>;

/// Minor page faults of this process so far (all threads), or None off Linux.
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count
    // fields from the last ')'. minflt is field 10, the 8th after it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(7)?.parse().ok()
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.no_cache {
        tamer::backend::cpu::alloc::set_cache_limit(0);
    }
    let mut rng = tamer::rng(0);
    let (params, step): (Vec<(String, Param)>, Box<LossFn>) = match args.config.as_str() {
        "gpt-tiny" | "gpt-small" => {
            let (cfg, batch) = if args.config == "gpt-tiny" {
                (GptConfig::gpt_tiny(), 32)
            } else {
                (
                    GptConfig {
                        dropout: 0.0,
                        ..GptConfig::gpt_small()
                    },
                    16,
                )
            };
            let t = cfg.block_size;
            let tokens = |rng: &mut tamer::TensorRng| -> Result<Tensor> {
                let ids: Vec<i64> = (0..batch * t).map(|_| rand::Rng::random_range(rng, 0..cfg.vocab_size as i64)).collect();
                Tensor::from_vec(ids, [batch, t])
            };
            let (x, y) = (tokens(&mut rng)?, tokens(&mut rng)?);
            let gpt = Gpt::new(cfg, &mut rng)?;
            let params = gpt.named_params();
            let step = move || -> Result<Tensor> {
                let (_, loss) = gpt.forward(&x, Some(&y))?;
                loss.ok_or_else(|| tamer::Error::value("page_faults", "the GPT returned no loss for targets"))
            };
            (params, Box::new(step))
        }
        "vit-cifar" => {
            let batch = 64;
            let x = Tensor::randn([batch, 3, 32, 32], DType::F32, &mut rng)?;
            let y = Tensor::from_vec((0..batch as i64).map(|i| i % 10).collect::<Vec<_>>(), [batch])?;
            let vit = VisionTransformer::new(VitConfig::vit_cifar(), &mut rng)?;
            (
                vit.named_params(),
                Box::new(move || vit.forward(&x)?.cross_entropy(&y, CrossEntropyOptions::default())),
            )
        }
        other => {
            return Err(tamer::Error::value(
                "page_faults",
                format!("unknown --config {other:?}: gpt-tiny, gpt-small or vit-cifar"),
            ))
        }
    };
    let mut opt = Adam::new(params, AdamConfig::adamw(3e-4).weight_decay(0.01))?;
    let mut run = || -> Result<f64> {
        let loss = step()?;
        let grads = loss.backward()?;
        opt.step(&grads)?;
        loss.to_scalar()
    };
    for _ in 0..args.warmup {
        run()?;
    }
    let (faults_before, start) = (minor_faults(), Instant::now());
    let mut loss = 0.0;
    for _ in 0..args.steps {
        loss = run()?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let per_step = match (faults_before, minor_faults()) {
        (Some(a), Some(b)) => format!("{:.1}", (b - a) as f64 / args.steps as f64),
        _ => "null".to_string(),
    };
    let s = tamer::memory_stats(Device::Cpu)?;
    println!(
        "{{\"bench\":\"page_faults\",\"config\":\"{}\",\"cache\":{},\"threads\":{},\"steps\":{},\"minor_faults_per_step\":{per_step},\"step_ms\":{:.1},\"loss\":{loss:.4},\"bytes_in_use\":{},\"peak_bytes_in_use\":{},\"bytes_cached\":{},\"raw_allocations\":{},\"reuses\":{}}}",
        args.config,
        !args.no_cache,
        rayon::current_num_threads(),
        args.steps,
        seconds * 1e3 / args.steps as f64,
        s.bytes_in_use,
        s.peak_bytes_in_use,
        s.bytes_cached,
        s.raw_allocations,
        s.reuses
    );
    Ok(())
}
