//! The kernel contract: what an op needs from any device, one file per op
//! family. Each file holds the family's kernel trait, the argument structs
//! its kernels take and return, the function types the kernels are written
//! for (`UnaryFn`, `BinaryFn`), and the validators both backends call before
//! they read an operand, so a bad argument is the same `Error` on every
//! device. Every trait is listed in [`BackendStorage`](super::BackendStorage).
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

use crate::types::DType;
use crate::Error;

/// The error for a kernel that does not take `dtype` (the CPU kernels and
/// most CUDA ones compute in f32 and f64), with a hint for the usual cases.
pub fn unsupported_dtype(op: &'static str, dtype: DType) -> Error {
    let hint = match dtype {
        DType::F16 | DType::BF16 => " (f16/bf16 are storage formats: convert with .to_dtype(DType::F32) first)",
        DType::I64 => " (integer tensors hold indices)",
        _ => "",
    };
    Error::dtype(op, format!("dtype {dtype} is not supported, expected f32 or f64{hint}"))
}
