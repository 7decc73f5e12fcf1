//! `tamer::profile`: exact counts, FLOPs and bytes for small graphs, nothing
//! recorded when off, `reset`, the JSON, threads, and `TAMER_PROFILE`.
//!
//! Its own test binary because the profiler is process-wide: in the
//! integration binary, tests running beside these would add their ops to
//! the counts. Here every test holds [`LOCK`] while it profiles.

use std::sync::{Mutex, MutexGuard};
use tamer::nn::Param;
use tamer::optim::{Adam, AdamConfig, Optimizer};
use tamer::profile::{self, ProfileReport};
use tamer::{CrossEntropyOptions, Result, Tensor};

static LOCK: Mutex<()> = Mutex::new(());

/// Every test holds this for its whole length, so that no other test's ops
/// run while it profiles.
fn alone() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run `f` with profiling on from a clean table, and report.
fn profiled(f: impl FnOnce() -> Result<()>) -> ProfileReport {
    profile::reset();
    profile::enable();
    let outcome = f();
    profile::disable();
    outcome.unwrap();
    profile::report()
}

fn ramp(n: usize, shape: &[usize]) -> Tensor {
    Tensor::from_vec((0..n).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect(), shape).unwrap()
}

fn names(report: &ProfileReport) -> Vec<&str> {
    let mut names: Vec<&str> = report.ops.iter().map(|r| r.op.as_str()).collect();
    names.sort_unstable();
    names
}

/// `x.matmul(w).gelu().sum_all().backward()`: every op once forward and once
/// backward (a node is one backward call, however many kernels it runs), the
/// products' FLOPs `2·m·n·k` each, bytes = elements read and written × 4.
#[test]
fn a_small_graph_is_counted_exactly() {
    let _alone = alone();
    let (m, k, n) = (5, 3, 4);
    let x = ramp(m * k, &[m, k]).variable();
    let w = ramp(k * n, &[k, n]).variable();
    let report = profiled(|| {
        x.matmul(&w)?.gelu()?.sum_all()?.backward()?;
        Ok(())
    });
    // The seed of the backward pass is a `full`; the scalar sum is a reshape
    // of the kept [1, 1] (a view); the transposes inside matmul's backward
    // are nested in it and add no row.
    assert_eq!(names(&report), ["full", "gelu", "matmul", "reshape", "sum"], "{report}");
    let calls = |op: &str| {
        let r = report.op(op).unwrap();
        (r.forward.calls, r.backward.calls)
    };
    for op in ["matmul", "gelu", "sum", "reshape"] {
        assert_eq!(calls(op), (1, 1), "{op}\n{report}");
    }
    assert_eq!(calls("full"), (0, 1), "{report}");

    let mm = report.op("matmul").unwrap();
    let (m, k, n) = (m as u64, k as u64, n as u64);
    assert_eq!(mm.forward.flops, 2 * m * n * k);
    assert_eq!(mm.forward.bytes, 4 * (m * k + k * n + m * n));
    // dX = dY·Wᵀ and dW = Xᵀ·dY: two products of the same size.
    assert_eq!(mm.backward.flops, 2 * (2 * m * n * k));
    assert_eq!(mm.backward.bytes, 2 * 4 * (m * k + k * n + m * n));

    let gelu = report.op("gelu").unwrap();
    assert_eq!((gelu.forward.flops, gelu.forward.bytes), (m * n, 4 * 2 * m * n));
    // x, y and dy read, dx written.
    assert_eq!((gelu.backward.flops, gelu.backward.bytes), (m * n, 4 * 4 * m * n));

    let sum = report.op("sum").unwrap();
    assert_eq!((sum.forward.flops, sum.forward.bytes), (m * n, 4 * (m * n + 1)));
    // The backward broadcasts dy and copies it out: a copy, no FLOPs.
    assert_eq!((sum.backward.flops, sum.backward.bytes), (0, 4 * 2 * m * n));

    let reshape = report.op("reshape").unwrap();
    assert_eq!((reshape.forward.bytes, reshape.backward.bytes), (0, 0));
    assert!(mm.nanos() > 0 && report.recorded_nanos() >= mm.nanos());
}

