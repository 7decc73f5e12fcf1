//! The AVX-512 micro-kernel: an MR×(16·NV) tile of C in MR·NV zmm accumulators.
//!
//! Each of the `kc` steps loads NV vectors of the B panel, broadcasts MR
//! values of the A panel and issues MR·NV FMAs. With 32 zmm registers,
//! MR·NV accumulators + NV B vectors + one broadcast must fit; and MR·NV must
//! cover the FMA latency times the FMA pipes (4 × 2 on Zen 4/5) so that no
//! FMA waits on the previous one into the same accumulator.
//!
//! The store is cut to the tile's rows (a constant-bound loop that skips the
//! missing ones, so the accumulators stay in registers) and columns (masked
//! loads and stores, which never touch the masked-off memory).
//!
//! Edge tiles (the last rows of M, the last columns of N) run the same loop
//! instantiated for fewer rows `R ≤ MR` and vectors `V ≤ NV`: it reads the
//! first `R` values of each step of the A panel and the first `V` vectors of
//! the B panel (still laid out MR and NR wide) and issues only the FMAs whose
//! results are kept. The vocabulary head (N = 65 = 2·32 + 1) used to compute
//! a whole 32-column panel for its last column; it now computes one vector.

#![deny(unsafe_op_in_unsafe_fn)]

use super::row_groups::RowGroups;
use super::{ARows, Blocking, Isa, Kernel, MicroKernel, Tile};
use std::arch::x86_64::*;

const LANES: usize = 16;

/// v1: 12×32 (24 accumulators).
/// v2: the same full tile, plus edge instantiations for every rows × vectors
/// below it (`EDGES`).
/// v3: KC 512 rather than 1024 (tuned on Zen 5): on the Intel Xeon (48 KiB
/// L1d) a 512-step B panel (64 KiB) is half as far from L1; weight
/// gradients (K = 2048 tokens) 1.04-1.13× as fast on 1 thread (gpt-tiny
/// qkv dW 142 -> 158 GFLOP/s, fc1 dW 137 -> 156, head dWᵀ 133 -> 163, from
/// `cargo bench --bench matmul -- --kernels --blocking`), 1024² unchanged
/// (166-171 against 171-175).
const MR: usize = 12;
const NV: usize = 2;
const NR: usize = NV * LANES;

pub(super) static KERNEL: Kernel = Kernel {
    isa: Isa::Avx512,
    mr: MR,
    nr: NR,
    lanes: LANES,
    blocking: Blocking { kc: 512, mc: 48, nc: 2048 },
    micro: select,
};

/// `row_kernels!(V, STRIDED)`: the kernels for 1..=12 rows of `V` vectors.
macro_rules! row_kernels {
    ($v:literal, $strided:literal, $row_major:literal) => {
        [
            micro::<1, $v, $strided, $row_major>,
            micro::<2, $v, $strided, $row_major>,
            micro::<3, $v, $strided, $row_major>,
            micro::<4, $v, $strided, $row_major>,
            micro::<5, $v, $strided, $row_major>,
            micro::<6, $v, $strided, $row_major>,
            micro::<7, $v, $strided, $row_major>,
            micro::<8, $v, $strided, $row_major>,
            micro::<9, $v, $strided, $row_major>,
            micro::<10, $v, $strided, $row_major>,
            micro::<11, $v, $strided, $row_major>,
            micro::<12, $v, $strided, $row_major>,
        ]
    };
}

/// `EDGES[strided][row_major][v - 1][r - 1]`: the kernel for an `r`-row tile
/// of `v` vectors, of C (`false`) or of Cᵀ (`true`, stored through the
/// strides), reading A as [`ARows::DepthMajor`] (`false`) or `RowMajor` (`true`).
static EDGES: [[[[MicroKernel; MR]; NV]; 2]; 2] = [
    [
        [row_kernels!(1, false, false), row_kernels!(2, false, false)],
        [row_kernels!(1, false, true), row_kernels!(2, false, true)],
    ],
    [
        [row_kernels!(1, true, false), row_kernels!(2, true, false)],
        [row_kernels!(1, true, true), row_kernels!(2, true, true)],
    ],
];

/// The kernel that computes just the vectors and rows a `rows × cols` tile
/// keeps (both at least 1, at most MR and NR), storing through the strides
/// when `strided`, reading A as `a_rows` lays it out.
fn select(rows: usize, cols: usize, strided: bool, a_rows: ARows) -> MicroKernel {
    EDGES[usize::from(strided)][usize::from(a_rows == ARows::RowMajor)][cols.div_ceil(LANES).clamp(1, NV) - 1][rows.clamp(1, MR) - 1]
}

