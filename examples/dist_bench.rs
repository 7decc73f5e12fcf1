//! Scaling figures for data-parallel training, one JSON line per figure:
//! the process group's all-reduce for several message sizes (algorithm
//! bandwidth = bytes / time, bus bandwidth = 2(n−1)/n × that, as
//! nccl-tests define them), and training steps per second of the digits
//! ViT and of gpt-tiny at a fixed global batch, split over the ranks.
//!
//! ```sh
//! cargo build --release --features mpi --example dist_bench
//! RAYON_NUM_THREADS=2 target/release/examples/dist_bench            # 1 process
//! mpirun -np 2 -x RAYON_NUM_THREADS=1 target/release/examples/dist_bench
//! ```
//!
//! Rank 0 prints; every line carries the world size, the compute threads per
//! rank and the machine's load average when it was taken (figures on a
//! loaded machine are not speeds). `--steps N` sets the timed training steps
//! (default 20, after 3 untimed ones); `--no-train` measures the all-reduce only.
//! `--grad-sync overlap,after` times the training with the gradients averaged
//! during the backward pass (`overlap`), after it (`after`, the trainer's
//! default), or both, interleaved `--rounds R` times (default 1);
//! `--bucket-elems N` sets the elements per all-reduce bucket.

use std::time::Instant;
use tamer::data::{digits, CharDataset, DataLoader, LoaderConfig};
use tamer::dist::{ProcessGroup, ReduceOp};
use tamer::models::{Gpt, GptConfig, Pool, VisionTransformer, VitConfig};
use tamer::nn::Module;
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::optim::{Adam, AdamConfig, Constant, Scheduler};
use tamer::train::{CharLanguageModel, ImageClassification, Progress, TrainConfig, TrainTask, Trainer};
use tamer::{Error, Result, Tensor};

const OP: &str = "dist_bench";
/// Global batches: the digits recipe's 64 images; gpt-tiny's 8 windows of 64 characters.
const VIT_BATCH: usize = 64;
const GPT_BATCH: usize = 8;
const WARMUP_STEPS: u64 = 3;

fn main() {
    let pg = match ProcessGroup::from_env() {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let r = run(&pg);
    if let Err(e) = pg.abort_on_error(r) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

fn emit(pg: &ProcessGroup, mut fields: serde_json::Value) {
    if !pg.is_root() {
        return;
    }
    fields["ranks"] = pg.world_size().into();
    fields["threads_per_rank"] = rayon::current_num_threads().into();
    fields["load_avg_1min"] = load_average().into();
    println!("{fields}");
}

fn run(pg: &ProcessGroup) -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut steps = 20u64;
    let mut train = true;
    let mut rounds = 1usize;
    let mut syncs = vec![false];
    let mut pg = pg.clone();
    let mut it = args.iter();
    let number = |v: Option<&String>, flag: &str| {
        v.and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::value(OP, format!("{flag} needs a whole number of at least 1")))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--steps" => steps = number(it.next(), "--steps")? as u64,
            "--no-train" => train = false,
            "--rounds" => rounds = number(it.next(), "--rounds")?,
            "--bucket-elems" => pg = pg.with_bucket_elems(number(it.next(), "--bucket-elems")?)?,
            "--grad-sync" => {
                let list = it.next().ok_or_else(|| Error::value(OP, "--grad-sync needs overlap, after, or both"))?;
                syncs = list
                    .split(',')
                    .map(|w| match w {
                        "overlap" => Ok(true),
                        "after" => Ok(false),
                        _ => Err(Error::value(OP, format!("--grad-sync {w:?}: expected overlap or after"))),
                    })
                    .collect::<Result<_>>()?;
            }
            other => {
                return Err(Error::value(
                    OP,
                    format!("unknown argument {other:?} (expected --steps N, --no-train, --rounds R, --bucket-elems N, --grad-sync overlap,after)"),
                ))
            }
        }
    }
    let pg = &pg;
    if pg.world_size() > 1 {
        all_reduce_bandwidth(pg)?;
    } else {
        emit(
            pg,
            serde_json::json!({"bench": "all_reduce", "note": "a world of one exchanges nothing; run under mpirun -np 2"}),
        );
    }
    if train {
        for round in 0..rounds {
            for &overlap in &syncs {
                let vit = vit_trainer(pg, steps, overlap)?;
                train_rate(pg, "digits_vit", VIT_BATCH, vit, round)?;
            }
            for &overlap in &syncs {
                let gpt = gpt_trainer(pg, steps, overlap)?;
                train_rate(pg, "gpt_tiny", GPT_BATCH, gpt, round)?;
            }
        }
    }
    Ok(())
}

