//! What `tamer::profile` costs: one JSON line per case.
//!
//! `cargo bench --bench profile_overhead` times, in interleaved rounds
//! (best median of each case over the rounds):
//! - `scope_off`: a profiling scope opened and dropped with profiling off,
//!   the whole cost every op pays for the profiler (nanoseconds per scope);
//! - `tiny_add_off` / `tiny_add_on`: `a.add(&b)` on one-element f32 tensors,
//!   the cheapest op there is (all of its time is the op's overhead, so the
//!   profiler's share is the largest it can be), with profiling off and on.
//!
//! Wall-clock figures on a shared machine are noisy at this scale; the load
//! average is printed beside them. Instruction counts are not: run the
//! binary under callgrind with `count scope N` or `count tiny_add N` (N
//! iterations of the loop alone, profiling off) for two values of N, and
//! divide the difference in instructions by the difference in N:
//!
//! ```sh
//! B=$(ls target/release/deps/profile_overhead-* | grep -v '\.d$')
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null $B count tiny_add 100000 2>&1 | grep refs
//! ```

use std::hint::black_box;
use std::time::Instant;
use tamer::profile::{self, Cost};
use tamer::Tensor;

const ROUNDS: usize = 5;
const RUNS: usize = 9;

/// Nanoseconds per iteration of `body` run `n` times: the median of
/// [`RUNS`] runs.
fn median_ns(n: usize, mut body: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                body();
            }
            start.elapsed().as_secs_f64() * 1e9 / n as f64
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[RUNS / 2]
}

/// What an op adds: the scope is opened and dropped as an op does (not
/// hidden behind `black_box`, which would keep the compiler from seeing
/// that an inert scope's drop does nothing).
fn scope() {
    let _op = profile::op(black_box("bench"), || Cost::NONE);
}

fn tensors() -> (Tensor, Tensor) {
    let one = |v: f32| Tensor::from_vec(vec![v], [1]).expect("a one-element tensor");
    (one(1.5), one(2.25))
}

fn tiny_add(a: &Tensor, b: &Tensor) {
    black_box(a.add(b).expect("add"));
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "null".to_string())
}

/// `count scope|tiny_add N`: only the loop, profiling off, for callgrind.
fn count(what: &str, n: usize) {
    profile::disable();
    let (a, b) = tensors();
    match what {
        "scope" => (0..n).for_each(|_| scope()),
        "tiny_add" => (0..n).for_each(|_| tiny_add(&a, &b)),
        other => panic!("count {other}: expected scope or tiny_add"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "count") {
        let what = args.get(at + 1).map_or("", String::as_str);
        let n = args.get(at + 2).and_then(|n| n.parse().ok()).unwrap_or(0);
        count(what, n);
        return;
    }
    let (a, b) = tensors();
    let mut best = [f64::INFINITY; 3];
    for _ in 0..ROUNDS {
        profile::disable();
        best[0] = best[0].min(median_ns(1_000_000, scope));
        best[1] = best[1].min(median_ns(100_000, || tiny_add(&a, &b)));
        profile::reset();
        profile::enable();
        best[2] = best[2].min(median_ns(100_000, || tiny_add(&a, &b)));
        profile::disable();
    }
    let load = load_average();
    for (case, ns) in ["scope_off", "tiny_add_off", "tiny_add_on"].iter().zip(best) {
        println!(r#"{{"bench":"profile_overhead","case":"{case}","ns_per_iter":{ns:.2},"load_average":{load}}}"#);
    }
    println!(
        r#"{{"bench":"profile_overhead","case":"share_of_tiny_add_off","percent":{:.3},"load_average":{load}}}"#,
        100.0 * best[0] / best[1]
    );
}
