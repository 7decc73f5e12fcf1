//! Training checkpoints: one safetensors file with everything a run needs to
//! continue exactly.
//!
//! | entry | what |
//! |---|---|
//! | model tensors, under their state-dict names | parameters, buffers, tied aliases ([`module_tensors`]) |
//! | `optim.*` tensors and metadata | [`Optimizer::state_dict`], prefixed |
//! | `schedule.step`, `schedule.kind` | [`Scheduler::state_dict`] |
//! | `format`, `step`, `seed`, `data` | this format's tag, optimizer steps done, the run seed, the task's data-stream state |
//! | anything else | the caller's metadata (model configuration, vocabulary ...) |
//!
//! The file is written atomically (a temporary file renamed over the old
//! one), so an interrupted write leaves the previous checkpoint intact.

use super::TrainTask;
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

/// A training checkpoint read back from disk.
#[derive(Debug)]
pub struct TrainCheckpoint {
    /// Optimizer steps done when it was written.
    pub step: u64,
    pub seed: u64,
    /// The task's [`TrainTask::data_state`].
    pub data_state: String,
    /// Every tensor and metadata entry of the file.
    pub file: Checkpoint,
}

impl TrainCheckpoint {
    /// Write the state of a run after `step` optimizer steps to `path`, atomically.
    pub fn save(
        path: &Path,
        task: &dyn TrainTask,
        opt: &dyn Optimizer,
        sched: &Scheduler,
        step: u64,
        seed: u64,
        extra: &BTreeMap<String, String>,
    ) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = module_tensors(task.model());
        if let Some((name, _)) = tensors.iter().find(|(n, _)| n.starts_with(OPTIM_PREFIX)) {
            return Err(Error::value(
                OP,
                format!("model tensor {name:?} starts with {OPTIM_PREFIX:?}, which checkpoints reserve for the optimizer state"),
            ));
        }
        let state = opt.state_dict()?.prefixed(OPTIM_PREFIX);
        tensors.extend(state.tensors);
        let mut metadata = extra.clone();
        metadata.extend(state.metadata);
        metadata.extend(sched.state_dict());
        metadata.insert("format".into(), FORMAT.into());
        metadata.insert("step".into(), step.to_string());
        metadata.insert("seed".into(), seed.to_string());
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
        let num = |key: &str| -> Result<u64> {
            let v = file.metadata.get(key).ok_or_else(|| Error::format(OP, format!("{src}: no '{key}' metadata")))?;
            v.parse()
                .map_err(|_| Error::format(OP, format!("{src}: metadata '{key}' = {v:?} is not a whole number")))
        };
        Ok(TrainCheckpoint {
            step: num("step")?,
            seed: num("seed")?,
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
