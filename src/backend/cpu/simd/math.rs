//! f32 elementary functions and the activations built on them, each written
//! once over [`Lanes`] so that the scalar, AVX2 and AVX-512 kernels compute the
//! same formula bit for bit.
//!
//! Accuracy, as `accuracy.rs` measures it on a dense sweep of f32 inputs (every
//! 97th bit pattern of each sign) against f64 references, in ulps of the exact
//! result (and asserts with a little margin): exp 1.0, erf 1.45, tanh 1.3,
//! sigmoid 2.3, GELU 3.6, SiLU 3.4; the backward passes, in ulps of the size of
//! their terms (they cross zero): GELU 2.9, SiLU 3.9, tanh-form GELU 2.2.
//!
//! - [`exp`]: `x = n·ln2 + r`, `|r| ≤ ln2/2` (Cody–Waite: `n·ln2` in two
//!   parts), `eʳ ≈ p = 1 + r + r²·P(r)` with Cephes' degree-5 minimax `P`, then
//!   `p·2ⁿ` rounded once. Overflow gives `inf`, underflow `0`, NaN stays NaN.
//!   Formulas that multiply `eˣ` by other factors take `(p, n)` from
//!   [`exp_parts`] and apply `2ⁿ` last, so that a subnormal result is rounded
//!   once rather than carrying the rounding of a subnormal intermediate.
//! - The normal tail `Φ(−u) = e^{−u²/2} · Q(u)` for `u ≥ 0` ([`normal_tail`]),
//!   which gives GELU and erf. `Q(u) = Φ(−u)·e^{u²/2}` is smooth and slowly
//!   varying, so it is tabulated: 8 pieces of width 2, each a degree-10
//!   polynomial in `u − centre` (coefficients from `scripts/fit_f32_math.py`,
//!   relative error ≤ 1.7·2⁻²⁴ as evaluated in f32), the piece's coefficients
//!   fetched with one 8-entry table lookup (a permute) per power. The
//!   Gaussian factor is where the accuracy is won or lost: `u²` is split into
//!   `hi + lo` exactly (`lo = fma(u, u, −hi)`) and
//!   `e^{−u²/2} = e^{−hi/2}·(1 − lo/2)`, so the exponent carries no rounding.
//!   Computing `erfc(x/√2)` from a rounded `x/√2` instead would lose
//!   `x²·2⁻²⁴` relative, tens of ulps in the tail. There is no cancellation:
//!   `Φ(x) = 1 − Φ(−x)` only for `x ≥ 0`, where `Φ(−x) ≤ 1/2`.
//! - [`gelu`]: `x·Φ(x)`; its derivative `Φ(x) + x·φ(x)` from the same two
//!   factors, each sign's result from one scaled product (`u·Φ(−u)`, or
//!   `Φ(−u) − u·φ(u)`, `u = |x|`). Below `u = 2`, where most activations
//!   lie, `Φ(−u)` and `Φ(−u) − u·φ(u)` are polynomials of their own (two
//!   pieces of width 1, degree 9 and 8), with no exponential. [`erf`]: `z + z·P(z²)` below `|z| = 1/2` (degree-5 minimax),
//!   `1 − 2·e^{−z²}·Q(z√2)` above.
//! - [`tanh`]: `x + x³·P(x²)` below `|x| = 0.625` (degree-5 minimax), else
//!   `1 − 2/(e^{2|x|} + 1)`, with the sign of `x`.
//! - [`sigmoid`]: `1/(1 + e^{−|x|})`, or `e^{−|x|}/(1 + e^{−|x|})` for `x < 0`:
//!   the exponential never overflows and small results keep their relative
//!   accuracy. SiLU `x·σ(x)` and the tanh-form GELU `x·σ(2u)`,
//!   `2u = x·(C1 + C3·x²)`, are built the same way.
//!
//! At ±∞ and NaN every formula gives what the contract's scalar formula gives
//! in f64 (`x·Φ(x)` is NaN at −∞, as in PyTorch), tested in `accuracy.rs`.
//!
//! Each [`UnaryFormula`] pairs a forward formula with its backward pass
//! `dx = dy·f'(x)`, computed from whichever of `x` and `y = f(x)` is cheaper.

