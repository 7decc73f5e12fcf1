//! The examples as processes: what a user sees on the command line.

use super::harness::{scratch, snapshot};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The path of example `name`, built (or brought up to date) first with the
/// profile this test binary was built with, so that `cargo test --test
/// integration` never runs a stale example.
fn example(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get_or_insert_with(HashMap::new).get(name) {
        return p.clone();
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--quiet",
        "--example",
        name,
        "--manifest-path",
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
    ]);
    cmd.args(if profile_dir.ends_with("release") {
        ["--profile", "release"]
    } else {
        ["--profile", "test"]
    });
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "cargo build --example {name}: {}", String::from_utf8_lossy(&out.stderr));
    let path = profile_dir.join("examples").join(name);
    built.get_or_insert_with(HashMap::new).insert(name.to_string(), path.clone());
    path
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The last line of stdout as JSON.
    fn final_line(&self) -> Value {
        let line = self.stdout.lines().last().unwrap_or("");
        serde_json::from_str(line).unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {line}\nstderr: {}", self.stderr))
    }
    fn assert_ok(&self) -> &Run {
        assert_eq!(self.code, Some(0), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
    /// A run that failed with an error message (not a panic) containing every needle.
    fn assert_error(&self, needles: &[&str]) {
        assert_eq!(self.code, Some(1), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        for n in needles {
            assert!(self.stderr.contains(n), "{n:?} not in:\n{}", self.stderr);
        }
    }
}

fn run(name: &str, args: &[&str]) -> Run {
    let out = Command::new(example(name)).args(args).output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A short digits run: one epoch of 5 steps (batch 256), one thread.
fn train_vit(extra: &[&str]) -> Run {
    let mut args = vec!["--epochs", "1", "--batch-size", "256", "--threads", "1"];
    args.extend_from_slice(extra);
    run("train_vit", &args)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_second_run_into_the_same_out_is_refused_and_the_first_is_kept() {
    let dir = scratch("ex-refuse");
    let out = dir.join("run");
    train_vit(&["--out", s(&out)]).assert_ok();
    let first = snapshot(&out);
    assert_eq!(first.len(), 4, "{:?}", first.iter().map(|(n, _)| n).collect::<Vec<_>>());
    assert!(
        first.iter().any(|(n, svg)| n == "metrics.svg" && svg.starts_with(b"<svg")),
        "the run plotted its metrics"
    );
    train_vit(&["--out", s(&out)]).assert_error(&["already holds a training run", "--resume", "--force"]);
    assert!(snapshot(&out) == first, "the first run's files changed");
    // --force replaces it.
    let forced = train_vit(&["--out", s(&out), "--force", "--seed", "3"]);
    assert!(forced.assert_ok().stdout.contains("--force: replacing the run"), "{}", forced.stdout);
    assert!(snapshot(&out) != first);
    assert!(run("train_vit", &["--resume", "--force", "--out", s(&out)])
        .stderr
        .contains("cannot be used with"));

    // train_gpt (whose --out has a default) shares the rule.
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!\n".repeat(30),
    )
    .unwrap();
    let gpt_out = dir.join("gpt");
    let gpt = |extra: &[&str]| {
        let mut args = vec!["--text", s(&text), "--out", s(&gpt_out), "--n-layer", "1", "--n-head", "2", "--n-embd", "16"];
        args.extend_from_slice(&[
            "--block-size",
            "16",
            "--batch-size",
            "4",
            "--steps",
            "4",
            "--warmup",
            "0",
            "--eval-interval",
            "2",
        ]);
        args.extend_from_slice(&["--eval-iters", "1", "--sample-tokens", "0", "--threads", "1"]);
        args.extend_from_slice(extra);
        run("train_gpt", &args)
    };
    gpt(&["--stop-at", "2"]).assert_ok();
    let kept = snapshot(&gpt_out);
    gpt(&[]).assert_error(&["already holds a training run", "--resume", "--force"]);
    assert!(snapshot(&gpt_out) == kept);
    let resumed = gpt(&["--resume"]);
    assert_eq!(resumed.assert_ok().final_line()["steps"], 4);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_final_line_reports_totals_and_this_process() {
    let dir = scratch("ex-final");
    // --stop-at 0 trains nothing: no training loss or speed to report, but a real accuracy.
    let zero = train_vit(&["--out", s(&dir.join("zero")), "--stop-at", "0"]);
    let f = zero.assert_ok().final_line();
    assert_eq!((f["steps"].as_u64(), f["steps_this_process"].as_u64()), (Some(0), Some(0)), "{f}");
    assert!(f["train_loss"].is_null() && f["samples_per_s"].is_null(), "{f}");
    assert!(f["test_acc"].as_f64().is_some_and(|a| a > 0.0), "{f}");
    assert!(f["seconds"].as_f64().is_some() && f["seconds_this_process"].as_f64().is_some(), "{f}");

    // A finished run resumed: the run's totals, and this process's share (nothing trained).
    let out = dir.join("full");
    let first = train_vit(&["--out", s(&out)]).assert_ok().final_line();
    assert_eq!((first["steps"].as_u64(), first["samples"].as_u64()), (Some(5), Some(5 * 256)), "{first}");
    let train_loss = first["train_loss"].as_f64().expect("a training loss");
    let again = train_vit(&["--out", s(&out), "--resume"]).assert_ok().final_line();
    assert_eq!((again["steps"].as_u64(), again["steps_this_process"].as_u64()), (Some(5), Some(0)), "{again}");
    assert_eq!(again["train_loss"].as_f64(), Some(train_loss), "{again}");
    assert_eq!(again["samples"].as_u64(), Some(5 * 256), "{again}");
    assert!(again["samples_per_s"].is_null(), "{again}");
    let (total, before) = (again["seconds"].as_f64().unwrap(), first["seconds"].as_f64().unwrap());
    assert_eq!(total, before, "a resume that trains nothing adds no training time");
    assert!(again["seconds_this_process"].as_f64().is_some(), "{again}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The line that says what was saved.
fn saved_line(run: &Run) -> &str {
    run.stdout.lines().find(|l| l.starts_with("saved ")).unwrap_or("")
}

#[test]
fn a_run_stopped_at_step_0_can_be_resumed_and_a_missing_checkpoint_is_named() {
    let dir = scratch("ex-stop-0");
    let out = dir.join("run");
    let zero = train_vit(&["--out", s(&out), "--stop-at", "0"]);
    let (model, ckpt) = (out.join("model.safetensors"), out.join("checkpoint.safetensors"));
    assert_eq!(saved_line(zero.assert_ok()), format!("saved {} and {}", model.display(), ckpt.display()));
    assert!(model.exists() && ckpt.exists());
    assert_eq!(train_vit(&["--out", s(&out), "--resume"]).assert_ok().final_line()["steps"], 5);
    // A finished run resumed trains nothing and writes no checkpoint: it does not claim one.
    let again = train_vit(&["--out", s(&out), "--resume"]);
    assert_eq!(saved_line(again.assert_ok()), format!("saved {}", model.display()));
    // Other loss or augmentation settings are named.
    train_vit(&["--out", s(&out), "--resume", "--label-smoothing", "0"]).assert_error(&["recipe.label_smoothing: 0.1 in the checkpoint, 0.0 in this run"]);

    // --resume where there is no checkpoint: said so, with the way out.
    let empty = dir.join("empty");
    train_vit(&["--out", s(&empty), "--resume"]).assert_error(&["holds no checkpoint.safetensors", "without --resume"]);
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("metrics.jsonl"), "{\"event\":\"start\",\"step\":0}\n").unwrap();
    train_vit(&["--out", s(&empty), "--resume"]).assert_error(&["holds no checkpoint.safetensors", "--force"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn two_runs_of_one_seed_write_identical_files() {
    let dir = scratch("ex-same-seed");
    let (a, b) = (dir.join("a"), dir.join("b"));
    train_vit(&["--out", s(&a)]).assert_ok();
    train_vit(&["--out", s(&b)]).assert_ok();
    for file in ["checkpoint.safetensors", "model.safetensors"] {
        let (x, y) = (std::fs::read(a.join(file)).unwrap(), std::fs::read(b.join(file)).unwrap());
        assert!(x == y, "{file} differs between two runs of seed 0");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_closed_pipe_ends_the_example_quietly() {
    // `train_vit | head -1`: read one line, close the pipe, let the example write on.
    let mut child = Command::new(example("train_vit"))
        .args(["--epochs", "3", "--batch-size", "128", "--eval-every", "1", "--threads", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("digits:"), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn an_absurd_model_is_refused_with_its_memory_estimate() {
    let dir = scratch("ex-memory");
    let text = dir.join("text.txt");
    std::fs::write(&text, "abcdefgh ".repeat(200)).unwrap();
    let out = dir.join("run");
    let r = run("train_gpt", &["--text", s(&text), "--n-embd", "100000", "--out", s(&out)]);
    // Against the available memory on Linux, a documented limit elsewhere: TiB exceed both.
    r.assert_error(&["width 100000 (--n-embd)", "needs an estimated", "TiB", "parameters"]);
    assert!(!out.exists(), "the refused run created {}", out.display());
    // --max-memory sets the limit on any system.
    let r = train_vit(&["--max-memory", "0.001", "--out", s(&out)]);
    r.assert_error(&["needs an estimated", "but --max-memory allows 1.0 MiB"]);
    assert!(!out.exists(), "the refused run created {}", out.display());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_patch_that_does_not_divide_the_image_is_refused() {
    let r = train_vit(&["--patch", "3"]);
    r.assert_error(&["--patch 3 does not divide the 8×8 images", "2 row(s) and 2 column(s)"]);
    train_vit(&["--patch", "4"]).assert_ok();
}

#[test]
fn an_empty_test_set_is_refused_before_training() {
    use tamer::data::mnist::encode_idx;
    let dir = scratch("ex-empty-test");
    let data = dir.join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    let n = 64u32;
    let pixels: Vec<u8> = (0..n * 28 * 28).map(|i| (i * 7 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    std::fs::write(data.join("train-images-idx3-ubyte"), encode_idx(&[n, 28, 28], &pixels)).unwrap();
    std::fs::write(data.join("train-labels-idx1-ubyte"), encode_idx(&[n], &labels)).unwrap();
    std::fs::write(data.join("t10k-images-idx3-ubyte"), encode_idx(&[0, 28, 28], &[])).unwrap();
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), encode_idx(&[0], &[])).unwrap();
    let out = dir.join("run");
    let r = run(
        "train_vit",
        &[
            "--dataset",
            "mnist",
            "--data-dir",
            s(&data),
            "--batch-size",
            "32",
            "--out",
            s(&out),
            "--threads",
            "1",
        ],
    );
    r.assert_error(&["the test set (mnist test) has no images"]);
    assert!(!out.exists(), "a refused run wrote {}", out.display());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn classify_vit_uses_what_train_vit_stored() {
    let dir = scratch("ex-classify");
    let out = dir.join("run");
    train_vit(&["--out", s(&out)]).assert_ok();
    let model = out.join("model.safetensors");
    let r = run("classify_vit", &["--checkpoint", s(&model), "--image", "digits:3", "--top-k", "2"]);
    let text = &r.assert_ok().stdout;
    // vit-digits-s: width 64 in 4 heads, which the shapes alone would have guessed as 1.
    for needle in [
        "width 64, depth 2, 4 heads",
        "model_config metadata",
        "normalised with the checkpoint's input_normalization",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    // A head count that contradicts the stored one is an error, not obeyed.
    run("classify_vit", &["--checkpoint", s(&model), "--heads", "1"]).assert_error(&["num_heads 4"]);
    // Zero is not a count: refused, not rounded up.
    for flag in ["--top-k", "--heads"] {
        let r = run("classify_vit", &["--checkpoint", s(&model), flag, "0"]);
        assert_eq!(r.code, Some(2), "{flag} 0: {}", r.stderr);
        assert!(r.stderr.contains(&format!("{flag} \"0\": expected a positive integer")), "{}", r.stderr);
    }
    // A file whose head count is nowhere: the error names the flag that gives it.
    let timm = tamer::checkpoint::fixture_path("vit_tiny.safetensors");
    run("classify_vit", &["--checkpoint", s(&timm)]).assert_error(&["give num_heads (--heads N)"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sample_gpt_refuses_a_rank_1_token_embedding() {
    let dir = scratch("ex-sample");
    let mut ckpt = tamer::checkpoint::fixture("gpt_tiny.safetensors").unwrap();
    ckpt.remove("transformer.wte.weight").unwrap();
    ckpt.tensors
        .push(("transformer.wte.weight".into(), tamer::Tensor::zeros([11], tamer::DType::F32).unwrap()));
    let path = dir.join("crafted.safetensors");
    tamer::checkpoint::save(&path, &ckpt.tensors).unwrap();
    run("sample_gpt", &["--checkpoint", s(&path), "--n-head", "2"]).assert_error(&["transformer.wte.weight must be [vocab_size, n_embd], got [11]"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn gradcheck_explains_its_deliberate_failure() {
    let r = run("gradcheck", &[]);
    let text = &r.assert_ok().stdout;
    for needle in [
        "== my_function",
        "PASSED",
        "The next check is meant to fail",
        "deliberately buggy softplus (expected to FAIL)",
        "FAILED (after shrinking)",
        "As intended: my_function's gradients are right, and the deliberate bug was caught.",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}
