//! GPU benchmark: memory bandwidth, matrix products (ours vs cuBLAS) and two
//! row-wise ops, each against the ceiling that bounds it.
//!
//! - copy: one large `cuMemcpyDtoD`; bytes read + written / time. The
//!   memory-bandwidth ceiling the row-wise ops are measured against.
//! - sgemm: our `matmul_tiled_f32` vs cuBLAS sgemm (`cublasGemmEx`, f32
//!   compute, no TF32) at 4096²; TFLOP/s = 2·m·n·k / time.
//! - bf16 gemm: our tensor-core `matmul_bf16` vs cuBLAS bf16 GemmEx at 4096²,
//!   and at the products of a GPT-2 124M training step (8 × 1024 tokens,
//!   width 768): the qkv, MLP and vocabulary-head products forward, and the
//!   qkv and MLP products' input and weight gradients.
//! - softmax, layer_norm over [16384, 4096] f32 through the Tensor API
//!   (forward only); GB/s = bytes read + written / time, vs the copy.
//! - cross_entropy over [16384, 4096] f32 logits (forward: the logits read
//!   once, the targets, one number written).
//! - the AdamW update of 64 Mi f32 parameters: parameter, gradient and both
//!   moments read, parameter and moments written (28 bytes per parameter).
//!
//! Every product is first checked against the naive kernel (relative
//! Frobenius error ‖x − ref‖ / ‖ref‖, computed on the device, printed) on
//! fresh random inputs.
//! Times are medians of >= 10 runs after warm-up, each run bracketed by CUDA
//! events on the device's stream. One JSON object per line, then a table.
//! cuBLAS comes from libcublas.so on LD_LIBRARY_PATH; without it the cuBLAS
//! rows report the error and the rest still runs.
//!
//! ```sh
//! cargo run --release --features cuda --example cuda_bench            # everything
//! cargo run --release --features cuda --example cuda_bench -- 2048    # smaller products
//! ```

#[cfg(feature = "cuda")]
mod bench {
    use cudarc::driver::sys::CUevent_flags;
    use serde_json::json;
    use std::sync::Arc;
    use tamer::backend::cuda::matmul::{with_backend, MatmulBackend};
    use tamer::backend::cuda::{CudaDevice, CudaStorage};
    use tamer::nn::Param;
    use tamer::optim::{Adam, AdamConfig, Optimizer};
    use tamer::{CrossEntropyOptions, DType, Device, GradStore, Result, Tensor};

    /// One row of the final table.
    struct Row {
        name: String,
        median_ms: f64,
        rate: String,
        note: String,
    }

    fn err<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> tamer::Error {
        move |e| tamer::Error::device(what, format!("{e:?}"))
    }

