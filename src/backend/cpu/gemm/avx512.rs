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

#![deny(unsafe_op_in_unsafe_fn)]

use super::{Blocking, Isa, Kernel, Tile};
use std::arch::x86_64::*;

const LANES: usize = 16;

/// v1: 12×32 (24 accumulators).
const MR: usize = 12;
const NV: usize = 2;

pub(super) static KERNEL: Kernel = Kernel {
    isa: Isa::Avx512,
    mr: MR,
    nr: NV * LANES,
    blocking: Blocking { kc: 1024, mc: 48, nc: 2048 },
    micro: micro::<MR, NV>,
};

/// Mask of the first `cols` lanes of a vector (all 16 when `cols ≥ 16`).
#[inline(always)]
fn lanes_mask(cols: usize) -> __mmask16 {
    if cols >= LANES {
        0xffff
    } else {
        ((1u32 << cols) - 1) as __mmask16
    }
}

/// # Safety
/// AVX-512F must be present; `a` and `b` hold `kc·R` and `kc·16·V` values;
/// the tile's `rows × cols` elements are writable (initialised when accumulating).
#[target_feature(enable = "avx512f")]
unsafe fn micro<const R: usize, const V: usize>(kc: usize, a: *const f32, b: *const f32, tile: &Tile) {
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        let mut bv = [_mm512_setzero_ps(); V];
        for (v, x) in bv.iter_mut().enumerate() {
            // SAFETY: this step's 16·V values of the B panel are in bounds.
            *x = unsafe { _mm512_loadu_ps(b.add(v * LANES)) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: this step's R values of the A panel are in bounds.
            let ai = _mm512_set1_ps(unsafe { *a.add(i) });
            for (x, &bj) in row.iter_mut().zip(&bv) {
                *x = _mm512_fmadd_ps(ai, bj, *x);
            }
        }
        // SAFETY: one step further along both panels (the last step lands one
        // past their end, which is never read).
        unsafe {
            a = a.add(R);
            b = b.add(V * LANES);
        }
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
            // is writable (and initialised when accumulating); masked-off
            // lanes are neither read nor written.
            unsafe {
                let out = tile.c.add(i * tile.ldc + col);
                let x = if tile.accumulate {
                    _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, out))
                } else {
                    x
                };
                _mm512_mask_storeu_ps(out, mask, x);
            }
        }
    }
}
