//! The model configuration and the input normalisation travel with the
//! weights as structured metadata, and the loaders use them instead of
//! guessing (the head count is not in the shapes; the normalisation nowhere).

use super::harness::scratch;
use tamer::checkpoint::{self, model_metadata, InputNormalization};
use tamer::data::digits;
use tamer::models::{Pool, PretrainedOptions, VisionTransformer, VitConfig};
use tamer::nn::Module;
use tamer::{no_grad, rng, Tensor};

/// train_vit's digits model: width 64 with 4 heads, where timm's rule (64-wide heads) guesses 1.
fn digits_config() -> VitConfig {
    VitConfig {
        pool: Pool::Mean,
        depth: 1,
        ..VitConfig::vit_digits()
    }
}

fn test_images() -> Tensor {
    let (_, test) = digits::load_images().unwrap();
    test.tensors().unwrap().0.narrow(0, 0, 32).unwrap()
}

#[test]
fn a_reloaded_vit_classifies_as_the_trained_one() {
    let dir = scratch("meta-classify");
    let cfg = digits_config();
    let mut model = VisionTransformer::new(cfg.clone(), &mut rng(1)).unwrap();
    model.set_training(false);
    let norm = InputNormalization::new(vec![0.3], vec![0.4]).unwrap();
    let path = dir.join("model.safetensors");
    checkpoint::save_with_metadata(&path, &checkpoint::module_tensors(&model), &model_metadata(&cfg.to_json(), Some(&norm))).unwrap();

    // What training fed the model: the loader's (x − mean) · (1/std).
    let raw = test_images();
    let inv = 1.0f32 / 0.4;
    let trained_input = Tensor::from_vec(raw.to_vec::<f32>().unwrap().iter().map(|v| (v - 0.3) * inv).collect::<Vec<f32>>(), raw.dims()).unwrap();
    let expected = no_grad(|| model.forward(&trained_input)).unwrap().to_vec::<f32>().unwrap();

    // The classify path: configuration and normalisation from the file.
    let ckpt = checkpoint::read(&path).unwrap();
    let stored_norm = InputNormalization::from_checkpoint(&ckpt).unwrap().expect("the normalisation was stored");
    assert_eq!(stored_norm, norm);
    let (mut back, notes) = VisionTransformer::from_checkpoint(ckpt, None).unwrap();
    back.set_training(false);
    assert_eq!(back.config, cfg);
    assert!(notes[0].contains("model_config metadata"), "{notes:?}");
    let got = no_grad(|| back.forward(&stored_norm.apply(&raw)?)).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(got, expected, "the reloaded model's logits differ from the trained model's");

    // A head count that contradicts the metadata is refused, not obeyed.
    let e = VisionTransformer::from_checkpoint(path.clone(), Some(1)).err().unwrap().to_string();
    assert!(e.contains("num_heads 4") && e.contains("1 heads"), "{e}");

    // The same weights without metadata: the shapes say width 64, timm's rule guesses
    // 1 head, and the logits are wrong; the notes say that it was a guess.
    let bare = dir.join("bare.safetensors");
    checkpoint::save_module(&bare, &model).unwrap();
    let (mut guessed, notes) = VisionTransformer::from_checkpoint(bare, None).unwrap();
    guessed.set_training(false);
    assert_eq!(guessed.config.num_heads, 1);
    assert!(notes[0].contains("no model_config metadata") && notes[0].contains("64-wide heads"), "{notes:?}");
    let wrong = no_grad(|| guessed.forward(&trained_input)).unwrap().to_vec::<f32>().unwrap();
    assert_ne!(wrong, expected);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn corrupt_model_metadata_is_an_error_naming_the_field() {
    let dir = scratch("meta-corrupt");
    let model = VisionTransformer::new(digits_config(), &mut rng(1)).unwrap();
    let mut config = digits_config().to_json();
    config["num_heads"] = serde_json::json!("four");
    let path = dir.join("m.safetensors");
    checkpoint::save_with_metadata(&path, &checkpoint::module_tensors(&model), &model_metadata(&config, None)).unwrap();
    let e = VisionTransformer::from_checkpoint(path.clone(), None).err().unwrap().to_string();
    assert!(e.contains("m.safetensors") && e.contains("num_heads") && e.contains("\"four\""), "{e}");
    let mut meta = model_metadata(&digits_config().to_json(), None);
    meta.insert(checkpoint::INPUT_NORMALIZATION_KEY.into(), r#"{"mean":[0.1],"std":[0]}"#.into());
    checkpoint::save_with_metadata(&path, &checkpoint::module_tensors(&model), &meta).unwrap();
    let e = InputNormalization::from_checkpoint(&checkpoint::read(&path).unwrap()).unwrap_err().to_string();
    assert!(e.contains("input_normalization") && e.contains("std 0"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pretrained_weights_with_another_head_count_are_refused() {
    let dir = scratch("meta-pretrained");
    let cfg = digits_config();
    let model = VisionTransformer::new(cfg.clone(), &mut rng(1)).unwrap();
    let path = dir.join("pretrained.safetensors");
    checkpoint::save_with_metadata(&path, &checkpoint::module_tensors(&model), &model_metadata(&cfg.to_json(), None)).unwrap();
    // Same shapes, 2 heads instead of 4: every tensor would load, and attend wrongly.
    let two_heads = VisionTransformer::new(VitConfig { num_heads: 2, ..cfg.clone() }, &mut rng(2)).unwrap();
    let e = two_heads
        .load_pretrained_into(path.clone(), &PretrainedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("num_heads 4 in the checkpoint, 2 in the model"), "{e}");
    // Fine-tuning on other classes is what pretrained weights are for.
    let three_classes = VisionTransformer::new(VitConfig { num_classes: 3, ..cfg }, &mut rng(2)).unwrap();
    let notes = three_classes.load_pretrained_into(path, &PretrainedOptions::default()).unwrap();
    assert!(
        notes.iter().any(|n| n.contains("model_config agrees")) && notes.iter().any(|n| n.contains("head re-initialised")),
        "{notes:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_vit_config_says_each_head_count_ratio_and_epsilon_once() {
    use tamer::nn::BlockConfig;
    // The block's copies of num_heads, mlp_ratio and norm_eps are what the ViT's fields
    // replace: they are not written, so no file can hold two values that disagree.
    let cfg = VitConfig {
        num_heads: 2,
        mlp_ratio: 3.0,
        norm_eps: 1e-5,
        block: BlockConfig::post_ln(8),
        ..VitConfig::vit_digits()
    };
    let json = cfg.to_json();
    for field in ["n_head", "mlp_ratio", "norm_eps"] {
        assert!(json["block"].get(field).is_none(), "block.{field} written: {json}");
    }
    let back = VitConfig::from_json(&json).unwrap();
    assert_eq!((back.block.n_head, back.block.mlp_ratio, back.block.norm_eps), (2, 3.0, 1e-5));
    for i in 0..cfg.depth {
        assert_eq!(back.block_config(i), cfg.block_config(i), "block {i} is built the same");
    }
    assert_eq!(back.to_json(), json);
    // A file from before, with the (never used) copies under block, still reads, as the top-level fields say.
    let mut old = json.clone();
    let block = old["block"].as_object_mut().unwrap();
    block.insert("n_head".into(), 8.into());
    block.insert("mlp_ratio".into(), 4.0.into());
    block.insert("norm_eps".into(), 1e-6.into());
    assert_eq!(VitConfig::from_json(&old).unwrap(), back);
}
