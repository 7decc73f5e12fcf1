//! AVX-512F kernels: 16 f32 lanes. Full vectors come from `as_chunks::<16>()`;
//! the tail (< 16 elements) is read and written with masked loads and stores,
//! which never touch the masked-off lanes' memory.
//!
//! Entry points are `unsafe fn` only because they need AVX-512F; helpers are
//! safe `#[target_feature]` functions that inline into them.

#![deny(unsafe_op_in_unsafe_fn)]

use super::lanes::{Lanes, Pair};
use super::{math, Elementwise1, Elementwise2, Isa, Kernels, LnBackwardIn, Operand};
use std::arch::x86_64::*;

const W: usize = 16;

pub(super) static KERNELS: Kernels = Kernels {
    isa: Isa::Avx512,
    add: add_f32,
    sub: sub_f32,
    mul: mul_f32,
    sum: sum_f32,
    max: max_f32,
    dot: dot_f32,
    exp_affine_sum: exp_affine_sum_f32,
    softmax_row: softmax_row_f32,
    softmax_backward_row: softmax_backward_row_f32,
    layer_norm_row: layer_norm_row_f32,
    layer_norm_backward_row: layer_norm_backward_row_f32,
};

#[inline]
#[target_feature(enable = "avx512f")]
fn load(a: &[f32; W]) -> __m512 {
    // SAFETY: `a` is 16 initialised f32s; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_ps(a.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn store(a: &mut [f32; W], v: __m512) {
    // SAFETY: `a` is 16 writable f32s; `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_ps(a.as_mut_ptr(), v) }
}

/// Two adjacent vectors as a [`Pair`].
#[inline]
#[target_feature(enable = "avx512f")]
fn pair(s: &[f32; 2 * W]) -> Pair<F32x16> {
    let (halves, _) = s.as_chunks::<W>();
    Pair(F32x16(load(&halves[0])), F32x16(load(&halves[1])))
}

/// The two vectors of `d`, to store a [`Pair`] into.
#[inline]
fn halves_mut(d: &mut [f32; 2 * W]) -> [&mut [f32; W]; 2] {
    let (halves, _) = d.as_chunks_mut::<W>();
    let [d0, d1] = halves else { unreachable!("2·W values are two vectors") };
    [d0, d1]
}

/// Mask of the first `len` lanes.
#[inline]
fn tail_mask(len: usize) -> __mmask16 {
    ((1u32 << len.min(W)) - 1) as __mmask16
}

/// `tail` (fewer than 16 elements) in the low lanes, `fill` in the rest.
#[inline]
#[target_feature(enable = "avx512f")]
fn load_tail(tail: &[f32], fill: f32) -> __m512 {
    if tail.is_empty() {
        return _mm512_set1_ps(fill);
    }
    // SAFETY: the mask selects min(len, 16) lanes from `tail`'s start, all inside
    // the slice; masked-off lanes are neither read nor able to fault.
    unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), tail_mask(tail.len()), tail.as_ptr()) }
}

/// The first `tail.len()` lanes of `v` into `tail`.
#[inline]
#[target_feature(enable = "avx512f")]
fn store_tail(tail: &mut [f32], v: __m512) {
    if tail.is_empty() {
        return;
    }
    // SAFETY: the mask selects min(len, 16) lanes from `tail`'s start, all inside
    // the slice; masked-off lanes are not written.
    unsafe { _mm512_mask_storeu_ps(tail.as_mut_ptr(), tail_mask(tail.len()), v) }
}

/// `eˣ` per lane: `math::exp`, for the row kernels below.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    math::exp(F32x16(x)).0
}

/// 16 f32 lanes for the formulas of `math.rs`. Only this module makes them
/// (in `#[target_feature(enable = "avx512f")]` code), so a value of this type
/// proves the CPU has AVX-512F: that is what makes the `unsafe` blocks of its
/// methods sound.
#[derive(Clone, Copy)]
pub(super) struct F32x16(__m512);

