//! What the profiler recorded: rows per op kind, the table it prints and
//! the JSON it writes.

use crate::{Error, Result};
use serde_json::json;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One op kind's calls in one phase and what they did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseProfile {
    /// Outermost scopes of this op (nested ones add no call).
    pub calls: u64,
    /// Their wall time, in nanoseconds.
    pub nanos: u64,
    /// Bytes moved by them and the scopes nested in them.
    pub bytes: u64,
    /// FLOPs done by them and the scopes nested in them.
    pub flops: u64,
}

impl PhaseProfile {
    pub fn millis(&self) -> f64 {
        self.nanos as f64 / 1e6
    }
}

/// One row of the report: an op kind, forward and backward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpProfile {
    pub op: String,
    pub forward: PhaseProfile,
    pub backward: PhaseProfile,
}

impl OpProfile {
    pub fn nanos(&self) -> u64 {
        self.forward.nanos.saturating_add(self.backward.nanos)
    }
    pub fn bytes(&self) -> u64 {
        self.forward.bytes.saturating_add(self.backward.bytes)
    }
    pub fn flops(&self) -> u64 {
        self.forward.flops.saturating_add(self.backward.flops)
    }
    /// Bytes moved per second of this op's time, in GB/s (10⁹ bytes); `None` if it took no time.
    pub fn gb_per_s(&self) -> Option<f64> {
        per_nanosecond(self.bytes(), self.nanos())
    }
    /// FLOPs per second of this op's time, in GFLOP/s; `None` if it took no time.
    pub fn gflop_per_s(&self) -> Option<f64> {
        per_nanosecond(self.flops(), self.nanos())
    }
}

/// `amount / nanos` (per nanosecond = giga per second).
fn per_nanosecond(amount: u64, nanos: u64) -> Option<f64> {
    (nanos > 0).then(|| amount as f64 / nanos as f64)
}

/// Everything recorded since the last `reset`: one row per op kind, the
/// longest first, and the wall time profiling was on.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileReport {
    pub ops: Vec<OpProfile>,
    /// Time with profiling on since the last reset.
    pub wall: Duration,
}

impl ProfileReport {
    /// Rows sorted by total time, longest first (ties by name, so the order is stable).
    pub fn new(mut ops: Vec<OpProfile>, wall: Duration) -> ProfileReport {
        ops.sort_by(|a, b| b.nanos().cmp(&a.nanos()).then_with(|| a.op.cmp(&b.op)));
        ProfileReport { ops, wall }
    }

