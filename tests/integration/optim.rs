//! Optimizer behaviour: parameter groups and the weight-decay rule, frozen
//! parameters, exact save/restore, errors, clipping edge cases, gradient
//! accumulation and schedule edge cases. (PyTorch comparisons are in
//! optim_reference.rs, the fused loops against tensor ops in optim_fused.rs.)

use tamer::models::{EncoderConfig, Gpt, GptConfig, TransformerEncoder};
use tamer::nn::{Linear, Module, Param};
use tamer::optim::{
    clip_grad_norm, grad_norm, split_param_groups, Adam, AdamConfig, Constant, DecayRule, GradAccumulator, InverseSqrt, LrSchedule, OneCycle, Optimizer,
    OptimizerState, ParamGroup, Scheduler, Sgd, SgdConfig, WarmupCosine, WarmupLinear,
};
use tamer::{rng, DType, ErrorKind, GradStore, Tensor};

fn names(group: &ParamGroup) -> Vec<&str> {
    group.params.iter().map(|(n, _)| n.as_str()).collect()
}

fn tiny_gpt() -> Gpt {
    let cfg = GptConfig {
        vocab_size: 11,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        dropout: 0.0,
        bias: true,
        tie_weights: true,
    };
    Gpt::new(cfg, &mut rng(0)).unwrap()
}

#[test]
fn the_default_rule_decays_every_parameter_and_the_named_rules_split_them() {
    let gpt = tiny_gpt();
    // As torch.optim.AdamW(model.parameters()): one group, every parameter decayed once.
    let opt = Adam::new(gpt.named_params(), AdamConfig::adamw(1e-3).weight_decay(0.1)).unwrap();
    let groups = opt.param_groups();
    assert_eq!((groups.len(), groups[0].weight_decay), (1, 0.1));
    // The tied lm_head is the wte parameter: listed once in all.
    let total: usize = groups.iter().map(|g| g.params.iter().map(|(_, p)| p.numel()).sum::<usize>()).sum();
    assert_eq!(total, gpt.num_params());

    // nanoGPT's rule: matrices and embeddings.
    let groups = split_param_groups(gpt.named_params(), 0.1, &DecayRule::NanoGpt);
    assert_eq!((groups[0].weight_decay, groups[1].weight_decay), (0.1, 0.0));
    assert_eq!(groups[0].params.len(), 2 + 4 * 2);
    let no_decay = names(&groups[1]);
    for must in ["transformer.ln_f.weight", "transformer.h.0.attn.c_attn.bias", "transformer.h.1.ln_2.weight"] {
        assert!(no_decay.contains(&must), "{must} should not be decayed: {no_decay:?}");
    }

    // timm's rule on the encoder: its learned positions are exempt, its token table is not.
    let enc = TransformerEncoder::new(EncoderConfig::new(20, 8, 1, 16, 2, 3), &mut rng(1)).unwrap();
    let groups = split_param_groups(enc.named_params(), 0.05, &DecayRule::timm(&enc));
    let no_decay = names(&groups[1]);
    assert!(no_decay.contains(&"pos_embed") && !no_decay.contains(&"tok_embed.weight"), "{no_decay:?}");
    assert!(names(&groups[0]).contains(&"head.weight"));
}

#[test]
fn custom_rules_choose_the_decayed_parameters() {
    let gpt = tiny_gpt();
    let exclude = DecayRule::Exclude(vec!["*.bias".into(), "transformer.h.1.*".into()]);
    let groups = split_param_groups(gpt.named_params(), 0.1, &exclude);
    assert!(names(&groups[0]).contains(&"transformer.wte.weight"));
    assert!(names(&groups[0]).iter().all(|n| !n.ends_with(".bias") && !n.starts_with("transformer.h.1.")));

    let only_mlp = DecayRule::custom(|name, dims| dims.len() == 2 && name.contains(".mlp."));
    let groups = split_param_groups(gpt.named_params(), 0.1, &only_mlp);
    assert_eq!(names(&groups[0]).len(), 4);

    let all = split_param_groups(gpt.named_params(), 0.1, &DecayRule::Torch);
    assert_eq!(all.len(), 1);
    // No weight decay at all: one group, decay 0.
    let none = split_param_groups(gpt.named_params(), 0.0, &DecayRule::NanoGpt);
    assert_eq!((none.len(), none[0].weight_decay), (1, 0.0));
}

