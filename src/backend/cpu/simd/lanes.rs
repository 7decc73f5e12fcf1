//! [`Lanes`]: the arithmetic the formulas of `math.rs` are written in, for one
//! f32 at a time (the scalar body, this file) or 8 (`avx2.rs`) or 16
//! (`avx512.rs`) lanes.
//!
//! A formula written once over this trait is the same sequence of operations
//! in every body, and every operation here is either exact (min, max,
//! rounding to an integer, selection, sign copies, scaling by 2ⁿ, table
//! lookup) or one correctly rounded IEEE operation (add, sub, mul, div and the
//! fused multiply-add), so the scalar, AVX2 and AVX-512 bodies of a formula
//! agree bit for bit (`tests.rs` checks it). NaN lanes may differ in payload
//! or sign, never in being NaN.
//!
//! Soundness: a vector value exists only where its instruction set does (the
//! vector types' constructors are `#[target_feature]` functions of their
//! modules), so their methods may use those instructions on any value that
//! exists. For the same reason constants are made from a vector already in
//! hand (`x.splat(0.5)`), never from nothing.

use std::ops::{Add, Div, Mul, Neg, Sub};

/// f32 lanes and the operations the formula kernels need.
pub(crate) trait Lanes: Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> + Neg<Output = Self> {
    /// Lane indices into an 8-entry table (see [`Lanes::lookup`]).
    type Index: Copy;

    /// `v` in every lane.
    fn splat(self, v: f32) -> Self;
    /// `self·a + b`, rounded once.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// `b − self·a`, rounded once.
    fn neg_mul_add(self, a: Self, b: Self) -> Self;
    /// `|self|`: the sign bit cleared (NaNs included).
    fn abs(self) -> Self;
    /// `self` with the sign bit of `sign`.
    fn copy_sign(self, sign: Self) -> Self;
    /// `self < o ? self : o`, x86's `minps`: `o` when either is NaN, so
    /// `c.min(x)` clamps `x` from above and lets a NaN `x` through.
    fn min(self, o: Self) -> Self;
    /// `self > o ? self : o`, x86's `maxps` (`o` when either is NaN).
    fn max(self, o: Self) -> Self;
    /// The nearest integer, ties to even.
    fn round(self) -> Self;
    /// The largest integer not above `self`.
    fn floor(self) -> Self;
    /// `self · 2ⁿ` for lanes of `n` holding integers in `[-250, 250]`,
    /// rounded once (subnormal results included).
    fn mul_pow2(self, n: Self) -> Self;
    /// `if_negative` where the sign bit of `self` is set (−0 included),
    /// `otherwise` elsewhere.
    fn select_negative(self, if_negative: Self, otherwise: Self) -> Self;
    /// `if_less` where `self < bound`, `otherwise` elsewhere (NaN included).
    fn select_less(self, bound: Self, if_less: Self, otherwise: Self) -> Self;
    /// `if_nonzero` where `self ≠ 0` (NaN included), `otherwise` where it is ±0.
    fn select_nonzero(self, if_nonzero: Self, otherwise: Self) -> Self;
    /// Each lane truncated to an index for [`Lanes::lookup`]: lanes holding
    /// values in `[0, 8)` give that entry; any other lane gives some entry.
    fn index(self) -> Self::Index;
    /// `table[i]` in each lane.
    fn lookup(table: &[f32; 8], i: Self::Index) -> Self;
    /// Whether every lane is below `bound` (false where any is NaN): lets a
    /// formula skip work that no lane needs, never change a lane's result.
    fn all_less(self, bound: f32) -> bool;
}

/// `Σ cⱼ·xʲ` by Horner's rule (`c[0]` is the constant term).
#[inline(always)]
pub(crate) fn horner<V: Lanes, const N: usize>(c: &[f32; N], x: V) -> V {
    // A plain loop: iterator adaptors may stay out of line (a call per vector)
    // in the `#[target_feature]` kernels.
    let Some(&last) = c.last() else {
        return x.splat(0.0);
    };
    let (mut acc, mut j) = (x.splat(last), N - 1);
    while j > 0 {
        j -= 1;
        acc = acc.mul_add(x, x.splat(c[j]));
    }
    acc
}

