//! The ViT against timm: the tiny timm models of `scripts/make_fixtures.py`
//! (img 8, patch 4, 1 channel, 10 classes, width 16, depth 2, 2 heads,
//! mlp_ratio 2; class-token and avg-pool variants, every parameter re-drawn)
//! load by name, and their logits, loss and parameter gradients match
//! PyTorch's.

use tamer::checkpoint::{fixture, fixture_path, Checkpoint};
use tamer::models::{Pool, PretrainedOptions, VisionTransformer, VitConfig};
use tamer::nn::Module;
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::Tensor;

fn fixture_config(pool: Pool) -> VitConfig {
    VitConfig {
        pool,
        ..VitConfig::new((8, 8), 4, 1, 10, 16, 2, 2, 2.0)
    }
}

/// Largest `|a − e|` relative to the largest `|e|` (the reference's scale).
fn rel_err(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.shape(), expected.shape());
    let (a, e) = (actual.to_f64_vec().unwrap(), expected.to_f64_vec().unwrap());
    let scale = e.iter().fold(0f64, |m, x| m.max(x.abs()));
    let diff = a.iter().zip(&e).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale.max(1e-30)
}

/// Load `<variant>.safetensors` strictly (every name, no adaptation notes but
/// the load line), run `<variant>_io`'s input in eval mode, and compare the
/// logits, the loss and every stored `grad.<name>`.
fn check_variant(variant: &str, pool: Pool) {
    let (mut vit, notes) = VisionTransformer::load_pretrained(fixture_path(&format!("{variant}.safetensors")), fixture_config(pool)).unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("loaded"), "{notes:?}");
    vit.set_training(false);
    let io: Checkpoint = fixture(&format!("{variant}_io.safetensors")).unwrap();
    let x = io.get("x").unwrap();
    let logits = vit.forward(x).unwrap();
    let err = rel_err(&logits, io.get("logits").unwrap());
    println!("{variant}: logits relative error {err:.2e}");
    assert!(err < 1e-4, "{variant}: logits relative error {err:.3e}");
    io.check_close("logits", &logits, 1e-4, 1e-5).unwrap();

    let loss = logits.cross_entropy(io.get("targets").unwrap(), CrossEntropyOptions::default()).unwrap();
    io.check_close("loss", &loss, 1e-5, 0.0).unwrap();
    let grads = loss.backward().unwrap();
    let params: std::collections::BTreeMap<String, _> = vit.named_params().into_iter().collect();
    let mut checked = 0;
    for (key, expected) in &io.tensors {
        let Some(name) = key.strip_prefix("grad.") else { continue };
        let p = params.get(name).unwrap_or_else(|| panic!("{variant}: the model has no parameter {name}"));
        let g = grads.get(&p.tensor()).unwrap_or_else(|| panic!("{variant}: no gradient for {name}"));
        let err = rel_err(g, expected);
        println!("{variant}: grad {name} {} relative error {err:.2e}", expected.shape());
        assert!(err < 1e-4, "{variant}: gradient of {name}: relative error {err:.3e}");
        checked += 1;
    }
    assert!(checked >= 7, "{variant}: only {checked} gradients in the fixture");
}

#[test]
fn timm_class_token_vit_matches_pytorch() {
    check_variant("vit_tiny", Pool::Cls);
}

#[test]
fn timm_avg_pool_vit_matches_pytorch() {
    check_variant("vit_tiny_avg", Pool::Mean);
}

#[test]
fn names_and_shapes_are_timms() {
    for (variant, pool) in [("vit_tiny", Pool::Cls), ("vit_tiny_avg", Pool::Mean)] {
        let vit = VisionTransformer::new(fixture_config(pool), &mut tamer::rng(0)).unwrap();
        let ckpt = fixture(&format!("{variant}.safetensors")).unwrap();
        let mut ours: Vec<(String, Vec<usize>)> = vit.named_params().into_iter().map(|(n, p)| (n, p.dims())).collect();
        let mut theirs: Vec<(String, Vec<usize>)> = ckpt.tensors.iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{variant}");
        // The closed form agrees with timm's parameter count (sum over the state dict).
        let timm_count: usize = ckpt.tensors.iter().map(|(_, t)| t.numel()).sum();
        assert_eq!(vit.num_params(), timm_count);
        assert_eq!(fixture_config(pool).num_params_closed_form().unwrap(), timm_count);
    }
}

#[test]
fn saved_checkpoint_round_trips_through_timm_names() {
    let (vit, _) = VisionTransformer::load_pretrained(fixture_path("vit_tiny.safetensors"), fixture_config(Pool::Cls)).unwrap();
    let path = std::env::temp_dir().join(format!("tamer-vit-roundtrip-{}.safetensors", std::process::id()));
    tamer::checkpoint::save_module(&path, &vit).unwrap();
    let (again, notes) = VisionTransformer::load_pretrained(&path, fixture_config(Pool::Cls)).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(notes.len(), 1);
    let x = fixture("vit_tiny_io.safetensors").unwrap().get("x").unwrap().clone();
    let (mut a, mut b) = (vit, again);
    a.set_training(false);
    b.set_training(false);
    assert_eq!(a.forward(&x).unwrap().to_vec::<f32>().unwrap(), b.forward(&x).unwrap().to_vec::<f32>().unwrap());
}

