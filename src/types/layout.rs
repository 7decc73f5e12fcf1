//! A layout maps a multi-index to a storage offset: `offset + Σ index[i]·stride[i]`.
//!
//! Views (permute, narrow, broadcast, ...) only build a new layout over the same
//! storage. Kernels either take the contiguous fast path or walk the offsets.

use super::shape::Shape;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Shape,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    pub fn contiguous(shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        let strides = shape.contiguous_strides();
        Layout { shape, strides, offset: 0 }
    }
    pub fn new(shape: Shape, strides: Vec<usize>, offset: usize) -> Self {
        debug_assert_eq!(shape.rank(), strides.len());
        Layout { shape, strides, offset }
    }
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }

    /// Row-major contiguous: the elements are `offset..offset+numel` in order.
    /// Size-1 dimensions may carry any stride.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.dims().iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// `Some(start..end)` when the layout is contiguous.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous().then(|| self.offset..self.offset + self.numel())
    }

    /// The largest storage offset this layout touches, plus one (0 when empty).
    pub fn required_len(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        self.offset + self.dims().iter().zip(&self.strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>() + 1
    }

    /// Iterate storage offsets in row-major order of the logical index.
    pub fn offsets(&self) -> StridedOffsets<'_> {
        StridedOffsets::new(self)
    }

    /// Materialise every offset (used by gathers and the reference kernels).
    pub fn offsets_vec(&self) -> Vec<usize> {
        match self.contiguous_range() {
            Some(r) => r.collect(),
            None => self.offsets().collect(),
        }
    }

    /// Layout for a permutation of the axes: `perm[i]` is the source axis of output axis `i`.
    /// Axes here are resolved, `0..rank` (the tensor API takes `isize` axes
    /// and resolves negative ones before it reaches a layout or a kernel).
    pub fn permute(&self, op: &'static str, perm: &[usize]) -> Result<Layout> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
            return Err(Error::shape(
                op,
                format!("{perm:?} is not a permutation of the {rank} axes of a tensor of shape {}", self.shape),
            ));
        }
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims()[p]).collect();
        let strides = perm.iter().map(|&p| self.strides[p]).collect();
        Ok(Layout {
            shape: Shape::new(dims),
            strides,
            offset: self.offset,
        })
    }

    /// Layout of `self[.., start..start+len, ..]` along the resolved `axis`
    /// (the caller has checked the axis and the range, as `Tensor::narrow` does).
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Layout {
        let mut dims = self.dims().to_vec();
        dims[axis] = len;
        Layout {
            shape: Shape::new(dims),
            strides: self.strides.clone(),
            offset: self.offset + start * self.strides[axis],
        }
    }

    /// Broadcast to `target`: added leading axes and stretched size-1 axes get stride 0.
    pub fn broadcast_as(&self, op: &'static str, target: &Shape) -> Result<Layout> {
        let rank = target.rank();
        if rank < self.rank() {
            return Err(Error::shape(
                op,
                format!("cannot broadcast shape {} to the lower-rank shape {target}", self.shape),
            ));
        }
        let lead = rank - self.rank();
        let mut strides = vec![0; rank];
        for i in 0..self.rank() {
            let (d, t) = (self.dims()[i], target.dims()[lead + i]);
            if d == t {
                strides[lead + i] = self.strides[i];
            } else if d == 1 {
                strides[lead + i] = 0;
            } else {
                return Err(Error::shape(
                    op,
                    format!(
                        "cannot broadcast shape {} to {target}: dimension {i} has size {d}, expected {t} or 1",
                        self.shape
                    ),
                ));
            }
        }
        Ok(Layout {
            shape: target.clone(),
            strides,
            offset: self.offset,
        })
    }

    /// A view with new dims over the same elements when the strides allow it without a copy
    /// (`None` when a copy is needed). Splits and merges of axes are supported as torch.view does.
    pub fn reshape_view(&self, new_shape: &Shape) -> Option<Layout> {
        if self.is_contiguous() {
            return Some(Layout {
                shape: new_shape.clone(),
                strides: new_shape.contiguous_strides(),
                offset: self.offset,
            });
        }
        // Group old axes into chunks that are each contiguous among themselves; every new axis
        // must then fall inside one chunk.
        let old: Vec<(usize, usize)> = self.dims().iter().copied().zip(self.strides.iter().copied()).filter(|&(d, _)| d != 1).collect();
        let new_dims = new_shape.dims();
        let mut new_strides = vec![0; new_dims.len()];
        let (mut oi, mut ni) = (0, 0);
        while ni < new_dims.len() {
            if new_dims[ni] == 1 {
                new_strides[ni] = 0;
                ni += 1;
                continue;
            }
            if oi >= old.len() {
                return None;
            }
            // Take old axes until their product matches the product of new axes.
            let chunk_start = oi;
            let mut old_prod = old[oi].0;
            oi += 1;
            let new_start = ni;
            let mut new_prod = new_dims[ni];
            ni += 1;
            while old_prod != new_prod {
                if old_prod < new_prod {
                    if oi >= old.len() {
                        return None;
                    }
                    // The merged old axes must be contiguous with each other.
                    if old[oi - 1].1 != old[oi].1 * old[oi].0 {
                        return None;
                    }
                    old_prod *= old[oi].0;
                    oi += 1;
                } else {
                    if ni >= new_dims.len() {
                        return None;
                    }
                    new_prod *= new_dims[ni];
                    ni += 1;
                }
            }
            // The chunk's innermost stride; new axes get row-major strides on top of it.
            let mut stride = old[oi - 1].1;
            for k in (new_start..ni).rev() {
                new_strides[k] = stride;
                stride *= new_dims[k];
            }
            let _ = chunk_start;
        }
        if oi != old.len() {
            return None;
        }
        Some(Layout {
            shape: new_shape.clone(),
            strides: new_strides,
            offset: self.offset,
        })
    }
}

