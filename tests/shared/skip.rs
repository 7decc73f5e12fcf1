//! How a test that cannot do its work says so, shared by the test binaries
//! (`tests/integration` for missing data, `tests/cuda` for a missing GPU):
//! one `SKIPPED <test>: <reason> (skip N of this run)` line per test on
//! stderr, past libtest's output capture, and a `TAMER_REQUIRE_*` variable
//! that turns the skip into a failure where the resource must be there.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Tests of this process that skipped their work.
static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// Whether `variable` (`TAMER_REQUIRE_DATA`, `TAMER_REQUIRE_CUDA`) asks for a
/// missing resource to fail the tests that need it: 1 yes, 0 or unset no.
pub fn required(variable: &str) -> bool {
    match std::env::var(variable).as_deref() {
        Ok("1") => true,
        Ok("0") | Ok("") | Err(_) => false,
        Ok(other) => panic!("{variable}={other:?}: expected 1 (a missing resource fails) or 0"),
    }
}

/// Say on the terminal that the calling test skipped its work and why: once
/// per test (libtest runs each test on a thread of its own, named after it),
/// counted over the run.
pub fn announce(reason: &str) {
    thread_local! {
        static SKIPPED_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if SKIPPED_HERE.with(|s| s.replace(true)) {
        return;
    }
    let count = SKIPPED.fetch_add(1, Ordering::Relaxed) + 1;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let line = format!("SKIPPED {test}: {reason} (skip {count} of this run)\n");
    // A failed write to stderr leaves nothing better to report it on.
    let _ = std::io::stderr().write_all(line.as_bytes());
}
