//! Train a Vision Transformer: the README's main command.
//!
//! ```sh
//! cargo run --release --example train_vit                      # digits, the default recipe
//! cargo run --release --example train_vit -- --dataset mnist10k --data-dir ../shared/data/mnist
//! cargo run --release --example train_vit -- --help            # every flag and the recipes
//! ```
//!
//! The recipe: AdamW (no decay on biases, norms, position embeddings and the
//! class token), linear warmup then cosine decay, gradient clipping at 1.0,
//! label smoothing 0.1, mean pooling; an epoch's last partial step is
//! dropped (timm's `drop_last`), so every step sees a full batch. Progress
//! goes to the terminal (a bar when stdout is a terminal) and, with `--out
//! DIR`, to `DIR/metrics.jsonl` with checkpoints in
//! `DIR/checkpoint.safetensors`. The last line on stdout is one JSON object:
//! `{"event":"final","dataset":..,"model":..,"params":..,"steps":..,
//! "seconds":..,"train_loss":..,"test_acc":..}`.

#[path = "cli/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "cli/vit_args.rs"]
mod vit_args;

use clap::Parser;
use common::OptimizerKind;
use std::collections::BTreeMap;
use std::time::Instant;
use tamer::checkpoint;
use tamer::data::{cifar, digits, mnist, Augment, DataLoader, ImageDataset, LoaderConfig, Mixup, Normalization, Split};
use tamer::models::{Pool, PosEmbed, PretrainedOptions, VisionTransformer, VitConfig};
use tamer::nn::Module;
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::optim::{Adam, AdamConfig, Constant, DecayRule, LrSchedule, OneCycle, Optimizer, Scheduler, Sgd, SgdConfig, WarmupCosine, WarmupLinear};
use tamer::train::{ImageClassification, TrainConfig, Trainer, CHECKPOINT_FILE};
use tamer::{rng, Error, Result};
use vit_args::{Dataset, PoolKind, PosKind, Preset, ScheduleKind, VitArgs};

