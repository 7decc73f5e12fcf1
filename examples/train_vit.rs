//! Train a Vision Transformer: the README's main command.
//!
//! ```sh
//! cargo run --release --example train_vit                      # digits, the default recipe
//! scripts/download_data.sh --only mnist                         # MNIST into datasets/mnist
//! cargo run --release --example train_vit -- --dataset mnist10k --data-dir datasets/mnist
//! cargo run --release --example train_vit -- --help            # every flag and the recipes
//! ```
//!
//! The recipe: AdamW (no decay on biases, norms, position embeddings and the
//! class token), linear warmup then cosine decay, gradient clipping at 1.0,
//! label smoothing 0.1, mean pooling; an epoch's last partial step is
//! dropped (timm's `drop_last`), so every step sees a full batch. Progress
//! goes to the terminal (a bar when stdout is a terminal) and, with `--out
//! DIR`, to `DIR/metrics.jsonl` with checkpoints in
//! `DIR/checkpoint.safetensors`, the model in `DIR/model.safetensors` and
//! the curves drawn in `DIR/metrics.svg` (also after a run that diverged),
//! both carrying the model's configuration and input normalisation in their
//! metadata (`classify_vit` reads them). A `DIR` that holds a run is not
//! replaced without `--force`. The last line on stdout is one JSON object:
//! `{"event":"final","dataset":..,"model":..,"params":..,"steps":..,
//! "steps_this_process":..,"seconds":..,"seconds_this_process":..,
//! "train_loss":..,"test_acc":..,"samples":..,"samples_per_s":..}`.
//! With `TAMER_PROFILE=1` the per-op profile (`tamer::profile`) goes to
//! stderr when training ends and, as JSON, to `DIR/profile.json` (or the
//! file `TAMER_PROFILE_OUT` names).

#[path = "cli/common.rs"]
mod common;
#[path = "cli/pipe.rs"]
mod pipe;
#[path = "cli/run.rs"]
mod run;
#[path = "cli/vit_args.rs"]
mod vit_args;

use std::collections::BTreeMap;
use std::time::Instant;
use tamer::checkpoint::{self, model_metadata, Checkpoint, InputNormalization};
use tamer::data::{cifar, digits, mnist, Augment, DataLoader, ImageDataset, LoaderConfig, Mixup, Normalization, Split};
use tamer::dist::ProcessGroup;
use tamer::models::{PretrainedOptions, VisionTransformer};
use tamer::nn::Module;
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::optim::{DecayRule, Scheduler};
use tamer::train::{ImageClassification, Record, TrainConfig, Trainer};
use tamer::{rng, Error, Result};
use vit_args::{Dataset, VitArgs};

const OP: &str = "train_vit";
/// The model alone, in `--out`.
const MODEL_FILE: &str = "model.safetensors";

fn main() {
    common::main_with(VitArgs::validate, run);
}

fn load_data(args: &VitArgs) -> Result<(ImageDataset, ImageDataset)> {
    let dir = args.data_dir.clone().unwrap_or_default();
    let (train, test) = match args.dataset {
        Dataset::Digits => digits::load_images()?,
        Dataset::Mnist => (mnist::load(&dir, Split::Train)?, mnist::load(&dir, Split::Test)?),
        Dataset::Mnist10k => mnist::mnist10k(&dir)?,
        Dataset::Cifar10 => (cifar::load(&dir, Split::Train)?, cifar::load(&dir, Split::Test)?),
    };
    // Found now, not when the first evaluation comes after hours of training.
    for (what, set) in [("training", &train), ("test", &test)] {
        if set.is_empty() {
            return Err(Error::value(
                OP,
                format!(
                    "the {what} set ({}) has no images: nothing to {}; check --data-dir",
                    set.name,
                    if what == "test" { "evaluate on" } else { "train on" }
                ),
            ));
        }
    }
    Ok((train, test))
}

/// The memory of training a ViT of `cfg` at micro-batch `micro` (a rough
/// count, in f64 so that absurd sizes cannot overflow: per block the qkv,
/// projection and MLP matrices; per token and block the saved activations,
/// with the attention matrix per head).
fn vit_memory(cfg: &tamer::models::VitConfig, micro: usize, kind: common::OptimizerKind) -> run::MemoryEstimate {
    let (d, l, p) = (cfg.embed_dim as f64, cfg.depth as f64, cfg.patch_size.max(1) as f64);
    let hidden = (d * cfg.mlp_ratio).floor();
    let (fh, fw) = cfg.feature_size();
    let tokens = (fh as f64 / p).floor() * (fw as f64 / p).floor() + cfg.num_prefix_tokens() as f64;
    let channels = cfg.stem.map_or(cfg.in_chans, |s| s.channels.1) as f64;
    let params = d * channels * p * p + d + tokens * d + l * (4.0 * d * d + 2.0 * d * hidden + 9.0 * d + hidden) + 2.0 * d + cfg.num_classes as f64 * (d + 1.0);
    let per_token = l * (12.0 * d + 2.0 * hidden + 2.0 * cfg.num_heads as f64 * tokens);
    run::MemoryEstimate {
        params,
        copies_per_param: run::MemoryEstimate::copies(kind),
        activations: micro as f64 * tokens * per_token,
    }
}

