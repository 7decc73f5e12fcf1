//! Fused (flash) against composite attention on the CPU, the forward alone
//! and forward plus backward, at the training step's attention shapes: one
//! JSON line per config, impl, pass, thread count and round.
//!
//! `cargo bench --bench attention [-- --threads 1,2 --rounds 3 --config gpt-small,vit-tiny --impl fused]`. The configs
//! are the train_step bench's (f32, `[B, H, T, D]` q, k, v):
//!
//! | config | B | H | T | D | mask |
//! |---|---|---|---|---|---|
//! | gpt-small | 16 | 6 | 256 | 64 | causal |
//! | gpt-tiny | 32 | 4 | 64 | 32 | causal |
//! | vit-cifar | 64 | 3 | 65 | 64 | none |
//! | vit-tiny | 128 | 4 | 50 | 16 | none |
//!
//! `impl` is `fused` (the flash kernels) or `composite` (matmul, masked
//! softmax, matmul, keeping P), forced with `with_attention_impl`; `pass` is
//! `forward` (the op alone) or `step` (the op, then `backward_with_grad` of
//! a fixed output gradient). The two impls alternate within each round
//! (`--rounds`, default 3) and each line is one round's median of 9 runs
//! after 2 warm-ups, with the minimum; report the best median. `gflops`
//! counts the useful multiply-adds of the unmasked pairs: `4·B·H·T²·D` for
//! the forward (`QKᵀ` and `PV`) and `12·B·H·T²·D` for the step (plus `dV`,
//! `dP`, `dQ`, `dK`), halved (nearly: `T(T+1)/2` pairs) for a causal mask.
//! Every line carries the 1-minute load average.

use std::time::Instant;
use tamer::backend::contract::nn::attention::{with_attention_impl, AttentionImpl};
use tamer::{AttnMask, CausalAlign, DType, Result, Tensor};

const WARMUP: usize = 2;
const RUNS: usize = 9;

struct Config {
    name: &'static str,
    b: usize,
    h: usize,
    t: usize,
    d: usize,
    causal: bool,
}

const CONFIGS: [Config; 4] = [
    Config {
        name: "gpt-small",
        b: 16,
        h: 6,
        t: 256,
        d: 64,
        causal: true,
    },
    Config {
        name: "gpt-tiny",
        b: 32,
        h: 4,
        t: 64,
        d: 32,
        causal: true,
    },
    Config {
        name: "vit-cifar",
        b: 64,
        h: 3,
        t: 65,
        d: 64,
        causal: false,
    },
    Config {
        name: "vit-tiny",
        b: 128,
        h: 4,
        t: 50,
        d: 16,
        causal: false,
    },
];

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `(median, min)` in milliseconds.
fn time_ms(mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    for _ in 0..WARMUP {
        f()?;
    }
    let mut t = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok((t[RUNS / 2], t[0]))
}

/// Parse `--threads 1,2`, `--rounds N`, `--config NAME,..` and `--impl
/// fused|composite` (default: all).
fn args() -> (Vec<usize>, usize, Vec<String>, Option<String>) {
    let (mut threads, mut rounds) = (vec![std::thread::available_parallelism().map_or(1, |n| n.get())], 3);
    let (mut configs, mut only_impl) = (Vec::new(), None);
    let argv: Vec<String> = std::env::args().collect();
    for (i, a) in argv.iter().enumerate() {
        let next = argv.get(i + 1).map(String::as_str).unwrap_or("");
        match a.as_str() {
            "--threads" => threads = next.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
            "--rounds" => rounds = next.parse().unwrap_or(rounds),
            "--config" => configs = next.split(',').map(|s| s.trim().to_string()).collect(),
            "--impl" => only_impl = Some(next.to_string()),
            _ => {}
        }
    }
    (threads, rounds, configs, only_impl)
}

fn main() -> Result<()> {
    let (threads, rounds, only, only_impl) = args();
    let mut rng = tamer::rng(0);
    for &n in &threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| tamer::Error::value("bench attention", format!("--threads {n}: {e}")))?;
        for c in CONFIGS.iter().filter(|c| only.is_empty() || only.iter().any(|n| n == c.name)) {
            let dims = [c.b, c.h, c.t, c.d];
            let q = Tensor::randn(dims, DType::F32, &mut rng)?.variable();
            let k = Tensor::randn(dims, DType::F32, &mut rng)?.variable();
            let v = Tensor::randn(dims, DType::F32, &mut rng)?.variable();
            let dout = Tensor::randn(dims, DType::F32, &mut rng)?;
            let mask = if c.causal { AttnMask::Causal(CausalAlign::TopLeft) } else { AttnMask::None };
            let pairs = if c.causal { c.t * (c.t + 1) / 2 } else { c.t * c.t } as f64;
            let unit = (c.b * c.h * c.d) as f64 * pairs;
            for round in 0..rounds {
                let impls = [(AttentionImpl::Flash, "fused"), (AttentionImpl::Composite, "composite")];
                for (imp, name) in impls.into_iter().filter(|(_, n)| only_impl.as_deref().is_none_or(|o| o == *n)) {
                    let forward = || -> Result<()> {
                        with_attention_impl(imp, || tamer::no_grad(|| q.scaled_dot_product_attention(&k, &v, mask, None)))?;
                        Ok(())
                    };
                    let step = || -> Result<()> {
                        let o = with_attention_impl(imp, || q.scaled_dot_product_attention(&k, &v, mask, None))?;
                        with_attention_impl(imp, || o.backward_with_grad(&dout))?;
                        Ok(())
                    };
                    for (pass, flops, f) in [
                        ("forward", 4.0 * unit, &forward as &(dyn Fn() -> Result<()> + Sync)),
                        ("step", 12.0 * unit, &step),
                    ] {
                        let (median, min) = pool.install(|| time_ms(f))?;
                        println!(
                            r#"{{"bench":"attention","config":"{}","b":{},"h":{},"t":{},"d":{},"causal":{},"impl":"{name}","pass":"{pass}","threads":{n},"round":{round},"median_ms":{median:.3},"min_ms":{min:.3},"gflops":{:.1},"loadavg":{:.2}}}"#,
                            c.name,
                            c.b,
                            c.h,
                            c.t,
                            c.d,
                            c.causal,
                            flops / (median * 1e-3) / 1e9,
                            load_average()
                        );
                    }
                }
            }
        }
    }
    Ok(())
}
