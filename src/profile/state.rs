//! The profiler's switch, its per-thread nesting and the table it fills.

use super::report::{OpProfile, PhaseProfile, ProfileReport};
use super::{Cost, VARIABLE};
use crate::{Error, Result};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// `STATE`'s values: not decided yet (the environment is read at the first
/// op), off, on, or a `TAMER_PROFILE` value that means neither.
const UNDECIDED: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
const BAD_VARIABLE: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// Switch profiling on (whatever `TAMER_PROFILE` says). Rows recorded
/// before are kept; see [`reset`].
pub fn enable() {
    let mut table = table();
    STATE.store(ON, Ordering::Relaxed);
    table.clock.start();
}

/// Switch profiling off (whatever `TAMER_PROFILE` says); the rows stay
/// until [`reset`].
pub fn disable() {
    let mut table = table();
    STATE.store(OFF, Ordering::Relaxed);
    table.clock.stop();
}

/// Forget every row and restart the wall clock (from now if profiling is on).
pub fn reset() {
    let mut table = table();
    table.ops.clear();
    table.clock = WallClock::default();
    if STATE.load(Ordering::Relaxed) == ON {
        table.clock.start();
    }
}

/// Whether ops are being recorded (deciding from `TAMER_PROFILE` if neither
/// [`enable`] nor [`disable`] nor an op has decided yet; a value that is
/// neither on nor off counts as off here, and makes ops fail).
pub fn is_enabled() -> bool {
    state() == ON
}

/// What has been recorded since the last [`reset`], rows sorted by time.
pub fn report() -> ProfileReport {
    let table = table();
    let ops = table
        .ops
        .iter()
        .map(|(&op, c)| OpProfile {
            op: op.to_string(),
            forward: c.forward,
            backward: c.backward,
        })
        .collect();
    ProfileReport::new(ops, table.clock.elapsed())
}

/// Open a scope for the op `name`: from here until the returned [`Scope`]
/// drops, its work is recorded under `name` (see the module doc for
/// nesting). `cost` is called only when profiling is on.
///
/// An error only when `TAMER_PROFILE` holds a value that is neither on nor
/// off: the op fails, naming the variable, rather than run unprofiled when
/// a profile was asked for.
#[inline]
pub fn op(name: &'static str, cost: impl FnOnce() -> Cost) -> Result<Scope> {
    // Off, this load and branch is all an op pays: the scope it returns is
    // inert, and its inlined `drop` vanishes.
    if STATE.load(Ordering::Relaxed) == OFF {
        return Ok(Scope::new(Frame::Inert));
    }
    op_not_off(name, cost)
}

/// Profiling on, the first op of a process, or a bad `TAMER_PROFILE`.
#[cold]
#[inline(never)]
fn op_not_off(name: &'static str, cost: impl FnOnce() -> Cost) -> Result<Scope> {
    match state() {
        ON => Ok(Scope::open(name, cost())),
        BAD_VARIABLE => Err(Error::value(name, bad_variable_message())),
        _ => Ok(Scope::new(Frame::Inert)),
    }
}

/// `STATE`, decided from the environment the first time it is asked.
fn state() -> u8 {
    match STATE.load(Ordering::Relaxed) {
        UNDECIDED => decide_from_env(),
        s => s,
    }
}

#[cold]
fn decide_from_env() -> u8 {
    let decided = match env_value() {
        Ok(true) => ON,
        Ok(false) => OFF,
        Err(_) => BAD_VARIABLE,
    };
    let mut table = table();
    // `enable`/`disable` (or another thread's first op) may have decided meanwhile.
    if STATE.compare_exchange(UNDECIDED, decided, Ordering::Relaxed, Ordering::Relaxed).is_ok() && decided == ON {
        table.clock.start();
    }
    STATE.load(Ordering::Relaxed)
}

/// `TAMER_PROFILE` as on or off, or the message saying why it is neither.
fn env_value() -> std::result::Result<bool, String> {
    static VALUE: OnceLock<std::result::Result<bool, String>> = OnceLock::new();
    VALUE
        .get_or_init(|| match std::env::var(VARIABLE) {
            Ok(v) => parse_switch(&v),
            Err(std::env::VarError::NotPresent) => Ok(false),
            Err(std::env::VarError::NotUnicode(raw)) => Err(format!("{VARIABLE}={raw:?} is not valid UTF-8; expected 1 or 0")),
        })
        .clone()
}

