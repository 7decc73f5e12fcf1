//! The run setup `train_vit` and `train_gpt` share: the thread pool, the
//! output directory (a run in it is never replaced without `--force`), the
//! optimizer, resuming, the memory estimate made before a model is built,
//! the profile (`TAMER_PROFILE=1`), the run's `metrics.svg` and the final
//! JSON line.

use super::common::{OptimizerKind, RunFlags, ScheduleKind};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tamer::nn::Param;
use tamer::optim::{Adam, AdamConfig, Constant, DecayRule, InverseSqrt, LrSchedule, OneCycle, Optimizer, Sgd, SgdConfig, WarmupCosine, WarmupLinear};
use tamer::plot::{write_metrics_svg, Overwrite, METRICS_SVG};
use tamer::profile;
use tamer::train::{Record, TrainSummary, TrainTask, Trainer, CHECKPOINT_FILE, METRICS_FILE};
use tamer::{Error, Result};

/// Size the global compute pool (`--threads`).
pub fn init_threads(op: &'static str, threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| Error::value(op, format!("--threads {n}: {e}")))?;
    }
    Ok(())
}

/// The files of a run in `out` that exist, among the checkpoint, the metrics, their plot and `model_file`.
pub fn existing_run_files<'a>(out: &Path, model_file: &'a str) -> Vec<&'a str> {
    [CHECKPOINT_FILE, METRICS_FILE, METRICS_SVG, model_file]
        .into_iter()
        .filter(|f| out.join(f).exists())
        .collect()
}

/// Before anything is loaded or built: a fresh run into an `out` that holds
/// a run is refused unless `--force` (see [`start_over`]); a `--resume`
/// needs a checkpoint there (the trainer then checks it against this run).
pub fn prepare_out_dir(op: &'static str, out: &Path, flags: &RunFlags, model_file: &str) -> Result<()> {
    if flags.resume {
        return expect_checkpoint(op, out, model_file);
    }
    if flags.force {
        return Ok(());
    }
    let existing = existing_run_files(out, model_file);
    if existing.is_empty() {
        return Ok(());
    }
    Err(Error::value(
        op,
        format!(
            "--out {} already holds a training run ({}): continue it with --resume, start over with --force (which replaces those files), or choose another --out; nothing was changed",
            out.display(),
            existing.join(", ")
        ),
    ))
}

/// `--resume` with no checkpoint in `out`: an error that says so, and what to
/// do instead (start there, or start over with `--force` if a run left files).
fn expect_checkpoint(op: &'static str, out: &Path, model_file: &str) -> Result<()> {
    if out.join(CHECKPOINT_FILE).exists() {
        return Ok(());
    }
    let existing = existing_run_files(out, model_file);
    let way_out = if existing.is_empty() {
        "run without --resume to start a run there".to_string()
    } else {
        format!(
            "it holds {} from a run that wrote no checkpoint: start over with --force (which replaces them), or choose another --out",
            existing.join(", ")
        )
    };
    Err(Error::value(
        op,
        format!(
            "--resume: --out {} holds no {CHECKPOINT_FILE}, so there is no run to continue; {way_out}",
            out.display()
        ),
    ))
}

/// With `--force`, once everything has been checked and just before
/// training: remove the old run's model file (the trainer, told to
/// overwrite, replaces the checkpoint and the metrics), so that a crash
/// cannot leave it beside the new run's files.
pub fn start_over(op: &'static str, out: &Path, flags: &RunFlags, model_file: &str) -> Result<()> {
    let existing = existing_run_files(out, model_file);
    if !flags.force || existing.is_empty() {
        return Ok(());
    }
    let model = out.join(model_file);
    if model.exists() {
        std::fs::remove_file(&model).map_err(|e| Error::io(op, format!("--force: cannot remove {}: {e}", model.display())))?;
    }
    println!("--force: replacing the run in {} ({})", out.display(), existing.join(", "));
    Ok(())
}

/// After `fit`: draw the run's `metrics.jsonl` in `out` as `metrics.svg`
/// beside it (loss, evaluation metric, learning rate and gradient norm
/// against step; `tamer::plot::metrics`), replacing the plot of an earlier
/// invocation of this run (which [`prepare_out_dir`] made this run's own).
/// Also after a `fit` that failed (`trained: false`), e.g. a run that
/// diverged, whose curves show how. The plot is a by-product: that it cannot
/// be drawn is a warning on stderr after a finished run (the model is saved
/// and the final line still follows), and not mentioned after a failed one
/// (whose error is what matters).
pub fn plot_metrics(out: &Path, trained: bool) {
    let (metrics, svg) = (out.join(METRICS_FILE), out.join(METRICS_SVG));
    match write_metrics_svg(&metrics, &svg, Overwrite::Replace) {
        Ok(skipped) if skipped.is_empty() => println!("plotted {}", svg.display()),
        Ok(skipped) => println!("plotted {} ({skipped})", svg.display()),
        Err(e) if trained => eprintln!("warning: no {METRICS_SVG}: {e}"),
        Err(_) => {}
    }
}

