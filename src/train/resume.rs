//! What [`Trainer::resume`](super::Trainer::resume) checks before it
//! continues a run: that this run would have written the checkpoint. Every
//! difference is collected and named (`optimizer beta1: 0.9 in the
//! checkpoint, 0.8 in this run`, `model_config.num_heads: 4 in the
//! checkpoint, 2 in this run`, `schedule warmup: 2 in the checkpoint, 3 in
//! this run`), so one error says everything to fix. The caller's metadata is
//! compared in both directions: an entry the checkpoint has and the run
//! lacks (or the reverse) is a difference, since the run would have written
//! another file; only a `model_config` or `input_normalization` missing
//! from the checkpoint is a note (files written before tamer stored them).

use super::checkpoint::{autocast_entry, batch_layout_difference, clip_entry, is_reserved_key, param_groups_json, TrainCheckpoint};
use super::{TrainConfig, TrainTask};
use crate::checkpoint::{INPUT_NORMALIZATION_KEY, MODEL_CONFIG_KEY};
use crate::models::canonical_model_config;
use crate::optim::{Optimizer, Scheduler};
use crate::Result;
use serde_json::Value;

/// The differences between a checkpoint and the run about to resume it, and
/// notes on what could not be compared (files from older versions).
#[derive(Default)]
pub(super) struct Comparison {
    pub differences: Vec<String>,
    pub notes: Vec<String>,
}

impl Comparison {
    fn differ(&mut self, what: &str, saved: impl std::fmt::Display, current: impl std::fmt::Display) {
        self.differences.push(format!("{what}: {saved} in the checkpoint, {current} in this run"));
    }
}

