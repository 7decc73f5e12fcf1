//! A plain training loop for a small ViT on the digits (8×8, 1,437 train and
//! 360 test images), shared by the image experiments: AdamW, warmup then
//! cosine decay, optional global-norm clipping, random batches drawn with the
//! run's seed, test accuracy every `eval_every` steps.

use rand::Rng;
use tamer::data::digits;
use tamer::models::{VisionTransformer, VitConfig};
use tamer::nn::Module;
use tamer::optim::{clip_grad_norm, Adam, AdamConfig, DecayRule, Optimizer, Scheduler, WarmupCosine};
use tamer::{rng, CrossEntropyOptions, Device, Result, Tensor};

/// The digits as tensors on one device.
pub struct Digits {
    pub train_x: Tensor,
    pub train_y: Tensor,
    pub test_x: Tensor,
    pub test_y: Tensor,
    pub train_len: usize,
}

impl Digits {
    pub fn load(device: Device) -> Result<Digits> {
        let (train, test) = digits::load_images()?;
        let (train_x, train_y) = train.tensors()?;
        let (test_x, test_y) = test.tensors()?;
        Ok(Digits {
            train_x: train_x.to_device(device)?,
            train_y: train_y.to_device(device)?,
            test_x: test_x.to_device(device)?,
            test_y: test_y.to_device(device)?,
            train_len: train.len(),
        })
    }
}

/// How one run trains.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub model: VitConfig,
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub steps: u64,
    pub batch_size: usize,
    pub weight_decay: f64,
    /// Global-norm clipping threshold; `None` for no clipping.
    pub clip: Option<f64>,
    pub eval_every: u64,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Curve {
    /// Training loss of every step (non-finite once the run diverged).
    pub losses: Vec<f64>,
    /// Global gradient norm before clipping, every step.
    pub grad_norms: Vec<f64>,
    /// `(step, test accuracy)` at every evaluation (after `step` updates).
    pub test_acc: Vec<(u64, f64)>,
    /// The first step whose loss was not finite.
    pub diverged_at: Option<u64>,
}

/// Test accuracy of `model` on the digits' test part.
pub fn test_accuracy(model: &VisionTransformer, data: &Digits) -> Result<f64> {
    let logits = tamer::no_grad(|| model.forward(&data.test_x))?;
    let correct = tamer::train::count_correct(&logits, &data.test_y)?;
    Ok(correct as f64 / data.test_y.dims()[0] as f64)
}

/// Train a fresh ViT (initialised from `seed`; batches drawn from `seed`) by `recipe`.
pub fn train(recipe: &Recipe, data: &Digits, seed: u64, device: Device) -> Result<Curve> {
    let mut init = rng(seed);
    let mut model = VisionTransformer::new(recipe.model.clone(), &mut init)?;
    model.to_device(device)?;
    model.set_training(true);
    let config = AdamConfig::adamw(recipe.peak_lr)
        .weight_decay(recipe.weight_decay)
        .decay_rule(DecayRule::timm(&model));
    let mut opt = Adam::new(model.named_params(), config)?;
    let min_lr = recipe.peak_lr / 100.0;
    let mut sched = Scheduler::new(WarmupCosine::new(recipe.peak_lr, recipe.warmup_steps, recipe.steps, min_lr)?);
    let params = model.params();
    let mut batches = rng(seed ^ 0x0ba7_c4e5);
    let mut curve = Curve::default();
    let evaluate = |model: &mut VisionTransformer| -> Result<f64> {
        model.set_training(false);
        let acc = test_accuracy(model, data);
        model.set_training(true);
        acc
    };
    curve.test_acc.push((0, evaluate(&mut model)?));
    for step in 1..=recipe.steps {
        let idx: Vec<i64> = (0..recipe.batch_size).map(|_| batches.random_range(0..data.train_len) as i64).collect();
        let idx = Tensor::from_vec(idx, [recipe.batch_size])?.to_device(device)?;
        let x = data.train_x.index_select(0, &idx)?;
        let y = data.train_y.index_select(0, &idx)?;
        let loss = model.forward(&x)?.cross_entropy(&y, CrossEntropyOptions::default())?;
        let loss_value = loss.to_scalar()?;
        curve.losses.push(loss_value);
        if !loss_value.is_finite() {
            curve.diverged_at = Some(step);
            break;
        }
        let mut grads = loss.backward()?;
        let norm = match recipe.clip {
            Some(max) => clip_grad_norm(&mut grads, &params, max)?,
            None => tamer::optim::grad_norm(&grads, &params)?,
        };
        curve.grad_norms.push(norm);
        sched.apply(&mut opt)?;
        opt.step(&grads)?;
        sched.advance();
        if step % recipe.eval_every == 0 || step == recipe.steps {
            curve.test_acc.push((step, evaluate(&mut model)?));
        }
    }
    Ok(curve)
}
