//! What an experiment is: its claim, source, setup and rule as text, and a
//! `run` that measures and returns per-run records, a table, a chart and a
//! verdict reached by the rule's code.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tamer::{Device, Error};

/// How big a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    /// Seconds: checks the plumbing (files written, verdict computed), not the claim.
    Quick,
    /// At most 15 minutes per experiment on a 2-core CPU: the committed report.
    Default,
    /// Larger models and more steps, for a GPU.
    Full,
}

impl Scale {
    pub fn name(self) -> &'static str {
        match self {
            Scale::Quick => "quick",
            Scale::Default => "default",
            Scale::Full => "full",
        }
    }
    /// Seeds when `--seeds` is not given.
    pub fn default_seeds(self) -> usize {
        match self {
            Scale::Quick => 2,
            Scale::Default => 3,
            Scale::Full => 5,
        }
    }
    /// Pick the value for this scale.
    pub fn pick<T>(self, quick: T, default: T, full: T) -> T {
        match self {
            Scale::Quick => quick,
            Scale::Default => default,
            Scale::Full => full,
        }
    }
}

/// What a run may use.
pub struct Context {
    pub scale: Scale,
    /// One run per seed (0, 1, 2, ...).
    pub seeds: Vec<u64>,
    pub device: Device,
    started: Instant,
    name: &'static str,
    run_dir: Option<PathBuf>,
}

impl Context {
    pub fn new(name: &'static str, scale: Scale, seeds: usize, device: Device) -> Self {
        Context {
            scale,
            seeds: (0..seeds as u64).collect(),
            device,
            started: Instant::now(),
            name,
            run_dir: None,
        }
    }
    /// The directory the runner writes this experiment's files into
    /// (`OUT/NAME`), for an experiment that keeps more than its records
    /// there (a checkpoint).
    pub fn with_run_dir(mut self, dir: PathBuf) -> Self {
        self.run_dir = Some(dir);
        self
    }
    /// The run directory, created if absent; an error when the runner gave none.
    pub fn run_dir(&self) -> tamer::Result<&Path> {
        let dir = self
            .run_dir
            .as_deref()
            .ok_or_else(|| Error::value("lab", format!("{}: the runner gave no run directory for its files", self.name)))?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io("lab", format!("cannot create {}: {e}", dir.display())))?;
        Ok(dir)
    }
    /// A progress line on stderr, with the time since the experiment started.
    pub fn log(&self, message: impl AsRef<str>) {
        eprintln!("[{} {:>6.1}s] {}", self.name, self.started.elapsed().as_secs_f64(), message.as_ref());
    }
}

/// One measured number: `metric` of `variant` at `x` (a depth, a step) for `seed`.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub variant: String,
    pub seed: u64,
    pub x: f64,
    pub metric: String,
    pub value: f64,
}

impl Record {
    pub fn new(variant: &str, seed: u64, x: f64, metric: &str, value: f64) -> Self {
        Record {
            variant: variant.to_string(),
            seed,
            x,
            metric: metric.to_string(),
            value,
        }
    }
    /// One line of runs.jsonl (a non-finite value is written as null, with its text beside it).
    pub fn to_json(&self) -> Value {
        let value = if self.value.is_finite() { json!(self.value) } else { Value::Null };
        let mut v = json!({"variant": self.variant, "seed": self.seed, "x": self.x, "metric": self.metric, "value": value});
        if !self.value.is_finite() {
            v["value_text"] = json!(self.value.to_string());
        }
        v
    }
}

/// The values of `metric` for `variant` at `x`, one per seed, in seed order.
pub fn values_at(records: &[Record], variant: &str, metric: &str, x: f64) -> Vec<f64> {
    records
        .iter()
        .filter(|r| r.variant == variant && r.metric == metric && r.x == x)
        .map(|r| r.value)
        .collect()
}

/// The distinct `x` of `metric` for `variant`, ascending.
pub fn xs_of(records: &[Record], variant: &str, metric: &str) -> Vec<f64> {
    let mut xs: Vec<f64> = records.iter().filter(|r| r.variant == variant && r.metric == metric).map(|r| r.x).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs
}

/// A table for the report: a header and rows of cells.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[&str]) -> Self {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }
    pub fn to_json(&self) -> Value {
        json!({"columns": self.columns, "rows": self.rows})
    }
    pub fn from_json(v: &Value) -> Option<Table> {
        let strings = |v: &Value| -> Option<Vec<String>> { v.as_array()?.iter().map(|c| c.as_str().map(str::to_string)).collect() };
        Some(Table {
            columns: strings(&v["columns"])?,
            rows: v["rows"].as_array()?.iter().map(strings).collect::<Option<_>>()?,
        })
    }
    /// The table as Markdown.
    pub fn markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut s = line(&self.columns);
        s += &line(&vec!["---".to_string(); self.columns.len()]);
        for row in &self.rows {
            s += &line(row);
        }
        s
    }
}

/// One line of a chart: `(x, mean, std)` points (std 0 draws no band).
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64, f64)>,
}

