//! The training loop every example uses.
//!
//! ```text
//! for step in start..total_steps:
//!     for micro in 0..grad_accum:                     gradient accumulation
//!         task.reseed(derive_seed(seed, [DROPOUT_TAG, step, micro]))
//!                                                     dropout masks from (seed, step)
//!         loss = task.micro_batch(step, micro)        forward + loss
//!         guard: loss finite?                         else stop, keep the last checkpoint
//!         grads += loss.backward() / grad_accum
//!     norm = clip_grad_norm(grads, clip)              norm before clipping, logged
//!     guard: norm finite?
//!     scheduler.apply(opt); opt.step(grads); scheduler.advance()
//!     log / checkpoint / evaluate on their intervals  (checkpoint first: a failed
//!                                                     evaluation keeps the step's state)
//! ```
//!
//! - A [`TrainTask`] owns the model and the data: [`ImageClassification`]
//!   (a [`Classifier`] over a [`DataLoader`](crate::data::DataLoader)) and
//!   [`CharLanguageModel`] (a GPT over a [`CharDataset`](crate::data::CharDataset)).
//! - At the start of every run, which parameters get weight decay (counts and
//!   names, compacted over layers; see [`DecaySummary`](crate::optim::DecaySummary))
//!   is logged as a `weight_decay` record and a terminal line.
//! - Metrics (loss, accuracy, learning rate, gradient norm, samples/s or
//!   tokens/s, elapsed seconds) go to `metrics.jsonl` in the output directory,
//!   to the terminal, and to an indicatif progress bar shown only when stdout
//!   is a terminal ([`metrics`]). A fresh run starts the file anew; a resumed
//!   one appends, after a `{"event":"resume","step":N}` record. Lines are
//!   written whole, and a cut last line (a crash mid-write) is removed on resume.
//! - A fresh run refuses an output directory that already holds a run
//!   (unless [`TrainConfig::overwrite`]), checks its data before the first
//!   step ([`TrainTask::check_data`]), and removes the temp files a crashed
//!   checkpoint write left behind.
//! - Checkpoints ([`TrainCheckpoint`]) hold the model (under its state-dict
//!   names), the optimizer state (`optim.*`), the schedule's step, the data
//!   stream's position and the step; they are written atomically every
//!   `checkpoint_every` steps and at the end (a run stopped before its first
//!   step gets one at step 0), and two runs of one seed write identical
//!   files. They record the world size and global batch of data-parallel
//!   runs. [`Trainer::resume`] continues a run exactly (on another number of
//!   ranks when the global batch is kept), refusing a
//!   checkpoint of another seed, `grad_accum`, micro-batch size, clipping,
//!   metadata (in both directions; the model configuration field by field),
//!   optimizer setting, parameter group, schedule (field by field) or data
//!   stream, with every difference named (and nothing changed when it
//!   refuses or fails to load). It is exact because every random draw
//!   (initialisation, shuffling, augmentation, dropout) is a function of the
//!   seed and the position, so a run stopped and resumed produces
//!   bit-for-bit the losses of an uninterrupted one.
//! - With [`TrainConfig::diagnostics_every`], every N steps a `diagnostics`
//!   record holds per-layer gradient norms and update-to-weight ratios, and
//!   the rank-collapse residual and attention entropy per layer on the
//!   task's probe batch ([`crate::diagnostics`]).
//! - The divergence guard stops on a non-finite loss or gradient norm before
//!   the parameters are touched, with an error naming the step and the last
//!   good checkpoint, which is left as it was.
//!
//! ```
//! use tamer::data::{digits, DataLoader, LoaderConfig};
//! use tamer::models::{Pool, VisionTransformer, VitConfig};
//! use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
//! use tamer::optim::{Adam, AdamConfig, Scheduler, WarmupCosine};
//! use tamer::nn::Module;
//! use tamer::train::{ImageClassification, TrainConfig, Trainer};
//! let (train, test) = digits::load_images().unwrap();
//! let cfg = VitConfig { pool: Pool::Mean, ..VitConfig::new((8, 8), 4, 1, 10, 16, 1, 2, 2.0) };
//! let model = VisionTransformer::new(cfg, &mut tamer::rng(0)).unwrap();
//! let opt = Adam::new(model.named_params(), AdamConfig::adamw(3e-3).weight_decay(0.05)).unwrap();
//! let loader = DataLoader::new(train, LoaderConfig::train(64, 0)).unwrap();
//! let task = ImageClassification::new(model, loader, test, 512, CrossEntropyOptions::default()).unwrap();
//! let config = TrainConfig { total_steps: 10, clip: Some(1.0), print: false, ..TrainConfig::default() };
//! let sched = Scheduler::new(WarmupCosine::new(3e-3, 2, 10, 0.0).unwrap());
//! let mut trainer = Trainer::new(config, task, Box::new(opt), sched).unwrap();
//! let summary = trainer.fit().unwrap();
//! assert_eq!(summary.steps, 10);
//! assert!(summary.eval.iter().any(|(k, _)| k == "test_acc"));
//! ```

mod agreement;
mod checkpoint;
mod data_parallel;
mod decay_log;
mod diagnostics_log;
pub mod metrics;
mod reseed;
mod resume;
mod sharded_eval;
mod task;
mod trainer;

pub use checkpoint::{batch_layout_difference, RunProgress, TrainCheckpoint, CHECKPOINT_FILE, FORMAT, RESERVED_KEYS};
pub use metrics::{read_jsonl, MetricsLog, Progress, Record};
pub use reseed::Reseed;
pub use sharded_eval::shard_range;
pub use task::{count_correct, CharLanguageModel, Classifier, EvalPart, ImageClassification, MicroBatch, TrainTask, PROBE_SAMPLES};
pub use trainer::{TrainSummary, Trainer, METRICS_FILE};

