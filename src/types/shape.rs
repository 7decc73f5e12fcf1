//! Shapes, axis normalisation and numpy broadcasting rules.

use crate::{Error, Result};
use std::fmt;

/// The extent of each dimension, outermost first. A scalar has rank 0.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }
    pub fn scalar() -> Self {
        Shape(Vec::new())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// An error unless a tensor of this shape with `elem_bytes`-byte elements
    /// can exist: the product of the non-zero dimensions (the element count,
    /// and with a zero dimension what the strides of the others reach), in
    /// bytes, must fit in `isize` as every allocation must. Constructors
    /// check this first, so [`numel`](Self::numel) and the strides never
    /// overflow (which would panic in debug builds and wrap silently in
    /// release ones: `[2^33, 2^33]` would count 0 elements).
    pub fn check_size(&self, op: &'static str, elem_bytes: usize) -> Result<()> {
        let bytes = self.0.iter().filter(|&&d| d != 0).try_fold(elem_bytes.max(1), |acc, &d| acc.checked_mul(d));
        match bytes {
            Some(b) if b <= isize::MAX as usize => Ok(()),
            _ => Err(Error::shape(
                op,
                format!(
                    "shape {self} is too large: the product of its dimensions times {elem_bytes} bytes per element overflows isize::MAX ({})",
                    isize::MAX
                ),
            )),
        }
    }
    /// Row-major (C order) strides for this shape.
    pub fn contiguous_strides(&self) -> Vec<usize> {
        let mut strides = vec![0; self.rank()];
        let mut acc = 1;
        for (s, &d) in strides.iter_mut().zip(&self.0).rev() {
            *s = acc;
            acc *= d;
        }
        strides
    }
    /// Resolve a possibly negative axis (`-1` is the last) into `0..rank`.
    pub fn axis(&self, op: &'static str, axis: isize) -> Result<usize> {
        normalize_axis(op, axis, self.rank()).map_err(|e| e.with_shape(self))
    }
    pub fn dim(&self, op: &'static str, axis: isize) -> Result<usize> {
        Ok(self.0[self.axis(op, axis)?])
    }
    /// The numpy broadcast of two shapes: align from the right, a 1 stretches.
    pub fn broadcast_with(&self, op: &'static str, other: &Shape) -> Result<Shape> {
        let rank = self.rank().max(other.rank());
        let mut out = vec![0; rank];
        for (i, slot) in out.iter_mut().enumerate() {
            let a = dim_from_right(&self.0, rank - 1 - i);
            let b = dim_from_right(&other.0, rank - 1 - i);
            *slot = match (a, b) {
                (a, b) if a == b => a,
                (1, b) => b,
                (a, 1) => a,
                _ => {
                    return Err(Error::shape(
                        op,
                        format!(
                            "shapes {self} and {other} cannot be broadcast together (dimension {i} of the result: {a} vs {b}; expected equal sizes or a 1)"
                        ),
                    ))
                }
            };
        }
        Ok(Shape(out))
    }
}

/// `dims[rank-1-i]` counted from the right, with missing leading dims as 1.
fn dim_from_right(dims: &[usize], i_from_right: usize) -> usize {
    if i_from_right < dims.len() {
        dims[dims.len() - 1 - i_from_right]
    } else {
        1
    }
}

impl Error {
    /// Append the shape an axis error refers to (`normalize_axis` only knows the rank).
    pub(crate) fn with_shape(mut self, shape: &Shape) -> Self {
        self.message = format!("{} (shape {shape})", self.message);
        self
    }
}

pub fn normalize_axis(op: &'static str, axis: isize, rank: usize) -> Result<usize> {
    let r = rank as isize;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(Error::axis(op, axis, rank));
    }
    Ok(a as usize)
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}
impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}
impl From<&Vec<usize>> for Shape {
    fn from(d: &Vec<usize>) -> Self {
        Shape(d.clone())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}
impl<const N: usize> From<&[usize; N]> for Shape {
    fn from(d: &[usize; N]) -> Self {
        Shape(d.to_vec())
    }
}
impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape(Vec::new())
    }
}
impl From<usize> for Shape {
    fn from(d: usize) -> Self {
        Shape(vec![d])
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn broadcast_follows_numpy() {
        let a = Shape::new([3, 1, 5]);
        let b = Shape::new([4, 1]);
        assert_eq!(a.broadcast_with("t", &b).unwrap().dims(), &[3, 4, 5]);
        let err = Shape::new([3]).broadcast_with("add", &Shape::new([4])).unwrap_err();
        assert!(err.to_string().contains("[3] and [4]"), "{err}");
    }
    #[test]
    fn negative_axes_resolve() {
        let s = Shape::new([2, 3, 4]);
        assert_eq!(s.axis("t", -1).unwrap(), 2);
        assert!(s.axis("t", 3).is_err());
        assert!(s.axis("t", -4).is_err());
    }
}
