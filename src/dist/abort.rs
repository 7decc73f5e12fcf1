//! Errors, not hangs: a rank that fails while the others wait in a
//! collective must stop the whole job. Returning the error is not enough
//! under MPI: the failing process would then finalise MPI, which waits for
//! the others, which wait for it. [`ProcessGroup::abort`] ends every
//! process of the job (MPI_Abort); the examples call
//! [`ProcessGroup::abort_on_error`] on their result, and the trainer
//! installs [`ProcessGroup::abort_on_panic`] when it trains over several ranks.

use super::ProcessGroup;
use crate::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether [`ProcessGroup::abort_on_panic`] has installed its hook in this process.
static PANIC_HOOK: AtomicBool = AtomicBool::new(false);

impl ProcessGroup {
    /// Stop every process of the job now with exit code `code`: MPI_Abort
    /// under MPI (the launcher then ends the other ranks and exits non-zero),
    /// a plain exit in a world of one. Never returns; nothing is finalised.
    ///
    /// ```no_run
    /// tamer::dist::ProcessGroup::single().abort(3); // exits with code 3
    /// ```
    pub fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }

    /// `r` itself in a world of one, and when it is Ok. An error on one rank
    /// of several is printed to stderr with the rank's number, then the job
    /// is aborted ([`abort`](Self::abort), exit code 1): the other ranks may
    /// be waiting for this one in a collective, and would wait forever.
    /// Call it on the result of everything a rank does after joining the group.
    ///
    /// ```
    /// let pg = tamer::dist::ProcessGroup::single();
    /// assert_eq!(pg.abort_on_error(Ok(2)).unwrap(), 2);
    /// let e = tamer::Error::value("op", "bad");
    /// assert!(pg.abort_on_error::<()>(Err(e)).is_err()); // one process: handed back
    /// ```
    pub fn abort_on_error<T>(&self, r: Result<T>) -> Result<T> {
        match r {
            Err(e) if self.world_size() > 1 => {
                eprintln!(
                    "rank {} of {}: error: {e}\nrank {}: stopping every rank of the job (MPI_Abort)",
                    self.rank(),
                    self.world_size(),
                    self.rank()
                );
                self.abort(1)
            }
            r => r,
        }
    }

    /// On several ranks, make a panic anywhere in this process stop the
    /// whole job: a hook (installed once per process, after the one already
    /// set, which still prints the panic) says which rank panicked and aborts
    /// with exit code 101. Holds no reference that keeps MPI from being
    /// finalised: once the group is gone, a panic is only printed. Nothing
    /// happens in a world of one.
    ///
    /// ```
    /// tamer::dist::ProcessGroup::single().abort_on_panic(); // a world of one: no hook
    /// ```
    pub fn abort_on_panic(&self) {
        if self.world_size() == 1 || PANIC_HOOK.swap(true, Ordering::SeqCst) {
            return;
        }
        let comm = Arc::downgrade(&self.comm);
        let (rank, world) = (self.rank(), self.world_size());
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if let Some(comm) = comm.upgrade() {
                eprintln!("rank {rank} of {world} panicked: stopping every rank of the job (MPI_Abort)");
                comm.abort(101);
            }
        }));
    }
}
