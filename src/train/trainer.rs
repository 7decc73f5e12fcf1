//! The loop: see the module docs of [`crate::train`].

use super::checkpoint::{check_metadata_keys, TrainCheckpoint, CHECKPOINT_FILE};
use super::decay_log::decay_record;
use super::metrics::{MetricsLog, Record};
use super::{TrainConfig, TrainTask};
use crate::data::io::derive_seed;
use crate::nn::Param;
use crate::optim::{clip_grad_norm, grad_norm, DecaySummary, GradAccumulator, Optimizer, Scheduler};
use crate::{no_grad, Error, GradStore, Result};
use std::path::PathBuf;
use std::time::Instant;

const OP: &str = "Trainer";
/// Tags the dropout-seed stream apart from the data streams.
const DROPOUT_TAG: u64 = 0xd209;
const METRICS_FILE: &str = "metrics.jsonl";

/// What a finished (or stopped) run reports.
#[derive(Clone, Debug, Default)]
pub struct TrainSummary {
    /// Optimizer steps done in total (including those before a resume).
    pub steps: u64,
    /// Wall-clock seconds of this invocation.
    pub seconds: f64,
    /// The loss of every step this invocation ran (mean over its micro-batches), in order.
    pub losses: Vec<f64>,
    /// The mean training loss over the last logging window.
    pub train_loss: f64,
    /// The last evaluation's metrics.
    pub eval: Vec<(String, f64)>,
    /// Samples (and tokens) per second of training, evaluation excluded.
    pub samples_per_s: f64,
    pub tokens_per_s: f64,
    /// Where the last checkpoint was written.
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
}

