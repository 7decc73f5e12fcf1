//! A plain training loop for a small ViT on the digits (8×8, 1,437 train and
//! 360 test images), shared by the image experiments: AdamW, warmup then
//! cosine decay, optional global-norm clipping, random batches drawn with the
//! run's seed, test accuracy every `eval_every` steps.

use rand::Rng;
use tamer::data::{augment, digits, Augment, ImageDataset};
use tamer::models::{VisionTransformer, VitConfig};
use tamer::nn::Module;
use tamer::optim::{clip_grad_norm, Adam, AdamConfig, Constant, DecayRule, OneCycle, Optimizer, Scheduler, Sgd, SgdConfig, WarmupCosine};
use tamer::{rng, CrossEntropyOptions, Device, Result, Tensor};

/// A training and a held-out image set as tensors on one device (the
/// digits, or MNIST for the experiments that need larger images).
pub struct Images {
    pub train_x: Tensor,
    pub train_y: Tensor,
    pub test_x: Tensor,
    pub test_y: Tensor,
    pub train_len: usize,
    /// The training images on the host, for augmentation.
    pub train_host: ImageDataset,
}

impl Images {
    /// The digits' fixed train/test split.
    pub fn digits(device: Device) -> Result<Images> {
        let (train, test) = digits::load_images()?;
        Self::new(train, test, device)
    }

    /// The training part split 80/20 (a fixed shuffle): the 80% to train on and
    /// the 20% as the held-out set, for choosing a learning rate without
    /// looking at the test images.
    pub fn digits_validation(device: Device) -> Result<Images> {
        let (train, _) = digits::load_images()?;
        let (val, train) = train.random_split(0.2, 0)?;
        Self::new(train, val, device)
    }

    /// `train` and `test` on `device`.
    pub fn new(train: ImageDataset, test: ImageDataset, device: Device) -> Result<Images> {
        let (train_x, train_y) = train.tensors()?;
        let (test_x, test_y) = test.tensors()?;
        Ok(Images {
            train_x: train_x.to_device(device)?,
            train_y: train_y.to_device(device)?,
            test_x: test_x.to_device(device)?,
            test_y: test_y.to_device(device)?,
            train_len: train.len(),
            train_host: train,
        })
    }
}

/// The optimizer of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Opt {
    /// Plain SGD, no momentum.
    Sgd,
    /// SGD with Nesterov momentum 0.9.
    SgdMomentum,
    /// Adam without weight decay.
    Adam,
    /// AdamW with the recipe's weight decay (timm's no-decay set).
    AdamW,
}

/// The learning-rate schedule of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sched {
    /// The peak learning rate throughout.
    Constant,
    /// Linear warmup over `warmup_steps`, then cosine decay to lr/100.
    WarmupCosine,
    /// PyTorch's OneCycleLR with the peak as its maximum.
    OneCycle,
}

/// How one run trains.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub model: VitConfig,
    pub optimizer: Opt,
    pub schedule: Sched,
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub steps: u64,
    pub batch_size: usize,
    pub weight_decay: f64,
    /// Global-norm clipping threshold; `None` for no clipping.
    pub clip: Option<f64>,
    pub eval_every: u64,
    /// No position information: `pos_embed` zeroed and frozen (the model
    /// has no option without one; a zero table adds nothing).
    pub no_positions: bool,
    /// Augmentation of each training image (drawn from the batch stream); `None` for none.
    pub augment: Option<Augment>,
    /// Label smoothing ε of the training loss.
    pub label_smoothing: f64,
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

impl Curve {
    /// The last evaluation's test accuracy, or 0 (a failed run) when the run
    /// diverged or never evaluated.
    pub fn final_accuracy(&self) -> f64 {
        match self.diverged_at {
            Some(_) => 0.0,
            None => self.test_acc.last().map_or(0.0, |a| a.1),
        }
    }
}

/// Test accuracy of `model` on the held-out set.
pub fn test_accuracy(model: &VisionTransformer, data: &Images) -> Result<f64> {
    let logits = tamer::no_grad(|| model.forward(&data.test_x))?;
    let correct = tamer::train::count_correct(&logits, &data.test_y)?;
    Ok(correct as f64 / data.test_y.dims()[0] as f64)
}

