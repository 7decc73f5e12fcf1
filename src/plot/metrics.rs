//! A training run's curves read back from its `metrics.jsonl`, and
//! `metrics.svg`: loss, evaluation metric, learning rate and gradient norm
//! against step, one run or several overlaid.
//!
//! The file is the trainer's (`tamer::train`): one JSON object per line with
//! an `"event"`. What is read:
//! - `"train"` records: `step`, `loss`, `lr`, `grad_norm`, and `acc` for
//!   classification (the mean over the steps since the previous record);
//! - `"eval"` records: `step` and every other number but `epoch`,
//!   `eval_seconds` and `elapsed`: the task's metrics (`test_loss` and
//!   `test_acc` for images, `val_loss` and maybe `train_loss` for text);
//! - `"resume"` records at step `N`: a resumed run continues from its
//!   checkpoint at `N`, so the points a crashed process logged after `N` are
//!   dropped and the resumed process's points take their place.
//!
//! Other events are ignored. The trainer writes a non-finite number as a
//! string (`"NaN"`, `"inf"`): it is read back as that number (and skipped
//! when drawn); `null` reads as NaN. A last line cut by a crash (no newline
//! and not JSON) is ignored; any other line that is not a JSON object is an
//! error naming the file and the line.

use super::{Chart, Figure, Marks, Overwrite, Scale, Series, Skipped};
use crate::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The name of the figure the training examples write beside `metrics.jsonl`.
pub const METRICS_SVG: &str = "metrics.svg";

/// `(step, value)` points.
pub type Curve = Vec<(f64, f64)>;

/// One run's curves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsRun {
    /// The run's name in legends: the file's directory for a file named
    /// `metrics.jsonl` (a run directory), else the file's stem.
    pub name: String,
    /// The `"train"` records' `loss`, `lr`, `grad_norm` and `acc`.
    pub loss: Curve,
    pub lr: Curve,
    pub grad_norm: Curve,
    pub acc: Curve,
    /// Each evaluation metric in the order first seen, e.g. `("test_acc", ..)`.
    pub eval: Vec<(String, Curve)>,
}

/// The eval record's fields that are not the task's metrics.
const NOT_EVAL_METRICS: [&str; 4] = ["step", "epoch", "eval_seconds", "elapsed"];

impl MetricsRun {
    /// The curve of evaluation metric `name`, if the run has one.
    pub fn eval_metric(&self, name: &str) -> Option<&Curve> {
        self.eval.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// Drop every point after `step` (a resume from a checkpoint at `step`).
    fn truncate_after(&mut self, step: f64) {
        let keep = |c: &mut Curve| c.retain(|p| p.0 <= step);
        for c in [&mut self.loss, &mut self.lr, &mut self.grad_norm, &mut self.acc] {
            keep(c);
        }
        for (_, c) in &mut self.eval {
            keep(c);
        }
    }

    fn push_eval(&mut self, name: &str, point: (f64, f64)) {
        match self.eval.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => c.push(point),
            None => self.eval.push((name.to_string(), vec![point])),
        }
    }
}

/// A number as the trainer writes it: a JSON number, a string spelling a
/// non-finite one, or null (NaN).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        Value::Null => Some(f64::NAN),
        _ => None,
    }
}

/// The legend name of the run whose metrics are at `path`.
fn run_name(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = path.parent().and_then(|d| d.file_name()).map(|d| d.to_string_lossy().into_owned());
    match dir {
        Some(dir) if stem == "metrics" && !dir.is_empty() => dir,
        _ => stem,
    }
}

/// Read a run's curves from its `metrics.jsonl` (see the [module](self)
/// documentation for what is read).
///
/// Errors name the file: it cannot be read, a line is not a JSON object, a
/// record's `step` is not a number, or it holds no `"train"` record (it is
/// not a training run's metrics, or the run trained no step).
///
/// ```
/// let dir = std::env::temp_dir().join(format!("tamer-read-metrics-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("metrics.jsonl");
/// std::fs::write(&path, concat!(
///     "{\"event\":\"start\",\"step\":0}\n",
///     "{\"event\":\"train\",\"step\":1,\"loss\":2.5,\"lr\":0.001,\"grad_norm\":\"NaN\"}\n",
///     "{\"event\":\"eval\",\"step\":1,\"val_loss\":2.4,\"eval_seconds\":0.1}\n",
/// )).unwrap();
/// let run = tamer::plot::read_metrics(&path).unwrap();
/// assert_eq!(run.loss, vec![(1.0, 2.5)]);
/// assert!(run.grad_norm[0].1.is_nan());
/// assert_eq!(run.eval_metric("val_loss"), Some(&vec![(1.0, 2.4)]));
/// assert_eq!(run.eval.len(), 1);
/// assert!(run.name.starts_with("tamer-read-metrics-doc"));
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn read_metrics(path: impl AsRef<Path>) -> Result<MetricsRun> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read_metrics", format!("cannot read {}: {e}", path.display())))?;
    let mut run = MetricsRun {
        name: run_name(path),
        ..MetricsRun::default()
    };
    let mut trains = 0usize;
    let lines: Vec<&str> = text.lines().collect();
    let cut_last = !text.is_empty() && !text.ends_with('\n');
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let record: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) if cut_last && i + 1 == lines.len() => continue,
            Err(e) => return Err(Error::format("read_metrics", format!("{}: not a JSON line ({e})", at()))),
        };
        let Some(object) = record.as_object() else {
            return Err(Error::format("read_metrics", format!("{}: not a JSON object", at())));
        };
        let event = object.get("event").and_then(Value::as_str).unwrap_or("");
        if !matches!(event, "train" | "eval" | "resume") {
            continue;
        }
        let step = object
            .get("step")
            .and_then(Value::as_f64)
            .ok_or_else(|| Error::format("read_metrics", format!("{}: a {event:?} record without a numeric \"step\"", at())))?;
        match event {
            "train" => {
                trains += 1;
                for (key, curve) in [
                    ("loss", &mut run.loss),
                    ("lr", &mut run.lr),
                    ("grad_norm", &mut run.grad_norm),
                    ("acc", &mut run.acc),
                ] {
                    if let Some(v) = object.get(key).and_then(number) {
                        curve.push((step, v));
                    }
                }
            }
            "eval" => {
                // In the line's order (serde_json's map sorts its keys).
                let mut keys: Vec<&String> = object.keys().filter(|k| *k != "event" && !NOT_EVAL_METRICS.contains(&k.as_str())).collect();
                keys.sort_by_key(|k| line.find(&format!("{:?}:", k)).unwrap_or(usize::MAX));
                for key in keys {
                    if let Some(v) = object.get(key).and_then(number) {
                        run.push_eval(key, (step, v));
                    }
                }
            }
            _ => run.truncate_after(step),
        }
    }
    if trains == 0 {
        return Err(Error::value(
            "read_metrics",
            format!(
                "{} holds no \"train\" record: it is not the metrics.jsonl of a training run, or the run trained no step",
                path.display()
            ),
        ));
    }
    Ok(run)
}

