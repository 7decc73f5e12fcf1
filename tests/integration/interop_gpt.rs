//! Interop with PyTorch: a tiny nanoGPT-style GPT built and run by PyTorch
//! (scripts/make_fixtures.py) loads into tamer's `Gpt` by name, and tamer
//! reproduces its logits, loss and parameter gradients. The same weights in
//! HF GPT-2's layout (Conv1D-transposed, no `transformer.` prefix) load through
//! the adapter and give the same logits.

use tamer::checkpoint::{fixture, interop, load_into, Checkpoint, LoadOptions};
use tamer::models::{Gpt, GptConfig};
use tamer::nn::Module;
use tamer::{rng, Tensor};

/// The fixture's configuration (fixtures.json: gpt_tiny.safetensors).
fn fixture_config() -> GptConfig {
    GptConfig {
        vocab_size: 11,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        dropout: 0.0,
        bias: true,
        tie_weights: true,
    }
}

/// A GPT with random weights, then overwritten by the checkpoint. `lm_head.weight`
/// is stored too (nanoGPT's state_dict lists both tied names); it is the same
/// tensor as `transformer.wte.weight`, which tamer lists once.
fn load_gpt(ckpt: Checkpoint) -> Gpt {
    let mut gpt = Gpt::new(fixture_config(), &mut rng(0)).unwrap();
    gpt.set_training(false);
    let report = load_into(&gpt, ckpt, &LoadOptions::strict()).unwrap();
    assert!(report.missing.is_empty(), "{report:?}");
    gpt
}

#[test]
fn logits_loss_and_gradients_match_pytorch() {
    let weights = fixture("gpt_tiny.safetensors").unwrap();
    let lm_head = weights.get("lm_head.weight").unwrap().to_vec::<f32>().unwrap();
    let wte = weights.get("transformer.wte.weight").unwrap().to_vec::<f32>().unwrap();
    assert_eq!(lm_head, wte, "the fixture's head is tied to the embedding");
    // PyTorch's parameter count: every tensor of its state_dict but the tied head.
    let torch_count: usize = weights.tensors.iter().filter(|(n, _)| n != "lm_head.weight").map(|(_, t)| t.numel()).sum();
    let gpt = load_gpt(weights);
    assert_eq!(gpt.num_params(), torch_count);
    assert_eq!(gpt.num_params(), fixture_config().num_params_closed_form());
    let io = fixture("gpt_tiny_io.safetensors").unwrap();
    let idx = io.get("idx").unwrap().clone();
    let targets = io.get("targets").unwrap().clone();

    let (logits, loss) = gpt.forward(&idx, Some(&targets)).unwrap();
    io.check_close("logits", &logits, 1e-4, 1e-5).unwrap();
    let loss = loss.unwrap();
    io.check_close("loss", &loss, 1e-4, 1e-6).unwrap();

    let grads = loss.backward().unwrap();
    let params = gpt.named_params();
    let mut compared = 0;
    for name in io
        .names()
        .into_iter()
        .filter_map(|n| n.strip_prefix("grad."))
        .map(str::to_string)
        .collect::<Vec<_>>()
    {
        let param = params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.tensor())
            .unwrap_or_else(|| panic!("no parameter {name}"));
        let grad = grads.get(&param).unwrap_or_else(|| panic!("no gradient for {name}"));
        io.check_close(&format!("grad.{name}"), grad, 1e-3, 1e-6).unwrap();
        compared += 1;
    }
    assert_eq!(compared, 6);
}

#[test]
fn hf_gpt2_layout_loads_through_the_adapter() {
    let hf = fixture("gpt_tiny_hf.safetensors").unwrap();
    let adapted = interop::gpt2_hf_to_nanogpt(hf.tensors.clone()).unwrap();
    assert!(!adapted.notes.is_empty());
    let gpt = load_gpt(Checkpoint::from_tensors("gpt_tiny_hf (adapted)", adapted.tensors));
    let io = fixture("gpt_tiny_io.safetensors").unwrap();
    let (logits, _) = gpt.forward(io.get("idx").unwrap(), None).unwrap();
    io.check_close("logits", &logits, 1e-4, 1e-5).unwrap();
}

#[test]
fn a_saved_gpt_reloads_bit_for_bit() {
    let gpt = load_gpt(fixture("gpt_tiny.safetensors").unwrap());
    let dir = std::env::temp_dir().join(format!("tamer-interop-gpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gpt.safetensors");
    tamer::checkpoint::save_module(&path, &gpt).unwrap();
    // Like nanoGPT's state_dict, the file names the tied head too.
    let saved = tamer::checkpoint::read(&path).unwrap();
    let names = saved.names();
    assert_eq!(names.len(), fixture("gpt_tiny.safetensors").unwrap().len());
    assert_eq!(
        saved.get("lm_head.weight").unwrap().to_vec::<f32>().unwrap(),
        saved.get("transformer.wte.weight").unwrap().to_vec::<f32>().unwrap()
    );
    let mut fresh = Gpt::new(fixture_config(), &mut rng(1)).unwrap();
    fresh.set_training(false);
    tamer::checkpoint::load_module(&path, &fresh, &LoadOptions::strict()).unwrap();
    let idx = Tensor::from_vec(vec![1i64, 2, 3, 4], [1, 4]).unwrap();
    let (a, _) = gpt.forward(&idx, None).unwrap();
    let (b, _) = fresh.forward(&idx, None).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}
