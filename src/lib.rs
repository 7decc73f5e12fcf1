//! # tamer
//!
//! A from-scratch tensor engine with reverse-mode autodiff, a SIMD CPU backend
//! (and a CUDA backend behind the `cuda` feature), built for training
//! transformers well.
//!
//! ```
//! use tamer::{DType, Tensor};
//! let x = Tensor::from_vec(vec![1.0f64, -2.0, 3.0], [3]).unwrap().variable();
//! let y = x.tanh().unwrap().sum_all().unwrap();
//! let grads = y.backward().unwrap();
//! let dx = grads.get(&x).unwrap().to_vec::<f64>().unwrap();
//! assert!((dx[0] - (1.0 - 1f64.tanh().powi(2))).abs() < 1e-12);
//! ```
//!
//! Start with ARCHITECTURE.md for the map of the crate.

pub mod autocast;
pub mod autograd;
pub mod backend;
pub mod checkpoint;
pub mod data;
pub mod diagnostics;
pub mod dist;
mod error;
pub mod models;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod profile;
pub mod tensor;
pub mod testing;
pub mod train;
pub mod types;

pub use autocast::autocast;
pub use autograd::{is_grad_enabled, no_grad, GradStore, NoGradGuard};
pub use backend::{empty_cache, memory_stats, reset_peak_memory, MemoryStats};
pub use error::{Error, ErrorKind, Result};
pub use ops::nn::attention::{AttnMask, CausalAlign};
pub use ops::nn::cross_entropy::{CrossEntropyOptions, Reduction};
pub use tensor::{rng, Tensor, TensorId, TensorRng};
pub use types::{DType, Device, Layout, Shape};

/// The README's code blocks, compiled and run as doctests so the tour cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
