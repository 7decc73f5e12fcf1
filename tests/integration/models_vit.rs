//! The Vision Transformer and its hybrid: parameter counts of the presets,
//! forward and backward passes, gradient checks of micro models in f64
//! (inputs by the property checker, parameters by central differences),
//! pooling and position-embedding variants, freezing, train/eval and errors.

use proptest::prelude::*;
use tamer::models::{Pool, PosEmbed, StemConfig, VisionTransformer, VitConfig};
use tamer::nn::{sincos_2d, Module};
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::testing::strategies::{tensor_with, view_kind, ViewKind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{rng, DType, Tensor};

fn micro(pool: Pool, pos: PosEmbed) -> VitConfig {
    VitConfig {
        pool,
        pos,
        ..VitConfig::new((6, 4), 2, 2, 3, 8, 2, 2, 2.0)
    }
}

fn names(m: &dyn Module) -> Vec<String> {
    m.named_params().into_iter().map(|(n, _)| n).collect()
}

fn labels(b: usize, k: usize) -> Tensor {
    Tensor::from_vec((0..b).map(|i| (i % k) as i64).collect::<Vec<_>>(), [b]).unwrap()
}

// ---------------------------------------------------------------------------
// Presets and parameter counts
// ---------------------------------------------------------------------------

#[test]
fn preset_parameter_counts_match_the_closed_form_and_timm() {
    let presets = [
        ("vit_tiny", VitConfig::vit_tiny(), 139_018usize),
        ("vit_cifar", VitConfig::vit_cifar(), 1_806_538),
        ("vit_digits", VitConfig::vit_digits(), 136_138),
        ("hybrid_mnist", VitConfig::hybrid_mnist(), 161_002),
        // timm: sum(p.numel() for p in timm.create_model('vit_tiny_patch16_224').parameters())
        ("vit_tiny_patch16_224", VitConfig::vit_tiny_patch16_224(), 5_717_416),
        ("deit_tiny_patch16_224", VitConfig::deit_tiny_patch16_224(), 5_717_416),
    ];
    for (name, cfg, expected) in presets {
        let closed = cfg.num_params_closed_form().unwrap();
        let vit = VisionTransformer::new(cfg, &mut rng(0)).unwrap();
        assert_eq!(vit.num_params(), closed, "{name}: model vs closed form");
        assert_eq!(closed, expected, "{name}: closed form vs the documented count");
    }
    // Variants change the count as the closed form says.
    for cfg in [
        micro(Pool::Mean, PosEmbed::SinCos),
        VitConfig {
            qkv_bias: false,
            ..micro(Pool::Cls, PosEmbed::Learned)
        },
        VitConfig {
            num_classes: 0,
            ..micro(Pool::Cls, PosEmbed::Learned)
        },
        VitConfig {
            stem: Some(StemConfig {
                channels: (3, 5),
                max_pool: false,
            }),
            ..micro(Pool::Mean, PosEmbed::Learned)
        },
    ] {
        let vit = VisionTransformer::new(cfg.clone(), &mut rng(0)).unwrap();
        assert_eq!(vit.num_params(), cfg.num_params_closed_form().unwrap(), "{cfg:?}");
    }
}

#[test]
fn config_is_read_back_from_a_timm_state_dict() {
    let cfg = VitConfig::vit_tiny_patch16_224();
    let vit = VisionTransformer::new(cfg.clone(), &mut rng(0)).unwrap();
    let ckpt = tamer::checkpoint::Checkpoint::from_tensors("state dict", tamer::checkpoint::module_tensors(&vit));
    // 192 wide: timm's 64-wide heads give the 3 heads without being told.
    assert_eq!(VitConfig::from_checkpoint(&ckpt, None).unwrap(), cfg);
    let mean = VitConfig {
        pool: Pool::Mean,
        num_classes: 0,
        qkv_bias: false,
        ..VitConfig::vit_cifar()
    };
    let vit = VisionTransformer::new(mean.clone(), &mut rng(0)).unwrap();
    let ckpt = tamer::checkpoint::Checkpoint::from_tensors("state dict", tamer::checkpoint::module_tensors(&vit));
    assert_eq!(VitConfig::from_checkpoint(&ckpt, Some(3)).unwrap(), mean);
    let hybrid = VisionTransformer::new(VitConfig::hybrid_mnist(), &mut rng(0)).unwrap();
    let ckpt = tamer::checkpoint::Checkpoint::from_tensors("state dict", tamer::checkpoint::module_tensors(&hybrid));
    assert!(VitConfig::from_checkpoint(&ckpt, Some(4)).unwrap_err().to_string().contains("hybrid"));
}

#[test]
fn preset_shapes() {
    let t = VitConfig::vit_tiny_patch16_224();
    assert_eq!((t.grid().unwrap(), t.num_patches().unwrap(), t.num_prefix_tokens()), ((14, 14), 196, 1));
    assert_eq!(VitConfig::vit_tiny().grid().unwrap(), (7, 7));
    assert_eq!(VitConfig::vit_cifar().grid().unwrap(), (8, 8));
    assert_eq!(VitConfig::vit_digits().grid().unwrap(), (4, 4));
    let h = VitConfig::hybrid_mnist();
    assert_eq!((h.feature_size(), h.grid().unwrap()), ((7, 7), (7, 7)));
    let vit = VisionTransformer::new(VitConfig::vit_tiny_patch16_224(), &mut rng(0)).unwrap();
    let dims = |n: &str| vit.named_params().into_iter().find(|(m, _)| m == n).unwrap().1.dims();
    assert_eq!(dims("pos_embed"), [1, 197, 192]);
    assert_eq!(dims("patch_embed.proj.weight"), [192, 3, 16, 16]);
    assert_eq!(dims("blocks.11.attn.qkv.weight"), [576, 192]);
    assert_eq!(dims("blocks.11.mlp.fc1.weight"), [768, 192]);
    assert_eq!(dims("head.weight"), [1000, 192]);
}

// ---------------------------------------------------------------------------
// Forward and backward
// ---------------------------------------------------------------------------

#[test]
fn vit_tiny_forward_backward_reaches_every_parameter() {
    let vit = VisionTransformer::new(VitConfig::vit_tiny(), &mut rng(0)).unwrap();
    let x = Tensor::randn([4, 1, 28, 28], DType::F32, &mut rng(1)).unwrap();
    let logits = vit.forward(&x).unwrap();
    assert_eq!(logits.dims(), &[4, 10]);
    let loss = logits.cross_entropy(&labels(4, 10), CrossEntropyOptions::default()).unwrap();
    // At initialisation (head weights std 0.02) the loss is close to ln 10.
    assert!((loss.to_scalar().unwrap() - 10f64.ln()).abs() < 0.1);
    let grads = loss.backward().unwrap();
    for (name, p) in vit.named_params() {
        let g = grads.get(&p.tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        assert_eq!(g.dims(), p.dims().as_slice(), "{name}");
        let v = g.to_f64_vec().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
        assert!(v.iter().any(|&x| x != 0.0), "{name}: all-zero gradient");
    }
}

#[test]
fn hybrid_forward_backward_and_batch_norm_state() {
    let mut vit = VisionTransformer::new(VitConfig::hybrid_mnist(), &mut rng(0)).unwrap();
    let n = names(&vit);
    for want in [
        "patch_embed.backbone.conv1.weight",
        "patch_embed.backbone.bn1.weight",
        "patch_embed.backbone.bn2.bias",
        "patch_embed.proj.weight",
    ] {
        assert!(n.iter().any(|m| m == want), "{want} not in {n:?}");
    }
    let buffers: Vec<String> = vit.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert!(buffers.contains(&"patch_embed.backbone.bn2.running_var".to_string()), "{buffers:?}");
    assert_eq!(vit.named_buffers().iter().map(|(_, b)| b.numel()).sum::<usize>(), 194);
    assert_eq!(vit.patch_embed.proj.weight.dims(), [64, 64, 1, 1]);

    let x = Tensor::randn([3, 1, 28, 28], DType::F32, &mut rng(1)).unwrap();
    let (logits, hidden) = vit.forward_with_hidden(&x).unwrap();
    assert_eq!(logits.dims(), &[3, 10]);
    assert_eq!(hidden[0].dims(), &[3, 50, 64]);
    let grads = logits
        .cross_entropy(&labels(3, 10), CrossEntropyOptions::default())
        .unwrap()
        .backward()
        .unwrap();
    for (name, p) in vit.named_params() {
        assert!(grads.get(&p.tensor()).is_some(), "no gradient for {name}");
    }
    // Train mode moved the running statistics; eval mode uses them and is deterministic.
    let tracked = vit
        .patch_embed
        .backbone
        .as_ref()
        .unwrap()
        .bn1
        .num_batches_tracked
        .tensor()
        .to_vec::<i64>()
        .unwrap();
    assert_eq!(tracked, vec![1]);
    vit.set_training(false);
    let a = vit.forward(&x).unwrap().to_vec::<f32>().unwrap();
    let b = vit.forward(&x).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(a, b);
    assert_eq!(
        vit.patch_embed
            .backbone
            .as_ref()
            .unwrap()
            .bn1
            .num_batches_tracked
            .tensor()
            .to_vec::<i64>()
            .unwrap(),
        vec![1]
    );
}

#[test]
fn cls_and_mean_pooling() {
    let cls = VisionTransformer::new(micro(Pool::Cls, PosEmbed::Learned), &mut rng(0)).unwrap();
    let mean = VisionTransformer::new(micro(Pool::Mean, PosEmbed::Learned), &mut rng(0)).unwrap();
    let x = Tensor::randn([2, 2, 6, 4], DType::F32, &mut rng(1)).unwrap();
    // 3×2 grid: 6 patches, plus the class token for Cls.
    assert_eq!(cls.forward_features(&x).unwrap().dims(), &[2, 7, 8]);
    assert_eq!(mean.forward_features(&x).unwrap().dims(), &[2, 6, 8]);
    assert_eq!(cls.forward(&x).unwrap().dims(), &[2, 3]);
    assert_eq!(mean.forward(&x).unwrap().dims(), &[2, 3]);
    assert_eq!(cls.pos_embed.dims(), [1, 7, 8]);
    assert_eq!(mean.pos_embed.dims(), [1, 6, 8]);
    let (nc, nm) = (names(&cls), names(&mean));
    assert!(nc.contains(&"cls_token".into()) && nc.contains(&"norm.weight".into()) && !nc.contains(&"fc_norm.weight".into()));
    assert!(!nm.contains(&"cls_token".into()) && nm.contains(&"fc_norm.weight".into()) && !nm.contains(&"norm.weight".into()));
    // timm's order: cls_token, pos_embed, patch_embed, blocks, norm, head.
    assert_eq!(&nc[..4], ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]);
    assert_eq!(&nc[nc.len() - 4..], ["norm.weight", "norm.bias", "head.weight", "head.bias"]);

    // Pooling by hand: Cls takes token 0 of the normed features, Mean averages
    // the un-normed tokens and then applies fc_norm.
    let f = cls.forward_features(&x).unwrap();
    let by_hand = cls.head.as_ref().unwrap().forward(&f.narrow(1, 0, 1).unwrap().squeeze(1).unwrap()).unwrap();
    assert_eq!(by_hand.to_vec::<f32>().unwrap(), cls.forward(&x).unwrap().to_vec::<f32>().unwrap());
    let f = mean.forward_features(&x).unwrap();
    let pooled = mean.fc_norm.as_ref().unwrap().forward(&f.mean(&[1], false).unwrap()).unwrap();
    let by_hand = mean.head.as_ref().unwrap().forward(&pooled).unwrap();
    assert_eq!(by_hand.to_vec::<f32>().unwrap(), mean.forward(&x).unwrap().to_vec::<f32>().unwrap());

    // No head: forward returns the pooled features.
    let bare = VisionTransformer::new(
        VitConfig {
            num_classes: 0,
            ..micro(Pool::Mean, PosEmbed::Learned)
        },
        &mut rng(0),
    )
    .unwrap();
    assert_eq!(bare.forward(&x).unwrap().dims(), &[2, 8]);
}

#[test]
fn sincos_positions_are_a_fixed_buffer() {
    let learned = VisionTransformer::new(micro(Pool::Cls, PosEmbed::Learned), &mut rng(0)).unwrap();
    let sincos = VisionTransformer::new(micro(Pool::Cls, PosEmbed::SinCos), &mut rng(0)).unwrap();
    assert_eq!(learned.num_params() - sincos.num_params(), 7 * 8);
    assert!(!names(&sincos).contains(&"pos_embed".to_string()));
    let buffers: Vec<String> = sincos.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(buffers, ["pos_embed"]);
    // MAE's table for the 3×2 grid with a zero class-token row.
    let table = sincos_2d(3, 2, 8, true).unwrap().unsqueeze(0).unwrap();
    assert_eq!(sincos.pos_embed.tensor().to_vec::<f32>().unwrap(), table.to_vec::<f32>().unwrap());
    // It never gets a gradient; the learned one does.
    let x = Tensor::randn([2, 2, 6, 4], DType::F32, &mut rng(1)).unwrap();
    for (vit, expect) in [(&sincos, false), (&learned, true)] {
        let grads = vit.forward(&x).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(grads.get(&vit.pos_embed.tensor()).is_some(), expect);
    }
    // Saved under timm's name (as MAE's frozen parameter is).
    let saved: Vec<String> = tamer::checkpoint::module_tensors(&sincos).into_iter().map(|(n, _)| n).collect();
    assert!(saved.contains(&"pos_embed".to_string()));
    // Different positions, different outputs for the same weights elsewhere.
    let (a, b) = (
        learned.forward(&x).unwrap().to_vec::<f32>().unwrap(),
        sincos.forward(&x).unwrap().to_vec::<f32>().unwrap(),
    );
    assert_ne!(a, b);
}

#[test]
fn hidden_states_for_diagnostics() {
    let vit = VisionTransformer::new(
        VitConfig {
            depth: 3,
            ..micro(Pool::Cls, PosEmbed::Learned)
        },
        &mut rng(0),
    )
    .unwrap();
    let x = Tensor::randn([2, 2, 6, 4], DType::F32, &mut rng(1)).unwrap();
    let (logits, hidden) = vit.forward_with_hidden(&x).unwrap();
    assert_eq!(hidden.len(), 4);
    assert!(hidden.iter().all(|h| h.dims() == [2, 7, 8]));
    assert_eq!(logits.to_vec::<f32>().unwrap(), vit.forward(&x).unwrap().to_vec::<f32>().unwrap());
    assert_eq!(hidden[0].to_vec::<f32>().unwrap(), vit.embed(&x).unwrap().to_vec::<f32>().unwrap());
    // The last hidden state, normed, is forward_features.
    let normed = vit.norm.as_ref().unwrap().forward(&hidden[3]).unwrap();
    assert_eq!(normed.to_vec::<f32>().unwrap(), vit.forward_features(&x).unwrap().to_vec::<f32>().unwrap());
}

#[test]
fn initialisation_follows_timm() {
    let vit = VisionTransformer::new(VitConfig::vit_cifar(), &mut rng(0)).unwrap();
    let stats = |n: &str| {
        let v = vit.named_params().into_iter().find(|(m, _)| m == n).unwrap().1.tensor().to_f64_vec().unwrap();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt(), v)
    };
    for n in ["blocks.0.attn.qkv.weight", "blocks.5.mlp.fc2.weight", "head.weight", "pos_embed"] {
        let (m, s, _) = stats(n);
        assert!(m.abs() < 2e-3 && (s - 0.02).abs() < 2e-3, "{n}: mean {m}, std {s}");
    }
    let (_, s, _) = stats("cls_token");
    assert!(s < 1e-5 && s > 0.0);
    for n in ["blocks.0.attn.qkv.bias", "blocks.3.mlp.fc1.bias", "head.bias", "blocks.2.norm1.bias"] {
        assert!(stats(n).2.iter().all(|&b| b == 0.0), "{n}");
    }
    // patch_embed.proj keeps PyTorch's default conv init: uniform on ±1/√fan_in.
    let (_, _, w) = stats("patch_embed.proj.weight");
    let bound = 1.0 / (3.0f64 * 16.0).sqrt();
    assert!(w.iter().all(|x| x.abs() <= bound) && w.iter().any(|x| x.abs() > 0.8 * bound));
}