/// Lane indices of an [`F32x16`], in `0..8`.
#[derive(Clone, Copy)]
pub(super) struct Index16(__m512i);

macro_rules! binary_op {
    ($trait:ident, $method:ident, $intrinsic:ident) => {
        impl std::ops::$trait for F32x16 {
            type Output = F32x16;
            #[inline(always)]
            fn $method(self, o: F32x16) -> F32x16 {
                // SAFETY: an F32x16 exists only where AVX-512F does (type invariant).
                F32x16(unsafe { $intrinsic(self.0, o.0) })
            }
        }
    };
}
binary_op!(Add, add, _mm512_add_ps);
binary_op!(Sub, sub, _mm512_sub_ps);
binary_op!(Mul, mul, _mm512_mul_ps);
binary_op!(Div, div, _mm512_div_ps);

impl std::ops::Neg for F32x16 {
    type Output = F32x16;
    #[inline(always)]
    fn neg(self) -> F32x16 {
        // SAFETY: an F32x16 exists only where AVX-512F does (type invariant).
        unsafe { F32x16(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(self.0), _mm512_set1_epi32(i32::MIN)))) }
    }
}

/// The lanes whose condition mask bit is set take `yes`, the others `no`.
#[inline(always)]
fn blend(mask: __mmask16, yes: F32x16, no: F32x16) -> F32x16 {
    // SAFETY: an F32x16 exists only where AVX-512F does (type invariant).
    F32x16(unsafe { _mm512_mask_blend_ps(mask, no.0, yes.0) })
}

// SAFETY (every `unsafe` block below): an F32x16 or Index16 exists only where
// AVX-512F does (type invariant), and no intrinsic used touches memory except
// `lookup`'s masked load, which reads the 8 entries of its table.
impl Lanes for F32x16 {
    type Index = Index16;

    #[inline(always)]
    fn splat(self, v: f32) -> F32x16 {
        F32x16(unsafe { _mm512_set1_ps(v) })
    }
    #[inline(always)]
    fn mul_add(self, a: F32x16, b: F32x16) -> F32x16 {
        F32x16(unsafe { _mm512_fmadd_ps(self.0, a.0, b.0) })
    }
    #[inline(always)]
    fn neg_mul_add(self, a: F32x16, b: F32x16) -> F32x16 {
        F32x16(unsafe { _mm512_fnmadd_ps(self.0, a.0, b.0) })
    }
    #[inline(always)]
    fn abs(self) -> F32x16 {
        F32x16(unsafe { _mm512_abs_ps(self.0) })
    }
    #[inline(always)]
    fn copy_sign(self, sign: F32x16) -> F32x16 {
        unsafe {
            let bits = _mm512_castps_si512(self.abs().0);
            let sign_bit = _mm512_and_si512(_mm512_castps_si512(sign.0), _mm512_set1_epi32(i32::MIN));
            F32x16(_mm512_castsi512_ps(_mm512_or_si512(bits, sign_bit)))
        }
    }
    #[inline(always)]
    fn min(self, o: F32x16) -> F32x16 {
        F32x16(unsafe { _mm512_min_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn max(self, o: F32x16) -> F32x16 {
        F32x16(unsafe { _mm512_max_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn round(self) -> F32x16 {
        F32x16(unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self.0) })
    }
    #[inline(always)]
    fn floor(self) -> F32x16 {
        F32x16(unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(self.0) })
    }
    #[inline(always)]
    fn mul_pow2(self, n: F32x16) -> F32x16 {
        // self·2ⁿ with a single rounding, subnormal and overflowing results included.
        F32x16(unsafe { _mm512_scalef_ps(self.0, n.0) })
    }
    #[inline(always)]
    fn select_negative(self, if_negative: F32x16, otherwise: F32x16) -> F32x16 {
        let negative = unsafe { _mm512_test_epi32_mask(_mm512_castps_si512(self.0), _mm512_set1_epi32(i32::MIN)) };
        blend(negative, if_negative, otherwise)
    }
    #[inline(always)]
    fn select_less(self, bound: F32x16, if_less: F32x16, otherwise: F32x16) -> F32x16 {
        blend(unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, bound.0) }, if_less, otherwise)
    }
    #[inline(always)]
    fn all_less(self, bound: f32) -> bool {
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, _mm512_set1_ps(bound)) == 0xffff }
    }
    #[inline(always)]
    fn select_nonzero(self, if_nonzero: F32x16, otherwise: F32x16) -> F32x16 {
        blend(unsafe { _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(self.0, _mm512_setzero_ps()) }, if_nonzero, otherwise)
    }
    #[inline(always)]
    fn index(self) -> Index16 {
        // The permute reads 4 index bits: keep 3, as AVX2 and the scalar body do.
        Index16(unsafe { _mm512_and_si512(_mm512_cvttps_epi32(self.0), _mm512_set1_epi32(7)) })
    }
    #[inline(always)]
    fn lookup(table: &[f32; 8], i: Index16) -> F32x16 {
        unsafe { F32x16(_mm512_permutexvar_ps(i.0, _mm512_maskz_loadu_ps(0xff, table.as_ptr()))) }
    }
}

