//! The lab (`examples/lab`): two experiments at `--scale quick` through the
//! runner itself (files written, verdict computed, report generated; never
//! which verdict), the refusal to replace a run, the flag errors, and the
//! statistics module's unit tests (compiled in with it).

// The example's modules include examples/cli/common.rs and pipe.rs, which
// tests/integration/train.rs includes too: each is compiled twice, harmlessly.
#[path = "../../examples/lab/main.rs"]
#[allow(dead_code, clippy::duplicate_mod)]
mod lab_main;

use clap::Parser;
use lab::Args;
use lab_main as lab;
use std::path::PathBuf;

/// A fresh, empty directory under the system's temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tamer-lab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn args(cli: &[&str]) -> Args {
    Args::try_parse_from(std::iter::once("lab").chain(cli.iter().copied())).unwrap()
}

/// One quick run: the three files exist, verdict.json parses and holds a
/// verdict and the rule; the report names the experiment and links its chart.
fn quick_run_writes_its_files(name: &str) {
    let dir = temp_dir(name);
    let (out, report) = (dir.join("out"), dir.join("report"));
    let a = args(&[name, "--scale", "quick", "--out", out.to_str().unwrap(), "--report", report.to_str().unwrap()]);
    let verdicts = lab::run(&a).unwrap();
    assert_eq!(verdicts.len(), 1);
    let run = out.join(name);
    for file in ["runs.jsonl", &format!("{name}.svg"), "verdict.json"] {
        let path = run.join(file);
        assert!(
            std::fs::metadata(&path).map(|m| m.len() > 0).unwrap_or(false),
            "{} missing or empty",
            path.display()
        );
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("verdict.json")).unwrap()).unwrap();
    assert_eq!(v["name"], name);
    let verdict = v["verdict"].as_str().unwrap();
    assert!(["reproduced", "not reproduced", "inconclusive"].contains(&verdict), "{verdict}");
    assert!(!v["reason"].as_str().unwrap().is_empty() && !v["rule"].as_str().unwrap().is_empty());
    assert_eq!(v["scale"], "quick");
    // Every line of runs.jsonl is one JSON record.
    let runs = std::fs::read_to_string(run.join("runs.jsonl")).unwrap();
    assert!(runs.lines().count() > 0);
    for line in runs.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(r["variant"].is_string() && r["metric"].is_string() && r["seed"].is_u64());
    }
    let readme = std::fs::read_to_string(report.join("README.md")).unwrap();
    assert!(readme.contains(&format!("(`{name}`)")) && readme.contains(&format!("]({name}.svg)")));
    assert!(report.join(format!("{name}.svg")).exists() && report.join(format!("{name}.json")).exists());
    // A second run into the same --out is refused without --force, and says so.
    let err = lab::run(&a).unwrap_err().to_string();
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");
    let mut forced = a;
    forced.force = true;
    forced.report = None;
    assert_eq!(lab::run(&forced).unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rank_collapse_quick_run_writes_its_files() {
    quick_run_writes_its_files("rank-collapse");
}

#[test]
fn pooling_quick_run_writes_its_files() {
    quick_run_writes_its_files("pooling");
}

#[test]
fn unknown_experiment_is_a_clap_error_listing_the_names() {
    let err = Args::try_parse_from(["lab", "no-such-thing"]).unwrap_err().to_string();
    for name in [
        "rank-collapse",
        "perturbation",
        "optimizers",
        "warmup",
        "clipping",
        "start-small",
        "batch-size",
        "data-hunger",
        "transfer",
        "regularization",
        "patch-size",
        "position-encoding",
        "pooling",
        "all",
    ] {
        assert!(err.contains(name), "{name} missing from: {err}");
    }
    let err = Args::try_parse_from(["lab", "pooling", "--scale", "huge"]).unwrap_err().to_string();
    assert!(err.contains("quick") && err.contains("full"), "{err}");
    assert!(Args::try_parse_from(["lab", "pooling", "--seeds", "0"]).is_err());
}

#[test]
fn device_cuda_without_the_feature_is_refused_before_running() {
    let a = args(&["pooling", "--device", "cuda"]);
    if cfg!(feature = "cuda") {
        assert_eq!(lab::validate(&a), Ok(()));
    } else {
        let err = lab::validate(&a).unwrap_err();
        assert!(err.contains("without the cuda feature") && err.contains("--device cpu"), "{err}");
    }
}

#[test]
fn quick_scale_writes_no_report_unless_asked() {
    assert_eq!(args(&["pooling", "--scale", "quick"]).report_dir(), None);
    assert!(args(&["pooling"]).report_dir().unwrap().ends_with("docs/lab"));
    assert_eq!(args(&["pooling", "--scale", "quick", "--report", "r"]).report_dir(), Some(PathBuf::from("r")));
}
