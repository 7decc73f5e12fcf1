//! What the trainer trains: a [`TrainTask`] owns the model and the data, and
//! turns "micro-batch `m` of step `s`" into a loss. Two tasks cover the
//! examples: [`ImageClassification`] (a classifier over a [`DataLoader`]) and
//! [`CharLanguageModel`] (a GPT over a [`CharDataset`]).

use super::Reseed;
use crate::data::{Batch, CharDataset, DataLoader, ImageDataset, LoaderConfig, LoaderState, Normalization, TextSplit};
use crate::diagnostics::{LayerProbe, Probe};
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

/// One rank's part of an evaluation ([`TrainTask::evaluate_part`]): each
/// metric as a sum over what this rank evaluated, and how many it evaluated
/// (examples, or batches). Over all ranks, a metric is its sums added
/// together divided by the counts added together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalPart {
    /// `("test_loss", Σ loss)`, `("test_acc", Σ correct)`, ...
    pub sums: Vec<(String, f64)>,
    /// What the sums are over (0 for a rank that had nothing to evaluate).
    pub count: f64,
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
    /// This rank's part of [`evaluate`](Self::evaluate) when `world` ranks
    /// evaluate together: the metrics of the part as sums, which the trainer
    /// adds over the ranks (see [`EvalPart`] and
    /// [`shard_range`](super::shard_range)). The parts of all ranks must
    /// cover the evaluation once, so that the result is
    /// [`evaluate`](Self::evaluate)'s. None (the default): every rank
    /// evaluates everything.
    fn evaluate_part(&mut self, _rank: usize, _world: usize) -> Result<Option<EvalPart>> {
        Ok(None)
    }
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
    /// An error if the data cannot carry a whole run: an empty training or
    /// evaluation set, a split too short for one batch. The trainer calls it
    /// before the first step, so a run that could not evaluate fails before
    /// it trains rather than after.
    fn check_data(&self) -> Result<()> {
        Ok(())
    }
    /// How a checkpoint's [`data_state`](Self::data_state) differs from
    /// what this task would be at `step` optimizer steps of `grad_accum`
    /// micro-batches: another data seed, another data set, or a position
    /// outside the range this run's epochs give for that step. One line per
    /// difference; empty when the stream continues exactly (or the task
    /// cannot tell, as for an empty state written by older versions).
    fn data_state_differences(&self, _saved: &str, _step: u64, _grad_accum: usize) -> Vec<String> {
        Vec::new()
    }
    /// Per-layer diagnostics of the model on a fixed probe batch (the
    /// rank-collapse residual at every depth and each block's attention
    /// entropy, [`probe_blocks`](crate::diagnostics::probe_blocks)), for the
    /// trainer's [`diagnostics_every`](super::TrainConfig::diagnostics_every)
    /// records. The trainer calls it in eval mode without gradients; it must
    /// not move the data streams. None (the default) when the task has no
    /// probe batch or its model no blocks to look into.
    ///
    /// ```
    /// use tamer::data::{digits, DataLoader, LoaderConfig};
    /// use tamer::models::{Pool, VisionTransformer, VitConfig};
    /// use tamer::train::{ImageClassification, TrainTask};
    /// use tamer::{no_grad, CrossEntropyOptions};
    /// let (train, test) = digits::load_images().unwrap();
    /// let vit = VisionTransformer::new(VitConfig { pool: Pool::Mean, ..VitConfig::new((8, 8), 4, 1, 10, 16, 2, 2, 2.0) }, &mut tamer::rng(0)).unwrap();
    /// let loader = DataLoader::new(train, LoaderConfig::train(32, 0)).unwrap();
    /// let mut task = ImageClassification::new(vit, loader, test, 256, CrossEntropyOptions::default()).unwrap();
    /// task.set_training(false);
    /// let probe = no_grad(|| task.probe_layers()).unwrap().unwrap(); // the first 16 test images
    /// assert_eq!((probe.rank_collapse.len(), probe.attention_entropy.len()), (3, 2));
    /// ```
    fn probe_layers(&mut self) -> Result<Option<LayerProbe>> {
        Ok(None)
    }
    /// Train on this rank's part of the data, for data-parallel training over
    /// `world` processes ([`Trainer::with_process_group`](super::Trainer::with_process_group)):
    /// the ranks' micro-batches together must be the micro-batch one process
    /// would draw with a batch `world` times larger. The default refuses:
    /// a task must say how its data splits.
    fn shard_data(&mut self, rank: usize, world: usize) -> Result<()> {
        Err(Error::value(
            "TrainTask::shard_data",
            format!("this task cannot split its data over ranks (rank {rank} of {world}); it supports one process only"),
        ))
    }
}