/// A batched product with a shared weight counts every batch entry; a
/// broadcast operand is counted at its own size.
#[test]
fn batched_flops_and_broadcast_bytes() {
    let _alone = alone();
    let x = ramp(2 * 3 * 4 * 5, &[2, 3, 4, 5]);
    let w = ramp(5 * 6, &[5, 6]);
    let b = ramp(6, &[6]);
    let report = profiled(|| {
        x.matmul(&w)?.add(&b)?;
        Ok(())
    });
    let mm = report.op("matmul").unwrap();
    assert_eq!(mm.forward.flops, 2 * 24 * 6 * 5);
    assert_eq!(mm.forward.bytes, 4 * (120 + 30 + 24 * 6));
    let add = report.op("add").unwrap();
    assert_eq!((add.forward.calls, add.backward.calls), (1, 0));
    assert_eq!((add.forward.flops, add.forward.bytes), (144, 4 * (144 + 6 + 144)));
}

/// Ops inside another op's scope (the sum and scale of cross-entropy's mean)
/// add their cost to it and no call or row of their own; a tensor used twice
/// gets its gradients summed, which is `grad_sum`.
#[test]
fn nested_ops_add_no_call_and_gradient_sums_are_counted() {
    let _alone = alone();
    let logits = ramp(6 * 10, &[6, 10]).variable();
    let targets = Tensor::from_vec(vec![1i64, 0, 9, 3, 3, 7], [6]).unwrap();
    let report = profiled(|| {
        let e = logits.exp()?;
        let twice = e.add(&e)?;
        twice.cross_entropy(&targets, CrossEntropyOptions::default())?.backward()?;
        Ok(())
    });
    assert_eq!(names(&report), ["add", "cross_entropy", "exp", "full", "grad_sum"], "{report}");
    let ce = report.op("cross_entropy").unwrap();
    assert_eq!((ce.forward.calls, ce.backward.calls), (1, 1));
    // The kernel's own estimate (4 FLOPs per logit; the logits, the losses
    // and two statistics per row, and the i64 targets), plus the nested sum
    // of the 6 losses and its scale by 1/6.
    assert_eq!(ce.forward.flops, 4 * 60 + 6 + 1);
    assert_eq!(ce.forward.bytes, (4 * (60 + 3 * 6) + 8 * 6) + 4 * (6 + 1) + 4 * 2);
    let sums = report.op("grad_sum").unwrap();
    assert_eq!((sums.forward.calls, sums.backward.calls), (0, 1));
    assert_eq!(sums.backward.bytes, 4 * 3 * 60);
}

#[test]
fn off_records_nothing_and_reset_clears() {
    let _alone = alone();
    let x = ramp(64, &[8, 8]).variable();
    let graph = || -> Result<()> {
        x.matmul(&x)?.tanh()?.sum_all()?.backward()?;
        Ok(())
    };
    profile::reset();
    profile::disable();
    graph().unwrap();
    assert!(!profile::is_enabled());
    let off = profile::report();
    assert!(off.is_empty(), "{off}");
    assert_eq!(off.wall, std::time::Duration::ZERO);

    profile::enable();
    graph().unwrap();
    profile::disable();
    assert_eq!(profile::report().op("tanh").unwrap().forward.calls, 1);
    // Counts add up over runs until a reset.
    profile::enable();
    graph().unwrap();
    profile::disable();
    let twice = profile::report();
    assert_eq!(twice.op("tanh").unwrap().forward.calls, 2);
    assert!(twice.wall > std::time::Duration::ZERO);
    profile::reset();
    let cleared = profile::report();
    assert!(cleared.is_empty() && cleared.wall == std::time::Duration::ZERO, "{cleared}");
}

