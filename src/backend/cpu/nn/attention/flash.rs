//! The flash kernels (FlashAttention-2's algorithm, on the CPU).
//!
//! Forward, per head and block of `br` queries (one rayon task each; the
//! tile `br × bc` is [`tiles`]'s):
//!
//! ```text
//! m = −∞, l = 0, O = 0                       (per query row)
//! for each block of bc keys the block's queries can see:
//!     S = Q_blk K_blkᵀ · scale                [br, bc], one GEMM; the keys a
//!                                             row must not see are cut off
//!                                             (only the tiles the causal
//!                                             diagonal crosses have any)
//!     m' = max(m, rowmax S);  P = exp(S − m')
//!     l = l·exp(m − m') + rowsum P;  O = O·exp(m − m') + P V_blk   (one GEMM)
//! O = O / l;  lse = m + ln l
//! ```
//!
//! Key blocks entirely above the causal diagonal are never visited, and no
//! `[Tq, Tk]` tensor exists: a task's scratch is one `br × bc` tile. The
//! backward (one task per head) recomputes each tile's probabilities from Q,
//! K and the logsumexp, `P = exp(S − lse)`, with `δ = rowsum(dO ⊙ O)`:
//!
//! ```text
//! for each key block j, for each query block i that sees some of it:
//!     dV_j += Pᵀ dO_i     dP = dO_i V_jᵀ     dS = P ⊙ (dP − δ) · scale
//!     dQ_i += dS K_j      dK_j += dSᵀ Q_i
//! ```
//!
//! Every product is a call of the CPU GEMM (f32: `cpu::gemm`, whose packing
//! takes the operands' strides, so transposed tiles cost no copy; f64: a
//! plain loop), and every exponential of an f32 tile the SIMD exp of the
//! selected ISA. A query that sees no key keeps `m = −∞` and `l = 0`: its
//! output row stays 0, its `lse` is `−∞`, and its probabilities are 0 in the
//! backward, so it passes no gradient.
//!
//! v1: tiles of 64 × 64, GEMM per tile product. v2: tile sizes per call
//! ([`tiles`]). Tried and dropped: products with B's rows read in place and
//! 8 × 16 register blocks instead of the GEMM (no packing): no faster at
//! these shapes (vit-tiny step 16.1 vs 13.4 ms, gpt-small 56.7 vs 58.8).
//! v3: at small shapes packing dominated (pack_panels 32% of vit-tiny's
//! fused step, perf, 1 thread), mostly partial panels, which now have a
//! loop of their own in gemm/pack.rs; and a score row is scaled, shifted
//! and exponentiated in one pass ([`FlashFloat::exp_affine_in_place`]).
//! Bench attention, fused, 1 thread, load ~5: vit-tiny step 19.6 → 14.4
//! (packing) → about 14.5–15.3 ms, forward 4.5–4.9 → 3.6 ms; train_step
//! vit-tiny 2 threads, best median of 6 interleaved rounds, load ~3:
//! 70.5 → 66.8 ms; gpt-tiny 73.3 → 72.7 (noise).
//! v4: a score row's exponentials and their sum in one SIMD pass
//! (`Simd::exp_affine_sum_f32`; v3 scaled and shifted into a buffer in a
//! scalar loop, then called the exponential per 64 values, then summed in a
//! third pass), δ = rowsum(dO ⊙ O) a SIMD dot (was a scalar fold), and
//! score tiles stored with a row stride of whole cache lines (`tile_stride`) so
//! that `P·V` and `dS·K` read them in place (perf of vit-cifar's step: 13%
//! of the time in the exponential's calls, 13.5% packing). Bench
//! attention, fused, 1 thread, two interleaved rounds: vit-cifar forward
//! 3.23-3.25 → 2.51-2.64 ms, step 9.54-9.77 → 7.79-8.04; gpt-tiny forward
//! 0.92-1.00 → 0.82-0.83, step 2.83-2.88 → 2.61.