/// Examples in the probe batch of the built-in tasks' [`TrainTask::probe_layers`]:
/// enough for stable averages, few enough that `B·H·T²` attention
/// probabilities stay small.
pub const PROBE_SAMPLES: usize = 16;

/// A model that maps images `[B, C, H, W]` to logits `[B, K]`.
pub trait Classifier: Module + Reseed {
    fn logits(&self, x: &Tensor) -> Result<Tensor>;
    /// Whether the model is in train mode.
    fn is_training(&self) -> bool;
    /// Per-layer diagnostics for images `x` (see [`TrainTask::probe_layers`]);
    /// None (the default) for a model without transformer blocks.
    fn probe_layers(&self, _x: &Tensor) -> Result<Option<LayerProbe>> {
        Ok(None)
    }
}

impl Classifier for VisionTransformer {
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(x)
    }
    fn is_training(&self) -> bool {
        VisionTransformer::is_training(self)
    }
    fn probe_layers(&self, x: &Tensor) -> Result<Option<LayerProbe>> {
        self.probe(x).map(Some)
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
        let test = DataLoader::new(
            test,
            LoaderConfig::eval(eval_batch_size)
                .with_normalization(eval_normalization(&train))
                .with_prefetch(0),
        )?;
        Ok(ImageClassification { model, train, test, loss })
    }

    /// The first [`PROBE_SAMPLES`] test images, normalised as the test
    /// loader does, read through a loader of their own so that the test
    /// loader's position is left alone.
    fn probe_batch(&self) -> Result<Option<Tensor>> {
        let n = self.test.dataset().len().min(PROBE_SAMPLES);
        if n == 0 {
            return Ok(None);
        }
        let subset = self.test.dataset().subset(&(0..n).collect::<Vec<_>>())?;
        let mut loader = DataLoader::new(
            subset,
            LoaderConfig::eval(n).with_normalization(eval_normalization(&self.train)).with_prefetch(0),
        )?;
        Ok(loader.next_batch()?.map(|b| b.x))
    }
}