use super::lanes::{horner, Lanes};

/// `exp` clamps its input to `[EXP_LO, EXP_HI]`: `e^88.8` overflows to inf and
/// `e^-104` rounds to 0, so clamping changes no result.
const EXP_HI: f32 = 88.8;
const EXP_LO: f32 = -104.0;
/// [`exp_parts`] clamps its input here: `n` stays where `Lanes::mul_pow2` is exact.
const EXP_PARTS_LO: f32 = -150.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n·LN2_HI` is exact for |n| ≤ 2⁹ (Cody–Waite).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf` minimax: `eʳ ≈ 1 + r + r²·(((((P0 r + P1) r + P2) r + P3) r + P4) r + P5)`.
const EXP_P: [f32; 6] = [1.987_569_2e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

/// `Q(u) = Φ(−u)·e^{u²/2}` on `[2k, 2k + 2]` is `Σⱼ PHI_TAIL[j][k]·(u − 2k − 1)ʲ`
/// (stored by power, then piece, so that one table lookup fetches the
/// coefficient of every lane's piece). From `scripts/fit_f32_math.py`.
#[allow(clippy::excessive_precision)]
const PHI_TAIL: [[f32; 8]; 11] = [
    [
        0.2615782916545868,
        0.12151394784450531,
        0.0769193023443222,
        0.05589348077774048,
        0.043798789381980896,
        0.0359748899936676,
        0.03050941415131092,
        0.026479488238692284,
    ],
    [
        -0.137364000082016,
        -0.03440043702721596,
        -0.01434575580060482,
        -0.0076879034750163555,
        -0.004753180779516697,
        -0.003218494588509202,
        -0.0023198919370770454,
        -0.0017499454552307725,
    ],
    [
        0.06210713088512421,
        0.009156321175396442,
        0.0025952637661248446,
        0.0010390796232968569,
        0.0005100818816572428,
        0.0002857246727216989,
        0.000175409484654665,
        0.00011515390360727906,
    ],
    [
        -0.02508522756397724,
        -0.002310488373041153,
        -0.0004564790287986398,
        -0.0001381153560942039,
        -5.414782208390534e-05,
        -2.5174358597723767e-05,
        -1.3189541277824901e-05,
        -7.545626431237906e-06,
    ],
    [
        0.009255497716367245,
        0.0005562123260460794,
        7.82170973252505e-05,
        1.8068034478346817e-05,
        5.6878707255236804e-06,
        2.201685447289492e-06,
        9.863614423011313e-07,
        4.923761594000098e-07,
    ],
    [
        -0.0031682299450039864,
        -0.00012838320981245488,
        -1.3078946722089313e-05,
        -2.327831680304371e-06,
        -5.913979066463071e-07,
        -1.9116386340556346e-07,
        -7.336848284467123e-08,
        -3.199675191467577e-08,
    ],
    [
        0.0010148360161110759,
        2.8517873943201266e-05,
        2.1372798073571175e-06,
        2.955481193112064e-07,
        6.088284010274947e-08,
        1.64806319702393e-08,
        5.428572258381337e-09,
        2.07082351266763e-09,
    ],
    [
        -0.0003023037570528686,
        -6.0888269217684865e-06,
        -3.412470164221304e-07,
        -3.6976221196027836e-08,
        -6.205726155172897e-09,
        -1.4107834900300986e-09,
        -3.995445363447203e-10,
        -1.3347742355840353e-10,
    ],
    [
        8.790512947598472e-05,
        1.2666612292377977e-06,
        5.3479194406236275e-08,
        4.5669663606418e-09,
        6.268111585328029e-10,
        1.1996661997137892e-10,
        2.925935882469588e-11,
        8.570342352465232e-12,
    ],
    [
        -2.922809471783694e-05,
        -2.840977515461418e-07,
        -8.751716684685107e-09,
        -5.794461022112785e-10,
        -6.445946554300974e-11,
        -1.0331264489737979e-11,
        -2.1630332074085157e-12,
        -5.545286994347587e-13,
    ],
    [
        7.337237548199482e-06,
        5.488628573857568e-08,
        1.3131595810733643e-09,
        6.959544746054647e-11,
        6.386659864160427e-12,
        8.653275036622776e-13,
        1.5637897877660012e-13,
        3.5059818546609445e-14,
    ],
];
/// `Φ(−u)` on `[0, 2)`: piece 0 is `[0, 1)`, `Σⱼ PHI_BELOW_2[j][0]·(u − ½)ʲ`,
/// piece 1 `[1, 2)` about `3/2` (by power, then piece). From
/// `scripts/fit_f32_math.py`: relative error ≤ 2.14·2⁻²⁴ as evaluated in f32.
#[allow(clippy::excessive_precision)]
const PHI_BELOW_2: [[f32; 2]; 10] = [
    [0.308_537_54, 0.066_807_2],
    [-0.352_065_32, -0.129_517_6],
    [0.088_016_324, 0.097_138_2],
    [0.044_008_136, -0.026_982_803],
    [-0.020_170_057, -0.006_071_326_3],
    [-0.004_583_744_8, 0.005_868_325_5],
    [0.003_067_359_1, -0.000_655_401_67],
    [0.000_324_029_62, -0.000_555_373_67],
    [-0.000_330_500_97, 0.000_163_790_68],
    [-8.331_406e-6, 2.101_629e-5],
];
/// GELU's derivative's `s(u) = Φ(−u) − u·φ(u)` on `[0, 2)`, pieces as
/// [`PHI_BELOW_2`]'s. From `scripts/fit_f32_math.py`: error ≤ 1.37·2⁻²⁴ of
/// the size of its terms `Φ(−u) + u·φ(u)` (it crosses zero near u = 0.75, where GELU is smallest).
#[allow(clippy::excessive_precision)]
const GELU_SLOPE_BELOW_2: [[f32; 2]; 9] = [
    [0.132_504_88, -0.127_469_2],
    [-0.616_114_3, 0.032_379_4],
    [0.330_061_1, 0.169_991_96],
    [0.135_691_97, -0.144_358_2],
    [-0.112_308, 0.013_656_89],
    [-0.018_293_058, 0.029_294_785],
    [0.022_593_403, -0.010_427_816],
    [0.001_227_299_3, -0.002_374_468_6],
    [-0.002_984_277, 0.001_778_494_2],
];
/// The tail table covers `u < 16`; beyond 15.5 `e^{−u²/2}` is 0 in f32.
const TAIL_U_MAX: f32 = 15.5;
/// `erf(z) = z + z·P(z²)` for `|z| < 1/2`: `P`, from `scripts/fit_f32_math.py`.
#[allow(clippy::excessive_precision)]
const ERF_SMALL: [f32; 6] = [
    0.12837916612625122,
    -0.37612637877464294,
    0.11283773928880692,
    -0.02686312049627304,
    0.0052003092132508755,
    -0.0007692863000556827,
];
/// `erf` clamps `|z|` here before squaring it: `erf(11) = 1` in f32.
const ERF_Z_MAX: f32 = 11.0;
/// `tanh(x) = x + x³·P(x²)` for `|x| < TANH_SMALL_MAX`: `P`, from `scripts/fit_f32_math.py`.
#[allow(clippy::excessive_precision)]
const TANH_SMALL: [f32; 6] = [
    -0.3333333134651184,
    0.1333320587873459,
    -0.05394676327705383,
    0.021700702607631683,
    -0.008177397772669792,
    0.002142961835488677,
];
const TANH_SMALL_MAX: f32 = 0.625;
/// `tanh` clamps `|x|` here: `tanh(10) = 1` in f32, and `e^{2x}` stays finite.
const TANH_X_MAX: f32 = 10.0;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
/// `2u = x·(GT_C1 + GT_C3·x²)` with `u = √(2/π)·(x + 0.044715·x³)`.
const GT_C1: f32 = 2.0 * 0.797_884_6;
const GT_C3: f32 = 2.0 * 0.797_884_6 * 0.044_715;

/// `eˣ`, within 1 ulp for normal results (and one rounding of a subnormal one).
#[inline(always)]
pub(crate) fn exp<V: Lanes>(x: V) -> V {
    // `c.max(x)` lets a NaN `x` through.
    let (p, n) = exp_parts(x.splat(EXP_LO).max(x));
    p.mul_pow2(n)
}

/// `eˣ = p·2ⁿ` with `p` in `[0.7, 1.5)` and `n` integral in `[-217, 128]`: a
/// caller that multiplies `eˣ` by other factors applies `2ⁿ` last, so that a
/// result in the subnormal range is rounded once instead of carrying the
/// rounding of a subnormal intermediate. Below `e^{-150}` the parts are those
/// of `e^{-150}` (`2ⁿ` alone underflows to 0).
#[inline(always)]
fn exp_parts<V: Lanes>(x: V) -> (V, V) {
    // `c.min(x)` and `c.max(x)` let a NaN `x` through.
    let x = x.splat(EXP_HI).min(x);
    exp_parts_in_range(x.splat(EXP_PARTS_LO).max(x))
}

/// [`exp_parts`] for `x` already in `[EXP_PARTS_LO, EXP_HI]` (or NaN), as the
/// Gaussian's exponent `−k·u²` is for the clamped `u` of its callers: the
/// clamps would change nothing there.
#[inline(always)]
fn exp_parts_in_range<V: Lanes>(x: V) -> (V, V) {
    let n = (x * x.splat(LOG2E)).round();
    let r = n.neg_mul_add(x.splat(LN2_HI), x);
    let r = n.neg_mul_add(x.splat(LN2_LO), r);
    let p = horner(&EXP_P_HORNER, r);
    let p = p.mul_add(r * r, r) + x.splat(1.0);
    (p, n)
}

/// [`EXP_P`] lowest power first, for [`horner`].
const EXP_P_HORNER: [f32; 6] = [EXP_P[5], EXP_P[4], EXP_P[3], EXP_P[2], EXP_P[1], EXP_P[0]];

/// `e^{−k·u²} = m·2ⁿ` (as [`exp_parts`]) for `k` = 1/2 or 1, with `u²` split
/// exactly into `hi + lo` so that the exponent is not rounded:
/// `e^{−k·hi}·(1 − k·lo)`. `u` must be NaN or in `[0, 15.5]`, where `−k·hi`
/// is in range for [`exp_parts_in_range`].
#[inline(always)]
fn gaussian_parts<V: Lanes>(u: V, k: f32) -> (V, V) {
    let hi = u * u;
    let lo = u.mul_add(u, -hi);
    let (p, n) = exp_parts_in_range(hi * u.splat(-k));
    (p.mul_add(lo * u.splat(-k), p), n)
}

/// `Q(u) = Φ(−u)·e^{u²/2}` for `u` in `[0, 16)` from the piecewise table.
///
/// v2: when every lane is in the first piece (`u < 2`, most activations),
/// its coefficients are splatted rather than looked up: 11 table lookups
/// (a permute each on AVX-512, which shares a port with the FMAs) and the
/// piece's index fewer per vector, and bit for bit the same result, as the
/// lookup of piece 0 gives exactly these coefficients and `r = u − 1` is
/// what `u − (2·0 + 1)` rounds to. Since GELU's v3 only erf comes here
/// with every lane below 2 (`|z| < √2`): GELU's values below 2 take their
/// own polynomials, and its vectors that reach this have a lane at or above 2.
#[inline(always)]
fn phi_tail_ratio<V: Lanes>(u: V) -> V {
    if u.all_less(2.0) {
        let r = u - u.splat(1.0);
        let mut j = PHI_TAIL.len() - 1;
        let mut acc = u.splat(PHI_TAIL[j][0]);
        while j > 0 {
            j -= 1;
            acc = acc.mul_add(r, u.splat(PHI_TAIL[j][0]));
        }
        return acc;
    }
    let piece = (u * u.splat(0.5)).floor();
    let r = u - piece.mul_add(u.splat(2.0), u.splat(1.0));
    let i = piece.index();
    // Horner's rule; a plain loop, as iterator adaptors may stay out of line
    // (a call per vector) in the `#[target_feature]` kernels.
    let mut j = PHI_TAIL.len() - 1;
    let mut acc = V::lookup(&PHI_TAIL[j], i);
    while j > 0 {
        j -= 1;
        acc = acc.mul_add(r, V::lookup(&PHI_TAIL[j], i));
    }
    acc
}

/// The normal tail `Φ(−u) = m·2ⁿ·Q(u)` as `(u, m, n, Q)`, with
/// `e^{−u²/2} = m·2ⁿ` and `u = |x|` clamped at 15.5, where `2ⁿ` underflows
/// to 0 (±inf included).
#[inline(always)]
fn normal_tail<V: Lanes>(x: V) -> (V, V, V, V) {
    let u = x.splat(TAIL_U_MAX).min(x.abs());
    let (m, n) = gaussian_parts(u, 0.5);
    (u, m, n, phi_tail_ratio(u))
}

/// `v`, but NaN where `x` is −∞: the references `x·Φ(x)` and `x·σ(x)` are
/// `−∞·0` there, a product the kernels never form (they scale by `2ⁿ` last).
#[inline(always)]
fn nan_at_minus_infinity<V: Lanes>(x: V, v: V) -> V {
    x.select_less(x.splat(-f32::MAX), x.splat(f32::NAN), v)
}

/// `Σⱼ table[j][piece]·(u − centre)ʲ` for every lane of `u` in `[0, 2)`:
/// piece 0 (`u < 1`, centre ½) or 1 (centre 3/2), each coefficient picked per
/// lane by one select (the comparison is the same for all of them).
#[inline(always)]
fn two_pieces_below_2<V: Lanes, const N: usize>(table: &[[f32; 2]; N], u: V) -> V {
    let one = u.splat(1.0);
    let r = u - piece_value(u, one, &[0.5, 1.5]);
    // Horner's rule in a plain loop, as in `horner`.
    let mut j = N - 1;
    let mut acc = piece_value(u, one, &table[j]);
    while j > 0 {
        j -= 1;
        acc = acc.mul_add(r, piece_value(u, one, &table[j]));
    }
    acc
}

/// `c[0]` in the lanes of `u` below `one`, `c[1]` in the others.
#[inline(always)]
fn piece_value<V: Lanes>(u: V, one: V, c: &[f32; 2]) -> V {
    u.select_less(one, u.splat(c[0]), u.splat(c[1]))
}

/// `x·Φ(x)`, GELU's exact (erf) form.
///
/// v2: `w = u·Q·m·2ⁿ = u·Φ(−u)` is formed once for both signs: `−w` for
/// `x < 0` (the same operations as v1's, bit for bit) and `x − w` for
/// `x ≥ 0`, where v1 scaled `Q·m` separately and formed `x − min(x, 20)·(Q·m·2ⁿ)`:
/// one multiply, one `scalef` and one `min` fewer per vector. The AVX-512
/// loop went from 76 to 68 instructions per 16 lanes (multiplies, FMAs and
/// `scalef`s, which share two pipes: 33 to 30), AVX2's from 86 to 77 (objdump
/// of the release build); the machine was too loaded for a wall-clock figure.
#[inline(always)]
pub(crate) fn gelu<V: Lanes>(x: V) -> V {
    // v3: below |x| = 2 (most activations) `Φ(−u)` comes from a polynomial
    // of its own rather than `e^{−u²/2}·Q(u)`: no exponential, no split
    // square, no scaling. A lane's path depends on that lane alone, so a
    // vector with a lane at or above 2 computes both and selects.
    let size = x.abs();
    let w = size * two_pieces_below_2(&PHI_BELOW_2, size);
    let below_2 = x.select_negative(-w, x - w);
    if size.all_less(2.0) {
        return below_2;
    }
    let (u, m, n, ratio) = normal_tail(x);
    // 2ⁿ last: a subnormal result is rounded once. Past u = 15.5 (the clamp)
    // 2ⁿ is 0 and w too, so x = +inf gives inf, not inf·0.
    let w = (u * ratio * m).mul_pow2(n);
    size.select_less(x.splat(2.0), below_2, x.select_negative(nan_at_minus_infinity(x, -w), x - w))
}

/// GELU's derivative `Φ(x) + x·φ(x)`, `φ(x) = e^{−x²/2}/√(2π)`.
///
/// v2: with `s = e^{−u²/2}·(Q − u/√(2π))` (`u = |x|`), the derivative is `s`
/// for `x < 0` and `1 − s` for `x ≥ 0`, so `s` is formed and scaled once;
/// v1 formed and scaled each sign's value. AVX-512 loop: 77 to 73
/// instructions per 16 lanes (multiply/FMA/`scalef` 34 to 31), AVX2's 86 to
/// 80; the worst error measured in `accuracy.rs` went from 3.3 to 2.9 ulp
/// (`Q − u/√(2π)` is now one fused operation).
#[inline(always)]
pub(crate) fn gelu_derivative<V: Lanes>(x: V) -> V {
    // v3: `s` from a polynomial of its own below |x| = 2, as in `gelu`.
    let size = x.abs();
    let s = two_pieces_below_2(&GELU_SLOPE_BELOW_2, size);
    let below_2 = x.select_negative(s, x.splat(1.0) - s);
    if size.all_less(2.0) {
        return below_2;
    }
    let (u, m, n, ratio) = normal_tail(x);
    let s = (u.neg_mul_add(x.splat(FRAC_1_SQRT_2PI), ratio) * m).mul_pow2(n);
    let below = nan_at_minus_infinity(x, s);
    // x ≥ 0: 1 − s; NaN at +inf, as the reference's x·φ(x) = inf·0 is (the
    // clamped u would give 1).
    let above = x.select_less(x.splat(f32::INFINITY), x.splat(1.0) - s, x.splat(f32::NAN));
    size.select_less(x.splat(2.0), below_2, x.select_negative(below, above))
}

/// The error function.
#[inline(always)]
pub(crate) fn erf<V: Lanes>(z: V) -> V {
    let a = z.abs();
    let small = z.mul_add(horner(&ERF_SMALL, z * z), z);
    // erfc(a) = 2·Φ(−a√2) = 2·e^{−a²}·Q(a√2); the rounding of a√2 only moves
    // the slowly varying Q.
    let a = z.splat(ERF_Z_MAX).min(a);
    let ratio = phi_tail_ratio(z.splat(TAIL_U_MAX).min(a * z.splat(std::f32::consts::SQRT_2)));
    let (m, n) = gaussian_parts(a, 1.0);
    let large = (m.mul_pow2(n) * z.splat(2.0)).neg_mul_add(ratio, z.splat(1.0));
    a.select_less(z.splat(0.5), small, large.copy_sign(z))
}

/// Hyperbolic tangent.
#[inline(always)]
pub(crate) fn tanh<V: Lanes>(x: V) -> V {
    let x2 = x * x;
    let small = (x * x2).mul_add(horner(&TANH_SMALL, x2), x);
    let a = x.abs();
    let e = exp(x.splat(2.0) * x.splat(TANH_X_MAX).min(a));
    let large = x.splat(1.0) - x.splat(2.0) / (e + x.splat(1.0));
    // tanh is odd: the sign of x (which x + x³·P(x²) loses at x = −0).
    a.select_less(x.splat(TANH_SMALL_MAX), small, large).copy_sign(x)
}

/// `σ(x) = 1/(1 + e⁻ˣ)`: one division, whatever the sign.
#[inline(always)]
pub(crate) fn sigmoid<V: Lanes>(x: V) -> V {
    let e = exp(-x.abs());
    x.select_negative(e, x.splat(1.0)) / (e + x.splat(1.0))
}

/// The pieces of `σ(t)` and `σ(−t)`, from `e = e^{−|t|} = p·2ⁿ` (as
/// [`exp_parts`]) and `inv = 1/(1 + e)`, which never overflow: for `t ≥ 0`
/// `σ(t) = inv` and `σ(−t) = e·inv`; for `t < 0` `σ(t) = p·inv·2ⁿ`, to be
/// scaled by `2ⁿ` last, and `σ(−t) = inv`.
struct SigmoidParts<V> {
    p: V,
    n: V,
    e: V,
    inv: V,
}

#[inline(always)]
fn sigmoid_parts<V: Lanes>(t: V) -> SigmoidParts<V> {
    let (p, n) = exp_parts(-t.abs());
    let e = p.mul_pow2(n);
    SigmoidParts {
        p,
        n,
        e,
        inv: t.splat(1.0) / (e + t.splat(1.0)),
    }
}

/// `x` clamped below at −150. The activations below compute `x·σ(t)` with
/// `t ≤ x` for `x < 0`, which is 0 in f32 for `x < −150`: the clamp keeps
/// `x·2ⁿ`-style products from overflowing there before they underflow.
#[inline(always)]
fn clamp_below<V: Lanes>(x: V) -> V {
    x.splat(EXP_PARTS_LO).max(x)
}

/// `x·σ(x)`, SiLU.
#[inline(always)]
pub(crate) fn silu<V: Lanes>(x: V) -> V {
    let SigmoidParts { p, n, inv, .. } = sigmoid_parts(x);
    let below = nan_at_minus_infinity(x, (clamp_below(x) * p * inv).mul_pow2(n));
    x.select_negative(below, x * inv)
}

/// SiLU's derivative `σ(x)·(1 + x·σ(−x))`.
#[inline(always)]
pub(crate) fn silu_derivative<V: Lanes>(x: V) -> V {
    let SigmoidParts { p, n, e, inv } = sigmoid_parts(x);
    let below = nan_at_minus_infinity(x, (p * inv * clamp_below(x).mul_add(inv, x.splat(1.0))).mul_pow2(n));
    x.select_negative(below, inv.mul_add(x * (e * inv), inv))
}

/// For the tanh-form GELU `y = x·σ(t)`: `(x', x'², t)` with `x'` = `x` clamped
/// below at −150 ([`clamp_below`]), `x'²` clamped above at 10⁴ (past |x| = 100
/// `σ(t)·σ(−t)` is 0 in f32; the clamp keeps `t'` finite so that `0·t'` is
/// not NaN) and `t = 2u = x'·(C1 + C3·x'²)`.
#[inline(always)]
fn gelu_tanh_argument<V: Lanes>(x: V) -> (V, V, V) {
    let xc = clamp_below(x);
    let x2 = x.splat(1e4).min(xc * xc);
    (xc, x2, xc * x2.mul_add(x.splat(GT_C3), x.splat(GT_C1)))
}

/// GELU's tanh form `x/2·(1 + tanh u) = x·σ(2u)`.
#[inline(always)]
pub(crate) fn gelu_tanh<V: Lanes>(x: V) -> V {
    let (xc, _, t) = gelu_tanh_argument(x);
    let SigmoidParts { p, n, inv, .. } = sigmoid_parts(t);
    let below = nan_at_minus_infinity(x, (xc * p * inv).mul_pow2(n));
    x.select_negative(below, x * inv)
}

/// The tanh-form GELU's derivative `σ(t) + x·σ(t)·σ(−t)·t'`, `t' = C1 + 3·C3·x²`.
#[inline(always)]
pub(crate) fn gelu_tanh_derivative<V: Lanes>(x: V) -> V {
    let (xc, x2, t) = gelu_tanh_argument(x);
    let dt = x2.mul_add(x.splat(3.0 * GT_C3), x.splat(GT_C1));
    let SigmoidParts { p, n, e, inv } = sigmoid_parts(t);
    // x < 0: σ(t)·(1 + x·σ(−t)·t'), scaled by 2ⁿ last.
    let below = nan_at_minus_infinity(x, (p * inv * (xc * inv).mul_add(dt, x.splat(1.0))).mul_pow2(n));
    let above = inv.mul_add(x * (e * inv) * dt, inv);
    x.select_negative(below, above)
}

/// Which value a backward formula reads besides `dy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// The forward's input `x`.
    Input,
    /// The forward's output `y = f(x)`.
    Output,
}

