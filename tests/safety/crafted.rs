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
