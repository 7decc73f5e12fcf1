//! The Rust types a tensor's elements are on the host, one per [`DType`].

use super::DType;
use half::{bf16, f16};

/// The Rust type of one [`DType`]'s elements: what `Tensor::from_vec` takes
/// and `Tensor::to_vec` returns. Implemented for `f16`, `bf16`, `f32`, `f64`
/// and `i64`, and for nothing else (the trait is sealed: a backend has
/// storage for exactly these).
pub trait Element: Copy + Send + Sync + std::fmt::Debug + 'static + sealed::Sealed {
    /// The dtype whose elements this type holds.
    const DTYPE: DType;
    fn to_f64(self) -> f64;
    /// From f64, rounded to nearest (16-bit floats, f32) or truncated (i64).
    fn from_f64(v: f64) -> Self;
    /// The elements of `data` as `&[Self]`, if they are of this type.
    fn downcast(data: ElementSlice<'_>) -> Option<&[Self]>;
    /// The elements of `data` as `&mut [Self]`, if they are of this type.
    fn downcast_mut(data: ElementSliceMut<'_>) -> Option<&mut [Self]>;
    /// `data` tagged with its dtype.
    fn tag(data: Vec<Self>) -> ElementVec;
}

mod sealed {
    pub trait Sealed {}
}

/// Elements of any one dtype, owned: what a backend builds host storage from.
#[derive(Clone, Debug, PartialEq)]
pub enum ElementVec {
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

/// Elements of any one dtype, borrowed.
#[derive(Clone, Copy, Debug)]
pub enum ElementSlice<'a> {
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    F32(&'a [f32]),
    F64(&'a [f64]),
    I64(&'a [i64]),
}

/// Elements of any one dtype, borrowed mutably.
#[derive(Debug)]
pub enum ElementSliceMut<'a> {
    F16(&'a mut [f16]),
    BF16(&'a mut [bf16]),
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
    I64(&'a mut [i64]),
}

macro_rules! element {
    ($t:ty, $variant:ident, |$x:ident| $to:expr, |$v:ident| $from:expr) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                let $x = self;
                $to
            }
            #[inline(always)]
            fn from_f64($v: f64) -> Self {
                $from
            }
            fn downcast(data: ElementSlice<'_>) -> Option<&[Self]> {
                match data {
                    ElementSlice::$variant(s) => Some(s),
                    _ => None,
                }
            }
            fn downcast_mut(data: ElementSliceMut<'_>) -> Option<&mut [Self]> {
                match data {
                    ElementSliceMut::$variant(s) => Some(s),
                    _ => None,
                }
            }
            fn tag(data: Vec<Self>) -> ElementVec {
                ElementVec::$variant(data)
            }
        }
    };
}

element!(f16, F16, |x| x.to_f64(), |v| f16::from_f64(v));
element!(bf16, BF16, |x| x.to_f64(), |v| bf16::from_f64(v));
element!(f32, F32, |x| f64::from(x), |v| v as f32);
element!(f64, F64, |x| x, |v| v);
element!(i64, I64, |x| x as f64, |v| v as i64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_finds_only_its_own_dtype() {
        let v = vec![1.5f32, -2.0];
        assert_eq!(f32::downcast(ElementSlice::F32(&v)), Some(&v[..]));
        assert_eq!(f64::downcast(ElementSlice::F32(&v)), None);
        assert_eq!(i64::tag(vec![3]), ElementVec::I64(vec![3]));
        let mut w = vec![bf16::from_f32(1.0)];
        bf16::downcast_mut(ElementSliceMut::BF16(&mut w)).unwrap()[0] = bf16::from_f64(2.0);
        assert_eq!(w[0].to_f64(), 2.0);
        assert_eq!(
            (f16::DTYPE, bf16::DTYPE, f32::DTYPE, f64::DTYPE, i64::DTYPE),
            (DType::F16, DType::BF16, DType::F32, DType::F64, DType::I64)
        );
        assert_eq!(<f16 as Element>::from_f64(0.1).to_f64(), f16::from_f64(0.1).to_f64());
    }
}
