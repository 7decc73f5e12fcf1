//! Command-line flags of `train_vit` (shared with tests/integration/train.rs, which checks
//! the parsing and the error messages).

use super::common::{non_negative_f64, positive_f64, positive_u64, positive_usize, unit_interval, RunFlags, ScheduleKind};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use tamer::models::{Pool, PosEmbed, VitConfig};

/// Train a Vision Transformer with tamer's recipe: AdamW, linear warmup then
/// cosine decay, gradient clipping at 1.0, label smoothing 0.1, mean pooling.
///
/// Every default depends on --dataset (see "Recipes" below); a flag given on
/// the command line overrides it. The last line printed is one JSON object
/// {"event":"final",...} with the test accuracy.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "train_vit",
    // --out has no default here: a resume must name the run.
    mut_arg("resume", |a| a.requires("out")),
    after_help = "Recipes (defaults per data set; every one also: AdamW, warmup + cosine, clip 1.0, label smoothing 0.1, mean pooling):\n  \
        digits    vit-digits-s (patch 2, width 64, 2 layers), 60 epochs, batch 64, lr 2e-3, warmup 100 steps, weight decay 0.3, mixup 0.2\n  \
        mnist10k  vit-tiny with patch 7, 30 epochs, batch 128, lr 2e-3, warmup 200, weight decay 0.05, random crop (padding 2);\n            \
        --model hybrid-mnist: 12 epochs\n  \
        mnist     vit-tiny with patch 7, 8 epochs, batch 128, lr 2e-3, warmup 500, weight decay 0.05, random crop (padding 2);\n            \
        --model hybrid-mnist: 3 epochs\n  \
        cifar10   vit-cifar, 30 epochs, batch 128, lr 1e-3, warmup 1000, weight decay 0.05, random crop (padding 4) + horizontal flip\n\n\
        Examples:\n  \
        cargo run --release --example train_vit\n  \
        scripts/download_data.sh --only mnist,cifar10            # into datasets/ (checksums verified)\n  \
        cargo run --release --example train_vit -- --dataset mnist10k --data-dir datasets/mnist\n  \
        cargo run --release --example train_vit -- --dataset mnist10k --data-dir datasets/mnist --model hybrid-mnist\n  \
        cargo run --release --example train_vit -- --dataset cifar10 --data-dir datasets --out runs/cifar --stop-at 1000   # then --resume"
)]
pub struct VitArgs {
    /// Data set: the vendored 8×8 digits; MNIST (train-* and t10k-* IDX files in
    /// --data-dir); mnist10k (only the t10k-* files: the first 8,000 images train,
    /// the last 2,000 test); CIFAR-10 (binary batches in --data-dir).
    #[arg(long, value_enum, default_value_t = Dataset::Digits)]
    pub dataset: Dataset,
    /// Directory with the data set's files (needed for everything but digits;
    /// `scripts/download_data.sh` puts MNIST in datasets/mnist and CIFAR-10 in datasets).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Model preset [default: the data set's, see Recipes].
    #[arg(long, value_enum)]
    pub model: Option<Preset>,
    /// Passes over the training set.
    #[arg(long, value_parser = positive_u64)]
    pub epochs: Option<u64>,
    /// Examples per optimizer step (split into --grad-accum micro-batches; an
    /// epoch's last partial step is dropped, as timm does) [default: the recipe's].
    #[arg(long, value_parser = positive_usize)]
    pub batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long, value_parser = positive_f64)]
    pub lr: Option<f64>,
    /// Decoupled (AdamW) or L2 (Adam, SGD) weight decay under timm's rule:
    /// biases, norms, position embeddings and the class token are exempt
    /// [default: the recipe's].
    #[arg(long, value_parser = non_negative_f64)]
    pub weight_decay: Option<f64>,
    /// Linear warmup length in optimizer steps [default: the recipe's].
    #[arg(long, value_name = "STEPS")]
    pub warmup: Option<u64>,
    /// Learning-rate schedule after warmup (where it decays, to 0 at the last step).
    #[arg(long, value_enum, default_value_t = ScheduleKind::Cosine)]
    pub schedule: ScheduleKind,
    /// Label smoothing of the training loss, in [0, 1).
    #[arg(long, value_parser = unit_interval, default_value_t = 0.1)]
    pub label_smoothing: f64,
    /// Pooling: the mean of the output tokens, or a class token.
    #[arg(long, value_enum, default_value_t = PoolKind::Mean)]
    pub pool: PoolKind,
    /// Position embeddings: learned, or the fixed 2-D sine-cosine table.
    #[arg(long, value_enum, default_value_t = PosKind::Learned)]
    pub pos: PosKind,
    /// Patch side in pixels (on the stem's feature map for hybrid-mnist); it
    /// must divide the image (or feature map) [default: the preset's].
    #[arg(long, value_parser = positive_usize)]
    pub patch: Option<usize>,
    /// Start from these weights (a timm-format or tamer safetensors file; the
    /// head is re-initialised when the class count differs; a tamer file's
    /// input normalisation replaces the data's own).
    #[arg(long, value_name = "FILE")]
    pub pretrained: Option<PathBuf>,
    /// Seed of initialisation, shuffling, augmentation and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory: checkpoint.safetensors, model.safetensors, metrics.jsonl
    /// (a directory holding a run needs --resume or --force).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunFlags,
    /// Evaluate on the test set every this many epochs (and at the end) [default: 10% of the run].
    #[arg(long, value_parser = positive_u64)]
    pub eval_every: Option<u64>,
    /// Write a checkpoint every this many epochs (and at the end) when --out is set.
    #[arg(long, value_parser = positive_u64, default_value_t = 1)]
    pub checkpoint_every: u64,
    /// Random-crop padding in pixels (0 = off) [default: the recipe's].
    #[arg(long)]
    pub crop_padding: Option<usize>,
    /// Dropout after attention and MLP branches (timm's proj_drop_rate).
    #[arg(long, value_parser = unit_interval, default_value_t = 0.0)]
    pub dropout: f64,
    /// Stochastic depth rate of the last block (linearly from 0 at the first).
    #[arg(long, value_parser = unit_interval, default_value_t = 0.0)]
    pub drop_path: f64,
    /// Mixup with this Beta(α, α) on every batch (0 = off) [default: the recipe's].
    #[arg(long, value_parser = non_negative_f64)]
    pub mixup: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dataset {
    Digits,
    Mnist,
    Mnist10k,
    Cifar10,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// 8×8 digits, patch 2 (16 tokens), width 64, 2 layers, 4 heads, MLP 128.
    VitDigitsS,
    /// 8×8 digits, patch 2, width 64, 4 layers, 4 heads, MLP 128 (136k parameters).
    VitDigits,
    /// 28×28, patch 4 (49 tokens), width 64, 4 layers, 4 heads, MLP 128.
    VitTiny,
    /// 28×28 through a CNN stem (7×7 grid), width 64, 4 layers.
    HybridMnist,
    /// 32×32×3, patch 4, width 192, 6 layers, 3 heads.
    VitCifar,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PoolKind {
    Cls,
    Mean,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PosKind {
    Sincos,
    Learned,
}

/// The defaults a data set brings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recipe {
    pub model: Preset,
    pub epochs: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: u64,
    pub weight_decay: f64,
    pub mixup: f64,
    /// Patch side when it differs from the preset's.
    pub patch: Option<usize>,
    pub crop_padding: usize,
    pub hflip: bool,
}

impl Dataset {
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Digits => "digits",
            Dataset::Mnist => "mnist",
            Dataset::Mnist10k => "mnist10k",
            Dataset::Cifar10 => "cifar10",
        }
    }
    /// The recipe for this data set and model (`None`: the data set's default model).
    pub fn recipe(self, model: Option<Preset>) -> Recipe {
        let base = Recipe {
            model: Preset::VitTiny,
            epochs: 30,
            batch_size: 128,
            lr: 2e-3,
            warmup: 200,
            weight_decay: 0.05,
            mixup: 0.0,
            patch: None,
            crop_padding: 2,
            hflip: false,
        };
        let r = match self {
            Dataset::Digits => Recipe {
                model: Preset::VitDigitsS,
                epochs: 60,
                batch_size: 64,
                warmup: 100,
                weight_decay: 0.3,
                mixup: 0.2,
                crop_padding: 0,
                ..base
            },
            // Patch 7 (16 tokens of 7×7) learns faster per step than patch 4
            // (49 tokens) and costs a third as much.
            Dataset::Mnist10k => Recipe { patch: Some(7), ..base },
            Dataset::Mnist => Recipe {
                epochs: 8,
                warmup: 500,
                patch: Some(7),
                ..base
            },
            Dataset::Cifar10 => Recipe {
                model: Preset::VitCifar,
                lr: 1e-3,
                warmup: 1000,
                crop_padding: 4,
                hflip: true,
                ..base
            },
        };
        match (self, model) {
            (_, None) => r,
            (_, Some(m)) if m == r.model => r,
            // The CNN stem learns quickly but costs about three times as much per image.
            (Dataset::Mnist10k, Some(Preset::HybridMnist)) => Recipe {
                model: Preset::HybridMnist,
                epochs: 12,
                patch: None,
                ..r
            },
            (Dataset::Mnist, Some(Preset::HybridMnist)) => Recipe {
                model: Preset::HybridMnist,
                epochs: 3,
                patch: None,
                ..r
            },
            (_, Some(m)) => Recipe { model: m, patch: None, ..r },
        }
    }
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::VitDigitsS => "vit-digits-s",
            Preset::VitDigits => "vit-digits",
            Preset::VitTiny => "vit-tiny",
            Preset::HybridMnist => "hybrid-mnist",
            Preset::VitCifar => "vit-cifar",
        }
    }
}

