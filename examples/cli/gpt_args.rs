//! Command-line flags of `train_gpt` (shared with tests/integration/train.rs).

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

use tamer::models::GptConfig;
use tamer::optim::DecayRule;

use super::common::{non_negative_f64, positive_f64, positive_u64, positive_usize, unit_interval, RunFlags, ScheduleKind};

/// Train a character-level GPT (nanoGPT's model and recipe) on a text file.
///
/// The defaults are nanoGPT's CPU configuration of shakespeare_char: 4 layers,
/// 4 heads, width 128, context 64, batch 12, 2,000 steps, AdamW (β₂ 0.99,
/// weight decay 0.1) at 1e-3 with 100 warmup steps and cosine decay to 1e-4,
/// clipping at 1.0, no dropout. The model is saved with nanoGPT's names to
/// DIR/gpt.safetensors (with its configuration and the vocabulary in its
/// metadata), which `cargo run --release --example sample_gpt -- --checkpoint
/// DIR/gpt.safetensors` reads. A DIR that already holds a run needs --resume
/// (continue it) or --force (replace it).
/// The last line printed is one JSON object {"event":"final",...,"val_loss":..,"tokens_per_s":..}.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "train_gpt",
    after_help = "Example (scripts/download_data.sh --only shakespeare fetches the text):\n  cargo run --release --example train_gpt -- --text datasets/tinyshakespeare.txt --n-layer 4 --n-head 4 --n-embd 128 \\\n      --block-size 64 --batch-size 12 --steps 2000 --lr 1e-3 --dropout 0"
)]
pub struct GptArgs {
    /// The training text (UTF-8, or gzipped); its first 90% trains, the last 10%
    /// validates (`scripts/download_data.sh --only shakespeare` fetches nanoGPT's).
    #[arg(long, value_name = "FILE")]
    pub text: PathBuf,
    /// Model preset; --n-layer, --n-head, --n-embd, --block-size and --dropout override its fields.
    #[arg(long, value_enum, default_value_t = GptPreset::GptTiny)]
    pub model: GptPreset,
    #[arg(long, value_parser = positive_usize)]
    pub n_layer: Option<usize>,
    #[arg(long, value_parser = positive_usize)]
    pub n_head: Option<usize>,
    #[arg(long, value_parser = positive_usize)]
    pub n_embd: Option<usize>,
    /// Context length in characters.
    #[arg(long, value_parser = positive_usize)]
    pub block_size: Option<usize>,
    /// Sequences per optimizer step (split into --grad-accum micro-batches).
    #[arg(long, value_parser = positive_usize, default_value_t = 12)]
    pub batch_size: usize,
    /// Optimizer steps.
    #[arg(long, value_parser = positive_u64, default_value_t = 2000)]
    pub steps: u64,
    /// Peak learning rate.
    #[arg(long, value_parser = positive_f64, default_value_t = 1e-3)]
    pub lr: f64,
    /// Learning rate at the end of the decay.
    #[arg(long, value_parser = non_negative_f64, default_value_t = 1e-4)]
    pub min_lr: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// Weight decay of every parameter with at least 2 dims, as nanoGPT's
    /// configure_optimizers: the weight matrices and the token and position
    /// embeddings (so the tied lm_head too); biases and LayerNorm gains are
    /// exempt. Decoupled with AdamW, an L2 penalty with Adam and SGD.
    #[arg(long, value_parser = non_negative_f64, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Dropout probability [default: the preset's].
    #[arg(long, value_parser = unit_interval)]
    pub dropout: Option<f64>,
    /// Estimate train and validation loss every this many steps (and at the end).
    #[arg(long, value_parser = positive_u64, default_value_t = 250)]
    pub eval_interval: u64,
    /// Batches per loss estimate.
    #[arg(long, value_parser = positive_usize, default_value_t = 20)]
    pub eval_iters: usize,
    /// Learning-rate schedule after warmup (where it decays, to --min-lr at --steps; nanoGPT's is cosine).
    #[arg(long, value_enum, default_value_t = ScheduleKind::Cosine)]
    pub schedule: ScheduleKind,
    /// Seed of initialisation, batches and dropout.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Output directory: gpt.safetensors, checkpoint.safetensors, metrics.jsonl
    /// (a directory holding a run needs --resume or --force).
    #[arg(long, value_name = "DIR", default_value = "out/train_gpt")]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: RunFlags,
    /// Characters to sample after training (0: no sample).
    #[arg(long, default_value_t = 300)]
    pub sample_tokens: usize,
    /// Print a training line every this many steps.
    #[arg(long, value_parser = positive_u64, default_value_t = 50)]
    pub log_interval: u64,
    /// Write a checkpoint every this many steps (and at the end) [default: --eval-interval].
    #[arg(long, value_parser = positive_u64)]
    pub checkpoint_interval: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GptPreset {
    /// 4 layers, 4 heads, width 128, context 64, no dropout (nanoGPT's CPU config).
    GptTiny,
    /// nanoGPT's shakespeare_char GPU config: 6 layers, 6 heads, width 384, context 256, dropout 0.2.
    GptSmall,
}

impl GptPreset {
    pub fn name(self) -> &'static str {
        match self {
            GptPreset::GptTiny => "gpt-tiny",
            GptPreset::GptSmall => "gpt-small",
        }
    }
}

impl GptArgs {
    pub fn validate(&self) -> Result<(), String> {
        if !self.batch_size.is_multiple_of(self.run.grad_accum) {
            return Err(format!(
                "--batch-size {} must be a multiple of --grad-accum {}",
                self.batch_size, self.run.grad_accum
            ));
        }
        if self.min_lr > self.lr {
            return Err(format!("--min-lr {} is above --lr {}", self.min_lr, self.lr));
        }
        if self.warmup > self.steps {
            return Err(format!("--warmup {} is longer than --steps {}", self.warmup, self.steps));
        }
        self.run.validate()
    }

    /// The model: the preset with the flags' overrides, for `vocab_size` characters.
    pub fn model_config(&self, vocab_size: usize) -> GptConfig {
        let base = match self.model {
            GptPreset::GptTiny => GptConfig::gpt_tiny(),
            GptPreset::GptSmall => GptConfig::gpt_small(),
        };
        GptConfig {
            vocab_size,
            n_layer: self.n_layer.unwrap_or(base.n_layer),
            n_head: self.n_head.unwrap_or(base.n_head),
            n_embd: self.n_embd.unwrap_or(base.n_embd),
            block_size: self.block_size.unwrap_or(base.block_size),
            dropout: self.dropout.unwrap_or(base.dropout),
            ..base
        }
    }
}

/// Which parameters --weight-decay applies to: nanoGPT's rule, every
/// parameter with at least 2 dims (embeddings included).
pub fn decay_rule() -> DecayRule {
    DecayRule::NanoGpt
}