/// Row-major walk over a strided layout, yielding storage offsets.
pub struct StridedOffsets<'a> {
    layout: &'a Layout,
    index: Vec<usize>,
    next: Option<usize>,
    /// Offsets still to come: an exact size hint, so collecting allocates once.
    remaining: usize,
}

impl<'a> StridedOffsets<'a> {
    fn new(layout: &'a Layout) -> Self {
        let next = (layout.numel() > 0).then_some(layout.offset);
        StridedOffsets {
            layout,
            index: vec![0; layout.rank()],
            next,
            remaining: layout.numel(),
        }
    }
}

impl Iterator for StridedOffsets<'_> {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        let current = self.next?;
        self.remaining -= 1;
        // Advance the multi-index like an odometer, innermost axis first.
        let dims = self.layout.dims();
        let strides = self.layout.strides();
        let mut offset = current;
        let mut axis = dims.len();
        loop {
            if axis == 0 {
                self.next = None;
                break;
            }
            axis -= 1;
            self.index[axis] += 1;
            offset += strides[axis];
            if self.index[axis] < dims[axis] {
                self.next = Some(offset);
                break;
            }
            offset -= strides[axis] * dims[axis];
            self.index[axis] = 0;
        }
        Some(current)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for StridedOffsets<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn strided_offsets_of_a_transpose() {
        let l = Layout::contiguous([2, 3]).permute("t", &[1, 0]).unwrap();
        assert_eq!(l.offsets().collect::<Vec<_>>(), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(l.offsets().len(), 6);
        assert_eq!(l.offsets().skip(4).size_hint(), (2, Some(2)));
        assert!(!l.is_contiguous());
    }
    #[test]
    fn reshape_view_merges_only_contiguous_axes() {
        let l = Layout::contiguous([2, 3, 4]).narrow(2, 1, 2); // [2,3,2] strides [12,4,1]
        assert!(l.reshape_view(&Shape::new([12])).is_none());
        let v = l.reshape_view(&Shape::new([2, 3, 2, 1])).unwrap();
        assert_eq!(v.offsets().collect::<Vec<_>>(), l.offsets().collect::<Vec<_>>());
        let t = Layout::contiguous([4, 6]).permute("t", &[1, 0]).unwrap(); // [6,4] strides [1,6]
        let v = t.reshape_view(&Shape::new([2, 3, 4])).unwrap();
        assert_eq!(v.offsets().collect::<Vec<_>>(), t.offsets().collect::<Vec<_>>());
        assert!(t.reshape_view(&Shape::new([24])).is_none());
    }
    #[test]
    fn broadcast_gives_zero_strides() {
        let l = Layout::contiguous([3, 1]).broadcast_as("t", &Shape::new([2, 3, 4])).unwrap();
        assert_eq!(l.strides(), &[0, 1, 0]);
        assert_eq!(l.offsets().collect::<Vec<_>>().len(), 24);
    }
}
