//! One GEMM on all of the current rayon pool's threads.
//!
//! For each B block (KC×NC) the threads first pack it together, each a run of
//! its NR panels, into one buffer they then all read; then C's rows are cut
//! into MC blocks (and, when that gives too few tasks, the block's columns into
//! runs of panels), and each task packs its own A block and runs the
//! micro-kernels over it. Sharing the packed B block means no thread packs what
//! another already has (splitting C in two independent halves would pack B
//! twice), and many small tasks let rayon hand more of them to a thread whose
//! core is less busy, which on a machine shared with other jobs is the common
//! case rather than the exception.
//!
//! A weight gradient `Xᵀ·dY` is the other way round: C is small (`in × out`)
//! and the reduction runs over every token (thousands). Cutting C among the
//! threads there gives each only a few rows, packs B once per KC block with
//! a join on either side of it, and has every task pack the same A rows
//! again. Such products (the reduction at least twice as long as C's longer
//! side) split the reduction instead ([`split_reduction`]): each thread
//! multiplies its own run of K with its own packing and no joins, the first
//! into C, the others into scratch matrices that are then added into C.

use super::{gemm_with, multiply_packed_b, pack, trivial, with_buffer, Base, Blocks, Kernel, MatRef, Orientation, PackBuffer, A_PACK, B_PACK};
use rayon::prelude::*;
use std::cell::RefCell;

/// Products below this many multiply-adds stay on the calling thread: waking
/// the workers and the two joins per block cost a few microseconds, about the
/// time of a 128³ product.
pub const THREADED_MIN_WORK: usize = 1 << 21;

/// Pointers handed to the tasks of one GEMM.
#[derive(Clone, Copy)]
struct Shared<T>(T);
// SAFETY: the tasks read A and B, and write disjoint tiles of C, for the
// duration of one call; the caller guarantees the memory outlives the call.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T: Copy> Shared<T> {
    /// A method rather than `.0`, so that closures capture the whole wrapper.
    fn get(self) -> T {
        self.0
    }
}

/// [`super::gemm`] split over the current rayon pool's threads (on the calling
/// thread alone when the pool has one thread or the product is small).
///
/// # Safety
/// As for [`super::gemm_with`]; C must not be touched by anyone else until
/// the call returns.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_threaded(kernel: &Kernel, m: usize, k: usize, n: usize, a: MatRef, b: MatRef, c: *mut f32, ldc: usize, base: Base) {
    let threads = rayon::current_num_threads();
    if threads <= 1 || m.saturating_mul(n).saturating_mul(k) < THREADED_MIN_WORK {
        // SAFETY: the caller's contract.
        return unsafe { super::gemm(kernel, m, k, n, a, b, c, ldc, base) };
    }
    // SAFETY: the caller's contract covers C.
    if unsafe { trivial(m, k, n, c, ldc, base) } {
        return;
    }
    crate::backend::cpu::warm::keep_workers_warm();
    if reduction_split_pays(m, k, n, threads) {
        // SAFETY: the caller's contract.
        return unsafe { split_reduction(kernel, threads, m, k, n, a, b, c, ldc, base) };
    }
    let Orientation { m, n, a, b, c } = Orientation::choose(kernel, m, k, n, a, b, c, ldc);
    let blocks = Blocks::new(kernel, kernel.blocking, m, k, n);
    let (a, b, c, transposed) = (Shared(a), Shared(b), Shared(c), c.transposed);
    with_buffer(&B_PACK, |b_buf| {
        let b_pack = b_buf.get(blocks.b_len());
        for jc in (0..n).step_by(blocks.nc) {
            let nc = blocks.nc.min(n - jc);
            let panels = nc.div_ceil(blocks.nr);
            for pc in (0..k).step_by(blocks.kc) {
                let kc = blocks.kc.min(k - pc);
                let panel_len = blocks.nr * kc;
                let per_task = panels.div_ceil(threads);
                b_pack[..panels * panel_len]
                    .par_chunks_mut(per_task * panel_len)
                    .enumerate()
                    .for_each(|(t, chunk)| {
                        let first = t * per_task * blocks.nr;
                        // SAFETY: columns jc + first.. of B at depth pc.. are
                        // inside B; `chunk` holds these columns' panels.
                        unsafe { pack::pack_panels((nc - first).min(per_task * blocks.nr), kc, blocks.nr, b.get().at(pc, jc + first).t(), chunk) };
                    });
                let b_pack = &*b_pack;
                let block_base = base.for_block(pc, jc, transposed);
                let row_blocks = m.div_ceil(blocks.mc);
                // At least four tasks per thread: a thread that finishes early
                // takes another, and a C of few row blocks (the vocabulary
                // head computed as Cᵀ has 2) is still cut into even shares.
                let col_parts = (4 * threads).div_ceil(row_blocks).clamp(1, panels);
                let cols_per_part = panels.div_ceil(col_parts) * blocks.nr;
                // Column part by column part: the two halves of a split range
                // of tasks, which two threads start on at once, then write
                // different columns. Computing Cᵀ, Cᵀ's columns are C's rows,
                // and two row blocks of the same part would write the same
                // cache lines of C (the head's 65 columns cut 36 + 29) at
                // the same time: 72 -> 61% of peak on 2 threads.
                (0..row_blocks * col_parts).into_par_iter().with_max_len(1).for_each(|task| {
                    let (row_block, part) = (task % row_blocks, task / row_blocks);
                    let rows = row_block * blocks.mc..(m.min((row_block + 1) * blocks.mc));
                    let cols = part * cols_per_part..nc.min((part + 1) * cols_per_part);
                    if cols.is_empty() {
                        return;
                    }
                    with_buffer(&A_PACK, |a_buf| {
                        // SAFETY: the caller's contract; tasks cover disjoint
                        // (rows, cols) tiles of C, and b_pack holds every panel
                        // of this block.
                        unsafe { multiply_packed_b(kernel, blocks, a.get().at(0, pc), rows, kc, b_pack, cols, c.get().at(0, jc), block_base, a_buf) }
                    });
                });
            }
        }
    });
}

