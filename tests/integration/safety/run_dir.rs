//! The run directory: a fresh run never replaces a run it was not told to
//! replace, a crashed save's temp files are removed at the next start, the
//! metrics file only ever holds whole lines, and the totals of a run survive
//! a resume. Two runs of one seed write identical checkpoint bytes.

use super::harness::{scratch, snapshot, vit_trainer};
use tamer::train::{read_jsonl, TrainCheckpoint, CHECKPOINT_FILE, METRICS_FILE};

#[test]
fn a_fresh_run_refuses_a_directory_that_holds_a_run() {
    let dir = scratch("refuse");
    vit_trainer(4, Some(dir.clone())).fit().unwrap();
    let before = snapshot(&dir);
    assert!(before.iter().any(|(n, _)| n == CHECKPOINT_FILE) && before.iter().any(|(n, _)| n == METRICS_FILE));
    let mut second = vit_trainer(4, Some(dir.clone()));
    let msg = second.fit().unwrap_err().to_string();
    assert!(
        msg.contains("already holds a training run") && msg.contains("resume") && msg.contains("overwrite"),
        "{msg}"
    );
    assert!(snapshot(&dir) == before, "the first run's files changed");
    // Told to, it starts over.
    let mut third = vit_trainer(2, Some(dir.clone()));
    third.config.overwrite = true;
    third.fit().unwrap();
    let records = read_jsonl(dir.join(METRICS_FILE)).unwrap();
    assert_eq!(records.iter().filter(|r| r["event"] == "start").count(), 1);
    assert_eq!(tamer::train::TrainCheckpoint::read(&dir.join(CHECKPOINT_FILE)).unwrap().step, 2);
    let _ = std::fs::remove_dir_all(dir);
}

