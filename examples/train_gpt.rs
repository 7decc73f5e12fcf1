//! Train a character-level GPT on a text file (nanoGPT's shakespeare_char).
//!
//! ```sh
//! cargo run --release --example train_gpt -- --text ../shared/data/tinyshakespeare.txt
//! cargo run --release --example sample_gpt -- --checkpoint out/train_gpt/gpt.safetensors --tokens 300
//! ```
//!
//! The defaults are nanoGPT's CPU configuration (see `--help`). Every
//! `--eval-interval` steps the train and validation losses are estimated on
//! `--eval-iters` fixed batches each; checkpoints go to
//! `OUT/checkpoint.safetensors` (for `--resume`) and the model alone, with
//! nanoGPT's names and `n_head` and `vocab` in the metadata, to
//! `OUT/gpt.safetensors`. The last line on stdout is one JSON object:
//! `{"event":"final","dataset":..,"model":..,"params":..,"steps":..,
//! "seconds":..,"train_loss":..,"val_loss":..,"tokens_per_s":..}`.

#[path = "cli/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "cli/gpt_args.rs"]
mod gpt_args;

use clap::Parser;
use common::OptimizerKind;
use gpt_args::{GptArgs, GptSchedule};
use std::collections::BTreeMap;
use std::time::Instant;
use tamer::checkpoint;
use tamer::data::CharDataset;
use tamer::models::{Gpt, GptConfig};
use tamer::nn::Module;
use tamer::optim::{Adam, AdamConfig, LrSchedule, Optimizer, Scheduler, Sgd, SgdConfig, WarmupCosine, WarmupLinear};
use tamer::train::{CharLanguageModel, Record, TrainConfig, Trainer};
use tamer::{no_grad, rng, Error, Result, Tensor};

fn main() {
    let args = GptArgs::parse();
    if let Err(msg) = args.validate() {
        eprintln!("error: {msg}");
        std::process::exit(2);
    }
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn model_config(args: &GptArgs, vocab_size: usize) -> GptConfig {
    let base = match args.model {
        gpt_args::GptPreset::GptTiny => GptConfig::gpt_tiny(),
        gpt_args::GptPreset::GptSmall => GptConfig::gpt_small(),
    };
    GptConfig {
        vocab_size,
        n_layer: args.n_layer.unwrap_or(base.n_layer),
        n_head: args.n_head.unwrap_or(base.n_head),
        n_embd: args.n_embd.unwrap_or(base.n_embd),
        block_size: args.block_size.unwrap_or(base.block_size),
        dropout: args.dropout.unwrap_or(base.dropout),
        ..base
    }
}

fn schedule(args: &GptArgs) -> Result<Box<dyn LrSchedule>> {
    Ok(match args.schedule {
        GptSchedule::Cosine => Box::new(WarmupCosine::new(args.lr, args.warmup, args.steps, args.min_lr)?),
        GptSchedule::Linear => Box::new(WarmupLinear::new(args.lr, args.warmup, args.steps, args.min_lr)?),
        GptSchedule::Constant => Box::new(WarmupLinear::new(args.lr, args.warmup, args.warmup, args.lr)?),
        GptSchedule::InverseSqrt => Box::new(common::inverse_sqrt(args.lr, args.warmup)?),
    })
}

fn optimizer(args: &GptArgs, model: &Gpt) -> Result<Box<dyn Optimizer>> {
    let named = model.named_params();
    let (wd, rule) = (args.weight_decay, gpt_args::decay_rule());
    Ok(match args.optimizer {
        // nanoGPT's shakespeare_char: beta2 0.99 ("the model is small and sees few tokens per step").
        OptimizerKind::Adamw => Box::new(Adam::new(named, AdamConfig::adamw(args.lr).betas(0.9, 0.99).weight_decay(wd).decay_rule(rule))?),
        OptimizerKind::Adam => Box::new(Adam::new(named, AdamConfig::adam(args.lr).betas(0.9, 0.99).weight_decay(wd).decay_rule(rule))?),
        OptimizerKind::Sgd => Box::new(Sgd::new(
            named,
            SgdConfig::new(args.lr).momentum(0.9).nesterov(true).weight_decay(wd).decay_rule(rule),
        )?),
    })
}

fn run(args: &GptArgs) -> Result<()> {
    let start = Instant::now();
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| Error::value("train_gpt", format!("--threads {n}: {e}")))?;
    }
    let data = CharDataset::load(&args.text)?;
    let config = model_config(args, data.vocab_size());
    gpt_args::check_splits(data.train.len(), data.val.len(), config.block_size).map_err(|m| Error::value("train_gpt", m))?;
    let model = Gpt::new(config.clone(), &mut rng(args.seed))?;
    let params = model.num_params();
    // Parameters move to the device before the optimizer sees them; batches follow the model.
    let device = common::device(args.device)?;
    model.to_device(device)?;
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
        args.optimizer,
        args.lr,
        args.min_lr,
        args.warmup,
        args.weight_decay,
        args.clip,
        rayon::current_num_threads()
    );
    let opt = optimizer(args, &model)?;
    let sched = Scheduler::from_box(schedule(args)?);
    let vocab: String = data.chars.iter().collect();
    let task = CharLanguageModel {
        model,
        data,
        batch_size: args.batch_size / args.grad_accum,
        block_size: config.block_size,
        micro_batches: args.grad_accum,
        eval_iters: args.eval_iters,
        eval_train: true,
        seed: args.seed,
    };
    let metadata = BTreeMap::from([
        ("n_head".to_string(), config.n_head.to_string()),
        ("vocab".to_string(), vocab),
        ("model".to_string(), args.model.name().to_string()),
        ("config".to_string(), format!("{config:?}")),
    ]);
    let train_config = TrainConfig {
        total_steps: args.steps,
        stop_at: args.stop_at,
        grad_accum: args.grad_accum,
        clip: (args.clip > 0.0).then_some(args.clip),
        eval_every: Some(args.eval_interval),
        log_every: args.log_interval,
        checkpoint_every: Some(args.checkpoint_interval.unwrap_or(args.eval_interval)),
        out_dir: Some(args.out.clone()),
        seed: args.seed,
        metadata,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(train_config, task, opt, sched)?;
    if args.resume {
        let path = trainer.checkpoint_path().unwrap_or_default();
        trainer.resume(&path)?;
        println!("resumed from {} at step {}", path.display(), trainer.step);
    }
    let summary = trainer.fit()?;
    let gpt_path = args.out.join("gpt.safetensors");
    checkpoint::save_with_metadata(&gpt_path, &checkpoint::module_tensors(&trainer.task.model), &trainer.config.metadata)?;
    println!(
        "saved {} (sample with: cargo run --release --example sample_gpt -- --checkpoint {})",
        gpt_path.display(),
        gpt_path.display()
    );

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
    let val_loss = summary.metric("val_loss").unwrap_or(f64::NAN);
    println!(
        "val loss {val_loss:.4} after {} steps, {:.0} tokens/s, {:.1}s",
        summary.steps,
        summary.tokens_per_s,
        start.elapsed().as_secs_f64()
    );
    let fin = Record::new("final")
        .with("dataset", args.text.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default())
        .with("model", args.model.name())
        .with("params", params as u64)
        .with("steps", summary.steps)
        .num("seconds", (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0)
        .num("train_loss", summary.train_loss)
        .num("val_loss", val_loss)
        .num("tokens_per_s", summary.tokens_per_s.round());
    println!("{}", fin.to_json());
    Ok(())
}