fn quadratic_grads(params: &[Param]) -> GradStore {
    // loss = Σ_p Σ p², gradient 2p.
    let mut loss = Tensor::zeros([], params[0].tensor().dtype()).unwrap();
    for p in params {
        loss = loss.add(&p.tensor().square().unwrap().sum_all().unwrap()).unwrap();
    }
    loss.backward().unwrap()
}

#[test]
fn frozen_and_gradient_less_parameters_are_skipped() {
    let lin = Linear::new(3, 2, true, &mut rng(2)).unwrap();
    let bias = lin.bias.clone().unwrap();
    let (w0, b0) = (lin.weight.tensor().to_vec::<f32>().unwrap(), bias.tensor().to_vec::<f32>().unwrap());
    bias.set_trainable(false);
    for mut opt in [
        Box::new(Adam::new(lin.named_params(), AdamConfig::adamw(0.1)).unwrap()) as Box<dyn Optimizer>,
        Box::new(Sgd::new(lin.named_params(), SgdConfig::new(0.1).momentum(0.9)).unwrap()),
    ] {
        let grads = quadratic_grads(&lin.params());
        assert!(grads.get(&bias.tensor()).is_none());
        opt.step(&grads).unwrap();
        assert_eq!(bias.tensor().to_vec::<f32>().unwrap(), b0, "{}", opt.name());
        assert_ne!(lin.weight.tensor().to_vec::<f32>().unwrap(), w0);
        let state = opt.state_dict().unwrap();
        assert!(
            state.tensors.iter().all(|(n, _)| n.starts_with("state.weight.")),
            "{}: {:?}",
            opt.name(),
            state.tensors
        );
    }
    // Unfrozen, it trains again, and its Adam step count starts at 1.
    bias.set_trainable(true);
    let mut opt = Adam::new(lin.named_params(), AdamConfig::adam(0.1)).unwrap();
    opt.step(&GradStore::default()).unwrap();
    opt.step(&quadratic_grads(&lin.params())).unwrap();
    let st = opt.state_dict().unwrap();
    assert_eq!((st.metadata["step"].as_str(), st.metadata["state.bias.step"].as_str()), ("2", "1"));
    assert_ne!(bias.tensor().to_vec::<f32>().unwrap(), b0);
}

#[test]
fn a_parameter_listed_twice_is_updated_once_even_while_frozen() {
    // Tied weights under two names; frozen, each tensor() is a new detached handle.
    let w = Param::new(Tensor::ones([2, 2], DType::F64).unwrap());
    w.set_trainable(false);
    let named = vec![("wte.weight".to_string(), w.clone()), ("lm_head.weight".to_string(), w.clone())];
    let mut opt = Sgd::new(named, SgdConfig::new(0.25).weight_decay(0.0)).unwrap();
    assert_eq!(opt.params().len(), 1);
    w.set_trainable(true);
    opt.step(&quadratic_grads(std::slice::from_ref(&w))).unwrap();
    assert_eq!(w.tensor().to_vec::<f64>().unwrap(), vec![0.5; 4]);
}

