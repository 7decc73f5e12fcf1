//! CUDA parity tests: every op run on the CPU and on a CUDA device from the
//! same inputs, compared element by element.
//!
//! Built only with `--features cuda`. Without a usable GPU (CI, any laptop)
//! each test prints a counted `SKIPPED` line with the reason and passes;
//! with `TAMER_REQUIRE_CUDA=1` it fails instead. On a GPU machine the same
//! binary runs everything (scripts/device-check.sh sets that variable), and
//! every output of a CUDA run must be on the GPU (`harness::assert_on`). One module per op
//! family, named as the family's module in `tests/integration/`, each test
//! written once with [`parity_test!`], which generates the CPU and CUDA runs
//! from one body.

#![cfg(feature = "cuda")]

mod harness;

// Op families (the CPU side is the same module of tests/integration/).
mod attention;
mod binary;
mod conv;
mod cross_entropy;
mod dropout;
mod index;
mod layer_norm;
mod matmul;
mod pool;
mod reduce;
mod softmax;
mod unary;
mod views;

// Subsystems.
mod autocast;
mod device;
#[cfg(feature = "nccl")]
mod dist;
mod grad_scaler;
mod optim;
mod optim_fused;
mod train;
