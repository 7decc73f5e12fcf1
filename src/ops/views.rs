//! Views: new layouts over the same storage, each an op with its backward.
//!
//! Only `reshape` of a non-viewable layout and `contiguous` copy data.

use crate::autograd::BackwardOp;
use crate::profile::{self, Cost};
use crate::tensor::Tensor;
use crate::types::{normalize_axis, Layout, Shape};
use crate::{Error, Result};

impl Tensor {
    /// Same elements, new shape (see [`Tensor::reshape_infer`] for a `-1`).
    /// Copies only when the layout cannot be re-strided, as torch.reshape does.
    ///
    /// ```
    /// let t = tamer::Tensor::arange(0.0, 6.0, 1.0, tamer::DType::F32).unwrap();
    /// assert_eq!(t.reshape([2, 3]).unwrap().dims(), &[2, 3]);
    /// assert!(t.reshape([4, 2]).is_err());
    /// ```
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        shape.check_size("reshape", self.dtype().size_in_bytes())?;
        if shape.numel() != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!(
                    "cannot reshape {} ({} elements) into {} ({} elements)",
                    self.shape(),
                    self.numel(),
                    shape,
                    shape.numel()
                ),
            ));
        }
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        let backward = ReshapeBackward;
        let view = self.layout().reshape_view(&shape);
        let _op = profile::op("reshape", || match view {
            Some(_) => Cost::NONE,
            None => Cost::copy(self.dtype(), 2 * self.numel()),
        })?;
        match view {
            Some(layout) => Ok(self.view_op(layout, backward)),
            None => {
                let storage = self.storage().copy_contiguous(self.layout())?;
                Ok(Tensor::from_op(storage, Layout::contiguous(shape), vec![self.clone()], backward))
            }
        }
    }

    /// Reshape where one entry may be -1, inferred from the others.
    pub fn reshape_infer(&self, dims: &[isize]) -> Result<Tensor> {
        // The given sizes are the caller's: their product may overflow.
        let known = dims
            .iter()
            .filter(|&&d| d >= 0)
            .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
            .ok_or_else(|| Error::shape("reshape", format!("the sizes {dims:?} overflow: their product does not fit in usize")))?;
        let unknown = dims.iter().filter(|&&d| d < 0).count();
        if unknown > 1 || dims.iter().any(|&d| d < -1) || (unknown == 1 && (known == 0 || !self.numel().is_multiple_of(known))) {
            return Err(Error::shape(
                "reshape",
                format!(
                    "cannot reshape {} into {dims:?}: expected at most one -1 and a size that divides {} elements",
                    self.shape(),
                    self.numel()
                ),
            ));
        }
        let shape: Vec<usize> = dims.iter().map(|&d| if d < 0 { self.numel() / known } else { d as usize }).collect();
        self.reshape(shape)
    }

    /// Reorder axes: output axis `i` is input axis `perm[i]` (negative axes
    /// count from the end, as everywhere in the API).
    ///
    /// ```
    /// let x = tamer::Tensor::zeros([2, 3, 4], tamer::DType::F32).unwrap();
    /// assert_eq!(x.permute(&[2, 0, 1]).unwrap().dims(), &[4, 2, 3]);
    /// assert_eq!(x.permute(&[0, -1, -2]).unwrap().dims(), &[2, 4, 3]);
    /// assert!(x.permute(&[0, 0, 1]).is_err());
    /// ```
    pub fn permute(&self, perm: &[isize]) -> Result<Tensor> {
        let axes = resolve_permutation("permute", self.shape(), perm)?;
        self.permute_resolved(&axes)
    }

    /// [`Tensor::permute`] with a checked permutation of `0..rank`.
    fn permute_resolved(&self, axes: &[usize]) -> Result<Tensor> {
        let layout = self.layout().permute("permute", axes)?;
        let _op = profile::op("permute", || Cost::NONE)?;
        let mut inverse = vec![0; axes.len()];
        for (i, &p) in axes.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(self.view_op(layout, PermuteBackward { inverse }))
    }

    /// Swap two axes (negative axes count from the end).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (self.shape().axis("transpose", a)?, self.shape().axis("transpose", b)?);
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute_resolved(&perm)
    }

    /// Transpose of the last two axes (`x.mT` in PyTorch).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::shape("t", format!("expected rank >= 2, got shape {}", self.shape())));
        }
        self.transpose(-2, -1)
    }

    /// `self[.., start..start+len, ..]` along `axis`, without a copy.
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let axis = self.shape().axis("narrow", axis)?;
        let size = self.dims()[axis];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::index(
                "narrow",
                format!(
                    "range {start}..{} is outside axis {axis} of size {size} (shape {})",
                    start.saturating_add(len),
                    self.shape()
                ),
            ));
        }
        let layout = self.layout().narrow(axis, start, len);
        let _op = profile::op("narrow", || Cost::NONE)?;
        Ok(self.view_op(layout, NarrowBackward { axis, start }))
    }

    /// Alias of [`Tensor::narrow`] taking a range.
    pub fn slice(&self, axis: isize, range: std::ops::Range<usize>) -> Result<Tensor> {
        if range.end < range.start {
            return Err(Error::index("slice", format!("range {range:?} is reversed (shape {})", self.shape())));
        }
        self.narrow(axis, range.start, range.end - range.start)
    }

    /// View with size-1 (or missing leading) axes stretched to `shape`.
    pub fn broadcast_as(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        shape.check_size("broadcast_as", self.dtype().size_in_bytes())?;
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_as("broadcast_as", &shape)?;
        let _op = profile::op("broadcast_as", || Cost::NONE)?;
        Ok(self.view_op(layout, BroadcastBackward))
    }
    /// Alias of [`Tensor::broadcast_as`] with PyTorch's name.
    pub fn expand(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        self.broadcast_as(shape)
    }

    /// Insert a size-1 axis at `axis` (which may equal the rank).
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor> {
        let axis = normalize_axis("unsqueeze", axis, self.rank() + 1).map_err(|e| e.with_shape(self.shape()))?;
        let mut dims = self.dims().to_vec();
        dims.insert(axis, 1);
        self.reshape(dims)
    }

    /// Remove axis `axis`, which must have size 1.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let axis = self.shape().axis("squeeze", axis)?;
        if self.dims()[axis] != 1 {
            return Err(Error::shape(
                "squeeze",
                format!("axis {axis} of shape {} has size {}, expected 1", self.shape(), self.dims()[axis]),
            ));
        }
        let mut dims = self.dims().to_vec();
        dims.remove(axis);
        self.reshape(dims)
    }

    /// Merge axes `start..=end` into one.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape([1]);
        }
        let (s, e) = (self.shape().axis("flatten", start)?, self.shape().axis("flatten", end)?);
        if s > e {
            return Err(Error::new(
                "flatten",
                crate::ErrorKind::Axis,
                format!("start axis {start} comes after end axis {end} of shape {}", self.shape()),
            ));
        }
        let mut dims = self.dims()[..s].to_vec();
        dims.push(self.dims()[s..=e].iter().product());
        dims.extend_from_slice(&self.dims()[e + 1..]);
        self.reshape(dims)
    }
    /// All axes into one.
    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape([self.numel()])
    }

    /// A row-major copy if the layout is not contiguous already (otherwise `self`).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let _op = profile::op("contiguous", || Cost::copy(self.dtype(), 2 * self.numel()))?;
        let storage = self.storage().copy_contiguous(self.layout())?;
        Ok(Tensor::from_op(
            storage,
            Layout::contiguous(self.shape().clone()),
            vec![self.clone()],
            ContiguousBackward,
        ))
    }
}

