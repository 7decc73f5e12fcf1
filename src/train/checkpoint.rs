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
//! | anything else | the caller's metadata ([`TrainConfig::metadata`]: model configuration, vocabulary ...) |
//!
//! [`Trainer::resume`](super::Trainer::resume) compares the seed, the batch
//! layout and the caller's metadata with the resuming run's.
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
pub const RESERVED_KEYS: &[&str] = &["format", "step", "seed", "data", "grad_accum", "micro_batch_size"];
const RESERVED_PREFIXES: &[&str] = &[OPTIM_PREFIX, "schedule."];

/// An error if `metadata` uses a key the checkpoint writes itself (it would be overwritten).
pub(crate) fn check_metadata_keys(op: &'static str, metadata: &BTreeMap<String, String>) -> Result<()> {
    match metadata
        .keys()
        .find(|k| RESERVED_KEYS.contains(&k.as_str()) || RESERVED_PREFIXES.iter().any(|p| k.starts_with(p)))
    {
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
    /// The task's [`TrainTask::data_state`].
    pub data_state: String,
    /// Every tensor and metadata entry of the file.
    pub file: Checkpoint,
}

impl TrainCheckpoint {
    /// Write the state of a run after `step` optimizer steps to `path`,
    /// atomically, with the seed, `grad_accum` and metadata of `config`.
    pub fn save(path: &Path, task: &dyn TrainTask, opt: &dyn Optimizer, sched: &Scheduler, config: &TrainConfig, step: u64) -> Result<()> {
        check_metadata_keys(OP, &config.metadata)?;
        let mut tensors: Vec<(String, Tensor)> = module_tensors(task.model());
        if let Some((name, _)) = tensors.iter().find(|(n, _)| n.starts_with(OPTIM_PREFIX)) {
            return Err(Error::value(
                OP,
                format!("model tensor {name:?} starts with {OPTIM_PREFIX:?}, which checkpoints reserve for the optimizer state"),
            ));
        }
        let state = opt.state_dict()?.prefixed(OPTIM_PREFIX);
        tensors.extend(state.tensors);
        let mut metadata = config.metadata.clone();
        metadata.extend(state.metadata);
        metadata.extend(sched.state_dict());
        metadata.insert("format".into(), FORMAT.into());
        metadata.insert("step".into(), step.to_string());
        metadata.insert("seed".into(), config.seed.to_string());
        metadata.insert("grad_accum".into(), config.grad_accum.to_string());
        if let Some(b) = task.batch_size() {
            metadata.insert("micro_batch_size".into(), b.to_string());
        }
        metadata.insert("data".into(), task.data_state());
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
            data_state: file.metadata.get("data").cloned().unwrap_or_default(),
            file,
        })
    }

    /// Load the model, optimizer, schedule and data stream from this checkpoint.
    pub fn restore(&self, task: &mut dyn TrainTask, opt: &mut dyn Optimizer, sched: &mut Scheduler) -> Result<()> {
        let model_tensors: Vec<(String, Tensor)> = self.file.tensors.iter().filter(|(n, _)| !n.starts_with(OPTIM_PREFIX)).cloned().collect();
        load_into(
            task.model(),
            Checkpoint::from_tensors(self.file.source.clone(), model_tensors),
            &LoadOptions::strict(),
        )?;
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
}
