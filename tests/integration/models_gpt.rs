//! GPT: parameter names and counts against nanoGPT, initialisation, forward and
//! backward, causality, KV-cache generation against full recomputation,
//! freezing, dropout modes and errors.

use crate::common;

use common::{assert_close, check_param_gradients, names, std_of};
use tamer::models::{sample_token, Gpt, GptConfig};
use tamer::nn::init::gpt2_residual_std;
use tamer::nn::Module;
use tamer::{rng, DType, Tensor};

/// A model small enough for finite differences and for long generations.
fn micro(bias: bool, tie_weights: bool) -> GptConfig {
    GptConfig {
        vocab_size: 7,
        block_size: 6,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        dropout: 0.0,
        bias,
        tie_weights,
    }
}

fn ids(values: &[i64], b: usize) -> Tensor {
    Tensor::from_vec(values.to_vec(), [b, values.len() / b]).unwrap()
}

/// nanoGPT's `named_parameters()` order, written out.
fn nanogpt_names(cfg: &GptConfig) -> Vec<String> {
    let affine = |prefix: &str, bias: bool| {
        let mut v = vec![format!("{prefix}.weight")];
        if bias {
            v.push(format!("{prefix}.bias"));
        }
        v
    };
    let mut v = vec!["transformer.wte.weight".to_string(), "transformer.wpe.weight".to_string()];
    for i in 0..cfg.n_layer {
        for part in ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"] {
            v.extend(affine(&format!("transformer.h.{i}.{part}"), cfg.bias));
        }
    }
    v.extend(affine("transformer.ln_f", cfg.bias));
    if !cfg.tie_weights {
        v.push("lm_head.weight".to_string());
    }
    v
}

#[test]
fn parameter_names_match_nanogpt() {
    for (bias, tie) in [(true, true), (false, true), (true, false), (false, false)] {
        let cfg = micro(bias, tie);
        let gpt = Gpt::new(cfg.clone(), &mut rng(0)).unwrap();
        assert_eq!(names(&gpt), nanogpt_names(&cfg), "bias {bias}, tied {tie}");
        let aliases = gpt.tied_aliases();
        assert_eq!(aliases.len(), tie as usize);
        if tie {
            assert_eq!(aliases[0], ("lm_head.weight".to_string(), "transformer.wte.weight".to_string()));
            // One parameter, two roles.
            assert!(gpt.lm_head.weight.tensor().same_storage(&gpt.wte.weight.tensor()));
        }
    }
    let gpt = Gpt::new(GptConfig::gpt_tiny(), &mut rng(0)).unwrap();
    let shapes: Vec<(String, Vec<usize>)> = gpt.named_params().into_iter().map(|(n, p)| (n, p.dims())).collect();
    let find = |n: &str| shapes.iter().find(|(m, _)| m == n).unwrap().1.clone();
    assert_eq!(find("transformer.wte.weight"), [65, 128]);
    assert_eq!(find("transformer.wpe.weight"), [64, 128]);
    assert_eq!(find("transformer.h.3.attn.c_attn.weight"), [384, 128]);
    assert_eq!(find("transformer.h.3.attn.c_proj.weight"), [128, 128]);
    assert_eq!(find("transformer.h.0.mlp.c_fc.weight"), [512, 128]);
    assert_eq!(find("transformer.h.0.mlp.c_proj.weight"), [128, 512]);
}

#[test]
fn parameter_counts_match_the_closed_form() {
    for (bias, tie) in [(true, true), (false, true), (true, false), (false, false)] {
        let cfg = micro(bias, tie);
        assert_eq!(Gpt::new(cfg.clone(), &mut rng(0)).unwrap().num_params(), cfg.num_params_closed_form());
    }
    // gpt-tiny: 4·(12·128² + 13·128) + 65·128 + 64·128 + 2·128.
    let tiny = Gpt::new(GptConfig::gpt_tiny(), &mut rng(0)).unwrap();
    assert_eq!(tiny.num_params(), 809_856);
    assert_eq!(GptConfig::gpt_tiny().num_params_closed_form(), 809_856);
    // gpt-small (shakespeare_char, no biases): 6·(12·384² + 2·384) + 65·384 + 256·384 + 384;
    // nanoGPT prints 10.65M, its count without wpe.
    let small = Gpt::new(GptConfig::gpt_small(), &mut rng(0)).unwrap();
    assert_eq!(small.num_params(), 10_745_088);
    assert_eq!(small.num_params_non_embedding(), 10_646_784);
}

