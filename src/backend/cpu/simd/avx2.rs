//! AVX2 + FMA kernels: 8 f32 lanes. Full vectors come from `as_chunks::<8>()`;
//! the tail (< 8 elements) goes through a stack buffer padded with a neutral
//! value, so it runs the same vector code as the body and no load or store ever
//! leaves its slice.
//!
//! Entry points are `unsafe fn` only because they need AVX2 and FMA; helpers are
//! safe `#[target_feature]` functions that inline into them.

#![deny(unsafe_op_in_unsafe_fn)]

use super::consts::*;
use super::{Isa, Kernels, LnBackwardIn};
use std::arch::x86_64::*;

const W: usize = 8;

pub(super) static KERNELS: Kernels = Kernels {
    isa: Isa::Avx2,
    exp: exp_f32,
    gelu_erf: gelu_erf_f32,
    gelu_tanh: gelu_tanh_f32,
    add: add_f32,
    sub: sub_f32,
    mul: mul_f32,
    sum: sum_f32,
    max: max_f32,
    dot: dot_f32,
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

/// `eˣ` per lane; see the module docs of `simd` for the method and its error.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8(x: __m256) -> __m256 {
    // min/max return their second operand when either is NaN: NaN passes through.
    let x = _mm256_min_ps(_mm256_set1_ps(EXP_HI), x);
    let x = _mm256_max_ps(_mm256_set1_ps(EXP_LO), x);
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(EXP_P[0]);
    for &c in &EXP_P[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
    // n ∈ [-150, 128]: 2ⁿ = 2^n1 · 2^n2 with both halves normal, so the only
    // rounding of a subnormal result happens in the last multiply.
    let ni = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32::<1>(ni);
    let n2 = _mm256_sub_epi32(ni, n1);
    let bias = _mm256_set1_epi32(127);
    let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
    let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
    _mm256_mul_ps(_mm256_mul_ps(p, s1), s2)
}

/// `x·Φ(x)` per lane.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn gelu_erf8(x: __m256) -> __m256 {
    let z = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0), x), _mm256_set1_ps(FRAC_1_SQRT_2));
    let t = _mm256_div_ps(_mm256_set1_ps(1.0), _mm256_fmadd_ps(z, _mm256_set1_ps(ERF_P), _mm256_set1_ps(1.0)));
    let mut poly = _mm256_set1_ps(ERF_A[4]);
    for &a in ERF_A[..4].iter().rev() {
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(a));
    }
    // erfc(z) ≈ t·poly·e^{-z²}
    let erfc = _mm256_mul_ps(_mm256_mul_ps(poly, t), exp8(_mm256_fnmadd_ps(z, z, _mm256_setzero_ps())));
    let half = _mm256_mul_ps(erfc, _mm256_set1_ps(0.5));
    // Φ(x) = 1 - erfc/2 for x ≥ 0, erfc/2 for x < 0 (blendv picks by x's sign bit).
    let phi = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(1.0), half), half, x);
    _mm256_mul_ps(x, phi)
}

/// `x / (1 + e^{-2u})` per lane, `2u = x·(C1 + C3·x²)`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn gelu_tanh8(x: __m256) -> __m256 {
    let x2 = _mm256_mul_ps(x, x);
    let neg_inner = _mm256_fnmadd_ps(x2, _mm256_set1_ps(GT_C3), _mm256_set1_ps(-GT_C1));
    let e = exp8(_mm256_mul_ps(x, neg_inner));
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
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

/// # Safety
/// The CPU must support AVX2 and FMA (as for every entry point below).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp_f32(src: &[f32], dst: &mut [f32]) {
    map1!(src, dst, exp8)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gelu_erf_f32(src: &[f32], dst: &mut [f32]) {
    map1!(src, dst, gelu_erf8)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gelu_tanh_f32(src: &[f32], dst: &mut [f32]) {
    map1!(src, dst, gelu_tanh8)
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