/// `dst[i] = f(src[i])` over full vectors and the masked tail.
macro_rules! map1 {
    ($src:expr, $dst:expr, $f:expr) => {{
        let (sc, st) = $src.as_chunks::<W>();
        let (dc, dt) = $dst.as_chunks_mut::<W>();
        for (s, d) in sc.iter().zip(dc) {
            store(d, $f(load(s)));
        }
        if !st.is_empty() {
            store_tail(dt, $f(load_tail(st, 0.0)));
        }
    }};
}

/// `out[i] = f(a[i], b[i])` over full vectors and the masked tail.
macro_rules! map2 {
    ($a:expr, $b:expr, $out:expr, $f:expr) => {{
        let (ac, at) = $a.as_chunks::<W>();
        let (bc, bt) = $b.as_chunks::<W>();
        let (oc, ot) = $out.as_chunks_mut::<W>();
        for ((a, b), o) in ac.iter().zip(bc).zip(oc) {
            store(o, $f(load(a), load(b)));
        }
        if !at.is_empty() {
            store_tail(ot, $f(load_tail(at, 0.0), load_tail(bt, 0.0)));
        }
    }};
}

/// `dst[i] = E(src[i])` for a formula of `math.rs` (a type, not a closure:
/// a closure would be called, not inlined, from this `#[target_feature]` code).
///
/// # Safety
/// The CPU must support AVX-512F (as for every entry point below).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn map1<E: Elementwise1>(src: &[f32], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len(), "map1: Simd::map1 passes slices of one length");
    // Two vectors per step as a `Pair` (see there), the rest one at a time.
    let (sp, st) = src.as_chunks::<{ 2 * W }>();
    let (dp, dt) = dst.as_chunks_mut::<{ 2 * W }>();
    for (s, d) in sp.iter().zip(dp) {
        let Pair(y0, y1) = E::apply(pair(s));
        let [d0, d1] = halves_mut(d);
        store(d0, y0.0);
        store(d1, y1.0);
    }
    map1!(st, dt, |v| E::apply(F32x16(v)).0)
}

/// `out[i] = E(a[i], b[i])` for a formula of `math.rs`.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn map2<E: Elementwise2>(a: &[f32], b: &[f32], out: &mut [f32]) {
    debug_assert!(a.len() == out.len() && b.len() == out.len(), "map2: Simd::map2 passes slices of one length");
    // Two vectors per step as a `Pair` (see there), the rest one at a time.
    let (ap, at) = a.as_chunks::<{ 2 * W }>();
    let (bp, bt) = b.as_chunks::<{ 2 * W }>();
    let (op, ot) = out.as_chunks_mut::<{ 2 * W }>();
    for ((a, b), o) in ap.iter().zip(bp).zip(op) {
        let Pair(y0, y1) = E::apply(pair(a), pair(b));
        let [o0, o1] = halves_mut(o);
        store(o0, y0.0);
        store(o1, y1.0);
    }
    map2!(at, bt, ot, |a, b| E::apply(F32x16(a), F32x16(b)).0)
}