/// One panel of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub lines: Vec<Line>,
}

impl Panel {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Panel {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            log_x: false,
            log_y: false,
            lines: Vec::new(),
        }
    }
    pub fn log_y(mut self) -> Self {
        self.log_y = true;
        self
    }
    /// A line of `metric` for `variant` over its `x`: mean ± sample std over seeds
    /// (non-finite values left out; a point with none left is skipped).
    pub fn line_from(mut self, records: &[Record], variant: &str, metric: &str, label: &str) -> Self {
        let points = xs_of(records, variant, metric)
            .into_iter()
            .filter_map(|x| {
                let vs: Vec<f64> = values_at(records, variant, metric, x).into_iter().filter(|v| v.is_finite()).collect();
                let m = super::stats::mean(&vs)?;
                Some((x, m, super::stats::sample_std(&vs).unwrap_or(0.0)))
            })
            .collect();
        self.lines.push(Line {
            label: label.to_string(),
            points,
        });
        self
    }
}

/// The verdict's three outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerdictKind {
    Reproduced,
    NotReproduced,
    Inconclusive,
}

impl VerdictKind {
    pub fn text(self) -> &'static str {
        match self {
            VerdictKind::Reproduced => "reproduced",
            VerdictKind::NotReproduced => "not reproduced",
            VerdictKind::Inconclusive => "inconclusive",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [VerdictKind::Reproduced, VerdictKind::NotReproduced, VerdictKind::Inconclusive]
            .into_iter()
            .find(|k| k.text() == s)
    }
}

/// A verdict and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub kind: VerdictKind,
    pub reason: String,
}

impl Verdict {
    pub fn reproduced(reason: impl Into<String>) -> Self {
        Verdict {
            kind: VerdictKind::Reproduced,
            reason: reason.into(),
        }
    }
    pub fn not_reproduced(reason: impl Into<String>) -> Self {
        Verdict {
            kind: VerdictKind::NotReproduced,
            reason: reason.into(),
        }
    }
    pub fn inconclusive(reason: impl Into<String>) -> Self {
        Verdict {
            kind: VerdictKind::Inconclusive,
            reason: reason.into(),
        }
    }
    /// The verdict of a rule whose parts must all hold: reproduced (the parts
    /// that held) when none failed, else not reproduced, naming the failed
    /// parts first.
    pub fn from_parts(held: &[String], failed: &[String]) -> Self {
        if failed.is_empty() {
            Verdict::reproduced(held.join("; "))
        } else {
            Verdict::not_reproduced(failed_and_held(failed, held))
        }
    }
}

/// "failed: …; held: …" (`none` when no part held).
pub fn failed_and_held(failed: &[String], held: &[String]) -> String {
    let held = if held.is_empty() { "none".to_string() } else { held.join("; ") };
    format!("failed: {}; held: {held}", failed.join("; "))
}

/// What a run returns.
pub struct Outcome {
    pub records: Vec<Record>,
    pub table: Table,
    /// One or more panels, drawn side by side in NAME.svg.
    pub panels: Vec<Panel>,
    pub verdict: Verdict,
    /// Anything the reader should know about this run (what is not done yet, a caveat).
    pub notes: Vec<String>,
}

/// An experiment of the lab. The rule is written out in [`rule`](Experiment::rule)
/// and coded in the experiment's `decide` function, which `run` calls: the
/// two say the same thing, and the report prints the rule before the numbers.
pub trait Experiment: Sync {
    /// The command-line name (`rank-collapse`).
    fn name(&self) -> &'static str;
    /// A heading for the report.
    fn title(&self) -> &'static str;
    /// The claim under test, in one sentence.
    fn claim(&self) -> &'static str;
    /// The paper(s) and what they reported (from docs of the published numbers).
    fn source(&self) -> &'static str;
    /// What runs at this scale: models, data, steps, seeds.
    fn setup(&self, scale: Scale) -> String;
    /// The verdict rule, in words.
    fn rule(&self) -> &'static str;
    /// Why this experiment cannot run here (its data is absent), if so: the
    /// runner then skips it with this reason and writes nothing for it.
    fn missing_data(&self) -> Option<String> {
        None
    }
    /// Measure, then decide by the rule.
    fn run(&self, ctx: &Context) -> tamer::Result<Outcome>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_of_parts_is_reproduced_only_when_none_failed() {
        let held = vec!["(1) a".to_string(), "(3) c".to_string()];
        let v = Verdict::from_parts(&held, &[]);
        assert_eq!((v.kind, v.reason.as_str()), (VerdictKind::Reproduced, "(1) a; (3) c"));
        let v = Verdict::from_parts(&held, &["(2) b".to_string()]);
        assert_eq!((v.kind, v.reason.as_str()), (VerdictKind::NotReproduced, "failed: (2) b; held: (1) a; (3) c"));
        let v = Verdict::from_parts(&[], &["(1) a".to_string()]);
        assert_eq!(v.reason, "failed: (1) a; held: none");
    }
}
