//! Optimizers, schedules, clipping and label smoothing against PyTorch.
//!
//! The fixtures come from scripts/make_optim_fixtures.py (torch.optim,
//! torch.optim.lr_scheduler, nanoGPT's get_lr, fairseq's inverse_sqrt,
//! torch.nn.utils.clip_grad_norm_, F.cross_entropy); the case configurations
//! are read from tests/fixtures/optim_fixtures.json so both sides build the
//! same thing.

use serde_json::Value;
use tamer::checkpoint::{self, Checkpoint};
use tamer::nn::Param;
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::optim::{
    clip_grad_norm, Adam, AdamConfig, Anneal, DecayRule, InverseSqrt, LrSchedule, OneCycle, Optimizer, Scheduler, Sgd, SgdConfig, WarmupCosine, WarmupLinear,
};
use tamer::{DType, GradStore, Tensor};

const NAMES: [&str; 3] = ["fc.weight", "fc.bias", "wte.weight"];

fn config() -> Value {
    let text = std::fs::read_to_string(checkpoint::fixture_path("optim_fixtures.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}
fn reference() -> Checkpoint {
    checkpoint::fixture("optim_reference.safetensors").unwrap()
}
fn schedules() -> Checkpoint {
    checkpoint::fixture("optim_schedules.safetensors").unwrap()
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}
fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}
fn values(ckpt: &Checkpoint, name: &str) -> Vec<f64> {
    ckpt.get(name).unwrap().to_f64_vec().unwrap()
}

/// Normwise relative error ‖actual − expected‖∞ / ‖expected‖∞: elements
/// that cancel to near zero (p − lr·d with both O(1)) carry the rounding of
/// the terms they came from, so each tensor is measured against its scale.
fn max_rel(expected: &[f64], actual: &[f64]) -> f64 {
    assert_eq!(expected.len(), actual.len());
    let scale = expected.iter().fold(0.0f64, |m, e| m.max(e.abs()));
    let diff = expected
        .iter()
        .zip(actual)
        .map(|(e, a)| (a - e).abs())
        .fold(0.0f64, |m, d| if d.is_nan() { f64::NAN } else { m.max(d) });
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// A parameter holding a copy of `t`: `Param::new` shares `t`'s storage, and
/// the optimizer would otherwise write into the fixture itself.
fn param_copy(t: &Tensor) -> Param {
    let copy = match t.dtype() {
        DType::F32 => Tensor::from_vec(t.to_vec::<f32>().unwrap(), t.dims().to_vec()),
        _ => Tensor::from_vec(t.to_vec::<f64>().unwrap(), t.dims().to_vec()),
    };
    Param::new(copy.unwrap())
}

fn one_cycle(cfg: &Value) -> OneCycle {
    let momentum = cfg["momentum"].as_array().map(|m| (m[0].as_f64().unwrap(), m[1].as_f64().unwrap()));
    let anneal = if cfg["anneal"] == "linear" { Anneal::Linear } else { Anneal::Cos };
    OneCycle::new(f(cfg, "max_lr"), u(cfg, "total_steps"))
        .unwrap()
        .pct_start(f(cfg, "pct_start"))
        .unwrap()
        .div_factors(f(cfg, "div_factor"), f(cfg, "final_div_factor"))
        .unwrap()
        .anneal(anneal)
        .three_phase(cfg["three_phase"].as_bool().unwrap())
        .momentum(momentum)
        .unwrap()
}

fn make_optimizer(case: &Value, params: Vec<(String, Param)>) -> Box<dyn Optimizer> {
    // "default_rule" decays fc.weight only: timm's rule with wte.weight listed as no_weight_decay.
    let rule = if case["groups"] == "all" {
        DecayRule::Torch
    } else {
        DecayRule::Timm(vec!["wte.weight".into()])
    };
    let kind = case["kind"].as_str().unwrap();
    if kind == "sgd" {
        let cfg = SgdConfig::new(f(case, "lr"))
            .momentum(f(case, "momentum"))
            .dampening(f(case, "dampening"))
            .nesterov(case["nesterov"].as_bool().unwrap())
            .weight_decay(f(case, "weight_decay"))
            .decay_rule(rule);
        return Box::new(Sgd::new(params, cfg).unwrap());
    }
    let base = if kind == "adam" {
        AdamConfig::adam(f(case, "lr"))
    } else {
        AdamConfig::adamw(f(case, "lr"))
    };
    let betas = case["betas"].as_array().unwrap();
    let cfg = base
        .betas(betas[0].as_f64().unwrap(), betas[1].as_f64().unwrap())
        .eps(f(case, "eps"))
        .weight_decay(f(case, "weight_decay"))
        .amsgrad(case["amsgrad"].as_bool().unwrap())
        .decay_rule(rule);
    Box::new(Adam::new(params, cfg).unwrap())
}

/// Run one optimizer case in one dtype; returns the worst relative error over
/// the trajectory and the final state.
fn run_case(case: &Value, dt: &str, reference: &Checkpoint) -> f64 {
    let name = case["name"].as_str().unwrap();
    let params: Vec<(String, Param)> = NAMES
        .iter()
        .map(|n| (n.to_string(), param_copy(reference.get(&format!("init.{dt}.{n}")).unwrap())))
        .collect();
    let mut opt = make_optimizer(case, params.clone());
    let mut sched = case.get("onecycle").map(|c| Scheduler::new(one_cycle(c)));
    let frozen = case["frozen"].as_array().map(|a| (a[0].as_u64().unwrap(), a[1].as_str().unwrap().to_string()));
    let steps = config()["steps"].as_u64().unwrap();
    let mut worst: f64 = 0.0;
    for k in 0..steps {
        let mut grads = GradStore::default();
        for (n, p) in &params {
            if frozen.as_ref().is_some_and(|(s, fname)| *s == k && fname == n) {
                continue;
            }
            grads.insert(&p.tensor(), reference.get(&format!("grad.{dt}.{k}.{n}")).unwrap().clone());
        }
        if let Some(s) = &sched {
            s.apply(opt.as_mut()).unwrap();
            let want_lr = values(reference, &format!("{name}.lr"))[k as usize];
            let want_m = values(reference, &format!("{name}.momentum"))[k as usize];
            assert!(
                (opt.lr() - want_lr).abs() <= 1e-12 * want_lr,
                "{name} step {k}: lr {} vs torch {want_lr}",
                opt.lr()
            );
            assert!(
                (opt.momentum() - want_m).abs() <= 1e-12,
                "{name} step {k}: momentum {} vs torch {want_m}",
                opt.momentum()
            );
        }
        opt.step(&grads).unwrap();
        if let Some(s) = &mut sched {
            s.advance();
        }
        for (n, p) in &params {
            let want = values(reference, &format!("{name}.{dt}.param.{k}.{n}"));
            worst = worst.max(max_rel(&want, &p.tensor().to_f64_vec().unwrap()));
        }
    }
    // The state after the last step, buffer by buffer, and the per-parameter step counts.
    let state = opt.state_dict().unwrap();
    let prefix = format!("{name}.{dt}.state.");
    let mut compared = 0;
    for (key, t) in &reference.tensors {
        let Some(rest) = key.strip_prefix(&prefix) else { continue };
        let (pname, buffer) = rest.rsplit_once('.').unwrap();
        if buffer == "step" {
            let got = state
                .metadata
                .get(&format!("state.{pname}.step"))
                .unwrap_or_else(|| panic!("{name}: no step for {pname}"));
            assert_eq!(got.parse::<f64>().unwrap(), t.to_scalar().unwrap(), "{name} {dt}: step of {pname}");
            continue;
        }
        let ours = state
            .get(&format!("state.{pname}.{buffer}"))
            .unwrap_or_else(|| panic!("{name} {dt}: no state {rest}"));
        worst = worst.max(max_rel(&t.to_f64_vec().unwrap(), &ours.to_f64_vec().unwrap()));
        compared += 1;
    }
    let kind = case["kind"].as_str().unwrap();
    let expected_buffers = match kind {
        "sgd" if f(case, "momentum") == 0.0 => 0,
        "sgd" => 3,
        _ if case["amsgrad"].as_bool().unwrap() => 9,
        _ => 6,
    };
    assert_eq!(compared, expected_buffers, "{name} {dt}: state buffers compared");
    assert_eq!(state.tensors.len(), expected_buffers, "{name} {dt}: our state has extra buffers");
    worst
}

#[test]
fn optimizer_trajectories_match_torch_optim() {
    let reference = reference();
    let cfg = config();
    for case in cfg["optimizers"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let e32 = run_case(case, "f32", &reference);
        let e64 = run_case(case, "f64", &reference);
        println!("{name:>14}: max relative error f32 {e32:.2e}, f64 {e64:.2e}");
        assert!(e32 <= 1e-6, "{name}: f32 trajectory differs from PyTorch by {e32:.3e} (relative)");
        assert!(e64 <= 1e-14, "{name}: f64 trajectory differs from PyTorch by {e64:.3e} (relative)");
    }
}

#[test]
fn one_cycle_matches_torch_one_cycle_lr() {
    let s = schedules();
    for cfg in config()["onecycle"].as_array().unwrap() {
        let name = cfg["name"].as_str().unwrap();
        let sched = one_cycle(cfg);
        let steps = s.get(&format!("{name}.steps")).unwrap().to_vec::<i64>().unwrap();
        let lr = values(&s, &format!("{name}.lr"));
        let mom = values(&s, &format!("{name}.momentum"));
        let ours: Vec<f64> = steps.iter().map(|&k| sched.lr_at(k as u64)).collect();
        let e = max_rel(&lr, &ours);
        assert!(e <= 1e-9, "{name}: lr differs by {e:.3e}: ours {ours:?} torch {lr:?}");
        match cfg["momentum"].is_null() {
            true => assert!(sched.momentum_at(0).is_none()),
            false => {
                let ours: Vec<f64> = steps.iter().map(|&k| sched.momentum_at(k as u64).unwrap()).collect();
                let e = max_rel(&mom, &ours);
                assert!(e <= 1e-9, "{name}: momentum differs by {e:.3e}");
            }
        }
        println!("{name:>22}: {} steps, max relative lr error {e:.2e}", steps.len());
    }
}

#[test]
fn warmup_cosine_is_nanogpt_get_lr_and_torch_cosine_annealing() {
    let s = schedules();
    for cfg in config()["warmup_cosine"].as_array().unwrap() {
        let name = cfg["name"].as_str().unwrap();
        let sched = WarmupCosine::new(f(cfg, "peak_lr"), u(cfg, "warmup_steps"), u(cfg, "decay_steps"), f(cfg, "min_lr")).unwrap();
        let steps = s.get(&format!("{name}.steps")).unwrap().to_vec::<i64>().unwrap();
        let ours: Vec<f64> = steps.iter().map(|&k| sched.lr_at(k as u64)).collect();
        let want = values(&s, &format!("{name}.lr"));
        let e = want.iter().zip(&ours).map(|(w, o)| (w - o).abs() / w.abs()).fold(0.0, f64::max);
        assert!(e <= 1e-9, "{name}: differs from nanoGPT's get_lr by {e:.3e}");
        // torch's LinearLR + CosineAnnealingLR, up to the end of the decay.
        let torch_lr = values(&s, &format!("{name}.torch_lr"));
        let (mut et, mut n) = (0.0f64, 0);
        for (t, o) in torch_lr.iter().zip(&ours) {
            if !t.is_nan() {
                et = et.max((t - o).abs() / t.abs());
                n += 1;
            }
        }
        assert!(n > 100 && et <= 1e-9, "{name}: differs from torch's schedulers by {et:.3e} over {n} steps");
        println!("{name:>14}: {} steps, vs get_lr {e:.2e}, vs torch ({n} steps) {et:.2e}", steps.len());
    }
}

#[test]
fn warmup_linear_matches_torch_linear_lr_phases() {
    let s = schedules();
    for cfg in config()["warmup_linear"].as_array().unwrap() {
        let name = cfg["name"].as_str().unwrap();
        let sched = WarmupLinear::new(f(cfg, "peak_lr"), u(cfg, "warmup_steps"), u(cfg, "total_steps"), f(cfg, "final_lr")).unwrap();
        let steps = s.get(&format!("{name}.steps")).unwrap().to_vec::<i64>().unwrap();
        let want = values(&s, &format!("{name}.lr"));
        let ours: Vec<f64> = steps.iter().map(|&k| sched.lr_at(k as u64)).collect();
        // Absolute against the peak: decaying to 0, torch's recursive form leaves ~1e-17 where we give 0.
        let e = want.iter().zip(&ours).map(|(w, o)| (w - o).abs() / f(cfg, "peak_lr")).fold(0.0, f64::max);
        assert!(e <= 1e-9, "{name}: differs from torch's LinearLR by {e:.3e}");
        println!("{name:>22}: {} steps, max error {e:.2e} of peak", steps.len());
    }
}

#[test]
fn inverse_sqrt_matches_fairseq() {
    let s = schedules();
    for cfg in config()["inverse_sqrt"].as_array().unwrap() {
        let name = cfg["name"].as_str().unwrap();
        let sched = InverseSqrt::new(f(cfg, "peak_lr"), u(cfg, "warmup_steps"), f(cfg, "warmup_init_lr")).unwrap();
        let steps = s.get(&format!("{name}.steps")).unwrap().to_vec::<i64>().unwrap();
        let want = values(&s, &format!("{name}.lr"));
        let ours: Vec<f64> = steps.iter().map(|&k| sched.lr_at(k as u64)).collect();
        let e = want.iter().zip(&ours).map(|(w, o)| (w - o).abs() / f(cfg, "peak_lr")).fold(0.0, f64::max);
        assert!(e <= 1e-9, "{name}: differs from fairseq by {e:.3e}");
    }
}

#[test]
fn clip_grad_norm_matches_torch() {
    let r = reference();
    for dt in ["f32", "f64"] {
        for case in ["clipped", "unclipped"] {
            let max_norm = config()["clip"][case].as_f64().unwrap();
            let params: Vec<Param> = NAMES
                .iter()
                .map(|n| Param::new(r.get(&format!("clip.{dt}.{case}.in.{n}")).unwrap().zeros_like().unwrap()))
                .collect();
            let mut grads = GradStore::default();
            for (p, n) in params.iter().zip(NAMES) {
                grads.insert(&p.tensor(), r.get(&format!("clip.{dt}.{case}.in.{n}")).unwrap().clone());
            }
            let norm = clip_grad_norm(&mut grads, &params, max_norm).unwrap();
            let want = values(&r, &format!("clip.{dt}.{case}.norm"))[0];
            // torch sums in the gradients' dtype, we in f64.
            let tol = if dt == "f32" { 1e-6 } else { 1e-13 };
            assert!((norm - want).abs() <= tol * want, "{dt} {case}: norm {norm} vs torch {want}");
            assert_eq!(case == "clipped", norm > max_norm);
            for (p, n) in params.iter().zip(NAMES) {
                let got = grads.get(&p.tensor()).unwrap();
                r.check_close(&format!("clip.{dt}.{case}.out.{n}"), got, tol, 0.0).unwrap();
            }
        }
    }
}

#[test]
fn cross_entropy_label_smoothing_matches_torch() {
    let r = reference();
    for dt in ["f32", "f64"] {
        for case in config()["cross_entropy"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let key = |what: &str| format!("ce.{dt}.{name}.{what}");
            let logits = r.get(&key("logits")).unwrap().variable();
            let targets = r.get(&key("targets")).unwrap();
            let opts = CrossEntropyOptions::default()
                .with_label_smoothing(f(case, "label_smoothing"))
                .with_ignore_index(case["ignore_index"].as_i64().unwrap());
            let loss = logits.cross_entropy(targets, opts).unwrap();
            let grads = loss.backward().unwrap();
            let (rtol, atol) = if dt == "f32" { (1e-5, 1e-7) } else { (1e-12, 1e-15) };
            let want = values(&r, &key("loss"))[0];
            let got = loss.to_scalar().unwrap();
            assert!((got - want).abs() <= rtol * want.abs(), "{dt} {name}: loss {got} vs torch {want}");
            r.check_close(&key("grad"), grads.get(&logits).unwrap(), rtol, atol).unwrap();
        }
    }
}

#[test]
fn fixtures_are_small_and_documented() {
    for name in ["optim_reference.safetensors", "optim_schedules.safetensors", "optim_fixtures.json"] {
        let len = std::fs::metadata(checkpoint::fixture_path(name)).unwrap().len();
        assert!(len < 200_000, "{name} is {len} bytes");
    }
    let cfg = config();
    assert!(cfg["versions"]["torch"].as_str().unwrap().starts_with('2'));
}
