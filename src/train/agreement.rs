//! Start-up agreement between ranks: every rank of a data-parallel run must
//! train the same model with the same settings, or the run is silently
//! something else (ranks stepping with different learning rates drift apart,
//! ranks of different step counts wait forever in a collective). At the start
//! of [`Trainer::fit`](super::Trainer::fit) each rank hashes every setting
//! by name; the hashes are all-gathered, and a difference is an error on
//! every rank naming the ranks and the settings that differ.
//!
//! Compared: the run's steps, batch layout, clipping, intervals, seed and
//! metadata (the model configuration ...); the model's parameter names,
//! dtypes and shapes; the optimizer's settings (not its state, not the
//! learning rate it was last given, which follows the schedule) and
//! parameter groups; the schedule and its step; the micro-batch size; the
//! data description (the task's data state: its seed, sizes and position).
//! Not compared: what is each rank's own (the output directory, printing,
//! the device).

use super::checkpoint::{clip_entry, param_groups_json};
use super::data_parallel::all_ok;
use super::{TrainConfig, TrainTask};
use crate::dist::ProcessGroup;
use crate::optim::{Optimizer, Scheduler};
use crate::{Error, Result, Tensor};

const OP: &str = "Trainer::fit";

/// The settings the ranks must share, by name, as text.
pub(super) fn settings(config: &TrainConfig, task: &dyn TrainTask, opt: &dyn Optimizer, sched: &Scheduler, step: u64) -> Result<Vec<(&'static str, String)>> {
    let model: Vec<String> = task
        .model()
        .named_params()
        .iter()
        .map(|(name, p)| {
            let t = p.tensor();
            format!("{name}: {} {:?}", t.dtype(), t.dims())
        })
        .collect();
    // Settings only: the state is rank 0's after the broadcast anyway, and the
    // learning rate follows the schedule.
    // A ZeRO-1 optimizer's settings are its own rank's: its state_dict would gather.
    let metadata = match opt.zero1() {
        Some(z) => z.settings()?,
        None => opt.state_dict()?.metadata,
    };
    let optimizer: Vec<String> = metadata
        .into_iter()
        .filter(|(k, _)| !(k.starts_with("state.") || k == "step" || k == "lr"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let opt_u64 = |v: Option<u64>| v.map_or_else(|| "none".to_string(), |n| n.to_string());
    Ok(vec![
        ("total_steps", config.total_steps.to_string()),
        ("stop_at", opt_u64(config.stop_at)),
        ("grad_accum", config.grad_accum.to_string()),
        ("clip", clip_entry(config.clip)),
        ("eval_every", opt_u64(config.eval_every)),
        ("log_every", config.log_every.to_string()),
        ("checkpoint_every", opt_u64(config.checkpoint_every)),
        ("diagnostics_every", opt_u64(config.diagnostics_every)),
        ("zero1", config.zero1.to_string()),
        ("overlap_grad_sync", config.overlap_grad_sync.to_string()),
        ("seed", config.seed.to_string()),
        ("metadata", serde_json::to_string(&config.metadata).unwrap_or_default()),
        ("model", model.join(", ")),
        ("optimizer", optimizer.join(", ")),
        ("param_groups", param_groups_json(opt).to_string()),
        ("schedule", sched.schedule().describe()),
        ("schedule step", sched.step().to_string()),
        ("step", step.to_string()),
        ("batch_size", opt_u64(task.batch_size().map(|b| b as u64))),
        ("data", task.data_state()),
    ])
}

/// FNV-1a of `text`, cut to 48 bits so that an f64 holds it exactly.
fn hash48(text: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h >> 16) as f64
}

/// Ok when every rank has the same `settings`; otherwise an error on every
/// rank naming each rank that differs from rank 0 and in which settings,
/// with this rank's values of them.
pub(super) fn check(pg: &ProcessGroup, settings: Result<Vec<(&'static str, String)>>) -> Result<()> {
    if pg.world_size() == 1 {
        return settings.map(|_| ());
    }
    let settings = all_ok(pg, OP, settings)?;
    let hashes: Vec<f64> = settings.iter().map(|(_, v)| hash48(v)).collect();
    let all = pg.all_gather(&Tensor::from_vec(hashes.clone(), [hashes.len()])?)?.to_vec::<f64>()?;
    let ranks: Vec<&[f64]> = all.chunks(hashes.len()).collect();
    let mut lines = Vec::new();
    let mut mine = Vec::new();
    for (r, theirs) in ranks.iter().enumerate().skip(1) {
        let fields: Vec<usize> = (0..hashes.len()).filter(|&i| theirs[i] != ranks[0][i]).collect();
        if fields.is_empty() {
            continue;
        }
        let names: Vec<&str> = fields.iter().map(|&i| settings[i].0).collect();
        lines.push(format!("rank {r} differs from rank 0 in {}", names.join(", ")));
        if r == pg.rank() || pg.rank() == 0 {
            for &i in &fields {
                let entry = format!("{} = {}", settings[i].0, brief(&settings[i].1));
                if !mine.contains(&entry) {
                    mine.push(entry);
                }
            }
        }
    }
    if lines.is_empty() {
        return Ok(());
    }
    let here = if mine.is_empty() {
        String::new()
    } else {
        format!(" (on this rank, {}: {})", pg.rank(), mine.join("; "))
    };
    Err(Error::value(
        OP,
        format!(
            "the ranks were started with different training settings (every rank must build the same model, optimizer, schedule, data and TrainConfig): {}{here}",
            lines.join("; ")
        ),
    ))
}

/// `s`, cut to 160 characters for an error message.
fn brief(s: &str) -> String {
    match s.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