use super::{BackwardIn, BackwardOut, Layouts};
use crate::backend::contract::nn::attention::{AttnDims, RowLayout};
use crate::backend::cpu::gemm::{self, MatRef};
use crate::backend::cpu::simd::Simd;
use crate::types::Float;
use rayon::prelude::*;

/// The most query rows per tile under a causal mask (twice as many without one).
pub const BR: usize = 64;
/// The most keys per tile under a causal mask (twice as many without one).
pub const BC: usize = 64;

/// The tile `(rows, keys)` for a call: at most [`BR`] × [`BC`] with a causal
/// mask (smaller tiles skip more of the masked triangle), twice that without
/// one (fewer, larger products), and the sequence split evenly, so that
/// T = 65 runs as 33 + 32, not 64 + 1.
///
/// v2 (was a fixed 64 × 64): vit-cifar's attention step (bench attention,
/// T = 65, 2 threads) 24.4 → 15.6 ms, the same as the composite graph's.
pub fn tiles(dims: &AttnDims) -> (usize, usize) {
    let grow = if dims.causal_diagonal.is_some() { 1 } else { 2 };
    let even = |t: usize, most: usize| t.div_ceil(t.div_ceil(most).max(1)).max(1);
    (even(dims.tq, grow * BR), even(dims.tk, grow * BC))
}
/// The row stride of a task's score tiles for tiles `bc` keys wide, a whole
/// number of cache lines (16 elements: 64 bytes of f32), so that the
/// products reading a tile as their A (`P·V`, `dS·K`) read its rows in
/// place rather than packing them (the GEMM packs a row-major A whose row
/// stride is not whole lines): vit-cifar's T = 65 gives rows of 65 keys,
/// stored 80 apart.
fn tile_stride(bc: usize) -> usize {
    bc.next_multiple_of(16)
}

/// Calls with fewer multiply-adds (`BH·Tq·Tk·D`) than this run on the
/// calling thread: below it, waking the workers costs more than it saves.
pub const PARALLEL_MIN_WORK: usize = 1 << 18;

/// The element type's tile product and exponential.
pub trait FlashFloat: Float + Send + Sync {
    /// `C (=|+=) A·B` for an `m×k` A, a `k×n` B and an `m×n` C with row stride `ldc`.
    ///
    /// # Safety
    /// Every element A's and B's strides address is readable, C's `m` rows of
    /// `n` elements are writable (initialised when accumulating), C overlaps
    /// neither A nor B, and no other thread touches C during the call.
    #[allow(clippy::too_many_arguments)]
    #[doc(hidden)]
    unsafe fn product(
        simd: Simd,
        m: usize,
        k: usize,
        n: usize,
        a: (*const Self, usize, usize),
        b: (*const Self, usize, usize),
        c: *mut Self,
        ldc: usize,
        accumulate: bool,
    );
    /// `x = e^(x·scale − shift)`, elementwise (`x·scale` rounded, then the
    /// difference: the same values as the two steps done apart), and `Σ x`
    /// after.
    fn exp_affine_in_place(simd: Simd, x: &mut [Self], scale: Self, shift: Self) -> Self;
    /// The largest element (−∞ for none).
    fn max_of(simd: Simd, x: &[Self]) -> Self;
    /// `Σ a·b`.
    fn dot(simd: Simd, a: &[Self], b: &[Self]) -> Self;
}

impl FlashFloat for f32 {
    unsafe fn product(
        simd: Simd,
        m: usize,
        k: usize,
        n: usize,
        a: (*const f32, usize, usize),
        b: (*const f32, usize, usize),
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let (a, b) = (MatRef { ptr: a.0, rs: a.1, cs: a.2 }, MatRef { ptr: b.0, rs: b.1, cs: b.2 });
        // SAFETY: `simd` exists only for an ISA this CPU supports; the rest is
        // the caller's contract, which is gemm's.
        unsafe { gemm::gemm(gemm::kernel(simd.isa()), m, k, n, a, b, c, ldc, gemm::Base::existing_if(accumulate)) }
    }
    fn exp_affine_in_place(simd: Simd, x: &mut [f32], scale: f32, shift: f32) -> f32 {
        simd.exp_affine_sum_f32(x, scale, shift)
    }
    fn max_of(simd: Simd, x: &[f32]) -> f32 {
        simd.max_f32(x)
    }
    fn dot(simd: Simd, a: &[f32], b: &[f32]) -> f32 {
        simd.dot_f32(a, b)
    }
}

