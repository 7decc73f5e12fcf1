//! Where the trainer's numbers go: one JSON object per line in a file
//! (`metrics.jsonl`), a line on the terminal, and an indicatif progress bar
//! that is drawn only when stdout is a terminal.

use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Whether to draw a progress bar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Progress {
    /// When stdout is a terminal (not when piped or captured by a test).
    #[default]
    Auto,
    Always,
    Never,
}

/// One metrics record: an event name and numeric or string fields, written
/// as `{"event": .., "step": .., ...}` in insertion order.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub event: String,
    pub fields: Vec<(String, Value)>,
}

impl Record {
    pub fn new(event: &str) -> Record {
        Record {
            event: event.to_string(),
            fields: Vec::new(),
        }
    }
    /// Add a field as it is (a non-finite f64 given here becomes JSON `null`;
    /// use [`num`](Self::num) for numbers that may be non-finite).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Record {
        let v = value.into();
        self.fields.push((key.to_string(), v));
        self
    }
    /// Add a number; non-finite ones become strings ("NaN", "inf"), which
    /// JSON cannot hold as numbers.
    pub fn num(self, key: &str, x: f64) -> Record {
        let v = serde_json::Number::from_f64(x)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(format!("{x}")));
        self.with(key, v)
    }
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// The record as one line of JSON.
    /// Keys keep their insertion order (event first), which serde_json's
    /// sorted map would not.
    pub fn to_json(&self) -> String {
        let mut s = format!("{{\"event\":{}", Value::String(self.event.clone()));
        for (k, v) in &self.fields {
            s.push_str(&format!(",{}:{v}", Value::String(k.clone())));
        }
        s.push('}');
        s
    }
}

/// Writes records to the JSONL file and the terminal, and drives the progress bar.
///
/// The file only ever holds whole lines: each record is written with one
/// `write_all`, and a write that fails part-way (a full disk) is cut back to
/// the previous line before the error is returned. A file that ends in a cut
/// line anyway (the process was killed mid-write) is repaired when it is
/// opened for appending: the partial line is removed ([`repaired`](Self::repaired)
/// says how many bytes), so a resumed run does not glue its first record to it.
pub struct MetricsLog {
    file: Option<LogFile>,
    bar: ProgressBar,
    print: bool,
    repaired: Option<u64>,
}

struct LogFile {
    path: PathBuf,
    file: File,
    /// The file's length: where the last whole line ends.
    len: u64,
}

/// Cut a cut last line off the file at `path` (one not ending in a newline).
/// Returns the number of bytes removed, if any.
fn repair_last_line(path: &Path) -> Result<Option<u64>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("MetricsLog", format!("cannot read {}: {e}", path.display()))),
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(None);
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("MetricsLog", format!("cannot open {}: {e}", path.display())))?;
    f.set_len(keep as u64)
        .map_err(|e| Error::io("MetricsLog", format!("cannot repair {}: {e}", path.display())))?;
    Ok(Some((bytes.len() - keep) as u64))
}

impl MetricsLog {
    /// `path`: the JSONL file, appended to (a resumed run continues the
    /// file); `print`: also print human-readable lines; `total_steps`: the
    /// progress bar's length.
    pub fn new(path: Option<&Path>, print: bool, progress: Progress, total_steps: u64) -> Result<MetricsLog> {
        MetricsLog::open(path, true, print, progress, total_steps)
    }

    /// As [`new`](Self::new), but an existing file is emptied first (a fresh run).
    pub fn fresh(path: Option<&Path>, print: bool, progress: Progress, total_steps: u64) -> Result<MetricsLog> {
        MetricsLog::open(path, false, print, progress, total_steps)
    }

