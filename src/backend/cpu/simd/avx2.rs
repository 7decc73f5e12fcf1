//! AVX2 + FMA kernels: 8 f32 lanes. Full vectors come from `as_chunks::<8>()`;
//! the tail (< 8 elements) goes through a stack buffer padded with a neutral
//! value, so it runs the same vector code as the body and no load or store ever
//! leaves its slice.
//!
//! Entry points are `unsafe fn` only because they need AVX2 and FMA; helpers are
//! safe `#[target_feature]` functions that inline into them.

#![deny(unsafe_op_in_unsafe_fn)]

use super::lanes::{Lanes, Pair};
use super::{math, Elementwise1, Elementwise2, Isa, Kernels, LnBackwardIn, Operand};
use std::arch::x86_64::*;

const W: usize = 8;

pub(super) static KERNELS: Kernels = Kernels {
    isa: Isa::Avx2,
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
#[target_feature(enable = "avx2,fma")]
fn load(a: &[f32; W]) -> __m256 {
    // SAFETY: `a` is 8 initialised f32s; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(a.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn store(a: &mut [f32; W], v: __m256) {
    // SAFETY: `a` is 8 writable f32s; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) }
}

/// Two adjacent vectors as a [`Pair`].
#[inline]
#[target_feature(enable = "avx2,fma")]
fn pair(s: &[f32; 2 * W]) -> Pair<F32x8> {
    let (halves, _) = s.as_chunks::<W>();
    Pair(F32x8(load(&halves[0])), F32x8(load(&halves[1])))
}

/// The two vectors of `d`, to store a [`Pair`] into.
#[inline]
fn halves_mut(d: &mut [f32; 2 * W]) -> [&mut [f32; W]; 2] {
    let (halves, _) = d.as_chunks_mut::<W>();
    let [d0, d1] = halves else { unreachable!("2·W values are two vectors") };
    [d0, d1]
}

/// `tail` (fewer than 8 elements) padded with `fill`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load_tail(tail: &[f32], fill: f32) -> __m256 {
    let mut buf = [fill; W];
    let n = tail.len().min(W);
    buf[..n].copy_from_slice(&tail[..n]);
    load(&buf)
}

/// The first `tail.len()` lanes of `v` into `tail`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn store_tail(tail: &mut [f32], v: __m256) {
    let mut buf = [0.0; W];
    store(&mut buf, v);
    let n = tail.len().min(W);
    tail[..n].copy_from_slice(&buf[..n]);
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hmax(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// `eˣ` per lane: `math::exp`, for the row kernels below.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8(x: __m256) -> __m256 {
    math::exp(F32x8(x)).0
}

/// 8 f32 lanes for the formulas of `math.rs`. Only this module makes them (in
/// `#[target_feature(enable = "avx2,fma")]` code), so a value of this type
/// proves the CPU has AVX2 and FMA: that is what makes the `unsafe` blocks of
/// its methods sound.
#[derive(Clone, Copy)]
pub(super) struct F32x8(__m256);

/// Lane indices of an [`F32x8`]; the permute reads their low 3 bits.
#[derive(Clone, Copy)]
pub(super) struct Index8(__m256i);

macro_rules! binary_op {
    ($trait:ident, $method:ident, $intrinsic:ident) => {
        impl std::ops::$trait for F32x8 {
            type Output = F32x8;
            #[inline(always)]
            fn $method(self, o: F32x8) -> F32x8 {
                // SAFETY: an F32x8 exists only where AVX2 and FMA do (type invariant).
                F32x8(unsafe { $intrinsic(self.0, o.0) })
            }
        }
    };
}
binary_op!(Add, add, _mm256_add_ps);
binary_op!(Sub, sub, _mm256_sub_ps);
binary_op!(Mul, mul, _mm256_mul_ps);
binary_op!(Div, div, _mm256_div_ps);