/// The four panels of `metrics.svg` for `runs` overlaid: the training loss
/// and the evaluation losses; the other evaluation metrics with the training
/// accuracy (or, for a run that has none, its evaluation losses again); the
/// learning rate; and the gradient norm on a log axis, all against step.
/// With one run, series are named by metric; with several, `run: metric`.
///
/// ```
/// use tamer::plot::{metrics_figure, MetricsRun};
/// let run = MetricsRun {
///     name: "vit".into(),
///     loss: vec![(1.0, 2.0), (2.0, 1.0)],
///     lr: vec![(1.0, 1e-3), (2.0, 5e-4)],
///     grad_norm: vec![(1.0, 3.0), (2.0, 0.0)],
///     eval: vec![("test_acc".into(), vec![(2.0, 0.9)])],
///     ..MetricsRun::default()
/// };
/// let fig = metrics_figure(&[run]);
/// assert_eq!(fig.panels.len(), 4);
/// assert_eq!(fig.panels[1].series[0].name, "test_acc");
/// // The zero gradient norm cannot be drawn on the log axis: skipped, not a panic.
/// assert_eq!(fig.render_svg().unwrap().skipped.non_positive_on_log, 1);
/// ```
pub fn metrics_figure(runs: &[MetricsRun]) -> Figure {
    let several = runs.len() > 1;
    let name = |run: &MetricsRun, metric: &str| if several { format!("{}: {metric}", run.name) } else { metric.to_string() };
    let chart = |title: &str, y: &str| Chart::new(title).x_label("step").y_label(y);
    let mut loss = chart("loss", "loss");
    let mut eval = chart("evaluation", "metric");
    let mut lr = chart("learning rate", "learning rate");
    let mut grad = chart("gradient norm (before clipping)", "global L2 norm").y_scale(Scale::Log10);
    let eval_line = |n: String, c: &Curve| Series::line(n, c.iter().copied()).marks(Marks::LineAndPoints);
    for run in runs {
        loss = loss.with_series(Series::line(name(run, "train loss"), run.loss.iter().copied()));
        let is_loss = |n: &str| n.ends_with("loss");
        for (metric, curve) in run.eval.iter().filter(|(n, _)| is_loss(n)) {
            let label = if metric == "train_loss" { "train_loss (eval)" } else { metric.as_str() };
            loss = loss.with_series(eval_line(name(run, label), curve));
        }
        let others: Vec<_> = run.eval.iter().filter(|(n, _)| !is_loss(n)).collect();
        if !run.acc.is_empty() {
            eval = eval.with_series(Series::line(name(run, "train acc"), run.acc.iter().copied()));
        }
        let shown = if others.is_empty() && run.acc.is_empty() {
            run.eval.iter().collect()
        } else {
            others
        };
        for (metric, curve) in shown {
            eval = eval.with_series(eval_line(name(run, metric), curve));
        }
        lr = lr.with_series(Series::line(name(run, "lr"), run.lr.iter().copied()));
        grad = grad.with_series(Series::line(name(run, "grad norm"), run.grad_norm.iter().copied()));
    }
    let title = match runs {
        [one] => format!("training run: {}", one.name),
        _ => format!("{} training runs", runs.len()),
    };
    Figure::new(title).columns(2).with_panel(loss).with_panel(eval).with_panel(lr).with_panel(grad)
}

/// Read `metrics` ([`read_metrics`]) and write its [`metrics_figure`] to
/// `svg` ([`Figure::write_svg`]: replaced only with [`Overwrite::Replace`]).
///
/// ```
/// use tamer::plot::{write_metrics_svg, Overwrite};
/// let dir = std::env::temp_dir().join(format!("tamer-metrics-svg-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("metrics.jsonl"), "{\"event\":\"train\",\"step\":1,\"loss\":2.5,\"lr\":0.001,\"grad_norm\":1.5}\n").unwrap();
/// let skipped = write_metrics_svg(dir.join("metrics.jsonl"), dir.join("metrics.svg"), Overwrite::Refuse).unwrap();
/// assert!(skipped.is_empty());
/// assert!(std::fs::read_to_string(dir.join("metrics.svg")).unwrap().contains("learning rate"));
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn write_metrics_svg(metrics: impl AsRef<Path>, svg: impl AsRef<Path>, overwrite: Overwrite) -> Result<Skipped> {
    let run = read_metrics(metrics)?;
    metrics_figure(&[run]).write_svg(svg, overwrite)
}