#[test]
fn group_lr_scale_and_explicit_groups() {
    let a = Param::new(Tensor::ones([2], DType::F64).unwrap());
    let b = Param::new(Tensor::ones([2], DType::F64).unwrap());
    let groups = vec![
        ParamGroup::new(vec![("a".into(), a.clone())], 0.0),
        ParamGroup::new(vec![("b".into(), b.clone())], 0.0).with_lr_scale(0.5),
    ];
    let mut opt = Sgd::with_groups(groups, SgdConfig::new(0.1)).unwrap();
    opt.step(&quadratic_grads(&[a.clone(), b.clone()])).unwrap();
    assert_eq!(a.tensor().to_vec::<f64>().unwrap(), vec![0.8, 0.8]);
    assert_eq!(b.tensor().to_vec::<f64>().unwrap(), vec![0.9, 0.9]);
    assert_eq!(opt.params().len(), 2);
}

// ---- exact save / restore ------------------------------------------------------------------

/// A two-layer regression net as named parameters.
fn net(seed: u64) -> Vec<(String, Param)> {
    let mut r = rng(seed);
    vec![
        ("l1.weight".into(), Param::new(Tensor::randn([5, 4], DType::F32, &mut r).unwrap())),
        ("l1.bias".into(), Param::new(Tensor::randn([5], DType::F32, &mut r).unwrap())),
        ("l2.weight".into(), Param::new(Tensor::randn([1, 5], DType::F32, &mut r).unwrap())),
    ]
}

fn net_grads(params: &[(String, Param)], step: u64) -> GradStore {
    let mut r = rng(100 + step);
    let x = Tensor::randn([6, 4], DType::F32, &mut r).unwrap();
    let y = Tensor::randn([6, 1], DType::F32, &mut r).unwrap();
    let h = x
        .matmul(&params[0].1.tensor().t().unwrap())
        .unwrap()
        .add(&params[1].1.tensor())
        .unwrap()
        .tanh()
        .unwrap();
    let out = h.matmul(&params[2].1.tensor().t().unwrap()).unwrap();
    out.sub(&y).unwrap().square().unwrap().mean_all().unwrap().backward().unwrap()
}

fn values(params: &[(String, Param)]) -> Vec<Vec<f32>> {
    params.iter().map(|(_, p)| p.tensor().to_vec::<f32>().unwrap()).collect()
}

type MakeOpt = fn(Vec<(String, Param)>) -> Box<dyn Optimizer>;

fn make_optimizers() -> Vec<(&'static str, MakeOpt)> {
    vec![
        ("sgd nesterov", |p| {
            Box::new(Sgd::new(p, SgdConfig::new(0.05).momentum(0.9).nesterov(true).weight_decay(1e-2)).unwrap())
        }),
        ("sgd dampened", |p| {
            Box::new(Sgd::new(p, SgdConfig::new(0.05).momentum(0.5).dampening(0.3)).unwrap())
        }),
        ("adam amsgrad", |p| {
            Box::new(Adam::new(p, AdamConfig::adam(1e-2).weight_decay(1e-2).amsgrad(true)).unwrap())
        }),
        ("adamw", |p| Box::new(Adam::new(p, AdamConfig::adamw(1e-2).weight_decay(0.1)).unwrap())),
    ]
}