fn bad_variable_message() -> String {
    env_value().err().unwrap_or_else(|| format!("{VARIABLE} could not be read"))
}

/// A `TAMER_PROFILE` value: on, off, or why it is neither.
pub(super) fn parse_switch(value: &str) -> std::result::Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "" | "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(format!(
            "{VARIABLE}={value:?} is neither on nor off; expected 1 (or true, on, yes) to profile every op, or 0 (false, off, no, empty) not to"
        )),
    }
}

// ---- scopes and their nesting ------------------------------------------------------

/// Which column a scope's time goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Forward,
    Backward,
}

/// Per thread: how many scopes are open, the bytes and FLOPs the outermost
/// one has gathered from itself and those inside it, and the phase.
struct ThreadState {
    depth: Cell<u32>,
    gathered: Cell<Cost>,
    phase: Cell<Phase>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            depth: Cell::new(0),
            gathered: Cell::new(Cost::NONE),
            phase: Cell::new(Phase::Forward),
        }
    };
}

/// An open profiling scope; it records when dropped. Keep it in a named
/// binding (`let _op = ...`): `let _ = ...` drops it at once. It stays on
/// the thread that opened it (it is not `Send`): the nesting it takes part
/// in is that thread's.
#[must_use = "a scope records the work done until it drops; bind it with `let _op = ...`"]
pub struct Scope(Frame, PhantomData<*const ()>);

enum Frame {
    /// Profiling was off when the scope opened.
    Inert,
    /// Inside another scope on this thread: its cost went to that one.
    Nested,
    /// The outermost scope of this thread: it owns the time.
    Outermost { name: &'static str, phase: Phase, start: Instant },
}

impl Scope {
    #[inline]
    fn new(frame: Frame) -> Scope {
        Scope(frame, PhantomData)
    }

    #[inline(never)]
    fn open(name: &'static str, cost: Cost) -> Scope {
        let (outermost, phase) = THREAD.with(|t| {
            let depth = t.depth.get();
            t.depth.set(depth + 1);
            if depth == 0 {
                t.gathered.set(cost);
            } else {
                t.gathered.set(t.gathered.get().add(cost));
            }
            (depth == 0, t.phase.get())
        });
        if !outermost {
            return Scope::new(Frame::Nested);
        }
        sync_devices();
        Scope::new(Frame::Outermost {
            name,
            phase,
            start: Instant::now(),
        })
    }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        if !matches!(self.0, Frame::Inert) {
            self.close();
        }
    }
}

impl Scope {
    #[inline(never)]
    fn close(&mut self) {
        match self.0 {
            Frame::Inert => {}
            Frame::Nested => THREAD.with(|t| t.depth.set(t.depth.get().saturating_sub(1))),
            Frame::Outermost { name, phase, start } => {
                sync_devices();
                let elapsed = start.elapsed();
                let cost = THREAD.with(|t| {
                    t.depth.set(t.depth.get().saturating_sub(1));
                    t.gathered.replace(Cost::NONE)
                });
                table().record(name, phase, elapsed, cost);
            }
        }
    }
}

/// While alive, the scopes this thread opens count as backward (the
/// backward pass holds one); it restores the phase before it when dropped.
#[must_use = "the phase lasts until the guard drops; bind it with `let _phase = ...`"]
pub struct BackwardPhase(Option<bool>, PhantomData<*const ()>);

/// Mark the scopes this thread opens from now until the guard drops as
/// backward. When profiling is off this touches nothing.
pub fn backward_phase() -> BackwardPhase {
    if STATE.load(Ordering::Relaxed) != ON {
        return BackwardPhase(None, PhantomData);
    }
    let was_backward = THREAD.with(|t| t.phase.replace(Phase::Backward)) == Phase::Backward;
    BackwardPhase(Some(was_backward), PhantomData)
}