impl FlashFloat for f64 {
    unsafe fn product(
        _: Simd,
        m: usize,
        k: usize,
        n: usize,
        a: (*const f64, usize, usize),
        b: (*const f64, usize, usize),
        c: *mut f64,
        ldc: usize,
        accumulate: bool,
    ) {
        for i in 0..m {
            // SAFETY: row i of C is n writable elements (caller's contract).
            let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), n) };
            if !accumulate {
                row.fill(0.0);
            }
            for p in 0..k {
                // SAFETY: (i, p) of A and (p, j) of B are readable (caller's contract).
                let aip = unsafe { *a.0.add(i * a.1 + p * a.2) };
                for (j, cij) in row.iter_mut().enumerate() {
                    *cij += aip * unsafe { *b.0.add(p * b.1 + j * b.2) };
                }
            }
        }
    }
    fn exp_affine_in_place(_: Simd, x: &mut [f64], scale: f64, shift: f64) -> f64 {
        x.iter_mut().fold(0.0, |sum, v| {
            *v = (*v * scale - shift).exp();
            sum + *v
        })
    }
    fn max_of(_: Simd, x: &[f64]) -> f64 {
        x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v))
    }
    fn dot(_: Simd, a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).fold(0.0, |acc, (&a, &b)| acc + a * b)
    }
}

/// A pointer shared by the tasks of one call, each of which writes rows no
/// other task writes.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: the tasks write disjoint rows (see each use) for the duration of
// one call, whose caller holds the only `&mut` to the memory.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// A method rather than `.0`, so that closures capture the whole wrapper.
    fn get(self) -> *mut T {
        self.0
    }
}

/// The number of keys of the tile starting at key `j0` (of `bc`) that query
/// `i` sees: all of them without a mask.
#[inline]
fn visible_in_tile(dims: &AttnDims, i: usize, j0: usize, bc: usize) -> usize {
    match dims.causal_diagonal {
        None => bc,
        Some(diagonal) => (i as i64 + diagonal + 1 - j0 as i64).clamp(0, bc as i64) as usize,
    }
}

/// One past the last key any query of `i0..i1` sees.
#[inline]
fn keys_seen_by(dims: &AttnDims, i1: usize) -> usize {
    match dims.causal_diagonal {
        None => dims.tk,
        Some(diagonal) => (i1 as i64 - 1 + diagonal + 1).clamp(0, dims.tk as i64) as usize,
    }
}

/// The first query that sees key `j`.
#[inline]
fn first_query_seeing(dims: &AttnDims, j: usize) -> usize {
    match dims.causal_diagonal {
        None => 0,
        Some(diagonal) => (j as i64 - diagonal).clamp(0, dims.tq as i64) as usize,
    }
}

/// The rows `t..` of head `g` of an operand as a GEMM operand (row-major).
fn rows_of<T>(base: *const T, l: &RowLayout, g: usize, t: usize) -> (*const T, usize, usize) {
    (base.wrapping_add(l.row(g, t)), l.row_stride, 1)
}

/// The same rows, transposed (`(c, t)` is row `t`'s element `c`).
fn rows_of_t<T>(base: *const T, l: &RowLayout, g: usize, t: usize) -> (*const T, usize, usize) {
    (base.wrapping_add(l.row(g, t)), 1, l.row_stride)
}

/// Whether a call of these sizes is worth the rayon workers.
fn parallel(dims: &AttnDims) -> bool {
    rayon::current_num_threads() > 1 && dims.bh.saturating_mul(dims.tq).saturating_mul(dims.tk).saturating_mul(dims.d) >= PARALLEL_MIN_WORK
}

/// One task's scratch: a score tile and the running max and sum of its rows.
struct ForwardScratch<T> {
    s: Vec<T>,
    m: Vec<T>,
    l: Vec<T>,
}

