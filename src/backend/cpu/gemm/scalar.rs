//! The portable micro-kernel: plain Rust over a 4×8 tile of accumulators
//! (which the compiler may keep in SSE registers). It is what non-x86 builds
//! and `TAMER_SIMD=scalar` run, and the shape every other kernel's result is
//! compared with in the tests.

use super::{Blocking, Isa, Kernel, Tile};

const MR: usize = 4;
const NR: usize = 8;

pub(super) static KERNEL: Kernel = Kernel {
    isa: Isa::Scalar,
    mr: MR,
    nr: NR,
    lanes: NR,
    blocking: Blocking { kc: 256, mc: 64, nc: 1024 },
    micro: |_, _, _| micro,
};

/// # Safety
/// As for `MicroKernel`: `a` and `b` hold `kc·MR` and `kc·NR` values and the
/// tile's `rows × cols` elements are writable (initialised when accumulating).
unsafe fn micro(kc: usize, a: *const f32, b: *const f32, tile: &Tile) {
    // SAFETY: the caller guarantees the panel lengths.
    let (a, b) = unsafe { (std::slice::from_raw_parts(a, kc * MR), std::slice::from_raw_parts(b, kc * NR)) };
    let mut acc = [[0.0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (row, &ai) in acc.iter_mut().zip(ap) {
            for (x, &bj) in row.iter_mut().zip(bp) {
                *x += ai * bj;
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(tile.rows) {
        // SAFETY: row i < tile.rows is inside the tile (caller's contract).
        unsafe { tile.store_strided(i, row) };
    }
}
