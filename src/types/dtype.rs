//! Element types. f32 and f64 are computed on; f16 and bf16 are storage formats
//! converted to f32 for compute; i64 holds indices (class targets, token ids).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F16,
    BF16,
    F32,
    F64,
    I64,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }
    /// True for the dtypes the CPU kernels compute in.
    pub fn is_compute_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
    pub fn is_float(self) -> bool {
        !matches!(self, DType::I64)
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The floating-point element types kernels are generic over (f32 and f64).
///
/// A small, explicit trait rather than a numeric-tower crate: every function
/// a kernel needs is listed here, which is also the list a new dtype must provide.
pub trait Float:
    Copy
    + Send
    + Sync
    + PartialOrd
    + PartialEq
    + fmt::Debug
    + fmt::Display
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::iter::Sum
    + Default
    + 'static
{
    const DTYPE: DType;
    const ZERO: Self;
    const ONE: Self;
    const INFINITY: Self;
    const NEG_INFINITY: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn abs(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn erf(self) -> Self;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
    fn is_nan(self) -> bool;
    /// `Some` when `Self` is f32: lets generic kernels hand f32 data to SIMD code.
    fn as_f32_slice(s: &[Self]) -> Option<&[f32]>;
    fn as_f32_slice_mut(s: &mut [Self]) -> Option<&mut [f32]>;
}

macro_rules! impl_float {
    ($t:ty, $dt:expr, $as32:expr, $as32mut:expr) => {
        impl Float for $t {
            const DTYPE: DType = $dt;
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = <$t>::INFINITY;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            #[inline(always)]
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                erf_f64(self as f64) as $t
            }
            #[inline(always)]
            fn max(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            #[inline(always)]
            fn min(self, o: Self) -> Self {
                <$t>::min(self, o)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn as_f32_slice(s: &[Self]) -> Option<&[f32]> {
                ($as32)(s)
            }
            fn as_f32_slice_mut(s: &mut [Self]) -> Option<&mut [f32]> {
                ($as32mut)(s)
            }
        }
    };
}
fn f32_is_f32(s: &[f32]) -> Option<&[f32]> {
    Some(s)
}
fn f32_is_f32_mut(s: &mut [f32]) -> Option<&mut [f32]> {
    Some(s)
}
fn f64_is_not_f32(_: &[f64]) -> Option<&[f32]> {
    None
}
fn f64_is_not_f32_mut(_: &mut [f64]) -> Option<&mut [f32]> {
    None
}
impl_float!(f32, DType::F32, f32_is_f32, f32_is_f32_mut);
impl_float!(f64, DType::F64, f64_is_not_f32, f64_is_not_f32_mut);

/// The error function to double precision (W. J. Cody's rational approximations,
/// as used by most libms): Rust's std has no `erf`.
pub fn erf_f64(x: f64) -> f64 {
    if x.abs() < 0.5 {
        return erf_small(x);
    }
    // erf(x) = 1 - erfc(x) for |x| >= 0.5.
    let erfc = erfc_positive(x.abs());
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

/// The complementary error function `1 − erf(x)` to double precision, with
/// its relative accuracy kept in the tail (`erfc(10) ≈ 2·10⁻⁴⁵`), where
/// `1 − erf_f64(x)` would be 0: what the f32 kernels' tests need as a reference
/// for the normal tail `Φ(x) = erfc(−x/√2)/2`.
pub fn erfc_f64(x: f64) -> f64 {
    if x.abs() < 0.5 {
        1.0 - erf_small(x)
    } else if x > 0.0 {
        erfc_positive(x)
    } else {
        2.0 - erfc_positive(-x)
    }
}

/// `erf(x)` for `|x| < 0.5` (Cody's first range).
// The coefficients are Cody's published values, kept digit for digit.
#[allow(clippy::excessive_precision)]
fn erf_small(x: f64) -> f64 {
    // A rational approximation on [0, 0.5).
    const A: [f64; 5] = [
        3.16112374387056560e00,
        1.13864154151050156e02,
        3.77485237685302021e02,
        3.20937758913846947e03,
        1.85777706184603153e-1,
    ];
    const B: [f64; 4] = [2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03];
    let z = x * x;
    let mut xnum = A[4] * z;
    let mut xden = z;
    for i in 0..3 {
        xnum = (xnum + A[i]) * z;
        xden = (xden + B[i]) * z;
    }
    x * (xnum + A[3]) / (xden + B[3])
}

/// `erfc(ax)` for `ax ≥ 0.5` (Cody's second and third ranges); NaN stays NaN.
// The coefficients are Cody's published values, kept digit for digit.
#[allow(clippy::excessive_precision)]
fn erfc_positive(ax: f64) -> f64 {
    if ax < 4.0 {
        const C: [f64; 9] = [
            5.64188496988670089e-1,
            8.88314979438837594e00,
            6.61191906371416295e01,
            2.98635138197400131e02,
            8.81952221241769090e02,
            1.71204761263407058e03,
            2.05107837782607147e03,
            1.23033935479799725e03,
            2.15311535474403846e-8,
        ];
        const D: [f64; 8] = [
            1.57449261107098347e01,
            1.17693950891312499e02,
            5.37181101862009858e02,
            1.62138957456669019e03,
            3.29079923573345963e03,
            4.36261909014324716e03,
            3.43936767414372164e03,
            1.23033935480374942e03,
        ];
        let mut xnum = C[8] * ax;
        let mut xden = ax;
        for i in 0..7 {
            xnum = (xnum + C[i]) * ax;
            xden = (xden + D[i]) * ax;
        }
        let r = (xnum + C[7]) / (xden + D[7]);
        let z = (ax * 16.0).trunc() / 16.0;
        let del = (ax - z) * (ax + z);
        (-z * z).exp() * (-del).exp() * r
    } else if ax < 27.0 {
        const P: [f64; 6] = [
            3.05326634961232344e-1,
            3.60344899949804439e-1,
            1.25781726111229246e-1,
            1.60837851487422766e-2,
            6.58749161529837803e-4,
            1.63153871373020978e-2,
        ];
        const Q: [f64; 5] = [
            2.56852019228982242e00,
            1.87295284992346725e00,
            5.27905102951428412e-1,
            6.05183413124413191e-2,
            2.33520497626869185e-3,
        ];
        let z = 1.0 / (ax * ax);
        let mut xnum = P[5] * z;
        let mut xden = z;
        for i in 0..4 {
            xnum = (xnum + P[i]) * z;
            xden = (xden + Q[i]) * z;
        }
        let r = z * (xnum + P[4]) / (xden + Q[4]);
        let r = (1.0 / std::f64::consts::PI.sqrt() - r) / ax;
        let z = (ax * 16.0).trunc() / 16.0;
        let del = (ax - z) * (ax + z);
        (-z * z).exp() * (-del).exp() * r
    } else if ax >= 27.0 {
        0.0
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn erf_matches_known_values() {
        // Values from Abramowitz & Stegun table 7.1.
        for (x, want) in [
            (0.0, 0.0),
            (0.1, 0.1124629160),
            (0.5, 0.5204998778),
            (1.0, 0.8427007929),
            (2.0, 0.9953222650),
            (3.5, 0.9999992569),
        ] {
            assert!((erf_f64(x) - want).abs() < 1e-9, "erf({x}) = {} want {want}", erf_f64(x));
            assert!((erf_f64(-x) + want).abs() < 1e-9);
        }
        assert!(erf_f64(f64::NAN).is_nan());
    }

    #[test]
    // The references are mpmath's to 20 digits, kept as printed.
    #[allow(clippy::excessive_precision)]
    fn erfc_keeps_its_relative_accuracy_in_the_tail() {
        for (x, want) in [
            (0.3, 0.67137324054087258381),
            (-0.3, 1.3286267594591274162),
            (1.0, 0.15729920705028513066),
            (-1.0, 1.8427007929497148693),
            (3.0, 2.2090496998585441373e-5),
            (5.0, 1.5374597944280348502e-12),
            (10.0, 2.0884875837625447570e-45),
            (26.0, 5.6631924088561428465e-296),
            (-6.0, 2.0),
        ] {
            let got = erfc_f64(x);
            assert!((got - want).abs() <= 1e-14 * want, "erfc({x}) = {got:e}, want {want:e}");
        }
        assert_eq!((erfc_f64(30.0), erfc_f64(f64::INFINITY), erfc_f64(f64::NEG_INFINITY)), (0.0, 0.0, 2.0));
        assert!(erfc_f64(f64::NAN).is_nan());
    }
}