impl<T: Float> ForwardScratch<T> {
    fn new((br, bc): (usize, usize)) -> Self {
        ForwardScratch {
            s: vec![T::ZERO; br * tile_stride(bc)],
            m: vec![T::ZERO; br],
            l: vec![T::ZERO; br],
        }
    }
}

/// The forward into `out` (rows where `layouts.o` says) and `lse` `[BH, Tq]`.
/// The caller checked that every row lies inside its slice.
pub fn forward<T: FlashFloat>(simd: Simd, (q, k, v): (&[T], &[T], &[T]), layouts: &Layouts, dims: &AttnDims, out: &mut [T], lse: &mut [T]) {
    let (o_ptr, lse_ptr) = (Shared(out.as_mut_ptr()), Shared(lse.as_mut_ptr()));
    let (q, k, v) = (q.as_ptr(), k.as_ptr(), v.as_ptr());
    let (q, k, v) = (Shared(q.cast_mut()), Shared(k.cast_mut()), Shared(v.cast_mut()));
    let tile = tiles(dims);
    let blocks = dims.tq.div_ceil(tile.0);
    let task = |scratch: &mut ForwardScratch<T>, t: usize| {
        let (g, i0) = (t / blocks, (t % blocks) * tile.0);
        // SAFETY: task (g, i0) writes only rows i0.. i0 + tile.0 of head g of O
        // and of lse, which no other task writes; every row lies inside its
        // slice (the caller checked the layouts).
        unsafe {
            forward_block(
                simd,
                (q.get(), k.get(), v.get()),
                layouts,
                dims,
                (o_ptr.get(), lse_ptr.get()),
                (g, i0),
                tile,
                scratch,
            )
        }
    };
    let tasks = dims.bh * blocks;
    if parallel(dims) {
        crate::backend::cpu::warm::keep_workers_warm();
        (0..tasks).into_par_iter().for_each_init(|| ForwardScratch::new(tile), task);
    } else {
        let mut scratch = ForwardScratch::new(tile);
        (0..tasks).for_each(|t| task(&mut scratch, t));
    }
}

/// Query rows `i0..i0 + tbr` of head `g`, in tiles of `tbr × tbc`.
///
/// # Safety
/// Every row the layouts address lies inside its buffer; nobody else reads
/// or writes these rows of `out` and `lse` during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn forward_block<T: FlashFloat>(
    simd: Simd,
    (q, k, v): (*const T, *const T, *const T),
    l: &Layouts,
    dims: &AttnDims,
    (out, lse): (*mut T, *mut T),
    (g, i0): (usize, usize),
    (tbr, tbc): (usize, usize),
    scratch: &mut ForwardScratch<T>,
) {
    let (br, ld) = (tbr.min(dims.tq - i0), tile_stride(tbc));
    let (dv, scale) = (dims.dv, T::from_f64(dims.scale));
    let o_row = |r: usize| out.wrapping_add(l.o.row(g, i0 + r));
    let ForwardScratch { s, m, l: sums } = scratch;
    m[..br].fill(T::NEG_INFINITY);
    sums[..br].fill(T::ZERO);
    for r in 0..br {
        // SAFETY: row i0 + r of head g of O is dv elements inside `out`, ours alone.
        unsafe { std::slice::from_raw_parts_mut(o_row(r), dv) }.fill(T::ZERO);
    }
    let key_end = keys_seen_by(dims, i0 + br);
    for j0 in (0..key_end).step_by(tbc) {
        let bc = tbc.min(key_end - j0);
        // S = Q_blk K_blkᵀ
        // SAFETY: the Q and K rows are inside their buffers; s holds tbr rows of ld.
        unsafe {
            T::product(
                simd,
                br,
                dims.d,
                bc,
                rows_of(q, &l.q, g, i0),
                rows_of_t(k, &l.k, g, j0),
                s.as_mut_ptr(),
                ld,
                false,
            )
        };
        for r in 0..br {
            let row = &mut s[r * ld..r * ld + bc];
            let seen = visible_in_tile(dims, i0 + r, j0, bc);
            if seen == 0 {
                row.fill(T::ZERO);
                continue;
            }
            // For scale > 0, rounding `x·scale` keeps the order of the row,
            // so the scaled max is the max scaled: one pass fewer.
            let scaled_max = if scale > T::ZERO {
                T::max_of(simd, &row[..seen]) * scale
            } else {
                row[..seen].iter().fold(T::NEG_INFINITY, |acc, &x| acc.max(x * scale))
            };
            let m_new = m[r].max(scaled_max);
            let row_sum = T::exp_affine_in_place(simd, &mut row[..seen], scale, m_new);
            row[seen..].fill(T::ZERO);
            // m = −∞ (no key seen yet): exp(−∞) = 0 clears the empty sums.
            let alpha = (m[r] - m_new).exp();
            sums[r] = sums[r] * alpha + row_sum;
            m[r] = m_new;
            if alpha != T::ONE {
                // SAFETY: as above.
                unsafe { std::slice::from_raw_parts_mut(o_row(r), dv) }.iter_mut().for_each(|x| *x = *x * alpha);
            }
        }
        // O_blk += P V_blk
        // SAFETY: s holds the br × bc tile; the V rows are inside their
        // buffer; the O rows are ours and initialised.
        unsafe { T::product(simd, br, bc, dv, (s.as_ptr(), ld, 1), rows_of(v, &l.v, g, j0), o_row(0), l.o.row_stride, true) };
    }
    for r in 0..br {
        let total = sums[r];
        if total > T::ZERO {
            let inv = T::ONE / total;
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts_mut(o_row(r), dv) }.iter_mut().for_each(|x| *x = *x * inv);
        }
        // A row that saw no key: m = −∞ and ln 0 = −∞.
        // SAFETY: lse is [BH, Tq]; this row is ours.
        unsafe { *lse.add(g * dims.tq + i0 + r) = m[r] + total.ln() };
    }
}

