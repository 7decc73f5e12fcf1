//! The diagnostics as the trainer and the models use them: `diagnostics`
//! records every N steps in a valid metrics file, a run that trains the same
//! with or without them, and `Gpt::forward_with_hidden`.

use std::path::PathBuf;
use tamer::data::{digits, CharDataset, DataLoader, LoaderConfig, Normalization};
use tamer::diagnostics::{rank_collapse_by_depth, Probe};
use tamer::models::{Gpt, GptConfig, Pool, VisionTransformer, VitConfig};
use tamer::nn::{BlockConfig, Module};
use tamer::optim::{Adam, AdamConfig, Scheduler, WarmupCosine};
use tamer::train::{read_jsonl, CharLanguageModel, ImageClassification, Progress, TrainConfig, TrainTask, Trainer};
use tamer::{no_grad, rng, CrossEntropyOptions, Tensor};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tamer-diagnostics-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A two-block ViT on digits, with dropout so that a diagnostic that
/// disturbed the dropout stream would show in the losses.
fn vit_trainer(total_steps: u64, diagnostics_every: Option<u64>, out: Option<PathBuf>) -> Trainer<ImageClassification<VisionTransformer>> {
    let (train, test) = digits::load_images().unwrap();
    let cfg = VitConfig {
        pool: Pool::Mean,
        block: BlockConfig {
            dropout: 0.1,
            ..BlockConfig::vit(2)
        },
        ..VitConfig::new((8, 8), 4, 1, 10, 16, 2, 2, 2.0)
    };
    let model = VisionTransformer::new(cfg, &mut rng(3)).unwrap();
    let opt = Adam::new(model.named_params(), AdamConfig::adamw(3e-3).weight_decay(0.05)).unwrap();
    let loader = DataLoader::new(train, LoaderConfig::train(32, 5).with_normalization(Normalization::FromData)).unwrap();
    let task = ImageClassification::new(model, loader, test, 512, CrossEntropyOptions::default()).unwrap();
    let sched = Scheduler::new(WarmupCosine::new(3e-3, 2, total_steps, 0.0).unwrap());
    let config = TrainConfig {
        total_steps,
        clip: Some(1.0),
        log_every: 1,
        eval_every: Some(3),
        out_dir: out,
        seed: 11,
        diagnostics_every,
        print: false,
        progress: Progress::Never,
        ..TrainConfig::default()
    };
    Trainer::new(config, task, Box::new(opt), sched).unwrap()
}

fn numbers(v: &serde_json::Value, key: &str) -> Vec<f64> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array in {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or_else(|| panic!("{key} holds {x}")))
        .collect()
}

#[test]
fn trainer_writes_diagnostics_every_n_steps() {
    let dir = temp_dir("vit");
    let mut trainer = vit_trainer(7, Some(3), Some(dir.clone()));
    trainer.fit().unwrap();
    // Every line parses (read_jsonl fails on one that does not).
    let records = read_jsonl(dir.join("metrics.jsonl")).unwrap();
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(text.lines().count(), records.len());
    let diag: Vec<&serde_json::Value> = records.iter().filter(|r| r["event"] == "diagnostics").collect();
    let steps: Vec<u64> = diag.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [3, 6]);
    for r in &diag {
        let layers: Vec<&str> = r["layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        // One group per block, in order, beside the embedding and head groups.
        let blocks: Vec<&str> = layers.iter().copied().filter(|l| l.starts_with("blocks.")).collect();
        assert_eq!(blocks, ["blocks.0", "blocks.1"]);
        assert!(layers.contains(&"patch_embed.proj") && layers.contains(&"head"), "{layers:?}");
        let (grad, update) = (numbers(r, "grad_norm"), numbers(r, "update_ratio"));
        assert_eq!((grad.len(), update.len()), (layers.len(), layers.len()));
        // The layers' squared norms sum to the global (pre-clipping) norm of that step's train record.
        let step = r["step"].as_u64().unwrap();
        let train = records.iter().find(|t| t["event"] == "train" && t["step"].as_u64() == Some(step)).unwrap();
        let global = train["grad_norm"].as_f64().unwrap();
        let sum: f64 = grad.iter().map(|g| g * g).sum();
        assert!((sum.sqrt() - global).abs() < 1e-5 * global, "layers {} vs global {global}", sum.sqrt());
        // Adam at 3e-3 moves every layer, by far less than its own size.
        assert!(update.iter().all(|u| *u > 0.0 && *u < 0.5), "{update:?}");
        // Probe batch: the embeddings and two blocks; two blocks' entropies over 4 patch tokens.
        let (rank, entropy) = (numbers(r, "rank_collapse"), numbers(r, "attention_entropy"));
        assert_eq!((rank.len(), entropy.len()), (3, 2));
        assert!(rank.iter().all(|x| *x > 0.0 && *x <= 2.0), "{rank:?}");
        assert!(entropy.iter().all(|h| *h > 0.0 && *h <= 4f64.ln() + 1e-6), "{entropy:?}");
    }
    // The last record's probe is the model as the run left it at step 6 (of
    // 7): recomputed on the final model it differs, which shows it is live.
    trainer.task.set_training(false);
    let probe = no_grad(|| trainer.task.probe_layers()).unwrap().unwrap();
    assert_eq!(probe.rank_collapse.len(), 3);
    assert_ne!(probe.rank_collapse, numbers(diag[1], "rank_collapse"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn diagnostics_do_not_change_training() {
    let with = vit_trainer(6, Some(2), None).fit().unwrap();
    let without = vit_trainer(6, None, None).fit().unwrap();
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&with.losses), bits(&without.losses));
    assert_eq!(with.metric("test_acc"), without.metric("test_acc"));
}

#[test]
fn zero_diagnostics_interval_is_refused() {
    let (train, test) = digits::load_images().unwrap();
    let model = VisionTransformer::new(VitConfig::new((8, 8), 4, 1, 10, 16, 1, 2, 2.0), &mut rng(0)).unwrap();
    let opt = Adam::new(model.named_params(), AdamConfig::adamw(1e-3)).unwrap();
    let loader = DataLoader::new(train, LoaderConfig::train(32, 0)).unwrap();
    let task = ImageClassification::new(model, loader, test, 512, CrossEntropyOptions::default()).unwrap();
    let config = TrainConfig {
        diagnostics_every: Some(0),
        ..TrainConfig::default()
    };
    let e = Trainer::new(config, task, Box::new(opt), Scheduler::new(WarmupCosine::new(1e-3, 1, 10, 0.0).unwrap()))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("diagnostics_every"), "{e}");
}

