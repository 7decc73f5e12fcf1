//! The kernel contract: what an op needs from any device, one file per op
//! family. Each file holds the family's kernel trait, the argument structs
//! its kernels take and return, the function types the kernels are written
//! for (`UnaryFn`, `BinaryFn`), and one validator per kernel, which both
//! backends call before they read an operand, so a bad argument is the same
//! `Error` on every device. Every trait is listed in
//! [`BackendStorage`](super::BackendStorage).
//!
//! # Dtypes
//!
//! Every kernel that computes takes f32 and f64 ([`COMPUTE_FLOATS`]); kernels
//! that only move data (selection, concatenation, copies) take every dtype.
//! f16 and bf16 are storage formats: a backend may declare, per family, that
//! its kernels also read them ([`FLOATS`]: each element widened to f32,
//! computed, and rounded once), in the family trait's `DTYPES`. CUDA declares
//! it for the unary and binary functions and for matmul, which is what
//! autocast and 16-bit models on the GPU run on; the CPU declares it nowhere
//! (a 16-bit tensor there is converted with `to_dtype` first). The validators
//! check the dtype first, so an unsupported dtype is the first error either
//! backend gives.
//!
//! # Order of checks
//!
//! A kernel calls its validator before anything else, with the dtypes and
//! layouts of its operands. Kernels that read index values (the index family,
//! cross_entropy) check that the indices are i64 first ([`check_indices_dtype`]),
//! read them to the host, and then call the validator with the values, so a
//! bad index is an error naming it on every device. Checks only one backend
//! can need (operands on different GPUs, the CPU's `TAMER_SIMD` override)
//! come after the validator.
//!
//! The contract depends on the value types (`crate::types`) and nothing
//! else: the ops above it reach the kernels through `dispatch!`, and the
//! backends below it (`cpu/`, `cuda/`) implement the traits.

pub mod binary;
pub mod index;
pub mod matmul;
pub mod nn;
pub mod optim;
pub mod reduce;
pub mod unary;

use crate::types::{DType, Layout};
use crate::{Error, Result};

/// The dtypes every backend computes in.
pub const COMPUTE_FLOATS: &[DType] = &[DType::F32, DType::F64];

/// Every float dtype: [`COMPUTE_FLOATS`] and the 16-bit storage formats, for
/// the families a backend computes those in (see the module docs).
pub const FLOATS: &[DType] = &[DType::F32, DType::F64, DType::BF16, DType::F16];

/// `dtype` is one `op` takes: one of `dtypes`, else [`unsupported_dtype_of`].
pub fn check_dtype(op: &'static str, dtype: DType, dtypes: &[DType]) -> Result<()> {
    if dtypes.contains(&dtype) {
        return Ok(());
    }
    Err(unsupported_dtype_of(op, dtype, dtypes))
}

/// The error for a kernel that does not take `dtype`: it names the dtypes it
/// does take, with a hint for the usual cases.
pub fn unsupported_dtype_of(op: &'static str, dtype: DType, dtypes: &[DType]) -> Error {
    let hint = match dtype {
        DType::F16 | DType::BF16 => " (f16/bf16 are storage formats here: convert with .to_dtype(DType::F32) first)",
        DType::I64 => " (integer tensors hold indices)",
        _ => "",
    };
    let names: Vec<&str> = dtypes.iter().map(|d| d.name()).collect();
    let expected = match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => "nothing".to_string(),
    };
    Error::dtype(op, format!("dtype {dtype} is not supported, expected {expected}{hint}"))
}

/// The error for an op that computes in f32 and f64 only and got `dtype`.
pub fn unsupported_dtype(op: &'static str, dtype: DType) -> Error {
    unsupported_dtype_of(op, dtype, COMPUTE_FLOATS)
}

/// Indices (ids, class targets) are i64; checked before a kernel reads them.
pub fn check_indices_dtype(op: &'static str, what: &str, dtype: DType) -> Result<()> {
    if dtype != DType::I64 {
        return Err(Error::dtype(op, format!("{what} have dtype {dtype}, expected i64")));
    }
    Ok(())
}

/// The length of the last axis, along which the row-wise kernels (softmax,
/// layer_norm, cross_entropy) work: 1 for a scalar, one row of one element.
pub fn row_len(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn a_dtype_outside_the_set_is_an_error_naming_the_set() {
        assert!(check_dtype("exp", DType::F32, COMPUTE_FLOATS).is_ok());
        assert!(check_dtype("exp", DType::BF16, FLOATS).is_ok());
        let e = check_dtype("exp", DType::BF16, COMPUTE_FLOATS).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DType);
        assert!(e.to_string().contains("exp"), "{e}");
        assert!(e.message.contains("dtype bf16 is not supported, expected f32 or f64"), "{e}");
        assert!(e.message.contains(".to_dtype(DType::F32)"), "{e}");
        let e = check_dtype("exp", DType::I64, FLOATS).unwrap_err();
        assert!(e.message.contains("expected f32, f64, bf16 or f16 (integer tensors hold indices)"), "{e}");
        assert_eq!(
            unsupported_dtype("sum", DType::F16).message,
            check_dtype("sum", DType::F16, COMPUTE_FLOATS).unwrap_err().message
        );
    }

    #[test]
    fn indices_must_be_i64() {
        assert!(check_indices_dtype("gather", "indices", DType::I64).is_ok());
        let e = check_indices_dtype("gather", "indices", DType::F32).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DType);
        assert_eq!(e.message, "indices have dtype f32, expected i64");
    }

    #[test]
    fn a_row_is_the_last_axis() {
        assert_eq!(row_len(&Layout::contiguous([3, 5])), 5);
        assert_eq!(row_len(&Layout::contiguous([4, 0])), 0);
        assert_eq!(row_len(&Layout::contiguous(Vec::<usize>::new())), 1);
    }
}
