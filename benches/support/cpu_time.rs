//! The calling thread's CPU time: on a machine shared with other jobs, the
//! time a single-threaded kernel actually ran, without the time it waited for
//! a core (wall time counts both). Linux's `CLOCK_THREAD_CPUTIME_ID`.

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// `CLOCK_PROCESS_CPUTIME_ID` and `CLOCK_THREAD_CPUTIME_ID` in Linux's `<time.h>`.
const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

/// Seconds of CPU this thread has used, or `None` where the clock is missing.
pub fn thread_cpu_seconds() -> Option<f64> {
    cpu_seconds(CLOCK_THREAD_CPUTIME_ID)
}

/// Seconds of CPU all of this process's threads have used, or `None` where
/// the clock is missing.
pub fn process_cpu_seconds() -> Option<f64> {
    cpu_seconds(CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_seconds(clock: i32) -> Option<f64> {
    if !cfg!(all(target_os = "linux", target_pointer_width = "64")) {
        return None;
    }
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec (two i64 on 64-bit Linux) into `ts`.
    let rc = unsafe { clock_gettime(clock, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}