/// The optimizer `--optimizer` names: AdamW or Adam with `betas`, or SGD with
/// Nesterov momentum 0.9; `rule` (None: the default) picks the decayed parameters.
pub fn optimizer(
    named: Vec<(String, Param)>,
    kind: OptimizerKind,
    lr: f64,
    weight_decay: f64,
    betas: Option<(f64, f64)>,
    rule: Option<DecayRule>,
) -> Result<Box<dyn Optimizer>> {
    let adam = |config: AdamConfig| {
        let config = config.weight_decay(weight_decay);
        let config = match betas {
            Some((b1, b2)) => config.betas(b1, b2),
            None => config,
        };
        match rule.clone() {
            Some(r) => config.decay_rule(r),
            None => config,
        }
    };
    Ok(match kind {
        OptimizerKind::Adamw => Box::new(Adam::new(named, adam(AdamConfig::adamw(lr)))?),
        OptimizerKind::Adam => Box::new(Adam::new(named, adam(AdamConfig::adam(lr)))?),
        OptimizerKind::Sgd => {
            let config = SgdConfig::new(lr).momentum(0.9).nesterov(true).weight_decay(weight_decay);
            let config = match rule {
                Some(r) => config.decay_rule(r),
                None => config,
            };
            Box::new(Sgd::new(named, config)?)
        }
    })
}

/// The schedule `--schedule` names, peaking at `lr` after `warmup` steps and,
/// where it decays, reaching `final_lr` at step `total`.
pub fn schedule(kind: ScheduleKind, lr: f64, final_lr: f64, warmup: u64, total: u64) -> Result<Box<dyn LrSchedule>> {
    Ok(match kind {
        ScheduleKind::Cosine => Box::new(WarmupCosine::new(lr, warmup, total, final_lr)?),
        ScheduleKind::Linear => Box::new(WarmupLinear::new(lr, warmup, total, final_lr)?),
        ScheduleKind::Constant if warmup == 0 => Box::new(Constant { lr }),
        ScheduleKind::Constant => Box::new(WarmupLinear::new(lr, warmup, warmup, lr)?),
        ScheduleKind::Onecycle => Box::new(OneCycle::new(lr, total)?),
        ScheduleKind::InverseSqrt => Box::new(inverse_sqrt(lr, warmup)?),
    })
}

/// `--schedule inverse-sqrt`: with warmup, a linear ramp from
/// `lr / (warmup + 1)` at step 0 (so the first step already trains) to `lr`
/// at step `warmup`, then `lr · √(warmup / step)`; without, `lr / √max(step, 1)`.
pub fn inverse_sqrt(lr: f64, warmup: u64) -> Result<InverseSqrt> {
    let init = if warmup > 0 { lr / (warmup as f64 + 1.0) } else { 0.0 };
    InverseSqrt::new(lr, warmup, init)
}

/// With `--resume`: continue from the checkpoint in the output directory
/// (the trainer refuses one written with other settings, naming each).
pub fn resume_if_asked<T: TrainTask>(trainer: &mut Trainer<T>, flags: &RunFlags) -> Result<()> {
    if !flags.resume {
        return Ok(());
    }
    let path = trainer
        .checkpoint_path()
        .ok_or_else(|| Error::value("resume", "--resume needs --out DIR (the run to continue)"))?;
    for note in trainer.resume(&path)? {
        println!("note: {note}");
    }
    println!("resumed from {} at step {}", path.display(), trainer.step);
    Ok(())
}

/// What a training run will hold in memory, estimated before the model is
/// built: the weights with their gradients and optimizer moments, and the
/// activations one micro-batch keeps for its backward pass (f32).
#[derive(Clone, Copy, Debug)]
pub struct MemoryEstimate {
    pub params: f64,
    /// f32 values per parameter: weight, gradient and the optimizer's moments.
    pub copies_per_param: f64,
    /// f32 values stored for the backward pass of one micro-batch.
    pub activations: f64,
}