/// `s`, cut to 120 characters for an error message.
fn brief(s: &str) -> String {
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Name every leaf where two JSON values differ, by its path (`a.b[2].c`).
fn json_differences(path: &str, saved: &Value, current: &Value, out: &mut Comparison) {
    match (saved, current) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = format!("{path}.{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => json_differences(&sub, x, y, out),
                    (x, y) => out.differ(
                        &sub,
                        x.map_or("none".into(), |v| brief(&v.to_string())),
                        y.map_or("none".into(), |v| brief(&v.to_string())),
                    ),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                json_differences(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => out.differ(path, brief(&a.to_string()), brief(&b.to_string())),
        _ => {}
    }
}

/// `s` parsed as a JSON object or array (what is compared field by field).
fn structured(s: &str) -> Option<Value> {
    serde_json::from_str::<Value>(s).ok().filter(|v| v.is_object() || v.is_array())
}

/// Compare a metadata entry of the caller's, present on either side or both:
/// field by field when both are JSON objects or arrays. An entry on one side
/// only is a difference too: the run would have written another file.
fn compare_entry(key: &str, saved: Option<&str>, current: Option<&str>, out: &mut Comparison) {
    if saved == current {
        return;
    }
    if key == MODEL_CONFIG_KEY {
        // Written by another version, the same model may be spelled differently.
        if let (Some(a), Some(b)) = (saved.and_then(canonical_model_config), current.and_then(canonical_model_config)) {
            return json_differences(key, &a, &b, out);
        }
    }
    if let (Some(a), Some(b)) = (saved.and_then(structured), current.and_then(structured)) {
        return json_differences(key, &a, &b, out);
    }
    let json = saved.or(current).and_then(structured).is_some();
    let show = |v: Option<&str>| match v {
        None => "none".to_string(),
        Some(v) if json => brief(v),
        Some(v) => format!("{:?}", brief(v)),
    };
    let what = if json { key.to_string() } else { format!("metadata '{key}'") };
    out.differ(&what, show(saved), show(current));
}

/// A schedule's description, `name(key=value, ...)` as every built-in
/// schedule writes it, split into its name and fields (a value may hold
/// commas inside brackets); None for another form.
fn schedule_fields(description: &str) -> Option<(&str, Vec<(&str, &str)>)> {
    let (name, rest) = description.split_once('(')?;
    let inner = rest.strip_suffix(')')?;
    let mut fields = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                fields.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    fields.push(&inner[start..]);
    let fields = fields.into_iter().map(|f| f.trim().split_once('=')).collect::<Option<Vec<_>>>()?;
    Some((name, fields))
}

/// The value of field `key` among `fields`, or "none".
fn field_value<'a>(fields: &[(&'a str, &'a str)], key: &str) -> &'a str {
    fields.iter().find(|(k, _)| *k == key).map_or("none", |(_, v)| v)
}

/// Name the fields in which two schedule descriptions differ (`schedule
/// warmup: 2 in the checkpoint, 3 in this run`), or the two kinds when they
/// are different schedules.
fn schedule_differences(saved: &str, current: &str, out: &mut Comparison) {
    if saved == current {
        return;
    }
    let before = out.differences.len();
    match (schedule_fields(saved), schedule_fields(current)) {
        (Some((a, _)), Some((b, _))) if a != b => out.differ("schedule", a, b),
        (Some((_, fa)), Some((_, fb))) => {
            let mut keys: Vec<&str> = fa.iter().chain(&fb).map(|(k, _)| *k).collect();
            keys.sort_unstable();
            keys.dedup();
            for k in keys {
                let (x, y) = (field_value(&fa, k), field_value(&fb, k));
                if x != y {
                    out.differ(&format!("schedule {k}"), x, y);
                }
            }
        }
        _ => {}
    }
    if out.differences.len() == before {
        // Not of the usual form, or equal field by field but written differently.
        out.differ("schedule", brief(saved), brief(current));
    }
}

/// Everything about `ckpt` that differs from the run described by the rest.
/// `world` is the number of ranks this run trains on.
pub(super) fn compare(
    ckpt: &TrainCheckpoint,
    config: &TrainConfig,
    task: &dyn TrainTask,
    opt: &dyn Optimizer,
    sched: &Scheduler,
    world: usize,
) -> Result<Comparison> {
    let mut out = Comparison::default();
    let saved = &ckpt.file.metadata;
    if ckpt.seed != config.seed {
        out.differ("seed", ckpt.seed, config.seed);
    }
    if let Some(g) = ckpt.grad_accum.filter(|&g| g != config.grad_accum as u64) {
        out.differ("grad_accum", g, config.grad_accum);
    }
    // The batch layout: on another number of ranks, the global batch must be kept.
    let world = world as u64;
    match (ckpt.micro_batch_size, task.batch_size()) {
        (Some(saved), Some(now)) => {
            if let Some(d) = batch_layout_difference(saved, ckpt.world_size, now as u64, world) {
                out.differences.push(d);
            } else if ckpt.world_size != world {
                out.notes.push(format!(
                    "{} was written by {} rank(s) of micro-batches of {saved}; this run of {world} rank(s) of {now} keeps the global batch of {}, \
                     so it reads the same examples in the same steps (the gradient mean rounds differently, and dropout masks are drawn per rank)",
                    ckpt.file.source,
                    ckpt.world_size,
                    saved * ckpt.world_size
                ));
            }
        }
        (Some(saved), None) => out.differ("micro-batch size", saved, "none"),
        (None, _) if ckpt.world_size != world => out.differ(
            "world size (this task has no batch size by which to keep the global batch)",
            ckpt.world_size,
            world,
        ),
        (None, _) => {}
    }

    match saved.get("clip") {
        Some(c) if *c != clip_entry(config.clip) => out.differ("clip", c, clip_entry(config.clip)),
        Some(_) => {}
        None => out.notes.push(format!(
            "{} has no clip entry (an older file): gradient clipping is not checked",
            ckpt.file.source
        )),
    }

    // Files written before autocast was recorded trained in f32.
    let saved_autocast = saved.get("autocast").map_or("none", |s| s.as_str());
    if saved_autocast != autocast_entry(config.autocast) {
        out.differ("autocast", saved_autocast, autocast_entry(config.autocast));
    }

    // The caller's metadata (the model's configuration, its input normalisation,
    // a recipe ...), in both directions.
    let mut keys: Vec<&str> = config
        .metadata
        .keys()
        .chain(saved.keys().filter(|k| !is_reserved_key(k)))
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let (s, c) = (saved.get(key).map(String::as_str), config.metadata.get(key).map(String::as_str));
        if s.is_none() && (key == MODEL_CONFIG_KEY || key == INPUT_NORMALIZATION_KEY) {
            out.notes.push(format!(
                "{} has no {key} metadata (written before tamer stored it): its tensor shapes are checked, the rest of this run's {key} is assumed",
                ckpt.file.source
            ));
            continue;
        }
        compare_entry(key, s, c, &mut out);
    }

    // The optimizer's settings. The learning rate follows the schedule (compared
    // below), as does the momentum (β₁) when the schedule cycles it; the rest must match.
    let current = opt.state_dict()?.metadata;
    let cycles_momentum = sched.schedule().momentum_at(0).is_some();
    let compared = |k: &str| !(k.starts_with("state.") || k == "step" || k == "lr" || (cycles_momentum && (k == "beta1" || k == "momentum")));
    let saved_optim: Vec<(&str, &String)> = saved
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("optim.").map(|k| (k, v)))
        .filter(|(k, _)| compared(k))
        .collect();
    let mut keys: Vec<&str> = saved_optim
        .iter()
        .map(|(k, _)| *k)
        .chain(current.keys().map(String::as_str).filter(|k| compared(k)))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for k in keys {
        let s = saved_optim.iter().find(|(sk, _)| *sk == k).map(|(_, v)| v.as_str());
        let c = current.get(k).map(String::as_str);
        if s != c {
            let what = if k == "optimizer" {
                "optimizer".to_string()
            } else {
                format!("optimizer {k}")
            };
            out.differ(&what, s.unwrap_or("none"), c.unwrap_or("none"));
        }
    }
    match saved.get("param_groups").map(|s| serde_json::from_str::<Value>(s)) {
        Some(Ok(groups)) => json_differences("param_groups", &groups, &param_groups_json(opt), &mut out),
        Some(Err(_)) => out.differ("param_groups", "unreadable", "readable"),
        None => out.notes.push(format!(
            "{} has no param_groups (an older file): weight decay per group is not checked",
            ckpt.file.source
        )),
    }
    if let Some(kind) = saved.get("schedule.kind") {
        schedule_differences(kind, &sched.schedule().describe(), &mut out);
    }
    out.differences
        .extend(task.data_state_differences(&ckpt.data_state, ckpt.step, config.grad_accum));
    Ok(out)
}