fn main() {
    let args = VitArgs::parse();
    if let Err(msg) = args.validate() {
        eprintln!("error: {msg}");
        std::process::exit(2);
    }
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn load_data(args: &VitArgs) -> Result<(ImageDataset, ImageDataset)> {
    let dir = args.data_dir.clone().unwrap_or_default();
    match args.dataset {
        Dataset::Digits => digits::load_images(),
        Dataset::Mnist => Ok((mnist::load(&dir, Split::Train)?, mnist::load(&dir, Split::Test)?)),
        Dataset::Mnist10k => mnist::mnist10k(&dir),
        Dataset::Cifar10 => Ok((cifar::load(&dir, Split::Train)?, cifar::load(&dir, Split::Test)?)),
    }
}

/// The preset's configuration, adapted to the data set's image shape and the flags.
fn model_config(args: &VitArgs, preset: Preset, patch: Option<usize>, shape: (usize, usize, usize), num_classes: usize) -> Result<VitConfig> {
    let base = match preset {
        Preset::VitDigitsS => VitConfig {
            depth: 2,
            ..VitConfig::vit_digits()
        },
        Preset::VitDigits => VitConfig::vit_digits(),
        Preset::VitTiny => VitConfig::vit_tiny(),
        Preset::HybridMnist => VitConfig::hybrid_mnist(),
        Preset::VitCifar => VitConfig::vit_cifar(),
    };
    let (c, h, w) = shape;
    if base.img_size != (h, w) || base.in_chans != c {
        return Err(Error::value(
            "train_vit",
            format!(
                "--model {} expects {}×{}×{} images but {} has {c}×{h}×{w}; pick a preset made for it",
                preset.name(),
                base.in_chans,
                base.img_size.0,
                base.img_size.1,
                args.dataset.name()
            ),
        ));
    }
    Ok(VitConfig {
        num_classes,
        patch_size: args.patch.or(patch).unwrap_or(base.patch_size),
        pool: match args.pool {
            PoolKind::Cls => Pool::Cls,
            PoolKind::Mean => Pool::Mean,
        },
        block: tamer::nn::BlockConfig {
            dropout: args.dropout,
            drop_path: args.drop_path,
            ..base.block.clone()
        },
        pos: match args.pos {
            PosKind::Learned => PosEmbed::Learned,
            PosKind::Sincos => PosEmbed::SinCos,
        },
        ..base
    })
}

fn schedule(args: &VitArgs, lr: f64, warmup: u64, total: u64) -> Result<Box<dyn LrSchedule>> {
    let warmup = warmup.min(total.saturating_sub(1));
    Ok(match args.schedule {
        ScheduleKind::Cosine => Box::new(WarmupCosine::new(lr, warmup, total, 0.0)?),
        ScheduleKind::Linear => Box::new(WarmupLinear::new(lr, warmup, total, 0.0)?),
        ScheduleKind::Constant if warmup == 0 => Box::new(Constant { lr }),
        ScheduleKind::Constant => Box::new(WarmupLinear::new(lr, warmup, warmup, lr)?),
        ScheduleKind::Onecycle => Box::new(OneCycle::new(lr, total)?),
        ScheduleKind::InverseSqrt => Box::new(common::inverse_sqrt(lr, warmup)?),
    })
}

fn optimizer(args: &VitArgs, model: &VisionTransformer, lr: f64, wd: f64) -> Result<Box<dyn Optimizer>> {
    let named = model.named_params();
    // timm's rule: no decay on biases, norms, pos_embed and cls_token.
    let rule = DecayRule::timm(model);
    Ok(match args.optimizer {
        OptimizerKind::Adamw => Box::new(Adam::new(named, AdamConfig::adamw(lr).weight_decay(wd).decay_rule(rule))?),
        OptimizerKind::Adam => Box::new(Adam::new(named, AdamConfig::adam(lr).weight_decay(wd).decay_rule(rule))?),
        OptimizerKind::Sgd => Box::new(Sgd::new(
            named,
            SgdConfig::new(lr).momentum(0.9).nesterov(true).weight_decay(wd).decay_rule(rule),
        )?),
    })
}

fn run(args: &VitArgs) -> Result<()> {
    let start = Instant::now();
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| Error::value("train_vit", format!("--threads {n}: {e}")))?;
    }
    let device = common::device(args.device)?;
    let recipe = args.dataset.recipe(args.model);
    let preset = recipe.model;
    let (train, test) = load_data(args)?;
    let config = model_config(args, preset, recipe.patch, train.shape, train.num_classes)?;
    let epochs = args.epochs.unwrap_or(recipe.epochs);
    let flag_error = |msg: String| Error::value("train_vit", msg);
    let (batch_size, micro) = args.batch_sizes().map_err(flag_error)?;
    let lr = args.lr.unwrap_or(recipe.lr);
    let warmup = args.warmup.unwrap_or(recipe.warmup);
    let weight_decay = args.weight_decay.unwrap_or(recipe.weight_decay);
    let mixup = args.mixup.unwrap_or(recipe.mixup);

    let model = VisionTransformer::new(config.clone(), &mut rng(args.seed))?;
    if let Some(path) = &args.pretrained {
        let options = PretrainedOptions {
            skip: vec!["optim.*".into()],
            seed: args.seed,
            ..PretrainedOptions::default()
        };
        for note in model.load_pretrained_into(path, &options)? {
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
        .with_batch_multiple(args.grad_accum)
        .with_normalization(Normalization::FromData)
        .with_augment(augment);
    if mixup > 0.0 {
        loader_config = loader_config.with_mixup(Mixup::mixup(mixup));
    }
    let loader = DataLoader::new(train, loader_config)?;
    let steps_per_epoch = (loader.num_batches() / args.grad_accum) as u64;
    let steps = args.step_counts(steps_per_epoch).map_err(flag_error)?;
    let total_steps = steps.total;
    let params = model.num_params();
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
        "{} epochs × {steps_per_epoch} steps on {device}, batch {batch_size}, {:?} lr {lr:e}, wd {weight_decay}, warmup {warmup}, {:?}, clip {}, label smoothing {}, mixup {mixup}, {} threads",
        epochs,
        args.optimizer,
        args.schedule,
        args.clip,
        args.label_smoothing,
        rayon::current_num_threads()
    );
    let opt = optimizer(args, &model, lr, weight_decay)?;
    let sched = Scheduler::from_box(schedule(args, lr, warmup, total_steps)?);
    let loss = CrossEntropyOptions::default().with_label_smoothing(args.label_smoothing);
    let task = ImageClassification::new(model, loader, test, 1000, loss)?;
    let metadata = BTreeMap::from([
        ("dataset".to_string(), args.dataset.name().to_string()),
        ("model".to_string(), preset.name().to_string()),
        ("config".to_string(), format!("{config:?}")),
    ]);
    let train_config = TrainConfig {
        total_steps,
        stop_at: args.stop_at,
        grad_accum: args.grad_accum,
        clip: (args.clip > 0.0).then_some(args.clip),
        eval_every: Some(steps.eval_every),
        log_every: steps_per_epoch,
        checkpoint_every: Some(steps.checkpoint_every),
        out_dir: args.out.clone(),
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
    if let Some(dir) = &args.out {
        let path = dir.join("model.safetensors");
        checkpoint::save_with_metadata(&path, &checkpoint::module_tensors(&trainer.task.model), &trainer.config.metadata)?;
        println!("saved {} and {}", path.display(), dir.join(CHECKPOINT_FILE).display());
    }
    let test_acc = summary.metric("test_acc").unwrap_or(f64::NAN);
    println!(
        "test accuracy {:.2}% after {} steps in {:.1}s",
        test_acc * 100.0,
        summary.steps,
        start.elapsed().as_secs_f64()
    );
    let fin = tamer::train::Record::new("final")
        .with("dataset", args.dataset.name())
        .with("model", preset.name())
        .with("params", params as u64)
        .with("steps", summary.steps)
        .num("seconds", (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0)
        .num("train_loss", summary.train_loss)
        .num("test_acc", test_acc)
        .num("samples_per_s", summary.samples_per_s.round());
    println!("{}", fin.to_json());
    Ok(())
}
