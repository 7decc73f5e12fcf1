//! Errors, not hangs: a rank that fails mid-run stops the whole job. Each
//! case is its own `mpirun -np 2` of this binary (MPI_Abort ends the job),
//! told by `TAMER_MPI_FAIL` how rank 1 fails at its 5th training step:
//! SIGKILL (as the OOM killer or a lost node), an error returned from the
//! step (the rank ends with [`ProcessGroup::abort_on_error`], as the
//! examples do), or a panic (the hook the trainer installs aborts). mpirun
//! must exit non-zero within 60 s (a bound on a hang, not a speed), and the
//! last checkpoint (step 4; one every 2 steps) must load and resume.

use crate::training::{config, vit_trainer, vit_trainer_failing, Fail, How, RANK_BATCH};
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tamer::dist::ProcessGroup;
use tamer::train::{TrainCheckpoint, TrainConfig, CHECKPOINT_FILE};
use tamer::DType;

/// The environment variable that makes this binary a failure case, and the
/// one naming the case's output directory (read by this test binary only).
pub const CASE_VAR: &str = "TAMER_MPI_FAIL";
pub const DIR_VAR: &str = "TAMER_MPI_FAIL_DIR";
const FAIL_AT_STEP: usize = 5;
const STEPS: u64 = 12;

fn case_config(dir: &Path) -> TrainConfig {
    TrainConfig {
        total_steps: STEPS,
        checkpoint_every: Some(2),
        out_dir: Some(dir.to_path_buf()),
        ..config()
    }
}

fn how(case: &str) -> Option<How> {
    match case {
        "kill" => Some(How::Kill),
        "error" => Some(How::Error),
        "panic" => Some(How::Panic),
        _ => None,
    }
}

/// One rank of a failure case: train until rank 1 fails. Returns the exit
/// code, which a working abort never lets it reach after the failure.
pub fn rank_main(case: &str) -> i32 {
    let (Some(how), Some(dir)) = (how(case), std::env::var_os(DIR_VAR)) else {
        eprintln!("{CASE_VAR}={case:?}: expected kill, error or panic, with {DIR_VAR} set");
        return 2;
    };
    let pg = match ProcessGroup::mpi() {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("cannot start MPI: {e}");
            return 2;
        }
    };
    let fail = (pg.rank() == 1).then(|| Fail {
        at: FAIL_AT_STEP,
        how,
        calls: AtomicUsize::new(0),
    });
    let result = vit_trainer_failing(pg.clone(), DType::F32, RANK_BATCH, case_config(Path::new(&dir)), fail).and_then(|mut t| t.fit());
    // What the examples do: an error on one rank ends the job.
    match pg.abort_on_error(result) {
        Ok(_) => {
            eprintln!("rank {}: trained to the end although rank 1 failed", pg.rank());
            3
        }
        Err(e) => {
            eprintln!("rank {}: {e}", pg.rank());
            4
        }
    }
}

/// Launch every case; the number that failed, with what went wrong printed.
/// Starts one case: `mpirun -np 2` of this binary with the variables given,
/// stderr to the file given, killed after the time given; whether it
/// succeeded and after how many seconds.
pub type Launch<'a> = &'a dyn Fn(&[(&str, &str)], &Path, Duration) -> Result<(bool, f64), String>;

pub fn run_cases(launch: Launch<'_>) -> usize {
    let mut failed = 0;
    for case in ["kill", "error", "panic"] {
        let dir = std::env::temp_dir().join(format!("tamer-mpi-fail-{case}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = dir.with_extension("log");
        let outcome = launch(&[(CASE_VAR, case), (DIR_VAR, dir.to_str().unwrap_or_default())], &log, Duration::from_secs(60));
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        let problem = match outcome {
            Err(e) => Some(e),
            Ok((true, _)) => Some("mpirun exited with success although rank 1 failed".to_string()),
            Ok((false, secs)) => {
                let said = match case {
                    "error" => stderr.contains("rank 1 of 2: error:") && stderr.contains("a failure planted"),
                    "panic" => stderr.contains("rank 1 of 2 panicked") && stderr.contains("a panic planted"),
                    _ => stderr.contains("killing this rank"),
                };
                match (said, checkpoint_resumes(&dir)) {
                    (false, _) => Some(format!("stderr does not say which rank failed and how:\n{stderr}")),
                    (true, Err(e)) => Some(format!("the last checkpoint: {e}")),
                    (true, Ok(step)) => {
                        println!(
                            "rank 1 fails by {case} at step {FAIL_AT_STEP}: mpirun exited non-zero after {secs:.1} s; the checkpoint of step {step} resumes"
                        );
                        None
                    }
                }
            }
        };
        if let Some(p) = problem {
            eprintln!("mpi: failure case {case}: FAILED: {p}");
            failed += 1;
        }
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&log);
    }
    failed
}

/// The checkpoint the failed job left is the one of step 4, written by 2
/// ranks, and one process resumes it (same global batch): its step.
fn checkpoint_resumes(dir: &Path) -> Result<u64, String> {
    let path = dir.join(CHECKPOINT_FILE);
    let ckpt = TrainCheckpoint::read(&path).map_err(|e| e.to_string())?;
    let expected = (FAIL_AT_STEP as u64 - 1) / 2 * 2;
    if (ckpt.step, ckpt.world_size) != (expected, 2) {
        return Err(format!("step {} of world size {}, expected step {expected} of 2", ckpt.step, ckpt.world_size));
    }
    let mut one = vit_trainer(ProcessGroup::single(), DType::F32, RANK_BATCH * 2, case_config(dir)).map_err(|e| e.to_string())?;
    one.resume(&path).map_err(|e| e.to_string())?;
    let summary = one.fit().map_err(|e| e.to_string())?;
    if summary.steps != STEPS || summary.losses.iter().any(|l| !l.is_finite()) {
        return Err(format!("the resumed run ended at step {} with losses {:?}", summary.steps, summary.losses));
    }
    Ok(ckpt.step)
}
