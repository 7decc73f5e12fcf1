//! Packing: a block of an operand copied into the order the micro-kernel reads.
//!
//! Both operands pack the same way once B is seen transposed: a block of
//! `rows × depth` (A: MC rows of C by KC; Bᵀ: NC columns of C by KC) becomes
//! panels of `w` rows (MR or NR), each stored depth-major — for every `p`, the
//! panel's `w` values of column `p` side by side — so the micro-kernel walks
//! every panel front to back. Rows past the block's end are zeros, which makes
//! every panel whole.
//!
//! Two source layouts get a loop of their own, as they are what matmul's
//! callers pass: rows adjacent in memory (`rs == 1`, e.g. B = W of a row-major
//! weight, or A = Xᵀ in `Xᵀ·dY`), where each depth step is a copy of `w`
//! contiguous values; and depth adjacent in memory (`cs == 1`, e.g. a
//! row-major A, or B = Wᵀ in `dY·Wᵀ`), a transpose in `w`-row strips. Any
//! other strides (broadcast rows with stride 0, sliced views) take the general
//! loop.

use super::MatRef;

/// Pack `src`'s `rows × depth` block into `dst` as panels of `w` rows:
/// `dst[(r / w)·w·depth + p·w + r % w] = src(r, p)`, zero for `r ≥ rows` up to
/// the next multiple of `w`.
///
/// # Safety
/// Every element `src(r, p)` for `r < rows`, `p < depth` must be readable.
/// `dst` must hold at least `rows.next_multiple_of(w) · depth` values (checked:
/// a shorter `dst` panics rather than being overrun).
pub(super) unsafe fn pack_panels(rows: usize, depth: usize, w: usize, src: MatRef, dst: &mut [f32]) {
    let panels = rows.div_ceil(w);
    let dst = &mut dst[..panels * w * depth];
    // Rows adjacent in memory: every full panel in one pass over the source
    // (see `copy_columns`), the partial one below.
    let full = if src.rs == 1 { rows / w } else { 0 };
    if full > 0 {
        // SAFETY: the w values of each column p < depth in rows < full·w are
        // adjacent (rs == 1) and inside the block; the slice is those
        // panels' w·depth values each.
        unsafe { copy_columns(src.ptr, src.cs, w, full, &mut dst[..full * w * depth]) };
    }
    for (panel, out) in dst.chunks_exact_mut(w * depth).enumerate().skip(full) {
        let r0 = panel * w;
        let live = w.min(rows - r0);
        // SAFETY: row r0 is inside the block (r0 < rows).
        let base = unsafe { src.at(r0, 0) };
        if live == w && src.cs == 1 {
            // SAFETY: rows r0..r0 + w each have `depth` adjacent values (cs == 1)
            // inside the block; `out` is this panel's w·depth values.
            unsafe { transpose_rows(base.ptr, src.rs, w, depth, out) };
        } else if live < w && (src.rs == 1 || src.cs == 1) {
            // SAFETY: rows r0..r0 + live are inside the block; `out` is this
            // panel's w·depth values.
            unsafe { pack_partial(base, live, w, out) };
        } else {
            for (p, group) in out.chunks_exact_mut(w).enumerate() {
                for (r, slot) in group.iter_mut().enumerate() {
                    *slot = if r < live {
                        // SAFETY: (r0 + r, p) is inside the block.
                        unsafe { *base.ptr.add(r * src.rs + p * src.cs) }
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// The last panel of a block, `live < w` rows of `src` (one of whose
/// strides is 1) and `w − live` rows of zeros, without the general loop's
/// per-element test and multiplies.
///
/// v1: partial panels took the general loop. The small attention products
/// (vit-tiny: T = 50, D = 16, so every panel of V and of the D-wide operands
/// is partial under NR = 32) spent 32% of the attention step packing
/// (perf, 1 thread); see the version note in nn/attention/flash.rs.
///
/// # Safety
/// `src(r, p)` must be readable for every `r < live`, `p < out.len() / w`.
unsafe fn pack_partial(src: MatRef, live: usize, w: usize, out: &mut [f32]) {
    if src.rs == 1 {
        for (p, group) in out.chunks_exact_mut(w).enumerate() {
            // SAFETY: step p's `live` values are adjacent (rs == 1) and readable.
            group[..live].copy_from_slice(unsafe { std::slice::from_raw_parts(src.ptr.add(p * src.cs), live) });
            group[live..].fill(0.0);
        }
    } else {
        let depth = out.len() / w;
        for group in out.chunks_exact_mut(w) {
            group[live..].fill(0.0);
        }
        for r in 0..live {
            // SAFETY: row r's `depth` values are adjacent (cs == 1) and readable.
            let row = unsafe { std::slice::from_raw_parts(src.ptr.add(r * src.rs), depth) };
            for (p, &x) in row.iter().enumerate() {
                out[p * w + r] = x;
            }
        }
    }
}

/// `panels` full panels of `w` rows whose values are adjacent in memory
/// (`rs == 1`): `out[q·w·depth + p·w + r] = src[p·cs + q·w + r]` for `r < w`,
/// `q < panels`, `p < out.len() / (panels·w)`.
///
/// v2: the copy's length is a constant for every kernel's MR and NR (a
/// `match` over them), so it compiles to a few vector moves; v1's
/// `copy_from_slice` of a run-time `w` called `memmove` for every 48 or 128
/// bytes, which was 7% of the weight gradient of the vocabulary head
/// (384 × 4096 × 65, where each packed value of A serves only 65 columns).
/// v3: step by step over every panel (v2 went panel by panel): a weight
/// gradient's B is X, `[tokens, in]`, each of whose rows v2 visited once per
/// panel, `in` floats apart, a stride the L2 streamer does not follow within a
/// page, so nearly every line came from memory on demand; now each row is
/// read front to back once. v3 also moves 12 and 32 values (the AVX-512
/// kernel's MR and NR) in 512-bit vectors where the CPU has them.
///
/// # Safety
/// `src[p·cs + j]` must be readable for every `j < panels·w`, `p < depth`.
unsafe fn copy_columns(src: *const f32, cs: usize, w: usize, panels: usize, out: &mut [f32]) {
    let depth = out.len().checked_div(panels * w).unwrap_or(0);
    /// The same loop with the length `W` known to the compiler.
    ///
    /// # Safety
    /// As for `copy_columns` with `w = W`.
    unsafe fn fixed<const W: usize>(src: *const f32, cs: usize, panels: usize, depth: usize, out: &mut [f32]) {
        for p in 0..depth {
            for q in 0..panels {
                // SAFETY: the caller's contract: step p's values of panel q are readable.
                let column = unsafe { &*src.add(p * cs + q * W).cast::<[f32; W]>() };
                out[(q * depth + p) * W..][..W].copy_from_slice(column);
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if (w == 12 || w == 32) && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present; the caller's contract.
        return unsafe { copy_columns_avx512(src, cs, w, panels, depth, out) };
    }
    // SAFETY (of each arm): the caller's contract, with W = w.
    unsafe {
        match w {
            4 => fixed::<4>(src, cs, panels, depth, out),
            6 => fixed::<6>(src, cs, panels, depth, out),
            8 => fixed::<8>(src, cs, panels, depth, out),
            12 => fixed::<12>(src, cs, panels, depth, out),
            16 => fixed::<16>(src, cs, panels, depth, out),
            32 => fixed::<32>(src, cs, panels, depth, out),
            _ => {
                for p in 0..depth {
                    for q in 0..panels {
                        out[(q * depth + p) * w..][..w].copy_from_slice(std::slice::from_raw_parts(src.add(p * cs + q * w), w));
                    }
                }
            }
        }
    }
}

/// [`copy_columns`] for w = 12 or 32 in 512-bit moves (a masked one for 12).
///
/// # Safety
/// AVX-512F must be present; `w` is 12 or 32; `out` holds `panels·w·depth`
/// values; as for `copy_columns`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn copy_columns_avx512(src: *const f32, cs: usize, w: usize, panels: usize, depth: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(out.len() >= panels * w * depth, "copy_columns: output too short");
    let dst = out.as_mut_ptr();
    for p in 0..depth {
        let row = src.wrapping_add(p * cs);
        for q in 0..panels {
            let (from, to) = (row.wrapping_add(q * w), dst.wrapping_add((q * depth + p) * w));
            // SAFETY: step p's w values of panel q are readable (the caller's
            // contract) and land inside `out` (asserted); the 12-lane mask
            // touches no byte past either.
            unsafe {
                if w == 32 {
                    _mm512_storeu_ps(to, _mm512_loadu_ps(from));
                    _mm512_storeu_ps(to.add(16), _mm512_loadu_ps(from.add(16)));
                } else {
                    _mm512_mask_storeu_ps(to, 0x0fff, _mm512_maskz_loadu_ps(0x0fff, from));
                }
            }
        }
    }
}

/// `out[p·w + r] = src[r·rs + p]` for `r < w`, `p < depth`: `w` rows of
/// adjacent values turned depth-major. Rows go four at a time through 4×4
/// transposes where the CPU has them ([`transpose_quads`]); the rest take the
/// plain loop.
///
/// # Safety
/// `src[r·rs + p]` must be readable for every `r < w`, `p < depth`;
/// `out` must hold `w·depth` values.
unsafe fn transpose_rows(src: *const f32, rs: usize, w: usize, depth: usize, out: &mut [f32]) {
    assert!(out.len() >= w * depth, "transpose_rows: output too short");
    // SAFETY: the caller's contract, and `out` holds w·depth values.
    let (r_done, p_done) = unsafe { transpose_quads(src, rs, w, depth, out) };
    for r in 0..w {
        // The 4×4 blocks covered rows < r_done at steps < p_done.
        let first = if r < r_done { p_done } else { 0 };
        for p in first..depth {
            // SAFETY: (r, p) is inside the block; p·w + r < w·depth.
            out[p * w + r] = unsafe { *src.add(r * rs + p) };
        }
    }
}

/// The 4×4 blocks of [`transpose_rows`] with SSE (part of x86-64): four loads,
/// eight shuffles and four stores for sixteen values, where the plain loop
/// does a load and a store per value. Returns the rows and steps it covered
/// (multiples of 4 below `w` and `depth`).
///
/// # Safety
/// As for [`transpose_rows`], with `out.len() ≥ w·depth`.
#[cfg(target_arch = "x86_64")]
unsafe fn transpose_quads(src: *const f32, rs: usize, w: usize, depth: usize, out: &mut [f32]) -> (usize, usize) {
    use std::arch::x86_64::*;
    let (rows, steps) = (w - w % 4, depth - depth % 4);
    for r in (0..rows).step_by(4) {
        for p in (0..steps).step_by(4) {
            // SAFETY: rows r..r + 4 and steps p..p + 4 are inside the block;
            // the four 4-value stores land at (p + i)·w + r .. + 4 ≤ w·depth,
            // inside `out`.
            unsafe {
                let row = |i: usize| _mm_loadu_ps(src.add((r + i) * rs + p));
                let (a, b, c, d) = (row(0), row(1), row(2), row(3));
                let (ab_lo, cd_lo) = (_mm_unpacklo_ps(a, b), _mm_unpacklo_ps(c, d));
                let (ab_hi, cd_hi) = (_mm_unpackhi_ps(a, b), _mm_unpackhi_ps(c, d));
                let dst = out.as_mut_ptr().add(p * w + r);
                _mm_storeu_ps(dst, _mm_movelh_ps(ab_lo, cd_lo));
                _mm_storeu_ps(dst.add(w), _mm_movehl_ps(cd_lo, ab_lo));
                _mm_storeu_ps(dst.add(2 * w), _mm_movelh_ps(ab_hi, cd_hi));
                _mm_storeu_ps(dst.add(3 * w), _mm_movehl_ps(cd_hi, ab_hi));
            }
        }
    }
    (rows, steps)
}

/// Without SSE the plain loop does all of [`transpose_rows`].
///
/// # Safety
/// None needed: it touches nothing.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn transpose_quads(_src: *const f32, _rs: usize, _w: usize, _depth: usize, _out: &mut [f32]) -> (usize, usize) {
    (0, 0)
}