/// A unary function as the SIMD kernels run it: `forward` is `y = f(x)`;
/// `backward(v, dy)` is `dx = dy·f'(x)`, where `v` is `x` or `y` as
/// [`UnaryFormula::READS`] says.
pub(crate) trait UnaryFormula {
    const READS: Reads;
    fn forward<V: Lanes>(x: V) -> V;
    fn backward<V: Lanes>(v: V, dy: V) -> V;
}

macro_rules! formula {
    ($(#[$doc:meta])* $ty:ident, |$x:ident| $forward:expr, $reads:ident |$v:ident, $dy:ident| $backward:expr) => {
        $(#[$doc])*
        pub(crate) struct $ty;
        impl UnaryFormula for $ty {
            const READS: Reads = Reads::$reads;
            #[inline(always)]
            fn forward<V: Lanes>($x: V) -> V {
                $forward
            }
            #[inline(always)]
            fn backward<V: Lanes>($v: V, $dy: V) -> V {
                $backward
            }
        }
    };
}

formula!(/// `eˣ`; `dx = dy·y`.
    Exp, |x| exp(x), Output |y, dy| dy * y);
formula!(/// GELU (erf form); `dx = dy·(Φ(x) + x·φ(x))`.
    Gelu, |x| gelu(x), Input |x, dy| dy * gelu_derivative(x));
formula!(/// GELU (tanh form).
    GeluTanh, |x| gelu_tanh(x), Input |x, dy| dy * gelu_tanh_derivative(x));
formula!(/// `tanh x`; `dx = dy·(1 − y²)`.
    Tanh, |x| tanh(x), Output |y, dy| dy * y.neg_mul_add(y, y.splat(1.0)));
formula!(/// `σ(x)`; `dx = dy·y·(1 − y)`.
    Sigmoid, |x| sigmoid(x), Output |y, dy| dy * (y * (y.splat(1.0) - y)));
formula!(/// `x·σ(x)`; `dx = dy·σ·(1 + x·(1 − σ))`.
    Silu, |x| silu(x), Input |x, dy| dy * silu_derivative(x));

/// The forward pass of a [`UnaryFormula`], as a kernel.
pub(crate) struct Forward<K>(std::marker::PhantomData<K>);
/// The backward pass of a [`UnaryFormula`], as a kernel.
pub(crate) struct Backward<K>(std::marker::PhantomData<K>);
/// [`erf`], as a kernel.
pub(crate) struct Erf;