/// Under mpirun or srun (built with --features mpi), one rank of several:
/// an error on any rank stops the whole job (the others may be waiting for it).
fn run(args: &VitArgs) -> Result<()> {
    let pg = ProcessGroup::from_env()?;
    pg.abort_on_error(train(args, pg.clone()))
}

fn train(args: &VitArgs, pg: ProcessGroup) -> Result<()> {
    let start = Instant::now();
    let flag_error = |msg: String| Error::value(OP, msg);
    // --batch-size stays the global batch, split evenly over the ranks.
    let (rank, world, root) = (pg.rank(), pg.world_size(), pg.is_root());
    if let Some(out) = &args.out {
        run::prepare_out_dir(OP, out, &args.run, MODEL_FILE)?;
    }
    run::init_threads(OP, args.run.threads)?;
    let device = common::rank_device(args.run.device, pg.local_rank())?;
    let pg = common::gpu_collectives(pg, device, args.run.no_nccl)?;
    let recipe = args.dataset.recipe(args.model);
    let preset = recipe.model;
    let (train, test) = load_data(args)?;
    let config = args.model_config(train.shape, train.num_classes).map_err(flag_error)?;
    let epochs = args.epochs.unwrap_or(recipe.epochs);
    let (batch_size, micro) = args.batch_sizes().map_err(flag_error)?;
    if micro % world != 0 {
        return Err(flag_error(format!(
            "the micro-batch of {micro} images (--batch-size / --grad-accum) does not split evenly over {world} ranks"
        )));
    }
    // Each rank's part of every micro-batch.
    let micro = micro / world;
    let lr = args.lr.unwrap_or(recipe.lr);
    let warmup = args.warmup.unwrap_or(recipe.warmup);
    let weight_decay = args.weight_decay.unwrap_or(recipe.weight_decay);
    let mixup = args.mixup.unwrap_or(recipe.mixup);
    let what = format!(
        "--model {} (width {}, depth {}, patch {}) at micro-batch {micro}",
        preset.name(),
        config.embed_dim,
        config.depth,
        config.patch_size
    );
    run::check_memory(OP, &what, &vit_memory(&config, micro, args.run.optimizer), args.run.max_memory)?;

    // Pretrained weights bring the normalisation they were trained with, when they record it.
    let pretrained: Option<Checkpoint> = args.pretrained.as_ref().map(checkpoint::read).transpose()?;
    let normalization = match pretrained.as_ref().map(InputNormalization::from_checkpoint).transpose()?.flatten() {
        Some(n) => {
            println!(
                "pretrained: inputs normalised as the pretrained model's were (mean {:?}, std {:?})",
                n.mean, n.std
            );
            Normalization::Given { mean: n.mean, std: n.std }
        }
        None => Normalization::FromData,
    };
    let model = VisionTransformer::new(config.clone(), &mut rng(args.seed))?;
    if let Some(ckpt) = pretrained {
        let options = PretrainedOptions {
            skip: vec!["optim.*".into()],
            seed: args.seed,
            ..PretrainedOptions::default()
        };
        for note in model.load_pretrained_into(ckpt, &options)? {
            println!("pretrained: {note}");
        }
    }
    // Parameters move to the device before the optimizer sees them; batches follow the model.
    model.to_device(device)?;
    let augment = Augment {
        crop_padding: args.crop_padding.unwrap_or(recipe.crop_padding),
        hflip: recipe.hflip,
        erasing: None,
    };
    // Whole steps only: an epoch is a multiple of --grad-accum full micro-batches.
    let mut loader_config = LoaderConfig::train(micro, args.seed)
        .with_drop_last(true)
        .with_batch_multiple(args.run.grad_accum)
        .with_normalization(normalization)
        .with_augment(augment);
    if mixup > 0.0 {
        loader_config = loader_config.with_mixup(Mixup::mixup(mixup));
    }
    let mut loader = DataLoader::new(train, loader_config)?;
    if world > 1 {
        // Before the epoch length is read: an epoch is the ranks' shards together.
        loader.shard(rank, world)?;
    }
    let input_normalization = loader
        .normalization()
        .map(|(mean, std)| InputNormalization::new(mean.clone(), std.clone()))
        .transpose()?;
    let steps_per_epoch = (loader.num_batches() / args.run.grad_accum) as u64;
    let steps = args.step_counts(steps_per_epoch).map_err(flag_error)?;
    let total_steps = steps.total;
    let params = model.num_params();
    if root {
        println!(
            "{}: {} train / {} test images {:?}; {} ({} parameters, patch {}, {} tokens, pool {:?}, pos {:?})",
            args.dataset.name(),
            loader.dataset().len(),
            test.len(),
            loader.dataset().shape,
            preset.name(),
            params,
            config.patch_size,
            model.num_tokens(),
            config.pool,
            config.pos
        );
        println!(
        "{} epochs × {steps_per_epoch} steps on {}, batch {batch_size}, {:?} lr {lr:e}, wd {weight_decay}, warmup {warmup}, {:?}, clip {}, label smoothing {}, mixup {mixup}, {} threads",
        epochs,
        common::device_label(device, args.run.autocast),
        args.run.optimizer,
        args.schedule,
        args.run.clip,
        args.label_smoothing,
        rayon::current_num_threads()
    );
        if world > 1 {
            println!(
                "data-parallel over {world} ranks ({}): {micro} images per rank per micro-batch",
                common::backends(&pg)
            );
        }
    }
    // timm's rule: no decay on biases, norms, pos_embed and cls_token.
    let opt = run::optimizer(model.named_params(), args.run.optimizer, lr, weight_decay, None, Some(DecayRule::timm(&model)))?;
    // Warmup ends before the last step, however short the run.
    let sched = Scheduler::from_box(run::schedule(args.schedule, lr, 0.0, warmup.min(total_steps.saturating_sub(1)), total_steps)?);
    let loss = CrossEntropyOptions::default().with_label_smoothing(args.label_smoothing);
    let task = ImageClassification::new(model, loader, test, 1000, loss)?;
    let mut metadata = model_metadata(&config.to_json(), input_normalization.as_ref());
    // The loss and augmentation settings, which no other entry records: a resume compares them.
    let recipe = serde_json::json!({
        "label_smoothing": args.label_smoothing,
        "mixup": mixup,
        "crop_padding": augment.crop_padding,
        "hflip": augment.hflip,
    });
    metadata.extend(BTreeMap::from([
        ("dataset".to_string(), args.dataset.name().to_string()),
        ("model".to_string(), preset.name().to_string()),
        ("recipe".to_string(), recipe.to_string()),
    ]));
    let train_config = TrainConfig {
        total_steps,
        stop_at: args.run.stop_at,
        grad_accum: args.run.grad_accum,
        clip: (args.run.clip > 0.0).then_some(args.run.clip),
        eval_every: Some(steps.eval_every),
        log_every: steps_per_epoch,
        checkpoint_every: Some(steps.checkpoint_every),
        out_dir: args.out.clone(),
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
    if let (Some(out), true) = (&args.out, root) {
        run::start_over(OP, out, &args.run, MODEL_FILE)?;
    }
    let summary = trainer.fit();
    // Rank 0 alone writes and reports.
    if !root {
        summary?;
        return Ok(());
    }
    if let Some(dir) = &args.out {
        run::plot_metrics(dir, summary.is_ok());
    }
    let summary = summary?;
    if let Some(dir) = &args.out {
        let path = dir.join(MODEL_FILE);
        checkpoint::save_with_metadata(&path, &checkpoint::module_tensors(&trainer.task.model), &trainer.config.metadata)?;
        // The checkpoint only when this process wrote one (a finished run resumed writes none).
        match &summary.checkpoint {
            Some(ckpt) => println!("saved {} and {}", path.display(), ckpt.display()),
            None => println!("saved {}", path.display()),
        }
    }
    // After the model is safe: a profile that cannot be written is an error.
    run::finish_profile(args.out.as_deref())?;
    let test_acc = summary.metric("test_acc");
    println!(
        "test accuracy {} after {} steps ({} in this process) in {:.1}s",
        test_acc.map_or("unknown".to_string(), |a| format!("{:.2}%", a * 100.0)),
        summary.steps,
        summary.steps_run,
        start.elapsed().as_secs_f64()
    );
    let fin = Record::new("final")
        .with("dataset", args.dataset.name())
        .with("model", preset.name())
        .with("params", params as u64);
    let fin = run::final_record(fin, &summary, start)
        .with("test_acc", test_acc)
        .with("samples", summary.total_samples)
        .with("samples_per_s", summary.samples_per_s.map(f64::round));
    println!("{}", fin.to_json());
    Ok(())
}