#[test]
fn drop_path_decays_linearly_and_is_off_in_eval() {
    let mut cfg = micro(Pool::Cls, PosEmbed::Learned);
    cfg.depth = 5;
    cfg.block.drop_path = 0.4;
    let rates = cfg.drop_path_rates();
    let want = [0.0, 0.1, 0.2, 0.3, 0.4];
    assert!(rates.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{rates:?}");
    let mut vit = VisionTransformer::new(cfg, &mut rng(0)).unwrap();
    assert!((vit.blocks[3].drop_path1.p - 0.3).abs() < 1e-12);
    let x = Tensor::randn([8, 2, 6, 4], DType::F32, &mut rng(1)).unwrap();
    let (a, b) = (
        vit.forward(&x).unwrap().to_vec::<f32>().unwrap(),
        vit.forward(&x).unwrap().to_vec::<f32>().unwrap(),
    );
    assert_ne!(a, b, "train mode draws new drop-path masks");
    vit.set_training(false);
    assert!(!vit.is_training());
    let (a, b) = (
        vit.forward(&x).unwrap().to_vec::<f32>().unwrap(),
        vit.forward(&x).unwrap().to_vec::<f32>().unwrap(),
    );
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------
// Freezing
// ---------------------------------------------------------------------------

#[test]
fn freezing_all_but_the_head() {
    let vit = VisionTransformer::new(VitConfig::vit_tiny(), &mut rng(0)).unwrap();
    let total = vit.named_params().len();
    assert_eq!(vit.set_trainable_matching("*", false), total);
    assert_eq!(vit.set_trainable_matching("head.*", true), 2);
    assert_eq!(vit.num_trainable_params(), 64 * 10 + 10);
    let x = Tensor::randn([2, 1, 28, 28], DType::F32, &mut rng(1)).unwrap();
    let loss = vit.forward(&x).unwrap().cross_entropy(&labels(2, 10), CrossEntropyOptions::default()).unwrap();
    let grads = loss.backward().unwrap();
    for (name, p) in vit.named_params() {
        let has = grads.get(&p.tensor()).is_some();
        assert_eq!(has, name.starts_with("head."), "{name}: gradient present = {has}");
    }
}

// ---------------------------------------------------------------------------
// Gradient checks in f64
// ---------------------------------------------------------------------------

/// Central differences of `Σ w·logits` against autodiff for up to `per_param`
/// entries of every parameter.
fn check_param_grads(vit: &VisionTransformer, x: &Tensor, per_param: usize, seed: u64) {
    let w = tensor_with(&[x.dims()[0], vit.config.num_classes], ViewKind::Contiguous, seed ^ 0x5eed);
    let loss = || vit.forward(x).unwrap().mul(&w).unwrap().sum_all().unwrap();
    let grads = loss().backward().unwrap();
    for (name, p) in vit.named_params() {
        let g = grads.get(&p.tensor()).unwrap_or_else(|| panic!("no gradient for {name}")).to_f64_vec().unwrap();
        let base = p.tensor().to_f64_vec().unwrap();
        // The step follows the parameter's scale: timm's class token starts at
        // std 1e-6, where the first LayerNorm curves the loss on that scale, so
        // a step of 1e-6 misses its slope by 1e-4 relative (seen at seed
        // 6033656175413810666; steps of 1e-8 and 1e-9 agree to 1e-8).
        let rms = (base.iter().map(|v| v * v).sum::<f64>() / base.len().max(1) as f64).sqrt();
        let eps = if rms > 0.0 { (1e-3 * rms).clamp(1e-9, 1e-6) } else { 1e-6 };
        let dims = p.dims();
        let step = (base.len() / per_param).max(1);
        for k in (seed as usize % step..base.len()).step_by(step).take(per_param) {
            let mut v = base.clone();
            v[k] += eps;
            p.set(&Tensor::from_vec(v.clone(), dims.clone()).unwrap()).unwrap();
            let plus = loss().to_scalar().unwrap();
            v[k] -= 2.0 * eps;
            p.set(&Tensor::from_vec(v, dims.clone()).unwrap()).unwrap();
            let minus = loss().to_scalar().unwrap();
            p.set(&Tensor::from_vec(base.clone(), dims.clone()).unwrap()).unwrap();
            let fd = (plus - minus) / (2.0 * eps);
            assert!(
                (fd - g[k]).abs() <= 1e-6 + 1e-4 * fd.abs(),
                "{name}[{k}]: autodiff {} vs finite difference {fd}",
                g[k]
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn micro_config(h: usize, w: usize, mean: bool, sincos: bool, depth: usize, heads: usize, hybrid: Option<bool>) -> VitConfig {
    VitConfig {
        pool: if mean { Pool::Mean } else { Pool::Cls },
        pos: if sincos { PosEmbed::SinCos } else { PosEmbed::Learned },
        stem: hybrid.map(|max_pool| StemConfig { channels: (2, 3), max_pool }),
        ..VitConfig::new((h, w), if hybrid.is_some() { 1 } else { 2 }, 2, 3, 8, depth, heads, 1.5)
    }
}

proptest! {
    #![proptest_config(proptest_config(10))]

    #[test]
    fn micro_vit_input_gradients(
        h in 2usize..=5, w in 2usize..=4, mean in any::<bool>(), sincos in any::<bool>(), depth in 1usize..=2, heads in 1usize..=2,
        hybrid in prop::option::of(any::<bool>()), kind in view_kind(), seed in any::<u64>(),
    ) {
        // A max-pooled stem needs 3 pixels per side to leave a 1×1 grid.
        let min = if hybrid == Some(true) { 3 } else { 2 };
        let (h, w) = (h.max(min), w.max(min));
        let mut vit = VisionTransformer::new(micro_config(h, w, mean, sincos, depth, heads, hybrid), &mut rng(seed)).unwrap();
        vit.to_dtype(DType::F64).unwrap();
        vit.set_training(false);
        let x = tensor_with(&[2, 2, h, w], kind, seed ^ 3);
        let report = check_gradients(|xs: &[Tensor]| vit.forward(&xs[0]), &[x], &GradCheckConfig::default()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }

    #[test]
    fn micro_vit_parameter_gradients(
        mean in any::<bool>(), sincos in any::<bool>(), depth in 1usize..=2, hybrid in prop::option::of(any::<bool>()), seed in any::<u64>(),
    ) {
        let cfg = micro_config(4, 4, mean, sincos, depth, 2, hybrid);
        let mut vit = VisionTransformer::new(cfg, &mut rng(seed)).unwrap();
        vit.to_dtype(DType::F64).unwrap();
        // Eval mode, except that a hybrid's batch norms stay on batch statistics
        // (their gradient then flows through the batch mean and variance).
        vit.set_training(false);
        if let Some(stem) = vit.patch_embed.backbone.as_mut() {
            stem.set_training(true);
        }
        let x = tensor_with(&[3, 2, 4, 4], ViewKind::Contiguous, seed ^ 5);
        check_param_grads(&vit, &x, 3, seed);
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn wrong_inputs_are_clear_errors() {
    let vit = VisionTransformer::new(VitConfig::vit_tiny(), &mut rng(0)).unwrap();
    let err = |x: Tensor| vit.forward(&x).unwrap_err().to_string();
    let e = err(Tensor::zeros([2, 1, 32, 32], DType::F32).unwrap());
    assert!(
        e.contains("VisionTransformer") && e.contains("[2, 1, 32, 32]") && e.contains("img_size 28×28"),
        "{e}"
    );
    let e = err(Tensor::zeros([2, 3, 28, 28], DType::F32).unwrap());
    assert!(e.contains("in_chans 1") && e.contains("[2, 3, 28, 28]"), "{e}");
    let e = err(Tensor::zeros([1, 28, 28], DType::F32).unwrap());
    assert!(e.contains("[B, 1, 28, 28]"), "{e}");
    let e = err(Tensor::zeros([1, 1, 28, 28], DType::I64).unwrap());
    assert!(e.contains("i64") && e.contains("f32 or f64"), "{e}");
    let e = vit.pool(&Tensor::zeros([2, 3, 64], DType::F32).unwrap()).unwrap_err().to_string();
    assert!(e.contains("[B, 50, 64]"), "{e}");
}

#[test]
fn bad_configs_are_clear_errors() {
    let build = |cfg: VitConfig| VisionTransformer::new(cfg, &mut rng(0)).err().unwrap().to_string();
    let e = build(VitConfig {
        num_heads: 3,
        ..VitConfig::vit_tiny()
    });
    assert!(e.contains("embed_dim 64") && e.contains("num_heads 3"), "{e}");
    let e = build(VitConfig {
        patch_size: 32,
        ..VitConfig::vit_tiny()
    });
    assert!(e.contains("patch size 32") && e.contains("28×28"), "{e}");
    let e = build(VitConfig {
        embed_dim: 6,
        num_heads: 2,
        pos: PosEmbed::SinCos,
        ..VitConfig::vit_tiny()
    });
    assert!(e.contains("divisible by 4"), "{e}");
    let e = build(VitConfig {
        pos_drop_rate: 1.5,
        ..VitConfig::vit_tiny()
    });
    assert!(e.contains("pos_drop_rate 1.5"), "{e}");
    let e = build(VitConfig {
        img_size: (2, 2),
        ..VitConfig::hybrid_mnist()
    });
    assert!(e.contains("stem feature map"), "{e}");
}