/// One backward task's scratch: the probability and score-gradient tiles,
/// and δ for every query row of the head.
struct BackwardScratch<T> {
    p: Vec<T>,
    ds: Vec<T>,
    delta: Vec<T>,
}

/// The backward into `grads` (rows where `layouts.dq`, `.dk`, `.dv` say). The caller checked that every row lies inside its slice.
pub fn backward<T: FlashFloat>(simd: Simd, x: &BackwardIn<'_, T>, layouts: &Layouts, dims: &AttnDims, mut grads: BackwardOut<'_, T>) {
    let [dq, dk, dv] = grads.raw();
    let outs = (Shared(dq.0), Shared(dk.0), Shared(dv.0));
    let tile = tiles(dims);
    let new_scratch = || BackwardScratch {
        p: vec![T::ZERO; tile.0 * tile_stride(tile.1)],
        ds: vec![T::ZERO; tile.0 * tile_stride(tile.1)],
        delta: vec![T::ZERO; dims.tq],
    };
    let task = |scratch: &mut BackwardScratch<T>, g: usize| {
        // SAFETY: task g writes only head g's rows of dQ, dK and dV, which no
        // other task writes (the caller checked that no two rows share an
        // element, across the three when they share one buffer); every row
        // lies inside its buffer (checked too).
        unsafe { backward_head(simd, x, layouts, dims, (outs.0.get(), outs.1.get(), outs.2.get()), (g, tile), scratch) }
    };
    if parallel(dims) {
        crate::backend::cpu::warm::keep_workers_warm();
        (0..dims.bh).into_par_iter().for_each_init(new_scratch, task);
    } else {
        let mut scratch = new_scratch();
        (0..dims.bh).for_each(|g| task(&mut scratch, g));
    }
}