/// The scalar body: one lane, plain f32 arithmetic (`mul_add` is a true fused
/// multiply-add, in hardware where the target has one).
impl Lanes for f32 {
    type Index = usize;

    #[inline(always)]
    fn splat(self, v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32) -> f32 {
        f32::mul_add(self, a, b)
    }
    #[inline(always)]
    fn neg_mul_add(self, a: f32, b: f32) -> f32 {
        f32::mul_add(-self, a, b)
    }
    #[inline(always)]
    fn abs(self) -> f32 {
        f32::abs(self)
    }
    #[inline(always)]
    fn copy_sign(self, sign: f32) -> f32 {
        f32::copysign(self, sign)
    }
    #[inline(always)]
    fn min(self, o: f32) -> f32 {
        if self < o {
            self
        } else {
            o
        }
    }
    #[inline(always)]
    fn max(self, o: f32) -> f32 {
        if self > o {
            self
        } else {
            o
        }
    }
    #[inline(always)]
    fn round(self) -> f32 {
        f32::round_ties_even(self)
    }
    #[inline(always)]
    fn floor(self) -> f32 {
        f32::floor(self)
    }
    #[inline(always)]
    fn mul_pow2(self, n: f32) -> f32 {
        // 2ⁿ as two normal halves, 2^⌊n/2⌋ · 2^(n−⌊n/2⌋): the first product is
        // exact, the second rounds once (as AVX2's body; AVX-512 has `scalef`).
        let n = n as i32;
        let (n1, n2) = (n >> 1, n - (n >> 1));
        let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
        self * pow2(n1) * pow2(n2)
    }
    #[inline(always)]
    fn select_negative(self, if_negative: f32, otherwise: f32) -> f32 {
        if self.is_sign_negative() {
            if_negative
        } else {
            otherwise
        }
    }
    #[inline(always)]
    fn select_less(self, bound: f32, if_less: f32, otherwise: f32) -> f32 {
        if self < bound {
            if_less
        } else {
            otherwise
        }
    }
    #[inline(always)]
    fn all_less(self, bound: f32) -> bool {
        self < bound
    }
    #[inline(always)]
    fn select_nonzero(self, if_nonzero: f32, otherwise: f32) -> f32 {
        if self != 0.0 {
            if_nonzero
        } else {
            otherwise
        }
    }
    #[inline(always)]
    fn index(self) -> usize {
        // `as` saturates (NaN to 0); the mask keeps any lane in the table.
        (self as usize) & 7
    }
    #[inline(always)]
    fn lookup(table: &[f32; 8], i: usize) -> f32 {
        table[i & 7]
    }
}

/// Two vectors computed side by side: every operation is the same operation
/// on each half, issued back to back.
///
/// The formulas of `math.rs` are long chains of dependent operations (GELU's
/// is about 25 deep, some 100 cycles of latency for one vector), and a loop
/// that computes one vector per iteration leaves the out-of-order core to
/// find the next vector's independent work behind a scheduler full of the
/// current one's waiting operations. A pair puts two independent chains in
/// one instruction stream. Each lane still sees exactly the operations it
/// would alone, so the results are the same bits; only [`Lanes::all_less`]
/// asks both halves, which at most sends a half down a formula's general
/// path that gives the same bits anyway (its contract).
#[derive(Clone, Copy)]
pub(crate) struct Pair<V>(pub V, pub V);

impl<V: Lanes> Add for Pair<V> {
    type Output = Pair<V>;
    #[inline(always)]
    fn add(self, o: Pair<V>) -> Pair<V> {
        Pair(self.0 + o.0, self.1 + o.1)
    }
}

impl<V: Lanes> Sub for Pair<V> {
    type Output = Pair<V>;
    #[inline(always)]
    fn sub(self, o: Pair<V>) -> Pair<V> {
        Pair(self.0 - o.0, self.1 - o.1)
    }
}

