//! The integration tests, one binary with one module per op family and per
//! subsystem (one binary links the crate once, where a binary per file linked
//! it thirty times: most of `cargo test`'s time was spent doing that).
//!
//! The op-family modules carry the same names as the CUDA parity modules in
//! `tests/cuda/`, so each family's CPU and CUDA tests sit side by side.
//! `tests/memory.rs` stays its own binary: it installs a counting global
//! allocator. Add a test to the module of its family or subsystem, or a new
//! module here; proptest keeps a module's regression seeds in
//! `tests/proptest-regressions/<module>.txt`.

mod common;

// The architecture: ARCHITECTURE.md's op table and the direction of dependencies.
mod architecture;

// Op families: gradient checks over random shapes and layouts, values against
// references, errors. Mirrored by tests/cuda/.
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
mod api_traps;
mod autocast;
mod checkpoint;
mod data;
mod data_corrupt;
mod data_loader;
mod data_script;
mod device;
mod diagnostics;
mod dist;
mod errors;
mod grad_scaler;
mod interop_gpt;
mod interop_vit;
mod lab;
mod models_gpt;
mod models_vit;
mod nn_blocks;
mod nn_layers;
mod optim;
mod optim_fused;
mod optim_reference;
mod plot;
mod safety;
mod train;
mod train_world;
