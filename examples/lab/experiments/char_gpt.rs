//! A plain training loop for a character GPT on tinyshakespeare, shared by the
//! text experiments (warmup, the optimizers' GPT half, start-small, batch
//! size): one optimizer and schedule, batches drawn from `(seed, step)`, the
//! validation loss on fixed windows every `eval_every` steps, and the wall
//! time spent training (evaluation excluded) beside each evaluation.

use super::digits::{Opt, Sched};
use super::stats;
use std::path::PathBuf;
use std::time::Instant;
use tamer::data::{CharDataset, TextSplit};
use tamer::models::{Gpt, GptConfig};
use tamer::nn::{admin_profile_blocks, BlockConfig, Module, NormPlacement, TransformerBlock};
use tamer::optim::{Adam, AdamConfig, Constant, DecayRule, OneCycle, Optimizer, Scheduler, Sgd, SgdConfig, WarmupCosine};
use tamer::{no_grad, rng, Device, Error, Result};

const OP: &str = "lab char GPT";

/// `../shared/data/tinyshakespeare.txt` beside the repository.
pub fn data_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join("data")
        .join("tinyshakespeare.txt")
}

/// Why a text experiment cannot run here, if so (the runner skips it with this reason).
pub fn missing_data() -> Option<String> {
    let path = data_path();
    (!path.exists()).then(|| format!("tinyshakespeare is not at {}", path.display()))
}

/// tinyshakespeare, split 90/10 (an error naming the path when it is absent).
pub fn load() -> Result<CharDataset> {
    let path = data_path();
    if !path.exists() {
        return Err(Error::io(
            OP,
            format!("{} is absent: the text experiments need tinyshakespeare beside the repository", path.display()),
        ));
    }
    CharDataset::load(&path)
}

/// The training part split again, for choosing a setting without looking at
/// the validation text: its first 8/9 trains and its last 1/9 (the 10% of the
/// whole text just before the validation part) is the held-out set.
pub fn validation_split(data: &CharDataset) -> CharDataset {
    let cut = data.train.len() * 8 / 9;
    CharDataset {
        chars: data.chars.clone(),
        train: data.train[..cut].to_vec(),
        val: data.train[cut..].to_vec(),
    }
}