/// `perm` with its axes resolved (negative ones count from the end), if it
/// names every axis of `shape` exactly once.
fn resolve_permutation(op: &'static str, shape: &Shape, perm: &[isize]) -> Result<Vec<usize>> {
    let rank = shape.rank();
    let not_a_permutation = || Error::shape(op, format!("{perm:?} is not a permutation of the {rank} axes of a tensor of shape {shape}"));
    if perm.len() != rank {
        return Err(not_a_permutation());
    }
    let axes = perm.iter().map(|&a| shape.axis(op, a)).collect::<Result<Vec<_>>>()?;
    let mut seen = vec![false; rank];
    if axes.iter().any(|&a| std::mem::replace(&mut seen[a], true)) {
        return Err(not_a_permutation());
    }
    Ok(axes)
}

struct ReshapeBackward;
impl BackwardOp for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad.reshape(inputs[0].shape().clone())?)])
    }
}

struct PermuteBackward {
    inverse: Vec<usize>,
}
impl BackwardOp for PermuteBackward {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn backward(&self, _inputs: &[Tensor], _out: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad.permute_resolved(&self.inverse)?)])
    }
}

/// The gradient of a slice is the output gradient placed into zeros.
struct NarrowBackward {
    axis: usize,
    start: usize,
}
impl BackwardOp for NarrowBackward {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let full = Tensor::zeros_on(inputs[0].shape().clone(), grad.dtype(), grad.device())?;
        let _op = profile::op("narrow", || Cost::copy(grad.dtype(), 2 * grad.numel()))?;
        let region = full.layout().narrow(self.axis, self.start, grad.dims()[self.axis]);
        full.storage_mut().copy_into(&region, &grad.storage(), grad.layout())?;
        Ok(vec![Some(full)])
    }
}

struct BroadcastBackward;
impl BackwardOp for BroadcastBackward {
    fn name(&self) -> &'static str {
        "broadcast_as"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad.sum_to_shape(inputs[0].shape())?)])
    }
}

struct ContiguousBackward;
impl BackwardOp for ContiguousBackward {
    fn name(&self) -> &'static str {
        "contiguous"
    }
    fn backward(&self, _inputs: &[Tensor], _out: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad.clone())])
    }
}
