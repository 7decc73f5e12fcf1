//! Elementwise and row-wise op throughput: one JSON line per case.
//!
//! `cargo bench --bench ops`. Each op runs on 2²² f32 elements (softmax and
//! layer norm as 4096 rows of 1024) in three ways:
//! - `impl: "kernel"`: each ISA's kernel (`scalar` is the reference) called
//!   directly into a preallocated buffer on one thread (`impl:
//!   "kernel_backward"`: a unary function's backward kernel, which reads `x`
//!   or `y`, and `dy`; `select`: `where`'s kernel with a single-value operand,
//!   as `masked_fill` runs it);
//! - `impl: "tensor"`: the public Tensor API (`x.exp()`, `x.gelu()`, `a.add(&b)`,
//!   `x.softmax(-1)`, `x.layer_norm(..)`), which also allocates its output, inside
//!   a rayon pool of 1 and 2 threads;
//! - `impl: "rows"`: softmax / layer norm rows through the dispatched row
//!   functions into a preallocated buffer, split over the pool's threads.
//!
//! - `impl: "backward"`: a unary function's fused backward kernel
//!   (`dx = dy·f'(x, y)`, through the CPU backend's `UnaryKernels`) inside a
//!   rayon pool of 1 and 2 threads;
//! - the shapes of the training step's elementwise work at the tensor level:
//!   `bias_add` (`[4096, 1024] + [1024]`), `sub_column` (`[16384, 256] −
//!   [16384, 1]`, the softmax backward's `g − Σ g·y` of composite attention),
//!   `scale` (`x·a`), `masked_fill_causal` (`[64, 256, 256]` scores with a
//!   causal `[256, 256]` mask) and `where` (three full operands);
//! - the small training steps' row shapes at the tensor level:
//!   `layer_norm_6400x64` (vit-tiny), `layer_norm_2048x128` and
//!   `gelu_2048x512` (gpt-tiny).
//!
//! GB/s (from the median) counts bytes read + written once (`8n` for unary ops
//! and rows, `12n` for add, `16n` for a unary backward, which reads x, y and
//! dy; `12n` for masked_fill, whose mask is read per element through its
//! broadcast; `16n` for where); `ns_per_elem` is the median over the output's
//! elements. Median and minimum of 15 runs after 2 warm-ups. The first line
//! gives the load average, for figures taken on a shared machine.

use rayon::prelude::*;
use std::time::Instant;
use tamer::backend::contract::unary::{Exp, Gelu, GeluTanh, Sigmoid, Silu, Tanh, UnaryFn, UnaryKernels};
use tamer::backend::cpu::simd::{self, Operand, Simd, VectorUnary};
use tamer::backend::cpu::CpuStorage;
use tamer::types::Layout;
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

fn report(op: &str, imp: &str, isa: &str, threads: usize, bytes: usize, ms: (f64, f64)) {
    report_sized(op, imp, isa, threads, N, bytes, ms);
}

/// [`report`] for a case of `n` elements.
fn report_sized(op: &str, imp: &str, isa: &str, threads: usize, n: usize, bytes: usize, (ms, min): (f64, f64)) {
    let gbs = bytes as f64 / (ms * 1e-3) / 1e9;
    let ns = ms * 1e6 / n as f64;
    println!(
        r#"{{"bench":"ops","op":"{op}","dtype":"f32","n":{n},"impl":"{imp}","isa":"{isa}","threads":{threads},"median_ms":{ms:.3},"min_ms":{min:.3},"gb_per_s":{gbs:.2},"ns_per_elem":{ns:.3}}}"#
    );
}

/// The 1-, 5- and 15-minute load averages (Linux), printed first.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
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

type TensorOp = fn(&Tensor) -> tamer::Result<Tensor>;

/// `dx = dy·f'(x, y)` through the CPU backend's fused backward kernel, timed
/// under each pool.
fn unary_backward<U: UnaryFn>(f: U, x: &[f32], dy: &[f32], pools: &[(usize, rayon::ThreadPool)], isa: &str) {
    let layout = Layout::contiguous([N]);
    let xs = CpuStorage::F32(x.to_vec());
    let ys = xs.unary(&layout, f).expect("bench forward");
    let gs = CpuStorage::F32(dy.to_vec());
    for (threads, p) in pools {
        let ms = median_ms(|| {
            p.install(|| xs.unary_backward(&layout, &ys, &layout, &gs, &layout, f)).expect("bench backward");
        });
        report(U::NAME, "backward", isa, *threads, 16 * N, ms);
    }
}

/// `op` on tensors, timed under each pool.
fn tensor_case(op: &str, bytes: usize, pools: &[(usize, rayon::ThreadPool)], isa: &str, f: impl Fn() -> tamer::Result<Tensor> + Sync) {
    for (threads, p) in pools {
        let ms = median_ms(|| {
            p.install(&f).expect("bench tensor op");
        });
        report(op, "tensor", isa, *threads, bytes, ms);
    }
}

