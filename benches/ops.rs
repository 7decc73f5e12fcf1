//! Elementwise and row-wise op throughput: one JSON line per case.
//!
//! `cargo bench --bench ops`. Each op runs on 2²² f32 elements (softmax and
//! layer norm as 4096 rows of 1024) in three ways:
//! - `impl: "kernel"`: each ISA's kernel (`scalar` is the reference) called
//!   directly into a preallocated buffer on one thread;
//! - `impl: "tensor"`: the public Tensor API (`x.exp()`, `x.gelu()`, `a.add(&b)`,
//!   `x.softmax(-1)`, `x.layer_norm(..)`), which also allocates its output, inside
//!   a rayon pool of 1 and 2 threads;
//! - `impl: "rows"`: softmax / layer norm rows through the dispatched row
//!   functions into a preallocated buffer, split over the pool's threads.
//!
//! GB/s (from the median) counts bytes read + written once (`8n` for unary ops
//! and rows, `12n` for add). Median and minimum of 15 runs after 2 warm-ups.

use rayon::prelude::*;
use std::time::Instant;
use tamer::backend::cpu::simd::{self, Simd};
use tamer::{DType, Tensor};

const N: usize = 1 << 22;
const ROW: usize = 1024;
const WARMUP: usize = 2;
const RUNS: usize = 15;

/// `(median, min)` wall time of `f` in milliseconds, after warm-up runs. The
/// minimum is printed too: on a shared machine it is the steadier of the two.
fn median_ms(mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..WARMUP {
        f();
    }
    let mut t: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[RUNS / 2], t[0])
}

fn report(op: &str, imp: &str, isa: &str, threads: usize, bytes: usize, (ms, min): (f64, f64)) {
    let gbs = bytes as f64 / (ms * 1e-3) / 1e9;
    println!(
        r#"{{"bench":"ops","op":"{op}","dtype":"f32","n":{N},"impl":"{imp}","isa":"{isa}","threads":{threads},"median_ms":{ms:.3},"min_ms":{min:.3},"gb_per_s":{gbs:.2}}}"#
    );
}

fn pool(threads: usize) -> rayon::ThreadPool {
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(p) => p,
        Err(e) => panic!("cannot build a rayon pool of {threads} threads: {e}"),
    }
}

fn tensor(data: &[f32]) -> Tensor {
    Tensor::from_slice(data, [N]).expect("bench input")
}

type Unary = fn(Simd, &[f32], &mut [f32]);
type TensorOp = fn(&Tensor) -> tamer::Result<Tensor>;

fn main() {
    let mut rng = tamer::rng(0);
    let x: Vec<f32> = Tensor::randn([N], DType::F32, &mut rng).and_then(|t| t.to_vec::<f32>()).expect("bench input");
    let y: Vec<f32> = Tensor::randn([N], DType::F32, &mut rng).and_then(|t| t.to_vec::<f32>()).expect("bench input");
    let gamma: Vec<f32> = (0..ROW).map(|i| 1.0 + i as f32 * 1e-4).collect();
    let beta: Vec<f32> = (0..ROW).map(|i| i as f32 * 1e-4).collect();
    let (tx, ty) = (tensor(&x), tensor(&y));
    let mut out = vec![0.0f32; N];
    let pools = [(1, pool(1)), (2, pool(2))];
    // The ISA the tensor ops run with (TAMER_SIMD may choose it).
    let best = match simd::selected("ops bench") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };

    let unary: [(&str, Unary, TensorOp); 3] = [
        ("exp", Simd::exp_f32, Tensor::exp),
        ("gelu", Simd::gelu_erf_f32, Tensor::gelu),
        ("gelu_tanh", Simd::gelu_tanh_f32, Tensor::gelu_tanh),
    ];
    for (op, kernel, tensor_op) in unary {
        for s in Simd::available() {
            report(op, "kernel", s.isa().name(), 1, 8 * N, median_ms(|| kernel(s, &x, &mut out)));
        }
        for (threads, p) in &pools {
            let ms = median_ms(|| {
                p.install(|| tensor_op(&tx)).expect("tensor op");
            });
            report(op, "tensor", best.isa().name(), *threads, 8 * N, ms);
        }
    }

    for s in Simd::available() {
        report("add", "kernel", s.isa().name(), 1, 12 * N, median_ms(|| s.add_f32(&x, &y, &mut out)));
    }
    for (threads, p) in &pools {
        let ms = median_ms(|| {
            p.install(|| tx.add(&ty)).expect("tensor add");
        });
        report("add", "tensor", best.isa().name(), *threads, 12 * N, ms);
    }

    // Rows of 1024: x, out: [4096, 1024]
    for s in Simd::available() {
        let ms = median_ms(|| x.chunks(ROW).zip(out.chunks_mut(ROW)).for_each(|(r, o)| s.softmax_row_f32(r, o)));
        report("softmax", "kernel", s.isa().name(), 1, 8 * N, ms);
    }
    for (threads, p) in &pools {
        let ms = median_ms(|| p.install(|| x.par_chunks(ROW).zip(out.par_chunks_mut(ROW)).for_each(|(r, o)| simd::softmax_row_f32(r, o))));
        report("softmax", "rows", best.isa().name(), *threads, 8 * N, ms);
    }
    let tx_rows = tx.reshape([N / ROW, ROW]).expect("bench reshape");
    for (threads, p) in &pools {
        let ms = median_ms(|| {
            p.install(|| tx_rows.softmax(-1)).expect("tensor softmax");
        });
        report("softmax", "tensor", best.isa().name(), *threads, 8 * N, ms);
    }

    let ln = |s: Simd, r: &[f32], o: &mut [f32]| {
        s.layer_norm_row_f32(r, Some(&gamma), Some(&beta), 1e-5, o);
    };
    for s in Simd::available() {
        let ms = median_ms(|| x.chunks(ROW).zip(out.chunks_mut(ROW)).for_each(|(r, o)| ln(s, r, o)));
        report("layer_norm", "kernel", s.isa().name(), 1, 8 * N, ms);
    }
    for (threads, p) in &pools {
        let ms = median_ms(|| p.install(|| x.par_chunks(ROW).zip(out.par_chunks_mut(ROW)).for_each(|(r, o)| ln(best, r, o))));
        report("layer_norm", "rows", best.isa().name(), *threads, 8 * N, ms);
    }
    let t_gamma = Tensor::from_slice(&gamma, [ROW]).expect("bench gamma");
    let t_beta = Tensor::from_slice(&beta, [ROW]).expect("bench beta");
    for (threads, p) in &pools {
        let ms = median_ms(|| {
            p.install(|| tx_rows.layer_norm(Some(&t_gamma), Some(&t_beta), 1e-5))
                .expect("tensor layer_norm");
        });
        report("layer_norm", "tensor", best.isa().name(), *threads, 8 * N, ms);
    }
}
