//! GradScaler: torch.cuda.amp.GradScaler's dynamic loss scaling, checked on
//! the CPU (the scaler is device-independent).

use tamer::nn::{Linear, Module, Param};
use tamer::optim::{GradScaler, Optimizer, OptimizerState, Sgd, SgdConfig};
use tamer::{rng, DType, GradStore, Result, Tensor};

#[test]
fn defaults_are_torchs() {
    let s = GradScaler::new();
    assert_eq!(s.get_scale(), 65536.0);
    assert_eq!(s.growth_factor(), 2.0);
    assert_eq!(s.backoff_factor(), 0.5);
    assert_eq!(s.growth_interval(), 2000);
    assert_eq!(s.growth_tracker(), 0);
    assert!(s.is_enabled());
}

#[test]
fn scale_grows_after_growth_interval_clean_steps() {
    let mut s = GradScaler::with_config(8.0, 2.0, 0.5, 3).unwrap();
    for expect_tracker in [1, 2] {
        s.update(false);
        assert_eq!((s.get_scale(), s.growth_tracker()), (8.0, expect_tracker));
    }
    s.update(false);
    assert_eq!((s.get_scale(), s.growth_tracker()), (16.0, 0));
    for _ in 0..3 {
        s.update(false);
    }
    assert_eq!(s.get_scale(), 32.0);
    // The default interval: 2000 clean steps double 65536 once.
    let mut d = GradScaler::new();
    for _ in 0..1999 {
        d.update(false);
    }
    assert_eq!((d.get_scale(), d.growth_tracker()), (65536.0, 1999));
    d.update(false);
    assert_eq!((d.get_scale(), d.growth_tracker()), (131072.0, 0));
}

#[test]
fn growth_stops_short_of_f32_overflow() {
    let mut s = GradScaler::with_config(2f64.powi(127), 2.0, 0.5, 1).unwrap();
    s.update(false);
    assert_eq!(s.get_scale(), 2f64.powi(127), "2^128 is inf in f32: the scale stays");
    assert_eq!(s.growth_tracker(), 0);
}

fn linear_grads(model: &Linear, x: &Tensor, scaler: Option<&GradScaler>) -> Result<GradStore> {
    let loss = model.forward(x)?.tanh()?.square()?.mean_all()?;
    match scaler {
        Some(s) => s.scale(&loss)?.backward(),
        None => loss.backward(),
    }
}

#[test]
fn inf_or_nan_backs_off_and_skips_the_step() {
    let model = Linear::new(3, 2, true, &mut rng(0)).unwrap();
    let mut opt = Sgd::new(model.named_params(), SgdConfig::new(0.1)).unwrap();
    let mut scaler = GradScaler::with_config(1024.0, 2.0, 0.5, 2).unwrap();
    let x = Tensor::randn([4, 3], DType::F32, &mut rng(1)).unwrap();
    scaler.update(false); // tracker 1: the backoff must reset it
    let before: Vec<Vec<f32>> = model.params().iter().map(|p| p.tensor().to_vec::<f32>().unwrap()).collect();
    for bad in [f64::INFINITY, f64::NAN, f64::NEG_INFINITY] {
        let mut grads = linear_grads(&model, &x, Some(&scaler)).unwrap();
        let w = model.params()[0].tensor();
        let g = grads.get(&w).unwrap();
        let mut vals = g.to_vec::<f32>().unwrap();
        vals[1] = bad as f32;
        grads.insert(&w, Tensor::from_vec(vals, g.dims().to_vec()).unwrap());
        let scale = scaler.get_scale();
        let stepped = scaler.step(&mut opt, &mut grads).unwrap();
        assert!(!stepped, "{bad}");
        assert_eq!(scaler.get_scale(), scale / 2.0, "{bad}");
        assert_eq!(scaler.growth_tracker(), 0);
        assert_eq!(opt.step_count(), 0);
    }
    let after: Vec<Vec<f32>> = model.params().iter().map(|p| p.tensor().to_vec::<f32>().unwrap()).collect();
    assert_eq!(before, after, "skipped steps leave the parameters alone");
    // A clean step goes through and counts toward growth.
    let mut grads = linear_grads(&model, &x, Some(&scaler)).unwrap();
    assert!(scaler.step(&mut opt, &mut grads).unwrap());
    assert_eq!((scaler.get_scale(), scaler.growth_tracker(), opt.step_count()), (128.0, 1, 1));
}

#[test]
fn finite_but_huge_gradients_are_not_flagged() {
    // |g| near f32::MAX: a sum of squares would overflow, the check must not.
    let scaler = GradScaler::with_config(1.0, 2.0, 0.5, 10).unwrap();
    let p = Param::new(Tensor::zeros([3], DType::F32).unwrap());
    let mut grads = GradStore::default();
    grads.insert(&p.tensor(), Tensor::from_vec(vec![3e38f32, -3e38, 1.0], [3]).unwrap());
    assert!(!scaler.unscale_and_check(&mut grads).unwrap());
}