impl std::ops::Neg for F32x8 {
    type Output = F32x8;
    #[inline(always)]
    fn neg(self) -> F32x8 {
        // SAFETY: an F32x8 exists only where AVX2 and FMA do (type invariant).
        F32x8(unsafe { _mm256_xor_ps(self.0, _mm256_set1_ps(-0.0)) })
    }
}

/// `yes` in the lanes where `mask`'s sign bit is set, `no` in the others.
#[inline(always)]
fn blend(mask: __m256, yes: F32x8, no: F32x8) -> F32x8 {
    // SAFETY: an F32x8 exists only where AVX2 and FMA do (type invariant).
    F32x8(unsafe { _mm256_blendv_ps(no.0, yes.0, mask) })
}

// SAFETY (every `unsafe` block below): an F32x8 or Index8 exists only where
// AVX2 and FMA do (type invariant), and no intrinsic used touches memory
// except `lookup`'s load of its 8-entry table.
impl Lanes for F32x8 {
    type Index = Index8;

    #[inline(always)]
    fn splat(self, v: f32) -> F32x8 {
        F32x8(unsafe { _mm256_set1_ps(v) })
    }
    #[inline(always)]
    fn mul_add(self, a: F32x8, b: F32x8) -> F32x8 {
        F32x8(unsafe { _mm256_fmadd_ps(self.0, a.0, b.0) })
    }
    #[inline(always)]
    fn neg_mul_add(self, a: F32x8, b: F32x8) -> F32x8 {
        F32x8(unsafe { _mm256_fnmadd_ps(self.0, a.0, b.0) })
    }
    #[inline(always)]
    fn abs(self) -> F32x8 {
        F32x8(unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0) })
    }
    #[inline(always)]
    fn copy_sign(self, sign: F32x8) -> F32x8 {
        unsafe {
            let sign_bit = _mm256_and_ps(sign.0, _mm256_set1_ps(-0.0));
            F32x8(_mm256_or_ps(self.abs().0, sign_bit))
        }
    }
    #[inline(always)]
    fn min(self, o: F32x8) -> F32x8 {
        F32x8(unsafe { _mm256_min_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn max(self, o: F32x8) -> F32x8 {
        F32x8(unsafe { _mm256_max_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn round(self) -> F32x8 {
        F32x8(unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self.0) })
    }
    #[inline(always)]
    fn floor(self) -> F32x8 {
        F32x8(unsafe { _mm256_floor_ps(self.0) })
    }
    #[inline(always)]
    fn mul_pow2(self, n: F32x8) -> F32x8 {
        // n ∈ [-250, 250]: 2ⁿ = 2^n1 · 2^n2 with both halves normal, so the only
        // rounding of a subnormal result happens in the last multiply.
        unsafe {
            let ni = _mm256_cvtps_epi32(n.0);
            let n1 = _mm256_srai_epi32::<1>(ni);
            let n2 = _mm256_sub_epi32(ni, n1);
            let bias = _mm256_set1_epi32(127);
            let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
            let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
            F32x8(_mm256_mul_ps(_mm256_mul_ps(self.0, s1), s2))
        }
    }
    #[inline(always)]
    fn select_negative(self, if_negative: F32x8, otherwise: F32x8) -> F32x8 {
        // blendv picks by the mask's sign bit: self's own.
        blend(self.0, if_negative, otherwise)
    }
    #[inline(always)]
    fn select_less(self, bound: F32x8, if_less: F32x8, otherwise: F32x8) -> F32x8 {
        blend(unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, bound.0) }, if_less, otherwise)
    }
    #[inline(always)]
    fn all_less(self, bound: f32) -> bool {
        unsafe { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(self.0, _mm256_set1_ps(bound))) == 0xff }
    }
    #[inline(always)]
    fn select_nonzero(self, if_nonzero: F32x8, otherwise: F32x8) -> F32x8 {
        blend(unsafe { _mm256_cmp_ps::<_CMP_NEQ_UQ>(self.0, _mm256_setzero_ps()) }, if_nonzero, otherwise)
    }
    #[inline(always)]
    fn index(self) -> Index8 {
        Index8(unsafe { _mm256_cvttps_epi32(self.0) })
    }
    #[inline(always)]
    fn lookup(table: &[f32; 8], i: Index8) -> F32x8 {
        unsafe { F32x8(_mm256_permutevar8x32_ps(_mm256_loadu_ps(table.as_ptr()), i.0)) }
    }
}