impl Drop for BackwardPhase {
    fn drop(&mut self) {
        if let Some(was_backward) = self.0 {
            let phase = if was_backward { Phase::Backward } else { Phase::Forward };
            THREAD.with(|t| t.phase.set(phase));
        }
    }
}

// ---- devices with a queue -------------------------------------------------------------

static DEVICE_SYNC: OnceLock<fn()> = OnceLock::new();

/// For backends whose kernels run asynchronously (CUDA): `wait_for_all`
/// blocks until every device's queued work is done. While profiling is on,
/// each outermost scope calls it when it opens and when it closes, so the
/// times measured are the kernels'. Registered once; later calls are ignored.
#[doc(hidden)]
pub fn register_device_sync(wait_for_all: fn()) {
    let _ = DEVICE_SYNC.set(wait_for_all);
}

fn sync_devices() {
    if let Some(wait) = DEVICE_SYNC.get() {
        wait();
    }
}

// ---- the table --------------------------------------------------------------------------

#[derive(Clone, Copy, Default)]
struct Counters {
    forward: PhaseProfile,
    backward: PhaseProfile,
}

/// Time spent with profiling on since the last reset.
#[derive(Default)]
struct WallClock {
    before: Duration,
    since: Option<Instant>,
}

impl WallClock {
    fn start(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }
    fn stop(&mut self) {
        if let Some(since) = self.since.take() {
            self.before += since.elapsed();
        }
    }
    fn elapsed(&self) -> Duration {
        self.before + self.since.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

struct Table {
    ops: BTreeMap<&'static str, Counters>,
    clock: WallClock,
}

impl Table {
    fn record(&mut self, name: &'static str, phase: Phase, elapsed: Duration, cost: Cost) {
        let counters = self.ops.entry(name).or_default();
        let p = match phase {
            Phase::Forward => &mut counters.forward,
            Phase::Backward => &mut counters.backward,
        };
        p.calls += 1;
        p.nanos = p.nanos.saturating_add(elapsed.as_nanos().try_into().unwrap_or(u64::MAX));
        p.bytes = p.bytes.saturating_add(cost.bytes);
        p.flops = p.flops.saturating_add(cost.flops);
    }
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    ops: BTreeMap::new(),
    clock: WallClock {
        before: Duration::ZERO,
        since: None,
    },
});

fn table() -> MutexGuard<'static, Table> {
    // A panic while the lock was held left whole counters (each field is
    // written in one store): reading on is sound.
    TABLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_is_on_off_or_an_error_naming_it() {
        for on in ["1", "true", "ON", " yes "] {
            assert_eq!(parse_switch(on), Ok(true), "{on}");
        }
        for off in ["", "0", "false", "Off", "no"] {
            assert_eq!(parse_switch(off), Ok(false), "{off}");
        }
        let err = parse_switch("2").unwrap_err();
        assert!(err.contains("TAMER_PROFILE=\"2\"") && err.contains("expected 1"), "{err}");
    }

    #[test]
    fn the_wall_clock_counts_only_while_on() {
        let mut clock = WallClock::default();
        assert_eq!(clock.elapsed(), Duration::ZERO);
        clock.start();
        std::thread::sleep(Duration::from_millis(2));
        clock.stop();
        let on = clock.elapsed();
        assert!(on >= Duration::from_millis(2), "{on:?}");
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(clock.elapsed(), on, "stopped, it must not advance");
    }

    #[test]
    fn the_table_adds_calls_time_bytes_and_flops_per_phase() {
        let mut table = Table {
            ops: BTreeMap::new(),
            clock: WallClock::default(),
        };
        let cost = Cost { flops: 10, bytes: 40 };
        table.record("gelu", Phase::Forward, Duration::from_nanos(100), cost);
        table.record("gelu", Phase::Forward, Duration::from_nanos(50), cost);
        table.record("gelu", Phase::Backward, Duration::from_nanos(7), Cost { flops: 1, bytes: 2 });
        let c = table.ops["gelu"];
        assert_eq!((c.forward.calls, c.forward.nanos, c.forward.bytes, c.forward.flops), (2, 150, 80, 20));
        assert_eq!((c.backward.calls, c.backward.nanos, c.backward.bytes, c.backward.flops), (1, 7, 2, 1));
    }
}
