//! The layer-norm family's contract: [`LayerNormKernels`], what its kernels
//! return, and the validators both backends call before reading.

use crate::backend::contract::{check_dtype, row_len, COMPUTE_FLOATS};
use crate::types::{DType, Layout};
use crate::{Error, Result};

/// What the forward kernel returns: the output and the per-row statistics.
pub struct LayerNormForward<S> {
    /// y: contiguous, the input's shape.
    pub y: S,
    /// mean: `[rows]`
    pub mean: S,
    /// rstd: `[rows]`, `1/√(var + eps)`
    pub rstd: S,
}

/// What the backward kernel returns; `dweight`/`dbias` only when asked for.
pub struct LayerNormGrads<S> {
    /// dx: contiguous, the input's shape.
    pub dx: S,
    /// dweight: `[C]`
    pub dweight: Option<S>,
    /// dbias: `[C]`
    pub dbias: Option<S>,
}

/// The kernels a backend provides for layer_norm.
pub trait LayerNormKernels: Sized {
    /// Normalise the last axis of `x: [.., C]` (`self`, any strides). `weight`
    /// and `bias` are `[C]` of the same dtype; `None` means 1 and 0.
    fn layer_norm(&self, layout: &Layout, weight: Option<(&Self, &Layout)>, bias: Option<(&Self, &Layout)>, eps: f64) -> Result<LayerNormForward<Self>>;
    /// Gradients from the input `x` (`self`), `weight`, the saved `mean` and
    /// `rstd` (contiguous `[rows]`) and `dy` (the input's shape, any strides).
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_backward(
        &self,
        x_layout: &Layout,
        weight: Option<(&Self, &Layout)>,
        mean: &Self,
        rstd: &Self,
        dy: &Self,
        dy_layout: &Layout,
        want_dweight: bool,
        want_dbias: bool,
    ) -> Result<LayerNormGrads<Self>>;
}

/// An optional `[C]` operand: the input's dtype and `c` elements.
fn check_param(name: &str, p: Option<(DType, &Layout)>, x_dtype: DType, c: usize, x_layout: &Layout) -> Result<()> {
    const OP: &str = "layer_norm";
    let Some((dtype, layout)) = p else { return Ok(()) };
    if dtype != x_dtype {
        return Err(Error::dtype(
            OP,
            format!("{name} has dtype {dtype} but the input has dtype {x_dtype}; expected equal dtypes"),
        ));
    }
    if layout.numel() != c {
        return Err(Error::shape(
            OP,
            format!("{name} has {} elements, expected {c} (the last axis of {})", layout.numel(), x_layout.shape()),
        ));
    }
    Ok(())
}

/// [`LayerNormKernels::layer_norm`]: an f32 or f64 input, weight and bias of
/// its dtype with one element per column.
pub fn check_layer_norm(x: (DType, &Layout), weight: Option<(DType, &Layout)>, bias: Option<(DType, &Layout)>) -> Result<()> {
    check_dtype("layer_norm", x.0, COMPUTE_FLOATS)?;
    let c = row_len(x.1);
    check_param("weight", weight, x.0, c, x.1)?;
    check_param("bias", bias, x.0, c, x.1)
}

/// [`LayerNormKernels::layer_norm_backward`]: `x` and `dy` of one shape, every
/// operand of one dtype (f32 or f64), one saved statistic per row, a `[C]` weight. Returns
/// `(rows, c)` (no rows when a row is empty: there are no statistics then).
pub fn check_layer_norm_backward(
    x: (DType, &Layout),
    weight: Option<(DType, &Layout)>,
    mean: (DType, usize),
    rstd: (DType, usize),
    dy: (DType, &Layout),
) -> Result<(usize, usize)> {
    const OP: &str = "layer_norm";
    check_dtype(OP, x.0, COMPUTE_FLOATS)?;
    if x.1.dims() != dy.1.dims() {
        return Err(Error::shape(
            OP,
            format!(
                "backward got input shape {} and gradient shape {}; expected equal shapes",
                x.1.shape(),
                dy.1.shape()
            ),
        ));
    }
    if [mean.0, rstd.0, dy.0].iter().any(|&d| d != x.0) {
        return Err(Error::dtype(OP, format!("backward operands have mixed dtypes (input is {})", x.0)));
    }
    let c = row_len(x.1);
    let rows = x.1.numel().checked_div(c).unwrap_or(0);
    if mean.1 != rows || rstd.1 != rows {
        return Err(Error::shape(
            OP,
            format!("saved statistics hold {} and {} values, expected {rows}", mean.1, rstd.1),
        ));
    }
    check_param("weight", weight, x.0, c, x.1)?;
    Ok((rows, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn layer_norm_wants_a_float_input_and_matching_parameters() {
        let (x, c) = (Layout::contiguous([2, 3]), Layout::contiguous([3]));
        let f = DType::F32;
        assert!(check_layer_norm((f, &x), Some((f, &c)), None).is_ok());
        let e = check_layer_norm((DType::F16, &x), Some((f, &c)), None).unwrap_err();
        assert!(e.message.starts_with("dtype f16 is not supported"), "{e}");
        let e = check_layer_norm((f, &x), None, Some((DType::F64, &c))).unwrap_err();
        assert!(e.message.contains("bias has dtype f64"), "{e}");
        let e = check_layer_norm((f, &x), Some((f, &Layout::contiguous([4]))), None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        assert!(e.message.contains("weight has 4 elements, expected 3"), "{e}");
    }

    #[test]
    fn layer_norm_backward_counts_rows_and_checks_every_operand() {
        let (x, c) = (Layout::contiguous([4, 3]), Layout::contiguous([3]));
        let f = DType::F64;
        assert_eq!(check_layer_norm_backward((f, &x), Some((f, &c)), (f, 4), (f, 4), (f, &x)).unwrap(), (4, 3));
        // empty rows: no statistics
        let empty = Layout::contiguous([4, 0]);
        assert_eq!(check_layer_norm_backward((f, &empty), None, (f, 0), (f, 0), (f, &empty)).unwrap(), (0, 0));
        let i = DType::I64;
        assert_eq!(
            check_layer_norm_backward((i, &x), None, (i, 4), (i, 4), (i, &x)).unwrap_err().kind,
            ErrorKind::DType
        );
        let e = check_layer_norm_backward((f, &x), None, (f, 4), (f, 4), (f, &Layout::contiguous([3, 4]))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        let e = check_layer_norm_backward((f, &x), None, (DType::F32, 4), (f, 4), (f, &x)).unwrap_err();
        assert!(e.message.contains("mixed dtypes"), "{e}");
        let e = check_layer_norm_backward((f, &x), None, (f, 3), (f, 4), (f, &x)).unwrap_err();
        assert!(e.message.contains("hold 3 and 4 values, expected 4"), "{e}");
    }
}
