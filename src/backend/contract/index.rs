//! The indexing family's contract: [`IndexKernels`] and one validator per
//! kernel, which both backends call with the ids on the host before they
//! read anything, so a bad id or shape is the same `Error` on every device.

use crate::types::{Layout, Shape};
use crate::{Error, Result};

/// The kernels a backend provides for indexing. Layouts may have any strides
/// (ids included); results are new contiguous storage. Kernels check every
/// index against the size of the axis it indexes.
pub trait IndexKernels: Sized {
    /// `out[.., j, ..] = x[.., ids[j], ..]` along `axis`, for 1-D i64 `ids`.
    /// The result has `layout`'s shape with `dims[axis] = ids.len()`.
    fn index_select(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout) -> Result<Self>;
    /// A copy of `self` with `src[.., j, ..]` added into `[.., ids[j], ..]` along `axis`
    /// (repeated ids accumulate). `src_layout` has `layout`'s shape with `dims[axis] = ids.len()`.
    fn index_add(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout, src: &Self, src_layout: &Layout) -> Result<Self>;
    /// torch.gather: `out[i] = x[i with i[axis] replaced by ids[i]]`; `ids` has the rank of
    /// `x` and no larger dims except along `axis`; the result has `ids`' shape.
    fn gather(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout) -> Result<Self>;
    /// The adjoint of `gather`: a copy of `self` with `src[i]` added at `i` with `i[axis]`
    /// replaced by `ids[i]`. `src_layout` has `ids_layout`'s shape.
    fn scatter_add(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout, src: &Self, src_layout: &Layout) -> Result<Self>;
    /// The backward of `index_select`: zeros of `input_shape` with the slices of `self`
    /// (the output gradient) added at `ids` along `axis` — `index_add` into zeros,
    /// without materialising the zeros first (an embedding table is large, a batch's
    /// ids touch few of its rows).
    fn index_select_backward(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout, input_shape: &Shape) -> Result<Self>;
    /// The backward of `gather`: `scatter_add` of `self` (shaped like `ids`) into zeros of `input_shape`.
    fn gather_backward(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout, input_shape: &Shape) -> Result<Self>;
    /// Concatenate along `axis`; every part has the same rank, dtype and dims off `axis`.
    fn cat(parts: &[(&Self, &Layout)], axis: usize) -> Result<Self>;
}

// ---- the validators ---------------------------------------------------------

/// Every index in `0..size`; the error names the first bad one.
fn check_range(op: &'static str, ids: &[i64], size: usize, axis: usize, shape: &Shape) -> Result<()> {
    if let Some(&bad) = ids.iter().find(|&&i| i < 0 || i as u64 >= size as u64) {
        let hint = if bad < 0 { " (negative indices are not supported)" } else { "" };
        return Err(Error::index(
            op,
            format!("index {bad} is out of range for axis {axis} of size {size} (input shape {shape}); expected 0 <= index < {size}{hint}"),
        ));
    }
    Ok(())
}

fn check_axis(op: &'static str, axis: usize, rank: usize) -> Result<()> {
    if axis >= rank {
        return Err(Error::axis(op, axis as isize, rank));
    }
    Ok(())
}

fn check_dims(op: &'static str, what: &str, got: &[usize], expected: &[usize]) -> Result<()> {
    if got != expected {
        return Err(Error::shape(op, format!("{what} has shape {got:?}, expected {expected:?}")));
    }
    Ok(())
}

/// torch.gather's rule: ids have x's rank and no larger dims off `axis`.
fn check_gather_dims(op: &'static str, x: &[usize], axis: usize, ids: &[usize]) -> Result<()> {
    if ids.len() != x.len() || ids.iter().zip(x).enumerate().any(|(d, (&i, &s))| d != axis && i > s) {
        return Err(Error::shape(
            op,
            format!("indices shape {ids:?} does not fit input shape {x:?} off axis {axis}"),
        ));
    }
    Ok(())
}

/// `dims` with `dims[axis] = n`.
fn with_dim(dims: &[usize], axis: usize, n: usize) -> Vec<usize> {
    let mut out = dims.to_vec();
    out[axis] = n;
    out
}