/// Mask of the first `cols` lanes of a vector (all 16 when `cols ≥ 16`).
#[inline(always)]
fn lanes_mask(cols: usize) -> __mmask16 {
    if cols >= LANES {
        0xffff
    } else {
        ((1u32 << cols) - 1) as __mmask16
    }
}

/// `tile (=|+=)` the first `R` rows and `16·V` columns of the product of A's
/// rows (a packed panel, still MR wide, or rows read in place when
/// `ROW_MAJOR`, see `ARows`) and the packed B panel (still NR wide), plus the
/// tile's bias when it has one (`R ≤ MR`, `V ≤ NV`), stored
/// through the tile's strides when `STRIDED` (a tile of Cᵀ), else as vectors
/// (`tile.cs == 1`). The two stores are separate instantiations: with both
/// in one body behind a run-time test the full tile ran about 10% slower
/// (gpt-small head dX, K = 65, 1 thread: 81 against 90% of peak).
///
/// # Safety
/// AVX-512F must be present; A's `R` rows are readable for `kc` steps (laid
/// out as `ROW_MAJOR` says, see `ARows`); `b` holds `kc·NR` values;
/// the tile's `rows × cols` elements (`rows ≤ R`, `cols ≤ 16·V`) are writable
/// (initialised when accumulating).
#[target_feature(enable = "avx512f")]
unsafe fn micro<const R: usize, const V: usize, const STRIDED: bool, const ROW_MAJOR: bool>(
    kc: usize,
    a: *const f32,
    a_stride: usize,
    b: *const f32,
    tile: &Tile,
) {
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let mut b = b;
    // One step: V vectors of the B panel, R values of A (`$a(i)`, row i)
    // broadcast, R·V FMAs.
    macro_rules! step {
        ($a:expr) => {
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                // SAFETY: this step's 16·V values of the B panel are in bounds.
                *x = unsafe { _mm512_loadu_ps(b.add(v * LANES)) };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps($a(i));
                for (x, &bj) in row.iter_mut().zip(&bv) {
                    *x = _mm512_fmadd_ps(ai, bj, *x);
                }
            }
            // SAFETY: one step further along the B panel (the last step
            // lands one past its end, which is never read).
            b = unsafe { b.add(NR) };
        };
    }
    if ROW_MAJOR {
        // Row i of A at a + i·a_stride, its steps adjacent (see `RowGroups`).
        let mut rows = RowGroups::<{ MR.div_ceil(3) }>::new(a, a_stride, R);
        for _ in 0..kc {
            // SAFETY: (i, p) is one of the tile's rows and steps of A.
            step!(|i: usize| unsafe { rows.get(i) });
            rows.advance();
        }
    } else {
        // Step p's R values adjacent at a + p·a_stride.
        let mut a = a;
        for _ in 0..kc {
            // SAFETY: (i, p) is one of the tile's rows and steps of A.
            step!(|i: usize| unsafe { *a.add(i) });
            // SAFETY: one step further along A (the last lands one step past
            // the tile's steps, never read).
            a = unsafe { a.add(a_stride) };
        }
    }
    if STRIDED {
        for (i, row) in acc.iter().enumerate().take(tile.rows) {
            let mut values = [[0.0f32; LANES]; V];
            for (out, &x) in values.iter_mut().zip(row) {
                // SAFETY: `out` is 16 writable f32s.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr(), x) };
            }
            // SAFETY: row i < tile.rows is inside the tile (caller's contract).
            unsafe { tile.store_strided(i, values.as_flattened()) };
        }
        return;
    }
    for (i, row) in acc.iter().enumerate() {
        if i >= tile.rows {
            break;
        }
        for (v, &x) in row.iter().enumerate() {
            let col = v * LANES;
            if col >= tile.cols {
                break;
            }
            let mask = lanes_mask(tile.cols - col);
            // SAFETY: the mask keeps the lanes inside the tile's row i, which
            // is writable (and initialised when accumulating), and inside the
            // tile's columns' bias values when there is a bias by column (by
            // row: the one value of row i); masked-off lanes are neither read
            // nor written.
            unsafe {
                let out = tile.c.add(i * tile.rs + col);
                let x = if tile.accumulate {
                    _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, out))
                } else {
                    x
                };
                let x = if tile.bias.is_null() {
                    x
                } else if tile.bias_by_row {
                    _mm512_add_ps(x, _mm512_set1_ps(*tile.bias.add(i)))
                } else {
                    _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, tile.bias.add(col)))
                };
                _mm512_mask_storeu_ps(out, mask, x);
            }
        }
    }
}
