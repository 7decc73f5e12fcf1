//! Train a character-level GPT on a text file (nanoGPT's shakespeare_char).
//!
//! ```sh
//! scripts/download_data.sh --only shakespeare        # datasets/tinyshakespeare.txt
//! cargo run --release --example train_gpt -- --text datasets/tinyshakespeare.txt
//! cargo run --release --example sample_gpt -- --checkpoint out/train_gpt/gpt.safetensors --tokens 300
//! ```
//!
//! The defaults are nanoGPT's CPU configuration (see `--help`). Every
//! `--eval-interval` steps the train and validation losses are estimated on
//! `--eval-iters` fixed batches each; checkpoints go to
//! `OUT/checkpoint.safetensors` (for `--resume`) and the model alone, with
//! nanoGPT's names and its configuration (`model_config`, `n_head`) and
//! vocabulary in the metadata, to `OUT/gpt.safetensors`; the curves are
//! drawn in `OUT/metrics.svg` (also after a run that diverged). An `OUT` that holds
//! a run is not replaced without `--force`. The last line on stdout is one
//! JSON object: `{"event":"final","dataset":..,"model":..,"params":..,
//! "steps":..,"steps_this_process":..,"seconds":..,"seconds_this_process":..,
//! "train_loss":..,"val_loss":..,"tokens":..,"tokens_per_s":..}`.
//! With `TAMER_PROFILE=1` the per-op profile (`tamer::profile`) goes to
//! stderr when training ends and, as JSON, to `OUT/profile.json` (or the
//! file `TAMER_PROFILE_OUT` names).

#[path = "cli/common.rs"]
mod common;
#[path = "cli/gpt_args.rs"]
mod gpt_args;
#[path = "cli/pipe.rs"]
mod pipe;
#[path = "cli/run.rs"]
mod run;

use gpt_args::GptArgs;
use std::collections::BTreeMap;
use std::time::Instant;
use tamer::checkpoint::{self, model_metadata};
use tamer::data::CharDataset;
use tamer::dist::ProcessGroup;
use tamer::models::Gpt;
use tamer::nn::Module;
use tamer::optim::Scheduler;
use tamer::train::{CharLanguageModel, Record, TrainConfig, Trainer};
use tamer::{no_grad, rng, Error, Result, Tensor};

const OP: &str = "train_gpt";
/// The model alone, in `--out`.
const MODEL_FILE: &str = "gpt.safetensors";

fn main() {
    common::main_with(GptArgs::validate, run);
}

/// The memory of training a GPT of `cfg` at micro-batch `micro` (nanoGPT's
/// parameter count, `12·C²` per layer plus the embeddings, and per token and
/// layer the saved activations, with the attention matrix per head; the
/// logits and their gradient per token).
fn gpt_memory(cfg: &tamer::models::GptConfig, micro: usize, kind: common::OptimizerKind) -> run::MemoryEstimate {
    let (c, l, t, v) = (cfg.n_embd as f64, cfg.n_layer as f64, cfg.block_size as f64, cfg.vocab_size as f64);
    let head = if cfg.tie_weights { 0.0 } else { v * c };
    let params = l * (12.0 * c * c + 13.0 * c) + v * c + t * c + 2.0 * c + head;
    let per_token = l * (18.0 * c + 2.0 * cfg.n_head as f64 * t) + 2.0 * v + c;
    run::MemoryEstimate {
        params,
        copies_per_param: run::MemoryEstimate::copies(kind),
        activations: micro as f64 * t * per_token,
    }
}

/// Under mpirun or srun (built with --features mpi), one rank of several:
/// an error on any rank stops the whole job (the others may be waiting for it).
fn run(args: &GptArgs) -> Result<()> {
    let pg = ProcessGroup::from_env()?;
    pg.abort_on_error(train(args, pg.clone()))
}