#[test]
fn initialisation_follows_nanogpt() {
    let gpt = Gpt::new(GptConfig::gpt_tiny(), &mut rng(1)).unwrap();
    let res_std = gpt2_residual_std(4); // 0.02/√8
    for (name, p) in gpt.named_params() {
        let v = p.tensor().to_f64_vec().unwrap();
        if name.ends_with(".bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{name}");
        } else if name.contains("ln_") {
            assert!(v.iter().all(|&x| x == 1.0), "{name}");
        } else {
            let want = if name.ends_with("c_proj.weight") { res_std } else { 0.02 };
            let got = std_of(&p);
            assert!((got / want - 1.0).abs() < 0.05, "{name}: std {got}, expected {want}");
        }
    }
}

#[test]
fn gpt_tiny_forward_backward_reaches_every_parameter() {
    let gpt = Gpt::new(GptConfig::gpt_tiny(), &mut rng(2)).unwrap();
    let mut r = rng(3);
    let idx = Tensor::from_vec((0..2 * 64).map(|_| rand::Rng::random_range(&mut r, 0..65)).collect::<Vec<i64>>(), [2, 64]).unwrap();
    let targets = Tensor::from_vec((0..2 * 64).map(|_| rand::Rng::random_range(&mut r, 0..65)).collect::<Vec<i64>>(), [2, 64]).unwrap();
    let (logits, loss) = gpt.forward(&idx, Some(&targets)).unwrap();
    assert_eq!(logits.dims(), &[2, 64, 65]);
    let loss = loss.unwrap();
    let l = loss.to_scalar().unwrap();
    assert!((l - 65f64.ln()).abs() < 0.1, "initial loss {l} should be near ln 65");
    let grads = loss.backward().unwrap();
    for (name, p) in gpt.named_params() {
        let g = grads.get(&p.tensor()).unwrap_or_else(|| panic!("{name} has no gradient")).to_f64_vec().unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{name}");
        assert!(g.iter().any(|&v| v != 0.0), "{name}: all-zero gradient");
    }
}

#[test]
fn gradients_match_finite_differences_with_tied_weights() {
    for (bias, tie) in [(true, true), (false, false)] {
        let cfg = GptConfig {
            n_layer: 1,
            n_embd: 4,
            ..micro(bias, tie)
        };
        let gpt = Gpt::new(cfg, &mut rng(4)).unwrap();
        gpt.to_dtype(DType::F64).unwrap();
        // Larger weights than nanoGPT's 0.02 so every path carries signal.
        for (_, p) in gpt.named_params() {
            if p.dims().len() == 2 {
                p.set(&Tensor::randn(p.dims(), DType::F64, &mut rng(p.numel() as u64)).unwrap().scale(0.5).unwrap())
                    .unwrap();
            }
        }
        let idx = ids(&[1, 5, 2, 0, 6, 3], 2);
        let targets = ids(&[5, 2, -1, 6, 3, 3], 2); // -1 is ignored, as in nanoGPT
        let (checked, failures) = check_param_gradients(&gpt, || Ok(gpt.forward(&idx, Some(&targets))?.1.unwrap()));
        assert_eq!(checked, gpt.num_params());
        assert!(failures.is_empty(), "{failures:?}");
    }
}

#[test]
fn later_tokens_do_not_change_earlier_logits() {
    let gpt = Gpt::new(micro(true, true), &mut rng(5)).unwrap();
    gpt.to_dtype(DType::F64).unwrap();
    let base = [1i64, 2, 3, 4, 5, 6];
    let logits = |t: &[i64]| gpt.forward(&ids(t, 1), None).unwrap().0.to_vec2_rows();
    let l0 = logits(&base);
    for j in 0..6 {
        let mut changed = base;
        changed[j] = (changed[j] + 3) % 7;
        let l1 = logits(&changed);
        for p in 0..6 {
            if p < j {
                assert_eq!(l0[p], l1[p], "position {p} changed when token {j} did");
            } else {
                assert_ne!(l0[p], l1[p], "position {p} ignores token {j}");
            }
        }
    }
}

trait Rows {
    fn to_vec2_rows(&self) -> Vec<Vec<f64>>;
}
impl Rows for Tensor {
    /// `[1, T, V]` → T rows of V logits.
    fn to_vec2_rows(&self) -> Vec<Vec<f64>> {
        let v = self.dims()[2];
        self.to_f64_vec().unwrap().chunks(v).map(<[f64]>::to_vec).collect()
    }
}