/// A run's lengths in optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepCounts {
    pub total: u64,
    pub eval_every: u64,
    pub checkpoint_every: u64,
}

impl VitArgs {
    /// Checks clap cannot express: combinations of flags (and of flags with the recipe).
    pub fn validate(&self) -> Result<(), String> {
        if self.dataset != Dataset::Digits && self.data_dir.is_none() {
            return Err(format!("--dataset {} needs --data-dir DIR (the directory with its files)", self.dataset.name()));
        }
        self.batch_sizes()?;
        self.run.validate()
    }

    /// The batch size (--batch-size or the recipe's) and the micro-batch size
    /// it splits into; an error unless --grad-accum divides it.
    pub fn batch_sizes(&self) -> Result<(usize, usize), String> {
        let batch = self.batch_size.unwrap_or(self.dataset.recipe(self.model).batch_size);
        let accum = self.run.grad_accum;
        if !batch.is_multiple_of(accum) {
            return Err(format!("batch {batch} (recipe or --batch-size) must be a multiple of --grad-accum {accum}"));
        }
        Ok((batch, batch / accum))
    }

    /// The run's length and the evaluation and checkpoint intervals in steps,
    /// from the epoch-based flags (or the recipe's epochs); an error instead
    /// of an overflow.
    pub fn step_counts(&self, steps_per_epoch: u64) -> Result<StepCounts, String> {
        let epochs = self.epochs.unwrap_or(self.dataset.recipe(self.model).epochs);
        let steps = |flag: &str, n: u64| {
            n.checked_mul(steps_per_epoch)
                .ok_or_else(|| format!("{flag} {n} × {steps_per_epoch} steps per epoch is more steps than fit in 64 bits"))
        };
        Ok(StepCounts {
            total: steps("--epochs", epochs)?,
            eval_every: steps("--eval-every", self.eval_every.unwrap_or((epochs / 10).max(1)))?,
            checkpoint_every: steps("--checkpoint-every", self.checkpoint_every)?,
        })
    }
}

