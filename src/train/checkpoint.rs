//! Training checkpoints: one safetensors file with everything a run needs to
//! continue exactly.
//!
//! | entry | what |
//! |---|---|
//! | model tensors, under their state-dict names | parameters, buffers, tied aliases ([`module_tensors`]) |
//! | `optim.*` tensors and metadata | [`Optimizer::state_dict`], prefixed |
//! | `schedule.step`, `schedule.kind` | [`Scheduler::state_dict`] |
//! | `format`, `step`, `seed`, `data` | this format's tag, optimizer steps done, the run seed, the task's data-stream state |
//! | `grad_accum`, `micro_batch_size` | micro-batches per step and examples per micro-batch ([`TrainTask::batch_size`], when it has one) |
//! | `world_size`, `global_batch_size` | the ranks that trained together and the examples of one micro-batch over all of them (`micro_batch_size × world_size`); files without them were written by one process |
//! | `clip` | the gradient-clipping norm ([`TrainConfig::clip`]; `none` without clipping) |
//! | `autocast` | the forward pass's 16-bit type ([`TrainConfig::autocast`]; `none` for f32) |
//! | `param_groups` | each optimizer parameter group's weight decay, learning-rate scale and parameter names (JSON) |
//! | `progress` | samples and tokens trained on so far and the last logged training loss ([`RunProgress`], JSON) |
//! | anything else | the caller's metadata ([`TrainConfig::metadata`]: `model_config`, `input_normalization`, vocabulary ...) |
//!
//! [`Trainer::resume`](super::Trainer::resume) compares the seed, the batch
//! layout (on another number of ranks: the global batch, see
//! [`batch_layout_difference`]), the clipping, the autocast type, the optimizer's settings and groups, the schedule,
//! the data stream and the caller's metadata (in both directions) with the
//! resuming run's. Nothing in the
//! file depends on the clock, so two runs of one seed write identical bytes.
//!
//! The file is written atomically (a temporary file renamed over the old
//! one), so an interrupted write leaves the previous checkpoint intact.

