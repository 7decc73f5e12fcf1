//! Starting this binary under `mpirun`, or saying why not.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether a launcher started this process (then it is one rank).
pub fn under_launcher() -> bool {
    tamer::dist::LAUNCHER_SIZE_VARS.iter().any(|v| std::env::var_os(v).is_some())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Run this binary as `ranks` processes under mpirun; the exit code to return.
pub fn launch(ranks: usize) -> i32 {
    let required = std::env::var("TAMER_REQUIRE_MPI").is_ok_and(|v| v == "1");
    let Some(mpirun) = find_in_path("mpirun") else {
        if required {
            eprintln!("mpi: FAILED: TAMER_REQUIRE_MPI=1 but mpirun is not on PATH (Debian: apt-get install openmpi-bin libopenmpi-dev)");
            return 1;
        }
        println!("mpi: skipped: mpirun is not on PATH (Debian: apt-get install openmpi-bin libopenmpi-dev); set TAMER_REQUIRE_MPI=1 to fail instead");
        return 0;
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mpi: FAILED: cannot find this test binary: {e}");
            return 1;
        }
    };
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
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mpi: FAILED: cannot start {}: {e}", mpirun.display());
            return 1;
        }
    };
    // A hang is a failure, not a stuck CI run.
    let limit = Duration::from_secs(600);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                println!("mpi: mpirun exited with {status} after {:.1} s", start.elapsed().as_secs_f64());
                return if status.success() { 0 } else { 1 };
            }
            Ok(None) if start.elapsed() > limit => {
                eprintln!("mpi: FAILED: mpirun still running after {} s; killed", limit.as_secs());
                let _ = child.kill();
                let _ = child.wait();
                return 1;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                eprintln!("mpi: FAILED: waiting for mpirun: {e}");
                return 1;
            }
        }
    }
}
