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
//! [`keep_workers_warm`] does the same on top of rayon: the first call from
//! a thread sends the other workers of its pool a *spinner* each (one
//! `spawn_broadcast` job), a loop that runs the pool's pending jobs through
//! `rayon::yield_now` as they appear, pausing in between and giving its core
//! to the OS scheduler now and then, until neither has it run a job nor has
//! its sender started a parallel kernel for [`spin_time`]. Later calls
//! within that time only move the sender's clock. A spinner never holds work
//! back: whatever the pool's threads push, it takes as an idle worker would,
//! only without the wake-up.
//!
//! Each sender has its own clock, so spinners of a pool that went idle (or
//! was dropped) stop within [`spin_time`] whatever other pools do. A
//! spinner that starts late (its worker was busy, perhaps waiting inside a
//! task, where a spinner would hold that task up) returns at once. When the
//! sender is not one of the pool's workers (a program's main thread on the
//! global pool), worker 0 is left to sleep, so that the spinners and the
//! sender's own serial work do not need more threads than there are cores.
//!
//! Spinning pays when one thread drives the pool, as a training loop does.
//! When two threads start parallel kernels within [`spin_time`] of each
//! other (test harnesses, servers), the spinners would compete with them
//! for the cores: a stress run of 2 and 3 threads, each multiplying and
//! applying GELU in a loop on a 2-worker pool, saw its worst iteration go
//! from 4 to 10 ms and from 6.5 to 30 ms. So a second driver switches
//! spinning off for four spin times, and running spinners stop.
//!
//! v1, gpt-tiny's training step on 2 threads (Intel Xeon, interleaved runs):
//! a spinner kept on the second worker during the whole step took it from
//! 57.5/56.5/58.7 to 54.1/54.0/56.6 ms; the first `keep_workers_warm`,
//! against the commit before it, 56.3 → 53.9 ms (best of 4 rounds).
//!
//! `TAMER_SPIN_US` sets the time in microseconds (0 turns spinners off).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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

/// Nanoseconds since the first use of this module: the clock senders and
/// spinners share.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A spinner that starts more than this long after it was sent returns at
/// once: its worker was busy, and if it was waiting inside a task the
/// spinner would hold that task up for as long as it spins. Waking a
/// sleeping worker takes tens of microseconds.
const LATE_START: Duration = Duration::from_micros(500);

/// Which threads started parallel kernels lately: the last one and when
/// ([`now_ns`]), and until when spinning is off because two did within a
/// spin time of each other (see the module docs).
struct Drivers {
    last: AtomicU64,
    last_at: AtomicU64,
    shared_until: AtomicU64,
}

impl Drivers {
    const fn new() -> Drivers {
        Drivers {
            last: AtomicU64::new(0),
            last_at: AtomicU64::new(0),
            shared_until: AtomicU64::new(0),
        }
    }

    /// Records that thread `me` starts a parallel kernel at `now`; true
    /// while spinning is off because another thread did within `spin_ns`
    /// before.
    fn pool_is_shared(&self, me: u64, now: u64, spin_ns: u64) -> bool {
        let (before, before_at) = (self.last.swap(me, Ordering::Relaxed), self.last_at.swap(now, Ordering::Relaxed));
        if before != 0 && before != me && now.saturating_sub(before_at) < spin_ns {
            self.shared_until.fetch_max(now.saturating_add(spin_ns.saturating_mul(4)), Ordering::Relaxed);
        }
        self.is_shared(now)
    }

    fn is_shared(&self, now: u64) -> bool {
        now < self.shared_until.load(Ordering::Relaxed)
    }
}

/// The process's drivers.
static DRIVERS: Drivers = Drivers::new();

/// A number of this thread's own, for [`Drivers`] (0 is no thread).
fn thread_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static NUMBER: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|n| *n)
}