use super::{TrainConfig, TrainTask};
use crate::checkpoint::{load_into, module_tensors, read, save_with_metadata, Checkpoint, LoadOptions};
use crate::optim::{Optimizer, OptimizerState, Scheduler};
use crate::{Error, Result, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// The checkpoint's file name inside a run's output directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The `format` metadata entry of a training checkpoint.
pub const FORMAT: &str = "tamer-train-1";
const OPTIM_PREFIX: &str = "optim.";
const OP: &str = "TrainCheckpoint";
/// Metadata keys a training checkpoint writes itself (besides `optim.*` and
/// `schedule.*`): [`TrainConfig::metadata`] may not use them.
pub const RESERVED_KEYS: &[&str] = &[
    "format",
    "step",
    "seed",
    "data",
    "grad_accum",
    "micro_batch_size",
    "world_size",
    "global_batch_size",
    "clip",
    "autocast",
    "param_groups",
    "progress",
];
const RESERVED_PREFIXES: &[&str] = &[OPTIM_PREFIX, "schedule."];

/// An error if `metadata` uses a key the checkpoint writes itself (it would be overwritten).
pub(crate) fn check_metadata_keys(op: &'static str, metadata: &BTreeMap<String, String>) -> Result<()> {
    match metadata.keys().find(|k| is_reserved_key(k)) {
        Some(k) => Err(Error::value(
            op,
            format!(
                "metadata key {k:?} is reserved for the checkpoint's own entries ({}, optim.*, schedule.*); rename it",
                RESERVED_KEYS.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// What a run has done so far, carried across resumes (the checkpoint's
/// `progress` entry): totals the final report needs after a resume.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunProgress {
    /// Examples trained on, over every step so far.
    pub samples: u64,
    /// Tokens trained on (language models).
    pub tokens: u64,
    /// The mean training loss of the last logging window; None before any.
    pub train_loss: Option<f64>,
}

impl RunProgress {
    pub fn to_json(&self) -> String {
        serde_json::json!({"samples": self.samples, "tokens": self.tokens, "train_loss": self.train_loss}).to_string()
    }
    pub fn from_json(text: &str) -> Result<RunProgress> {
        let bad = || {
            Error::format(
                OP,
                format!("'progress' = {text:?}: expected {{\"samples\": n, \"tokens\": n, \"train_loss\": x or null}}"),
            )
        };
        let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
        let count = |k: &str| v.get(k).and_then(|x| x.as_u64()).ok_or_else(bad);
        let train_loss = match v.get("train_loss") {
            Some(serde_json::Value::Null) => None,
            Some(x) => Some(x.as_f64().ok_or_else(bad)?),
            None => return Err(bad()),
        };
        Ok(RunProgress {
            samples: count("samples")?,
            tokens: count("tokens")?,
            train_loss,
        })
    }
}

/// What the `autocast` entry stores for [`TrainConfig::autocast`].
pub(crate) fn autocast_entry(autocast: Option<crate::DType>) -> String {
    autocast.map_or_else(|| "none".to_string(), |d| d.name().to_string())
}

/// What the `clip` entry stores for [`TrainConfig::clip`].
pub(crate) fn clip_entry(clip: Option<f64>) -> String {
    clip.map_or_else(|| "none".to_string(), |c| c.to_string())
}

/// Whether `key` is one of the entries a training checkpoint writes itself
/// (not the caller's [`TrainConfig::metadata`]).
pub(crate) fn is_reserved_key(key: &str) -> bool {
    RESERVED_KEYS.contains(&key) || RESERVED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The optimizer's parameter groups as JSON: what `param_groups` stores.
pub(crate) fn param_groups_json(opt: &dyn Optimizer) -> serde_json::Value {
    serde_json::Value::Array(
        opt.param_groups()
            .iter()
            .map(|g| {
                let names: Vec<&str> = g.params.iter().map(|(n, _)| n.as_str()).collect();
                serde_json::json!({"weight_decay": g.weight_decay, "lr_scale": g.lr_scale, "params": names})
            })
            .collect(),
    )
}

/// A training checkpoint read back from disk.
#[derive(Debug)]
pub struct TrainCheckpoint {
    /// Optimizer steps done when it was written.
    pub step: u64,
    pub seed: u64,
    /// Micro-batches per step (None in files written before it was stored).
    pub grad_accum: Option<u64>,
    /// Examples per micro-batch (None when the task has no fixed size, or in older files).
    pub micro_batch_size: Option<u64>,
    /// The ranks that wrote it trained together (1 in files written before it was stored).
    pub world_size: u64,
    /// Examples per micro-batch over all ranks (None when the task has no fixed size).
    pub global_batch_size: Option<u64>,
    /// The task's [`TrainTask::data_state`].
    pub data_state: String,
    /// Totals so far (None in files written before they were stored).
    pub progress: Option<RunProgress>,
    /// Every tensor and metadata entry of the file.
    pub file: Checkpoint,
}

impl TrainCheckpoint {
    /// Write the state of a run after `step` optimizer steps to `path`,
    /// atomically, with the seed, `grad_accum` and metadata of `config` and
    /// the run's `progress`, trained by `world_size` ranks together (each
    /// with `task`'s micro-batch size).
    #[allow(clippy::too_many_arguments)]
    pub fn save(
        path: &Path,
        task: &dyn TrainTask,
        opt: &dyn Optimizer,
        sched: &Scheduler,
        config: &TrainConfig,
        step: u64,
        progress: &RunProgress,
        world_size: usize,
    ) -> Result<()> {
        // First: a sharded optimizer gathers its state from every rank, which
        // must not wait on a check that failed here alone.
        let state = opt.state_dict()?.prefixed(OPTIM_PREFIX);
        check_metadata_keys(OP, &config.metadata)?;
        let mut tensors: Vec<(String, Tensor)> = module_tensors(task.model());
        if let Some((name, _)) = tensors.iter().find(|(n, _)| n.starts_with(OPTIM_PREFIX)) {
            return Err(Error::value(
                OP,
                format!("model tensor {name:?} starts with {OPTIM_PREFIX:?}, which checkpoints reserve for the optimizer state"),
            ));
        }
        tensors.extend(state.tensors);
        let mut metadata = config.metadata.clone();
        metadata.extend(state.metadata);
        metadata.extend(sched.state_dict());
        metadata.insert("format".into(), FORMAT.into());
        metadata.insert("step".into(), step.to_string());
        metadata.insert("seed".into(), config.seed.to_string());
        metadata.insert("grad_accum".into(), config.grad_accum.to_string());
        metadata.insert("clip".into(), clip_entry(config.clip));
        metadata.insert("autocast".into(), autocast_entry(config.autocast));
        metadata.insert("world_size".into(), world_size.to_string());
        if let Some(b) = task.batch_size() {
            metadata.insert("micro_batch_size".into(), b.to_string());
            metadata.insert("global_batch_size".into(), (b * world_size).to_string());
        }
        metadata.insert("data".into(), task.data_state());
        metadata.insert("param_groups".into(), param_groups_json(opt).to_string());
        metadata.insert("progress".into(), progress.to_json());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(OP, format!("cannot create {}: {e}", dir.display())))?;
        }
        save_with_metadata(path, &tensors, &metadata)
    }

    /// Read a checkpoint written by [`TrainCheckpoint::save`]; a file that is
    /// not one (a plain model file, another format) is an error saying so.
    pub fn read(path: &Path) -> Result<TrainCheckpoint> {
        let file = read(path)?;
        let src = path.display();
        match file.metadata.get("format") {
            Some(f) if f == FORMAT => {}
            Some(f) => return Err(Error::format(OP, format!("{src}: checkpoint format {f:?}, expected {FORMAT:?}"))),
            None => {
                return Err(Error::format(
                    OP,
                    format!("{src}: not a training checkpoint (no 'format' metadata); to start from model weights alone use --pretrained"),
                ))
            }
        }
        let optional = |key: &str| -> Result<Option<u64>> {
            file.metadata
                .get(key)
                .map(|v| {
                    v.parse()
                        .map_err(|_| Error::format(OP, format!("{src}: metadata '{key}' = {v:?} is not a whole number")))
                })
                .transpose()
        };
        let num = |key: &str| optional(key)?.ok_or_else(|| Error::format(OP, format!("{src}: no '{key}' metadata")));
        Ok(TrainCheckpoint {
            step: num("step")?,
            seed: num("seed")?,
            grad_accum: optional("grad_accum")?,
            micro_batch_size: optional("micro_batch_size")?,
            world_size: match optional("world_size")? {
                Some(0) => return Err(Error::format(OP, format!("{src}: metadata 'world_size' is 0; expected at least 1"))),
                w => w.unwrap_or(1),
            },
            global_batch_size: optional("global_batch_size")?,
            data_state: file.metadata.get("data").cloned().unwrap_or_default(),
            progress: file
                .metadata
                .get("progress")
                .map(|p| RunProgress::from_json(p).map_err(|e| Error::format(OP, format!("{src}: {}", e.message))))
                .transpose()?,
            file,
        })
    }

    /// Load the model, optimizer, schedule and data stream from this
    /// checkpoint, all or nothing: on error every one of them is as it was.
    ///
    /// The small parts go first (each replaces its state only once all of it
    /// converted), keeping what they replace; the model, the largest, goes
    /// last ([`load_into`] checks everything before it writes). If anything
    /// fails, the small parts are put back, so nothing needs a second copy
    /// of the model.
    pub fn restore(&self, task: &mut dyn TrainTask, opt: &mut dyn Optimizer, sched: &mut Scheduler) -> Result<()> {
        let previous = (opt.state_dict()?, sched.state_dict(), task.data_state());
        let restored = self.restore_progress(task, opt, sched).and_then(|()| self.restore_model(task));
        let Err(e) = restored else { return Ok(()) };
        let (opt_state, sched_state, data_state) = previous;
        let undone = opt
            .load_state_dict(&opt_state)
            .and_then(|()| sched.load_state_dict(&sched_state))
            .and_then(|()| task.set_data_state(&data_state));
        match undone {
            Ok(()) => Err(e),
            Err(undo) => Err(Error::new(
                e.op,
                e.kind.clone(),
                format!(
                    "{}; putting back the optimizer, schedule and data state then failed too ({undo}): build the trainer anew",
                    e.message
                ),
            )),
        }
    }

    /// The optimizer state, the schedule's step and the data stream's position.
    fn restore_progress(&self, task: &mut dyn TrainTask, opt: &mut dyn Optimizer, sched: &mut Scheduler) -> Result<()> {
        opt.load_state_dict(&OptimizerState::strip_prefix(&self.file.tensors, &self.file.metadata, OPTIM_PREFIX))?;
        sched.load_state_dict(&self.file.metadata)?;
        if sched.step() != self.step {
            return Err(Error::format(
                OP,
                format!(
                    "{}: the schedule is at step {} but the checkpoint at step {}",
                    self.file.source,
                    sched.step(),
                    self.step
                ),
            ));
        }
        task.set_data_state(&self.data_state)
    }

    /// The model's tensors (everything not under `optim.`), strictly.
    fn restore_model(&self, task: &mut dyn TrainTask) -> Result<()> {
        let model_tensors: Vec<(String, Tensor)> = self.file.tensors.iter().filter(|(n, _)| !n.starts_with(OPTIM_PREFIX)).cloned().collect();
        load_into(
            task.model(),
            Checkpoint::from_tensors(self.file.source.clone(), model_tensors),
            &LoadOptions::strict(),
        )?;
        Ok(())
    }
}

/// Why a run of `world` ranks with micro-batches of `micro` examples cannot
/// continue a checkpoint written by `saved_world` ranks of `saved_micro`:
/// on the same number of ranks, another micro-batch size; on another number,
/// another global batch (`micro × world`). None when it can continue exactly:
/// the ranks' shards of a global batch together are that batch, so the same
/// global batch on any number of ranks reads the same examples in the same
/// steps (up to the rounding of the gradient mean, and dropout masks, which
/// are drawn per rank).
///
/// ```
/// use tamer::train::batch_layout_difference;
/// assert_eq!(batch_layout_difference(16, 2, 32, 1), None); // 2 × 16 = 1 × 32
/// let msg = batch_layout_difference(16, 2, 16, 1).unwrap();
/// assert!(msg.contains("2 rank(s) × 16 = global batch 32"), "{msg}");
/// assert!(msg.contains("1 rank(s) × 16 = global batch 16"), "{msg}");
/// ```
pub fn batch_layout_difference(saved_micro: u64, saved_world: u64, micro: u64, world: u64) -> Option<String> {
    if saved_world == world {
        return (saved_micro != micro).then(|| format!("micro-batch size: {saved_micro} in the checkpoint, {micro} in this run"));
    }
    let (saved_global, global) = (saved_micro.saturating_mul(saved_world), micro.saturating_mul(world));
    if saved_global == global {
        return None;
    }
    let hint = if saved_global.is_multiple_of(world) {
        format!(
            "give each of this run's {world} rank(s) micro-batches of {} (the examples' --batch-size is the global batch)",
            saved_global / world
        )
    } else {
        format!("a global batch of {saved_global} does not split evenly over {world} ranks: resume on a number of ranks that divides it")
    };
    Some(format!(
        "world size and batch: the checkpoint was written by {saved_world} rank(s) × {saved_micro} = global batch {saved_global}, \
         this run has {world} rank(s) × {micro} = global batch {global}; a run continues on another number of ranks only with \
         the same global batch: {hint}"
    ))
}
