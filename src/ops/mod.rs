//! Ops, one module per family. Each module holds the public methods on
//! `Tensor` and the backward of each op; the kernels they call are the
//! family's trait in `backend/contract/`, reached through `dispatch!`.

pub mod binary;
pub mod index;
pub mod matmul;
pub mod nn;
pub mod reduce;
pub mod unary;