    /// The row of op kind `op`, if it ran.
    pub fn op(&self, op: &str) -> Option<&OpProfile> {
        self.ops.iter().find(|r| r.op == op)
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The time of every row together, in nanoseconds.
    pub fn recorded_nanos(&self) -> u64 {
        self.ops.iter().map(OpProfile::nanos).fold(0, u64::saturating_add)
    }

    /// `row`'s share of the recorded time, in percent.
    fn percent(&self, row: &OpProfile) -> f64 {
        match self.recorded_nanos() {
            0 => 0.0,
            total => 100.0 * row.nanos() as f64 / total as f64,
        }
    }

    /// The report as JSON: `wall_ms`, `recorded_ms` and `ops`, one object per
    /// row (in the table's order) with `op`, `fwd_calls`, `bwd_calls`,
    /// `fwd_ms`, `bwd_ms`, `total_ms`, `percent`, `fwd_bytes`, `bwd_bytes`,
    /// `fwd_flops`, `bwd_flops`, `gb_per_s` and `gflop_per_s` (null when the
    /// op took no time).
    pub fn to_json(&self) -> serde_json::Value {
        let ops: Vec<serde_json::Value> = self
            .ops
            .iter()
            .map(|r| {
                json!({
                    "op": r.op,
                    "fwd_calls": r.forward.calls,
                    "bwd_calls": r.backward.calls,
                    "fwd_ms": r.forward.millis(),
                    "bwd_ms": r.backward.millis(),
                    "total_ms": r.nanos() as f64 / 1e6,
                    "percent": self.percent(r),
                    "fwd_bytes": r.forward.bytes,
                    "bwd_bytes": r.backward.bytes,
                    "fwd_flops": r.forward.flops,
                    "bwd_flops": r.backward.flops,
                    "gb_per_s": r.gb_per_s(),
                    "gflop_per_s": r.gflop_per_s(),
                })
            })
            .collect();
        json!({
            "wall_ms": self.wall.as_nanos() as f64 / 1e6,
            "recorded_ms": self.recorded_nanos() as f64 / 1e6,
            "ops": ops,
        })
    }

    /// Write [`ProfileReport::to_json`] to `path`, or, if a file is there
    /// already, to the first free `stem-2.ext`, `stem-3.ext`, ... beside it:
    /// an existing file is never replaced. Returns the path written.
    pub fn write_json(&self, path: &Path) -> Result<PathBuf> {
        const OP: &str = "profile";
        let text = serde_json::to_string_pretty(&self.to_json()).map_err(|e| Error::value(OP, format!("cannot encode the profile: {e}")))?;
        for candidate in numbered(path).take(10_000) {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&candidate) {
                Ok(mut file) => {
                    use std::io::Write;
                    file.write_all(text.as_bytes())
                        .and_then(|()| file.write_all(b"\n"))
                        .map_err(|e| Error::io(OP, format!("cannot write {}: {e}", candidate.display())))?;
                    return Ok(candidate);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(OP, format!("cannot create {}: {e}", candidate.display()))),
            }
        }
        Err(Error::io(
            OP,
            format!("{} and 9,999 numbered versions of it exist already; nothing was written", path.display()),
        ))
    }
}

/// `path`, then `stem-2.ext`, `stem-3.ext`, ... in the same directory.
fn numbered(path: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    std::iter::once(path.to_path_buf()).chain((2u32..).map(move |n| path.with_file_name(format!("{stem}-{n}{ext}"))))
}