/// The training loader's normalisation, for loaders over held-out images.
fn eval_normalization(train: &DataLoader) -> Normalization {
    match train.normalization() {
        Some((mean, std)) => Normalization::Given {
            mean: mean.clone(),
            std: std.clone(),
        },
        None => Normalization::None,
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
    /// The test images of [`shard_range`](super::shard_range)'s block for
    /// this rank, read in the loader's batches, each cut to the block.
    fn evaluate_part(&mut self, rank: usize, world: usize) -> Result<Option<EvalPart>> {
        let block = super::shard_range(self.test.dataset().len(), rank, world);
        let (mut loss_sum, mut correct, mut offset) = (0.0, 0usize, 0usize);
        let device = self.model.device();
        for batch in self.test.epoch() {
            let batch = batch?;
            let (start, len) = (offset, batch.len());
            offset += len;
            let (lo, hi) = (block.start.max(start), block.end.min(start + len));
            if lo >= hi {
                continue;
            }
            let x = batch.x.narrow(0, lo - start, hi - lo)?.to_device(device)?;
            let y = batch.y.narrow(0, lo - start, hi - lo)?.to_device(device)?;
            let logits = self.model.logits(&x)?;
            loss_sum += logits.cross_entropy(&y, CrossEntropyOptions::default())?.to_scalar()? * (hi - lo) as f64;
            correct += count_correct(&logits, &y)?;
        }
        Ok(Some(EvalPart {
            sums: vec![("test_loss".into(), loss_sum), ("test_acc".into(), correct as f64)],
            count: block.len() as f64,
        }))
    }
    /// The loader's [`LoaderState`] plus the training set's size and the
    /// batches per epoch, which [`data_state_differences`](TrainTask::data_state_differences) checks.
    fn data_state(&self) -> String {
        let s = self.train.state();
        serde_json::json!({
            "seed": s.seed,
            "epoch": s.epoch,
            "position": s.position,
            "examples": self.train.dataset().len(),
            "batches_per_epoch": self.train.num_batches(),
            "epoch_examples": self.train.epoch_examples(),
        })
        .to_string()
    }
    fn set_data_state(&mut self, state: &str) -> Result<()> {
        self.train.set_state(LoaderState::from_json(state)?)
    }
    fn data_state_differences(&self, saved: &str, step: u64, grad_accum: usize) -> Vec<String> {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(saved) else {
            return vec![format!("data state {saved:?} is not the JSON this task writes")];
        };
        let field = |k: &str| v.get(k).and_then(|x| x.as_u64());
        let mut out = Vec::new();
        let current = self.train.state();
        let mut differ = |what: &str, saved: Option<u64>, now: u64| {
            if let Some(s) = saved.filter(|&s| s != now) {
                out.push(format!("{what}: {s} in the checkpoint, {now} in this run"));
            }
        };
        differ("data seed", field("seed"), current.seed);
        differ("training examples", field("examples"), self.train.dataset().len() as u64);
        differ("batches per epoch", field("batches_per_epoch"), self.train.num_batches() as u64);
        // On another number of ranks: the same batches per epoch, but not the same last batch.
        differ(
            "examples per epoch over all ranks (a last partial batch, or the examples the split over ranks leaves out)",
            field("epoch_examples"),
            self.train.epoch_examples() as u64,
        );
        // After k batches the loader is at batch (k − 1) mod n + 1 of epoch ⌊(k − 1) / n⌋
        // (an epoch's end is only noticed when the next batch is asked for).
        let n = self.train.num_batches() as u64;
        let expected = match step.checked_mul(grad_accum as u64) {
            Some(0) => Some((0, 0)),
            Some(k) => Some(((k - 1) / n, (k - 1) % n + 1)),
            None => None,
        };
        if let (Some(epoch), Some(position)) = (field("epoch"), field("position")) {
            if expected != Some((epoch, position)) {
                let want = expected.map_or("beyond u64".to_string(), |(e, p)| format!("epoch {e}, batch {p}"));
                out.push(format!(
                    "data position: the checkpoint's loader is at epoch {epoch}, batch {position}, but step {step} × {grad_accum} micro-batches with this run's {n} batches per epoch is {want}"
                ));
            }
        }
        out
    }
    fn epoch(&self) -> Option<f64> {
        let s = self.train.state();
        Some(s.epoch as f64 + s.position as f64 / self.train.num_batches() as f64)
    }
    fn batch_size(&self) -> Option<usize> {
        Some(self.train.batch_size())
    }
    /// On the first [`PROBE_SAMPLES`] test images.
    /// The training loader's [`shard`](DataLoader::shard): strided over
    /// each epoch's order, equal counts per rank.
    fn shard_data(&mut self, rank: usize, world: usize) -> Result<()> {
        self.train.shard(rank, world)
    }
    fn probe_layers(&mut self) -> Result<Option<LayerProbe>> {
        match self.probe_batch()? {
            Some(x) => self.model.probe_layers(&x.to_device(self.model.device())?),
            None => Ok(None),
        }
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
    /// This process's part of every batch in data-parallel training,
    /// `(rank, world size)`; `(0, 1)` is the whole batch. Rank r draws the
    /// batch of `batch_size × world` windows one process would draw and
    /// trains on its rows `r·batch_size..(r + 1)·batch_size`
    /// ([`TrainTask::shard_data`] sets it).
    pub shard: (usize, usize),
}

impl CharLanguageModel {
    /// The mean loss of `eval_iters` batches of `split` drawn from a fixed seed.
    pub fn estimate_loss(&self, split: TextSplit) -> Result<f64> {
        Ok(self.loss_sum(split, 0, 1)? / self.eval_iters.max(1) as f64)
    }

    /// The summed loss of evaluation batches `first, first + step, ...` of
    /// the `eval_iters` batches of `split` (each of `batch_size × world`
    /// windows, the batch one process draws; see [`estimate_loss`](Self::estimate_loss)).
    fn loss_sum(&self, split: TextSplit, first: usize, step: usize) -> Result<f64> {
        let eval_seed = crate::data::io::derive_seed(self.seed, &[0xe7a1, split as u64]);
        let batch = self.batch_size * self.shard.1;
        let mut total = 0.0;
        for i in (first..self.eval_iters).step_by(step.max(1)) {
            let (x, y) = self.data.batch_at(split, batch, self.block_size, eval_seed, i as u64)?;
            total += self.loss(&x, &y)?.to_scalar()?;
        }
        Ok(total)
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
        let (rank, world) = self.shard;
        let (x, y) = self
            .data
            .batch_at(TextSplit::Train, self.batch_size * world, self.block_size, self.seed, index)?;
        let (x, y) = match world {
            1 => (x, y),
            _ => (
                x.narrow(0, rank * self.batch_size, self.batch_size)?,
                y.narrow(0, rank * self.batch_size, self.batch_size)?,
            ),
        };
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
    /// The stream is a function of the seed and the step; the seed and the
    /// splits' lengths are saved so that a resume on another text or seed is refused.
    fn data_state(&self) -> String {
        serde_json::json!({
            "seed": self.seed,
            "train_chars": self.data.train.len(),
            "val_chars": self.data.val.len(),
            "vocab_size": self.data.vocab_size(),
        })
        .to_string()
    }
    fn data_state_differences(&self, saved: &str, _step: u64, _grad_accum: usize) -> Vec<String> {
        // Checkpoints written before the state was stored have none.
        let Ok(v) = serde_json::from_str::<serde_json::Value>(saved) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, what, now) in [
            ("seed", "data seed", self.seed),
            ("train_chars", "training characters", self.data.train.len() as u64),
            ("val_chars", "validation characters", self.data.val.len() as u64),
            ("vocab_size", "vocabulary size", self.data.vocab_size() as u64),
        ] {
            if let Some(s) = v.get(key).and_then(|x| x.as_u64()).filter(|&s| s != now) {
                out.push(format!("{what}: {s} in the checkpoint, {now} in this run"));
            }
        }
        out
    }
    /// Sets [`shard`](CharLanguageModel::shard): rank r trains on its rows of the batch
    /// one process would draw with `batch_size × world` windows.
    fn shard_data(&mut self, rank: usize, world: usize) -> Result<()> {
        if world == 0 || rank >= world {
            return Err(Error::value(
                "CharLanguageModel",
                format!("shard rank {rank} of a world of {world}: expected rank < world"),
            ));
        }
        self.shard = (rank, world);
        Ok(())
    }
    fn check_data(&self) -> Result<()> {
        let (rank, world) = self.shard;
        if world == 0 || rank >= world {
            return Err(Error::value(
                "CharLanguageModel",
                format!("shard (rank {rank}, world {world}): expected rank < world (one process: (0, 1))"),
            ));
        }
        if self.batch_size == 0 || self.micro_batches == 0 || self.eval_iters == 0 {
            return Err(Error::value(
                "CharLanguageModel",
                format!(
                    "batch_size {}, micro_batches {} and eval_iters {} must be positive (eval_iters 0 would report a loss of 0)",
                    self.batch_size, self.micro_batches, self.eval_iters
                ),
            ));
        }
        self.data.check_windows(self.block_size)
    }
    /// On [`PROBE_SAMPLES`] (at most `batch_size`) validation windows drawn from a fixed seed.
    fn probe_layers(&mut self) -> Result<Option<LayerProbe>> {
        let seed = crate::data::io::derive_seed(self.seed, &[0x9b0e]);
        let (x, _) = self
            .data
            .batch_at(TextSplit::Val, self.batch_size.min(PROBE_SAMPLES), self.block_size, seed, 0)?;
        self.model.probe(&x.to_device(self.model.device())?).map(Some)
    }
    /// Batches `rank, rank + world, ...` of the `eval_iters` of each split.
    fn evaluate_part(&mut self, rank: usize, world: usize) -> Result<Option<EvalPart>> {
        let mut sums = Vec::new();
        if self.eval_train {
            sums.push(("train_loss".to_string(), self.loss_sum(TextSplit::Train, rank, world)?));
        }
        sums.push(("val_loss".to_string(), self.loss_sum(TextSplit::Val, rank, world)?));
        let count = (rank..self.eval_iters).step_by(world.max(1)).count() as f64;
        Ok(Some(EvalPart { sums, count }))
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
