//! Starting this binary under `mpirun`, or saying why not.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a launcher started this process (then it is one rank).
pub fn under_launcher() -> bool {
    tamer::dist::LAUNCHER_SIZE_VARS.iter().any(|v| std::env::var_os(v).is_some())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// `mpirun -np ranks` of this binary, or the exit code to return without it.
fn mpirun(ranks: usize) -> Result<Command, i32> {
    let required = std::env::var("TAMER_REQUIRE_MPI").is_ok_and(|v| v == "1");
    let Some(mpirun) = find_in_path("mpirun") else {
        if required {
            eprintln!("mpi: FAILED: TAMER_REQUIRE_MPI=1 but mpirun is not on PATH (Debian: apt-get install openmpi-bin libopenmpi-dev)");
            return Err(1);
        }
        println!("mpi: skipped: mpirun is not on PATH (Debian: apt-get install openmpi-bin libopenmpi-dev); set TAMER_REQUIRE_MPI=1 to fail instead");
        return Err(0);
    };
    let exe = std::env::current_exe().map_err(|e| {
        eprintln!("mpi: FAILED: cannot find this test binary: {e}");
        1
    })?;
    let mut cmd = Command::new(&mpirun);
    // More ranks than cores is fine here (--oversubscribe, no binding); shared
    // memory and loopback only. Root (CI, containers) needs OpenMPI's consent.
    cmd.args(["-np", &ranks.to_string(), "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,vader"])
        .arg(&exe)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // Containers often forbid the cross-process memory attach vader tries first.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    // Two ranks on a machine of few cores: one compute thread each, unless told otherwise.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        cmd.env("RAYON_NUM_THREADS", "1");
    }
    println!("mpi: running {} -np {ranks} --oversubscribe {}", mpirun.display(), exe.display());
    Ok(cmd)
}

/// Run `cmd` to its end, killing it after `limit`: whether it succeeded and
/// after how many seconds; an error when it could not run or ran past the limit.
fn wait_bounded(mut cmd: Command, limit: Duration) -> Result<(bool, f64), String> {
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start mpirun: {e}"))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let secs = start.elapsed().as_secs_f64();
                println!("mpi: mpirun exited with {status} after {secs:.1} s");
                return Ok((status.success(), secs));
            }
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("mpirun still running after {} s (a hang); killed", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for mpirun: {e}")),
        }
    }
}

/// Run this binary as `ranks` processes under mpirun, then the failure
/// cases (`failure.rs`), each its own mpirun; the exit code to return.
pub fn launch(ranks: usize) -> i32 {
    let cmd = match mpirun(ranks) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A hang is a failure, not a stuck CI run.
    let mut code = match wait_bounded(cmd, Duration::from_secs(600)) {
        Ok((true, _)) => 0,
        Ok((false, _)) => 1,
        Err(e) => {
            eprintln!("mpi: FAILED: {e}");
            1
        }
    };
    let launch_case = |env: &[(&str, &str)], log: &Path, limit: Duration| -> Result<(bool, f64), String> {
        let mut cmd = mpirun(2).map_err(|c| format!("no mpirun (exit code {c})"))?;
        cmd.envs(env.iter().copied());
        let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.stderr(Stdio::from(file)).stdout(Stdio::null());
        wait_bounded(cmd, limit)
    };
    let failed = crate::failure::run_cases(&launch_case);
    println!("mpi failure cases: {} passed, {failed} failed", 3 - failed);
    if failed > 0 {
        code = 1;
    }
    code
}