#[test]
fn unscaled_gradients_equal_the_unscaled_loss_gradients_exactly() {
    let model = Linear::new(5, 3, true, &mut rng(2)).unwrap();
    let x = Tensor::randn([7, 5], DType::F32, &mut rng(3)).unwrap();
    let plain = linear_grads(&model, &x, None).unwrap();
    for scale in [65536.0, 1024.0, 2f64.powi(24), 0.5] {
        let scaler = GradScaler::with_config(scale, 2.0, 0.5, 2000).unwrap();
        let mut grads = linear_grads(&model, &x, Some(&scaler)).unwrap();
        let w = model.params()[0].tensor();
        assert_ne!(grads.get(&w).unwrap().to_vec::<f32>().unwrap(), plain.get(&w).unwrap().to_vec::<f32>().unwrap());
        assert!(!scaler.unscale_and_check(&mut grads).unwrap());
        for p in model.params() {
            let t = p.tensor();
            let a = grads.get(&t).unwrap().to_vec::<f32>().unwrap();
            let b = plain.get(&t).unwrap().to_vec::<f32>().unwrap();
            assert_eq!(a, b, "scale {scale}: bit-exact after unscaling");
        }
    }
}

#[test]
fn disabled_scaler_passes_everything_through() {
    let model = Linear::new(2, 2, false, &mut rng(4)).unwrap();
    let x = Tensor::randn([3, 2], DType::F32, &mut rng(5)).unwrap();
    let mut scaler = GradScaler::new().enabled(false);
    assert_eq!(scaler.get_scale(), 1.0);
    let plain = linear_grads(&model, &x, None).unwrap();
    let mut grads = linear_grads(&model, &x, Some(&scaler)).unwrap();
    let w = model.params()[0].tensor();
    let mut vals = grads.get(&w).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(vals, plain.get(&w).unwrap().to_vec::<f32>().unwrap());
    vals[0] = f32::INFINITY;
    grads.insert(&w, Tensor::from_vec(vals, [2, 2]).unwrap());
    assert!(!scaler.unscale_and_check(&mut grads).unwrap(), "disabled: no check");
    scaler.update(true);
    assert_eq!(scaler.get_scale(), 1.0);
}

#[test]
fn state_round_trips_through_a_checkpoint() {
    let mut s = GradScaler::with_config(4096.0, 4.0, 0.25, 7).unwrap();
    for found_inf in [false, false, true, false, false, false] {
        s.update(found_inf);
    }
    assert_eq!((s.get_scale(), s.growth_tracker()), (1024.0, 3));
    let dir = std::env::temp_dir().join(format!("tamer-grad-scaler-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scaler.safetensors");
    s.state_dict().save(&path).unwrap();
    let mut restored = GradScaler::new();
    restored.load_state_dict(&OptimizerState::load(&path).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(restored, s);
    // Both continue identically.
    for _ in 0..4 {
        s.update(false);
        restored.update(false);
    }
    assert_eq!(restored, s);
    assert_eq!(s.get_scale(), 4096.0);
    // Prefixed inside a bigger checkpoint.
    let combined = s.state_dict().prefixed("scaler.");
    let back = OptimizerState::strip_prefix(&combined.tensors, &combined.metadata, "scaler.");
    let mut again = GradScaler::new();
    again.load_state_dict(&back).unwrap();
    assert_eq!(again, s);
}

#[test]
fn bad_constants_and_states_are_errors() {
    assert!(GradScaler::with_config(0.0, 2.0, 0.5, 1).is_err());
    assert!(GradScaler::with_config(1e39, 2.0, 0.5, 1).is_err());
    assert!(GradScaler::with_config(1.0, 1.0, 0.5, 1).is_err());
    assert!(GradScaler::with_config(1.0, 2.0, 1.0, 1).is_err());
    assert!(GradScaler::with_config(1.0, 2.0, 0.5, 0).is_err());
    let mut s = GradScaler::new();
    let e = s.load_state_dict(&OptimizerState::default()).unwrap_err().to_string();
    assert!(e.contains("kind"), "{e}");
    let mut st = GradScaler::new().state_dict();
    st.metadata.insert("scale".into(), "-3".into());
    let e = s.load_state_dict(&st).unwrap_err().to_string();
    assert!(e.contains("scale = -3"), "{e}");
    let sgd = Sgd::new(Linear::new(1, 1, false, &mut rng(0)).unwrap().named_params(), SgdConfig::new(0.1)).unwrap();
    assert!(s.load_state_dict(&sgd.state_dict().unwrap()).is_err());
    assert_eq!(s, GradScaler::new(), "a failed load changes nothing");
}