/// Each thread's run of the reduction is at least this deep, so that its
/// packing and its pass over C stay small beside its multiply-adds.
const MIN_SPLIT_DEPTH: usize = 256;

/// Whether [`split_reduction`] should take an `m × k × n` product: the
/// reduction is the long side (a weight gradient's tokens) and deep enough
/// for every thread.
pub(super) fn reduction_split_pays(m: usize, k: usize, n: usize, threads: usize) -> bool {
    k >= 2 * m.max(n) && k >= threads * MIN_SPLIT_DEPTH
}

thread_local! {
    /// Scratch matrices for [`split_reduction`]'s partial products, kept
    /// across calls by the thread that starts the GEMM.
    static PARTIALS: RefCell<PackBuffer> = RefCell::default();
}

/// `C (=|+=) A·B` with the reduction cut into `threads` equal runs, one task
/// each: the first task's product goes into C (overwriting it or not, as the
/// caller asked), each other one's into its own `m × n` scratch matrix, then
/// C's rows get the scratch matrices added, the rows shared among the threads.
///
/// v1 against cutting C among the threads, 2 threads, wall clock, best of
/// four interleaved rounds: vit-tiny qkv dW (64 × 6400 × 192) 49 -> 83% of
/// peak, vit-cifar proj dW 83 -> 91%, gpt-small qkv dW 91 -> 88%.
///
/// # Safety
/// As for [`gemm_threaded`].
#[allow(clippy::too_many_arguments)]
unsafe fn split_reduction(kernel: &Kernel, threads: usize, m: usize, k: usize, n: usize, a: MatRef, b: MatRef, c: *mut f32, ldc: usize, base: Base) {
    let (a, b, c) = (Shared(a), Shared(b), Shared(c));
    let depth = |part: usize| part * k / threads..(part + 1) * k / threads;
    with_buffer(&PARTIALS, |partials| {
        let partials = partials.get((threads - 1) * m * n);
        let scratch = Shared(partials.as_mut_ptr());
        (0..threads).into_par_iter().with_max_len(1).for_each(|part| {
            let run = depth(part);
            // SAFETY: (0, run.start) of A and (run.start, 0) of B are inside
            // them (run.start < k); the run's product is written to C (part
            // 0) or to this part's own m × n scratch matrix, which no other
            // task touches; the caller's contract covers the rest.
            unsafe {
                let (a, b) = (a.get().at(0, run.start), b.get().at(run.start, 0));
                if part == 0 {
                    gemm_with(kernel, kernel.blocking, m, run.len(), n, a, b, c.get(), ldc, base);
                } else {
                    let out = scratch.get().add((part - 1) * m * n);
                    gemm_with(kernel, kernel.blocking, m, run.len(), n, a, b, out, n, Base::Zero);
                }
            }
        });
        let partials = &*partials;
        let rows_per_task = m.div_ceil(2 * threads).max(1);
        (0..m.div_ceil(rows_per_task)).into_par_iter().for_each(|task| {
            for i in task * rows_per_task..m.min((task + 1) * rows_per_task) {
                // SAFETY: row i of C is n initialised elements (part 0's GEMM
                // wrote them), touched by this task alone.
                let row = unsafe { std::slice::from_raw_parts_mut(c.get().add(i * ldc), n) };
                for part in partials.chunks_exact(m * n) {
                    for (x, &y) in row.iter_mut().zip(&part[i * n..(i + 1) * n]) {
                        *x += y;
                    }
                }
            }
        });
    });
}
