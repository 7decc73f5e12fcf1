//! Property-test the gradient of your own function with `tamer::testing`.
//!
//! `cargo run --example gradcheck`
//!
//! proptest draws random broadcast-compatible shapes and memory layouts (contiguous,
//! permuted, sliced); `check_gradients` compares backward with central differences.
//! The second half shows what a wrong derivative looks like, on purpose: a
//! softplus whose derivative has a sign slip. That check is meant to FAIL;
//! proptest shrinks the failing input to a minimal one and the report points
//! at the worst element. The example says so in its output and exits with 0
//! when the correct function passes and the buggy one fails (1 otherwise).

#[path = "cli/pipe.rs"]
mod pipe;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::RefCell;
use tamer::ops::unary::UnaryFn;
use tamer::tensor::Float;
use tamer::testing::{check_gradients, proptest_config, strategies, GradCheckConfig, GradCheckReport};
use tamer::{Result, Tensor};

/// The function under test: `Σ_last tanh(a)·softplus(b) + ½(a − b)²`, with `a` and `b` broadcast.
fn my_function(xs: &[Tensor]) -> Result<Tensor> {
    let (a, b) = (&xs[0], &xs[1]);
    let softplus = b.exp()?.add_scalar(1.0)?.log()?;
    a.tanh()?.mul(&softplus)?.add(&a.sub(b)?.square()?.scale(0.5)?)?.sum(&[-1], false)
}

/// Two f64 tensors of broadcast-compatible shapes, each in a random layout.
fn inputs() -> impl Strategy<Value = (Tensor, Tensor)> {
    (strategies::broadcast_pair(3, 4), strategies::view_kind(), strategies::view_kind(), any::<u64>())
        .prop_map(|((da, db), ka, kb, seed)| (strategies::tensor_with(&da, ka, seed), strategies::tensor_with(&db, kb, !seed)))
}

/// softplus with a deliberately wrong derivative (σ(x) would be right).
#[derive(Clone, Copy)]
struct BuggySoftplus;
impl UnaryFn for BuggySoftplus {
    const NAME: &'static str = "buggy_softplus";
    fn apply<T: Float>(&self, x: T) -> T {
        (x.exp() + T::ONE).ln()
    }
    fn derivative<T: Float>(&self, x: T, _y: T) -> T {
        T::ONE / (T::ONE + x.exp()) // σ(-x): a sign slip
    }
}

/// Check `f` on random inputs; whether it passed.
fn run(name: &str, f: fn(&[Tensor]) -> Result<Tensor>) -> bool {
    let reports: RefCell<Vec<GradCheckReport>> = RefCell::new(Vec::new());
    let mut runner = TestRunner::new(Config {
        failure_persistence: None, // an example has no source tree to save failures next to
        ..proptest_config(32)
    });
    let outcome = runner.run(&inputs(), |(a, b)| {
        let shapes = format!(
            "{:?} (strides {:?}) and {:?} (strides {:?})",
            a.dims(),
            a.layout().strides(),
            b.dims(),
            b.layout().strides()
        );
        let report = check_gradients(f, &[a, b], &GradCheckConfig::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        reports.borrow_mut().push(report.clone());
        prop_assert!(report.passed(), "{shapes}: {report}");
        Ok(())
    });
    let reports = reports.into_inner();
    let checked: usize = reports.iter().map(|r| r.checked).sum();
    let max_err = reports.iter().map(|r| r.max_abs_error).fold(0.0, f64::max);
    println!("== {name}: {} gradient checks, {checked} elements, max abs error {max_err:.2e}", reports.len());
    if let Some(first) = reports.first() {
        println!("   first case: {first}");
    }
    match &outcome {
        Ok(()) => println!("   PASSED"),
        Err(e) => println!("   FAILED (after shrinking): {e}"),
    }
    outcome.is_ok()
}

fn main() {
    pipe::exit_quietly_on_broken_pipe();
    let correct = run("my_function", my_function);
    println!();
    println!("The next check is meant to fail: BuggySoftplus's derivative is σ(−x) where σ(x) is right (a sign slip),");
    println!("to show what a wrong gradient looks like. proptest shrinks the failing input to a minimal one, and the");
    println!("report names the worst element: analytic (backward) against numeric (central differences).");
    let buggy = run("a deliberately buggy softplus (expected to FAIL)", |xs| {
        xs[0].tanh()?.mul(&xs[1].unary(BuggySoftplus)?)?.sum_all()
    });
    println!();
    match (correct, buggy) {
        (true, false) => println!("As intended: my_function's gradients are right, and the deliberate bug was caught."),
        (false, _) => {
            println!("my_function FAILED: its gradients disagree with the finite differences (see above).");
            std::process::exit(1);
        }
        (true, true) => {
            println!("The buggy softplus PASSED: the check should have caught its wrong derivative.");
            std::process::exit(1);
        }
    }
}