impl Preset {
    /// The preset's model (before the data set and the flags adapt it).
    pub fn config(self) -> VitConfig {
        match self {
            Preset::VitDigitsS => VitConfig {
                depth: 2,
                ..VitConfig::vit_digits()
            },
            Preset::VitDigits => VitConfig::vit_digits(),
            Preset::VitTiny => VitConfig::vit_tiny(),
            Preset::HybridMnist => VitConfig::hybrid_mnist(),
            Preset::VitCifar => VitConfig::vit_cifar(),
        }
    }
}

impl VitArgs {
    /// The model: the recipe's preset adapted to the data's image shape
    /// `(C, H, W)` and class count and to the flags. An error if the preset
    /// is made for other images, or if the patch does not divide the image
    /// (the strided projection would silently drop the pixels left over).
    pub fn model_config(&self, shape: (usize, usize, usize), num_classes: usize) -> Result<VitConfig, String> {
        let recipe = self.dataset.recipe(self.model);
        let base = recipe.model.config();
        let (c, h, w) = shape;
        if base.img_size != (h, w) || base.in_chans != c {
            return Err(format!(
                "--model {} expects {}×{}×{} images but {} has {c}×{h}×{w}; pick a preset made for it",
                recipe.model.name(),
                base.in_chans,
                base.img_size.0,
                base.img_size.1,
                self.dataset.name()
            ));
        }
        let config = VitConfig {
            num_classes,
            patch_size: self.patch.or(recipe.patch).unwrap_or(base.patch_size),
            pool: match self.pool {
                PoolKind::Cls => Pool::Cls,
                PoolKind::Mean => Pool::Mean,
            },
            block: tamer::nn::BlockConfig {
                dropout: self.dropout,
                drop_path: self.drop_path,
                ..base.block.clone()
            },
            pos: match self.pos {
                PosKind::Learned => PosEmbed::Learned,
                PosKind::Sincos => PosEmbed::SinCos,
            },
            ..base
        };
        let (fh, fw) = config.feature_size();
        let p = config.patch_size;
        if !fh.is_multiple_of(p) || !fw.is_multiple_of(p) {
            let what = if config.stem.is_some() { "stem's feature map" } else { "images" };
            return Err(format!(
                "--patch {p} does not divide the {fh}×{fw} {what} of --model {} on {}: the last {} row(s) and {} column(s) of pixels would be dropped; use a patch that divides {fh} and {fw}",
                recipe.model.name(),
                self.dataset.name(),
                fh % p,
                fw % p
            ));
        }
        Ok(config)
    }
}