use std::collections::BTreeMap;
use std::path::PathBuf;

/// How a [`Trainer`] runs.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Optimizer steps of the whole run (what the schedule spans).
    pub total_steps: u64,
    /// Stop this invocation after this many steps in total (a planned
    /// interruption: the run can be resumed to `total_steps`). None: run to the end.
    pub stop_at: Option<u64>,
    /// Micro-batches per optimizer step (gradient accumulation).
    pub grad_accum: usize,
    /// Clip gradients to this global L2 norm (None: no clipping, the norm is still logged).
    pub clip: Option<f64>,
    /// Evaluate every this many steps, and at the last step this invocation runs.
    pub eval_every: Option<u64>,
    /// Log a training line every this many steps (and at the last step).
    pub log_every: u64,
    /// Write a checkpoint every this many steps (and at the end) when `out_dir` is set.
    pub checkpoint_every: Option<u64>,
    /// Where `checkpoint.safetensors` and `metrics.jsonl` go; None: nowhere.
    pub out_dir: Option<PathBuf>,
    /// Let a fresh run start in an `out_dir` that already holds a run,
    /// replacing its checkpoint and metrics. Off by default: [`Trainer::fit`]
    /// refuses, so that no run is lost without being asked.
    pub overwrite: bool,
    /// The run seed: dropout masks are drawn from it, as
    /// `derive_seed(seed, [DROPOUT_TAG, step, micro])` with a fixed tag (the
    /// task's data stream and the model's initialisation take their own seeds).
    pub seed: u64,
    /// Every this many steps, write a `diagnostics` record to the metrics:
    /// per-layer gradient norms (before clipping) and update-to-weight
    /// ratios of that step, and for the task's probe batch
    /// ([`TrainTask::probe_layers`]) the rank-collapse residual at every
    /// depth and each block's attention entropy (see [`crate::diagnostics`]).
    /// None: never. Diagnostics read the model and change nothing, so a run
    /// trains the same with or without them.
    pub diagnostics_every: Option<u64>,
    /// Shard the optimizer state over the ranks (ZeRO stage 1,
    /// [`Zero1`](crate::optim::Zero1), set up when `fit` starts): each rank
    /// keeps and updates the state of its 1/world of the parameters, then
    /// the parameters are all-gathered. It trains as the unsharded run does
    /// (to rounding: the global norm adds the ranks' parts; in a world of
    /// one, exactly), and its checkpoints hold the full state, so either kind
    /// of run resumes the other's. Adam, AdamW and SGD over CPU parameters of
    /// one float type; not with `diagnostics_every`.
    pub zero1: bool,
    /// Average the gradients over the ranks while the backward pass runs
    /// ([`OverlapReducer`](crate::dist::OverlapReducer)), as PyTorch's DDP
    /// does, instead of after it: each bucket of gradients
    /// ([`ProcessGroup::bucket_elems`](crate::dist::ProcessGroup::bucket_elems))
    /// goes out as soon as it is final. CPU parameters of f32 or f64 (with
    /// several ranks) are summed by a communication thread; parameters on
    /// the GPU of the group's NCCL communicator by NCCL on a stream of its
    /// own (also with one rank; written, not yet run on a GPU). Not with
    /// `zero1`; other runs average after the pass. The results are the same
    /// (with two ranks bit for bit). With `grad_accum` > 1 the last
    /// micro-batch's pass sends the accumulated sums. Every trainable
    /// parameter must get a gradient in every step or in none (the bucket
    /// plan is made from the first step; freezing or unfreezing makes a new
    /// one). Off by default: on CPUs the all-reduce is itself CPU work, so it
    /// only pays where each rank has a core to spare for it or waits on a
    /// network (docs/distributed.md has the measurement: on two cores, two
    /// ranks gain nothing).
    pub overlap_grad_sync: bool,
    /// Run each micro-batch's forward pass and loss (and evaluation) under
    /// [`autocast`](crate::autocast()) to this 16-bit type, as
    /// `torch.autocast("cuda", dtype=torch.bfloat16)` around a training
    /// step: CUDA matrix products computed in bf16, everything else as it
    /// was. `BF16` only (f16 would need loss scaling, which the trainer does
    /// not do), and only for a model on a GPU (autocast changes no CPU
    /// product: `fit` refuses rather than silently train in f32). Recorded in
    /// checkpoints; a resume must use the same. None: f32 throughout.
    pub autocast: Option<crate::DType>,
    /// Print human-readable lines (stdout).
    pub print: bool,
    pub progress: Progress,
    /// Extra metadata stored in every checkpoint (model configuration,
    /// vocabulary ...); a resume compares every entry with the checkpoint's,
    /// both ways (an entry the checkpoint has and this lacks is a difference).
    /// The keys in [`RESERVED_KEYS`] and `optim.*`, `schedule.*` are taken.
    pub metadata: BTreeMap<String, String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            total_steps: 1000,
            stop_at: None,
            grad_accum: 1,
            clip: Some(1.0),
            eval_every: None,
            log_every: 10,
            checkpoint_every: None,
            out_dir: None,
            overwrite: false,
            seed: 0,
            diagnostics_every: None,
            zero1: false,
            overlap_grad_sync: false,
            autocast: None,
            print: true,
            progress: Progress::Auto,
            metadata: BTreeMap::new(),
        }
    }
}