/// A [`select`] operand in vectors: a slice's chunks and tail, or a value in every lane.
enum Source<'a> {
    Slice(&'a [[f32; W]], &'a [f32]),
    Value(__m512),
}

impl Source<'_> {
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn new(op: Operand<'_>) -> Source<'_> {
        match op {
            Operand::Slice(s) => {
                let (chunks, tail) = s.as_chunks::<W>();
                Source::Slice(chunks, tail)
            }
            Operand::Value(v) => Source::Value(_mm512_set1_ps(v)),
        }
    }

    /// Vector `i`; `i` = the number of full chunks gives the tail.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn vector(&self, i: usize) -> F32x16 {
        match self {
            Source::Slice(chunks, tail) => F32x16(match chunks.get(i) {
                Some(chunk) => load(chunk),
                None => load_tail(tail, 0.0),
            }),
            Source::Value(v) => F32x16(*v),
        }
    }
}

/// [`super::Simd::select_f32`] on operands cut to `out`'s length.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn select(cond: Operand, on_true: Operand, on_false: Operand, out: &mut [f32]) {
    let (c, t, f) = (Source::new(cond), Source::new(on_true), Source::new(on_false));
    let (oc, ot) = out.as_chunks_mut::<W>();
    let full = oc.len();
    for (i, o) in oc.iter_mut().enumerate() {
        store(o, c.vector(i).select_nonzero(t.vector(i), f.vector(i)).0);
    }
    if !ot.is_empty() {
        store_tail(ot, c.vector(full).select_nonzero(t.vector(full), f.vector(full)).0);
    }
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn add_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    map2!(a, b, out, |a, b| _mm512_add_ps(a, b))
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn sub_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    map2!(a, b, out, |a, b| _mm512_sub_ps(a, b))
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn mul_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    map2!(a, b, out, |a, b| _mm512_mul_ps(a, b))
}

