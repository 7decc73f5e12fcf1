//! Public testing tools: a finite-difference gradient checker and proptest
//! strategies for shapes, broadcasting and non-contiguous views.
//!
//! Property-testing the gradient of your own function takes a few lines:
//!
//! ```
//! use proptest::prelude::*;
//! use tamer::testing::{check_gradients, proptest_config, strategies, GradCheckConfig};
//!
//! // 8 cases unless PROPTEST_CASES says otherwise; a failure prints the run's seed.
//! proptest!(proptest_config(8), |(x in strategies::tensor(strategies::shape(1..=3, 1..=4)))| {
//!     let f = |xs: &[tamer::Tensor]| xs[0].tanh()?.mul(&xs[0])?.sum_all();
//!     let report = check_gradients(f, &[x], &GradCheckConfig::default()).unwrap();
//!     prop_assert!(report.passed(), "{report}");
//! });
//! ```

mod config;
mod gradcheck;
pub mod strategies;

pub use config::proptest_config;
pub use gradcheck::{check_gradients, numeric_derivative, GradCheckConfig, GradCheckReport, WorstElement};
