//! Ops, one module per family. Each module holds the public methods on
//! `Tensor` and the backward of each op; the kernels they call are the
//! family's trait in `backend/contract/`, reached through `dispatch!`.
//! `views` (reshape, permute, narrow, broadcast_as ...) needs no kernel but
//! a copy: a view is a new layout over the same storage, recorded with its
//! backward like any op.

pub mod binary;
pub mod index;
pub(crate) mod linear;
pub mod matmul;
pub mod nn;
pub mod reduce;
pub mod unary;
mod views;
