//! The `diagnostics` record of [`TrainConfig::diagnostics_every`](super::TrainConfig::diagnostics_every).

use super::metrics::Record;
use crate::diagnostics::{LayerProbe, StepDiagnostics};
use serde_json::Value;

/// `{"event":"diagnostics","step":S,"layers":[..],"grad_norm":[..],"update_ratio":[..],
/// "rank_collapse":[..],"attention_entropy":[..]}`: the per-layer arrays are
/// aligned with `layers` (the parameter groups of
/// [`layer_of`](crate::diagnostics::layer_of)); `rank_collapse` has one value
/// per depth (the embeddings, then each block) and `attention_entropy` one per
/// block, both for the task's probe batch and absent when it has none. A
/// non-finite number is written as `null`.
pub(super) fn diagnostics_record(step: u64, diag: &StepDiagnostics, probe: Option<&LayerProbe>) -> Record {
    let numbers = |v: &[f64]| Value::Array(v.iter().map(|&x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)).collect());
    let mut rec = Record::new("diagnostics")
        .with("step", step)
        .with("layers", diag.layers.clone())
        .with("grad_norm", numbers(&diag.grad_norms))
        .with("update_ratio", numbers(&diag.update_ratios));
    if let Some(p) = probe {
        rec = rec
            .with("rank_collapse", numbers(&p.rank_collapse))
            .with("attention_entropy", numbers(&p.attention_entropy));
    }
    rec
}

/// One terminal line: the range of each per-layer quantity.
pub(super) fn diagnostics_line(step: u64, diag: &StepDiagnostics, probe: Option<&LayerProbe>) -> String {
    let range = |v: &[f64]| {
        let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("{lo:.2e}..{hi:.2e}")
        }
    };
    let mut s = format!(
        "diagnostics at step {step}: {} layers | grad norm {} | update ratio {}",
        diag.layers.len(),
        range(&diag.grad_norms),
        range(&diag.update_ratios)
    );
    if let Some(p) = probe {
        s += &format!(
            " | rank collapse {} | attention entropy {}",
            range(&p.rank_collapse),
            range(&p.attention_entropy)
        );
    }
    s
}