/// [`IndexKernels::index_select`]: `axis` inside the input, every id in range.
pub fn check_index_select(layout: &Layout, axis: usize, ids: &[i64]) -> Result<()> {
    const OP: &str = "index_select";
    check_axis(OP, axis, layout.rank())?;
    check_range(OP, ids, layout.dims()[axis], axis, layout.shape())
}

/// [`IndexKernels::index_add`]: as `index_select`, and the source shaped like the selection.
pub fn check_index_add(layout: &Layout, axis: usize, ids: &[i64], src_layout: &Layout) -> Result<()> {
    const OP: &str = "index_add";
    check_axis(OP, axis, layout.rank())?;
    check_range(OP, ids, layout.dims()[axis], axis, layout.shape())?;
    check_dims(OP, "source", src_layout.dims(), &with_dim(layout.dims(), axis, ids.len()))
}

/// [`IndexKernels::gather`]: ids that fit the input off `axis`, every id in range.
pub fn check_gather(layout: &Layout, axis: usize, ids_layout: &Layout, ids: &[i64]) -> Result<()> {
    const OP: &str = "gather";
    check_axis(OP, axis, layout.rank())?;
    check_gather_dims(OP, layout.dims(), axis, ids_layout.dims())?;
    check_range(OP, ids, layout.dims()[axis], axis, layout.shape())
}

/// [`IndexKernels::scatter_add`]: as `gather`, and the source shaped like the ids.
pub fn check_scatter_add(layout: &Layout, axis: usize, ids_layout: &Layout, ids: &[i64], src_layout: &Layout) -> Result<()> {
    const OP: &str = "scatter_add";
    check_axis(OP, axis, layout.rank())?;
    check_gather_dims(OP, layout.dims(), axis, ids_layout.dims())?;
    check_dims(OP, "source", src_layout.dims(), ids_layout.dims())?;
    check_range(OP, ids, layout.dims()[axis], axis, layout.shape())
}

/// [`IndexKernels::index_select_backward`]: every id in range for the input,
/// the gradient shaped like the selection.
pub fn check_index_select_backward(grad_layout: &Layout, axis: usize, ids: &[i64], input_shape: &Shape) -> Result<()> {
    const OP: &str = "index_select_backward";
    check_axis(OP, axis, input_shape.rank())?;
    check_range(OP, ids, input_shape.dims()[axis], axis, input_shape)?;
    check_dims(OP, "gradient", grad_layout.dims(), &with_dim(input_shape.dims(), axis, ids.len()))
}

/// [`IndexKernels::gather_backward`]: ids that fit the input, the gradient
/// shaped like the ids, every id in range.
pub fn check_gather_backward(grad_layout: &Layout, axis: usize, ids_layout: &Layout, ids: &[i64], input_shape: &Shape) -> Result<()> {
    const OP: &str = "gather_backward";
    check_axis(OP, axis, input_shape.rank())?;
    check_gather_dims(OP, input_shape.dims(), axis, ids_layout.dims())?;
    check_dims(OP, "gradient", grad_layout.dims(), ids_layout.dims())?;
    check_range(OP, ids, input_shape.dims()[axis], axis, input_shape)
}

/// [`IndexKernels::cat`]: at least one part, `axis` inside them, equal dims off `axis`.
pub fn check_cat<'a>(layouts: impl IntoIterator<Item = &'a Layout>, axis: usize) -> Result<()> {
    const OP: &str = "cat";
    let mut layouts = layouts.into_iter();
    let Some(l0) = layouts.next() else {
        return Err(Error::value(OP, "expected at least one tensor, got an empty list"));
    };
    check_axis(OP, axis, l0.rank())?;
    for (k, l) in layouts.enumerate() {
        let fits = l.rank() == l0.rank() && l.dims().iter().zip(l0.dims()).enumerate().all(|(d, (&a, &b))| d == axis || a == b);
        if !fits {
            return Err(Error::shape(
                OP,
                format!(
                    "part {} has shape {} but part 0 has shape {}; expected equal dims off axis {axis}",
                    k + 1,
                    l.shape(),
                    l0.shape()
                ),
            ));
        }
    }
    Ok(())
}
