//! Matrix-multiplication benchmark: one JSON line per measurement on stdout.
//!
//! First this CPU's f32 FMA peak (`{"bench":"fma_peak","isa","threads","gflops","loadavg"}`,
//! see `support/fma_peak.rs`), then for every case and thread count (1 and 2):
//!
//! `{"bench":"matmul","impl","case","dtype","batch","m","n","k","ta","tb","threads","clock","median_ms","gflops","pct_peak","loadavg"}`
//!
//! - `impl: "tamer"` is `a.matmul(&b)` through the public API (output allocated
//!   each call, as in training); `"matrixmultiply"` is the matrixmultiply crate's
//!   `sgemm`/`dgemm` on the same data, the rows split into one block per thread
//!   (what tamer ran before its own GEMM); the two alternate case by case.
//!   `benches/numpy_matmul.py` prints the same lines for numpy.
//! - `ta`/`tb`: the operand is a transposed view (`x.t()` of a row-major tensor),
//!   as in a linear layer's products: forward `x·Wᵀ`, input gradient `dY·W`,
//!   weight gradient `xᵀ·dY`.
//! - `pct_peak`: GFLOP/s as a percentage of the AVX-512 (else AVX2) FMA peak
//!   measured at the start for the same thread count and clock.
//! - `clock`: `wall` (elapsed time), or `thread_cpu` for `--kernels`, which
//!   times the calling thread's CPU time so that a kernel measured while other
//!   jobs share the machine is not charged for the time it waited for a core,
//!   or `process_cpu` with `--cpu-clock`: the CPU time of all the process's
//!   threads divided by the thread count, what the run would take on that
//!   many cores of its own (a thread that sleeps while it waits for another
//!   is not charged, so it flatters an uneven split; a spinning one is).
//!
//! Cases (`case` names them): squares 256..2048; each linear layer of the four
//! training benchmark models (gpt-small, vit-cifar, gpt-tiny, vit-tiny) in its
//! forward, input-gradient and weight-gradient products; and their attention's
//! batched products (scores `q·kᵀ`, values `p·v`, and the backward's `pᵀ·dO`).
//!
//! Each measurement warms up, then takes the median of enough runs for about
//! `--secs` seconds (default 0.3; 5 to 50 runs). `gflops` counts `2·batch·m·n·k`.
//!
//! Options: `--size N` (only the N² square), `--model NAME` (only cases whose name
//! starts with NAME, e.g. `gpt-small`), `--batched` (only batched cases),
//! `--threads T`, `--dtype f64`, `--impl tamer|matrixmultiply`, `--peak` (only
//! the FMA peak), `--secs S`, `--kernels` (tamer's GEMM micro-kernel of every
//! ISA this CPU has, called directly on one thread, instead of the impls),
//! `--blocking KC,MC,NC` (with `--kernels`: block sizes instead of the tuned ones),
//! `--cpu-clock` (time the impls on the process CPU clock, see `clock`).
//! `benches/compare_matmul.sh` runs this and numpy in alternating rounds.

use rayon::prelude::*;
use std::time::{Duration, Instant};
use tamer::backend::cpu::gemm::{self, MatRef};
use tamer::backend::cpu::simd::Simd;
use tamer::{DType, Tensor};

#[path = "support/cpu_time.rs"]
mod cpu_time;
#[path = "support/fma_peak.rs"]
mod fma_peak;

#[path = "support/matmul_cases.rs"]
mod matmul_cases;
use matmul_cases::{cases, Case};

/// The 1-minute load average (other processes competing for the cores), or -1 where unknown.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(-1.0)
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

/// How a run is timed.
#[derive(Clone, Copy, PartialEq)]
enum Clock {
    /// Elapsed time: what a user waits (threads included).
    Wall,
    /// The calling thread's CPU time: a single-threaded kernel's own time, not
    /// counting the time other jobs held its core.
    ThreadCpu,
    /// The process's CPU time over its `threads` threads: a threaded run's
    /// time on cores of its own.
    ProcessCpu { threads: usize },
}

impl Clock {
    fn now(self, origin: Instant) -> f64 {
        match self {
            Clock::Wall => origin.elapsed().as_secs_f64(),
            Clock::ThreadCpu => cpu_time::thread_cpu_seconds().unwrap_or_else(|| origin.elapsed().as_secs_f64()),
            Clock::ProcessCpu { threads } => cpu_time::process_cpu_seconds().map_or_else(|| origin.elapsed().as_secs_f64(), |s| s / threads as f64),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Clock::Wall => "wall",
            Clock::ThreadCpu => "thread_cpu",
            Clock::ProcessCpu { .. } => "process_cpu",
        }
    }
}

