//! AVX-512F kernels: 16 f32 lanes. Full vectors come from `as_chunks::<16>()`;
//! the tail (< 16 elements) is read and written with masked loads and stores,
//! which never touch the masked-off lanes' memory.
//!
//! Entry points are `unsafe fn` only because they need AVX-512F; helpers are
//! safe `#[target_feature]` functions that inline into them.

#![deny(unsafe_op_in_unsafe_fn)]

use super::consts::*;
use super::{Isa, Kernels, LnBackwardIn};
use std::arch::x86_64::*;

const W: usize = 16;

pub(super) static KERNELS: Kernels = Kernels {
    isa: Isa::Avx512,
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

/// `eˣ` per lane; see the module docs of `simd` for the method and its error.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    // min/max return their second operand when either is NaN: NaN passes through.
    let x = _mm512_min_ps(_mm512_set1_ps(EXP_HI), x);
    let x = _mm512_max_ps(_mm512_set1_ps(EXP_LO), x);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(EXP_P[0]);
    for &c in &EXP_P[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
    // p·2ⁿ with a single rounding, subnormal and overflowing results included.
    _mm512_scalef_ps(p, n)
}

/// `x·Φ(x)` per lane.
#[inline]
#[target_feature(enable = "avx512f")]
fn gelu_erf16(x: __m512) -> __m512 {
    let z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(FRAC_1_SQRT_2));
    let t = _mm512_div_ps(_mm512_set1_ps(1.0), _mm512_fmadd_ps(z, _mm512_set1_ps(ERF_P), _mm512_set1_ps(1.0)));
    let mut poly = _mm512_set1_ps(ERF_A[4]);
    for &a in ERF_A[..4].iter().rev() {
        poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(a));
    }
    // erfc(z) ≈ t·poly·e^{-z²}
    let erfc = _mm512_mul_ps(_mm512_mul_ps(poly, t), exp16(_mm512_fnmadd_ps(z, z, _mm512_setzero_ps())));
    let half = _mm512_mul_ps(erfc, _mm512_set1_ps(0.5));
    // Φ(x) = 1 - erfc/2 for x ≥ 0, erfc/2 for x < 0 (x's sign bit, as AVX2's blendv).
    let negative = _mm512_test_epi32_mask(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
    let phi = _mm512_mask_blend_ps(negative, _mm512_sub_ps(_mm512_set1_ps(1.0), half), half);
    _mm512_mul_ps(x, phi)
}

/// `x / (1 + e^{-2u})` per lane, `2u = x·(C1 + C3·x²)`.
#[inline]
#[target_feature(enable = "avx512f")]
fn gelu_tanh16(x: __m512) -> __m512 {
    let x2 = _mm512_mul_ps(x, x);
    let neg_inner = _mm512_fnmadd_ps(x2, _mm512_set1_ps(GT_C3), _mm512_set1_ps(-GT_C1));
    let e = exp16(_mm512_mul_ps(x, neg_inner));
    _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e))
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

/// # Safety
/// The CPU must support AVX-512F (as for every entry point below).
#[target_feature(enable = "avx512f")]
pub unsafe fn exp_f32(src: &[f32], dst: &mut [f32]) {
    map1!(src, dst, exp16)
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn gelu_erf_f32(src: &[f32], dst: &mut [f32]) {
    map1!(src, dst, gelu_erf16)
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn gelu_tanh_f32(src: &[f32], dst: &mut [f32]) {
    map1!(src, dst, gelu_tanh16)
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