impl<T: TrainTask> Trainer<T> {
    pub fn new(config: TrainConfig, task: T, optimizer: Box<dyn Optimizer>, scheduler: Scheduler) -> Result<Self> {
        if config.grad_accum == 0 {
            return Err(Error::value(OP, "grad_accum must be at least 1"));
        }
        if config.log_every == 0 || config.eval_every == Some(0) || config.checkpoint_every == Some(0) {
            return Err(Error::value(OP, "log_every, eval_every and checkpoint_every must be at least 1"));
        }
        if let Some(c) = config.clip {
            if !(c > 0.0 && c.is_finite()) {
                return Err(Error::value(OP, format!("clip {c} must be a positive finite norm")));
            }
        }
        check_metadata_keys(OP, &config.metadata)?;
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
        })
    }

    /// The checkpoint path in the output directory, if there is one.
    pub fn checkpoint_path(&self) -> Option<PathBuf> {
        self.config.out_dir.as_ref().map(|d| d.join(CHECKPOINT_FILE))
    }

    /// Continue from a checkpoint: model, optimizer, schedule, data stream and step.
    /// The run seed, `grad_accum`, the task's micro-batch size and every
    /// [`TrainConfig::metadata`] entry must match the ones the checkpoint was
    /// written with (the optimizer and the schedule check their own settings).
    pub fn resume(&mut self, path: impl Into<PathBuf>) -> Result<()> {
        let path = path.into();
        let ckpt = TrainCheckpoint::read(&path)?;
        self.check_compatible(&ckpt, &path)?;
        ckpt.restore(&mut self.task, self.optimizer.as_mut(), &mut self.scheduler)?;
        self.step = ckpt.step;
        self.last_checkpoint = Some((ckpt.step, path));
        self.resumed_at = Some(ckpt.step);
        Ok(())
    }

    /// Whether this run may continue `ckpt`: same seed, batch layout and metadata, not past the end.
    fn check_compatible(&self, ckpt: &TrainCheckpoint, path: &std::path::Path) -> Result<()> {
        let src = path.display();
        let mismatch = |what: &str, saved: &dyn std::fmt::Display, current: &dyn std::fmt::Display| {
            Error::value(
                OP,
                format!("{src} was written by a run with {what} {saved}, this run has {what} {current}; resume with the original run's settings"),
            )
        };
        if ckpt.seed != self.config.seed {
            return Err(mismatch("seed", &ckpt.seed, &self.config.seed));
        }
        if ckpt.step > self.config.total_steps {
            return Err(Error::value(
                OP,
                format!("{src} is at step {}, past this run's {} steps", ckpt.step, self.config.total_steps),
            ));
        }
        if let Some(g) = ckpt.grad_accum {
            if g != self.config.grad_accum as u64 {
                return Err(mismatch("grad_accum", &g, &self.config.grad_accum));
            }
        }
        if let Some(b) = ckpt.micro_batch_size {
            let current = self.task.batch_size().map_or("none".to_string(), |b| b.to_string());
            if current != b.to_string() {
                return Err(mismatch("micro-batch size", &b, &current));
            }
        }
        for (key, value) in &self.config.metadata {
            match ckpt.file.metadata.get(key) {
                Some(saved) if saved == value => {}
                saved => {
                    let saved = saved.map_or("none".to_string(), |s| format!("{:?}", brief(s)));
                    return Err(mismatch(&format!("metadata '{key}' ="), &saved, &format!("{:?}", brief(value))));
                }
            }
        }
        Ok(())
    }

    /// Write a checkpoint of the current state to the output directory.
    pub fn save_checkpoint(&mut self) -> Result<Option<PathBuf>> {
        let Some(path) = self.checkpoint_path() else { return Ok(None) };
        TrainCheckpoint::save(&path, &self.task, self.optimizer.as_ref(), &self.scheduler, &self.config, self.step)?;
        self.last_checkpoint = Some((self.step, path.clone()));
        Ok(Some(path))
    }

    /// Evaluate in eval mode without gradients, then return to the mode the
    /// task was in.
    pub fn evaluate(&mut self) -> Result<Vec<(String, f64)>> {
        let was_training = self.task.is_training();
        self.task.set_training(false);
        let metrics = no_grad(|| self.task.evaluate());
        self.task.set_training(was_training);
        metrics
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
    /// `metrics.jsonl` starts anew for a fresh run; after a resume (or a
    /// previous `fit` of this trainer) it is appended to, a resume beginning
    /// with a `{"event":"resume","step":N}` record. The progress bar is
    /// cleared on every exit, errors included.
    pub fn fit(&mut self) -> Result<TrainSummary> {
        let start = Instant::now();
        let cfg = self.config.clone();
        let end = cfg.stop_at.map_or(cfg.total_steps, |s| s.min(cfg.total_steps));
        let metrics_path = cfg.out_dir.as_ref().map(|d| d.join(METRICS_FILE));
        let resumed_at = self.resumed_at.take();
        let mut log = if self.step > 0 || resumed_at.is_some() {
            MetricsLog::new(metrics_path.as_deref(), cfg.print, cfg.progress, cfg.total_steps)?
        } else {
            MetricsLog::fresh(metrics_path.as_deref(), cfg.print, cfg.progress, cfg.total_steps)?
        };
        if let Some(step) = resumed_at {
            log.write(&Record::new("resume").with("step", step))?;
        }
        log.write(
            &Record::new("start")
                .with("step", self.step)
                .with("total_steps", cfg.total_steps)
                .with("params", self.task.model().num_params() as u64)
                .with("seed", cfg.seed)
                .with("grad_accum", cfg.grad_accum as u64)
                .with("schedule", self.scheduler.schedule().describe())
                .with("optimizer", self.optimizer.name()),
        )?;
        let decay = DecaySummary::of(self.optimizer.param_groups());
        log.write(&decay_record(&decay))?;
        log.println(&decay.to_string());
        let mut summary = TrainSummary::default();
        let mut window = Window::default();
        let (mut train_seconds, mut total_samples, mut total_tokens) = (0.0, 0usize, 0usize);
        self.task.set_training(true);
        log.set_position(self.step, String::new());
        if self.step >= end {
            // Nothing left to train (a resume of a finished run): still report.
            summary.eval = self.evaluate_and_log(&mut log, start)?;
        }
        while self.step < end {
            let step = self.step;
            let t0 = Instant::now();
            let (grads, loss, counts) = match self.accumulate(step) {
                Ok(v) => v,
                Err(e) => {
                    log.finish();
                    return Err(self.diverged(&mut log, e));
                }
            };
            let mut grads = grads;
            let norm = match cfg.clip {
                Some(c) => clip_grad_norm(&mut grads, &self.params, c)?,
                None => grad_norm(&grads, &self.params)?,
            };
            if !norm.is_finite() {
                log.finish();
                let e = self.divergence_error(step, format!("the gradient norm is {norm} (loss {loss})"));
                return Err(self.diverged(&mut log, e));
            }
            let lr = self.scheduler.apply(self.optimizer.as_mut())?;
            self.optimizer.step(&grads)?;
            drop(grads);
            self.scheduler.advance();
            self.step += 1;
            let dt = t0.elapsed().as_secs_f64();
            train_seconds += dt;
            total_samples += counts.samples;
            total_tokens += counts.tokens;
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
                summary.train_loss = mean_loss;
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
            // The checkpoint first: an evaluation that fails must not lose this step's state.
            if cfg.checkpoint_every.is_some_and(|n| self.step.is_multiple_of(n)) || last {
                if let Some(path) = self.save_checkpoint()? {
                    log.write(&Record::new("checkpoint").with("step", self.step).with("path", path.display().to_string()))?;
                    summary.checkpoint = Some(path);
                }
            }
            if cfg.eval_every.is_some_and(|n| self.step.is_multiple_of(n)) || last {
                summary.eval = self.evaluate_and_log(&mut log, start)?;
            }
        }
        log.finish();
        summary.steps = self.step;
        summary.seconds = start.elapsed().as_secs_f64();
        summary.samples_per_s = total_samples as f64 / train_seconds.max(1e-9);
        summary.tokens_per_s = total_tokens as f64 / train_seconds.max(1e-9);
        log.write(
            &Record::new("end")
                .with("step", self.step)
                .num("seconds", summary.seconds)
                .num("train_loss", summary.train_loss)
                .num("samples_per_s", summary.samples_per_s)
                .num("tokens_per_s", summary.tokens_per_s),
        )?;
        Ok(summary)
    }

    /// Forward and backward over the step's micro-batches: the (averaged)
    /// gradients, the mean loss, and (samples, tokens, correct).
    fn accumulate(&mut self, step: u64) -> Result<(GradStore, f64, Counts)> {
        let n = self.config.grad_accum;
        let mut acc = if n > 1 { Some(GradAccumulator::new(n)?) } else { None };
        let mut single = None;
        let (mut loss_sum, mut samples, mut tokens, mut correct) = (0.0, 0, 0, None::<usize>);
        for micro in 0..n {
            self.task.reseed(derive_seed(self.config.seed, &[DROPOUT_TAG, step, micro as u64]));
            let mb = self.task.micro_batch(step, micro)?;
            let loss = mb.loss.to_scalar()?;
            if !loss.is_finite() {
                return Err(self.divergence_error(step, format!("the loss is {loss} (micro-batch {micro})")));
            }
            let grads = mb.loss.backward()?;
            drop(mb.loss);
            match &mut acc {
                Some(a) => a.add(&grads)?,
                None => single = Some(grads),
            }
            loss_sum += loss;
            samples += mb.samples;
            tokens += mb.tokens;
            if let Some(c) = mb.correct {
                correct = Some(correct.unwrap_or(0) + c);
            }
        }
        let grads = match acc {
            Some(mut a) => a.take(),
            None => single.unwrap_or_default(),
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

/// `s`, cut to 120 characters for an error message.
fn brief(s: &str) -> String {
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn fmt_field(rec: &Record, key: &str) -> Option<f64> {
    rec.get(key).and_then(|v| v.as_f64())
}

fn train_line(rec: &Record, total: u64) -> String {
    let mut s = format!("step {:>6}/{total}", rec.get("step").and_then(|v| v.as_u64()).unwrap_or(0));
    if let Some(e) = fmt_field(rec, "epoch") {
        s += &format!(" | epoch {e:6.2}");
    }
    if let Some(l) = fmt_field(rec, "loss") {
        s += &format!(" | loss {l:.4}");
    }
    if let Some(a) = fmt_field(rec, "acc") {
        s += &format!(" | acc {:5.1}%", a * 100.0);
    }
    if let Some(lr) = fmt_field(rec, "lr") {
        s += &format!(" | lr {lr:.2e}");
    }
    if let Some(g) = fmt_field(rec, "grad_norm") {
        s += &format!(" | gnorm {g:.3}");
    }
    match (fmt_field(rec, "tokens_per_s"), fmt_field(rec, "samples_per_s")) {
        (Some(t), _) => s += &format!(" | {t:.0} tok/s"),
        (None, Some(x)) => s += &format!(" | {x:.0} samples/s"),
        _ => {}
    }
    if let Some(t) = fmt_field(rec, "elapsed") {
        s += &format!(" | {t:.1}s");
    }
    s
}

fn eval_line(rec: &Record) -> String {
    let mut s = format!("eval at step {}:", rec.get("step").and_then(|v| v.as_u64()).unwrap_or(0));
    for (k, v) in &rec.fields {
        if k == "step" || k == "epoch" || k == "elapsed" || k == "eval_seconds" {
            continue;
        }
        if let Some(x) = v.as_f64() {
            if k.ends_with("acc") {
                s += &format!(" {k} {:.2}%", x * 100.0);
            } else {
                s += &format!(" {k} {x:.4}");
            }
        }
    }
    s
}