/// Median seconds of `f` on `clock` after a warm-up (pages the operands in,
/// wakes the workers).
fn time(secs: f64, clock: Clock, mut f: impl FnMut() -> tamer::Result<()>) -> tamer::Result<f64> {
    let start = Instant::now();
    let mut warm = 0;
    while warm < 3 || start.elapsed() < Duration::from_secs_f64(secs / 5.0) {
        f()?;
        warm += 1;
    }
    let per_run = start.elapsed().as_secs_f64() / warm as f64;
    let runs = ((secs / per_run) as usize).clamp(5, 50);
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = clock.now(start);
        f()?;
        times.push(clock.now(start) - t0);
    }
    Ok(median(times))
}

/// A case's operands as stored: row-major, `[k, m]` for a transposed A and
/// `[n, k]` for a transposed B, one matrix per batch entry.
struct Operands {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Operands {
    fn new(c: &Case) -> Operands {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        Operands {
            a: (0..c.batch * c.m * c.k).map(|_| next()).collect(),
            b: (0..c.batch * c.k * c.n).map(|_| next()).collect(),
        }
    }

    /// (row stride, column stride) of A and of B as the case reads them.
    fn strides(c: &Case) -> ((usize, usize), (usize, usize)) {
        let sa = if c.ta { (1, c.m) } else { (c.k, 1) };
        let sb = if c.tb { (1, c.k) } else { (c.n, 1) };
        (sa, sb)
    }

    /// The operands as tensors of `dtype`, transposed views where the case says so.
    fn tensors(&self, c: &Case, dtype: DType) -> tamer::Result<(Tensor, Tensor)> {
        let batch = |dims: [usize; 2]| -> Vec<usize> {
            if c.batch == 1 {
                dims.to_vec()
            } else {
                vec![c.batch, dims[0], dims[1]]
            }
        };
        let a = Tensor::from_vec(self.a.clone(), batch(if c.ta { [c.k, c.m] } else { [c.m, c.k] }))?.to_dtype(dtype)?;
        let b = Tensor::from_vec(self.b.clone(), batch(if c.tb { [c.n, c.k] } else { [c.k, c.n] }))?.to_dtype(dtype)?;
        let a = if c.ta { a.transpose(-1, -2)? } else { a };
        let b = if c.tb { b.transpose(-1, -2)? } else { b };
        Ok((a, b))
    }
}

/// matrixmultiply's sgemm on `c`: batch entries as tasks, or a single product
/// split into one block of rows per thread.
fn matrixmultiply_sgemm(c: &Case, ops: &Operands, out: &mut [f32]) {
    let ((rsa, csa), (rsb, csb)) = Operands::strides(c);
    let threads = rayon::current_num_threads();
    let (m, k, n) = (c.m, c.k, c.n);
    let run = |entry: usize, rows: std::ops::Range<usize>, out: &mut [f32]| {
        let a = &ops.a[entry * m * k..][..m * k];
        let b = &ops.b[entry * k * n..][..k * n];
        // SAFETY: the strides address only elements of this entry's `a` and
        // `b`; `out` is this block's rows.len() rows of n elements.
        unsafe {
            matrixmultiply::sgemm(
                rows.len(),
                k,
                n,
                1.0,
                a.as_ptr().add(rows.start * rsa),
                rsa as isize,
                csa as isize,
                b.as_ptr(),
                rsb as isize,
                csb as isize,
                0.0,
                out.as_mut_ptr(),
                n as isize,
                1,
            )
        }
    };
    if c.batch > 1 {
        out.par_chunks_mut(m * n).enumerate().for_each(|(e, o)| run(e, 0..m, o));
    } else {
        let rows = m.div_ceil(threads).next_multiple_of(16);
        out.par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(i, o)| run(0, i * rows..(i * rows + o.len() / n), o));
    }
}

/// tamer's GEMM with one ISA's kernel and `blocking`, called directly on this thread.
fn kernel_sgemm(kernel: &gemm::Kernel, blocking: gemm::Blocking, c: &Case, ops: &Operands, out: &mut [f32]) {
    let ((rsa, csa), (rsb, csb)) = Operands::strides(c);
    let (m, k, n) = (c.m, c.k, c.n);
    for e in 0..c.batch {
        let a = MatRef {
            ptr: ops.a[e * m * k..].as_ptr(),
            rs: rsa,
            cs: csa,
        };
        let b = MatRef {
            ptr: ops.b[e * k * n..].as_ptr(),
            rs: rsb,
            cs: csb,
        };
        // SAFETY: the kernel's ISA comes from Simd::available; A, B and C stay
        // inside this entry's data.
        unsafe { gemm::gemm_with(kernel, blocking, m, k, n, a, b, out[e * m * n..].as_mut_ptr(), n, gemm::Base::Zero) };
    }
}