#[test]
fn save_and_restore_continues_bit_for_bit() {
    let dir = std::env::temp_dir().join(format!("tamer-optim-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (label, make) in make_optimizers() {
        for cycle in [false, true] {
            let schedule = || OneCycle::new(0.05, 5).unwrap().momentum(if cycle { Some((0.85, 0.95)) } else { None }).unwrap();
            // Five straight steps.
            let straight = net(1);
            let mut opt = make(straight.clone());
            let mut sched = Scheduler::new(schedule());
            for k in 0..5 {
                sched.apply(opt.as_mut()).unwrap();
                opt.step(&net_grads(&straight, k)).unwrap();
                sched.advance();
            }
            // Three steps, save model, optimizer and schedule to files, restore into fresh objects, two more.
            let first = net(1);
            let mut opt1 = make(first.clone());
            let mut sched1 = Scheduler::new(schedule());
            for k in 0..3 {
                sched1.apply(opt1.as_mut()).unwrap();
                opt1.step(&net_grads(&first, k)).unwrap();
                sched1.advance();
            }
            let model_path = dir.join("model.safetensors");
            let opt_path = dir.join("optim.safetensors");
            let tensors: Vec<(String, Tensor)> = first.iter().map(|(n, p)| (n.clone(), p.tensor())).collect();
            let mut meta = sched1.state_dict();
            meta.extend(opt1.state_dict().unwrap().prefixed("optim.").metadata);
            tamer::checkpoint::save_with_metadata(&model_path, &tensors, &meta).unwrap();
            opt1.state_dict().unwrap().save(&opt_path).unwrap();
            drop((opt1, first));

            let resumed = net(99); // different initial values, overwritten by the checkpoint
            let ckpt = tamer::checkpoint::read(&model_path).unwrap();
            for (n, p) in &resumed {
                p.set(ckpt.get(n).unwrap()).unwrap();
            }
            let mut opt2 = make(resumed.clone());
            opt2.load_state_dict(&OptimizerState::load(&opt_path).unwrap()).unwrap();
            // The metadata copy in the model checkpoint restores the same state.
            let from_meta = OptimizerState::strip_prefix(&[], &ckpt.metadata, "optim.");
            assert_eq!(from_meta.metadata, opt2.state_dict().unwrap().metadata, "{label}");
            let mut sched2 = Scheduler::new(schedule());
            sched2.load_state_dict(&ckpt.metadata).unwrap();
            assert_eq!(sched2.step(), 3);
            for k in 3..5 {
                sched2.apply(opt2.as_mut()).unwrap();
                opt2.step(&net_grads(&resumed, k)).unwrap();
                sched2.advance();
            }
            assert_eq!(values(&resumed), values(&straight), "{label} cycle={cycle}: parameters differ after resuming");
            let (a, b) = (opt.state_dict().unwrap(), opt2.state_dict().unwrap());
            assert_eq!(a.metadata, b.metadata, "{label}");
            for ((na, ta), (nb, tb)) in a.tensors.iter().zip(&b.tensors) {
                assert_eq!(na, nb);
                assert_eq!(ta.to_vec::<f32>().unwrap(), tb.to_vec::<f32>().unwrap(), "{label}: {na}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_state_dict_rejects_mismatches_and_leaves_the_optimizer_alone() {
    let params = net(3);
    let mut adam = Adam::new(params.clone(), AdamConfig::adam(1e-2)).unwrap();
    adam.step(&net_grads(&params, 0)).unwrap();
    let good = adam.state_dict().unwrap();

    let mut sgd = Sgd::new(params.clone(), SgdConfig::new(0.1)).unwrap();
    let e = sgd.load_state_dict(&good).unwrap_err();
    assert!(e.message.contains("'adam'") && e.message.contains("'sgd'"), "{e}");

    let other = vec![("l1.weight".to_string(), params[0].1.clone())];
    let mut small = Adam::new(other, AdamConfig::adam(1e-2)).unwrap();
    let e = small.load_state_dict(&good).unwrap_err();
    assert!(e.message.contains("state.l1.bias.exp_avg") && e.message.contains("does not have"), "{e}");

    let mut adamw = Adam::new(params.clone(), AdamConfig::adamw(1e-2)).unwrap();
    assert!(adamw.load_state_dict(&good).unwrap_err().message.contains("'adamw'"));

    let mut bad = good.clone();
    for (n, t) in bad.tensors.iter_mut() {
        if n == "state.l1.bias.exp_avg" {
            *t = Tensor::zeros([4], DType::F32).unwrap();
        }
    }
    let mut fresh = Adam::new(params.clone(), AdamConfig::adam(1e-2)).unwrap();
    let e = fresh.load_state_dict(&bad).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Shape);
    assert!(
        e.message.contains("state.l1.bias.exp_avg") && e.message.contains("[4]") && e.message.contains("[5]"),
        "{e}"
    );
    assert_eq!(fresh.step_count(), 0, "a failed load must not change the optimizer");
    assert!(fresh.state_dict().unwrap().tensors.is_empty());

    let mut missing = good.clone();
    missing.tensors.retain(|(n, _)| n != "state.l2.weight.exp_avg_sq");
    let e = fresh.load_state_dict(&missing).unwrap_err();
    assert!(e.message.contains("state.l2.weight.exp_avg_sq"), "{e}");

    let e = fresh.load_state_dict(&OptimizerState::default()).unwrap_err();
    assert!(e.message.contains("'optimizer'"), "{e}");

    // f64 state loads into f32 parameters (converted).
    let mut f64_state = good.clone();
    for (_, t) in f64_state.tensors.iter_mut() {
        *t = t.to_dtype(DType::F64).unwrap();
    }
    fresh.load_state_dict(&f64_state).unwrap();
    assert_eq!(fresh.step_count(), 1);
}

#[test]
fn load_state_dict_rejects_other_settings_naming_the_key_and_both_values() {
    let params = net(4);
    let mut adam = Adam::new(params.clone(), AdamConfig::adam(1e-2)).unwrap();
    adam.step(&net_grads(&params, 0)).unwrap();
    let saved = adam.state_dict().unwrap();
    let load = |cfg: AdamConfig| {
        let mut other = Adam::new(params.clone(), cfg).unwrap();
        let e = other.load_state_dict(&saved).unwrap_err();
        assert_eq!(other.step_count(), 0, "a refused load must not change the optimizer");
        e.to_string()
    };
    let e = load(AdamConfig::adam(1e-2).betas(0.9, 0.99));
    assert!(
        e.contains("Adam::load_state_dict") && e.contains("saved with beta2 = 0.999") && e.contains("has beta2 = 0.99;"),
        "{e}"
    );
    let e = load(AdamConfig::adam(1e-2).eps(1e-6));
    assert!(e.contains("saved with eps = 0.00000001") && e.contains("has eps = 0.000001;"), "{e}");
    let e = load(AdamConfig::adam(1e-2).amsgrad(true));
    assert!(e.contains("amsgrad = false") && e.contains("amsgrad = true"), "{e}");
    // lr and beta1 are what schedules change: they are taken from the state.
    let mut other = Adam::new(params.clone(), AdamConfig::adam(5.0).betas(0.5, 0.999)).unwrap();
    other.load_state_dict(&saved).unwrap();
    assert_eq!((other.lr(), other.config().betas.0), (1e-2, 0.9));

    let mut sgd = Sgd::new(params.clone(), SgdConfig::new(0.1).momentum(0.9).dampening(0.1)).unwrap();
    sgd.step(&net_grads(&params, 0)).unwrap();
    let saved = sgd.state_dict().unwrap();
    let mut other = Sgd::new(params.clone(), SgdConfig::new(0.1).momentum(0.9)).unwrap();
    let e = other.load_state_dict(&saved).unwrap_err().to_string();
    assert!(
        e.contains("Sgd::load_state_dict") && e.contains("saved with dampening = 0.1") && e.contains("has dampening = 0;"),
        "{e}"
    );
    let mut plain = Sgd::new(params.clone(), SgdConfig::new(0.1).momentum(0.9)).unwrap();
    plain.step(&net_grads(&params, 0)).unwrap();
    let saved = plain.state_dict().unwrap();
    let mut nesterov = Sgd::new(params.clone(), SgdConfig::new(0.1).momentum(0.9).nesterov(true)).unwrap();
    let e = nesterov.load_state_dict(&saved).unwrap_err().to_string();
    assert!(e.contains("nesterov = false") && e.contains("nesterov = true"), "{e}");
    assert_eq!(nesterov.step_count(), 0);
}

#[test]
fn bad_hyperparameters_and_gradients_are_errors() {
    let p = || vec![("w".to_string(), Param::new(Tensor::ones([2, 2], DType::F32).unwrap()))];
    let msg = |r: tamer::Result<Adam>| r.err().unwrap().to_string();
    assert!(msg(Adam::new(p(), AdamConfig::adam(-1.0))).contains("lr = -1"));
    assert!(msg(Adam::new(p(), AdamConfig::adam(1e-3).betas(1.0, 0.999))).contains("beta1 = 1"));
    assert!(msg(Adam::new(p(), AdamConfig::adam(1e-3).betas(0.9, f64::NAN))).contains("beta2"));
    assert!(msg(Adam::new(p(), AdamConfig::adam(1e-3).eps(-1e-8))).contains("eps"));
    let e = Sgd::new(p(), SgdConfig::new(0.1).nesterov(true)).err().unwrap();
    assert!(e.message.contains("Nesterov") && e.message.contains("momentum 0"), "{e}");
    let e = Sgd::new(p(), SgdConfig::new(0.1).momentum(0.9).dampening(0.1).nesterov(true)).err().unwrap();
    assert!(e.message.contains("dampening 0.1"), "{e}");

    let shared = Param::new(Tensor::ones([2], DType::F32).unwrap());
    let groups = vec![
        ParamGroup::new(vec![("a".into(), shared.clone())], 0.1),
        ParamGroup::new(vec![("b".into(), shared.clone())], 0.0),
    ];
    let e = Adam::with_groups(groups, AdamConfig::adam(1e-3)).err().unwrap();
    assert!(e.message.contains("'b'") && e.message.contains("group 0"), "{e}");
    let e = Sgd::with_groups(vec![ParamGroup::new(p(), -0.1)], SgdConfig::new(0.1)).err().unwrap();
    assert!(e.message.contains("weight decay -0.1"), "{e}");

    let params = p();
    let mut opt = Adam::new(params.clone(), AdamConfig::adam(1e-3)).unwrap();
    assert!(opt.set_momentum(1.5).is_err());
    let mut grads = GradStore::default();
    grads.insert(&params[0].1.tensor(), Tensor::ones([4], DType::F32).unwrap());
    let e = opt.step(&grads).unwrap_err();
    assert!(e.message.contains("'w'") && e.message.contains("[2, 2]") && e.message.contains("[4]"), "{e}");
    let mut grads = GradStore::default();
    grads.insert(&params[0].1.tensor(), Tensor::ones([2, 2], DType::F64).unwrap());
    assert!(opt.step(&grads).unwrap_err().message.contains("f64"));
    assert_eq!(opt.step_count(), 0);

    let half = vec![("h".to_string(), Param::new(Tensor::ones([2], DType::F16).unwrap()))];
    let mut opt = Sgd::new(half.clone(), SgdConfig::new(0.1)).unwrap();
    let mut grads = GradStore::default();
    grads.insert(&half[0].1.tensor(), Tensor::ones([2], DType::F16).unwrap());
    let e = opt.step(&grads).unwrap_err();
    assert_eq!(e.kind, ErrorKind::DType);
    assert!(e.message.contains("f16"), "{e}");
}

#[test]
fn sgd_without_momentum_keeps_no_state_and_momentum_can_be_scheduled() {
    let params = net(4);
    let mut opt = Sgd::new(params.clone(), SgdConfig::new(0.1)).unwrap();
    opt.step(&net_grads(&params, 0)).unwrap();
    assert!(opt.state_dict().unwrap().tensors.is_empty());
    opt.set_momentum(0.9).unwrap();
    opt.step(&net_grads(&params, 1)).unwrap();
    assert_eq!(opt.state_dict().unwrap().tensors.len(), 3);
    assert_eq!(opt.momentum(), 0.9);
}

// ---- clipping --------------------------------------------------------------------------------

#[test]
fn clipping_handles_non_finite_norms_ties_and_frozen_parameters() {
    let a = Param::new(Tensor::from_vec(vec![3.0f32, 0.0], [2]).unwrap());
    let b = Param::new(Tensor::from_vec(vec![4.0f32], [1]).unwrap());
    let mut grads = GradStore::default();
    grads.insert(&a.tensor(), a.tensor().detach());
    grads.insert(&b.tensor(), b.tensor().detach());
    // b listed twice (tied) counts once: norm 5.
    let norm = clip_grad_norm(&mut grads, &[a.clone(), b.clone(), b.clone()], 10.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-12);
    let norm = clip_grad_norm(&mut grads, &[a.clone(), b.clone()], 2.5).unwrap();
    assert!((norm - 5.0).abs() < 1e-12);
    assert!((grad_norm(&grads, &[a.clone(), b.clone()]).unwrap() - 2.5).abs() < 1e-5);
    // Frozen: no gradient under its handle, ignored.
    b.set_trainable(false);
    assert!((grad_norm(&grads, &[a.clone(), b.clone()]).unwrap() - 1.5).abs() < 1e-5);
    b.set_trainable(true);

    for bad in [f32::NAN, f32::INFINITY] {
        let mut grads = GradStore::default();
        grads.insert(&a.tensor(), Tensor::from_vec(vec![1.0f32, bad], [2]).unwrap());
        grads.insert(&b.tensor(), Tensor::from_vec(vec![100.0f32], [1]).unwrap());
        let norm = clip_grad_norm(&mut grads, &[a.clone(), b.clone()], 1.0).unwrap();
        assert!(!norm.is_finite());
        assert_eq!(norm.is_nan(), bad.is_nan());
        // Left unscaled for the caller to decide.
        assert_eq!(grads.get(&b.tensor()).unwrap().to_vec::<f32>().unwrap(), vec![100.0]);
    }
    let e = clip_grad_norm(&mut GradStore::default(), &[a], -1.0).unwrap_err();
    assert!(e.message.contains("max_norm -1"), "{e}");
}

// ---- accumulation ----------------------------------------------------------------------------

#[test]
fn accumulated_micro_batches_equal_the_full_batch_gradient() {
    for dtype in [DType::F64, DType::F32] {
        let mut r = rng(5);
        let w = Param::new(Tensor::randn([3, 4], dtype, &mut r).unwrap());
        let x = Tensor::randn([8, 4], dtype, &mut r).unwrap();
        let y = Tensor::randn([8, 3], dtype, &mut r).unwrap();
        let loss = |xs: &Tensor, ys: &Tensor| {
            xs.matmul(&w.tensor().t().unwrap())
                .unwrap()
                .sub(ys)
                .unwrap()
                .square()
                .unwrap()
                .mean_all()
                .unwrap()
        };
        let full = loss(&x, &y).backward().unwrap();
        let mut acc = GradAccumulator::new(4).unwrap();
        for round in 0..2 {
            for k in 0..4 {
                let (xs, ys) = (x.narrow(0, 2 * k, 2).unwrap(), y.narrow(0, 2 * k, 2).unwrap());
                assert!(!acc.is_ready());
                acc.add(&loss(&xs, &ys).backward().unwrap()).unwrap();
            }
            assert!(acc.is_ready() && acc.count() == 4);
            let summed = acc.take();
            assert_eq!(acc.count(), 0);
            let (a, b) = (
                summed.get(&w.tensor()).unwrap().to_f64_vec().unwrap(),
                full.get(&w.tensor()).unwrap().to_f64_vec().unwrap(),
            );
            let tol = if dtype == DType::F64 { 1e-14 } else { 1e-6 };
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() <= tol * (1.0 + q.abs()), "{dtype} round {round}: {a:?} vs {b:?}");
            }
        }
        // A plain sum.
        let mut acc = GradAccumulator::new(2).unwrap().with_scale(1.0);
        acc.add(&full).unwrap();
        acc.add(&full).unwrap();
        let twice = acc.take().get(&w.tensor()).unwrap().to_f64_vec().unwrap();
        let once = full.get(&w.tensor()).unwrap().to_f64_vec().unwrap();
        assert!(twice.iter().zip(&once).all(|(t, o)| *t == 2.0 * o));
        // The source store is untouched by accumulation.
        assert_eq!(full.get(&w.tensor()).unwrap().to_f64_vec().unwrap(), once);
    }
    assert!(GradAccumulator::new(0).is_err());
}

// ---- schedules -------------------------------------------------------------------------------

#[test]
fn schedule_edge_cases() {
    assert_eq!(Constant { lr: 3e-4 }.lr_at(123_456), 3e-4);
    // No warmup: the peak at step 0.
    let s = WarmupLinear::new(1.0, 0, 10, 0.1).unwrap();
    assert_eq!((s.lr_at(0), s.lr_at(10), s.lr_at(11)), (1.0, 0.1, 0.1));
    let s = WarmupCosine::new(1.0, 10, 10, 0.1).unwrap();
    assert_eq!((s.lr_at(9), s.lr_at(10)), (10.0 / 11.0, 0.1));
    assert!(WarmupCosine::new(1.0, 10, 5, 0.1).unwrap_err().message.contains("shorter"));
    assert!(WarmupLinear::new(-1.0, 0, 5, 0.1).unwrap_err().message.contains("peak_lr"));
    // One-cycle past its end keeps the final value.
    let oc = OneCycle::new(0.1, 10).unwrap();
    assert_eq!(oc.lr_at(9), oc.lr_at(1000));
    assert!((oc.lr_at(9) - 0.1 / 25.0 / 1e4).abs() < 1e-18);
    assert_eq!(oc.momentum_at(0), Some(0.95));
    assert!(OneCycle::new(0.1, 0).is_err());
    assert!(OneCycle::new(0.1, 10).unwrap().pct_start(1.5).unwrap_err().message.contains("pct_start"));
    // pct_start·total = 1: a zero-length first phase reaches max_lr at once instead of dividing 0 by 0.
    let oc = OneCycle::new(0.1, 10).unwrap().pct_start(0.1).unwrap();
    assert!((0..10).all(|k| oc.lr_at(k).is_finite()));
    let s = InverseSqrt::new(1e-3, 0, 0.0).unwrap();
    assert_eq!((s.lr_at(0), s.lr_at(1), s.lr_at(4)), (1e-3, 1e-3, 5e-4));
}

#[test]
fn scheduler_sets_lr_and_momentum_and_restores_its_step() {
    let params = net(6);
    let mut sgd = Sgd::new(params.clone(), SgdConfig::new(1.0).momentum(0.5)).unwrap();
    let mut adam = Adam::new(params, AdamConfig::adam(1.0)).unwrap();
    let mut sched = Scheduler::new(OneCycle::new(0.1, 20).unwrap());
    sched.advance();
    sched.advance();
    let lr = sched.apply(&mut sgd).unwrap();
    sched.apply(&mut adam).unwrap();
    assert_eq!((sgd.lr(), adam.lr()), (lr, lr));
    let m = OneCycle::new(0.1, 20).unwrap().momentum_at(2).unwrap();
    assert_eq!((sgd.momentum(), adam.config().betas.0), (m, m));

    let state = sched.state_dict();
    let mut again = Scheduler::new(OneCycle::new(0.1, 20).unwrap());
    again.load_state_dict(&state).unwrap();
    assert_eq!((again.step(), again.lr()), (2, sched.lr()));
    let mut other = Scheduler::new(WarmupCosine::new(0.1, 2, 20, 0.0).unwrap());
    let e = other.load_state_dict(&state).unwrap_err();
    assert!(e.message.contains("one_cycle") && e.message.contains("warmup_cosine"), "{e}");
    // A schedule without momentum leaves it alone.
    Scheduler::new(Constant { lr: 0.3 }).apply(&mut sgd).unwrap();
    assert_eq!((sgd.lr(), sgd.momentum()), (0.3, m));
}
