//! Ops, one module per family. Each module holds the public methods on
//! `Tensor`, the backward of each op, and the kernel trait a backend
//! implements for the family (the CPU implementation is in `backend::cpu`).

pub mod binary;
pub mod index;
pub mod matmul;
pub mod nn;
pub mod reduce;
pub mod unary;