#[test]
fn fine_tuning_adapts_head_and_positions_with_notes() {
    // 10 → 4 classes at 16×16 (a 4×4 grid instead of 2×2).
    let cfg = VitConfig {
        img_size: (16, 16),
        num_classes: 4,
        ..fixture_config(Pool::Cls)
    };
    let (vit, notes) = VisionTransformer::load_pretrained(fixture_path("vit_tiny.safetensors"), cfg).unwrap();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes[0].contains("pos_embed interpolated from 5 to 17 tokens") && notes[0].contains("2×2 -> 4×4"),
        "{notes:?}"
    );
    assert!(notes[1].contains("head re-initialised for 4 classes"), "{notes:?}");
    assert!(notes[2].contains("skipped: head.bias, head.weight"), "{notes:?}");
    // The class token's position is kept; the loaded block weights are timm's.
    let ckpt = fixture("vit_tiny.safetensors").unwrap();
    let pe = vit.pos_embed.tensor().to_vec::<f32>().unwrap();
    assert_eq!(&pe[..16], &ckpt.get_f32("pos_embed").unwrap()[..16]);
    ckpt.check_close("blocks.1.mlp.fc2.weight", &vit.blocks[1].mlp.as_ref().unwrap().fc2.weight.tensor(), 0.0, 0.0)
        .unwrap();
    // The new head: zero bias, small weights.
    let head = vit.head.as_ref().unwrap();
    assert!(head.bias.as_ref().unwrap().tensor().to_vec::<f32>().unwrap().iter().all(|&b| b == 0.0));
    assert!(head.weight.tensor().to_vec::<f32>().unwrap().iter().all(|w| w.abs() < 0.2));
    // Same resize as timm's resample_abs_pos_embed (antialias=True) on the same grids.
    let resize = fixture("pos_embed_resize.safetensors").unwrap();
    let pe_2x2 = resize.get("pe_2x2").unwrap().clone();
    let cfg6 = VitConfig::new((12, 12), 4, 1, 3, 6, 1, 2, 2.0);
    let cls = tamer::Tensor::zeros([1, 1, 6], tamer::DType::F32).unwrap();
    let weights = vec![("cls_token".to_string(), cls), ("pos_embed".to_string(), pe_2x2)];
    let opts = PretrainedOptions {
        strict: false,
        ..Default::default()
    };
    let (vit6, _) = VisionTransformer::load_pretrained_with(weights, cfg6, &opts).unwrap();
    resize.check_close("2x2_to_3x3.aa", &vit6.pos_embed.tensor(), 1e-5, 1e-6).unwrap();
}

#[test]
fn class_token_checkpoint_loads_into_a_mean_pool_model() {
    let (vit, notes) = VisionTransformer::load_pretrained(fixture_path("vit_tiny.safetensors"), fixture_config(Pool::Mean)).unwrap();
    assert!(notes[0].contains("dropped cls_token and pos_embed's class-token row"), "{notes:?}");
    assert!(notes[1].contains("norm.* loaded as fc_norm.*"), "{notes:?}");
    let ckpt = fixture("vit_tiny.safetensors").unwrap();
    assert_eq!(
        vit.pos_embed.tensor().to_vec::<f32>().unwrap(),
        ckpt.get_f32("pos_embed").unwrap()[16..].to_vec()
    );
    // The other way round is an error that says what to do.
    let err = VisionTransformer::load_pretrained(fixture_path("vit_tiny_avg.safetensors"), fixture_config(Pool::Cls))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no cls_token") && err.contains("Pool::Mean"), "{err}");
}

#[test]
fn mismatches_are_one_clear_error() {
    // Another width: every block tensor mismatches; the loader lists them all.
    let cfg = VitConfig {
        embed_dim: 8,
        ..fixture_config(Pool::Cls)
    };
    let err = VisionTransformer::load_pretrained(fixture_path("vit_tiny.safetensors"), cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("pos_embed") && err.contains("width differs"), "{err}");
    let cfg = VitConfig {
        depth: 3,
        ..fixture_config(Pool::Cls)
    };
    let err = VisionTransformer::load_pretrained(fixture_path("vit_tiny.safetensors"), cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing") && err.contains("blocks.2.attn.qkv.weight"), "{err}");
    let err = VisionTransformer::load_pretrained("/nonexistent/vit.safetensors", fixture_config(Pool::Cls))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/vit.safetensors"), "{err}");
}
