//! The indexing family's contract: [`IndexKernels`] and one validator per
//! kernel. Each kernel checks that the ids are i64 (`check_indices_dtype`),
//! reads them to the host and calls its validator with them before it reads
//! anything else, so a bad id, dtype or shape is the same `Error` on every
//! device.
//!
//! Selection and concatenation move data, so they take every dtype; the
//! scatter-adds (the backward passes) compute, so they take f32 and f64.

use crate::backend::contract::{check_dtype, COMPUTE_FLOATS};
use crate::types::{DType, Layout, Shape};
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

/// An adding kernel's data: f32 or f64, and a second operand (the source) of
/// the same dtype.
fn check_add_dtypes(op: &'static str, x: DType, src: Option<DType>) -> Result<()> {
    check_dtype(op, x, COMPUTE_FLOATS)?;
    match src {
        Some(d) if d != x => Err(Error::dtype(op, format!("operands have dtypes {x} and {d}; expected the same dtype"))),
        _ => Ok(()),
    }
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

/// [`IndexKernels::index_add`]: an f32 or f64 input and a source of its
/// dtype, shaped like the selection; `axis` inside the input, every id in range.
pub fn check_index_add(x: (DType, &Layout), axis: usize, ids: &[i64], src: (DType, &Layout)) -> Result<()> {
    const OP: &str = "index_add";
    let layout = x.1;
    check_add_dtypes(OP, x.0, Some(src.0))?;
    check_axis(OP, axis, layout.rank())?;
    check_range(OP, ids, layout.dims()[axis], axis, layout.shape())?;
    check_dims(OP, "source", src.1.dims(), &with_dim(layout.dims(), axis, ids.len()))
}

/// [`IndexKernels::gather`]: ids that fit the input off `axis`, every id in range.
pub fn check_gather(layout: &Layout, axis: usize, ids_layout: &Layout, ids: &[i64]) -> Result<()> {
    const OP: &str = "gather";
    check_axis(OP, axis, layout.rank())?;
    check_gather_dims(OP, layout.dims(), axis, ids_layout.dims())?;
    check_range(OP, ids, layout.dims()[axis], axis, layout.shape())
}

/// [`IndexKernels::scatter_add`]: an f32 or f64 input and a source of its
/// dtype shaped like the ids; ids that fit the input off `axis`, every id in range.
pub fn check_scatter_add(x: (DType, &Layout), axis: usize, ids_layout: &Layout, ids: &[i64], src: (DType, &Layout)) -> Result<()> {
    const OP: &str = "scatter_add";
    let layout = x.1;
    check_add_dtypes(OP, x.0, Some(src.0))?;
    check_axis(OP, axis, layout.rank())?;
    check_gather_dims(OP, layout.dims(), axis, ids_layout.dims())?;
    check_dims(OP, "source", src.1.dims(), ids_layout.dims())?;
    check_range(OP, ids, layout.dims()[axis], axis, layout.shape())
}

/// [`IndexKernels::index_select_backward`]: an f32 or f64 gradient shaped
/// like the selection, every id in range for the input.
pub fn check_index_select_backward(grad: (DType, &Layout), axis: usize, ids: &[i64], input_shape: &Shape) -> Result<()> {
    const OP: &str = "index_select_backward";
    check_add_dtypes(OP, grad.0, None)?;
    check_axis(OP, axis, input_shape.rank())?;
    check_range(OP, ids, input_shape.dims()[axis], axis, input_shape)?;
    check_dims(OP, "gradient", grad.1.dims(), &with_dim(input_shape.dims(), axis, ids.len()))
}

/// [`IndexKernels::gather_backward`]: an f32 or f64 gradient shaped like the
/// ids, ids that fit the input, every id in range.
pub fn check_gather_backward(grad: (DType, &Layout), axis: usize, ids_layout: &Layout, ids: &[i64], input_shape: &Shape) -> Result<()> {
    const OP: &str = "gather_backward";
    check_add_dtypes(OP, grad.0, None)?;
    check_axis(OP, axis, input_shape.rank())?;
    check_gather_dims(OP, input_shape.dims(), axis, ids_layout.dims())?;
    check_dims(OP, "gradient", grad.1.dims(), ids_layout.dims())?;
    check_range(OP, ids, input_shape.dims()[axis], axis, input_shape)
}

/// [`IndexKernels::cat`]: at least one part, all of one dtype (any), `axis`
/// inside them, equal dims off `axis`.
pub fn check_cat<'a>(parts: impl IntoIterator<Item = (DType, &'a Layout)>, axis: usize) -> Result<()> {
    const OP: &str = "cat";
    let mut parts = parts.into_iter();
    let Some((d0, l0)) = parts.next() else {
        return Err(Error::value(OP, "expected at least one tensor, got an empty list"));
    };
    check_axis(OP, axis, l0.rank())?;
    for (k, (d, l)) in parts.enumerate() {
        if d != d0 {
            return Err(Error::dtype(OP, format!("operands have dtypes {d0} and {d}; expected the same dtype")));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn selection_checks_the_axis_and_every_id() {
        let l = Layout::contiguous([3, 2]);
        assert!(check_index_select(&l, 0, &[0, 2, 2]).is_ok());
        let e = check_index_select(&l, 0, &[0, 3]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Index);
        assert!(e.message.contains("index 3 is out of range for axis 0 of size 3"), "{e}");
        let e = check_gather(&l, 1, &Layout::contiguous([1, 1]), &[-1]).unwrap_err();
        assert!(e.message.contains("-1") && e.message.contains("negative"), "{e}");
        assert_eq!(check_index_select(&l, 2, &[0]).unwrap_err().kind, ErrorKind::Axis);
        let e = check_gather(&l, 0, &Layout::contiguous([2, 3]), &[0; 6]).unwrap_err();
        assert!(e.message.contains("does not fit input shape [3, 2] off axis 0"), "{e}");
    }

    #[test]
    fn the_adding_kernels_check_dtypes_first() {
        let (x, f) = (Layout::contiguous([3, 2]), DType::F32);
        let src = Layout::contiguous([2, 2]);
        assert!(check_index_add((f, &x), 0, &[0, 2], (f, &src)).is_ok());
        // A 16-bit input is the error even with an id out of range.
        let e = check_index_add((DType::BF16, &x), 0, &[7, 2], (DType::BF16, &src)).unwrap_err();
        assert!(e.message.starts_with("dtype bf16 is not supported"), "{e}");
        let e = check_index_add((f, &x), 0, &[0, 2], (DType::F64, &src)).unwrap_err();
        assert_eq!(e.message, "operands have dtypes f32 and f64; expected the same dtype");
        let e = check_index_add((f, &x), 0, &[0], (f, &src)).unwrap_err();
        assert!(e.message.contains("source has shape [2, 2], expected [1, 2]"), "{e}");
        let ids = Layout::contiguous([2, 2]);
        assert!(check_scatter_add((f, &x), 0, &ids, &[0, 1, 2, 0], (f, &ids)).is_ok());
        assert_eq!(
            check_scatter_add((DType::I64, &x), 0, &ids, &[0; 4], (DType::I64, &ids)).unwrap_err().kind,
            ErrorKind::DType
        );
        assert_eq!(
            check_scatter_add((f, &x), 0, &ids, &[0, 1, 3, 0], (f, &ids)).unwrap_err().kind,
            ErrorKind::Index
        );
        let shape = Shape::new([3, 2]);
        assert!(check_index_select_backward((f, &src), 0, &[1, 1], &shape).is_ok());
        assert_eq!(
            check_index_select_backward((DType::F16, &src), 0, &[1, 1], &shape).unwrap_err().kind,
            ErrorKind::DType
        );
        assert_eq!(check_index_select_backward((f, &src), 0, &[1, 3], &shape).unwrap_err().kind, ErrorKind::Index);
        assert!(check_gather_backward((f, &ids), 0, &ids, &[0, 1, 2, 0], &shape).is_ok());
        assert_eq!(
            check_gather_backward((DType::F16, &ids), 0, &ids, &[0; 4], &shape).unwrap_err().kind,
            ErrorKind::DType
        );
        let e = check_gather_backward((f, &src), 0, &Layout::contiguous([1, 2]), &[0, 0], &shape).unwrap_err();
        assert!(e.message.contains("gradient has shape [2, 2], expected [1, 2]"), "{e}");
    }

    #[test]
    fn cat_wants_parts_of_one_dtype_and_matching_dims() {
        let (a, b) = (Layout::contiguous([2, 3]), Layout::contiguous([4, 3]));
        assert!(check_cat([(DType::I64, &a), (DType::I64, &b)], 0).is_ok());
        assert_eq!(check_cat([], 0).unwrap_err().kind, ErrorKind::Value);
        let e = check_cat([(DType::F32, &a), (DType::F16, &b)], 0).unwrap_err();
        assert_eq!(e.message, "operands have dtypes f32 and f16; expected the same dtype");
        let e = check_cat([(DType::F32, &a), (DType::F32, &b)], 1).unwrap_err();
        assert!(e.message.contains("part 1 has shape [4, 3] but part 0 has shape [2, 3]"), "{e}");
        assert_eq!(check_cat([(DType::F32, &a)], 2).unwrap_err().kind, ErrorKind::Axis);
    }
}
