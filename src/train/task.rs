//! What the trainer trains: a [`TrainTask`] owns the model and the data, and
//! turns "micro-batch `m` of step `s`" into a loss. Two tasks cover the
//! examples: [`ImageClassification`] (a classifier over a [`DataLoader`]) and
//! [`CharLanguageModel`] (a GPT over a [`CharDataset`]).

use super::Reseed;
use crate::data::{Batch, CharDataset, DataLoader, ImageDataset, LoaderConfig, LoaderState, Normalization, TextSplit};
use crate::models::{Gpt, VisionTransformer};
use crate::nn::Module;
use crate::ops::nn::cross_entropy::CrossEntropyOptions;
use crate::{no_grad, Device, Error, Result, Tensor};

/// One micro-batch's loss (with its graph) and what it held.
pub struct MicroBatch {
    /// The mean loss of the micro-batch, a scalar that requires grad.
    pub loss: Tensor,
    /// Examples in the micro-batch.
    pub samples: usize,
    /// Tokens in the micro-batch (language models; 0 otherwise).
    pub tokens: usize,
    /// Correct top-1 predictions, when the task measures accuracy.
    pub correct: Option<usize>,
}

/// What the [`Trainer`](super::Trainer) needs from a model and its data.
///
/// Everything random in a task must be a function of the run seed and the
/// step (see [`Reseed`] and [`LoaderState`]), or be captured by
/// [`data_state`](Self::data_state), so that a resumed run repeats the
/// uninterrupted one exactly.
pub trait TrainTask {
    /// The model: its parameters are optimised and checkpointed.
    fn model(&self) -> &dyn Module;
    /// Switch the model between train and eval mode.
    fn set_training(&mut self, training: bool);
    /// Whether the model is in train mode (what [`Trainer::evaluate`](super::Trainer::evaluate) restores).
    fn is_training(&self) -> bool;
    /// Reseed every random layer of the model (called before each micro-batch).
    fn reseed(&mut self, seed: u64);
    /// The loss of micro-batch `micro` of optimizer step `step` (0-based).
    fn micro_batch(&mut self, step: u64, micro: usize) -> Result<MicroBatch>;
    /// Evaluate (the trainer has set eval mode and disabled gradients):
    /// named metrics such as `("test_acc", 0.98)`, `("val_loss", 1.9)`.
    fn evaluate(&mut self) -> Result<Vec<(String, f64)>>;
    /// The data stream's position, saved in checkpoints (empty if the stream
    /// is a pure function of the step).
    fn data_state(&self) -> String {
        String::new()
    }
    /// Continue the data stream from a saved [`data_state`](Self::data_state).
    fn set_data_state(&mut self, _state: &str) -> Result<()> {
        Ok(())
    }
    /// Epochs done so far (fractional), for logs; None when the task has no epochs.
    fn epoch(&self) -> Option<f64> {
        None
    }
    /// Examples per micro-batch, stored in checkpoints so that a resume with
    /// another batch size is refused; None when the task has no fixed size.
    fn batch_size(&self) -> Option<usize> {
        None
    }
}

/// A model that maps images `[B, C, H, W]` to logits `[B, K]`.
pub trait Classifier: Module + Reseed {
    fn logits(&self, x: &Tensor) -> Result<Tensor>;
    /// Whether the model is in train mode.
    fn is_training(&self) -> bool;
}

impl Classifier for VisionTransformer {
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(x)
    }
    fn is_training(&self) -> bool {
        VisionTransformer::is_training(self)
    }
}

/// A batch from the (host) loader on `device`, the model's: images and targets.
fn batch_on(batch: Batch, device: Device) -> Result<Batch> {
    Ok(Batch {
        x: batch.x.to_device(device)?,
        y: batch.y.to_device(device)?,
        y_b: batch.y_b.map(|t| t.to_device(device)).transpose()?,
        ..batch
    })
}

/// Correct top-1 predictions of `logits [B, K]` against `labels [B]`.
pub fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(-1, false)?.to_vec::<i64>()?;
    let truth = labels.to_vec::<i64>()?;
    Ok(pred.iter().zip(&truth).filter(|(a, b)| a == b).count())
}

/// Image classification: training batches from a [`DataLoader`] (shuffling,
/// augmentation, mixup), evaluation over a held-out [`ImageDataset`]
/// (reported as `test_loss` and `test_acc`).
pub struct ImageClassification<M: Classifier> {
    pub model: M,
    pub train: DataLoader,
    pub test: DataLoader,
    /// Label smoothing and the like for the training loss; the test loss is plain cross-entropy.
    pub loss: CrossEntropyOptions,
}

impl<M: Classifier> ImageClassification<M> {
    /// The test loader uses the training loader's normalisation.
    pub fn new(model: M, train: DataLoader, test: ImageDataset, eval_batch_size: usize, loss: CrossEntropyOptions) -> Result<Self> {
        let norm = match train.normalization() {
            Some((mean, std)) => Normalization::Given {
                mean: mean.clone(),
                std: std.clone(),
            },
            None => Normalization::None,
        };
        let test = DataLoader::new(test, LoaderConfig::eval(eval_batch_size).with_normalization(norm).with_prefetch(0))?;
        Ok(ImageClassification { model, train, test, loss })
    }
}

