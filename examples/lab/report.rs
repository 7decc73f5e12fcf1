//! The report: `docs/lab/README.md` (or `--report DIR`), regenerated from the
//! verdict files kept beside it (`NAME.json`, a copy of each run's
//! verdict.json, and `NAME.svg`), so running one experiment updates its
//! section and keeps the others.

use super::experiment::{Experiment, Table, VerdictKind};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tamer::{Error, Result};

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io("lab report", format!("cannot {what} {}: {e}", path.display()))
}

/// Copy a finished run (`run_dir/NAME.svg` and its verdict) into `report_dir`.
pub fn add_run(report_dir: &Path, run_dir: &Path, verdict: &Value) -> Result<()> {
    std::fs::create_dir_all(report_dir).map_err(|e| io_err("create", report_dir, e))?;
    let name = verdict["name"].as_str().unwrap_or("unnamed");
    let svg = run_dir.join(format!("{name}.svg"));
    let target = report_dir.join(format!("{name}.svg"));
    std::fs::copy(&svg, &target).map_err(|e| io_err("copy", &svg, e))?;
    let path = report_dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(verdict).map_err(|e| Error::format("lab report", e.to_string()))?;
    std::fs::write(&path, text + "\n").map_err(|e| io_err("write", &path, e))
}

/// Rewrite `report_dir/README.md` from the `NAME.json` files there, in the
/// order of `experiments`; returns its path.
pub fn regenerate(report_dir: &Path, experiments: &[&dyn Experiment]) -> Result<PathBuf> {
    let mut verdicts = Vec::new();
    for exp in experiments {
        let path = report_dir.join(format!("{}.json", exp.name()));
        if !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| io_err("read", &path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::format("lab report", format!("{}: not a verdict file: {e}", path.display())))?;
        verdicts.push(v);
    }
    let readme = report_dir.join("README.md");
    std::fs::write(&readme, render(&verdicts, experiments)).map_err(|e| io_err("write", &readme, e))?;
    Ok(readme)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("–")
}

fn minutes(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else {
        format!("{:.1} min", seconds / 60.0)
    }
}

/// The README's Markdown.
pub fn render(verdicts: &[Value], experiments: &[&dyn Experiment]) -> String {
    let mut md = String::from(
        "# The lab: training tips, measured\n\n\
         Each section below tests one claim behind tamer's training recipe with a small experiment on this \
         repository's CPU, and states whether the measurement reproduces it. The rule that decides each verdict \
         is fixed in the code (`examples/lab/experiments/`) and printed here before the numbers. A claim the data \
         does not support is reported as not reproduced.\n\n\
         This file is generated: `cargo run --release --example lab -- all` (or one experiment's name) reruns \
         the experiments at `--scale default` (at most 15 minutes each on a 2-core CPU), writes each run to \
         `out/lab/NAME/` (`runs.jsonl`, `NAME.svg`, `verdict.json`) and regenerates this page from the \
         `NAME.json` verdict files beside it. `--scale full` is meant for a GPU (`--device cuda`).\n\n",
    );
    md += "| experiment | verdict | scale | seeds | run time |\n|---|---|---|---|---|\n";
    for v in verdicts {
        md += &format!(
            "| [{}](#{}) | **{}** | {} | {} | {} |\n",
            s(v, "title"),
            s(v, "name"),
            s(v, "verdict"),
            s(v, "scale"),
            v["seeds"],
            minutes(v["seconds"].as_f64().unwrap_or(f64::NAN))
        );
    }
    let done: Vec<&str> = verdicts.iter().map(|v| s(v, "name")).collect();
    let missing: Vec<&str> = experiments.iter().map(|e| e.name()).filter(|n| !done.contains(n)).collect();
    if !missing.is_empty() {
        md += &format!("\nNot run yet: {}.\n", missing.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "));
    }
    for v in verdicts {
        md += &section(v);
    }
    md
}

fn section(v: &Value) -> String {
    let name = s(v, "name");
    let mut md = format!("\n<a id=\"{name}\"></a>\n## {} (`{name}`)\n\n", s(v, "title"));
    md += &format!("**Claim.** {}\n\n", s(v, "claim"));
    md += &format!("**Source.** {}\n\n", s(v, "source"));
    md += &format!(
        "**Setup** (`--scale {}`, seeds: {}, {}). {}\n\n",
        s(v, "scale"),
        v["seeds"],
        s(v, "device"),
        s(v, "setup")
    );
    md += &format!("**Rule** (fixed before the numbers). {}\n\n", s(v, "rule"));
    md += &format!("![{name}]({})\n\n", s(v, "svg"));
    if let Some(table) = Table::from_json(&v["table"]) {
        md += &table.markdown();
        md.push('\n');
    }
    let kind = VerdictKind::parse(s(v, "verdict")).map(|k| k.text()).unwrap_or("–");
    md += &format!("**Verdict: {kind}.** {}\n\n", s(v, "reason"));
    if let Some(notes) = v["notes"].as_array().filter(|n| !n.is_empty()) {
        for n in notes {
            md += &format!("- {}\n", n.as_str().unwrap_or(""));
        }
        md.push('\n');
    }
    let load = |i: usize| v["load_average"][i].as_f64().map(|l| format!("{l:.2}")).unwrap_or_else(|| "?".to_string());
    md += &format!(
        "Run: {} on {} at commit `{}` (load average {} before, {} after); `{}`.\n",
        minutes(v["seconds"].as_f64().unwrap_or(f64::NAN)),
        s(v, "date"),
        s(v, "commit"),
        load(0),
        load(1),
        s(v, "command")
    );
    md
}
