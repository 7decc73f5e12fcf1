//! The matrix-product family's contract: [`MatmulKernels`] and the check
//! every backend's kernel makes before it reads.

use super::{check_dtype, COMPUTE_FLOATS};
use crate::types::{DType, Layout};
use crate::{Error, Result};

/// The kernels a backend provides for matrix products.
pub trait MatmulKernels: Sized {
    /// The dtypes this backend's matrix products take: f32 and f64, unless it
    /// declares the 16-bit formats too (see the contract's module docs).
    const DTYPES: &'static [DType] = COMPUTE_FLOATS;
    /// `lhs @ rhs` for layouts of shape `[batch.., m, k]` and `[batch.., k, n]`
    /// whose batch dims are already broadcast to the same shape (stride 0 where
    /// stretched). Any strides are allowed, so transposed operands need no copy.
    /// The result is contiguous `[batch.., m, n]`. `k = 0` gives zeros.
    /// Kernels check that both layouts lie inside their storage and return an
    /// error (never read out of bounds) when they do not.
    fn matmul(&self, lhs_layout: &Layout, rhs: &Self, rhs_layout: &Layout) -> Result<Self>;
    /// A linear layer's forward, `lhs @ rhs + bias`: `lhs` and `rhs` as for
    /// [`MatmulKernels::matmul`], `bias` (when given) of shape `[n]` with any
    /// stride, added to every row of the product. The result is contiguous
    /// `[batch.., m, n]`, what `matmul` followed by a broadcast `add` gives,
    /// but a backend may write the bias rows first and let the product
    /// accumulate onto them, saving the second pass over the output.
    fn linear(&self, lhs_layout: &Layout, rhs: &Self, rhs_layout: &Layout, bias: Option<(&Self, &Layout)>) -> Result<Self>;
}

/// [`MatmulKernels::matmul`]: operands of one dtype, one the backend's
/// kernels take (`dtypes`, its [`MatmulKernels::DTYPES`]), with layouts that
/// pass [`check_kernel_layouts`]. `lhs` and `rhs` are `(dtype, layout, storage
/// length)`.
pub fn check_matmul(lhs: (DType, &Layout, usize), rhs: (DType, &Layout, usize), dtypes: &[DType]) -> Result<()> {
    check_dtype("matmul", lhs.0, dtypes)?;
    if rhs.0 != lhs.0 {
        return Err(Error::dtype(
            "matmul",
            format!("operands have dtypes {} and {}; expected the same dtype", lhs.0, rhs.0),
        ));
    }
    check_kernel_layouts(lhs.1, lhs.2, rhs.1, rhs.2)
}

/// [`MatmulKernels::linear`]: what [`check_matmul`] asks of the product's
/// operands, and a bias (`(dtype, layout, storage length)`) of their dtype,
/// of shape `[n]`, lying inside its storage.
pub fn check_linear(lhs: (DType, &Layout, usize), rhs: (DType, &Layout, usize), bias: Option<(DType, &Layout, usize)>, dtypes: &[DType]) -> Result<()> {
    check_matmul(lhs, rhs, dtypes).map_err(|e| Error { op: "linear", ..e })?;
    let Some((dtype, layout, len)) = bias else { return Ok(()) };
    if dtype != lhs.0 {
        return Err(Error::dtype(
            "linear",
            format!("the bias has dtype {dtype}, the operands {}; expected the same dtype", lhs.0),
        ));
    }
    let n = rhs.1.dims()[rhs.1.rank() - 1];
    if layout.dims() != [n] {
        return Err(Error::shape(
            "linear",
            format!("the bias has shape {}, expected [{n}] (the product's columns)", layout.shape()),
        ));
    }
    if layout.required_len() > len {
        return Err(Error::shape(
            "linear",
            format!(
                "bias layout (shape {}, strides {:?}, offset {}) reaches element {} of a storage of {len}",
                layout.shape(),
                layout.strides(),
                layout.offset(),
                layout.required_len() - 1
            ),
        ));
    }
    Ok(())
}