/// A spinner that finds no work yields its core to the OS scheduler once
/// every this many rounds and only pauses in between: with a `sched_yield`
/// on every round the next job may wait for the system call. gpt-tiny's
/// step on 2 threads, best of 4 interleaved runs: 48.3 ms yielding every
/// round, 47.1 never yielding; then best of 6: 44.4 every round, 43.9 every
/// 32nd (within the noise, and never yielding would take a shared core).
const YIELD_EVERY: u32 = 32;

thread_local! {
    /// On a worker running a spinner: the clock of the sender it spins for
    /// (a later spinner sent to the same worker hands over its sender's
    /// clock here and returns).
    static SPINNING_FOR: RefCell<Option<Arc<AtomicU64>>> = const { RefCell::new(None) };
    /// On a thread that starts parallel kernels: its clock (when it last
    /// started one, [`now_ns`]), which its spinners watch.
    static SENDER: RefCell<Option<Arc<AtomicU64>>> = const { RefCell::new(None) };
    /// On the same thread: when it last sent spinners, or `None` when the
    /// next call must send them (never yet, or spinning was switched off).
    static SENT_AT: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Called by a parallel kernel before it starts: makes sure the current
/// pool's other workers are spinning (see the module docs). When they are,
/// it reads the time and moves this thread's clock.
pub fn keep_workers_warm() {
    let threads = rayon::current_num_threads();
    let spin = spin_time();
    if threads <= 1 || spin.is_zero() {
        return;
    }
    if SPINNING_FOR.with_borrow(Option::is_some) {
        // A spinner's worker running a kernel it took from its sender: the
        // sender keeps the spinners going.
        return;
    }
    let now = now_ns();
    let spin_ns = u64::try_from(spin.as_nanos()).unwrap_or(u64::MAX);
    if DRIVERS.pool_is_shared(thread_number(), now, spin_ns) {
        // Send spinners again once the pool is this thread's alone.
        SENT_AT.set(None);
        return;
    }
    let clock = SENDER.with_borrow_mut(|c| Arc::clone(c.get_or_insert_with(|| Arc::new(AtomicU64::new(now)))));
    let last = clock.fetch_max(now, Ordering::Relaxed);
    // Spinners stop once this clock is `spin` old (and they have run no job
    // for as long). While this thread's calls come less than 0.9·spin apart
    // every spinner it sent is still running; after a longer gap some may
    // have stopped, and it sends them again (a worker whose spinner still
    // runs hands the new one's clock to it).
    if SENT_AT.get().is_some() && now.saturating_sub(last) < spin_ns / 10 * 9 {
        return;
    }
    SENT_AT.set(Some(now));
    // The sender's own worker runs no spinner; a sender outside the pool
    // leaves worker 0 asleep (see the module docs).
    let skip = rayon::current_thread_index().unwrap_or(0);
    rayon::spawn_broadcast(move |ctx| {
        if ctx.index() != skip {
            spin_until_idle(&clock, now, spin_ns);
        }
    });
}

/// The spinner: run the pool's jobs as they come until neither a job nor
/// the sender's clock has moved for `spin_ns`.
fn spin_until_idle(clock: &Arc<AtomicU64>, sent_at: u64, spin_ns: u64) {
    let late = u64::try_from(LATE_START.as_nanos()).unwrap_or(u64::MAX);
    if now_ns().saturating_sub(sent_at) > late {
        return;
    }
    let running = SPINNING_FOR.with_borrow_mut(|c| c.replace(Arc::clone(clock)).is_some());
    if running {
        // A spinner below this one on the stack now watches this sender.
        return;
    }
    let (mut idle_rounds, mut last_job) = (0u32, now_ns());
    loop {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => {
                idle_rounds = 0;
                last_job = now_ns();
            }
            _ => {
                let sender = SPINNING_FOR.with_borrow(|c| c.as_ref().map_or(0, |c| c.load(Ordering::Relaxed)));
                let now = now_ns();
                if now.saturating_sub(sender.max(last_job)) >= spin_ns || DRIVERS.is_shared(now) {
                    break;
                }
                idle_rounds = idle_rounds.wrapping_add(1);
                if idle_rounds.is_multiple_of(YIELD_EVERY) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
    SPINNING_FOR.set(None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn a_second_driver_within_a_spin_time_switches_spinning_off_for_a_while() {
        let drivers = Drivers::new();
        let (a, b, spin) = (1, 2, 1_000);
        assert!(!drivers.pool_is_shared(a, 10_000, spin), "one driver");
        assert!(!drivers.pool_is_shared(a, 10_500, spin), "the same driver again");
        assert!(drivers.pool_is_shared(b, 10_900, spin), "a second driver 400 ns later");
        assert!(drivers.pool_is_shared(b, 13_000, spin), "still within four spin times");
        assert!(!drivers.pool_is_shared(b, 20_000, spin), "the second driver alone, later");
        assert!(!drivers.pool_is_shared(a, 30_000, spin), "a driver after a long gap");
    }

    #[test]
    fn the_spin_time_comes_from_the_variable_or_the_default() {
        assert_eq!(parse_spin_time(None), DEFAULT_SPIN_TIME);
        assert_eq!(parse_spin_time(Some("500")), Duration::from_micros(500));
        assert_eq!(parse_spin_time(Some(" 0 ")), Duration::ZERO);
        assert_eq!(parse_spin_time(Some("fast")), DEFAULT_SPIN_TIME);
    }

    /// Whether a spinner runs on this worker.
    fn spinning() -> bool {
        SPINNING_FOR.with_borrow(Option::is_some)
    }

    #[test]
    fn the_other_workers_spin_run_the_work_and_stop_once_kernels_stop() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let spins = !spin_time().is_zero();
        pool.install(|| {
            // The other workers get their spinners first and run the
            // broadcast inside them; the caller has none. A worker may start
            // its spinner too late on a loaded machine (it then returns at
            // once), and other tests' kernels in this process switch
            // spinning off for a while (two drivers), so this takes a few
            // tries, each after a gap that makes the next call send
            // spinners again; a try while spinning is off expects none.
            let me = rayon::current_thread_index();
            let others: Vec<usize> = (0..3).filter(|&i| Some(i) != me).collect();
            let mut tries = Vec::new();
            // Each other worker seen spinning in some try: on a loaded two-core
            // machine one of them may start every spinner of a few tries late.
            let mut seen_spinning = std::collections::BTreeSet::new();
            for _ in 0..50 {
                keep_workers_warm();
                let shared = DRIVERS.is_shared(now_ns());
                let states = rayon::broadcast(|ctx| (ctx.index(), spinning()));
                if !shared {
                    seen_spinning.extend(states.iter().filter(|&&(_, s)| s).map(|&(i, _)| i));
                }
                tries.push((shared, states));
                if spins && others.iter().all(|i| seen_spinning.contains(i)) {
                    break;
                }
                std::thread::sleep(spin_time() + Duration::from_millis(1));
                if !spins && tries.len() >= 3 {
                    break;
                }
            }
            let caller_never = tries.iter().all(|(_, states)| states.iter().all(|&(i, s)| !(s && Some(i) == me)));
            let expected = if spins {
                others.iter().all(|i| seen_spinning.contains(i)) || tries.iter().all(|(shared, _)| *shared)
            } else {
                seen_spinning.is_empty()
            };
            assert!(
                caller_never && expected,
                "(pool shared, (worker, spinning)) per try: {tries:?}; the caller is {me:?}"
            );
            for round in 0..50u64 {
                keep_workers_warm();
                let sum: u64 = (0..10_000u64).into_par_iter().map(|i| i * round).sum();
                assert_eq!(sum, round * 10_000 * 9_999 / 2);
            }
        });
        // Well after this pool's last kernel every spinner of it has stopped,
        // whatever other tests' pools do meanwhile.
        std::thread::sleep(spin_time().saturating_mul(20) + Duration::from_millis(10));
        let spinning: Vec<bool> = pool.broadcast(|_| spinning());
        assert!(spinning.iter().all(|s| !s), "spinners still running: {spinning:?}");
    }
}
