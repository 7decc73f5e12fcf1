//! The autodiff graph is freed: training-like loops do not grow memory, intermediates die
//! with the loss, no_grad keeps nothing, and very deep graphs drop without recursion. A
//! model built from given weights allocates no model of its own besides them. The CPU's
//! caching allocator keeps true figures, and after warm-up a training step takes every
//! tensor buffer from it: nothing sizeable from the system.
//!
//! Memory is measured with a counting global allocator (bytes currently allocated, and the
//! most allocated at once since a reset; all threads). A tensor whose buffer went back to
//! the CPU pool is freed for these checks: `live()` leaves the pool's cached bytes out. The checks run one after another inside a single `#[test]`: with several tests
//! the harness spawns the next test's thread and records the last one's result while a
//! check is measuring, and those few kilobytes of its own made the counts flaky.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use tamer::{no_grad, DType, Device, Result, Tensor};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
fn grew_by(bytes: isize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call forwards to the system allocator unchanged; the counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew_by(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew_by(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            grew_by(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated from the system and not cached by the CPU pool: what live
/// tensors and everything else hold.
fn live() -> isize {
    LIVE.load(Ordering::Relaxed) - cpu_stats().bytes_cached as isize
}

fn cpu_stats() -> tamer::MemoryStats {
    tamer::memory_stats(Device::Cpu).expect("the CPU always has memory figures")
}

/// Start measuring the peak from the bytes live now (the system's count: the
/// peak check below builds models, whose weights stay live).
fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

fn peak() -> isize {
    PEAK.load(Ordering::Relaxed)
}

/// A small two-layer network written with elementwise ops and reductions only
/// (`x @ w1` as a broadcast product summed over k), trained by plain SGD.
struct Mlp {
    w1: Tensor, // [8, 16]
    b1: Tensor, // [16]
    w2: Tensor, // [16]
    x: Tensor,  // [32, 8]
    y: Tensor,  // [32]
}

impl Mlp {
    fn new() -> Result<Mlp> {
        let mut r = tamer::rng(3);
        let x = Tensor::randn([32, 8], DType::F32, &mut r)?;
        let y = x.narrow(1, 0, 1)?.squeeze(1)?.sin()?;
        Ok(Mlp {
            w1: Tensor::normal([8, 16], 0.0, 0.3, DType::F32, &mut r)?.variable(),
            b1: Tensor::zeros([16], DType::F32)?.variable(),
            w2: Tensor::normal([16], 0.0, 0.3, DType::F32, &mut r)?.variable(),
            x,
            y,
        })
    }

    fn loss(&self) -> Result<Tensor> {
        // h = tanh(x @ w1 + b1): [32, 8, 1] * [1, 8, 16] summed over axis 1 -> [32, 16]
        let h = self.x.unsqueeze(2)?.mul(&self.w1.unsqueeze(0)?)?.sum(&[1], false)?.add(&self.b1)?.tanh()?;
        let pred = h.mul(&self.w2)?.sum(&[-1], false)?; // [32]
        let mse = pred.sub(&self.y)?.square()?.mean_all()?;
        // A small penalty through exp, a view and a max, so more op kinds are in the graph.
        let penalty = self.w2.exp()?.sum_all()?.add(&self.w1.t()?.abs()?.max_all()?)?.scale(1e-3)?;
        mse.add(&penalty)
    }

    fn step(&self, lr: f64) -> Result<f64> {
        let loss = self.loss()?;
        let grads = loss.backward()?;
        no_grad(|| -> Result<()> {
            for p in [&self.w1, &self.b1, &self.w2] {
                let g = grads.get(p).expect("every parameter gets a gradient");
                p.assign(&p.sub(&g.scale(lr)?)?)?;
            }
            Ok(())
        })?;
        loss.to_scalar()
    }
}

fn training_steps_do_not_grow_memory() {
    let mlp = Mlp::new().unwrap();
    let mut after_10 = 0;
    let mut first_loss = 0.0;
    let mut last_loss = 0.0;
    for step in 1..=200 {
        last_loss = mlp.step(0.1).unwrap();
        if step == 1 {
            first_loss = last_loss;
        }
        if step == 10 {
            after_10 = live();
        }
    }
    let after_200 = live();
    assert!(last_loss < first_loss, "training should reduce the loss: {first_loss} -> {last_loss}");
    // One step's graph is tens of kilobytes; a leak of any of it per step would add megabytes.
    let growth = after_200 - after_10;
    assert!(
        growth.abs() < 16 * 1024,
        "live bytes grew by {growth} between step 10 ({after_10}) and step 200 ({after_200})"
    );
}

fn intermediates_die_with_the_loss() {
    const N: usize = 1 << 14; // below the threading threshold: no rayon buffers in the count
    const BYTES: isize = (N * 8) as isize;
    let x = Tensor::rand([N], DType::F64, &mut tamer::rng(1)).unwrap().variable();
    let base = live();
    let near = |expected: isize, what: &str| {
        let d = live() - base;
        assert!(
            (d - expected).abs() < 8 * 1024,
            "{what}: {d} bytes live above the baseline, expected about {expected}"
        );
    };

    let h = x.exp().unwrap().sin().unwrap(); // two buffers, both kept by the graph
    let loss = h.sum_all().unwrap();
    near(2 * BYTES, "after the forward pass");
    drop(h);
    near(2 * BYTES, "the loss's graph keeps its intermediates");
    let grads = loss.backward().unwrap();
    near(3 * BYTES, "gradients hold one buffer per variable");
    drop(loss);
    near(BYTES, "dropping the loss frees the graph");
    assert_eq!(grads.get(&x).unwrap().numel(), N);
    drop(grads);
    near(0, "dropping the gradients frees them");

    // Without recording, an op's inputs are released as soon as it returns.
    let y = no_grad(|| x.exp().unwrap().sin().unwrap().cos().unwrap());
    assert!(!y.requires_grad());
    near(BYTES, "no_grad keeps only the result");
    drop(y);
    let c = x.detach();
    let z = c.exp().unwrap().sin().unwrap(); // constants: nothing requires grad
    near(BYTES, "ops on constants keep only the result");
    drop((c, z));
    near(0, "everything released");
}

fn views_of_a_variable_share_its_buffer() {
    let x = Tensor::rand([64, 128], DType::F64, &mut tamer::rng(2)).unwrap().variable();
    let base = live();
    let v = x
        .t()
        .unwrap()
        .narrow(0, 3, 100)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .broadcast_as([4, 100, 64])
        .unwrap();
    let d = live() - base;
    assert!(d < 4096, "views should not copy the 64 KiB buffer, but {d} bytes were allocated");
    assert!(v.same_storage(&x));
}

fn very_deep_graphs_drop_without_recursion() {
    // A small stack makes a recursive drop fail at a few thousand nodes; this graph has 100k.
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let x = Tensor::ones([1], DType::F64).unwrap().variable();
            let mut acc = x.clone();
            for _ in 0..100_000 {
                acc = acc.add_scalar(1.0).unwrap();
            }
            let grads = acc.sum_all().unwrap().backward().unwrap();
            let g = grads.get(&x).unwrap().to_scalar().unwrap();
            drop(acc);
            g
        })
        .unwrap();
    assert_eq!(handle.join().unwrap(), 1.0);
}

/// Building a model from given weights adopts them: at no moment is a second
/// model's worth of memory allocated (a randomly initialised one, say, to be
/// replaced at once).
fn models_from_given_weights_allocate_no_model_of_their_own() {
    use tamer::checkpoint::module_tensors;
    use tamer::models::{Gpt, GptConfig, VisionTransformer, VitConfig};
    use tamer::nn::{BlockConfig, TransformerBlock};
    // Peak bytes allocated by `build` beyond what was live before, against the weights' bytes.
    fn extra<M>(weights: Vec<(String, Tensor)>, build: impl FnOnce(Vec<(String, Tensor)>) -> Result<M>) -> (isize, isize) {
        let bytes: usize = weights.iter().map(|(_, t)| t.numel() * t.dtype().size_in_bytes()).sum();
        let before = LIVE.load(Ordering::Relaxed);
        reset_peak();
        let model = build(weights).unwrap();
        let grew = peak() - before;
        drop(model);
        (grew, bytes as isize)
    }
    let vit_cfg = VitConfig::new((32, 32), 4, 3, 10, 128, 2, 4, 4.0);
    let vit = module_tensors(&VisionTransformer::new(vit_cfg.clone(), &mut tamer::rng(0)).unwrap());
    let gpt_cfg = GptConfig {
        vocab_size: 512,
        block_size: 64,
        n_layer: 2,
        n_head: 4,
        n_embd: 128,
        dropout: 0.0,
        bias: true,
        tie_weights: true,
    };
    let gpt = module_tensors(&Gpt::new(gpt_cfg.clone(), &mut tamer::rng(0)).unwrap());
    let block_cfg = BlockConfig::vit(4);
    let block = module_tensors(&TransformerBlock::new(256, &block_cfg, &mut tamer::rng(0)).unwrap());
    for (what, (grew, bytes)) in [
        ("VisionTransformer", extra(vit, |w| VisionTransformer::from_weights(vit_cfg, w))),
        ("Gpt", extra(gpt, |w| Gpt::from_weights(gpt_cfg, w))),
        ("TransformerBlock", extra(block, |w| TransformerBlock::from_weights(&block_cfg, w))),
    ] {
        // The structure (names, handles, one-element placeholders) is a few kilobytes; a model is megabytes.
        assert!(
            grew < bytes / 20,
            "{what}::from_weights allocated {grew} bytes at its peak beside {bytes} bytes of weights"
        );
    }
}

/// A GPT trained with AdamW: after warm-up, a step makes the process hold no
/// new memory at any moment (the system allocator's high-water mark does not
/// rise above what was live before the step, but for the GEMM's small packing
/// workspaces), because every tensor buffer comes from the CPU pool, which
/// makes no new block and ends each step with the bytes in use it began with.
fn steady_training_steps_take_every_buffer_from_the_pool() {
    use tamer::models::{Gpt, GptConfig};
    use tamer::nn::Module;
    use tamer::optim::{Adam, AdamConfig, Optimizer};
    let cfg = GptConfig {
        vocab_size: 65,
        block_size: 32,
        n_layer: 2,
        n_head: 2,
        n_embd: 64,
        dropout: 0.0,
        bias: true,
        tie_weights: false,
    };
    let (batch, t) = (8, cfg.block_size);
    let ids = |seed: i64| Tensor::from_vec((0..(batch * t) as i64).map(|i| (i * 7 + seed) % 65).collect::<Vec<_>>(), [batch, t]).unwrap();
    let (x, y) = (ids(1), ids(2));
    let gpt = Gpt::new(cfg, &mut tamer::rng(4)).unwrap();
    let mut opt = Adam::new(gpt.named_params(), AdamConfig::adamw(1e-3).weight_decay(0.01)).unwrap();
    let mut step = || -> f64 {
        let (_, loss) = gpt.forward(&x, Some(&y)).unwrap();
        let loss = loss.unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads).unwrap();
        loss.to_scalar().unwrap()
    };
    let first = step();
    for _ in 0..2 {
        step();
    }
    let system_before = LIVE.load(Ordering::Relaxed);
    reset_peak();
    tamer::reset_peak_memory(Device::Cpu).unwrap();
    let pool_before = cpu_stats();
    let mut last = first;
    const STEPS: usize = 5;
    for _ in 0..STEPS {
        last = step();
    }
    let pool_after = cpu_stats();
    let system_rise = peak() - system_before;
    let system_after = LIVE.load(Ordering::Relaxed);
    let step_bytes = pool_after.peak_bytes_in_use - pool_before.bytes_in_use;
    assert!(last < first, "AdamW should reduce the loss: {first} -> {last}");
    assert_eq!(
        pool_after.raw_allocations, pool_before.raw_allocations,
        "the pool made new blocks in steady steps: {pool_before:?} -> {pool_after:?}"
    );
    let reused = pool_after.reuses - pool_before.reuses;
    assert!(
        reused as usize >= STEPS * 100,
        "a step of this GPT takes hundreds of buffers from the pool, only {reused} in {STEPS} steps"
    );
    assert_eq!(pool_after.bytes_in_use, pool_before.bytes_in_use, "the steps left buffers in use behind");
    // A step's tensors take megabytes from the pool; from the system at most
    // the GEMM's packing workspaces (matrixmultiply's, a few hundred kilobytes,
    // freed when each product returns) and the graph's bookkeeping.
    assert!(step_bytes > 2 << 20, "the check needs a step of megabytes, this one takes {step_bytes} bytes");
    assert!(
        system_rise < (step_bytes / 4) as isize,
        "the system's high-water mark rose {system_rise} bytes in steady steps that take {step_bytes} bytes from the pool"
    );
    assert!(
        (system_after - system_before).abs() < 64 * 1024,
        "steady steps changed what the system holds by {} bytes",
        system_after - system_before
    );
    eprintln!("steady GPT step: {step_bytes} bytes from the pool at its peak, the system's high-water mark rose {system_rise} bytes");
}

/// The pool's figures are true: a buffer is in use while its tensor lives,
/// cached after it dies and served again; a user's `Vec` never enters the
/// cache; `empty_cache` gives the cached bytes back to the system; the cache
/// limit holds.
fn the_cpu_pool_keeps_true_figures() {
    use tamer::backend::cpu::alloc;
    // 3000 f64 = 24,000 bytes, served from the 24,064-byte class (47 × 512 B).
    const N: usize = 3000;
    const CLASS: usize = 24_064;
    tamer::empty_cache(Device::Cpu).unwrap();
    let start = cpu_stats();
    let x = Tensor::zeros([N], DType::F64).unwrap();
    let s = cpu_stats();
    assert_eq!(s.bytes_in_use, start.bytes_in_use + CLASS, "{start:?} -> {s:?}");
    assert!(s.peak_bytes_in_use >= s.bytes_in_use);
    drop(x);
    let s = cpu_stats();
    assert_eq!(s.bytes_in_use, start.bytes_in_use);
    assert_eq!(s.bytes_cached, start.bytes_cached + CLASS, "the freed buffer is kept");
    let raw = s.raw_allocations;
    let y = Tensor::zeros([N - 10], DType::F64).unwrap(); // the same class: the same block
    let s = cpu_stats();
    assert_eq!((s.raw_allocations, s.bytes_cached), (raw, start.bytes_cached), "{s:?}");
    assert_eq!(y.sum_all().unwrap().to_scalar().unwrap(), 0.0, "a reused buffer is zeroed where asked");
    drop(y);

    // A Vec the user made, even one whose size is a class, goes back to the system.
    let cached = cpu_stats().bytes_cached;
    let user = Tensor::from_vec(vec![1.0f32; 1024], [1024]).unwrap();
    drop(user);
    assert_eq!(cpu_stats().bytes_cached, cached, "a user's buffer entered the cache");

    // empty_cache: the cached bytes go back to the system.
    let (system, cached) = (LIVE.load(Ordering::Relaxed), cpu_stats().bytes_cached);
    assert!(cached >= CLASS);
    tamer::empty_cache(Device::Cpu).unwrap();
    assert_eq!(cpu_stats().bytes_cached, 0);
    let freed = system - LIVE.load(Ordering::Relaxed);
    assert!(freed >= cached as isize, "empty_cache freed {freed} bytes of {cached} cached");

    // The limit: with none allowed, a freed buffer goes straight back.
    alloc::set_cache_limit(0);
    drop(Tensor::zeros([N], DType::F64).unwrap());
    assert_eq!(cpu_stats().bytes_cached, 0);
    alloc::set_cache_limit(alloc::DEFAULT_CACHE_LIMIT);
    drop(Tensor::zeros([N], DType::F64).unwrap());
    assert_eq!(cpu_stats().bytes_cached, CLASS);
    tamer::reset_peak_memory(Device::Cpu).unwrap();
    assert_eq!(cpu_stats().peak_bytes_in_use, cpu_stats().bytes_in_use);
}

/// The one test of this binary, so nothing else allocates while a check measures.
#[test]
fn graph_memory_is_released() {
    training_steps_do_not_grow_memory();
    intermediates_die_with_the_loss();
    views_of_a_variable_share_its_buffer();
    very_deep_graphs_drop_without_recursion();
    models_from_given_weights_allocate_no_model_of_their_own();
    steady_training_steps_take_every_buffer_from_the_pool();
    the_cpu_pool_keeps_true_figures();
}
