//! Keeping the rayon pool's workers awake between parallel kernels.
//!
//! A training step is a few hundred parallel regions (each GEMM's blocks,
//! each elementwise op, each row op) with serial work between them: the
//! autograd bookkeeping, the small ops below the parallel threshold, the
//! optimizer's per-parameter loop. A rayon worker that finds no work yields a
//! few dozen times and then sleeps on a futex, so after every such gap the
//! next region first pays for waking it: a system call on the waker's side
//! and, in a virtual machine whose idle vCPU halted, tens of microseconds
//! before the worker runs. OpenMP runtimes (and so PyTorch and MKL) keep
//! their workers spinning for a while after each region for this reason
//! (`KMP_BLOCKTIME`, `GOMP_SPINCOUNT`).
//!
//! [`keep_workers_warm`] does the same on top of rayon: the first call sends
//! every other worker of the current pool a *spinner* (one `spawn_broadcast`
//! job each), a loop that runs the pool's pending jobs through
//! `rayon::yield_now` as they appear, and otherwise yields its core to the
//! OS scheduler (so a core shared with other threads is not taken from them)
//! until no parallel kernel has started anywhere for [`spin_time`]. Later
//! calls within that time only record the time. A spinner never holds work
//! back: whatever the pool's threads push, it takes as an idle worker would,
//! only without the wake-up.
//!
//! v1, gpt-tiny's training step on 2 threads (Intel Xeon, interleaved runs):
//! a spinner kept on the second worker during the whole step took it from
//! 57.5/56.5/58.7 to 54.1/54.0/56.6 ms, every op a little faster.
//!
//! `TAMER_SPIN_US` sets the time in microseconds (0 turns spinners off).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long spinners wait for the next parallel kernel before their workers
/// go back to rayon's sleep, unless `TAMER_SPIN_US` says otherwise.
pub const DEFAULT_SPIN_TIME: Duration = Duration::from_millis(2);

/// The spin time in effect: `TAMER_SPIN_US` when set to a number of
/// microseconds, else [`DEFAULT_SPIN_TIME`]. Read once.
pub fn spin_time() -> Duration {
    static TIME: OnceLock<Duration> = OnceLock::new();
    *TIME.get_or_init(|| parse_spin_time(std::env::var("TAMER_SPIN_US").ok().as_deref()))
}

/// `TAMER_SPIN_US`'s value as a duration: the default when unset or not a
/// number (a performance knob, not worth failing a run over).
fn parse_spin_time(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_SPIN_TIME, Duration::from_micros)
}

/// Nanoseconds since the first use of this module: a clock the spinners and
/// the threads that start kernels share through one atomic.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A spinner that finds no work yields its core to the OS scheduler once
/// every this many rounds and only pauses in between: with a `sched_yield`
/// on every round the next job may wait for the system call. gpt-tiny's
/// step on 2 threads, best of 4 interleaved runs: 48.3 ms yielding every
/// round, 47.1 never yielding; then best of 6: 44.4 every round, 43.9 every
/// 32nd (within the noise, and never yielding would take a shared core).
const YIELD_EVERY: u32 = 32;

/// When a parallel kernel last started, on any thread ([`now_ns`]).
static LAST_KERNEL: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// On a worker: whether a spinner is running on it (a second one sent
    /// while it runs returns at once).
    static SPINNING: Cell<bool> = const { Cell::new(false) };
    /// On a thread that starts parallel kernels: when it last sent spinners
    /// and when it last called [`keep_workers_warm`] ([`now_ns`]).
    static SENT: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// Called by a parallel kernel before it starts: makes sure the current
/// pool's other workers are spinning (see the module docs). Costs a
/// thread-local read and an atomic store when they already are.
pub fn keep_workers_warm() {
    let threads = rayon::current_num_threads();
    let spin = spin_time();
    if threads <= 1 || spin.is_zero() || SPINNING.get() {
        // A spinner's own thread runs kernels it took from the pool: the
        // thread that sent it keeps the spinners going.
        if !spin.is_zero() && threads > 1 {
            LAST_KERNEL.store(now_ns(), Ordering::Relaxed);
        }
        return;
    }
    let now = now_ns();
    LAST_KERNEL.store(now, Ordering::Relaxed);
    let spin_ns = u64::try_from(spin.as_nanos()).unwrap_or(u64::MAX);
    // Spinners stop once LAST_KERNEL is `spin` old. Each call moves it, so
    // while this thread's calls come less than 0.9·spin apart every spinner
    // it sent is still running; after a longer gap some may have stopped,
    // and it sends them again (a worker whose spinner still runs finds the
    // new one inside its loop and drops it).
    let alive = SENT.get().is_some_and(|(_, last_call)| now.saturating_sub(last_call) < spin_ns / 10 * 9);
    SENT.set(Some((if alive { SENT.get().map_or(now, |(sent, _)| sent) } else { now }, now)));
    if alive {
        return;
    }
    let caller = rayon::current_thread_index();
    rayon::spawn_broadcast(move |ctx| {
        if Some(ctx.index()) != caller {
            spin_until_idle(spin_ns);
        }
    });
}

/// The spinner: run the pool's jobs as they come until no kernel has started
/// for `spin_ns`.
fn spin_until_idle(spin_ns: u64) {
    if SPINNING.replace(true) {
        return;
    }
    let mut idle_rounds = 0u32;
    loop {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle_rounds = 0,
            _ => {
                if now_ns().saturating_sub(LAST_KERNEL.load(Ordering::Relaxed)) >= spin_ns {
                    break;
                }
                idle_rounds = idle_rounds.wrapping_add(1);
                if idle_rounds.is_multiple_of(YIELD_EVERY) {
                    // Give the core to any other thread that wants it; when
                    // none does this returns at once.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
    SPINNING.set(false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn the_spin_time_comes_from_the_variable_or_the_default() {
        assert_eq!(parse_spin_time(None), DEFAULT_SPIN_TIME);
        assert_eq!(parse_spin_time(Some("500")), Duration::from_micros(500));
        assert_eq!(parse_spin_time(Some(" 0 ")), Duration::ZERO);
        assert_eq!(parse_spin_time(Some("fast")), DEFAULT_SPIN_TIME);
    }

    #[test]
    fn the_other_workers_spin_run_the_work_and_stop_once_kernels_stop() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let spins = !spin_time().is_zero();
        pool.install(|| {
            keep_workers_warm();
            // The other workers got their spinners first, so they run this
            // broadcast inside them; the caller has none.
            let me = rayon::current_thread_index();
            for (index, spinning) in rayon::broadcast(|ctx| (ctx.index(), SPINNING.get())) {
                assert_eq!(spinning, spins && Some(index) != me, "worker {index} (the caller is {me:?})");
            }
            for round in 0..50u64 {
                keep_workers_warm();
                let sum: u64 = (0..10_000u64).into_par_iter().map(|i| i * round).sum();
                assert_eq!(sum, round * 10_000 * 9_999 / 2);
            }
        });
        // Well after the last kernel every spinner has stopped.
        std::thread::sleep(spin_time() * 20 + Duration::from_millis(10));
        let spinning: Vec<bool> = pool.broadcast(|_| SPINNING.get());
        assert!(spinning.iter().all(|s| !s), "spinners still running: {spinning:?}");
    }
}
