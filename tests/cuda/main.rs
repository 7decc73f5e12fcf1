//! CUDA parity tests: every op run on the CPU and on a CUDA device from the
//! same inputs, compared element by element.
//!
//! Built only with `--features cuda`. Without a usable GPU (CI, any laptop)
//! each test prints why it skipped and passes; on a GPU machine the same
//! binary runs everything (scripts/device-check.sh). One module per op
//! family, each test written once with [`parity_test!`], which generates the
//! CPU and CUDA runs from one body.

#![cfg(feature = "cuda")]

mod harness;

mod attention;
mod copy;
mod elementwise;
mod gradcheck;
mod index_conv;
mod matmul;
mod rows;
mod train;