impl<M: Classifier> TrainTask for ImageClassification<M> {
    fn model(&self) -> &dyn Module {
        &self.model
    }
    fn set_training(&mut self, training: bool) {
        self.model.set_training(training);
    }
    fn is_training(&self) -> bool {
        self.model.is_training()
    }
    fn reseed(&mut self, seed: u64) {
        self.model.reseed(seed);
    }
    fn micro_batch(&mut self, _step: u64, _micro: usize) -> Result<MicroBatch> {
        // An epoch ends with one None; the next call starts the next epoch.
        let batch = match self.train.next_batch()? {
            Some(b) => b,
            None => self
                .train
                .next_batch()?
                .ok_or_else(|| Error::value("ImageClassification", "the training loader produced an empty epoch"))?,
        };
        let batch = batch_on(batch, self.model.device())?;
        let logits = self.model.logits(&batch.x)?;
        let loss = batch.loss(&logits, self.loss)?;
        // With mixup, accuracy is against the label that dominates the mix.
        let target = match &batch.y_b {
            Some(y_b) if batch.lam < 0.5 => y_b,
            _ => &batch.y,
        };
        let correct = no_grad(|| count_correct(&logits, target))?;
        Ok(MicroBatch {
            loss,
            samples: batch.len(),
            tokens: 0,
            correct: Some(correct),
        })
    }
    fn evaluate(&mut self) -> Result<Vec<(String, f64)>> {
        let (mut loss_sum, mut correct, mut n) = (0.0, 0usize, 0usize);
        let device = self.model.device();
        for batch in self.test.epoch() {
            let batch = batch_on(batch?, device)?;
            let logits = self.model.logits(&batch.x)?;
            loss_sum += logits.cross_entropy(&batch.y, CrossEntropyOptions::default())?.to_scalar()? * batch.len() as f64;
            correct += count_correct(&logits, &batch.y)?;
            n += batch.len();
        }
        let n = n.max(1) as f64;
        Ok(vec![("test_loss".into(), loss_sum / n), ("test_acc".into(), correct as f64 / n)])
    }
    fn data_state(&self) -> String {
        self.train.state().to_json()
    }
    fn set_data_state(&mut self, state: &str) -> Result<()> {
        self.train.set_state(LoaderState::from_json(state)?)
    }
    fn epoch(&self) -> Option<f64> {
        let s = self.train.state();
        Some(s.epoch as f64 + s.position as f64 / self.train.num_batches() as f64)
    }
    fn batch_size(&self) -> Option<usize> {
        Some(self.train.batch_size())
    }
}

/// Character-level language modelling as nanoGPT does it: each micro-batch is
/// `batch_size` random windows of `block_size + 1` characters from the
/// training split, drawn from `(seed, step·micro_batches + micro)` so the
/// stream needs no saved state; evaluation averages the loss of `eval_iters`
/// fixed batches per split (`val_loss`, and `train_loss` when `eval_train`).
pub struct CharLanguageModel {
    pub model: Gpt,
    pub data: CharDataset,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    pub block_size: usize,
    /// Micro-batches per optimizer step: must be the trainer's
    /// [`grad_accum`](super::TrainConfig::grad_accum) (a micro-batch index at
    /// or past it is an error, since batches would repeat across steps).
    pub micro_batches: usize,
    pub eval_iters: usize,
    pub eval_train: bool,
    pub seed: u64,
}

impl CharLanguageModel {
    /// The mean loss of `eval_iters` batches of `split` drawn from a fixed seed.
    pub fn estimate_loss(&self, split: TextSplit) -> Result<f64> {
        let eval_seed = crate::data::io::derive_seed(self.seed, &[0xe7a1, split as u64]);
        let mut total = 0.0;
        for i in 0..self.eval_iters {
            let (x, y) = self.data.batch_at(split, self.batch_size, self.block_size, eval_seed, i as u64)?;
            total += self.loss(&x, &y)?.to_scalar()?;
        }
        Ok(total / self.eval_iters.max(1) as f64)
    }

    /// The model's mean loss on tokens `x` with targets `y` (host batches,
    /// moved to the model's device first).
    fn loss(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let device = self.model.device();
        let (_, loss) = self.model.forward(&x.to_device(device)?, Some(&y.to_device(device)?))?;
        loss.ok_or_else(|| Error::value("CharLanguageModel", "the model returned no loss"))
    }
}

impl TrainTask for CharLanguageModel {
    fn model(&self) -> &dyn Module {
        &self.model
    }
    fn set_training(&mut self, training: bool) {
        self.model.set_training(training);
    }
    fn is_training(&self) -> bool {
        self.model.drop.training
    }
    fn reseed(&mut self, seed: u64) {
        self.model.reseed(seed);
    }
    fn micro_batch(&mut self, step: u64, micro: usize) -> Result<MicroBatch> {
        if micro >= self.micro_batches {
            return Err(Error::value(
                "CharLanguageModel",
                format!(
                    "micro-batch {micro} of step {step} was asked for but micro_batches is {}, so batches would repeat \
                     across steps; set micro_batches to the trainer's grad_accum",
                    self.micro_batches
                ),
            ));
        }
        let index = (step.checked_mul(self.micro_batches as u64))
            .and_then(|i| i.checked_add(micro as u64))
            .ok_or_else(|| Error::value("CharLanguageModel", format!("batch index of step {step} overflows u64")))?;
        let (x, y) = self.data.batch_at(TextSplit::Train, self.batch_size, self.block_size, self.seed, index)?;
        let loss = self.loss(&x, &y)?;
        Ok(MicroBatch {
            loss,
            samples: self.batch_size,
            tokens: self.batch_size * self.block_size,
            correct: None,
        })
    }
    fn batch_size(&self) -> Option<usize> {
        Some(self.batch_size)
    }
    fn evaluate(&mut self) -> Result<Vec<(String, f64)>> {
        let mut out = Vec::new();
        if self.eval_train {
            out.push(("train_loss".to_string(), self.estimate_loss(TextSplit::Train)?));
        }
        out.push(("val_loss".to_string(), self.estimate_loss(TextSplit::Val)?));
        Ok(out)
    }
}