#[test]
fn the_json_parses_and_has_every_field() {
    let _alone = alone();
    let x = ramp(12, &[3, 4]).variable();
    let report = profiled(|| {
        x.softmax(-1)?.layer_norm(None, None, 1e-5)?.sum_all()?.backward()?;
        Ok(())
    });
    let text = serde_json::to_string(&report.to_json()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["wall_ms"].as_f64().unwrap() > 0.0);
    let recorded = v["recorded_ms"].as_f64().unwrap();
    assert!(recorded > 0.0);
    let ops = v["ops"].as_array().unwrap();
    assert_eq!(ops.len(), report.ops.len());
    let mut percent = 0.0;
    for (row, op) in ops.iter().zip(&report.ops) {
        assert_eq!(row["op"], op.op.as_str());
        for field in ["fwd_calls", "bwd_calls", "fwd_bytes", "bwd_bytes", "fwd_flops", "bwd_flops"] {
            assert!(row[field].is_u64(), "{field} in {row}");
        }
        for field in ["fwd_ms", "bwd_ms", "total_ms", "percent"] {
            assert!(row[field].is_f64(), "{field} in {row}");
        }
        for field in ["gb_per_s", "gflop_per_s"] {
            assert!(row[field].is_f64() || row[field].is_null(), "{field} in {row}");
        }
        percent += row["percent"].as_f64().unwrap();
    }
    assert!((percent - 100.0).abs() < 1e-6, "{percent}");
    let softmax = ops.iter().find(|r| r["op"] == "softmax").unwrap();
    assert_eq!(softmax["fwd_calls"], 1);
    assert_eq!(softmax["fwd_flops"], 5 * 12);
    assert_eq!(ops.iter().find(|r| r["op"] == "layer_norm").unwrap()["bwd_flops"], 13 * 12);
}

/// A kernel split across rayon's workers is one call; ops called on several
/// threads at once are each counted once.
#[test]
fn threads_do_not_double_count() {
    let _alone = alone();
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
    let n = 1 << 20; // far above the CPU backend's parallel threshold
    let big = ramp(n, &[n]);
    let small = ramp(1000, &[1000]);
    let report = profiled(|| {
        pool.install(|| -> Result<()> {
            big.gelu()?;
            (0..8).into_par_iter().try_for_each(|_| small.exp().map(drop))
        })
    });
    let gelu = report.op("gelu").unwrap();
    assert_eq!((gelu.forward.calls, gelu.forward.flops), (1, n as u64));
    assert_eq!(report.op("exp").unwrap().forward.calls, 8);
    assert_eq!(names(&report), ["exp", "gelu"]);
}

/// Optimizer updates are forward-phase rows named after the optimizer.
#[test]
fn an_adamw_step_is_one_call_per_parameter() {
    let _alone = alone();
    let w = Param::new(ramp(12, &[3, 4]));
    let b = Param::new(ramp(4, &[4]));
    let mut opt = Adam::new(vec![("w".into(), w.clone()), ("b".into(), b.clone())], AdamConfig::adamw(1e-3)).unwrap();
    let x = ramp(6, &[2, 3]);
    let grads = x.matmul(&w.tensor()).unwrap().add(&b.tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let report = profiled(|| opt.step(&grads));
    let adamw = report.op("adamw").unwrap();
    assert_eq!((adamw.forward.calls, adamw.backward.calls), (2, 0));
    assert_eq!(adamw.forward.flops, 14 * 16);
    assert_eq!(adamw.forward.bytes, 4 * 7 * 16);
}

/// `TAMER_PROFILE` decides at the first op of a process, so each case runs
/// in a child process: this test binary again, running only
/// [`env_child`] with the variable set.
#[test]
fn the_variable_switches_profiling_on_at_the_first_op() {
    let _alone = alone();
    for (value, expect) in [("1", "on"), ("0", "off"), ("maybe", "error")] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "env_child", "--test-threads=1", "--nocapture"])
            .env(profile::VARIABLE, value)
            .env("TAMER_PROFILE_TEST_EXPECT", expect)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "TAMER_PROFILE={value}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The child of [`the_variable_switches_profiling_on_at_the_first_op`]; on
/// its own (no expectation set) it checks nothing.
#[test]
fn env_child() {
    let Ok(expect) = std::env::var("TAMER_PROFILE_TEST_EXPECT") else { return };
    // Made from host data, which is no op: the first op is the one below.
    let x = Tensor::from_vec(vec![1.0f32, 4.0, 9.0, 16.0], [4]).unwrap();
    match expect.as_str() {
        "on" => {
            x.sqrt().unwrap();
            assert!(profile::is_enabled());
            let report = profile::report();
            assert_eq!(names(&report), ["sqrt"], "{report}");
        }
        "off" => {
            x.sqrt().unwrap();
            assert!(!profile::is_enabled());
            assert!(profile::report().is_empty());
        }
        _ => {
            let err = x.sqrt().unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("sqrt: TAMER_PROFILE=\"maybe\"") && msg.contains("expected 1"), "{msg}");
            // An explicit switch wins over the variable.
            profile::enable();
            assert!(x.sqrt().is_ok());
        }
    }
}
