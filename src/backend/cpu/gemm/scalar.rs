//! The portable micro-kernel: plain Rust over a 4×8 tile of accumulators
//! (which the compiler may keep in SSE registers). It is what non-x86 builds
//! and `TAMER_SIMD=scalar` run, and the shape every other kernel's result is
//! compared with in the tests.

use super::{ARows, Blocking, Isa, Kernel, Tile};

const MR: usize = 4;
const NR: usize = 8;

pub(super) static KERNEL: Kernel = Kernel {
    isa: Isa::Scalar,
    mr: MR,
    nr: NR,
    lanes: NR,
    blocking: Blocking { kc: 256, mc: 64, nc: 1024 },
    micro: |_, _, _, a_rows| match a_rows {
        ARows::DepthMajor => micro::<false>,
        ARows::RowMajor => micro::<true>,
    },
};

/// `A(i, p)` at `a + i·a_stride + p` when `ROW_MAJOR`, else at `a + i + p·a_stride`.
///
/// # Safety
/// As for `MicroKernel`: A's `tile.rows` rows are readable for `kc` steps, `b` holds
/// `kc·NR` values and the tile's `rows × cols` elements are writable
/// (initialised when accumulating).
unsafe fn micro<const ROW_MAJOR: bool>(kc: usize, a: *const f32, a_stride: usize, b: *const f32, tile: &Tile) {
    // SAFETY: the caller guarantees the panel length.
    let b = unsafe { std::slice::from_raw_parts(b, kc * NR) };
    let (rs, cs) = if ROW_MAJOR { (a_stride, 1) } else { (1, a_stride) };
    let mut acc = [[0.0f32; NR]; MR];
    for (p, bp) in b.chunks_exact(NR).enumerate() {
        // Only the tile's rows: read in place, A has no zero rows past its end.
        for (i, row) in acc.iter_mut().enumerate().take(tile.rows) {
            // SAFETY: (i, p) is one of the tile's rows and steps of A.
            let ai = unsafe { *a.add(i * rs + p * cs) };
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