impl MemoryEstimate {
    /// Values per parameter: the weight and its gradient, plus Adam's two moments or SGD's momentum.
    pub fn copies(kind: OptimizerKind) -> f64 {
        match kind {
            OptimizerKind::Adamw | OptimizerKind::Adam => 4.0,
            OptimizerKind::Sgd => 3.0,
        }
    }
    pub fn bytes(&self) -> f64 {
        4.0 * (self.params * self.copies_per_param + self.activations)
    }
    pub fn describe(&self) -> String {
        format!(
            "{} ({:.3e} parameters × {} f32 copies for weights, gradients and optimizer state = {}, plus {} of activations per micro-batch)",
            human_bytes(self.bytes()),
            self.params,
            self.copies_per_param,
            human_bytes(4.0 * self.params * self.copies_per_param),
            human_bytes(4.0 * self.activations)
        )
    }
}

/// `bytes` with a binary unit.
pub fn human_bytes(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if v.is_finite() {
        format!("{v:.1} {}", units[i])
    } else {
        "more bytes than a float can count".to_string()
    }
}

/// Where the memory of a machine is not known (off Linux), runs estimated
/// above this many GiB are refused unless `--max-memory` says otherwise.
pub const DEFAULT_MEMORY_LIMIT_GIB: f64 = 32.0;

/// The memory the system can still give (Linux's MemAvailable); None elsewhere.
pub fn available_memory() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// The most a run may use, in bytes, and where that figure comes from:
/// `--max-memory` (GiB) when given, else the available memory (Linux),
/// else [`DEFAULT_MEMORY_LIMIT_GIB`].
pub fn memory_limit(max_memory_gib: Option<f64>) -> (f64, String) {
    const GIB: f64 = (1u64 << 30) as f64;
    if let Some(gib) = max_memory_gib {
        return (gib * GIB, format!("--max-memory allows {}", human_bytes(gib * GIB)));
    }
    match available_memory() {
        Some(bytes) => (bytes, format!("this machine has {} available", human_bytes(bytes))),
        None => (
            DEFAULT_MEMORY_LIMIT_GIB * GIB,
            format!(
                "the limit where the available memory is unknown (it is read on Linux only) is {}; raise it with --max-memory",
                human_bytes(DEFAULT_MEMORY_LIMIT_GIB * GIB)
            ),
        ),
    }
}

/// Refuse a run whose estimate exceeds the [`memory_limit`] (it would abort
/// in an allocation, possibly after hours), with the estimate in the error.
pub fn check_memory(op: &'static str, what: &str, estimate: &MemoryEstimate, max_memory_gib: Option<f64>) -> Result<()> {
    let (limit, source) = memory_limit(max_memory_gib);
    if estimate.bytes() > limit {
        return Err(Error::value(
            op,
            format!("{what} needs an estimated {}, but {source}; use a smaller model or batch", estimate.describe()),
        ));
    }
    Ok(())
}

/// Where the profile of a run goes: the path in `TAMER_PROFILE_OUT` (`variable`)
/// when set, else `profile.json` in the run directory; `None` when there is neither.
pub fn profile_path(out: Option<&Path>, variable: Option<OsString>) -> Option<PathBuf> {
    match variable {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => out.map(|dir| dir.join("profile.json")),
    }
}

/// After training with `TAMER_PROFILE=1`: the per-op table on stderr (so that
/// stdout still ends with the final JSON line) and the report as JSON at
/// [`profile_path`]. An existing file there is never replaced: the report goes
/// to the first free `profile-2.json`, `profile-3.json` ... instead.
pub fn finish_profile(out: Option<&Path>) -> Result<()> {
    if !profile::is_enabled() {
        return Ok(());
    }
    profile::disable();
    let report = profile::report();
    eprintln!("---- profile (TAMER_PROFILE) ----\n{report}");
    match profile_path(out, std::env::var_os(profile::OUT_VARIABLE)) {
        Some(path) => eprintln!("profile written to {}", report.write_json(&path)?.display()),
        None => eprintln!("profile not written: give --out DIR or {}=FILE", profile::OUT_VARIABLE),
    }
    Ok(())
}

/// Seconds to the millisecond, for the final line.
fn millis(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// The fields every final line has after `rec`'s first ones: the run's
/// totals and this process's share. `"seconds"` is the training time of the
/// whole run ([`TrainSummary::total_seconds`]: the time spent in training
/// steps by every process that worked on it, evaluations and checkpoint
/// writes excluded, read back from the metrics on a resume; null when
/// unknown), `"seconds_this_process"` this process's wall-clock time; `"train_loss"` the last logged training loss (after a
/// resume that trained nothing, the checkpoint's; null when no step was
/// trained, as after `--stop-at 0`).
pub fn final_record(rec: Record, summary: &TrainSummary, process_start: Instant) -> Record {
    rec.with("steps", summary.steps)
        .with("steps_this_process", summary.steps_run)
        .with("seconds", summary.total_seconds.map(millis))
        .num("seconds_this_process", millis(process_start.elapsed().as_secs_f64()))
        .with("train_loss", summary.train_loss)
}
