//! Matrix-multiplication benchmark: one JSON line per case on stdout,
//! `{"bench":"matmul","impl":"tamer","dtype":"f32","batch":B,"m":M,"n":N,"k":K,"threads":T,"median_ms":..,"gflops":..}`.
//!
//! Cases: square 256..2048 and two attention-shaped batched products
//! (64 × [128, 32] @ [32, 128], scores; 64 × [128, 128] @ [128, 32], values),
//! each on 1 and 2 rayon threads (a `ThreadPool` per count, entered with `install`).
//! Each case is warmed up, then timed over enough runs for ~0.5 s (5 to 50), and the
//! median reported; `gflops` counts `2·batch·m·n·k` flops.
//!
//! `cargo bench --bench matmul [-- --size 1024] [--batched] [--threads 2] [--dtype f64]` narrows
//! the cases (`--size N` keeps only the N² square case, `--batched` the attention-shaped ones). benches/compare_matmul.sh runs this next
//! to benches/numpy_matmul.py.

use std::time::{Duration, Instant};
use tamer::{DType, Tensor};

#[path = "support/fma_peak.rs"]
mod fma_peak;

/// The 1-minute load average (other processes competing for the cores), or -1 where unknown.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(-1.0)
}

#[derive(Clone, Copy)]
struct Case {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
}

fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = [256, 512, 1024, 2048].iter().map(|&s| Case { batch: 1, m: s, n: s, k: s }).collect();
    v.push(Case {
        batch: 64,
        m: 128,
        n: 128,
        k: 32,
    });
    v.push(Case {
        batch: 64,
        m: 128,
        n: 32,
        k: 128,
    });
    v
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn operands(c: Case, dtype: DType) -> tamer::Result<(Tensor, Tensor)> {
    let mut rng = tamer::rng(0);
    let (da, db) = if c.batch == 1 {
        (vec![c.m, c.k], vec![c.k, c.n])
    } else {
        (vec![c.batch, c.m, c.k], vec![c.batch, c.k, c.n])
    };
    Ok((Tensor::randn(da, dtype, &mut rng)?, Tensor::randn(db, dtype, &mut rng)?))
}

/// Median wall time of `a.matmul(&b)` in seconds, on the pool's threads.
fn time_case(pool: &rayon::ThreadPool, a: &Tensor, b: &Tensor) -> tamer::Result<f64> {
    pool.install(|| -> tamer::Result<f64> {
        // Warm-up: page in the operands, grow the allocator's heap, wake the workers.
        let start = Instant::now();
        let mut warm = 0;
        while warm < 3 || start.elapsed() < Duration::from_millis(100) {
            std::hint::black_box(a.matmul(b)?);
            warm += 1;
        }
        let per_run = start.elapsed().as_secs_f64() / warm as f64;
        let runs = ((0.5 / per_run) as usize).clamp(5, 50);
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t0 = Instant::now();
            std::hint::black_box(a.matmul(b)?);
            times.push(t0.elapsed().as_secs_f64());
        }
        Ok(median(times))
    })
}

fn main() -> tamer::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let size: Option<usize> = arg_value(&args, "--size").and_then(|s| s.parse().ok());
    let thread_counts: Vec<usize> = match arg_value(&args, "--threads").and_then(|s| s.parse().ok()) {
        Some(t) => vec![t],
        None => vec![1, 2],
    };
    let dtype = match arg_value(&args, "--dtype").as_deref() {
        Some("f64") => DType::F64,
        _ => DType::F32,
    };
    let batched_only = args.iter().any(|a| a == "--batched");
    for p in fma_peak::measure(&thread_counts, 3) {
        println!(
            "{{\"bench\":\"fma_peak\",\"isa\":\"{}\",\"threads\":{},\"gflops\":{:.1},\"loadavg\":{:.2}}}",
            p.isa,
            p.threads,
            p.gflops,
            load_average()
        );
    }
    if args.iter().any(|a| a == "--peak") {
        return Ok(());
    }
    for c in cases() {
        if size.is_some_and(|s| !(c.batch == 1 && c.m == s)) || (batched_only && c.batch == 1) {
            continue;
        }
        let (a, b) = operands(c, dtype)?;
        for &threads in &thread_counts {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| tamer::Error::value("bench", e.to_string()))?;
            let secs = time_case(&pool, &a, &b)?;
            let gflops = 2.0 * (c.batch * c.m * c.n * c.k) as f64 / secs / 1e9;
            println!(
                "{{\"bench\":\"matmul\",\"impl\":\"tamer\",\"dtype\":\"{dtype}\",\"batch\":{},\"m\":{},\"n\":{},\"k\":{},\"threads\":{threads},\"median_ms\":{:.4},\"gflops\":{:.2}}}",
                c.batch,
                c.m,
                c.n,
                c.k,
                secs * 1e3,
                gflops
            );
        }
    }
    Ok(())
}
