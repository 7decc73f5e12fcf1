//! This CPU's measured f32 FMA peak: the ceiling every GEMM figure is a
//! percentage of.
//!
//! Each thread runs `CHAINS` independent chains of fused multiply-adds on
//! registers only (`acc = acc·a + b`, no memory traffic), so the time is set
//! by how many FMAs the core issues per cycle. `CHAINS` must cover the FMA
//! latency times the number of FMA pipes (Zen 4 and 5: latency 4, 2 pipes, so
//! 8 chains at least); 12 fits in AVX2's 16 ymm registers with room for the two
//! operands, and AVX-512 has 32 zmm for its 16. Threads start together behind a
//! barrier; the figure counts `2·lanes` flops per FMA over the slowest thread's time.

use super::cpu_time::thread_cpu_seconds;
use std::sync::Barrier;
use std::time::Instant;

/// One measured peak.
pub struct Peak {
    pub isa: &'static str,
    pub threads: usize,
    /// Over the wall time of the slowest thread.
    pub gflops: f64,
    /// Over each thread's own CPU time, summed over threads: what the cores
    /// deliver while they run this, whatever else competes for them.
    pub gflops_cpu: f64,
}

/// Iterations of the chain loop per thread: about 0.2 s at 100 GFLOP/s per core.
const ITERS: usize = 40_000_000;

#[cfg(target_arch = "x86_64")]
mod chains {
    use std::arch::x86_64::*;

    pub const CHAINS_512: usize = 16;
    pub const CHAINS_256: usize = 12;

    /// # Safety
    /// Needs AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(iters: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); CHAINS_512];
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let sum = acc.iter().fold(_mm512_setzero_ps(), |s, &x| _mm512_add_ps(s, x));
        _mm512_reduce_add_ps(sum)
    }

    /// # Safety
    /// Needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iters: usize) -> f32 {
        let mut acc = [_mm256_setzero_ps(); CHAINS_256];
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let sum = acc.iter().fold(_mm256_setzero_ps(), |s, &x| _mm256_add_ps(s, x));
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` is 8 writable f32s.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        lanes.iter().sum()
    }
}

/// (wall seconds of the slowest thread, CPU seconds of each thread) for
/// `threads` threads that each run `body` once, started together.
fn time_threads(threads: usize, body: fn() -> f32) -> (f64, Vec<f64>) {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let (start, cpu) = (Instant::now(), thread_cpu_seconds());
                    std::hint::black_box(body());
                    let cpu = cpu.zip(thread_cpu_seconds()).map_or(f64::NAN, |(a, b)| b - a);
                    (start.elapsed().as_secs_f64(), cpu)
                })
            })
            .collect();
        let times: Vec<(f64, f64)> = handles.into_iter().map(|h| h.join().unwrap_or((f64::INFINITY, f64::NAN))).collect();
        (times.iter().map(|t| t.0).fold(0.0, f64::max), times.iter().map(|t| t.1).collect())
    })
}

/// The best of `rounds` measurements for each ISA this CPU has and each thread count.
pub fn measure(thread_counts: &[usize], rounds: usize) -> Vec<Peak> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        type Body = (&'static str, bool, fn() -> f32, usize);
        let bodies: [Body; 2] = [
            (
                "avx512",
                is_x86_feature_detected!("avx512f"),
                || unsafe { chains::avx512(ITERS) },
                16 * chains::CHAINS_512,
            ),
            (
                "avx2",
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
                || unsafe { chains::avx2(ITERS) },
                8 * chains::CHAINS_256,
            ),
        ];
        for (isa, available, body, lanes_per_iter) in bodies {
            if !available {
                continue;
            }
            for &threads in thread_counts {
                let flops_per_thread = 2.0 * (ITERS * lanes_per_iter) as f64;
                let (mut gflops, mut gflops_cpu) = (0.0f64, 0.0f64);
                for _ in 0..rounds.max(1) {
                    let (wall, cpu) = time_threads(threads, body);
                    gflops = gflops.max(threads as f64 * flops_per_thread / wall / 1e9);
                    gflops_cpu = gflops_cpu.max(cpu.iter().map(|t| flops_per_thread / t / 1e9).sum());
                }
                out.push(Peak {
                    isa,
                    threads,
                    gflops,
                    gflops_cpu,
                });
            }
        }
    }
    out
}