/// The table: one line per op, the longest first, then the totals.
///
/// ```text
/// op          fwd calls  bwd calls   fwd ms   bwd ms  % time    GB/s  GFLOP/s
/// matmul             12         12    41.20    80.11    61.3    10.2    195.0
/// ```
impl fmt::Display for ProfileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.ops.iter().map(|r| r.op.len()).chain([5]).max().unwrap_or(5);
        let rate = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
        writeln!(
            f,
            "{:<width$} {:>10} {:>10} {:>11} {:>11} {:>7} {:>8} {:>9}",
            "op", "fwd calls", "bwd calls", "fwd ms", "bwd ms", "% time", "GB/s", "GFLOP/s"
        )?;
        for r in &self.ops {
            writeln!(
                f,
                "{:<width$} {:>10} {:>10} {:>11.2} {:>11.2} {:>7.1} {:>8} {:>9}",
                r.op,
                r.forward.calls,
                r.backward.calls,
                r.forward.millis(),
                r.backward.millis(),
                self.percent(r),
                rate(r.gb_per_s()),
                rate(r.gflop_per_s()),
            )?;
        }
        let sum = |pick: fn(&OpProfile) -> PhaseProfile| {
            self.ops.iter().map(pick).fold(PhaseProfile::default(), |a, p| PhaseProfile {
                calls: a.calls + p.calls,
                nanos: a.nanos.saturating_add(p.nanos),
                bytes: a.bytes.saturating_add(p.bytes),
                flops: a.flops.saturating_add(p.flops),
            })
        };
        let total = OpProfile {
            op: "total".to_string(),
            forward: sum(|r| r.forward),
            backward: sum(|r| r.backward),
        };
        writeln!(
            f,
            "{:<width$} {:>10} {:>10} {:>11.2} {:>11.2} {:>7.1} {:>8} {:>9}",
            total.op,
            total.forward.calls,
            total.backward.calls,
            total.forward.millis(),
            total.backward.millis(),
            if self.ops.is_empty() { 0.0 } else { 100.0 },
            rate(total.gb_per_s()),
            rate(total.gflop_per_s()),
        )?;
        let wall = self.wall.as_nanos() as f64 / 1e6;
        let recorded = self.recorded_nanos() as f64 / 1e6;
        write!(f, "recorded {recorded:.1} ms in ops of {wall:.1} ms with profiling on")?;
        if wall > 0.0 {
            write!(
                f,
                " ({:.1}%; the rest is outside any op: data, autograd's bookkeeping, logging)",
                100.0 * recorded / wall
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(op: &str, fwd: (u64, u64), bwd: (u64, u64), bytes: u64, flops: u64) -> OpProfile {
        OpProfile {
            op: op.to_string(),
            forward: PhaseProfile {
                calls: fwd.0,
                nanos: fwd.1,
                bytes,
                flops,
            },
            backward: PhaseProfile {
                calls: bwd.0,
                nanos: bwd.1,
                bytes: 0,
                flops: 0,
            },
        }
    }

    fn sample() -> ProfileReport {
        ProfileReport::new(
            vec![
                row("gelu", (1, 1_000_000), (1, 2_000_000), 3_000_000, 0),
                row("matmul", (2, 4_000_000), (2, 3_000_000), 7_000_000, 14_000_000_000),
                row("reshape", (3, 0), (0, 0), 0, 0),
            ],
            Duration::from_millis(20),
        )
    }

    #[test]
    fn rows_are_sorted_by_total_time_with_rates_per_nanosecond() {
        let r = sample();
        let order: Vec<&str> = r.ops.iter().map(|o| o.op.as_str()).collect();
        assert_eq!(order, ["matmul", "gelu", "reshape"]);
        let m = r.op("matmul").unwrap();
        assert_eq!(m.gflop_per_s(), Some(2000.0));
        assert_eq!(m.gb_per_s(), Some(1.0));
        assert_eq!(r.op("reshape").unwrap().gb_per_s(), None);
        assert_eq!(r.recorded_nanos(), 10_000_000);
    }

    #[test]
    fn the_table_lines_up_and_totals() {
        let text = sample().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines[0].starts_with("op ") && lines[0].contains("GFLOP/s"), "{text}");
        // Every row of the table has the header's width.
        for l in &lines[1..5] {
            assert_eq!(l.len(), lines[0].len(), "{text}");
        }
        assert!(
            lines[1].starts_with("matmul ") && lines[1].contains("70.0") && lines[1].contains("2000.0"),
            "{text}"
        );
        assert!(
            lines[4].starts_with("total ") && lines[4].contains(" 6 ") && lines[4].contains("100.0"),
            "{text}"
        );
        assert!(lines[5].contains("recorded 10.0 ms in ops of 20.0 ms") && lines[5].contains("50.0%"), "{text}");
    }

    #[test]
    fn json_has_every_field() {
        let v = sample().to_json();
        assert_eq!(v["wall_ms"], 20.0);
        assert_eq!(v["recorded_ms"], 10.0);
        let ops = v["ops"].as_array().unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0]["op"], "matmul");
        assert_eq!(ops[0]["fwd_calls"], 2);
        assert_eq!(ops[0]["bwd_ms"], 3.0);
        assert_eq!(ops[0]["percent"], 70.0);
        assert_eq!(ops[0]["fwd_flops"], 14_000_000_000u64);
        assert_eq!(ops[2]["gb_per_s"], serde_json::Value::Null);
    }

    #[test]
    fn writing_never_replaces_a_file() {
        let dir = std::env::temp_dir().join(format!("tamer-profile-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("profile.json");
        std::fs::write(&path, "mine").unwrap();
        let written = sample().write_json(&path).unwrap();
        assert_eq!(written, dir.join("profile-2.json"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
        assert_eq!(sample().write_json(&path).unwrap(), dir.join("profile-3.json"));
        let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&written).unwrap()).unwrap();
        assert_eq!(back, sample().to_json());
        let missing = dir.join("no such dir").join("profile.json");
        let err = sample().write_json(&missing).unwrap_err();
        assert!(err.to_string().contains("no such dir"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
