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
    for (panel, out) in dst.chunks_exact_mut(w * depth).enumerate() {
        let r0 = panel * w;
        let live = w.min(rows - r0);
        // SAFETY: row r0 is inside the block (r0 < rows).
        let base = unsafe { src.at(r0, 0) };
        if live == w && src.rs == 1 {
            for (p, group) in out.chunks_exact_mut(w).enumerate() {
                // SAFETY: the w values of column p in rows r0..r0 + w are
                // adjacent (rs == 1) and inside the block.
                let column = unsafe { std::slice::from_raw_parts(base.ptr.add(p * src.cs), w) };
                group.copy_from_slice(column);
            }
        } else if live == w && src.cs == 1 {
            for r in 0..w {
                // SAFETY: row r0 + r's depth values are adjacent (cs == 1) and
                // inside the block.
                let row = unsafe { std::slice::from_raw_parts(base.ptr.add(r * src.rs), depth) };
                for (p, &x) in row.iter().enumerate() {
                    out[p * w + r] = x;
                }
            }
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