/// Train a fresh ViT (initialised from `seed`; batches drawn from `seed`) by `recipe`.
pub fn train(recipe: &Recipe, data: &Images, seed: u64, device: Device) -> Result<Curve> {
    let mut model = VisionTransformer::new(recipe.model.clone(), &mut rng(seed))?;
    train_model(&mut model, recipe, data, seed, device)
}

/// Train `model` (fresh or loaded; `recipe.model` is not consulted) by
/// `recipe`, batches drawn from `seed`.
pub fn train_model(model: &mut VisionTransformer, recipe: &Recipe, data: &Images, seed: u64, device: Device) -> Result<Curve> {
    if recipe.no_positions {
        tamer::nn::init::zeros_(&model.pos_embed)?;
        model.set_trainable_matching("pos_embed", false);
    }
    model.to_device(device)?;
    model.set_training(true);
    let lr = recipe.peak_lr;
    let mut opt: Box<dyn Optimizer> = match recipe.optimizer {
        Opt::Sgd => Box::new(Sgd::new(model.named_params(), SgdConfig::new(lr))?),
        Opt::SgdMomentum => Box::new(Sgd::new(model.named_params(), SgdConfig::new(lr).momentum(0.9).nesterov(true))?),
        Opt::Adam => Box::new(Adam::new(model.named_params(), AdamConfig::adam(lr))?),
        Opt::AdamW => {
            let config = AdamConfig::adamw(lr).weight_decay(recipe.weight_decay).decay_rule(DecayRule::timm(model));
            Box::new(Adam::new(model.named_params(), config)?)
        }
    };
    let mut sched = match recipe.schedule {
        Sched::Constant => Scheduler::new(Constant { lr }),
        Sched::WarmupCosine => Scheduler::new(WarmupCosine::new(lr, recipe.warmup_steps, recipe.steps, lr / 100.0)?),
        Sched::OneCycle => Scheduler::new(OneCycle::new(lr, recipe.steps)?),
    };
    let params = model.params();
    let mut batches = rng(seed ^ 0x0ba7_c4e5);
    let mut curve = Curve::default();
    let evaluate = |model: &mut VisionTransformer| -> Result<f64> {
        model.set_training(false);
        let acc = test_accuracy(model, data);
        model.set_training(true);
        acc
    };
    curve.test_acc.push((0, evaluate(model)?));
    for step in 1..=recipe.steps {
        let idx: Vec<i64> = (0..recipe.batch_size).map(|_| batches.random_range(0..data.train_len) as i64).collect();
        let idx = Tensor::from_vec(idx, [recipe.batch_size])?.to_device(device)?;
        let x = match &recipe.augment {
            None => data.train_x.index_select(0, &idx)?,
            Some(aug) => augmented_batch(&data.train_host, &idx.to_vec::<i64>()?, aug, &mut batches)?.to_device(device)?,
        };
        let y = data.train_y.index_select(0, &idx)?;
        let options = CrossEntropyOptions {
            label_smoothing: recipe.label_smoothing,
            ..CrossEntropyOptions::default()
        };
        let loss = model.forward(&x)?.cross_entropy(&y, options)?;
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
        sched.apply(opt.as_mut())?;
        opt.step(&grads)?;
        sched.advance();
        if step % recipe.eval_every == 0 || step == recipe.steps {
            curve.test_acc.push((step, evaluate(model)?));
        }
    }
    Ok(curve)
}

/// The images at `indices`, each augmented by `aug`, as `[B, C, H, W]` on the host.
fn augmented_batch(images: &ImageDataset, indices: &[i64], aug: &Augment, rng: &mut impl Rng) -> Result<Tensor> {
    let (c, h, w) = images.shape;
    let mut pixels = Vec::with_capacity(indices.len() * c * h * w);
    for &i in indices {
        pixels.extend(augment::apply(images.image(i as usize), images.shape, aug, None, rng));
    }
    Tensor::from_vec(pixels, [indices.len(), c, h, w])
}
