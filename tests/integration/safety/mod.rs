//! Issue 9, part 3: bad input gets a clear error, and nothing is lost.
//!
//! A module per concern: shapes whose element count
//! overflows, crafted files that used to panic, the training run directory
//! (refusing to overwrite, temp files, metrics lines), resume checks, the
//! model configuration stored in checkpoints, the examples' behaviour as
//! processes, and the fuzz property tests (`PROPTEST_CASES=20000 cargo test
//! --test integration safety::fuzz` runs them longer).

mod crafted;
mod determinism;
mod examples;
mod fuzz;
mod gzip;
mod harness;
mod model_meta;
mod resume;
mod run_dir;
mod shapes;