fn train(args: &GptArgs, pg: ProcessGroup) -> Result<()> {
    let start = Instant::now();
    // --batch-size stays the global batch, split evenly over the ranks.
    let (world, root) = (pg.world_size(), pg.is_root());
    run::prepare_out_dir(OP, &args.out, &args.run, MODEL_FILE)?;
    run::init_threads(OP, args.run.threads)?;
    let data = CharDataset::load(&args.text)?;
    let config = args.model_config(data.vocab_size());
    // Found now, not when the first batch is drawn after the model is built.
    data.check_windows(config.block_size)?;
    let micro = args.batch_size / args.run.grad_accum;
    if !micro.is_multiple_of(world) {
        return Err(Error::value(
            OP,
            format!("the micro-batch of {micro} sequences (--batch-size / --grad-accum) does not split evenly over {world} ranks"),
        ));
    }
    // Each rank's part of every micro-batch.
    let micro = micro / world;
    let what = format!(
        "a GPT of {} layers, {} heads, width {} (--n-embd) and context {} at micro-batch {micro}",
        config.n_layer, config.n_head, config.n_embd, config.block_size
    );
    run::check_memory(OP, &what, &gpt_memory(&config, micro, args.run.optimizer), args.run.max_memory)?;
    let model = Gpt::new(config.clone(), &mut rng(args.seed))?;
    let params = model.num_params();
    // Parameters move to the device before the optimizer sees them; batches follow the model.
    let device = common::rank_device(args.run.device, pg.local_rank())?;
    let pg = common::gpu_collectives(pg, device, args.run.no_nccl)?;
    model.to_device(device)?;
    if root {
        describe(args, &data, &config, params, &pg, micro, &common::device_label(device, args.run.autocast));
    }
    // nanoGPT's shakespeare_char: beta2 0.99 ("the model is small and sees few tokens per step").
    let opt = run::optimizer(
        model.named_params(),
        args.run.optimizer,
        args.lr,
        args.weight_decay,
        Some((0.9, 0.99)),
        Some(gpt_args::decay_rule()),
    )?;
    let sched = Scheduler::from_box(run::schedule(args.schedule, args.lr, args.min_lr, args.warmup, args.steps)?);
    let vocab: String = data.chars.iter().collect();
    let task = CharLanguageModel {
        model,
        data,
        batch_size: micro,
        block_size: config.block_size,
        micro_batches: args.run.grad_accum,
        eval_iters: args.eval_iters,
        eval_train: true,
        seed: args.seed,
        shard: (0, 1),
    };
    let mut metadata = model_metadata(&config.to_json(), None);
    metadata.extend(BTreeMap::from([
        // For readers that know nanoGPT's names but not model_config.
        ("n_head".to_string(), config.n_head.to_string()),
        ("vocab".to_string(), vocab),
        ("model".to_string(), args.model.name().to_string()),
    ]));
    let train_config = TrainConfig {
        total_steps: args.steps,
        stop_at: args.run.stop_at,
        grad_accum: args.run.grad_accum,
        clip: (args.run.clip > 0.0).then_some(args.run.clip),
        eval_every: Some(args.eval_interval),
        log_every: args.log_interval,
        checkpoint_every: Some(args.checkpoint_interval.unwrap_or(args.eval_interval)),
        out_dir: Some(args.out.clone()),
        overwrite: args.run.force,
        seed: args.seed,
        diagnostics_every: args.run.diagnostics_every,
        zero1: args.run.zero1,
        overlap_grad_sync: args.run.overlap,
        autocast: args.run.autocast.dtype(),
        metadata,
        ..TrainConfig::default()
    };
    // The process group before a resume: it sets the data shard the resumed position is in.
    let mut trainer = Trainer::new(train_config, task, opt, sched)?.with_process_group(pg)?;
    run::resume_if_asked(&mut trainer, &args.run)?;
    if root {
        run::start_over(OP, &args.out, &args.run, MODEL_FILE)?;
    }
    let summary = trainer.fit();
    // Rank 0 alone writes, samples and reports.
    if !root {
        summary?;
        return Ok(());
    }
    run::plot_metrics(&args.out, summary.is_ok());
    let summary = summary?;
    let gpt_path = args.out.join(MODEL_FILE);
    checkpoint::save_with_metadata(&gpt_path, &checkpoint::module_tensors(&trainer.task.model), &trainer.config.metadata)?;
    println!(
        "saved {} (sample with: cargo run --release --example sample_gpt -- --checkpoint {})",
        gpt_path.display(),
        gpt_path.display()
    );
    // After the model is safe, before sampling (which is not training).
    run::finish_profile(Some(&args.out))?;

    if args.sample_tokens > 0 {
        let task = &mut trainer.task;
        task.model.set_training(false);
        let first = task.data.encode("\n").ok().and_then(|ids| ids.first().copied()).unwrap_or(0);
        let out = no_grad(|| {
            task.model
                .generate(&Tensor::from_vec(vec![first], [1, 1])?, args.sample_tokens, 1.0, Some(200), &mut rng(args.seed))
        })?;
        println!("---- sample ----\n{}\n----------------", task.data.decode(&out.to_vec::<i64>()?)?);
    }
    let val_loss = summary.metric("val_loss");
    println!(
        "val loss {} after {} steps ({} in this process), {} tokens/s, {:.1}s",
        val_loss.map_or("unknown".to_string(), |v| format!("{v:.4}")),
        summary.steps,
        summary.steps_run,
        summary.tokens_per_s.map_or("no".to_string(), |t| format!("{t:.0}")),
        start.elapsed().as_secs_f64()
    );
    let fin = Record::new("final")
        .with("dataset", args.text.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default())
        .with("model", args.model.name())
        .with("params", params as u64);
    let fin = run::final_record(fin, &summary, start)
        .with("val_loss", val_loss)
        .with("tokens", summary.total_tokens)
        .with("tokens_per_s", summary.tokens_per_s.map(f64::round));
    println!("{}", fin.to_json());
    Ok(())
}

/// The run's first lines: the data, the model, the schedule and (on several
/// ranks) how the batch is split.
fn describe(args: &GptArgs, data: &CharDataset, config: &tamer::models::GptConfig, params: usize, pg: &ProcessGroup, micro: usize, device: &str) {
    println!(
        "{}: {} characters ({} train / {} val), vocabulary {}; {} ({params} parameters): {} layers, {} heads, width {}, context {}, dropout {}",
        args.text.display(),
        data.len(),
        data.train.len(),
        data.val.len(),
        data.vocab_size(),
        args.model.name(),
        config.n_layer,
        config.n_head,
        config.n_embd,
        config.block_size,
        config.dropout
    );
    println!(
        "{} steps on {device}, batch {} × {} tokens, {:?} lr {:e} → {:e}, warmup {}, wd {}, clip {}, {} threads",
        args.steps,
        args.batch_size,
        config.block_size,
        args.run.optimizer,
        args.lr,
        args.min_lr,
        args.warmup,
        args.weight_decay,
        args.run.clip,
        rayon::current_num_threads()
    );
    if pg.world_size() > 1 {
        println!(
            "data-parallel over {} ranks ({}): {micro} sequences per rank per micro-batch",
            pg.world_size(),
            common::backends(pg)
        );
    }
}
