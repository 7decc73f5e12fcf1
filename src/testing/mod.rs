//! Public testing tools: a finite-difference gradient checker and proptest
//! strategies for shapes, broadcasting and non-contiguous views.
//!
//! Property-testing the gradient of your own function takes a few lines:
//!
//! ```
//! use proptest::prelude::*;
//! use tamer::testing::{check_gradients, strategies, GradCheckConfig};
//!
//! proptest!(ProptestConfig::with_cases(8), |(x in strategies::tensor(strategies::shape(1..=3, 1..=4)))| {
//!     let f = |xs: &[tamer::Tensor]| xs[0].tanh()?.mul(&xs[0])?.sum_all();
//!     let report = check_gradients(f, &[x], &GradCheckConfig::default()).unwrap();
//!     prop_assert!(report.passed(), "{report}");
//! });
//! ```

mod gradcheck;
pub mod strategies;

pub use gradcheck::{check_gradients, GradCheckConfig, GradCheckReport, WorstElement};
