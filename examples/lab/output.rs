//! An experiment's files: `DIR/NAME/{runs.jsonl, NAME.svg, verdict.json}`.
//! A directory that already exists is a run a user made: it is replaced
//! only with `--force`.

use super::experiment::{Context, Experiment, Outcome};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tamer::{Error, Result};

/// `out/NAME`, checked before anything runs: an existing one needs `force`.
pub fn run_dir(out: &Path, name: &str, force: bool) -> Result<PathBuf> {
    let dir = out.join(name);
    if dir.exists() && !force {
        return Err(Error::io(
            "lab",
            format!(
                "{} already exists (an earlier run of {name}); pass --force to replace its runs.jsonl, {name}.svg and verdict.json, or choose another --out",
                dir.display()
            ),
        ));
    }
    Ok(dir)
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| Error::io("lab", format!("cannot write {}: {e}", path.display())))
}

/// What the report needs besides the outcome: how the run was made.
pub struct RunInfo {
    pub seconds: f64,
    pub command: String,
    pub date: String,
    pub commit: String,
    /// The 1-minute load average before and after the run (Linux), for a shared machine.
    pub load: (Option<f64>, Option<f64>),
}

/// Write the three files into `dir` and return verdict.json's object.
pub fn write_run(dir: &Path, exp: &dyn Experiment, ctx: &Context, outcome: &Outcome, info: &RunInfo) -> Result<Value> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("lab", format!("cannot create {}: {e}", dir.display())))?;
    let name = exp.name();
    let mut lines = String::new();
    for r in &outcome.records {
        lines += &r.to_json().to_string();
        lines.push('\n');
    }
    write(&dir.join("runs.jsonl"), lines)?;
    let svg_name = format!("{name}.svg");
    write(&dir.join(&svg_name), super::chart::render(exp.title(), &outcome.panels)?)?;
    let verdict = json!({
        "name": name,
        "title": exp.title(),
        "claim": exp.claim(),
        "source": exp.source(),
        "setup": exp.setup(ctx.scale),
        "rule": exp.rule(),
        "verdict": outcome.verdict.kind.text(),
        "reason": outcome.verdict.reason,
        "notes": outcome.notes,
        "table": outcome.table.to_json(),
        "scale": ctx.scale.name(),
        "seeds": ctx.seeds.len(),
        "device": ctx.device.to_string(),
        "seconds": info.seconds,
        "command": info.command,
        "date": info.date,
        "commit": info.commit,
        "load_average": [info.load.0, info.load.1],
        "svg": svg_name,
    });
    let text = serde_json::to_string_pretty(&verdict).map_err(|e| Error::format("lab", format!("verdict.json: {e}")))?;
    write(&dir.join("verdict.json"), text + "\n")?;
    Ok(verdict)
}

/// The 1-minute load average from /proc/loadavg, where there is one.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// `git rev-parse --short HEAD` (with `-dirty` when the work tree has changes), else "unknown".
pub fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) if !hash.is_empty() => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(s) if !s.is_empty() => format!("{hash}-dirty"),
            _ => hash,
        },
        _ => "unknown".to_string(),
    }
}

/// Today's date and time in UTC, `YYYY-MM-DD HH:MM UTC`, from the system clock.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}
