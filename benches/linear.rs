//! The fused linear op against the composition it replaced, on the training
//! step's Linear shapes: one JSON line per (shape, implementation, pass).
//!
//! `cargo bench --bench linear [-- --threads 2 --rounds 3]`.
//!
//! - `impl: "linear"`: `nn::functional::linear(x, w, Some(b))`, the bias
//!   added as the GEMM stores the product, one backward node;
//! - `impl: "matmul+add"`: `x.matmul(&w.t()).add(&b)`, what `Linear` ran before;
//! - `pass: "forward"` times the forward alone (no variable, so no graph);
//!   `pass: "step"` the forward, `sum_all` and the backward with x, W and b
//!   variables (dX, dW and db);
//! - `pass: "gelu"` (fc1 shapes only): the GELU forward on the layer's
//!   output, and `pass: "copy"` a plain copy of that output: what a GELU
//!   epilogue fused into the product could at best save is one pass over
//!   this tensor, which these two figures bound.
//!
//! The two implementations alternate within each round (interleaved, so a
//! change in the machine's load hits both); each figure is the best of the
//! rounds' medians of 7 runs after 2 warm-ups. The first line gives the load
//! average: on a shared machine a figure taken under load is slower than the
//! code is.

use std::time::Instant;
use tamer::nn::functional::linear;
use tamer::{DType, Tensor};

const WARMUP: usize = 2;
const RUNS: usize = 7;

/// Median wall time of `f` in milliseconds, after warm-up runs.
fn median_ms(mut f: impl FnMut()) -> f64 {
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
    t[RUNS / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// `--name value` from the command line, or `default`.
fn flag(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn composed(x: &Tensor, w: &Tensor, b: &Tensor) -> tamer::Result<Tensor> {
    x.matmul(&w.t()?)?.add(b)
}

fn step(y: tamer::Result<Tensor>) {
    let grads = y.and_then(|y| y.sum_all()).and_then(|l| l.backward()).expect("bench backward");
    drop(grads);
}

fn main() {
    let threads = flag("--threads", 2);
    let rounds = flag("--rounds", 3);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool");
    println!(r#"{{"bench":"linear","load_average":"{}"}}"#, load_average());
    // (name, rows, in, out): gpt-small (B·T = 16·256) and vit-cifar (64·65 tokens).
    let shapes: [(&str, usize, usize, usize); 6] = [
        ("gpt-small qkv", 4096, 384, 1152),
        ("gpt-small proj", 4096, 384, 384),
        ("gpt-small fc1", 4096, 384, 1536),
        ("gpt-small fc2", 4096, 1536, 384),
        ("vit-cifar fc1", 4160, 192, 384),
        ("vit-cifar fc2", 4160, 384, 192),
    ];
    let mut rng = tamer::rng(0);
    for (name, rows, fin, fout) in shapes {
        let x = Tensor::randn([rows, fin], DType::F32, &mut rng).expect("x");
        let w = Tensor::randn([fout, fin], DType::F32, &mut rng).expect("w");
        let b = Tensor::randn([fout], DType::F32, &mut rng).expect("b");
        let (xv, wv, bv) = (x.variable(), w.variable(), b.variable());
        let flops = 2.0 * (rows * fin * fout) as f64;
        let mut best = [f64::INFINITY; 4];
        let mut gelu = [f64::INFINITY; 2];
        let h = linear(&x, &w, Some(&b)).expect("fc output");
        for _ in 0..rounds {
            pool.install(|| {
                best[0] = best[0].min(median_ms(|| drop(linear(&x, &w, Some(&b)).expect("linear"))));
                best[1] = best[1].min(median_ms(|| drop(composed(&x, &w, &b).expect("matmul+add"))));
                best[2] = best[2].min(median_ms(|| step(linear(&xv, &wv, Some(&bv)))));
                best[3] = best[3].min(median_ms(|| step(composed(&xv, &wv, &bv))));
                if name.ends_with("fc1") {
                    gelu[0] = gelu[0].min(median_ms(|| drop(h.gelu().expect("gelu"))));
                    gelu[1] = gelu[1].min(median_ms(|| drop(h.affine(1.0, 0.0).expect("copy"))));
                }
            });
        }
        let print = |imp: &str, pass: &str, ms: f64, flops: f64| {
            println!(
                r#"{{"bench":"linear","shape":"{name}","rows":{rows},"in":{fin},"out":{fout},"impl":"{imp}","pass":"{pass}","threads":{threads},"best_median_ms":{ms:.3},"gflop_per_s":{:.1}}}"#,
                flops / (ms * 1e-3) / 1e9
            );
        };
        print("linear", "forward", best[0], flops);
        print("matmul+add", "forward", best[1], flops);
        print("linear", "step", best[2], 3.0 * flops);
        print("matmul+add", "step", best[3], 3.0 * flops);
        if name.ends_with("fc1") {
            print("gelu", "gelu", gelu[0], 0.0);
            print("affine", "copy", gelu[1], 0.0);
        }
    }
}
