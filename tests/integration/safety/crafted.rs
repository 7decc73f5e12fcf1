//! Crafted files that used to panic the model loaders: each is now an error
//! naming the file, the tensor and the shape it must have.

use tamer::checkpoint::{fixture, Checkpoint};
use tamer::models::{GptConfig, PretrainedOptions, VisionTransformer, VitConfig};
use tamer::{rng, Tensor};

/// `ckpt` with tensor `name` replaced by `t`.
fn with_tensor(mut ckpt: Checkpoint, name: &str, t: Tensor) -> Checkpoint {
    ckpt.remove(name).unwrap();
    ckpt.tensors.push((name.to_string(), t));
    ckpt.source = "crafted.safetensors".into();
    ckpt
}

fn expect_error<T: std::fmt::Debug>(r: tamer::Result<T>, needles: &[&str]) {
    let e = r.expect_err("a crafted file was accepted").to_string();
    for n in needles {
        assert!(e.contains(n), "{n:?} not in: {e}");
    }
}

#[test]
fn vit_config_from_a_scalar_mlp_or_head_weight_is_an_error() {
    let vit = fixture("vit_tiny.safetensors").unwrap();
    for name in ["blocks.0.mlp.fc1.weight", "head.weight"] {
        let crafted = with_tensor(vit.clone(), name, Tensor::scalar(1.0f32));
        expect_error(VitConfig::from_checkpoint(&crafted, Some(2)), &["crafted.safetensors", name, "[]"]);
    }
    // A rank-2 head whose width is not the model's.
    let crafted = with_tensor(vit.clone(), "head.weight", Tensor::zeros([10, 3], tamer::DType::F32).unwrap());
    expect_error(VitConfig::from_checkpoint(&crafted, Some(2)), &["head.weight", "[10, 3]"]);
}

#[test]
fn loading_a_scalar_head_into_a_vit_is_an_error() {
    let vit = fixture("vit_tiny.safetensors").unwrap();
    let crafted = with_tensor(vit, "head.weight", Tensor::scalar(1.0f32));
    let model = VisionTransformer::new(VitConfig::new((8, 8), 4, 1, 10, 16, 2, 2, 2.0), &mut rng(0)).unwrap();
    expect_error(model.load_pretrained_into(crafted, &PretrainedOptions::default()), &["head.weight"]);
}

#[test]
fn gpt_config_from_a_rank_1_token_embedding_is_an_error() {
    let gpt = fixture("gpt_tiny.safetensors").unwrap();
    let crafted = with_tensor(gpt.clone(), "transformer.wte.weight", Tensor::zeros([11], tamer::DType::F32).unwrap());
    expect_error(
        GptConfig::from_checkpoint(&crafted, Some(2)),
        &["crafted.safetensors", "transformer.wte.weight", "[11]"],
    );
    let crafted = with_tensor(gpt.clone(), "transformer.wpe.weight", Tensor::scalar(0.0f32));
    expect_error(GptConfig::from_checkpoint(&crafted, Some(2)), &["transformer.wpe.weight"]);
    // wte and wpe of different widths.
    let crafted = with_tensor(gpt.clone(), "transformer.wpe.weight", Tensor::zeros([8, 3], tamer::DType::F32).unwrap());
    expect_error(GptConfig::from_checkpoint(&crafted, Some(2)), &["transformer.wpe.weight", "[8, 3]"]);
    // The real file still reads, and as the fixture's config says.
    let cfg = GptConfig::from_checkpoint(&gpt, Some(2)).unwrap();
    assert_eq!((cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd), (11, 8, 2, 2, 16));
    assert!(cfg.bias && cfg.tie_weights);
}

#[test]
fn a_small_file_cannot_make_the_loaders_build_a_huge_model() {
    // 400 KB of shapes that read as a GPT of width 100,000: building it would
    // allocate 12·10^10 parameters per layer before any tensor is compared.
    let wide = 100_000;
    let tensors = vec![
        ("transformer.wte.weight".to_string(), Tensor::zeros([1, wide], tamer::DType::F32).unwrap()),
        ("transformer.wpe.weight".to_string(), Tensor::zeros([1, wide], tamer::DType::F32).unwrap()),
        ("transformer.h.0.ln_1.weight".to_string(), Tensor::zeros([wide], tamer::DType::F32).unwrap()),
    ];
    let crafted = Checkpoint::from_tensors("crafted.safetensors", tensors);
    let e = tamer::models::Gpt::from_checkpoint(crafted, Some(1)).err().expect("refused").to_string();
    assert!(
        e.contains("does not hold the model") && e.contains("transformer.h.0.attn.c_attn.weight should be [300000, 100000]"),
        "{e}"
    );

    // Metadata that describes a ViT of 1,000 blocks of width 4,096 beside the tiny fixture's weights.
    let mut vit = fixture("vit_tiny.safetensors").unwrap();
    let cfg = VitConfig {
        embed_dim: 4096,
        depth: 1000,
        num_heads: 64,
        ..VitConfig::new((8, 8), 4, 1, 10, 16, 2, 2, 2.0)
    };
    vit.metadata = tamer::checkpoint::model_metadata(&cfg.to_json(), None);
    let e = VisionTransformer::from_checkpoint(vit, None).err().expect("refused").to_string();
    assert!(
        e.contains("does not hold the model") && e.contains("patch_embed.proj.weight should be [4096, 1, 4, 4]"),
        "{e}"
    );
}