fn small_gpt(data: &CharDataset, n_layer: usize) -> Gpt {
    let cfg = GptConfig {
        vocab_size: data.vocab_size(),
        block_size: 16,
        n_layer,
        n_head: 2,
        n_embd: 16,
        dropout: 0.0,
        bias: true,
        tie_weights: true,
    };
    Gpt::new(cfg, &mut rng(1)).unwrap()
}

#[test]
fn gpt_run_logs_probe_diagnostics() {
    let text = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!\n".repeat(30);
    let data = CharDataset::from_text(&text, "pangrams").unwrap();
    let model = small_gpt(&data, 3);
    let opt = Adam::new(model.named_params(), AdamConfig::adamw(3e-3)).unwrap();
    let task = CharLanguageModel {
        model,
        data,
        batch_size: 4,
        block_size: 16,
        micro_batches: 1,
        eval_iters: 2,
        eval_train: false,
        seed: 7,
        shard: (0, 1),
    };
    let dir = temp_dir("gpt");
    let config = TrainConfig {
        total_steps: 4,
        log_every: 2,
        diagnostics_every: Some(2),
        out_dir: Some(dir.clone()),
        print: false,
        progress: Progress::Never,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(config, task, Box::new(opt), Scheduler::new(WarmupCosine::new(3e-3, 1, 4, 0.0).unwrap())).unwrap();
    trainer.fit().unwrap();
    let records = read_jsonl(dir.join("metrics.jsonl")).unwrap();
    let diag: Vec<&serde_json::Value> = records.iter().filter(|r| r["event"] == "diagnostics").collect();
    assert_eq!(diag.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 4]);
    let layers: Vec<&str> = diag[0]["layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(
        layers,
        [
            "transformer.wte",
            "transformer.wpe",
            "transformer.h.0",
            "transformer.h.1",
            "transformer.h.2",
            "transformer.ln_f"
        ]
    );
    let entropy = numbers(diag[1], "attention_entropy");
    assert_eq!((numbers(diag[1], "rank_collapse").len(), entropy.len()), (4, 3));
    // Causal attention over 16 positions: query i sees i + 1 keys, so the mean
    // entropy is at most the mean of ln(i + 1).
    let bound = (1..=16).map(|k| (k as f64).ln()).sum::<f64>() / 16.0;
    assert!(entropy.iter().all(|h| *h > 0.0 && *h <= bound + 1e-6), "{entropy:?} vs {bound}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn gpt_forward_with_hidden_matches_forward() {
    let data = CharDataset::from_text(&"abcdefghij".repeat(8), "t").unwrap();
    let gpt = small_gpt(&data, 2);
    let idx = Tensor::from_vec((0..12).map(|i| i % 10).collect::<Vec<i64>>(), [2, 6]).unwrap();
    let (logits, hidden) = gpt.forward_with_hidden(&idx).unwrap();
    assert_eq!(hidden.len(), 3);
    assert_eq!(logits.to_vec::<f32>().unwrap(), gpt.forward(&idx, None).unwrap().0.to_vec::<f32>().unwrap());
    assert_eq!(hidden[0].to_vec::<f32>().unwrap(), gpt.embed(&idx).unwrap().to_vec::<f32>().unwrap());
    // hidden[l + 1] is block l applied to hidden[l]; the last goes through ln_f and the head.
    for (l, block) in gpt.h.iter().enumerate() {
        assert_eq!(
            block.forward(&hidden[l]).unwrap().to_vec::<f32>().unwrap(),
            hidden[l + 1].to_vec::<f32>().unwrap()
        );
    }
    let head = gpt.lm_head.forward(&gpt.ln_f.forward(&hidden[2]).unwrap()).unwrap();
    assert_eq!(head.to_vec::<f32>().unwrap(), logits.to_vec::<f32>().unwrap());
    // The model's probe sees the same residual stream.
    let probe = gpt.probe(&idx).unwrap();
    assert_eq!(probe.rank_collapse, no_grad(|| rank_collapse_by_depth(&hidden)).unwrap());
}