#[test]
fn cached_forward_matches_full_forward() {
    let gpt = Gpt::new(micro(true, true), &mut rng(6)).unwrap();
    let idx = ids(&[3, 1, 4, 1, 5, 2, 6, 5, 3, 5, 0, 1], 2);
    let full = gpt.forward(&idx, None).unwrap().0.to_f64_vec().unwrap();
    let mut cache = gpt.new_cache();
    let a = gpt.forward_with_cache(&idx.narrow(1, 0, 4).unwrap(), &mut cache).unwrap();
    let b = gpt.forward_with_cache(&idx.narrow(1, 4, 1).unwrap(), &mut cache).unwrap();
    let c = gpt.forward_with_cache(&idx.narrow(1, 5, 1).unwrap(), &mut cache).unwrap();
    assert_eq!(cache.len(), 6);
    assert_close(&Tensor::cat(&[a, b, c], 1).unwrap().to_f64_vec().unwrap(), &full, 1e-5, "cached logits");
    // The cache is full: one more position would need wpe row 6.
    let err = gpt.forward_with_cache(&idx.narrow(1, 0, 1).unwrap(), &mut cache).unwrap_err().to_string();
    assert!(err.contains("block_size 6") && err.contains("6 cached"), "{err}");
}

#[test]
fn generation_with_and_without_the_cache_agree() {
    let mut gpt = Gpt::new(micro(true, true), &mut rng(7)).unwrap();
    // Weights large enough that the logits are far from uniform.
    for (_, p) in gpt.named_params() {
        if p.dims().len() == 2 {
            p.set(&Tensor::randn(p.dims(), DType::F32, &mut rng(p.numel() as u64)).unwrap().scale(0.3).unwrap())
                .unwrap();
        }
    }
    gpt.set_training(false);
    let prompt = ids(&[1, 2, 3, 4], 2);
    // 20 new tokens run far past block_size 6: the cache is re-prefilled on the cropped window.
    for (temperature, top_k) in [(0.0, None), (1.0, None), (0.8, Some(3)), (1.5, Some(1))] {
        let cached = gpt.generate(&prompt, 20, temperature, top_k, &mut rng(42)).unwrap();
        let plain = gpt.generate_without_cache(&prompt, 20, temperature, top_k, &mut rng(42)).unwrap();
        assert_eq!(cached.dims(), &[2, 22]);
        let (c, p) = (cached.to_vec::<i64>().unwrap(), plain.to_vec::<i64>().unwrap());
        assert_eq!(c, p, "temperature {temperature}, top_k {top_k:?}");
        assert_eq!(&c[..2], &[1, 2]);
        assert!(c.iter().all(|&t| (0..7).contains(&t)));
    }
    // A prompt longer than block_size is cropped, not refused.
    let long = ids(&[0, 1, 2, 3, 4, 5, 6, 0, 1], 1);
    let a = gpt.generate(&long, 3, 0.0, None, &mut rng(0)).unwrap().to_vec::<i64>().unwrap();
    let b = gpt.generate_without_cache(&long, 3, 0.0, None, &mut rng(0)).unwrap().to_vec::<i64>().unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 12);
    // Sampling depends on the seed; greedy does not.
    let s1 = gpt.generate(&prompt, 20, 1.0, None, &mut rng(1)).unwrap().to_vec::<i64>().unwrap();
    let s2 = gpt.generate(&prompt, 20, 1.0, None, &mut rng(2)).unwrap().to_vec::<i64>().unwrap();
    assert_ne!(s1, s2);
}

