//! Multi-rank tests of `tamer::dist` over MPI, as one binary (MPI can be
//! initialised once per process, so these cannot be ordinary `#[test]`s).
//!
//! Built with `--features mpi`; `cargo test --features mpi --test mpi` runs
//! this binary, which starts itself again under `mpirun -np 2` and passes
//! when every rank's checks do. Each rank checks every collective's values
//! exactly against what it computes the ranks sent. Without `mpirun` it
//! prints why it skipped and passes, unless `TAMER_REQUIRE_MPI=1` (CI).
//! Then it launches itself three more times, once per way a rank can fail
//! (`failure.rs`), each of which must end the job, not hang it.

#![cfg(feature = "mpi")]

mod collectives;
mod failure;
mod launch;
mod memory;
#[cfg(feature = "nccl")]
mod nccl;
mod overlap;
mod training;
mod world;
mod zero;

use tamer::dist::{ProcessGroup, ReduceOp};

/// A group of checks, run on every rank.
type Checks = fn(&ProcessGroup, &mut Failures);

/// The checks one rank failed, in words.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    /// Record `what` unless `ok`.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }
    /// Record an error of a step that should have worked.
    pub fn ok<T>(&mut self, what: &str, r: tamer::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(format!("{what}: {e}"));
                None
            }
        }
    }
}

fn main() {
    if launch::under_launcher() {
        if let Ok(case) = std::env::var(failure::CASE_VAR) {
            std::process::exit(failure::rank_main(&case));
        }
        std::process::exit(rank_main());
    }
    std::process::exit(launch::launch(2));
}

/// One rank: run every group of checks, agree on the outcome, report.
fn rank_main() -> i32 {
    // A panic must not unwind into MPI_Finalize while the other rank waits in
    // a collective: print it and leave at once (mpirun then stops the job).
    std::panic::set_hook(Box::new(|info| {
        eprintln!("rank panicked: {info}");
        std::process::exit(101);
    }));
    let pg = match ProcessGroup::mpi() {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("cannot start MPI: {e}");
            return 1;
        }
    };
    let rank = pg.rank();
    let groups: &[(&str, Checks)] = &[
        ("collectives", collectives::run),
        ("steady-step memory", memory::run),
        ("data-parallel training", training::run),
        ("gradients averaged during backward", overlap::run),
        ("world size, settings, evaluation", world::run),
        ("ZeRO-1", zero::run),
        #[cfg(feature = "nccl")]
        ("NCCL", nccl::run),
    ];
    let mut failed_total = 0.0;
    let mut passed = 0;
    for &(name, run) in groups {
        let mut f = Failures::default();
        let start = std::time::Instant::now();
        run(&pg, &mut f);
        let secs = start.elapsed().as_secs_f64();
        for msg in &f.0 {
            eprintln!("rank {rank}: {name}: FAILED: {msg}");
        }
        // Every rank learns whether any failed, so all exit alike.
        let mut failed = [f.0.len() as f64];
        if let Err(e) = pg.all_reduce_scalars(&mut failed, ReduceOp::Sum) {
            eprintln!("rank {rank}: cannot agree on the outcome: {e}");
            return 1;
        }
        if failed[0] == 0.0 {
            passed += 1;
            if pg.is_root() {
                println!("{name}: ok on {} ranks ({secs:.1} s)", pg.world_size());
            }
        }
        failed_total += failed[0];
    }
    if pg.is_root() {
        let failed_groups = groups.len() - passed;
        println!("mpi: {passed} passed, {failed_groups} failed");
    }
    i32::from(failed_total > 0.0)
}