fn main() {
    println!(r#"{{"bench":"ops","load_average":"{}"}}"#, load_average());
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

    // Every function with a vector kernel, forward and backward, per ISA.
    let vector_functions = [
        ("exp", VectorUnary::Exp),
        ("gelu", VectorUnary::Gelu),
        ("gelu_tanh", VectorUnary::GeluTanh),
        ("tanh", VectorUnary::Tanh),
        ("sigmoid", VectorUnary::Sigmoid),
        ("silu", VectorUnary::Silu),
    ];
    for (op, f) in vector_functions {
        for s in Simd::available() {
            report(op, "kernel", s.isa().name(), 1, 8 * N, median_ms(|| s.unary_f32(f, &x, &mut out)));
            report(
                op,
                "kernel_backward",
                s.isa().name(),
                1,
                12 * N,
                median_ms(|| s.unary_backward_f32(f, &x, &y, &mut out)),
            );
        }
    }
    for s in Simd::available() {
        let ms = median_ms(|| s.select_f32(Operand::Slice(&y), Operand::Value(f32::NEG_INFINITY), Operand::Slice(&x), &mut out));
        report("select", "kernel", s.isa().name(), 1, 12 * N, ms);
    }

    let tensor_unary: [(&str, TensorOp); 6] = [
        ("exp", Tensor::exp),
        ("gelu", Tensor::gelu),
        ("gelu_tanh", Tensor::gelu_tanh),
        ("tanh", Tensor::tanh),
        ("sigmoid", Tensor::sigmoid),
        ("silu", Tensor::silu),
    ];
    for (op, tensor_op) in tensor_unary {
        tensor_case(op, 8 * N, &pools, best.isa().name(), || tensor_op(&tx));
    }
    tensor_case("scale", 8 * N, &pools, best.isa().name(), || tx.scale(0.125));

    let isa = best.isa().name();
    unary_backward(Gelu, &x, &y, &pools, isa);
    unary_backward(GeluTanh, &x, &y, &pools, isa);
    unary_backward(Exp, &x, &y, &pools, isa);
    unary_backward(Tanh, &x, &y, &pools, isa);
    unary_backward(Sigmoid, &x, &y, &pools, isa);
    unary_backward(Silu, &x, &y, &pools, isa);

    // The training step's broadcasts and masking (shapes in the module docs).
    let bias = Tensor::from_slice(&y[..1024], [1024]).expect("bench bias");
    let x_linear = tx.reshape([N / 1024, 1024]).expect("bench reshape");
    tensor_case("bias_add", 8 * N, &pools, isa, || x_linear.add(&bias));
    let column = Tensor::from_slice(&y[..N / 256], [N / 256, 1]).expect("bench column");
    let x_rows = tx.reshape([N / 256, 256]).expect("bench reshape");
    tensor_case("sub_column", 8 * N, &pools, isa, || x_rows.sub(&column));
    let t = 256;
    let causal: Vec<f32> = (0..t * t).map(|k| if k % t > k / t { 1.0 } else { 0.0 }).collect();
    let mask = Tensor::from_vec(causal, [t, t]).expect("bench mask");
    let scores = tx.reshape([N / (t * t), t, t]).expect("bench reshape");
    tensor_case("masked_fill_causal", 12 * N, &pools, isa, || scores.masked_fill(&mask, f64::NEG_INFINITY));
    let cond = tx.gt(&ty).expect("bench condition");
    tensor_case("where", 16 * N, &pools, isa, || cond.where_cond(&tx, &ty));

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

    // The small training steps' shapes: vit-tiny's layer norm rows (B·T = 6400
    // rows of 64), gpt-tiny's (2048 rows of 128) and its GELU ([2048, 512]).
    for (op, rows, c) in [("layer_norm_6400x64", 6400, 64), ("layer_norm_2048x128", 2048, 128)] {
        let xs = Tensor::from_slice(&x[..rows * c], [rows, c]).expect("bench rows");
        let g = Tensor::from_slice(&gamma[..c], [c]).expect("bench gamma");
        let b = Tensor::from_slice(&beta[..c], [c]).expect("bench beta");
        for (threads, p) in &pools {
            let ms = median_ms(|| {
                p.install(|| xs.layer_norm(Some(&g), Some(&b), 1e-5)).expect("tensor layer_norm");
            });
            report_sized(op, "tensor", isa, *threads, rows * c, 8 * rows * c, ms);
        }
    }
    let small = 2048 * 512;
    let xs = Tensor::from_slice(&x[..small], [2048, 512]).expect("bench gelu input");
    for (threads, p) in &pools {
        let ms = median_ms(|| {
            p.install(|| xs.gelu()).expect("tensor gelu");
        });
        report_sized("gelu_2048x512", "tensor", isa, *threads, small, 8 * small, ms);
    }
}