/// `dst[i] = f(src[i])` over full vectors and the padded tail.
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

/// `out[i] = f(a[i], b[i])` over full vectors and the padded tail.
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
/// The CPU must support AVX2 and FMA (as for every entry point below).
#[target_feature(enable = "avx2,fma")]
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
    map1!(st, dt, |v| E::apply(F32x8(v)).0)
}

/// `out[i] = E(a[i], b[i])` for a formula of `math.rs`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
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
    map2!(at, bt, ot, |a, b| E::apply(F32x8(a), F32x8(b)).0)
}

/// A [`select`] operand in vectors: a slice's chunks and tail, or a value in every lane.
enum Source<'a> {
    Slice(&'a [[f32; W]], &'a [f32]),
    Value(__m256),
}

impl Source<'_> {
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn new(op: Operand<'_>) -> Source<'_> {
        match op {
            Operand::Slice(s) => {
                let (chunks, tail) = s.as_chunks::<W>();
                Source::Slice(chunks, tail)
            }
            Operand::Value(v) => Source::Value(_mm256_set1_ps(v)),
        }
    }

    /// Vector `i`; `i` = the number of full chunks gives the tail.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn vector(&self, i: usize) -> F32x8 {
        match self {
            Source::Slice(chunks, tail) => F32x8(match chunks.get(i) {
                Some(chunk) => load(chunk),
                None => load_tail(tail, 0.0),
            }),
            Source::Value(v) => F32x8(*v),
        }
    }
}

/// [`super::Simd::select_f32`] on operands cut to `out`'s length.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
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
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn add_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    map2!(a, b, out, |a, b| _mm256_add_ps(a, b))
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn sub_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    map2!(a, b, out, |a, b| _mm256_sub_ps(a, b))
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn mul_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    map2!(a, b, out, |a, b| _mm256_mul_ps(a, b))
}

/// Lane-wise sum in two accumulators (hides the add latency).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn sum_vec(x: &[f32]) -> __m256 {
    let (xc, xt) = x.as_chunks::<W>();
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut pairs = xc.chunks_exact(2);
    for p in &mut pairs {
        a0 = _mm256_add_ps(a0, load(&p[0]));
        a1 = _mm256_add_ps(a1, load(&p[1]));
    }
    for c in pairs.remainder() {
        a0 = _mm256_add_ps(a0, load(c));
    }
    _mm256_add_ps(_mm256_add_ps(a0, a1), load_tail(xt, 0.0))
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn sum_f32(x: &[f32]) -> f32 {
    hsum(sum_vec(x))
}

