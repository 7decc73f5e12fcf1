//! The record of which parameters get weight decay, written at the start of
//! every run: the rule in force (PyTorch's, nanoGPT's, timm's or a custom
//! one) is then visible in the metrics and on the terminal, never a guess.

use super::metrics::Record;
use crate::optim::DecaySummary;
use serde_json::Value;

/// `{"event":"weight_decay","decayed":18,"decayed_values":..,"decayed_names":[..],
/// "not_decayed":34,"not_decayed_values":..,"not_decayed_names":[..],"rates":[0.1]}`,
/// names compacted over layer indices (`transformer.h.*.attn.c_attn.weight ×4`).
pub(super) fn decay_record(summary: &DecaySummary) -> Record {
    let (with, without) = summary.values();
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    Record::new("weight_decay")
        .with("decayed", summary.decayed.len() as u64)
        .with("decayed_values", with as u64)
        .with("decayed_names", strings(summary.decayed_compact()))
        .with("not_decayed", summary.not_decayed.len() as u64)
        .with("not_decayed_values", without as u64)
        .with("not_decayed_names", strings(summary.not_decayed_compact()))
        .with("rates", Value::Array(summary.rates().into_iter().map(Value::from).collect()))
}
