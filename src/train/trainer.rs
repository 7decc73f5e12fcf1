//! The loop: see the module docs of [`crate::train`].

use super::checkpoint::{check_metadata_keys, RunProgress, TrainCheckpoint, CHECKPOINT_FILE};
use super::data_parallel::{all_ok, average_grads, backward_overlapped, broadcast_params, refresh_overlap};
use super::decay_log::decay_record;
use super::diagnostics_log::{diagnostics_line, diagnostics_record};
use super::metrics::{eval_line, train_line, MetricsLog, Progress, Record};
use super::resume;
use super::{agreement, sharded_eval};
use super::{TrainConfig, TrainTask};
use crate::data::io::derive_seed;
use crate::diagnostics::{LayerProbe, StepDiagnostics};
use crate::dist::OverlapReducer;
use crate::dist::{FlatBuffers, ProcessGroup, ReduceOp};
use crate::nn::Param;
use crate::optim::{clip_grad_norm, grad_norm, DecaySummary, GradAccumulator, Optimizer, Scheduler, Zero1};
use crate::{no_grad, Error, GradStore, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

const OP: &str = "Trainer";
/// Tags the dropout-seed stream apart from the data streams.
const DROPOUT_TAG: u64 = 0xd209;
/// The metrics file's name inside a run's output directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// What a finished (or stopped) run reports: this invocation of
/// [`Trainer::fit`], and the run as a whole (across resumes).
#[derive(Clone, Debug, Default)]
pub struct TrainSummary {
    /// Optimizer steps done in total (including those before a resume).
    pub steps: u64,
    /// Steps this invocation ran (0 after `stop_at: Some(0)` or a resume of a finished run).
    pub steps_run: u64,
    /// Wall-clock seconds of this invocation (evaluation and checkpoint writes included).
    pub seconds: f64,
    /// Seconds spent in training steps over the whole run (forward,
    /// backward, clipping and the optimizer update of every step; evaluation
    /// and checkpoint writes are not training): this invocation's plus the
    /// earlier ones' up to the checkpoint it resumed from (read back from
    /// `metrics.jsonl`). An invocation that trains no step adds nothing.
    /// None when the earlier time is not known.
    pub total_seconds: Option<f64>,
    /// The loss of every step this invocation ran (mean over its micro-batches), in order.
    pub losses: Vec<f64>,
    /// The mean training loss over the last logging window, of this
    /// invocation or, when it trained nothing, of the checkpoint it resumed
    /// from; None when the run has not trained a step.
    pub train_loss: Option<f64>,
    /// The last evaluation's metrics.
    pub eval: Vec<(String, f64)>,
    /// Samples (and tokens) per second of training in this invocation,
    /// evaluation excluded; None when it trained no step (tokens: or no tokens).
    pub samples_per_s: Option<f64>,
    pub tokens_per_s: Option<f64>,
    /// Samples and tokens trained on over the whole run.
    pub total_samples: u64,
    pub total_tokens: u64,
    /// Where this invocation last wrote a checkpoint (None when it wrote none,
    /// as a resume of a finished run).
    pub checkpoint: Option<PathBuf>,
}

impl TrainSummary {
    /// The last evaluation's value of `name`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.eval.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// What one step's micro-batches held.
struct Counts {
    samples: usize,
    tokens: usize,
    correct: Option<usize>,
}

/// Sums over the steps since the last log line.
#[derive(Default)]
struct Window {
    steps: u64,
    loss: f64,
    samples: usize,
    tokens: usize,
    correct: usize,
    counted: usize,
    seconds: f64,
}

/// Runs a [`TrainTask`] with an optimizer and a schedule.
pub struct Trainer<T: TrainTask> {
    pub config: TrainConfig,
    pub task: T,
    pub optimizer: Box<dyn Optimizer>,
    pub scheduler: Scheduler,
    /// Optimizer steps done (after a resume: those of the checkpoint).
    pub step: u64,
    params: Vec<Param>,
    last_checkpoint: Option<(u64, PathBuf)>,
    /// Set by [`resume`](Self::resume): the step the next `fit` logs a resume record at.
    resumed_at: Option<u64>,
    /// What [`resume`](Self::resume) noted (files from older versions), logged by the next `fit`.
    resume_notes: Vec<String>,
    /// Samples, tokens and the last training loss over the whole run.
    progress: RunProgress,
    /// Seconds of training before this trainer's next `fit` (earlier
    /// processes up to the checkpoint resumed from, earlier fits); None when unknown.
    earlier_seconds: Option<f64>,
    /// Whether a `fit` of this trainer has started writing its run: a later
    /// `fit` continues that run (and its files) rather than starting afresh.
    fitted: bool,
    /// The ranks training together (a world of one unless
    /// [`with_process_group`](Self::with_process_group) says otherwise).
    dist: ProcessGroup,
    /// Host buffers the gradients are averaged through, kept across steps.
    grad_buffers: FlatBuffers,
    /// Averages the gradients during the backward pass, when the run can
    /// ([`TrainConfig::overlap_grad_sync`]); checked before each step, and
    /// remade when the trainable parameters change.
    overlap: Option<OverlapReducer>,
}

impl<T: TrainTask> Trainer<T> {
    pub fn new(config: TrainConfig, task: T, optimizer: Box<dyn Optimizer>, scheduler: Scheduler) -> Result<Self> {
        if config.grad_accum == 0 {
            return Err(Error::value(OP, "grad_accum must be at least 1"));
        }
        if config.log_every == 0 || config.eval_every == Some(0) || config.checkpoint_every == Some(0) || config.diagnostics_every == Some(0) {
            return Err(Error::value(
                OP,
                "log_every, eval_every, checkpoint_every and diagnostics_every must be at least 1",
            ));
        }
        if let Some(c) = config.clip {
            if !(c > 0.0 && c.is_finite()) {
                return Err(Error::value(OP, format!("clip {c} must be a positive finite norm")));
            }
        }
        check_metadata_keys(OP, &config.metadata)?;
        match config.autocast {
            None | Some(crate::DType::BF16) => {}
            Some(crate::DType::F16) => {
                return Err(Error::dtype(
                    OP,
                    "autocast to f16 needs loss scaling (a GradScaler), which the trainer does not do; use bf16",
                ))
            }
            Some(other) => return Err(Error::dtype(OP, format!("autocast to {other}: expected bf16 (or None)"))),
        }
        let params = optimizer.params();
        Ok(Trainer {
            config,
            task,
            optimizer,
            scheduler,
            step: 0,
            params,
            last_checkpoint: None,
            resumed_at: None,
            resume_notes: Vec::new(),
            progress: RunProgress::default(),
            earlier_seconds: Some(0.0),
            fitted: false,
            dist: ProcessGroup::single(),
            grad_buffers: FlatBuffers::default(),
            overlap: None,
        })
    }

    /// Train data-parallel over the ranks of `pg`: each rank reads its own
    /// shard of every epoch ([`TrainTask::shard_data`]), with the
    /// micro-batch size it was given (the global batch is `world_size` times
    /// it); `fit` starts from rank 0's parameters; the gradients are averaged
    /// over the ranks after backward and before clipping, so the norm, the
    /// clip and the optimizer step are the same on every rank; the logged
    /// loss and sample counts are over all ranks. Rank 0 alone writes
    /// checkpoints and metrics and prints; each rank evaluates its part of
    /// the held-out data and the metrics are reduced
    /// ([`TrainTask::evaluate_part`]). A world of one changes nothing. Every
    /// rank must be built alike (model, optimizer, configuration; `fit`
    /// compares them at its start and refuses to train otherwise), and all
    /// call `fit`. Call it before [`resume`](Self::resume): sharding restarts
    /// the data stream, and a resume then continues the shard's stream.
    ///
    /// A failure on one rank alone in a step (a micro-batch that cannot be
    /// read, say) returns the error on that rank while the others wait in a
    /// collective: end the rank with [`ProcessGroup::abort_on_error`] (the
    /// examples do), which stops the whole job. A panic does so by itself: on
    /// several ranks this installs [`ProcessGroup::abort_on_panic`].
    /// Failures at the start (an output directory that holds a run, data
    /// that cannot carry the run, settings that differ) and of checkpoint
    /// writes stop every rank with an error.
    ///
    /// ```
    /// # use tamer::data::{digits, DataLoader, LoaderConfig};
    /// # use tamer::models::{Pool, VisionTransformer, VitConfig};
    /// # use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
    /// # use tamer::optim::{Adam, AdamConfig, Scheduler, Constant};
    /// # use tamer::nn::Module;
    /// # use tamer::train::{ImageClassification, TrainConfig, Trainer};
    /// use tamer::dist::ProcessGroup;
    /// # let (train, test) = digits::load_images().unwrap();
    /// # let model = VisionTransformer::new(VitConfig { pool: Pool::Mean, ..VitConfig::new((8, 8), 4, 1, 10, 16, 1, 2, 2.0) }, &mut tamer::rng(0)).unwrap();
    /// # let opt = Adam::new(model.named_params(), AdamConfig::adamw(1e-3)).unwrap();
    /// # let task = ImageClassification::new(model, DataLoader::new(train, LoaderConfig::train(32, 0)).unwrap(), test, 512, CrossEntropyOptions::default()).unwrap();
    /// # let config = TrainConfig { total_steps: 2, print: false, ..TrainConfig::default() };
    /// # let sched = Scheduler::new(Constant { lr: 1e-3 });
    /// // Under `mpirun -np 2` (feature `mpi`) this is a world of two.
    /// let pg = ProcessGroup::from_env().unwrap();
    /// let mut trainer = Trainer::new(config, task, Box::new(opt), sched).unwrap().with_process_group(pg).unwrap();
    /// assert_eq!(trainer.fit().unwrap().steps, 2);
    /// ```
    pub fn with_process_group(mut self, pg: ProcessGroup) -> Result<Self> {
        if pg.world_size() > 1 {
            self.task.shard_data(pg.rank(), pg.world_size())?;
            // A panic on one rank would leave the others waiting in a collective.
            pg.abort_on_panic();
        }
        self.dist = pg;
        Ok(self)
    }

    /// The ranks this trainer trains over.
    pub fn process_group(&self) -> &ProcessGroup {
        &self.dist
    }

    /// How many buckets the gradients travel in during the backward pass
    /// ([`TrainConfig::overlap_grad_sync`]), once a step has made the plan;
    /// None when they are averaged after it (overlap off, one rank without
    /// NCCL, ZeRO-1, GPU parameters without NCCL on their GPU).
    pub fn overlap_buckets(&self) -> Option<usize> {
        self.overlap.as_ref().filter(|r| r.is_planned()).map(OverlapReducer::bucket_count)
    }

    /// The checkpoint path in the output directory, if there is one.
    pub fn checkpoint_path(&self) -> Option<PathBuf> {
        self.config.out_dir.as_ref().map(|d| d.join(CHECKPOINT_FILE))
    }

    /// Continue from a checkpoint: model, optimizer, schedule, data stream and step.
    ///
    /// The checkpoint must be one this run would have written: the same run
    /// seed, `grad_accum`, micro-batch size (or, when it was written by
    /// another number of ranks than this run's process group has, the same
    /// global batch: [`batch_layout_difference`](super::batch_layout_difference))
    /// and gradient clipping, the same
    /// [`TrainConfig::metadata`] entries (each key on both sides; JSON entries
    /// such as `model_config` are compared field by field), every optimizer
    /// setting (β₁ or momentum too, unless the schedule cycles it; the
    /// learning rate follows the schedule), the parameter groups' weight
    /// decay, the schedule (field by field), and the data stream (its seed,
    /// the data set's size, and a position inside the range this run's
    /// epochs give for the step). Otherwise the error lists every difference
    /// by name. On any error nothing is changed: a file that passes these
    /// checks but fails to load (a damaged optimizer state, say) leaves the
    /// model, optimizer, schedule and data stream as they were
    /// ([`TrainCheckpoint::restore`]). Returns notes on what a file from an
    /// older version did not allow to check.
    pub fn resume(&mut self, path: impl Into<PathBuf>) -> Result<Vec<String>> {
        let path = path.into();
        let ckpt = TrainCheckpoint::read(&path)?;
        let src = path.display();
        if ckpt.step > self.config.total_steps {
            return Err(Error::value(
                OP,
                format!("{src} is at step {}, past this run's {} steps", ckpt.step, self.config.total_steps),
            ));
        }
        let comparison = resume::compare(
            &ckpt,
            &self.config,
            &self.task,
            self.optimizer.as_ref(),
            &self.scheduler,
            self.dist.world_size(),
        )?;
        if !comparison.differences.is_empty() {
            return Err(Error::value(
                OP,
                format!(
                    "{src} was written by a run with other settings; resume with the original run's settings (or start a new run elsewhere). {} difference(s):\n  - {}",
                    comparison.differences.len(),
                    comparison.differences.join("\n  - ")
                ),
            ));
        }
        ckpt.restore(&mut self.task, self.optimizer.as_mut(), &mut self.scheduler)?;
        let mut notes = comparison.notes;
        self.progress = ckpt.progress.unwrap_or_else(|| {
            notes.push(format!("{src} has no progress entry (an older file): sample counts start from here"));
            RunProgress::default()
        });
        let metrics = path.parent().map(|d| d.join(METRICS_FILE));
        self.earlier_seconds = metrics.as_deref().and_then(|m| seconds_at_checkpoint(m, ckpt.step));
        if self.earlier_seconds.is_none() {
            notes.push(format!(
                "the training time before step {} is unknown (no checkpoint record with run_seconds in {}): the total time is not reported",
                ckpt.step,
                metrics.map_or("metrics.jsonl".into(), |m| m.display().to_string())
            ));
        }
        self.step = ckpt.step;
        self.last_checkpoint = Some((ckpt.step, path));
        self.resumed_at = Some(ckpt.step);
        self.resume_notes = notes.clone();
        Ok(notes)
    }

    /// Write a checkpoint of the current state to the output directory
    /// (on rank 0 only: the others return None).
    pub fn save_checkpoint(&mut self) -> Result<Option<PathBuf>> {
        let Some(path) = self.checkpoint_path() else { return Ok(None) };
        if !self.dist.is_root() {
            if self.optimizer.zero1().is_some() {
                // Rank 0 gathers the sharded state it writes from every rank.
                self.optimizer.state_dict()?;
            }
            // Rank 0 writes it; every rank keeps the same record of it, so
            // that all take the same branches (and collectives) in `fit`.
            self.last_checkpoint = Some((self.step, path));
            return Ok(None);
        }
        TrainCheckpoint::save(
            &path,
            &self.task,
            self.optimizer.as_ref(),
            &self.scheduler,
            &self.config,
            self.step,
            &self.progress,
            self.dist.world_size(),
        )?;
        self.last_checkpoint = Some((self.step, path.clone()));
        Ok(Some(path))
    }

    /// Evaluate in eval mode without gradients, then return to the mode the
    /// task was in. On several ranks each evaluates its part
    /// ([`TrainTask::evaluate_part`]) and the metrics are reduced over them:
    /// every rank must call it.
    pub fn evaluate(&mut self) -> Result<Vec<(String, f64)>> {
        let was_training = self.task.is_training();
        self.task.set_training(false);
        let (dist, task) = (&self.dist, &mut self.task);
        let metrics = under_autocast(self.config.autocast, || no_grad(|| sharded_eval::evaluate(dist, task)));
        self.task.set_training(was_training);
        metrics
    }

    /// The task's [`probe_layers`](TrainTask::probe_layers), in eval mode
    /// without gradients (as [`evaluate`](Self::evaluate)).
    fn probe_layers(&mut self) -> Result<Option<LayerProbe>> {
        let was_training = self.task.is_training();
        self.task.set_training(false);
        let probe = no_grad(|| self.task.probe_layers());
        self.task.set_training(was_training);
        probe
    }

    /// [`evaluate`](Self::evaluate), and write the eval record and line.
    fn evaluate_and_log(&mut self, log: &mut MetricsLog, start: Instant) -> Result<Vec<(String, f64)>> {
        let te = Instant::now();
        let eval = self.evaluate()?;
        let mut rec = Record::new("eval").with("step", self.step);
        if let Some(e) = self.task.epoch() {
            rec = rec.num("epoch", e);
        }
        for (k, v) in &eval {
            rec = rec.num(k, *v);
        }
        rec = rec
            .num("eval_seconds", te.elapsed().as_secs_f64())
            .num("elapsed", start.elapsed().as_secs_f64());
        log.write(&rec)?;
        log.println(&eval_line(&rec));
        Ok(eval)
    }

    /// Train from the current step to `total_steps` (or `stop_at`).
    ///
    /// Before anything is written: a fresh run refuses an output directory
    /// that already holds a run (a checkpoint or metrics), unless
    /// [`TrainConfig::overwrite`] says to start over (the old checkpoint is
    /// then removed); the task's data is checked ([`TrainTask::check_data`]);
    /// temp files that a crashed save left in the directory are removed.
    ///
    /// `metrics.jsonl` starts anew for a fresh run; after a resume (or a
    /// previous `fit` of this trainer, even one that trained nothing) it is appended to, a resume beginning
    /// with a `{"event":"resume","step":N}` record (a cut last line left by a
    /// crash is removed first, and a `repair` record says so). The progress
    /// bar is cleared on every exit, errors included.
    ///
    /// A checkpoint is written every `checkpoint_every` steps and at the
    /// last step; an invocation that has no step to train (`stop_at:
    /// Some(0)`) writes one of the current state when the run has none yet,
    /// so that it can be resumed (or fitted again) like any stopped run.
    pub fn fit(&mut self) -> Result<TrainSummary> {
        let start = Instant::now();
        let cfg = self.config.clone();
        let end = cfg.stop_at.map_or(cfg.total_steps, |s| s.min(cfg.total_steps));
        if cfg.zero1 && cfg.diagnostics_every.is_some() {
            return Err(Error::value(
                OP,
                "diagnostics_every needs every rank's whole averaged gradient, which zero1 does not form; use one or the other",
            ));
        }
        if let Some(dtype) = cfg.autocast {
            if let Some(p) = self.params.iter().find(|p| !p.tensor().device().is_cuda()) {
                return Err(Error::device(
                    OP,
                    format!(
                        "autocast to {dtype} changes CUDA matrix products only, and a parameter (shape {}) is on {}: move the model to a GPU or train without autocast",
                        p.tensor().shape(),
                        p.tensor().device()
                    ),
                ));
            }
        }
        // Rank 0 alone writes files and prints.
        let root = self.dist.is_root();
        let out_dir = cfg.out_dir.as_ref().filter(|_| root);
        let metrics_path = out_dir.map(|d| d.join(METRICS_FILE));
        let (print, progress) = if root { (cfg.print, cfg.progress) } else { (false, Progress::Never) };
        let fresh = !self.fitted && self.step == 0 && self.resumed_at.is_none();
        all_ok(&self.dist, OP, self.task.check_data())?;
        // Every rank trains the same run, or none starts.
        let settings = agreement::settings(&cfg, &self.task, self.optimizer.as_ref(), &self.scheduler, self.step);
        agreement::check(&self.dist, settings)?;
        let guard = match (fresh, out_dir) {
            (true, Some(dir)) => self.guard_fresh_run(dir),
            _ => Ok(()),
        };
        all_ok(&self.dist, OP, guard)?;
        self.fitted = true;
        let removed = match out_dir {
            Some(dir) => crate::checkpoint::remove_stale_temp_files(dir),
            None => Ok(Vec::new()),
        };
        let removed = all_ok(&self.dist, OP, removed)?;
        // Every rank starts from rank 0's parameters.
        broadcast_params(&self.dist, &self.params)?;
        if cfg.zero1 && self.optimizer.zero1().is_none() {
            // Takes over the optimizer's state (after a resume, the loaded one).
            self.optimizer = Box::new(Zero1::new(self.dist.clone(), self.optimizer.as_ref())?);
        }
        let resumed_at = self.resumed_at.take();
        let mut log = if fresh {
            MetricsLog::fresh(metrics_path.as_deref(), print, progress, cfg.total_steps)?
        } else {
            MetricsLog::new(metrics_path.as_deref(), print, progress, cfg.total_steps)?
        };
        if let Some(bytes) = log.repaired() {
            log.write(
                &Record::new("repair")
                    .with("dropped_bytes", bytes)
                    .with("reason", "the file ended in a cut line (an interrupted write)"),
            )?;
        }
        if let Some(step) = resumed_at {
            let mut rec = Record::new("resume").with("step", step);
            if !self.resume_notes.is_empty() {
                rec = rec.with("notes", std::mem::take(&mut self.resume_notes));
            }
            log.write(&rec)?;
        }
        if !removed.is_empty() {
            let files: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
            log.println(&format!("removed {} temp file(s) that a crashed save left: {}", files.len(), files.join(", ")));
            log.write(&Record::new("cleanup").with("removed", files))?;
        }
        let mut start_record = Record::new("start")
            .with("step", self.step)
            .with("total_steps", cfg.total_steps)
            .with("params", self.task.model().num_params() as u64)
            .with("seed", cfg.seed)
            .with("grad_accum", cfg.grad_accum as u64)
            .with("schedule", self.scheduler.schedule().describe())
            .with("optimizer", self.optimizer.name());
        if let Some(z) = self.optimizer.zero1() {
            let (mine, all) = (z.state_bytes_per_rank() as u64, z.unsharded_state_bytes() as u64);
            start_record = start_record.with("zero1_state_bytes_per_rank", mine).with("zero1_state_bytes_unsharded", all);
            log.println(&format!(
                "ZeRO-1 over {} rank(s): rank {} updates elements {:?} of {}; optimizer state {mine} bytes per rank ({all} unsharded)",
                self.dist.world_size(),
                self.dist.rank(),
                z.shard_range(),
                z.split().total()
            ));
        }
        log.write(&start_record)?;
        let decay = DecaySummary::of(self.optimizer.param_groups());
        log.write(&decay_record(&decay))?;
        log.println(&decay.to_string());
        let mut summary = TrainSummary::default();
        // Training time only: evaluations and checkpoint writes are not counted.
        let earlier_seconds = self.earlier_seconds;
        let run_seconds = |train_seconds: f64| earlier_seconds.map(|e| e + train_seconds);
        let mut window = Window::default();
        let (mut train_seconds, mut total_samples, mut total_tokens) = (0.0, 0usize, 0usize);
        self.task.set_training(true);
        log.set_position(self.step, String::new());
        if self.step >= end {
            // Nothing to train (stop_at 0, or a resume of a finished run). A run
            // without a checkpoint gets one, so that it can be continued; then report.
            if self.last_checkpoint.is_none() {
                summary.checkpoint = self.checkpoint_and_log(&mut log, run_seconds(train_seconds))?;
            }
            summary.eval = self.evaluate_and_log(&mut log, start)?;
        }
        while self.step < end {
            let step = self.step;
            let t0 = Instant::now();
            refresh_overlap(&mut self.overlap, &self.dist, &self.params, &cfg, self.optimizer.zero1().is_some())?;
            let (grads, loss, counts) = match self.accumulate(step) {
                Ok(v) => v,
                Err(e) => {
                    log.finish();
                    return Err(self.diverged(&mut log, e));
                }
            };
            let mut grads = grads;
            // ZeRO-1 averages each rank's range only, below; the overlapped
            // reducer has averaged them during the backward pass.
            if self.optimizer.zero1().is_none() && self.overlap.is_none() {
                average_grads(&self.dist, &self.params, &mut grads, &mut self.grad_buffers)?;
            }
            // Per-layer norms before clipping, like the global norm logged with each step.
            let mut diagnostics = match cfg.diagnostics_every {
                Some(n) if (step + 1).is_multiple_of(n) => Some(StepDiagnostics::before_step(&self.task.model().named_params(), &grads)?),
                _ => None,
            };
            let norm = match (self.optimizer.zero1_mut(), cfg.clip) {
                (Some(z), clip) => {
                    z.reduce_grads(&grads)?;
                    z.clip_grad_norm(clip)?
                }
                (None, Some(c)) => clip_grad_norm(&mut grads, &self.params, c)?,
                (None, None) => grad_norm(&grads, &self.params)?,
            };
            if !norm.is_finite() {
                log.finish();
                let e = self.divergence_error(step, format!("the gradient norm is {norm} (loss {loss})"));
                return Err(self.diverged(&mut log, e));
            }
            let lr = self.scheduler.apply(self.optimizer.as_mut())?;
            self.optimizer.step(&grads)?;
            drop(grads);
            if let Some(d) = &mut diagnostics {
                d.after_step()?;
            }
            self.scheduler.advance();
            self.step += 1;
            let dt = t0.elapsed().as_secs_f64();
            train_seconds += dt;
            total_samples += counts.samples;
            total_tokens += counts.tokens;
            self.progress.samples += counts.samples as u64;
            self.progress.tokens += counts.tokens as u64;
            summary.losses.push(loss);
            window.steps += 1;
            window.loss += loss;
            window.samples += counts.samples;
            window.tokens += counts.tokens;
            if let Some(c) = counts.correct {
                window.correct += c;
                window.counted += counts.samples;
            }
            window.seconds += dt;

            let last = self.step == end;
            log.set_position(self.step, format!("loss {loss:.4} lr {lr:.2e}"));
            if self.step.is_multiple_of(cfg.log_every) || last {
                let w = std::mem::take(&mut window);
                let mean_loss = w.loss / w.steps as f64;
                self.progress.train_loss = Some(mean_loss);
                let mut rec = Record::new("train").with("step", self.step);
                if let Some(e) = self.task.epoch() {
                    rec = rec.num("epoch", e);
                }
                rec = rec.num("loss", mean_loss);
                if w.counted > 0 {
                    rec = rec.num("acc", w.correct as f64 / w.counted as f64);
                }
                rec = rec
                    .num("lr", lr)
                    .num("grad_norm", norm)
                    .num("samples_per_s", w.samples as f64 / w.seconds.max(1e-9));
                if w.tokens > 0 {
                    rec = rec.num("tokens_per_s", w.tokens as f64 / w.seconds.max(1e-9));
                }
                rec = rec.num("elapsed", start.elapsed().as_secs_f64());
                log.write(&rec)?;
                log.println(&train_line(&rec, cfg.total_steps));
            }
            if let Some(d) = &diagnostics {
                let probe = self.probe_layers()?;
                log.write(&diagnostics_record(self.step, d, probe.as_ref()))?;
                log.println(&diagnostics_line(self.step, d, probe.as_ref()));
            }
            // The checkpoint first: an evaluation that fails must not lose this step's state.
            if cfg.checkpoint_every.is_some_and(|n| self.step.is_multiple_of(n)) || last {
                if let Some(path) = self.checkpoint_and_log(&mut log, run_seconds(train_seconds))? {
                    summary.checkpoint = Some(path);
                }
            }
            if cfg.eval_every.is_some_and(|n| self.step.is_multiple_of(n)) || last {
                summary.eval = self.evaluate_and_log(&mut log, start)?;
            }
        }
        log.finish();
        let trained = !summary.losses.is_empty();
        let rate = |n: usize| trained.then(|| n as f64 / train_seconds.max(1e-9));
        summary.steps = self.step;
        summary.steps_run = summary.losses.len() as u64;
        summary.seconds = start.elapsed().as_secs_f64();
        summary.total_seconds = run_seconds(train_seconds);
        summary.train_loss = self.progress.train_loss;
        summary.samples_per_s = rate(total_samples);
        summary.tokens_per_s = if total_tokens > 0 { rate(total_tokens) } else { None };
        summary.total_samples = self.progress.samples;
        summary.total_tokens = self.progress.tokens;
        // A later fit of this trainer continues the totals.
        self.earlier_seconds = summary.total_seconds;
        log.write(
            &Record::new("end")
                .with("step", self.step)
                .with("steps_run", summary.steps_run)
                .num("seconds", summary.seconds)
                .with("total_seconds", summary.total_seconds)
                .with("train_loss", summary.train_loss)
                .with("samples_per_s", summary.samples_per_s)
                .with("tokens_per_s", summary.tokens_per_s)
                .with("total_samples", summary.total_samples)
                .with("total_tokens", summary.total_tokens),
        )?;
        Ok(summary)
    }

    /// [`save_checkpoint`](Self::save_checkpoint), and a `checkpoint` record
    /// with the run's training time so far (kept in the metrics, not in the
    /// checkpoint, whose bytes depend on the seed alone; a resume reads it back).
    fn checkpoint_and_log(&mut self, log: &mut MetricsLog, run_seconds: Option<f64>) -> Result<Option<PathBuf>> {
        let saved = self.save_checkpoint();
        // A failed write on rank 0 stops every rank (none waits in the next step's collectives).
        let Some(path) = all_ok(&self.dist, OP, saved)? else { return Ok(None) };
        log.write(
            &Record::new("checkpoint")
                .with("step", self.step)
                .with("path", path.display().to_string())
                .with("run_seconds", run_seconds),
        )?;
        Ok(Some(path))
    }

    /// Refuse to start a fresh run in `dir` if it holds one, unless told to
    /// overwrite it (then its checkpoint is removed, so that a crash before
    /// the first new checkpoint cannot leave the old one beside new metrics).
    fn guard_fresh_run(&self, dir: &Path) -> Result<()> {
        let existing: Vec<&str> = [CHECKPOINT_FILE, METRICS_FILE].into_iter().filter(|f| dir.join(f).exists()).collect();
        if existing.is_empty() {
            return Ok(());
        }
        if !self.config.overwrite {
            return Err(Error::value(
                OP,
                format!(
                    "{} already holds a training run ({}); continue it with Trainer::resume (the examples' --resume), \
                     or set TrainConfig::overwrite to start over and replace it (the examples' --force); nothing was changed",
                    dir.display(),
                    existing.join(", ")
                ),
            ));
        }
        let ckpt = dir.join(CHECKPOINT_FILE);
        if ckpt.exists() {
            std::fs::remove_file(&ckpt).map_err(|e| Error::io(OP, format!("{}: cannot remove the old checkpoint: {e}", ckpt.display())))?;
        }
        Ok(())
    }

    /// Forward and backward over the step's micro-batches: the (averaged)
    /// gradients, the mean loss, and (samples, tokens, correct).
    fn accumulate(&mut self, step: u64) -> Result<(GradStore, f64, Counts)> {
        let n = self.config.grad_accum;
        let mut acc = if n > 1 { Some(GradAccumulator::new(n)?) } else { None };
        let mut single = None;
        let (mut loss_sum, mut samples, mut tokens, mut correct) = (0.0, 0, 0, None::<usize>);
        let world = self.dist.world_size();
        for micro in 0..n {
            // Ranks draw their own dropout masks; one process keeps the seeds it always had.
            let seed = match world {
                1 => derive_seed(self.config.seed, &[DROPOUT_TAG, step, micro as u64]),
                _ => derive_seed(self.config.seed, &[DROPOUT_TAG, step, micro as u64, self.dist.rank() as u64]),
            };
            self.task.reseed(seed);
            let task = &mut self.task;
            let mut mb = under_autocast(self.config.autocast, || task.micro_batch(step, micro))?;
            // The loss and counts over all ranks: every rank sees a non-finite
            // loss anywhere and stops with the others.
            let mut totals = [mb.loss.to_scalar()?, mb.samples as f64, mb.tokens as f64, mb.correct.unwrap_or(0) as f64];
            self.dist.all_reduce_scalars(&mut totals, ReduceOp::Sum)?;
            let loss = totals[0] / world as f64;
            (mb.samples, mb.tokens) = (totals[1] as usize, totals[2] as usize);
            mb.correct = mb.correct.map(|_| totals[3] as usize);
            if !loss.is_finite() {
                return Err(self.divergence_error(step, format!("the loss is {loss} (micro-batch {micro})")));
            }
            match (&mut self.overlap, &mut acc) {
                (Some(reducer), acc) if micro + 1 == n => single = Some(backward_overlapped(&mb.loss, reducer, acc.take())?),
                (_, acc) => {
                    let grads = mb.loss.backward()?;
                    // The graph goes before the accumulator copies the gradients.
                    drop(mb.loss);
                    match acc {
                        Some(a) => a.add(&grads)?,
                        None => single = Some(grads),
                    }
                }
            }
            loss_sum += loss;
            samples += mb.samples;
            tokens += mb.tokens;
            if let Some(c) = mb.correct {
                correct = Some(correct.unwrap_or(0) + c);
            }
        }
        let grads = match (acc, single) {
            (_, Some(g)) => g,
            (Some(mut a), None) => a.take(),
            (None, None) => GradStore::default(),
        };
        Ok((grads, loss_sum / n as f64, Counts { samples, tokens, correct }))
    }

    fn divergence_error(&self, step: u64, what: String) -> Error {
        let kept = match &self.last_checkpoint {
            Some((s, p)) => format!("the last good checkpoint (step {s}) is kept at {}", p.display()),
            None => "no checkpoint had been written".to_string(),
        };
        Error::value(
            OP,
            format!(
                "training diverged at step {} of {}: {what}, at learning rate {:.3e}; stopped before updating the parameters; {kept}. \
                 Lower the learning rate, lengthen the warmup or clip gradients.",
                step + 1,
                self.config.total_steps,
                self.scheduler.lr()
            ),
        )
    }

    /// Log a divergence (when `e` is one) and hand the error back.
    fn diverged(&self, log: &mut MetricsLog, e: Error) -> Error {
        if e.message.starts_with("training diverged") {
            let _ = log.write(&Record::new("diverged").with("step", self.step + 1).with("message", e.message.clone()));
        }
        e
    }
}

/// The training time up to `step` recorded in the metrics file at `path`:
/// the `total_seconds` of the run's `end` record at that step (a process
/// that finished there), else the `run_seconds` of its last `checkpoint`
/// record at that step (a process that went on, or died, after it). Lines
/// that do not parse (a cut last line) are skipped.
fn seconds_at_checkpoint(path: &Path, step: u64) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["step"].as_u64() == Some(step))
        .filter_map(|r| match r["event"].as_str() {
            Some("end") => r["total_seconds"].as_f64(),
            Some("checkpoint") => r["run_seconds"].as_f64(),
            _ => None,
        })
        .next_back()
}

/// `f()` under [`autocast`](crate::autocast()) to `dtype`, or as it is.
fn under_autocast<R>(dtype: Option<crate::DType>, f: impl FnOnce() -> R) -> R {
    match dtype {
        Some(d) => crate::autocast(d, f),
        None => f(),
    }
}