/// Lane-wise sum in two accumulators (hides the add latency).
#[inline]
#[target_feature(enable = "avx512f")]
fn sum_vec(x: &[f32]) -> __m512 {
    let (xc, xt) = x.as_chunks::<W>();
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut pairs = xc.chunks_exact(2);
    for p in &mut pairs {
        a0 = _mm512_add_ps(a0, load(&p[0]));
        a1 = _mm512_add_ps(a1, load(&p[1]));
    }
    for c in pairs.remainder() {
        a0 = _mm512_add_ps(a0, load(c));
    }
    _mm512_add_ps(_mm512_add_ps(a0, a1), load_tail(xt, 0.0))
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn sum_f32(x: &[f32]) -> f32 {
    _mm512_reduce_add_ps(sum_vec(x))
}

/// Lane-wise max; `max(v, acc)` keeps `acc` when `v` is NaN, so NaNs are skipped.
#[inline]
#[target_feature(enable = "avx512f")]
fn max_vec(x: &[f32]) -> __m512 {
    let (xc, xt) = x.as_chunks::<W>();
    let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
    for c in xc {
        acc = _mm512_max_ps(load(c), acc);
    }
    _mm512_max_ps(load_tail(xt, f32::NEG_INFINITY), acc)
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn max_f32(x: &[f32]) -> f32 {
    _mm512_reduce_max_ps(max_vec(x))
}

#[inline]
#[target_feature(enable = "avx512f")]
fn dot_vec(a: &[f32], b: &[f32]) -> __m512 {
    let (ac, at) = a.as_chunks::<W>();
    let (bc, bt) = b.as_chunks::<W>();
    let mut acc = _mm512_setzero_ps();
    for (a, b) in ac.iter().zip(bc) {
        acc = _mm512_fmadd_ps(load(a), load(b), acc);
    }
    _mm512_fmadd_ps(load_tail(at, 0.0), load_tail(bt, 0.0), acc)
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    _mm512_reduce_add_ps(dot_vec(a, b))
}

/// `x = e^(x·scale − shift)` in place, and the sum of the results.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn exp_affine_sum_f32(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    let (sv, tv) = (_mm512_set1_ps(scale), _mm512_set1_ps(shift));
    let mut acc = _mm512_setzero_ps();
    let (xc, xt) = x.as_chunks_mut::<W>();
    for c in xc.iter_mut() {
        let e = exp16(_mm512_sub_ps(_mm512_mul_ps(load(c), sv), tv));
        store(c, e);
        acc = _mm512_add_ps(acc, e);
    }
    // The tail's lanes past the slice are computed and dropped: it is
    // summed from the values stored.
    if !xt.is_empty() {
        store_tail(xt, exp16(_mm512_sub_ps(_mm512_mul_ps(load_tail(xt, 0.0), sv), tv)));
    }
    _mm512_reduce_add_ps(acc) + xt.iter().sum::<f32>()
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn softmax_row_f32(src: &[f32], dst: &mut [f32]) {
    // src, dst: [C]
    let m = _mm512_set1_ps(_mm512_reduce_max_ps(max_vec(src)));
    let mut acc = _mm512_setzero_ps();
    let (sc, st) = src.as_chunks::<W>();
    let (dc, dt) = dst.as_chunks_mut::<W>();
    for (s, d) in sc.iter().zip(dc.iter_mut()) {
        let e = exp16(_mm512_sub_ps(load(s), m));
        store(d, e);
        acc = _mm512_add_ps(acc, e);
    }
    if !st.is_empty() {
        // Masked-off lanes hold -inf, so they add e^{-inf} = 0 to the sum.
        let e = exp16(_mm512_sub_ps(load_tail(st, f32::NEG_INFINITY), m));
        store_tail(dt, e);
        acc = _mm512_add_ps(acc, e);
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(acc));
    for d in dc {
        store(d, _mm512_mul_ps(load(d), inv));
    }
    store_tail(dt, _mm512_mul_ps(load_tail(dt, 0.0), inv));
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn softmax_backward_row_f32(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    // y, dy, dx: [C]
    let dot = _mm512_set1_ps(_mm512_reduce_add_ps(dot_vec(y, dy)));
    map2!(y, dy, dx, |y, g| _mm512_mul_ps(y, _mm512_sub_ps(g, dot)))
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn layer_norm_row_f32(src: &[f32], gamma: Option<&[f32]>, beta: Option<&[f32]>, eps: f32, dst: &mut [f32]) -> (f32, f32) {
    // src, gamma, beta, dst: [C]
    let n = src.len() as f32;
    // Shifted two-pass: d = x - m0 is exact near the mean (Sterbenz), and the
    // small residual c = mean(d) corrects m0's rounding, so large offsets cost
    // no accuracy in the output.
    let m0 = _mm512_reduce_add_ps(sum_vec(src)) / n;
    let mv = _mm512_set1_ps(m0);
    let (sc, st) = src.as_chunks::<W>();
    let (mut acc_d, mut acc_d2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for s in sc {
        let d = _mm512_sub_ps(load(s), mv);
        acc_d = _mm512_add_ps(acc_d, d);
        acc_d2 = _mm512_fmadd_ps(d, d, acc_d2);
    }
    // Tail lanes past the row hold m0 and add nothing.
    let d = _mm512_sub_ps(load_tail(st, m0), mv);
    acc_d = _mm512_add_ps(acc_d, d);
    acc_d2 = _mm512_fmadd_ps(d, d, acc_d2);
    let c = _mm512_reduce_add_ps(acc_d) / n;
    let var = _mm512_reduce_add_ps(acc_d2) / n - c * c;
    // Clamp rounding below zero; `<` keeps a NaN variance NaN.
    let var = if var < 0.0 { 0.0 } else { var };
    let rstd = 1.0 / (var + eps).sqrt();
    let rv = _mm512_set1_ps(rstd);
    // x̂ = (x - m0)·rstd - c·rstd
    let shift = _mm512_set1_ps(-c * rstd);
    let (gc, gt) = gamma.map_or((&[][..], &[][..]), |g| g.as_chunks::<W>());
    let (bc, bt) = beta.map_or((&[][..], &[][..]), |b| b.as_chunks::<W>());
    let (one, zero) = (_mm512_set1_ps(1.0), _mm512_setzero_ps());
    let (dc, dt) = dst.as_chunks_mut::<W>();
    for (i, (s, d)) in sc.iter().zip(dc).enumerate() {
        let xhat = _mm512_fmadd_ps(_mm512_sub_ps(load(s), mv), rv, shift);
        let g = gc.get(i).map_or(one, |g| load(g));
        let b = bc.get(i).map_or(zero, |b| load(b));
        store(d, _mm512_fmadd_ps(xhat, g, b));
    }
    if !st.is_empty() {
        let xhat = _mm512_fmadd_ps(_mm512_sub_ps(load_tail(st, m0), mv), rv, shift);
        let g = if gamma.is_some() { load_tail(gt, 1.0) } else { one };
        let b = if beta.is_some() { load_tail(bt, 0.0) } else { zero };
        store_tail(dt, _mm512_fmadd_ps(xhat, g, b));
    }
    (m0 + c, rstd)
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn layer_norm_backward_row_f32(inp: &LnBackwardIn, dx: &mut [f32], mut dgamma: Option<&mut [f32]>, mut dbeta: Option<&mut [f32]>) {
    // x, dy, gamma, dx, dgamma, dbeta: [C]
    let n = inp.x.len();
    let (mv, rv) = (_mm512_set1_ps(inp.mean), _mm512_set1_ps(inp.rstd));
    let one = _mm512_set1_ps(1.0);
    // Vector i of each operand (i == n / W is the masked tail): x fills with the
    // mean and dy with 0, so masked-off lanes contribute nothing to the sums.
    let lane = |s: &[f32], i: usize, fill: f32| -> __m512 {
        let (c, t) = s.as_chunks::<W>();
        c.get(i).map_or_else(|| load_tail(t, fill), |v| load(v))
    };
    let put = |s: &mut [f32], i: usize, v: __m512| {
        let (c, t) = s.as_chunks_mut::<W>();
        match c.get_mut(i) {
            Some(d) => store(d, v),
            None => store_tail(t, v),
        }
    };
    let steps = n.div_ceil(W);
    let (mut g_acc, mut gx_acc) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for i in 0..steps {
        let xhat = _mm512_mul_ps(_mm512_sub_ps(lane(inp.x, i, inp.mean), mv), rv);
        let dy = lane(inp.dy, i, 0.0);
        let g = _mm512_mul_ps(dy, inp.gamma.map_or(one, |w| lane(w, i, 1.0)));
        g_acc = _mm512_add_ps(g_acc, g);
        gx_acc = _mm512_fmadd_ps(g, xhat, gx_acc);
        if let Some(dg) = dgamma.as_deref_mut() {
            put(dg, i, _mm512_fmadd_ps(dy, xhat, lane(dg, i, 0.0)));
        }
        if let Some(db) = dbeta.as_deref_mut() {
            put(db, i, _mm512_add_ps(dy, lane(db, i, 0.0)));
        }
    }
    let g_mean = _mm512_set1_ps(_mm512_reduce_add_ps(g_acc) / n as f32);
    let gx_mean = _mm512_set1_ps(_mm512_reduce_add_ps(gx_acc) / n as f32);
    for i in 0..steps {
        let xhat = _mm512_mul_ps(_mm512_sub_ps(lane(inp.x, i, inp.mean), mv), rv);
        let g = _mm512_mul_ps(lane(inp.dy, i, 0.0), inp.gamma.map_or(one, |w| lane(w, i, 1.0)));
        let d = _mm512_fnmadd_ps(xhat, gx_mean, _mm512_sub_ps(g, g_mean));
        put(dx, i, _mm512_mul_ps(d, rv));
    }
}
