//! Averaging gradients in place allocates nothing in a steady step.
//!
//! Bytes are counted by a counting global allocator (every allocation's
//! size, and growth by realloc, summed since the process started; the
//! CPU tensor pool's reuse of a cached block allocates nothing). The
//! copying all-reduce of a gradient-sized list allocates a packed copy and
//! new result tensors every call, the in-place one nothing sizeable; and a
//! steady data-parallel gpt-tiny step on 2 ranks allocates no more than the
//! same step in one process without averaging, to a few kilobytes, while
//! the tensor pool makes no new block.

use crate::training::{config, gpt_trainer};
use crate::Failures;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use tamer::dist::{FlatBuffers, ProcessGroup, ReduceOp};
use tamer::nn::Module;
use tamer::train::TrainConfig;
use tamer::{DType, Device, Tensor};

struct Counting;
static ALLOCATED: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call forwards to the system allocator unchanged; the counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size.saturating_sub(layout.size()) as u64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The bytes `f` allocated (all threads).
fn allocated_by<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = ALLOCATED.load(Ordering::Relaxed);
    let r = f();
    (ALLOCATED.load(Ordering::Relaxed) - before, r)
}

pub fn run(pg: &ProcessGroup, f: &mut Failures) {
    collectives_compared(pg, f);
    steady_training_steps(pg, f);
}

/// The copying all-reduce against the in-place one, on 8 MB of gradients.
fn collectives_compared(pg: &ProcessGroup, f: &mut Failures) {
    let sizes = [1 << 20, 512 * 1024, 384 * 1024, 200_000];
    let grads: Vec<Tensor> = sizes.iter().map(|&n| Tensor::full([n], 0.5, DType::F32).unwrap()).collect();
    let bytes = sizes.iter().sum::<usize>() as u64 * 4;
    let mut buffers = FlatBuffers::default();
    // Warm-up: the buffers grow to the list's size.
    let _ = f.ok("all_reduce_in_place", pg.all_reduce_in_place(&grads, ReduceOp::Mean, &mut buffers));
    let (copying, r) = allocated_by(|| pg.all_reduce(&grads, ReduceOp::Mean));
    let _ = f.ok("copying all_reduce", r);
    let (in_place, r) = allocated_by(|| pg.all_reduce_in_place(&grads, ReduceOp::Mean, &mut buffers));
    let _ = f.ok("all_reduce_in_place", r);
    f.check(copying >= 2 * bytes, || {
        format!("the copying all-reduce of {bytes} bytes allocated only {copying} bytes; the count misses allocations")
    });
    f.check(in_place < 4096, || {
        format!("the in-place all-reduce of {bytes} bytes allocated {in_place} bytes")
    });
    let all = grads.iter().all(|g| g.to_vec::<f32>().unwrap().iter().all(|&x| x == 0.5));
    f.check(all, || "averaging equal gradients changed them".to_string());
    if pg.is_root() {
        println!("all-reduce of {bytes} bytes of gradients allocated {copying} bytes copying, {in_place} in place");
    }
}

/// Bytes allocated per steady step of gpt-tiny (f32) over `pg` with 4
/// windows per rank, the tensor pool's new blocks in those steps, and the
/// gradients' bytes. After warm-up, a fit of 2 steps and one of 20: their
/// difference is 18 steps (the per-fit costs, the parameters' broadcast
/// and the evaluation at the end, cancel).
fn per_step(pg: ProcessGroup, f: &mut Failures) -> Option<(u64, u64, u64)> {
    let cfg = |stop: u64| TrainConfig {
        total_steps: 40,
        stop_at: Some(stop),
        ..config()
    };
    let mut trainer = f.ok("gpt-tiny trainer", gpt_trainer(pg, DType::F32, 4, cfg(4)))?;
    let grad_bytes = trainer.task.model.num_params() as u64 * 4;
    let mut fit_to = |stop: u64| {
        trainer.config = cfg(stop);
        allocated_by(|| trainer.fit())
    };
    f.ok("warm-up fit", fit_to(4).1)?;
    let (short, r) = fit_to(6);
    f.ok("fit of 2 steps", r)?;
    let blocks = tamer::memory_stats(Device::Cpu).ok()?.raw_allocations;
    let (long, r) = fit_to(26);
    f.ok("fit of 20 steps", r)?;
    let new_blocks = tamer::memory_stats(Device::Cpu).ok()?.raw_allocations - blocks;
    Some((long.saturating_sub(short) / 18, new_blocks, grad_bytes))
}

/// gpt-tiny on the ranks of `pg` and in one process, with the same batch per
/// process: averaging adds (almost) no allocation to a steady step.
fn steady_training_steps(pg: &ProcessGroup, f: &mut Failures) {
    let Some((data_parallel, dp_blocks, grad_bytes)) = per_step(pg.clone(), f) else {
        return;
    };
    let Some((single, _, _)) = per_step(ProcessGroup::single(), f) else { return };
    let extra = data_parallel.saturating_sub(single);
    f.check(extra < grad_bytes / 64, || {
        format!(
            "a steady gpt-tiny step on {} ranks allocated {data_parallel} bytes, {extra} more than one process ({single}); its gradients are {grad_bytes} bytes",
            pg.world_size()
        )
    });
    f.check(dp_blocks == 0, || format!("the tensor pool made {dp_blocks} new blocks in 20 steady steps"));
    if pg.is_root() {
        println!(
            "steady gpt-tiny step on {} ranks: {data_parallel} bytes allocated ({single} in one process without averaging; gradients {grad_bytes} bytes), no new pool block",
            pg.world_size()
        );
    }
}