/// `ProcessGroup::all_reduce` of one f32 tensor (what the trainer pays per
/// step: packing, the agreement check, MPI_Allreduce in buckets, unpacking).
fn all_reduce_bandwidth(pg: &ProcessGroup) -> Result<()> {
    let n = pg.world_size() as f64;
    for kib in [4usize, 64, 1024, 4096, 16384, 65536] {
        let bytes = kib * 1024;
        let t = Tensor::from_vec(vec![1.0f32; bytes / 4], [bytes / 4])?;
        // About 64 MiB moved per size, at least 5 and at most 500 calls.
        let iters = (64 * 1024 / kib).clamp(5, 500);
        pg.all_reduce(std::slice::from_ref(&t), ReduceOp::Sum)?;
        pg.barrier()?;
        let start = Instant::now();
        for _ in 0..iters {
            pg.all_reduce(std::slice::from_ref(&t), ReduceOp::Sum)?;
        }
        pg.barrier()?;
        // The slowest rank's time.
        let mine = start.elapsed().as_secs_f64() / iters as f64;
        let all = pg.all_gather(&Tensor::from_vec(vec![mine], [1])?)?.to_vec::<f64>()?;
        let secs = all.iter().copied().fold(0.0, f64::max);
        let algbw = bytes as f64 / secs / 1e9;
        emit(
            pg,
            serde_json::json!({
                "bench": "all_reduce",
                "bytes": bytes,
                "iters": iters,
                "seconds": secs,
                "algbw_GBps": algbw,
                "busbw_GBps": algbw * 2.0 * (n - 1.0) / n,
            }),
        );
    }
    Ok(())
}

fn bench_config(steps: u64, overlap: bool) -> TrainConfig {
    TrainConfig {
        total_steps: WARMUP_STEPS + steps,
        overlap_grad_sync: overlap,
        log_every: 1_000_000,
        print: false,
        progress: Progress::Never,
        ..TrainConfig::default()
    }
}

fn vit_trainer(pg: &ProcessGroup, steps: u64, overlap: bool) -> Result<Trainer<ImageClassification<VisionTransformer>>> {
    let (train, test) = digits::load_images()?;
    let cfg = VitConfig {
        pool: Pool::Mean,
        ..VitConfig::vit_digits()
    };
    let model = VisionTransformer::new(cfg, &mut tamer::rng(0))?;
    let opt = Adam::new(model.named_params(), AdamConfig::adamw(1e-3))?;
    let loader = DataLoader::new(train, LoaderConfig::train(VIT_BATCH / pg.world_size(), 0).with_drop_last(true))?;
    let test = test.subset(&(0..64).collect::<Vec<_>>())?;
    let task = ImageClassification::new(model, loader, test, 64, CrossEntropyOptions::default())?;
    Trainer::new(bench_config(steps, overlap), task, Box::new(opt), Scheduler::new(Constant { lr: 1e-3 }))?.with_process_group(pg.clone())
}

fn gpt_trainer(pg: &ProcessGroup, steps: u64, overlap: bool) -> Result<Trainer<CharLanguageModel>> {
    let text = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!\n".repeat(40);
    let data = CharDataset::from_text(&text, "pangrams")?;
    let cfg = GptConfig {
        vocab_size: data.vocab_size(),
        ..GptConfig::gpt_tiny()
    };
    let block_size = cfg.block_size;
    let model = Gpt::new(cfg, &mut tamer::rng(0))?;
    let opt = Adam::new(model.named_params(), AdamConfig::adamw(1e-3))?;
    let task = CharLanguageModel {
        model,
        data,
        batch_size: GPT_BATCH / pg.world_size(),
        block_size,
        micro_batches: 1,
        eval_iters: 1,
        eval_train: false,
        seed: 0,
        shard: (0, 1),
    };
    Trainer::new(bench_config(steps, overlap), task, Box::new(opt), Scheduler::new(Constant { lr: 1e-3 }))?.with_process_group(pg.clone())
}

/// Steps per second of `trainer` after its untimed warm-up steps, with the
/// gradient bytes each step all-reduces.
fn train_rate<T: TrainTask>(pg: &ProcessGroup, model: &str, global_batch: usize, mut trainer: Trainer<T>, round: usize) -> Result<()> {
    let total = trainer.config.total_steps;
    trainer.config.stop_at = Some(WARMUP_STEPS);
    trainer.fit()?;
    trainer.config.stop_at = None;
    pg.barrier()?;
    let start = Instant::now();
    let summary = trainer.fit()?;
    pg.barrier()?;
    let secs = start.elapsed().as_secs_f64();
    let timed = total - WARMUP_STEPS;
    let params = trainer.task.model().num_params();
    emit(
        pg,
        serde_json::json!({
            "bench": "train_steps",
            "model": model,
            "round": round,
            "grad_sync": if trainer.overlap_buckets().is_some() { "overlap" } else { "after_backward" },
            "buckets": trainer.overlap_buckets(),
            "bucket_elems": pg.bucket_elems(),
            "global_batch": global_batch,
            "params": params,
            "grad_bytes_per_step": params * 4,
            "steps": timed,
            "steps_per_s": timed as f64 / secs,
            "train_steps_per_s": summary.samples_per_s.map(|s| s / global_batch as f64),
        }),
    );
    Ok(())
}