/// The layouts a matmul kernel can read: `[batch.., m, k]`
/// and `[batch.., k, n]` layouts with equal batch dims and k, each lying inside
/// its storage (kernels read through raw pointers, so an out-of-bounds layout
/// must be an error, never a read).
pub fn check_kernel_layouts(lhs: &Layout, lhs_len: usize, rhs: &Layout, rhs_len: usize) -> Result<()> {
    let (r, a, b) = (lhs.rank(), lhs.dims(), rhs.dims());
    if r < 2 || rhs.rank() != r || a[..r - 2] != b[..r - 2] || a[r - 1] != b[r - 2] {
        return Err(Error::shape(
            "matmul",
            format!(
                "kernel layouts {} and {} do not form [batch.., m, k] @ [batch.., k, n] with equal batch dims and k",
                lhs.shape(),
                rhs.shape()
            ),
        ));
    }
    for (side, layout, len) in [("lhs", lhs, lhs_len), ("rhs", rhs, rhs_len)] {
        if layout.required_len() > len {
            return Err(Error::shape(
                "matmul",
                format!(
                    "{side} layout (shape {}, strides {:?}, offset {}) reaches element {} of a storage of {len}",
                    layout.shape(),
                    layout.strides(),
                    layout.offset(),
                    layout.required_len() - 1
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::contract::FLOATS;
    use crate::ErrorKind;

    #[test]
    fn matmul_wants_one_supported_dtype_and_fitting_layouts() {
        let (a, b) = (Layout::contiguous([2, 3]), Layout::contiguous([3, 4]));
        let f = DType::F32;
        assert!(check_matmul((f, &a, 6), (f, &b, 12), COMPUTE_FLOATS).is_ok());
        assert!(check_matmul((DType::F16, &a, 6), (DType::F16, &b, 12), FLOATS).is_ok());
        let e = check_matmul((DType::F16, &a, 6), (DType::F16, &b, 12), COMPUTE_FLOATS).unwrap_err();
        assert!(e.message.starts_with("dtype f16 is not supported, expected f32 or f64"), "{e}");
        let e = check_matmul((DType::I64, &a, 6), (DType::I64, &b, 12), FLOATS).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DType);
        let e = check_matmul((f, &a, 6), (DType::F64, &b, 12), COMPUTE_FLOATS).unwrap_err();
        assert!(e.message.contains("operands have dtypes f32 and f64"), "{e}");
        // k differs
        let e = check_matmul((f, &a, 6), (f, &Layout::contiguous([4, 4]), 16), COMPUTE_FLOATS).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        // rhs reaches past its storage
        let e = check_matmul((f, &a, 6), (f, &b, 11), COMPUTE_FLOATS).unwrap_err();
        assert!(e.message.contains("rhs layout") && e.message.contains("storage of 11"), "{e}");
    }

    #[test]
    fn linear_wants_a_bias_of_the_products_columns_and_dtype() {
        let (a, b, bias) = (Layout::contiguous([2, 3]), Layout::contiguous([3, 4]), Layout::contiguous([4]));
        let f = DType::F32;
        assert!(check_linear((f, &a, 6), (f, &b, 12), None, COMPUTE_FLOATS).is_ok());
        assert!(check_linear((f, &a, 6), (f, &b, 12), Some((f, &bias, 4)), COMPUTE_FLOATS).is_ok());
        // A strided bias (every other element of 8) is fine while it fits.
        let strided = Layout::new(crate::types::Shape::new([4]), vec![2], 1);
        assert!(check_linear((f, &a, 6), (f, &b, 12), Some((f, &strided, 8)), COMPUTE_FLOATS).is_ok());
        let e = check_linear((f, &a, 6), (f, &b, 12), Some((f, &strided, 7)), COMPUTE_FLOATS).unwrap_err();
        assert!(e.message.contains("bias layout") && e.message.contains("storage of 7"), "{e}");
        let e = check_linear((f, &a, 6), (f, &b, 12), Some((DType::F64, &bias, 4)), COMPUTE_FLOATS).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DType);
        assert!(e.message.contains("bias has dtype f64"), "{e}");
        let e = check_linear((f, &a, 6), (f, &b, 12), Some((f, &Layout::contiguous([3]), 3)), COMPUTE_FLOATS).unwrap_err();
        assert!(e.message.contains("bias has shape [3], expected [4]"), "{e}");
        // The product's own checks come first.
        let e = check_linear((f, &a, 6), (f, &b, 11), Some((DType::F64, &bias, 4)), COMPUTE_FLOATS).unwrap_err();
        assert!(e.op == "linear" && e.message.contains("rhs layout"), "{e}");
    }
}