fn report(imp: &str, c: &Case, dtype: DType, threads: usize, clock: Clock, secs: f64, peak: Option<f64>) {
    let gflops = c.flops() / secs / 1e9;
    let pct = peak.map_or(-1.0, |p| 100.0 * gflops / p);
    println!(
        "{{\"bench\":\"matmul\",\"impl\":\"{imp}\",\"case\":\"{}\",\"dtype\":\"{dtype}\",\"batch\":{},\"m\":{},\"n\":{},\"k\":{},\"ta\":{},\"tb\":{},\"threads\":{threads},\"clock\":\"{}\",\"median_ms\":{:.4},\"gflops\":{:.2},\"pct_peak\":{:.1},\"loadavg\":{:.2}}}",
        c.name,
        c.batch,
        c.m,
        c.n,
        c.k,
        c.ta,
        c.tb,
        clock.name(),
        secs * 1e3,
        gflops,
        pct,
        load_average()
    );
}

fn pool(threads: usize) -> tamer::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| tamer::Error::value("bench", e.to_string()))
}

fn main() -> tamer::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let size: Option<usize> = arg_value(&args, "--size").and_then(|s| s.parse().ok());
    let model = arg_value(&args, "--model");
    let secs: f64 = arg_value(&args, "--secs").and_then(|s| s.parse().ok()).unwrap_or(0.3);
    let thread_counts: Vec<usize> = match arg_value(&args, "--threads").and_then(|s| s.parse().ok()) {
        Some(t) => vec![t],
        None => vec![1, 2],
    };
    let dtype = match arg_value(&args, "--dtype").as_deref() {
        Some("f64") => DType::F64,
        _ => DType::F32,
    };
    let only_impl = arg_value(&args, "--impl");
    let blocking_arg = arg_value(&args, "--blocking").map(|s| {
        let v: Vec<usize> = s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        match v[..] {
            [kc, mc, nc] => gemm::Blocking { kc, mc, nc },
            _ => panic!("--blocking takes kc,mc,nc (three sizes), got {s:?}"),
        }
    });

    let peaks = fma_peak::measure(&thread_counts, 3);
    for p in &peaks {
        println!(
            "{{\"bench\":\"fma_peak\",\"isa\":\"{}\",\"threads\":{},\"gflops\":{:.1},\"gflops_cpu\":{:.1},\"loadavg\":{:.2}}}",
            p.isa,
            p.threads,
            p.gflops,
            p.gflops_cpu,
            load_average()
        );
    }
    if flag("--peak") {
        return Ok(());
    }
    // The widest ISA's peak (listed first): what the GEMM can reach at best,
    // on the clock the GEMM is timed with.
    let peak_for = |threads: usize, clock: Clock| {
        let p = peaks.iter().find(|p| p.threads == threads)?;
        Some(if clock == Clock::Wall { p.gflops } else { p.gflops_cpu })
    };

    let selected = cases().into_iter().filter(|c| {
        size.is_none_or(|s| c.batch == 1 && c.m == s && c.n == s && c.k == s)
            && model.as_deref().is_none_or(|name| c.name.starts_with(name))
            && (!flag("--batched") || c.batch > 1)
    });
    for c in selected {
        let ops = Operands::new(&c);
        if flag("--kernels") {
            let mut out = vec![0.0f32; c.batch * c.m * c.n];
            for simd in Simd::available() {
                let kernel = gemm::kernel(simd.isa());
                let blocking = blocking_arg.unwrap_or(kernel.blocking);
                let secs = time(secs, Clock::ThreadCpu, || {
                    kernel_sgemm(kernel, blocking, &c, &ops, &mut out);
                    Ok(())
                })?;
                let name = format!("gemm-{}", simd.isa().name());
                report(&name, &c, DType::F32, 1, Clock::ThreadCpu, secs, peak_for(1, Clock::ThreadCpu));
            }
            continue;
        }
        let (a, b) = ops.tensors(&c, dtype)?;
        for &threads in &thread_counts {
            let pool = pool(threads)?;
            let clock = if flag("--cpu-clock") { Clock::ProcessCpu { threads } } else { Clock::Wall };
            if only_impl.as_deref().is_none_or(|i| i == "tamer") {
                let secs = pool.install(|| time(secs, clock, || a.matmul(&b).map(|y| drop(std::hint::black_box(y)))))?;
                report("tamer", &c, dtype, threads, clock, secs, peak_for(threads, clock));
            }
            if dtype == DType::F32 && only_impl.as_deref().is_none_or(|i| i == "matrixmultiply") {
                let mut out = vec![0.0f32; c.batch * c.m * c.n];
                let secs = pool.install(|| {
                    time(secs, clock, || {
                        matrixmultiply_sgemm(&c, &ops, &mut out);
                        Ok(())
                    })
                })?;
                report("matrixmultiply", &c, dtype, threads, clock, secs, peak_for(threads, clock));
            }
        }
    }
    Ok(())
}