/// Lane-wise max; `max(v, acc)` keeps `acc` when `v` is NaN, so NaNs are skipped.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn max_vec(x: &[f32]) -> __m256 {
    let (xc, xt) = x.as_chunks::<W>();
    let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in xc {
        acc = _mm256_max_ps(load(c), acc);
    }
    _mm256_max_ps(load_tail(xt, f32::NEG_INFINITY), acc)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn max_f32(x: &[f32]) -> f32 {
    hmax(max_vec(x))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn dot_vec(a: &[f32], b: &[f32]) -> __m256 {
    let (ac, at) = a.as_chunks::<W>();
    let (bc, bt) = b.as_chunks::<W>();
    let mut acc = _mm256_setzero_ps();
    for (a, b) in ac.iter().zip(bc) {
        acc = _mm256_fmadd_ps(load(a), load(b), acc);
    }
    _mm256_fmadd_ps(load_tail(at, 0.0), load_tail(bt, 0.0), acc)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    hsum(dot_vec(a, b))
}

/// `x = e^(x·scale − shift)` in place, and the sum of the results.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp_affine_sum_f32(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    let (sv, tv) = (_mm256_set1_ps(scale), _mm256_set1_ps(shift));
    let mut acc = _mm256_setzero_ps();
    let (xc, xt) = x.as_chunks_mut::<W>();
    for c in xc.iter_mut() {
        let e = exp8(_mm256_sub_ps(_mm256_mul_ps(load(c), sv), tv));
        store(c, e);
        acc = _mm256_add_ps(acc, e);
    }
    // The tail's lanes past the slice are computed and dropped: it is
    // summed from the values stored.
    if !xt.is_empty() {
        store_tail(xt, exp8(_mm256_sub_ps(_mm256_mul_ps(load_tail(xt, 0.0), sv), tv)));
    }
    hsum(acc) + xt.iter().sum::<f32>()
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn softmax_row_f32(src: &[f32], dst: &mut [f32]) {
    // src, dst: [C]
    let m = _mm256_set1_ps(hmax(max_vec(src)));
    let mut acc = _mm256_setzero_ps();
    let (sc, st) = src.as_chunks::<W>();
    let (dc, dt) = dst.as_chunks_mut::<W>();
    for (s, d) in sc.iter().zip(dc.iter_mut()) {
        let e = exp8(_mm256_sub_ps(load(s), m));
        store(d, e);
        acc = _mm256_add_ps(acc, e);
    }
    if !st.is_empty() {
        // Padding lanes hold -inf, so they add e^{-inf} = 0 to the sum.
        let e = exp8(_mm256_sub_ps(load_tail(st, f32::NEG_INFINITY), m));
        store_tail(dt, e);
        acc = _mm256_add_ps(acc, e);
    }
    let inv = _mm256_set1_ps(1.0 / hsum(acc));
    for d in dc {
        store(d, _mm256_mul_ps(load(d), inv));
    }
    if !dt.is_empty() {
        store_tail(dt, _mm256_mul_ps(load_tail(dt, 0.0), inv));
    }
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn softmax_backward_row_f32(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    // y, dy, dx: [C]
    let dot = _mm256_set1_ps(hsum(dot_vec(y, dy)));
    map2!(y, dy, dx, |y, g| _mm256_mul_ps(y, _mm256_sub_ps(g, dot)))
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn layer_norm_row_f32(src: &[f32], gamma: Option<&[f32]>, beta: Option<&[f32]>, eps: f32, dst: &mut [f32]) -> (f32, f32) {
    // src, gamma, beta, dst: [C]
    let n = src.len() as f32;
    // Shifted two-pass: d = x - m0 is exact near the mean (Sterbenz), and the
    // small residual c = mean(d) corrects m0's rounding, so large offsets cost
    // no accuracy in the output.
    let m0 = hsum(sum_vec(src)) / n;
    let mv = _mm256_set1_ps(m0);
    let (sc, st) = src.as_chunks::<W>();
    let (mut acc_d, mut acc_d2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for s in sc {
        let d = _mm256_sub_ps(load(s), mv);
        acc_d = _mm256_add_ps(acc_d, d);
        acc_d2 = _mm256_fmadd_ps(d, d, acc_d2);
    }
    // Tail lanes past the row hold m0 and add nothing.
    let d = _mm256_sub_ps(load_tail(st, m0), mv);
    acc_d = _mm256_add_ps(acc_d, d);
    acc_d2 = _mm256_fmadd_ps(d, d, acc_d2);
    let c = hsum(acc_d) / n;
    let var = hsum(acc_d2) / n - c * c;
    // Clamp rounding below zero; `<` keeps a NaN variance NaN.
    let var = if var < 0.0 { 0.0 } else { var };
    let rstd = 1.0 / (var + eps).sqrt();
    let rv = _mm256_set1_ps(rstd);
    // x̂ = (x - m0)·rstd - c·rstd
    let shift = _mm256_set1_ps(-c * rstd);
    let (gc, gt) = gamma.map_or((&[][..], &[][..]), |g| g.as_chunks::<W>());
    let (bc, bt) = beta.map_or((&[][..], &[][..]), |b| b.as_chunks::<W>());
    let (one, zero) = (_mm256_set1_ps(1.0), _mm256_setzero_ps());
    let (dc, dt) = dst.as_chunks_mut::<W>();
    for (i, (s, d)) in sc.iter().zip(dc).enumerate() {
        let xhat = _mm256_fmadd_ps(_mm256_sub_ps(load(s), mv), rv, shift);
        let g = gc.get(i).map_or(one, |g| load(g));
        let b = bc.get(i).map_or(zero, |b| load(b));
        store(d, _mm256_fmadd_ps(xhat, g, b));
    }
    if !st.is_empty() {
        let xhat = _mm256_fmadd_ps(_mm256_sub_ps(load_tail(st, m0), mv), rv, shift);
        let g = if gamma.is_some() { load_tail(gt, 1.0) } else { one };
        let b = if beta.is_some() { load_tail(bt, 0.0) } else { zero };
        store_tail(dt, _mm256_fmadd_ps(xhat, g, b));
    }
    (m0 + c, rstd)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn layer_norm_backward_row_f32(inp: &LnBackwardIn, dx: &mut [f32], mut dgamma: Option<&mut [f32]>, mut dbeta: Option<&mut [f32]>) {
    // x, dy, gamma, dx, dgamma, dbeta: [C]
    let n = inp.x.len();
    let (mv, rv) = (_mm256_set1_ps(inp.mean), _mm256_set1_ps(inp.rstd));
    let one = _mm256_set1_ps(1.0);
    // Vector i of each operand (i == n / W is the padded tail): x pads with the
    // mean and dy with 0, so padding lanes contribute nothing to the sums.
    let lane = |s: &[f32], i: usize, fill: f32| -> __m256 {
        let (c, t) = s.as_chunks::<W>();
        c.get(i).map_or_else(|| load_tail(t, fill), |v| load(v))
    };
    let put = |s: &mut [f32], i: usize, v: __m256| {
        let (c, t) = s.as_chunks_mut::<W>();
        match c.get_mut(i) {
            Some(d) => store(d, v),
            None => store_tail(t, v),
        }
    };
    let steps = n.div_ceil(W);
    let (mut g_acc, mut gx_acc) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in 0..steps {
        let xhat = _mm256_mul_ps(_mm256_sub_ps(lane(inp.x, i, inp.mean), mv), rv);
        let dy = lane(inp.dy, i, 0.0);
        let g = _mm256_mul_ps(dy, inp.gamma.map_or(one, |w| lane(w, i, 1.0)));
        g_acc = _mm256_add_ps(g_acc, g);
        gx_acc = _mm256_fmadd_ps(g, xhat, gx_acc);
        if let Some(dg) = dgamma.as_deref_mut() {
            put(dg, i, _mm256_fmadd_ps(dy, xhat, lane(dg, i, 0.0)));
        }
        if let Some(db) = dbeta.as_deref_mut() {
            put(db, i, _mm256_add_ps(dy, lane(db, i, 0.0)));
        }
    }
    let g_mean = _mm256_set1_ps(hsum(g_acc) / n as f32);
    let gx_mean = _mm256_set1_ps(hsum(gx_acc) / n as f32);
    for i in 0..steps {
        let xhat = _mm256_mul_ps(_mm256_sub_ps(lane(inp.x, i, inp.mean), mv), rv);
        let g = _mm256_mul_ps(lane(inp.dy, i, 0.0), inp.gamma.map_or(one, |w| lane(w, i, 1.0)));
        let d = _mm256_fnmadd_ps(xhat, gx_mean, _mm256_sub_ps(g, g_mean));
        put(dx, i, _mm256_mul_ps(d, rv));
    }
}