/// Head `g`'s gradients.
///
/// # Safety
/// Every row the layouts address lies inside its buffer; nobody else reads
/// or writes head `g`'s rows of dQ, dK, dV during the call.
unsafe fn backward_head<T: FlashFloat>(
    simd: Simd,
    x: &BackwardIn<'_, T>,
    l: &Layouts,
    dims: &AttnDims,
    (dq, dk, dv): (*mut T, *mut T, *mut T),
    (g, (tbr, tbc)): (usize, (usize, usize)),
    scratch: &mut BackwardScratch<T>,
) {
    let (d, dvw, scale, ld) = (dims.d, dims.dv, T::from_f64(dims.scale), tile_stride(tbc));
    let (q, k, v, dout) = (x.q.as_ptr(), x.k.as_ptr(), x.v.as_ptr(), x.dout.as_ptr());
    let lse = &x.lse[g * dims.tq..(g + 1) * dims.tq];
    let BackwardScratch { p, ds, delta } = scratch;
    // SAFETY (the slices of this function): the rows are inside their
    // buffers (caller's contract); the gradient rows of head g are ours.
    for (i, di) in delta.iter_mut().enumerate() {
        let (go, oo) = (&x.dout[l.dout.row(g, i)..][..dvw], &x.o[l.o.row(g, i)..][..dvw]);
        *di = T::dot(simd, go, oo);
        unsafe { std::slice::from_raw_parts_mut(dq.add(l.dq.row(g, i)), d) }.fill(T::ZERO);
    }
    for j in 0..dims.tk {
        unsafe { std::slice::from_raw_parts_mut(dk.add(l.dk.row(g, j)), d) }.fill(T::ZERO);
        unsafe { std::slice::from_raw_parts_mut(dv.add(l.dv.row(g, j)), dvw) }.fill(T::ZERO);
    }
    for j0 in (0..dims.tk).step_by(tbc) {
        let bc = tbc.min(dims.tk - j0);
        for i0 in (first_query_seeing(dims, j0)..dims.tq).step_by(tbr) {
            let br = tbr.min(dims.tq - i0);
            // P = exp(Q_i K_jᵀ · scale − lse), hidden pairs 0
            unsafe { T::product(simd, br, d, bc, rows_of(q, &l.q, g, i0), rows_of_t(k, &l.k, g, j0), p.as_mut_ptr(), ld, false) };
            for r in 0..br {
                let row = &mut p[r * ld..r * ld + bc];
                let (seen, lse_r) = (visible_in_tile(dims, i0 + r, j0, bc), lse[i0 + r]);
                let seen = if lse_r == T::NEG_INFINITY { 0 } else { seen };
                T::exp_affine_in_place(simd, &mut row[..seen], scale, lse_r);
                row[seen..].fill(T::ZERO);
            }
            // dV_j += Pᵀ dO_i
            unsafe {
                T::product(
                    simd,
                    bc,
                    br,
                    dvw,
                    (p.as_ptr(), 1, ld),
                    rows_of(dout, &l.dout, g, i0),
                    dv.add(l.dv.row(g, j0)),
                    l.dv.row_stride,
                    true,
                )
            };
            // dP = dO_i V_jᵀ, then dS = P ⊙ (dP − δ) · scale in place
            unsafe {
                T::product(
                    simd,
                    br,
                    dvw,
                    bc,
                    rows_of(dout, &l.dout, g, i0),
                    rows_of_t(v, &l.v, g, j0),
                    ds.as_mut_ptr(),
                    ld,
                    false,
                )
            };
            for r in 0..br {
                let di = delta[i0 + r];
                for (dsv, &pv) in ds[r * ld..r * ld + bc].iter_mut().zip(&p[r * ld..r * ld + bc]) {
                    *dsv = pv * (*dsv - di) * scale;
                }
            }
            // dQ_i += dS K_j,  dK_j += dSᵀ Q_i
            unsafe {
                T::product(
                    simd,
                    br,
                    bc,
                    d,
                    (ds.as_ptr(), ld, 1),
                    rows_of(k, &l.k, g, j0),
                    dq.add(l.dq.row(g, i0)),
                    l.dq.row_stride,
                    true,
                )
            };
            unsafe {
                T::product(
                    simd,
                    bc,
                    br,
                    d,
                    (ds.as_ptr(), 1, ld),
                    rows_of(q, &l.q, g, i0),
                    dk.add(l.dk.row(g, j0)),
                    l.dk.row_stride,
                    true,
                )
            };
        }
    }
}