impl<V: Lanes> Mul for Pair<V> {
    type Output = Pair<V>;
    #[inline(always)]
    fn mul(self, o: Pair<V>) -> Pair<V> {
        Pair(self.0 * o.0, self.1 * o.1)
    }
}

impl<V: Lanes> Div for Pair<V> {
    type Output = Pair<V>;
    #[inline(always)]
    fn div(self, o: Pair<V>) -> Pair<V> {
        Pair(self.0 / o.0, self.1 / o.1)
    }
}

impl<V: Lanes> Neg for Pair<V> {
    type Output = Pair<V>;
    #[inline(always)]
    fn neg(self) -> Pair<V> {
        Pair(-self.0, -self.1)
    }
}

impl<V: Lanes> Lanes for Pair<V> {
    type Index = (V::Index, V::Index);

    #[inline(always)]
    fn splat(self, v: f32) -> Pair<V> {
        Pair(self.0.splat(v), self.1.splat(v))
    }
    #[inline(always)]
    fn mul_add(self, a: Pair<V>, b: Pair<V>) -> Pair<V> {
        Pair(self.0.mul_add(a.0, b.0), self.1.mul_add(a.1, b.1))
    }
    #[inline(always)]
    fn neg_mul_add(self, a: Pair<V>, b: Pair<V>) -> Pair<V> {
        Pair(self.0.neg_mul_add(a.0, b.0), self.1.neg_mul_add(a.1, b.1))
    }
    #[inline(always)]
    fn abs(self) -> Pair<V> {
        Pair(self.0.abs(), self.1.abs())
    }
    #[inline(always)]
    fn copy_sign(self, sign: Pair<V>) -> Pair<V> {
        Pair(self.0.copy_sign(sign.0), self.1.copy_sign(sign.1))
    }
    #[inline(always)]
    fn min(self, o: Pair<V>) -> Pair<V> {
        Pair(self.0.min(o.0), self.1.min(o.1))
    }
    #[inline(always)]
    fn max(self, o: Pair<V>) -> Pair<V> {
        Pair(self.0.max(o.0), self.1.max(o.1))
    }
    #[inline(always)]
    fn round(self) -> Pair<V> {
        Pair(self.0.round(), self.1.round())
    }
    #[inline(always)]
    fn floor(self) -> Pair<V> {
        Pair(self.0.floor(), self.1.floor())
    }
    #[inline(always)]
    fn mul_pow2(self, n: Pair<V>) -> Pair<V> {
        Pair(self.0.mul_pow2(n.0), self.1.mul_pow2(n.1))
    }
    #[inline(always)]
    fn select_negative(self, if_negative: Pair<V>, otherwise: Pair<V>) -> Pair<V> {
        Pair(
            self.0.select_negative(if_negative.0, otherwise.0),
            self.1.select_negative(if_negative.1, otherwise.1),
        )
    }
    #[inline(always)]
    fn select_less(self, bound: Pair<V>, if_less: Pair<V>, otherwise: Pair<V>) -> Pair<V> {
        Pair(
            self.0.select_less(bound.0, if_less.0, otherwise.0),
            self.1.select_less(bound.1, if_less.1, otherwise.1),
        )
    }
    #[inline(always)]
    fn select_nonzero(self, if_nonzero: Pair<V>, otherwise: Pair<V>) -> Pair<V> {
        Pair(
            self.0.select_nonzero(if_nonzero.0, otherwise.0),
            self.1.select_nonzero(if_nonzero.1, otherwise.1),
        )
    }
    #[inline(always)]
    fn index(self) -> (V::Index, V::Index) {
        (self.0.index(), self.1.index())
    }
    #[inline(always)]
    fn lookup(table: &[f32; 8], i: (V::Index, V::Index)) -> Pair<V> {
        Pair(V::lookup(table, i.0), V::lookup(table, i.1))
    }
    #[inline(always)]
    fn all_less(self, bound: f32) -> bool {
        // `&`, not `&&`: both comparisons issue, and one branch decides.
        self.0.all_less(bound) & self.1.all_less(bound)
    }
}