/// The PID of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn temp_files_of_a_crashed_save_are_removed_at_the_next_start() {
    let dir = scratch("tmp-files");
    let pid = dead_pid();
    let stale = [
        format!("checkpoint.safetensors.tamer-tmp-{pid}-0"),
        format!("model.safetensors.tamer-tmp-{pid}-7"),
    ];
    for name in &stale {
        std::fs::write(dir.join(name), b"half a checkpoint").unwrap();
    }
    // A file of a process that still runs (this one) may be mid-write: kept.
    let live = format!("checkpoint.safetensors.tamer-tmp-{}-99", std::process::id());
    // The user's own files are kept, even those that look like NAME.tmp-NUMBER-NUMBER
    // with a first number that is no running process.
    let users = [
        "notes.tmp-abc".to_string(),
        "x.tmp-2024-06".to_string(),
        format!("results.tmp-{pid}-06"),
        format!("checkpoint.safetensors.tmp-{pid}-0"),
        format!(".tamer-tmp-{pid}-0"),
    ];
    for name in std::iter::once(&live).chain(&users) {
        std::fs::write(dir.join(name), b"kept").unwrap();
    }
    let mut t = vit_trainer(2, Some(dir.clone()));
    t.fit().unwrap();
    for name in &stale {
        assert!(!dir.join(name).exists(), "{name} was left behind");
    }
    for name in std::iter::once(&live).chain(&users) {
        assert_eq!(std::fs::read(dir.join(name)).ok().as_deref(), Some(&b"kept"[..]), "{name} was touched");
    }
    let records = read_jsonl(dir.join(METRICS_FILE)).unwrap();
    let cleanup = records.iter().find(|r| r["event"] == "cleanup").expect("a cleanup record");
    assert_eq!(cleanup["removed"].as_array().unwrap().len(), 2, "{cleanup}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_cut_last_metrics_line_is_repaired_on_resume() {
    let dir = scratch("cut-line");
    let mut first = vit_trainer(6, Some(dir.clone()));
    first.config.stop_at = Some(4);
    first.fit().unwrap();
    // A crash (or a full disk) in the middle of a record.
    let metrics = dir.join(METRICS_FILE);
    let mut bytes = std::fs::read(&metrics).unwrap();
    let cut = b"{\"event\":\"train\",\"step\":5,\"lo";
    bytes.extend_from_slice(cut);
    std::fs::write(&metrics, &bytes).unwrap();
    assert!(read_jsonl(&metrics).is_err(), "the file should be broken now");

    let mut second = vit_trainer(6, Some(dir.clone()));
    second.resume(dir.join(CHECKPOINT_FILE)).unwrap();
    second.fit().unwrap();
    let records = read_jsonl(&metrics).expect("the resumed run left a readable file");
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(!text.contains("\"lo{"), "the cut line was glued to the next record");
    let repair = records.iter().find(|r| r["event"] == "repair").expect("a repair record");
    assert_eq!(repair["dropped_bytes"].as_u64(), Some(cut.len() as u64));
    assert_eq!(records.last().unwrap()["event"], "end");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_summary_reports_totals_after_stop_at_0_and_after_a_resume() {
    // A whole run, for reference.
    let dir = scratch("totals-full");
    let full = vit_trainer(4, Some(dir.clone())).fit().unwrap();
    assert_eq!((full.steps, full.steps_run, full.total_samples), (4, 4, 4 * 64));
    assert!(full.train_loss.is_some() && full.samples_per_s.is_some());
    let trained = full.total_seconds.unwrap();
    assert!(trained > 0.0 && trained <= full.seconds, "training {trained} s of {} s", full.seconds);

    // --stop-at 0: nothing trained, and the summary says so rather than reporting zeros.
    let zero_dir = scratch("totals");
    let mut t = vit_trainer(4, Some(zero_dir.clone()));
    t.config.stop_at = Some(0);
    let s = t.fit().unwrap();
    assert_eq!((s.steps, s.steps_run, s.total_samples), (0, 0, 0));
    assert_eq!((s.train_loss, s.samples_per_s), (None, None));
    assert_eq!(s.total_seconds, Some(0.0), "no step ran: no training time");
    assert!(s.metric("test_acc").is_some_and(|a| a > 0.0));
    // It leaves a checkpoint at step 0, so that the run can be resumed ...
    let ckpt = zero_dir.join(CHECKPOINT_FILE);
    assert_eq!(s.checkpoint.as_deref(), Some(ckpt.as_path()));
    assert_eq!(TrainCheckpoint::read(&ckpt).unwrap().step, 0);
    let mut resumed = vit_trainer(4, Some(zero_dir.clone()));
    resumed.resume(&ckpt).unwrap();
    let rest = resumed.fit().unwrap();
    assert_eq!((rest.steps, rest.steps_run), (4, 4));
    assert_eq!(rest.losses, full.losses, "resumed from step 0, the run repeats the straight one");
    // ... and the trainer that stopped fits on into its own files, not refusing them as another run's.
    let again_dir = scratch("totals-fit-twice");
    let mut twice = vit_trainer(4, Some(again_dir.clone()));
    twice.config.stop_at = Some(0);
    twice.fit().unwrap();
    twice.config.stop_at = None;
    let second_fit = twice.fit().unwrap();
    assert_eq!(second_fit.losses, full.losses);
    let records = read_jsonl(again_dir.join(METRICS_FILE)).unwrap();
    assert_eq!(records.iter().filter(|r| r["event"] == "end").count(), 2, "both fits in one file");

    // A resume of the finished run: the totals are the run's, and no training time is added.
    let mut again = vit_trainer(4, Some(dir.clone()));
    again.resume(dir.join(CHECKPOINT_FILE)).unwrap();
    let s = again.fit().unwrap();
    assert_eq!((s.steps, s.steps_run, s.total_samples), (4, 0, 4 * 64));
    assert_eq!(s.train_loss, full.train_loss, "the finished run's training loss");
    assert_eq!(s.samples_per_s, None, "this process trained nothing");
    // Read back from metrics.jsonl: equal up to the JSON float parse's last bit.
    let (after, before) = (s.total_seconds.unwrap(), full.total_seconds.unwrap());
    assert!(
        (after - before).abs() <= 1e-12 * before,
        "evaluating is not training: {after} s after {before} s"
    );
    assert_eq!(s.checkpoint, None, "nothing new to save");

    // Stopped half-way and resumed: the totals add up.
    let dir2 = scratch("totals-split");
    let mut a = vit_trainer(4, Some(dir2.clone()));
    a.config.stop_at = Some(2);
    let first = a.fit().unwrap();
    let mut b = vit_trainer(4, Some(dir2.clone()));
    b.resume(dir2.join(CHECKPOINT_FILE)).unwrap();
    let second = b.fit().unwrap();
    assert_eq!((second.steps, second.steps_run, second.total_samples), (4, 2, 4 * 64));
    assert_eq!(second.train_loss, full.train_loss, "the resumed run repeats the straight one");
    let (before, total) = (first.total_seconds.unwrap(), second.total_seconds.unwrap());
    assert!(
        before > 0.0 && total > before && total <= first.seconds + second.seconds,
        "{before} s, then {total} s"
    );
    for d in [dir, dir2, zero_dir, again_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn two_runs_of_one_seed_write_identical_checkpoints() {
    let (a, b) = (scratch("same-seed-a"), scratch("same-seed-b"));
    for dir in [&a, &b] {
        let mut t = vit_trainer(4, Some(dir.clone()));
        t.config.metadata.insert("model".into(), "tiny".into());
        t.config.metadata.insert("dataset".into(), "digits".into());
        t.fit().unwrap();
    }
    let (x, y) = (std::fs::read(a.join(CHECKPOINT_FILE)).unwrap(), std::fs::read(b.join(CHECKPOINT_FILE)).unwrap());
    assert!(x == y, "same seed, different checkpoint bytes");
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}