    /// Median, min and max milliseconds of `runs` calls of `f`, each between
    /// two events on `dev`'s stream, after `warmup` untimed calls.
    fn time_ms(dev: &Arc<CudaDevice>, warmup: usize, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64, f64)> {
        for _ in 0..warmup {
            f()?;
        }
        dev.synchronize()?;
        let stream = dev.stream();
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(err("event"))?;
            f()?;
            let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(err("event"))?;
            end.synchronize().map_err(err("event"))?;
            times.push(start.elapsed_ms(&end).map_err(err("event"))? as f64);
        }
        // A kernel fault shows up at a synchronisation: surface it here.
        dev.synchronize()?;
        times.sort_by(|a, b| a.total_cmp(b));
        Ok((times[times.len() / 2], times[0], times[times.len() - 1]))
    }

    /// ‖x − y‖ / ‖y‖ over all elements, computed in f32 on the device (the
    /// vocabulary head's output would be gigabytes on the host).
    fn rel_frobenius(x: &Tensor, y: &Tensor) -> Result<f64> {
        let (x, y) = (x.to_dtype(DType::F32)?, y.to_dtype(DType::F32)?);
        let d = x.sub(&y)?;
        let num = d.mul(&d)?.sum_all()?.to_scalar()?;
        let den = y.mul(&y)?.sum_all()?.to_scalar()?;
        Ok((num / den.max(1e-300)).sqrt())
    }

    fn copy_bandwidth(dev: &Arc<CudaDevice>, rows: &mut Vec<Row>) -> Result<f64> {
        let n = 256usize << 20; // 256 Mi f32 = 1 GiB per buffer, ~17x the H200's L2
        let src = CudaStorage::full(dev, DType::F32, n, 1.5)?;
        let dst = CudaStorage::alloc(dev, DType::F32, n)?;
        let bytes = n * 4;
        let (med, lo, hi) = time_ms(dev, 3, 20, || {
            dev.context().bind_to_thread().map_err(err("copy"))?;
            // SAFETY: both blocks hold `bytes` bytes and outlive the synchronised runs.
            unsafe { cudarc::driver::result::memcpy_dtod_async(dst.ptr(), src.ptr(), bytes, dev.stream().cu_stream()) }.map_err(err("copy"))
        })?;
        let gbps = 2.0 * bytes as f64 / (med * 1e-3) / 1e9;
        println!(
            "{}",
            json!({"bench": "copy_dtod", "bytes_each_way": bytes, "median_ms": med, "min_ms": lo, "max_ms": hi, "gb_per_s": gbps})
        );
        rows.push(Row {
            name: "copy dtod 1 GiB".into(),
            median_ms: med,
            rate: format!("{gbps:.0} GB/s"),
            note: "read+write".into(),
        });
        Ok(gbps)
    }

    /// Ours vs cuBLAS for an n³ product in `dtype`; both checked against the naive kernel first.
    fn gemm(dev: &Arc<CudaDevice>, device: Device, dtype: DType, n: usize, seed: u64, rows: &mut Vec<Row>) -> Result<()> {
        gemm_shape(dev, device, dtype, &format!("{dtype} gemm {n}"), (n, n, n), seed, rows)
    }

    /// The products of one GPT-2 124M training step (B·T = 8192 tokens, width
    /// 768, MLP 3072, vocabulary 50,304): forward `x·W`, input gradient
    /// `dy·Wᵀ` and weight gradient `xᵀ·dy`, as `[m, k] · [k, n]`.
    const GPT2_SHAPES: [(&str, (usize, usize, usize)); 7] = [
        ("qkv fwd", (8192, 768, 2304)),
        ("qkv dX", (8192, 2304, 768)),
        ("qkv dW", (768, 8192, 2304)),
        ("fc fwd", (8192, 768, 3072)),
        ("fc2 dX", (8192, 768, 3072)),
        ("fc dW", (768, 8192, 3072)),
        ("head fwd", (8192, 768, 50304)),
    ];

    /// Ours vs cuBLAS for an `[m, k] · [k, n]` product in `dtype`.
    fn gemm_shape(
        dev: &Arc<CudaDevice>,
        device: Device,
        dtype: DType,
        what: &str,
        (m, k, n): (usize, usize, usize),
        seed: u64,
        rows: &mut Vec<Row>,
    ) -> Result<()> {
        let mut rng = tamer::rng(seed);
        let a = Tensor::randn([m, k], DType::F32, &mut rng)?.to_dtype(dtype)?.to_device(device)?;
        let b = Tensor::randn([k, n], DType::F32, &mut rng)?.to_dtype(dtype)?.to_device(device)?;
        let flops = 2.0 * m as f64 * k as f64 * n as f64;
        let reference = with_backend(MatmulBackend::Naive, || a.matmul(&b))?;
        let mut own_tflops = None;
        for (label, backend) in [("own", MatmulBackend::Own), ("cublas", MatmulBackend::Cublas)] {
            let name = format!("{what} {label}");
            let checked = with_backend(backend, || a.matmul(&b)).and_then(|c| rel_frobenius(&c, &reference));
            let rel = match checked {
                Ok(e) => e,
                Err(e) => {
                    println!("{}", json!({"bench": name, "error": e.to_string()}));
                    rows.push(Row {
                        name,
                        median_ms: f64::NAN,
                        rate: "-".into(),
                        note: format!("error: {}", e.message),
                    });
                    continue;
                }
            };
            let (med, lo, hi) = time_ms(dev, 3, 15, || with_backend(backend, || a.matmul(&b)).map(drop))?;
            let tflops = flops / (med * 1e-3) / 1e12;
            println!(
                "{}",
                json!({"bench": name, "m": m, "n": n, "k": k, "dtype": dtype.name(), "rel_frobenius_vs_naive": rel, "median_ms": med, "min_ms": lo, "max_ms": hi, "tflop_per_s": tflops})
            );
            let note = match own_tflops {
                None => format!("err {rel:.1e}"),
                Some(own) => format!("err {rel:.1e}; own is {:.0}% of this", 100.0 * own / tflops),
            };
            if label == "own" {
                own_tflops = Some(tflops);
            }
            rows.push(Row {
                name,
                median_ms: med,
                rate: format!("{tflops:.1} TFLOP/s"),
                note,
            });
        }
        Ok(())
    }

    /// A row-wise op over [16384, 4096] f32: GB/s against the copy bandwidth.
    /// `bytes_per_element` is what the op must move per input element: 8 for
    /// an output as large as the input (read once, written once), 4 for a
    /// reduction to one number per row.
    fn rowwise(
        dev: &Arc<CudaDevice>,
        device: Device,
        name: &str,
        bytes_per_element: f64,
        copy_gbps: f64,
        rows: &mut Vec<Row>,
        op: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        let (r, c) = (16384usize, 4096usize);
        let mut rng = tamer::rng(7);
        let x = Tensor::randn([r, c], DType::F32, &mut rng)?.to_device(device)?;
        let w = Tensor::randn([c], DType::F32, &mut rng)?.to_device(device)?;
        let bias = Tensor::randn([c], DType::F32, &mut rng)?.to_device(device)?;
        let bytes = bytes_per_element * (r * c) as f64;
        if let Err(e) = op(&x, &w, &bias) {
            println!("{}", json!({"bench": name, "error": e.to_string()}));
            rows.push(Row {
                name: name.into(),
                median_ms: f64::NAN,
                rate: "-".into(),
                note: format!("error: {}", e.message),
            });
            return Ok(());
        }
        let (med, lo, hi) = time_ms(dev, 3, 20, || op(&x, &w, &bias).map(drop))?;
        let gbps = bytes / (med * 1e-3) / 1e9;
        println!(
            "{}",
            json!({"bench": name, "rows": r, "cols": c, "median_ms": med, "min_ms": lo, "max_ms": hi, "gb_per_s": gbps, "fraction_of_copy": gbps / copy_gbps})
        );
        rows.push(Row {
            name: name.into(),
            median_ms: med,
            rate: format!("{gbps:.0} GB/s"),
            note: format!("{:.0}% of copy", 100.0 * gbps / copy_gbps),
        });
        Ok(())
    }

    /// One AdamW update of 64 Mi f32 parameters: 28 bytes per parameter
    /// (parameter, gradient, both moments read; parameter and moments written).
    fn adamw(dev: &Arc<CudaDevice>, device: Device, copy_gbps: f64, rows: &mut Vec<Row>) -> Result<()> {
        let n = 64usize << 20;
        let mut rng = tamer::rng(11);
        let p = Param::new(Tensor::randn([n], DType::F32, &mut rng)?.to_device(device)?);
        let mut grads = GradStore::default();
        grads.insert(&p.tensor(), Tensor::randn([n], DType::F32, &mut rng)?.to_device(device)?);
        let mut opt = Adam::new(vec![("w".to_string(), p)], AdamConfig::adamw(1e-3).weight_decay(0.1))?;
        let (med, lo, hi) = time_ms(dev, 3, 20, || opt.step(&grads))?;
        let gbps = 28.0 * n as f64 / (med * 1e-3) / 1e9;
        println!(
            "{}",
            json!({"bench": "adamw f32", "params": n, "median_ms": med, "min_ms": lo, "max_ms": hi, "gb_per_s": gbps, "fraction_of_copy": gbps / copy_gbps})
        );
        rows.push(Row {
            name: "adamw f32 64 Mi params".into(),
            median_ms: med,
            rate: format!("{gbps:.0} GB/s"),
            note: format!("{:.0}% of copy", 100.0 * gbps / copy_gbps),
        });
        Ok(())
    }

    pub fn run() -> std::process::ExitCode {
        let n: usize = match std::env::args().nth(1).map(|s| s.parse()) {
            None => 4096,
            Some(Ok(v)) if v > 0 => v,
            Some(_) => {
                eprintln!("usage: cuda_bench [N]   (matrix size, default 4096)");
                return std::process::ExitCode::from(2);
            }
        };
        let device = match Device::cuda(0) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("cuda_bench: no usable CUDA device, nothing to measure: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        match body(device, n) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cuda_bench: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    }

    fn body(device: Device, n: usize) -> Result<()> {
        let dev = tamer::backend::cuda::device(0)?;
        println!("{}", json!({"device": dev.name(), "arch": dev.arch()}));
        let mut rows = vec![];
        let copy = copy_bandwidth(&dev, &mut rows)?;
        gemm(&dev, device, DType::F32, n, 1, &mut rows)?;
        gemm(&dev, device, DType::BF16, n, 2, &mut rows)?;
        for (k, (what, shape)) in GPT2_SHAPES.iter().enumerate() {
            gemm_shape(&dev, device, DType::BF16, &format!("bf16 gpt2 {what}"), *shape, 20 + k as u64, &mut rows)?;
        }
        rowwise(&dev, device, "softmax f32 [16384, 4096]", 8.0, copy, &mut rows, |x, _, _| x.softmax(-1))?;
        rowwise(&dev, device, "layer_norm f32 [16384, 4096]", 8.0, copy, &mut rows, |x, w, b| {
            x.layer_norm(Some(w), Some(b), 1e-5)
        })?;
        let targets = Tensor::from_vec((0..16384i64).map(|i| (i * 7919) % 4096).collect::<Vec<_>>(), [16384])?.to_device(device)?;
        rowwise(&dev, device, "cross_entropy f32 [16384, 4096]", 4.0, copy, &mut rows, |x, _, _| {
            x.cross_entropy(&targets, CrossEntropyOptions::default())
        })?;
        adamw(&dev, device, copy, &mut rows)?;
        println!("\n{} ({})", dev.name(), dev.arch());
        println!("{:<34} {:>10} {:>16}  note", "bench", "median ms", "rate");
        for r in &rows {
            println!("{:<34} {:>10.3} {:>16}  {}", r.name, r.median_ms, r.rate, r.note);
        }
        Ok(())
    }
}

#[cfg(feature = "cuda")]
#[path = "cli/pipe.rs"]
mod pipe;

#[cfg(feature = "cuda")]
fn main() -> std::process::ExitCode {
    pipe::exit_quietly_on_broken_pipe();
    bench::run()
}

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!("cuda_bench needs the `cuda` feature: cargo run --release --features cuda --example cuda_bench");
    std::process::exit(2);
}
