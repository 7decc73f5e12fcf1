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

use super::{multiply_packed_b, pack, trivial, with_buffer, Blocks, Kernel, MatRef, A_PACK, B_PACK};
use rayon::prelude::*;

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
pub unsafe fn gemm_threaded(kernel: &Kernel, m: usize, k: usize, n: usize, a: MatRef, b: MatRef, c: *mut f32, ldc: usize, accumulate: bool) {
    let threads = rayon::current_num_threads();
    if threads <= 1 || m.saturating_mul(n).saturating_mul(k) < THREADED_MIN_WORK {
        // SAFETY: the caller's contract.
        return unsafe { super::gemm(kernel, m, k, n, a, b, c, ldc, accumulate) };
    }
    // SAFETY: the caller's contract covers C.
    if unsafe { trivial(m, k, n, c, ldc, accumulate) } {
        return;
    }
    let blocks = Blocks::new(kernel, kernel.blocking, m, k, n);
    let (a, b, c) = (Shared(a), Shared(b), Shared(c));
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
                let row_blocks = m.div_ceil(blocks.mc);
                // At least two tasks per thread: a thread that finishes early takes another.
                let col_parts = (2 * threads).div_ceil(row_blocks).clamp(1, panels);
                let cols_per_part = panels.div_ceil(col_parts) * blocks.nr;
                (0..row_blocks * col_parts).into_par_iter().with_max_len(1).for_each(|task| {
                    let (row_block, part) = (task / col_parts, task % col_parts);
                    let rows = row_block * blocks.mc..(m.min((row_block + 1) * blocks.mc));
                    let cols = part * cols_per_part..nc.min((part + 1) * cols_per_part);
                    if cols.is_empty() {
                        return;
                    }
                    with_buffer(&A_PACK, |a_buf| {
                        // SAFETY: the caller's contract; tasks cover disjoint
                        // (rows, cols) tiles of C, and b_pack holds every panel
                        // of this block.
                        unsafe {
                            multiply_packed_b(
                                kernel,
                                blocks,
                                a.get().at(0, pc),
                                rows,
                                kc,
                                b_pack,
                                cols,
                                c.get().add(jc),
                                ldc,
                                accumulate || pc > 0,
                                a_buf,
                            )
                        }
                    });
                });
            }
        }
    });
}