#[test]
fn gpt_tiny_generation_with_and_without_the_cache_agree() {
    let mut gpt = Gpt::new(GptConfig::gpt_tiny(), &mut rng(8)).unwrap();
    gpt.set_training(false);
    let prompt = ids(&[10, 20, 30, 40, 50, 60], 2);
    for (temperature, top_k) in [(0.0, None), (1.0, Some(10))] {
        let a = gpt.generate(&prompt, 12, temperature, top_k, &mut rng(9)).unwrap().to_vec::<i64>().unwrap();
        let b = gpt
            .generate_without_cache(&prompt, 12, temperature, top_k, &mut rng(9))
            .unwrap()
            .to_vec::<i64>()
            .unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn sampling_respects_top_k_and_temperature() {
    let logits = [1.0, 0.5, 3.0, 2.9, -1.0];
    let mut r = rng(10);
    let mut seen = [0usize; 5];
    for _ in 0..2000 {
        seen[sample_token(&logits, 1.0, Some(2), &mut r) as usize] += 1;
    }
    assert_eq!(seen[0] + seen[1] + seen[4], 0, "{seen:?}");
    // p(2) / p(3) = e^0.1 ≈ 1.105 among the two kept.
    let ratio = seen[2] as f64 / seen[3] as f64;
    assert!((ratio - 0.1f64.exp()).abs() < 0.15, "{seen:?}");
    // Very low temperature is greedy; full sampling reaches every token.
    assert!((0..100).all(|_| sample_token(&logits, 1e-3, None, &mut r) == 2));
    let mut all = [false; 5];
    for _ in 0..5000 {
        all[sample_token(&logits, 1.0, None, &mut r) as usize] = true;
    }
    assert!(all.iter().all(|&s| s));
    // Ties with the k-th largest are kept (nanoGPT's `logits < v[:, [-1]]`).
    let tied = [2.0, 2.0, 2.0, 0.0];
    assert!((0..200).any(|_| sample_token(&tied, 1.0, Some(1), &mut r) == 2));
}

#[test]
fn freezing_stops_gradients_by_name() {
    let gpt = Gpt::new(micro(true, true), &mut rng(11)).unwrap();
    let total = gpt.num_params();
    let n = gpt.set_trainable_matching("transformer.h.*", false);
    assert_eq!(n, 2 * 12);
    let frozen: usize = gpt
        .named_params()
        .iter()
        .filter(|(name, _)| name.starts_with("transformer.h."))
        .map(|(_, p)| p.numel())
        .sum();
    assert_eq!(gpt.num_trainable_params(), total - frozen);
    let idx = ids(&[1, 2, 3, 4], 1);
    let loss = gpt.forward(&idx, Some(&ids(&[2, 3, 4, 5], 1))).unwrap().1.unwrap();
    let grads = loss.backward().unwrap();
    for (name, p) in gpt.named_params() {
        assert_eq!(grads.get(&p.tensor()).is_some(), !name.starts_with("transformer.h."), "{name}");
    }
    // Freezing the tied embedding freezes the head too: they are one parameter.
    gpt.set_trainable_matching("*", true);
    assert_eq!(gpt.set_trainable_matching("transformer.wte.weight", false), 1);
    assert!(!gpt.lm_head.weight.is_trainable());
}

#[test]
fn dropout_is_on_in_training_and_off_in_eval() {
    let cfg = GptConfig {
        dropout: 0.2,
        ..micro(false, true)
    };
    let mut gpt = Gpt::new(cfg, &mut rng(12)).unwrap();
    let idx = ids(&[1, 2, 3, 4, 5, 6], 1);
    let a = gpt.forward(&idx, None).unwrap().0.to_vec::<f32>().unwrap();
    let b = gpt.forward(&idx, None).unwrap().0.to_vec::<f32>().unwrap();
    assert_ne!(a, b);
    gpt.set_training(false);
    let c = gpt.forward(&idx, None).unwrap().0.to_vec::<f32>().unwrap();
    let d = gpt.forward(&idx, None).unwrap().0.to_vec::<f32>().unwrap();
    assert_eq!(c, d);
}

#[test]
fn errors_name_the_problem() {
    let gpt = Gpt::new(micro(true, true), &mut rng(13)).unwrap();
    let too_long = Tensor::from_vec(vec![1i64; 7], [1, 7]).unwrap();
    let err = gpt.forward(&too_long, None).unwrap_err().to_string();
    assert!(err.contains("length 7") && err.contains("block_size is only 6"), "{err}");
    let bad_id = ids(&[1, 2, 7], 1);
    let err = gpt.forward(&bad_id, None).unwrap_err().to_string();
    assert!(err.contains('7'), "{err}");
    let err = gpt.forward(&Tensor::ones([1, 3], DType::F32).unwrap(), None).unwrap_err().to_string();
    assert!(err.contains("i64"), "{err}");
    let err = gpt.forward(&ids(&[1, 2, 3], 1), Some(&ids(&[1, 2], 1))).unwrap_err().to_string();
    assert!(err.contains("targets shape [1, 2]"), "{err}");
    let err = gpt.generate(&ids(&[1, 2], 1), 3, -1.0, None, &mut rng(0)).unwrap_err().to_string();
    assert!(err.contains("temperature"), "{err}");
    let err = gpt.generate(&ids(&[1, 2], 1), 3, 1.0, Some(0), &mut rng(0)).unwrap_err().to_string();
    assert!(err.contains("top_k"), "{err}");
    let bad = GptConfig {
        n_head: 3,
        ..micro(true, true)
    };
    let err = Gpt::new(bad, &mut rng(0)).err().unwrap().to_string();
    assert!(err.contains("n_embd 8") && err.contains("n_head 3"), "{err}");
}