/// How one run trains.
#[derive(Clone, Debug)]
pub struct GptRecipe {
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
    /// The context (`block_size`), in characters.
    pub context: usize,
    pub batch_size: usize,
    /// Pre-LN (the model's own) or post-LN (the same initial weights, norms after the residual sums).
    pub norm: NormPlacement,
    /// Admin initialisation (ω from one training batch's embeddings); post-LN only makes sense.
    pub admin: bool,
    pub optimizer: Opt,
    /// Adam's (β₁, β₂); `None` for the library's default.
    pub betas: Option<(f64, f64)>,
    /// AdamW's decoupled weight decay (nanoGPT's rule: matrices and embeddings only).
    pub weight_decay: f64,
    pub schedule: Sched,
    pub peak_lr: f64,
    /// Warmup of `Sched::WarmupCosine` (and of `Sched::Constant`, which then holds the peak).
    pub warmup_steps: u64,
    /// The floor of the cosine decay, as a fraction of the peak.
    pub min_lr_ratio: f64,
    pub steps: u64,
    /// Evaluate every this many steps (and after the last); 0 for the last only.
    pub eval_every: u64,
    /// The validation set: the same `eval_batches` windows of `eval_batch_size` for every run.
    pub eval_batches: u64,
    pub eval_batch_size: usize,
    /// Stop at the first evaluation whose validation loss is at or below this.
    pub stop_below: Option<f64>,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct GptCurve {
    /// Training loss of every step (the last one non-finite if the run diverged).
    pub losses: Vec<f64>,
    /// `(step, validation loss, training seconds so far)` at every evaluation (after `step` updates).
    pub val: Vec<(u64, f64, f64)>,
    /// The first step whose loss was not finite.
    pub diverged_at: Option<u64>,
    /// The parameters of its transformer blocks: Kaplan et al.'s N (embeddings and the final norm excluded).
    pub block_params: usize,
    /// Seconds spent in training steps (batches, forward, backward, update), evaluation excluded.
    pub train_seconds: f64,
}

impl GptCurve {
    /// The last validation loss (non-finite if the run diverged).
    pub fn final_val(&self) -> f64 {
        if self.diverged_at.is_some() {
            return f64::NAN;
        }
        self.val.last().map_or(f64::NAN, |v| v.1)
    }
}

/// The GPT a recipe describes, initialised from `seed` (nanoGPT's initialisation, no dropout).
pub fn model(recipe: &GptRecipe, vocab_size: usize, seed: u64) -> Result<Gpt> {
    let config = GptConfig {
        vocab_size,
        block_size: recipe.context,
        n_layer: recipe.layers,
        n_head: recipe.heads,
        n_embd: recipe.width,
        dropout: 0.0,
        bias: true,
        tie_weights: true,
    };
    let mut gpt = Gpt::new(config, &mut rng(seed))?;
    if recipe.norm == NormPlacement::PostLN {
        let block_config = BlockConfig {
            norm: recipe.norm,
            ..gpt.h[0].config.clone()
        };
        gpt.h = gpt
            .h
            .iter()
            .map(|b| TransformerBlock::from_weights(&block_config, b.named_params().into_iter().map(|(n, p)| (n, p.tensor()))))
            .collect::<Result<_>>()?;
    }
    Ok(gpt)
}

/// The mean loss of `gpt` on the validation windows of `recipe`.
pub fn validation_loss(gpt: &Gpt, recipe: &GptRecipe, data: &CharDataset, device: Device) -> Result<f64> {
    let mut losses = Vec::with_capacity(recipe.eval_batches as usize);
    for i in 0..recipe.eval_batches {
        let (x, y) = data.batch_at(TextSplit::Val, recipe.eval_batch_size, recipe.context, 0, i)?;
        let (_, loss) = no_grad(|| gpt.forward(&x.to_device(device)?, Some(&y.to_device(device)?)))?;
        losses.push(loss.map(|l| l.to_scalar()).transpose()?.unwrap_or(f64::NAN));
    }
    Ok(stats::mean(&losses).unwrap_or(f64::NAN))
}

/// Train a fresh GPT (initialised from `seed`; batches drawn from `seed`) by `recipe`.
pub fn train(recipe: &GptRecipe, data: &CharDataset, seed: u64, device: Device) -> Result<GptCurve> {
    data.check_windows(recipe.context)?;
    let mut gpt = model(recipe, data.vocab_size(), seed)?;
    gpt.to_device(device)?;
    let batch = |step| -> Result<_> {
        let (x, y) = data.batch_at(TextSplit::Train, recipe.batch_size, recipe.context, seed, step)?;
        Ok((x.to_device(device)?, y.to_device(device)?))
    };
    if recipe.admin {
        let (x, _) = batch(0)?;
        let embedded = no_grad(|| gpt.embed(&x))?;
        admin_profile_blocks(&mut gpt.h, &embedded)?;
    }
    let lr = recipe.peak_lr;
    let adam = |config: AdamConfig| match recipe.betas {
        Some((b1, b2)) => config.betas(b1, b2),
        None => config,
    };
    let mut opt: Box<dyn Optimizer> = match recipe.optimizer {
        Opt::Sgd => Box::new(Sgd::new(gpt.named_params(), SgdConfig::new(lr))?),
        Opt::SgdMomentum => Box::new(Sgd::new(gpt.named_params(), SgdConfig::new(lr).momentum(0.9).nesterov(true))?),
        Opt::Adam => Box::new(Adam::new(gpt.named_params(), adam(AdamConfig::adam(lr)))?),
        Opt::AdamW => {
            let config = adam(AdamConfig::adamw(lr)).weight_decay(recipe.weight_decay).decay_rule(DecayRule::NanoGpt);
            Box::new(Adam::new(gpt.named_params(), config)?)
        }
    };
    let mut sched = match recipe.schedule {
        // A warmup to a constant rate: cosine "decay" to the peak itself.
        Sched::Constant if recipe.warmup_steps > 0 => Scheduler::new(WarmupCosine::new(lr, recipe.warmup_steps, recipe.steps.max(recipe.warmup_steps), lr)?),
        Sched::Constant => Scheduler::new(Constant { lr }),
        Sched::WarmupCosine => Scheduler::new(WarmupCosine::new(lr, recipe.warmup_steps, recipe.steps, lr * recipe.min_lr_ratio)?),
        Sched::OneCycle => Scheduler::new(OneCycle::new(lr, recipe.steps)?),
    };
    let mut curve = GptCurve {
        block_params: gpt.h.iter().map(|b| b.num_params()).sum(),
        ..GptCurve::default()
    };
    gpt.set_training(true);
    for step in 0..recipe.steps {
        let started = Instant::now();
        let (x, y) = batch(step)?;
        let (_, loss) = gpt.forward(&x, Some(&y))?;
        let loss = loss.ok_or_else(|| Error::value(OP, "the GPT returned no loss"))?;
        let value = loss.to_scalar()?;
        curve.losses.push(value);
        if !value.is_finite() {
            curve.diverged_at = Some(step + 1);
            curve.train_seconds += started.elapsed().as_secs_f64();
            return Ok(curve);
        }
        let grads = loss.backward()?;
        sched.apply(opt.as_mut())?;
        opt.step(&grads)?;
        sched.advance();
        curve.train_seconds += started.elapsed().as_secs_f64();
        let done = step + 1;
        if (recipe.eval_every > 0 && done % recipe.eval_every == 0) || done == recipe.steps {
            gpt.set_training(false);
            let val = validation_loss(&gpt, recipe, data, device)?;
            gpt.set_training(true);
            curve.val.push((done, val, curve.train_seconds));
            if recipe.stop_below.is_some_and(|target| val <= target) {
                break;
            }
        }
    }
    Ok(curve)
}

/// The validation loss (nats per character) of the bigram model counted on the
/// training text with add-one smoothing: what a model that sees only the
/// previous character can reach, a data-derived target for the GPTs.
pub fn bigram_loss(data: &CharDataset) -> Result<f64> {
    let v = data.vocab_size();
    let mut counts = vec![1.0f64; v * v];
    let mut totals = vec![v as f64; v];
    for pair in data.train.windows(2) {
        let (a, b) = (pair[0] as usize, pair[1] as usize);
        counts[a * v + b] += 1.0;
        totals[a] += 1.0;
    }
    let pairs = data.val.len().saturating_sub(1);
    if pairs == 0 {
        return Err(Error::value(OP, "the validation text has fewer than two characters: no bigram to score"));
    }
    let nll: f64 = data
        .val
        .windows(2)
        .map(|p| (totals[p[0] as usize] / counts[p[0] as usize * v + p[1] as usize]).ln())
        .sum();
    Ok(nll / pairs as f64)
}