    fn open(path: Option<&Path>, append: bool, print: bool, progress: Progress, total_steps: u64) -> Result<MetricsLog> {
        let mut repaired = None;
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io("MetricsLog", format!("cannot create {}: {e}", dir.display())))?;
                }
                let mut options = OpenOptions::new();
                options.create(true);
                if append {
                    repaired = repair_last_line(p)?;
                    options.append(true);
                } else {
                    options.write(true).truncate(true);
                }
                let f = options
                    .open(p)
                    .map_err(|e| Error::io("MetricsLog", format!("cannot open {}: {e}", p.display())))?;
                let len = f
                    .metadata()
                    .map_err(|e| Error::io("MetricsLog", format!("cannot stat {}: {e}", p.display())))?
                    .len();
                Some(LogFile {
                    path: p.to_path_buf(),
                    file: f,
                    len,
                })
            }
            None => None,
        };
        let show = match progress {
            Progress::Auto => std::io::stdout().is_terminal(),
            Progress::Always => true,
            Progress::Never => false,
        };
        let bar = if show {
            let bar = ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stdout());
            if let Ok(style) = ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        Ok(MetricsLog { file, bar, print, repaired })
    }

    /// Append `record` to the file as one whole line (flushed, so a crash
    /// keeps what was written; a failed write leaves no partial line).
    pub fn write(&mut self, record: &Record) -> Result<()> {
        if let Some(log) = &mut self.file {
            let line = format!("{}\n", record.to_json());
            if let Err(e) = log.file.write_all(line.as_bytes()).and_then(|_| log.file.flush()) {
                // Best effort: if even the cut fails, the next open repairs the file.
                let _ = log.file.set_len(log.len);
                return Err(Error::io(
                    "MetricsLog",
                    format!("cannot write {}: {e} (the record was not written)", log.path.display()),
                ));
            }
            log.len += line.len() as u64;
        }
        Ok(())
    }

    /// Bytes of a cut last line removed when the file was opened, if there was one.
    pub fn repaired(&self) -> Option<u64> {
        self.repaired
    }

    /// Print a line above the progress bar (or plainly when there is none).
    pub fn println(&self, line: &str) {
        if !self.print {
            return;
        }
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn set_position(&self, step: u64, message: String) {
        self.bar.set_position(step);
        self.bar.set_message(message);
    }

    /// Clear the progress bar (also done when the log is dropped, so an
    /// early return does not leave it on the screen).
    pub fn finish(&self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

impl Drop for MetricsLog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Read a JSONL metrics file back (for tests and analysis).
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Vec<Value>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read_jsonl", format!("{}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| Error::format("read_jsonl", format!("{} line {}: {e}", path.display(), i + 1))))
        .collect()
}

fn fmt_field(rec: &Record, key: &str) -> Option<f64> {
    rec.get(key).and_then(|v| v.as_f64())
}

/// The terminal line of a `train` record.
pub(super) fn train_line(rec: &Record, total: u64) -> String {
    let mut s = format!("step {:>6}/{total}", rec.get("step").and_then(|v| v.as_u64()).unwrap_or(0));
    if let Some(e) = fmt_field(rec, "epoch") {
        s += &format!(" | epoch {e:6.2}");
    }
    if let Some(l) = fmt_field(rec, "loss") {
        s += &format!(" | loss {l:.4}");
    }
    if let Some(a) = fmt_field(rec, "acc") {
        s += &format!(" | acc {:5.1}%", a * 100.0);
    }
    if let Some(lr) = fmt_field(rec, "lr") {
        s += &format!(" | lr {lr:.2e}");
    }
    if let Some(g) = fmt_field(rec, "grad_norm") {
        s += &format!(" | gnorm {g:.3}");
    }
    match (fmt_field(rec, "tokens_per_s"), fmt_field(rec, "samples_per_s")) {
        (Some(t), _) => s += &format!(" | {t:.0} tok/s"),
        (None, Some(x)) => s += &format!(" | {x:.0} samples/s"),
        _ => {}
    }
    if let Some(t) = fmt_field(rec, "elapsed") {
        s += &format!(" | {t:.1}s");
    }
    s
}

/// The terminal line of an `eval` record.
pub(super) fn eval_line(rec: &Record) -> String {
    let mut s = format!("eval at step {}:", rec.get("step").and_then(|v| v.as_u64()).unwrap_or(0));
    for (k, v) in &rec.fields {
        if k == "step" || k == "epoch" || k == "elapsed" || k == "eval_seconds" {
            continue;
        }
        if let Some(x) = v.as_f64() {
            if k.ends_with("acc") {
                s += &format!(" {k} {:.2}%", x * 100.0);
            } else {
                s += &format!(" {k} {x:.4}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_order_and_spell_out_non_finite_numbers() {
        let r = Record::new("train")
            .with("step", 3u64)
            .num("loss", 0.5)
            .num("grad_norm", f64::NAN)
            .num("lr", f64::INFINITY);
        assert_eq!(r.to_json(), r#"{"event":"train","step":3,"loss":0.5,"grad_norm":"NaN","lr":"inf"}"#);
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["loss"], 0.5);
        assert_eq!(r.get("step").and_then(|v| v.as_u64()), Some(3));
        // `with` stores what it is given: a non-finite f64 is JSON null there.
        assert_eq!(Record::new("x").with("v", f64::NAN).to_json(), r#"{"event":"x","v":null}"#);
    }

    #[test]
    fn the_log_appends_and_reads_back() {
        let path = std::env::temp_dir().join(format!("tamer-metrics-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        for i in 0..2u64 {
            let mut log = MetricsLog::new(Some(&path), false, Progress::Never, 10).unwrap();
            log.write(&Record::new("train").with("step", i)).unwrap();
            log.finish();
        }
        let back = read_jsonl(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1]["step"], 1);
        // A fresh log starts the file anew.
        let mut log = MetricsLog::fresh(Some(&path), false, Progress::Never, 10).unwrap();
        log.write(&Record::new("start").with("step", 0u64)).unwrap();
        drop(log);
        let back = read_jsonl(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0]["event"], "start");
        std::fs::write(&path, "{\"event\":\"x\"}\nnot json\n").unwrap();
        let e = read_jsonl(&path).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }
}
