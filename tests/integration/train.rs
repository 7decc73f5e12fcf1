//! The trainer: exact resumption, the divergence guard, the metrics file, a
//! short digits ViT run that must learn, and the examples' flag parsing.

// The examples' flag and run-setup modules, whose parsing and helpers these
// tests check; the parts only the examples' `main` uses are unused here.
#[path = "../../examples/cli/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../../examples/cli/gpt_args.rs"]
#[allow(dead_code)]
mod gpt_args;
#[path = "../../examples/cli/pipe.rs"]
#[allow(dead_code)]
mod pipe;
#[path = "../../examples/cli/run.rs"]
#[allow(dead_code)]
mod run;
#[path = "../../examples/cli/vit_args.rs"]
#[allow(dead_code)]
mod vit_args;

use clap::Parser;
use std::path::PathBuf;
use tamer::data::{digits, Augment, CharDataset, DataLoader, LoaderConfig, Normalization};
use tamer::models::{Gpt, GptConfig, Pool, VisionTransformer, VitConfig};
use tamer::nn::{BlockConfig, Module};
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::optim::{split_param_groups, Adam, AdamConfig, LrSchedule, Scheduler, Sgd, SgdConfig, WarmupCosine};
use tamer::rng;
use tamer::train::{
    read_jsonl, CharLanguageModel, ImageClassification, Progress, TrainCheckpoint, TrainConfig, TrainTask, Trainer, CHECKPOINT_FILE, METRICS_FILE,
};

/// A fresh, empty directory under the system's temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tamer-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small ViT on digits with everything random switched on: shuffling,
/// random crops, dropout and drop-path.
fn vit_trainer(total_steps: u64, out: Option<PathBuf>, lr: f64, grad_accum: usize) -> Trainer<ImageClassification<VisionTransformer>> {
    let (train, test) = digits::load_images().unwrap();
    let cfg = VitConfig {
        pool: Pool::Mean,
        block: BlockConfig {
            dropout: 0.1,
            drop_path: 0.1,
            ..BlockConfig::vit(2)
        },
        ..VitConfig::new((8, 8), 2, 1, 10, 16, 2, 2, 2.0)
    };
    let model = VisionTransformer::new(cfg, &mut rng(3)).unwrap();
    let opt = Adam::new(model.named_params(), AdamConfig::adamw(lr).weight_decay(0.05)).unwrap();
    let loader_cfg = LoaderConfig::train(32 / grad_accum, 5)
        .with_normalization(Normalization::FromData)
        .with_augment(Augment {
            crop_padding: 1,
            ..Augment::none()
        });
    let loader = DataLoader::new(train, loader_cfg).unwrap();
    let task = ImageClassification::new(model, loader, test, 512, CrossEntropyOptions::default().with_label_smoothing(0.1)).unwrap();
    let sched = Scheduler::new(WarmupCosine::new(lr, 3, total_steps, 1e-5).unwrap());
    let config = TrainConfig {
        total_steps,
        grad_accum,
        clip: Some(1.0),
        log_every: 2,
        eval_every: Some(5),
        checkpoint_every: Some(4),
        out_dir: out,
        seed: 11,
        print: false,
        progress: Progress::Never,
        ..TrainConfig::default()
    };
    Trainer::new(config, task, Box::new(opt), sched).unwrap()
}

fn params_of(model: &dyn Module) -> Vec<Vec<f32>> {
    model.params().iter().map(|p| p.tensor().to_vec::<f32>().unwrap()).collect()
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn vit_resume_gives_bit_identical_losses() {
    // 45 images per epoch at batch 32 → epochs end mid-run, and the
    // interruption at step 7 falls inside an epoch, between checkpoints.
    const N: u64 = 14;
    let straight_dir = temp_dir("resume-straight");
    let mut straight = vit_trainer(N, Some(straight_dir.clone()), 2e-3, 2);
    let all = straight.fit().unwrap();
    assert_eq!(all.losses.len(), N as usize);

    let dir = temp_dir("resume-split");
    let mut first = vit_trainer(N, Some(dir.clone()), 2e-3, 2);
    first.config.stop_at = Some(N / 2);
    let a = first.fit().unwrap();
    assert_eq!(a.steps, N / 2);
    drop(first);
    let mut second = vit_trainer(N, Some(dir.clone()), 2e-3, 2);
    second.resume(dir.join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(second.step, N / 2);
    let b = second.fit().unwrap();
    assert_eq!(b.steps, N);

    let resumed: Vec<f64> = a.losses.iter().chain(&b.losses).copied().collect();
    assert_eq!(bits(&resumed), bits(&all.losses), "straight {:?}\nresumed {:?}", all.losses, resumed);
    assert_eq!(params_of(&second.task.model), params_of(&straight.task.model));
    assert_eq!(b.metric("test_acc"), all.metric("test_acc"));
    // Dropout was really on: the same step's loss differs under another run seed.
    let mut other = vit_trainer(N, None, 2e-3, 2);
    other.config.seed = 12;
    other.config.stop_at = Some(2);
    let o = other.fit().unwrap();
    assert_ne!(o.losses[1].to_bits(), all.losses[1].to_bits());
    let _ = std::fs::remove_dir_all(straight_dir);
    let _ = std::fs::remove_dir_all(dir);
}

fn gpt_trainer(total_steps: u64, out: PathBuf) -> Trainer<CharLanguageModel> {
    let text = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!\n".repeat(30);
    let data = CharDataset::from_text(&text, "pangrams").unwrap();
    let cfg = GptConfig {
        vocab_size: data.vocab_size(),
        block_size: 16,
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        dropout: 0.1,
        bias: true,
        tie_weights: true,
    };
    let model = Gpt::new(cfg, &mut rng(1)).unwrap();
    let opt = Adam::new(model.named_params(), AdamConfig::adamw(3e-3).betas(0.9, 0.99).weight_decay(0.1)).unwrap();
    let task = CharLanguageModel {
        model,
        data,
        batch_size: 4,
        block_size: 16,
        micro_batches: 1,
        eval_iters: 2,
        eval_train: true,
        seed: 7,
        shard: (0, 1),
    };
    let config = TrainConfig {
        total_steps,
        log_every: 3,
        eval_every: Some(5),
        checkpoint_every: Some(5),
        out_dir: Some(out),
        seed: 7,
        print: false,
        progress: Progress::Never,
        ..TrainConfig::default()
    };
    Trainer::new(
        config,
        task,
        Box::new(opt),
        Scheduler::new(WarmupCosine::new(3e-3, 2, total_steps, 3e-4).unwrap()),
    )
    .unwrap()
}

#[test]
fn gpt_resume_gives_bit_identical_losses_and_metrics() {
    let straight_dir = temp_dir("gpt-straight");
    let all = gpt_trainer(12, straight_dir.clone()).fit().unwrap();
    let dir = temp_dir("gpt-split");
    let mut first = gpt_trainer(12, dir.clone());
    first.config.stop_at = Some(5);
    let a = first.fit().unwrap();
    let mut second = gpt_trainer(12, dir.clone());
    second.resume(dir.join(CHECKPOINT_FILE)).unwrap();
    let b = second.fit().unwrap();
    let resumed: Vec<f64> = a.losses.iter().chain(&b.losses).copied().collect();
    assert_eq!(bits(&resumed), bits(&all.losses));
    assert_eq!(b.metric("val_loss"), all.metric("val_loss"));

    // The metrics file: start, train, eval, checkpoint and end records with
    // the fields the issue lists, appended across the resume.
    let records = read_jsonl(dir.join("metrics.jsonl")).unwrap();
    let events: Vec<&str> = records.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events.iter().filter(|e| **e == "start").count(), 2, "{events:?}");
    assert_eq!(events.iter().filter(|e| **e == "end").count(), 2, "{events:?}");
    // The resumed invocation begins with a resume record at the checkpoint's step.
    let resume_at = events.iter().position(|e| *e == "resume").unwrap();
    assert_eq!((events[resume_at + 1], records[resume_at]["step"].as_u64()), ("start", Some(5)), "{events:?}");
    let train: Vec<_> = records.iter().filter(|r| r["event"] == "train").collect();
    let steps: Vec<u64> = train.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![3, 5, 6, 9, 12]);
    for r in &train {
        for key in ["loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "elapsed"] {
            assert!(r[key].as_f64().is_some_and(f64::is_finite), "{key} missing in {r}");
        }
    }
    let evals: Vec<_> = records.iter().filter(|r| r["event"] == "eval").collect();
    assert_eq!(evals.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), vec![5, 10, 12]);
    assert!(evals.iter().all(|r| r["val_loss"].as_f64().is_some() && r["train_loss"].as_f64().is_some()));
    let ckpts: Vec<u64> = records
        .iter()
        .filter(|r| r["event"] == "checkpoint")
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(ckpts, vec![5, 10, 12]);
    // The last line's loss is the mean of the steps since the previous line.
    let last = train.last().unwrap()["loss"].as_f64().unwrap();
    assert!((last - b.losses[4..].iter().sum::<f64>() / 3.0).abs() < 1e-12);

    // The checkpoint is a nanoGPT-named model file plus state.
    let ckpt = TrainCheckpoint::read(&dir.join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(ckpt.step, 12);
    assert!(ckpt.file.get("transformer.wte.weight").is_ok() && ckpt.file.get("lm_head.weight").is_ok());
    assert!(ckpt.file.names().iter().any(|n| n.starts_with("optim.state.")));
    assert_eq!(ckpt.file.metadata["schedule.step"], "12");
    let _ = std::fs::remove_dir_all(straight_dir);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn divergence_guard_stops_and_keeps_the_last_good_checkpoint() {
    let dir = temp_dir("diverge");
    let mut t = vit_trainer(20, Some(dir.clone()), 1e-3, 1);
    t.config.checkpoint_every = Some(1);
    // SGD at an absurd learning rate: the first update blows the weights up.
    t.optimizer = Box::new(Sgd::new(t.task.model.named_params(), SgdConfig::new(1e30)).unwrap());
    t.scheduler = Scheduler::new(tamer::optim::Constant { lr: 1e30 });
    t.config.clip = None;
    let err = t.fit().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("training diverged at step"), "{msg}");
    assert!(msg.contains("is NaN") || msg.contains("is inf"), "{msg}");
    let ckpt = TrainCheckpoint::read(&dir.join(CHECKPOINT_FILE)).unwrap();
    assert!(msg.contains(&format!("the last good checkpoint (step {})", ckpt.step)), "{msg}");
    assert!(msg.contains(&format!("at step {} of 20", ckpt.step + 1)), "{msg}");
    assert_eq!(t.step, ckpt.step);
    // The kept checkpoint holds finite weights (the diverged step was not applied to it).
    for (name, tensor) in &ckpt.file.tensors {
        if tensor.dtype().is_float() {
            assert!(tensor.to_f64_vec().unwrap().iter().all(|v| v.is_finite()), "{name} is not finite");
        }
    }
    let records = read_jsonl(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(records.last().unwrap()["event"], "diverged");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn divergence_guard_without_checkpoints_says_so() {
    let mut t = vit_trainer(5, None, 1e-3, 1);
    t.optimizer = Box::new(Sgd::new(t.task.model.named_params(), SgdConfig::new(1e30)).unwrap());
    t.scheduler = Scheduler::new(tamer::optim::Constant { lr: 1e30 });
    t.config.clip = None;
    let msg = t.fit().unwrap_err().to_string();
    assert!(msg.contains("training diverged") && msg.contains("no checkpoint had been written"), "{msg}");
}

#[test]
fn digits_vit_learns_past_80_percent() {
    let (train, test) = digits::load_images().unwrap();
    let cfg = VitConfig {
        pool: Pool::Mean,
        depth: 2,
        ..VitConfig::vit_digits()
    };
    let model = VisionTransformer::new(cfg, &mut rng(0)).unwrap();
    let opt = Adam::new(model.named_params(), AdamConfig::adamw(2e-3).weight_decay(0.05)).unwrap();
    let loader = DataLoader::new(train, LoaderConfig::train(64, 0).with_normalization(Normalization::FromData)).unwrap();
    let steps = loader.num_batches() as u64 * 15;
    let task = ImageClassification::new(model, loader, test, 512, CrossEntropyOptions::default().with_label_smoothing(0.1)).unwrap();
    let config = TrainConfig {
        total_steps: steps,
        log_every: 1000,
        print: false,
        progress: Progress::Never,
        ..TrainConfig::default()
    };
    let sched = Scheduler::new(WarmupCosine::new(2e-3, 20, steps, 0.0).unwrap());
    let summary = Trainer::new(config, task, Box::new(opt), sched).unwrap().fit().unwrap();
    let acc = summary.metric("test_acc").unwrap();
    eprintln!("digits ViT: test accuracy {acc:.4} after {steps} steps");
    assert!(acc > 0.80, "test accuracy {acc} after {steps} steps");
}

#[test]
fn resume_checks_the_file_and_the_seed() {
    let dir = temp_dir("resume-errors");
    let mut t = vit_trainer(4, Some(dir.clone()), 1e-3, 1);
    t.config.stop_at = Some(2);
    t.fit().unwrap();
    let mut other = vit_trainer(4, Some(dir.clone()), 1e-3, 1);
    other.config.seed = 99;
    let msg = other.resume(dir.join(CHECKPOINT_FILE)).unwrap_err().to_string();
    assert!(msg.contains("seed: 11 in the checkpoint, 99 in this run"), "{msg}");
    // A plain model file is not a training checkpoint.
    let plain = dir.join("plain.safetensors");
    tamer::checkpoint::save_module(&plain, &t.task.model).unwrap();
    let msg = vit_trainer(4, None, 1e-3, 1).resume(&plain).unwrap_err().to_string();
    assert!(msg.contains("not a training checkpoint"), "{msg}");
    let msg = vit_trainer(4, None, 1e-3, 1).resume(dir.join("missing.safetensors")).unwrap_err().to_string();
    assert!(msg.contains("missing.safetensors"), "{msg}");
    // Another schedule is refused rather than silently switched.
    let mut longer = vit_trainer(8, None, 1e-3, 1);
    let msg = longer.resume(dir.join(CHECKPOINT_FILE)).unwrap_err().to_string();
    assert!(msg.contains("schedule"), "{msg}");
    // So is another batch layout: grad_accum, or the micro-batch size.
    let msg = vit_trainer(4, None, 1e-3, 2).resume(dir.join(CHECKPOINT_FILE)).unwrap_err().to_string();
    assert!(msg.contains("grad_accum: 1 in the checkpoint, 2 in this run"), "{msg}");
    let mut smaller = vit_trainer(4, None, 1e-3, 1);
    smaller.task.train = DataLoader::new(digits::load_images().unwrap().0, LoaderConfig::train(16, 5)).unwrap();
    let msg = smaller.resume(dir.join(CHECKPOINT_FILE)).unwrap_err().to_string();
    assert!(msg.contains("micro-batch size: 32 in the checkpoint, 16 in this run"), "{msg}");
    // And metadata (the model configuration ...) other than the checkpoint's.
    let mut tagged = vit_trainer(4, None, 1e-3, 1);
    tagged.config.metadata.insert("model".into(), "vit-b".into());
    let msg = tagged.resume(dir.join(CHECKPOINT_FILE)).unwrap_err().to_string();
    assert!(msg.contains("metadata 'model': none in the checkpoint, \"vit-b\" in this run"), "{msg}");
    t.config.metadata.insert("model".into(), "vit-a".into());
    t.save_checkpoint().unwrap();
    let msg = tagged.resume(dir.join(CHECKPOINT_FILE)).unwrap_err().to_string();
    assert!(msg.contains("\"vit-a\"") && msg.contains("\"vit-b\""), "{msg}");
    tagged.config.metadata.insert("model".into(), "vit-a".into());
    // A run in f32 does not continue under bf16 autocast (nor the other way).
    let mut mixed = vit_trainer(4, None, 1e-3, 1);
    mixed.config.metadata.insert("model".into(), "vit-a".into());
    mixed.config.autocast = Some(tamer::DType::BF16);
    let msg = mixed.resume(dir.join(CHECKPOINT_FILE)).unwrap_err().to_string();
    assert!(msg.contains("autocast: none in the checkpoint, bf16 in this run"), "{msg}");
    tagged.resume(dir.join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(tagged.step, 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn trainer_rejects_bad_configs() {
    let bad = |edit: &dyn Fn(&mut TrainConfig)| {
        let Trainer {
            mut config,
            task,
            optimizer,
            scheduler,
            ..
        } = vit_trainer(4, None, 1e-3, 1);
        edit(&mut config);
        Trainer::new(config, task, optimizer, scheduler).err().unwrap().to_string()
    };
    assert!(bad(&|c| c.grad_accum = 0).contains("grad_accum"));
    assert!(bad(&|c| c.eval_every = Some(0)).contains("eval_every"));
    assert!(bad(&|c| c.clip = Some(-1.0)).contains("clip -1"));
    let msg = bad(&|c| {
        c.metadata.insert("step".into(), "3".into());
    });
    assert!(msg.contains("\"step\" is reserved"), "{msg}");
    let msg = bad(&|c| c.autocast = Some(tamer::DType::F16));
    assert!(msg.contains("f16 needs loss scaling"), "{msg}");
    assert!(bad(&|c| c.autocast = Some(tamer::DType::F64)).contains("expected bf16"));
}

/// Autocast changes CUDA products only: a CPU model under it is refused at
/// `fit`, not trained in f32 while the user believes it is bf16.
#[test]
fn autocast_on_a_cpu_model_is_refused() {
    let mut t = vit_trainer(4, None, 1e-3, 1);
    t.config.autocast = Some(tamer::DType::BF16);
    let msg = t.fit().unwrap_err().to_string();
    assert!(msg.contains("changes CUDA matrix products only") && msg.contains("is on cpu"), "{msg}");
    assert_eq!(t.step, 0, "nothing trained");
}

#[test]
fn vit_flags_parse_and_bad_values_are_clear_errors() {
    use vit_args::{Dataset, PoolKind, VitArgs};
    let a = VitArgs::try_parse_from(["train_vit"]).unwrap();
    assert_eq!((a.dataset, a.pool, a.run.clip, a.label_smoothing), (Dataset::Digits, PoolKind::Mean, 1.0, 0.1));
    a.validate().unwrap();
    let a = VitArgs::try_parse_from(["train_vit", "--dataset", "mnist10k", "--data-dir", "d", "--pool", "cls", "--lr", "3e-4"]).unwrap();
    assert_eq!((a.dataset, a.pool, a.lr), (Dataset::Mnist10k, PoolKind::Cls, Some(3e-4)));
    let err = |argv: &[&str]| VitArgs::try_parse_from(argv).unwrap_err().to_string();
    for bad in ["--lr=-1", "--lr=0", "--lr=fast", "--lr=inf"] {
        let e = err(&["train_vit", bad]);
        assert!(e.contains("--lr") && e.contains("expected a positive number"), "{e}");
    }
    let e = err(&["train_vit", "--dataset", "imagenet"]);
    assert!(
        e.contains("imagenet") && e.contains("digits") && e.contains("mnist10k") && e.contains("cifar10"),
        "{e}"
    );
    let e = err(&["train_vit", "--pool", "avg"]);
    assert!(e.contains("cls") && e.contains("mean"), "{e}");
    let e = err(&["train_vit", "--batch-size", "0"]);
    assert!(e.contains("positive whole number"), "{e}");
    let e = err(&["train_vit", "--label-smoothing", "1.5"]);
    assert!(e.contains("[0, 1)"), "{e}");
    let e = err(&["train_vit", "--resume"]);
    assert!(e.contains("--out"), "{e}");
    let e = err(&["train_vit", "--frobnicate"]);
    assert!(e.contains("--frobnicate"), "{e}");
    let v = |argv: &[&str]| VitArgs::try_parse_from(argv).unwrap().validate().unwrap_err();
    if !cfg!(feature = "cuda") {
        assert!(v(&["train_vit", "--device", "cuda"]).contains("built without the cuda feature"));
    }
    assert!(v(&["train_vit", "--dataset", "mnist"]).contains("--data-dir"));
    assert!(v(&["train_vit", "--batch-size", "30", "--grad-accum", "4"]).contains("multiple"));
    // The recipe's batch (64 on digits) is checked too, not only --batch-size.
    assert_eq!(
        v(&["train_vit", "--grad-accum", "3"]),
        "batch 64 (recipe or --batch-size) must be a multiple of --grad-accum 3"
    );
    assert!(v(&["train_vit", "--grad-accum", "256"]).contains("batch 64 (recipe or --batch-size) must be a multiple of --grad-accum 256"));
    let parse = |argv: &[&str]| VitArgs::try_parse_from(argv).unwrap();
    assert_eq!(parse(&["train_vit", "--grad-accum", "4"]).batch_sizes(), Ok((64, 16)));
    assert_eq!(parse(&["train_vit", "--batch-size", "96", "--grad-accum", "3"]).batch_sizes(), Ok((96, 32)));
    // Epoch flags become step counts without overflowing.
    assert_eq!(
        parse(&["train_vit"]).step_counts(22),
        Ok(vit_args::StepCounts {
            total: 60 * 22,
            eval_every: 6 * 22,
            checkpoint_every: 22
        })
    );
    let huge = u64::MAX.to_string();
    for flag in ["--epochs", "--eval-every", "--checkpoint-every"] {
        let e = parse(&["train_vit", flag, &huge]).step_counts(2).unwrap_err();
        assert!(e.contains(flag) && e.contains("64 bits"), "{e}");
    }
    let help = VitArgs::try_parse_from(["train_vit", "--help"]).unwrap_err().to_string();
    for flag in [
        "--dataset",
        "--data-dir",
        "--model",
        "--epochs",
        "--batch-size",
        "--lr",
        "--weight-decay",
        "--warmup",
        "--schedule",
        "--optimizer",
        "--clip",
        "--label-smoothing",
        "--pool",
        "--pos",
        "--patch",
        "--pretrained",
        "--seed",
        "--out",
        "--resume",
        "--device",
        "--threads",
        "--diagnostics-every",
        "--zero1",
        "--overlap",
    ] {
        assert!(help.contains(flag), "--help does not document {flag}");
    }
    assert_eq!(parse(&["train_vit"]).run.diagnostics_every, None);
    assert_eq!(parse(&["train_vit", "--diagnostics-every", "25"]).run.diagnostics_every, Some(25));
    let e = err(&["train_vit", "--diagnostics-every", "0"]);
    assert!(e.contains("--diagnostics-every") && e.contains("positive whole number"), "{e}");
    assert!(parse(&["train_vit", "--zero1"]).run.zero1 && !parse(&["train_vit"]).run.zero1);
    let e = err(&["train_vit", "--zero1", "--diagnostics-every", "2"]);
    assert!(e.contains("--zero1") && e.contains("--diagnostics-every"), "{e}");
    assert!(parse(&["train_vit", "--overlap"]).run.overlap && !parse(&["train_vit"]).run.overlap);
    let e = err(&["train_vit", "--overlap", "--zero1"]);
    assert!(e.contains("--overlap") && e.contains("--zero1"), "{e}");
}

#[test]
fn gpt_flags_parse_and_bad_values_are_clear_errors() {
    use gpt_args::GptArgs;
    let a = GptArgs::try_parse_from(["train_gpt", "--text", "t.txt"]).unwrap();
    assert_eq!((a.batch_size, a.steps, a.lr, a.min_lr, a.warmup, a.eval_iters), (12, 2000, 1e-3, 1e-4, 100, 20));
    assert_eq!(a.run.diagnostics_every, None);
    let d = GptArgs::try_parse_from(["train_gpt", "--text", "t", "--diagnostics-every", "3"]).unwrap();
    assert_eq!(d.run.diagnostics_every, Some(3));
    a.validate().unwrap();
    assert_eq!(a.run.autocast.dtype(), None);
    let mixed = GptArgs::try_parse_from(["train_gpt", "--text", "t", "--autocast", "bf16"]).unwrap();
    assert_eq!(mixed.run.autocast.dtype(), Some(tamer::DType::BF16));
    let e = mixed.validate().unwrap_err();
    assert!(e.contains("--autocast bf16 needs --device cuda"), "{e}");
    let e = GptArgs::try_parse_from(["train_gpt"]).unwrap_err().to_string();
    assert!(e.contains("--text"), "{e}");
    // --out has a default, so --resume alone continues the run there; --force cannot go with it.
    let a = GptArgs::try_parse_from(["train_gpt", "--text", "t", "--resume"]).unwrap();
    assert!(a.run.resume && a.out.ends_with("out/train_gpt"));
    let e = GptArgs::try_parse_from(["train_gpt", "--text", "t", "--resume", "--force"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--force") && e.contains("--resume"), "{e}");
    let e = GptArgs::try_parse_from(["train_gpt", "--text", "t", "--n-head", "zero"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--n-head") && e.contains("positive whole number"), "{e}");
    let e = GptArgs::try_parse_from(["train_gpt", "--text", "t", "--dropout", "2"]).unwrap_err().to_string();
    assert!(e.contains("[0, 1)"), "{e}");
    let v = |argv: &[&str]| GptArgs::try_parse_from(argv).unwrap().validate().unwrap_err();
    assert!(v(&["train_gpt", "--text", "t", "--lr", "1e-4", "--min-lr", "1e-3"]).contains("--min-lr"));
    assert!(v(&["train_gpt", "--text", "t", "--steps", "10", "--warmup", "20"]).contains("--warmup"));
    if !cfg!(feature = "cuda") {
        assert!(v(&["train_gpt", "--text", "t", "--device", "cuda"]).contains("cuda feature"));
    }
    // Both splits must be longer than the context (train_gpt checks before it builds the model).
    let text = CharDataset::from_text(&"abcdefghij".repeat(16), "t").unwrap(); // 144 + 16 characters
    assert!(text.check_windows(15).is_ok());
    let e = text.check_windows(16).unwrap_err().to_string();
    assert!(e.contains("the validation split has 16 characters") && e.contains("block_size 16"), "{e}");
    let e = text.check_windows(200).unwrap_err().to_string();
    assert!(e.contains("the training split has 144 characters") && e.contains("block_size 200"), "{e}");
    let help = GptArgs::try_parse_from(["train_gpt", "--help"]).unwrap_err().to_string();
    for flag in [
        "--model",
        "--n-layer",
        "--n-head",
        "--n-embd",
        "--block-size",
        "--batch-size",
        "--steps",
        "--lr",
        "--min-lr",
        "--warmup",
        "--weight-decay",
        "--dropout",
        "--clip",
        "--eval-interval",
        "--eval-iters",
        "--optimizer",
        "--schedule",
        "--seed",
        "--out",
        "--resume",
        "--device",
        "--threads",
        "--sample-tokens",
    ] {
        assert!(help.contains(flag), "--help does not document {flag}");
    }
}

/// A task whose evaluation fails (the rest is the wrapped task's).
struct FailingEval(CharLanguageModel);

impl TrainTask for FailingEval {
    fn model(&self) -> &dyn Module {
        self.0.model()
    }
    fn set_training(&mut self, training: bool) {
        self.0.set_training(training)
    }
    fn is_training(&self) -> bool {
        self.0.is_training()
    }
    fn reseed(&mut self, seed: u64) {
        self.0.reseed(seed)
    }
    fn micro_batch(&mut self, step: u64, micro: usize) -> tamer::Result<tamer::train::MicroBatch> {
        self.0.micro_batch(step, micro)
    }
    fn evaluate(&mut self) -> tamer::Result<Vec<(String, f64)>> {
        Err(tamer::Error::value("FailingEval", "the evaluation failed on purpose"))
    }
    fn batch_size(&self) -> Option<usize> {
        self.0.batch_size()
    }
}

#[test]
fn the_checkpoint_is_written_before_an_evaluation_that_fails() {
    let dir = temp_dir("eval-fails");
    let Trainer {
        config,
        task,
        optimizer,
        scheduler,
        ..
    } = gpt_trainer(12, dir.clone());
    let mut t = Trainer::new(config, FailingEval(task), optimizer, scheduler).unwrap();
    let msg = t.fit().unwrap_err().to_string();
    assert!(msg.contains("failed on purpose"), "{msg}");
    let ckpt = TrainCheckpoint::read(&dir.join(CHECKPOINT_FILE)).unwrap();
    assert_eq!((ckpt.step, t.step), (5, 5));
    let records = read_jsonl(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(records.last().unwrap()["event"], "checkpoint");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_validation_split_too_short_is_refused_before_training() {
    let dir = temp_dir("short-val");
    let mut t = gpt_trainer(12, dir.clone());
    // Shorter than the context: no validation batch fits, which the first evaluation would find at step 5.
    t.task.data.val.truncate(8);
    let msg = t.fit().unwrap_err().to_string();
    assert!(msg.contains("the validation split has 8 characters") && msg.contains("block_size 16"), "{msg}");
    assert_eq!(t.step, 0, "a step was trained");
    assert!(!dir.join(CHECKPOINT_FILE).exists() && !dir.join("metrics.jsonl").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn evaluate_restores_the_mode_and_a_finished_run_still_logs_its_eval() {
    let dir = temp_dir("finished");
    let mut t = gpt_trainer(6, dir.clone());
    t.task.set_training(false);
    t.evaluate().unwrap();
    assert!(!t.task.is_training(), "evaluate switched an eval-mode task to train mode");
    t.task.set_training(true);
    t.evaluate().unwrap();
    assert!(t.task.is_training());
    t.fit().unwrap();

    // Resuming a finished run trains nothing but still writes its evaluation.
    let mut again = gpt_trainer(6, dir.clone());
    again.resume(dir.join(CHECKPOINT_FILE)).unwrap();
    let summary = again.fit().unwrap();
    assert!(summary.losses.is_empty() && summary.metric("val_loss").is_some());
    let records = read_jsonl(dir.join("metrics.jsonl")).unwrap();
    let events: Vec<&str> = records.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events[events.len() - 5..], ["resume", "start", "weight_decay", "eval", "end"], "{events:?}");
    assert_eq!(records[records.len() - 2]["step"], 6);
    assert_eq!(records[records.len() - 2]["val_loss"].as_f64(), summary.metric("val_loss"));

    // A fresh run in the same directory is refused, and starts the metrics file anew when told to overwrite.
    let mut fresh = gpt_trainer(6, dir.clone());
    fresh.config.stop_at = Some(1);
    assert!(fresh.fit().unwrap_err().to_string().contains("already holds a training run"));
    fresh.config.overwrite = true;
    fresh.fit().unwrap();
    let records = read_jsonl(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(records[0]["event"], "start");
    assert_eq!(records.iter().filter(|r| r["event"] == "start").count(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn char_lm_micro_batches_must_cover_grad_accum() {
    let dir = temp_dir("micro-batches");
    let mut t = gpt_trainer(4, dir.clone());
    t.config.grad_accum = 2; // the task still says micro_batches 1: step s micro 1 would be step s+1 micro 0
    let msg = t.fit().unwrap_err().to_string();
    assert!(
        msg.contains("CharLanguageModel") && msg.contains("micro_batches is 1") && msg.contains("set micro_batches to the trainer's grad_accum"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn drop_last_with_a_batch_multiple_makes_epochs_whole_steps() {
    let (train, _) = digits::load_images().unwrap();
    let n = train.len();
    let (batch, multiple) = (32, 4);
    let whole = n / batch;
    assert_ne!(whole % multiple, 0, "pick a multiple that drops something ({n} examples)");
    let cfg = LoaderConfig::train(batch, 0).with_drop_last(true).with_batch_multiple(multiple);
    let mut l = DataLoader::new(train.clone(), cfg.clone()).unwrap();
    assert_eq!(l.num_batches(), whole - whole % multiple);
    let sizes: Vec<usize> = l.epoch().map(|b| b.unwrap().len()).collect();
    assert_eq!(sizes, vec![batch; whole - whole % multiple]);
    // A resumed loader keeps the rule.
    let mut r = DataLoader::new(train.clone(), cfg.clone().with_prefetch(0)).unwrap();
    r.set_state(tamer::data::LoaderState {
        seed: 9,
        epoch: 1,
        position: 2,
    })
    .unwrap();
    assert_eq!(r.epoch().count(), whole - whole % multiple - 2);
    // Without drop_last the multiple changes nothing.
    let l = DataLoader::new(train.clone(), LoaderConfig::train(batch, 0).with_batch_multiple(multiple)).unwrap();
    assert_eq!(l.num_batches(), n.div_ceil(batch));
    let e = DataLoader::new(train.clone(), cfg.with_batch_multiple(whole + 1)).err().unwrap().to_string();
    assert!(e.contains(&format!("no {} batches of 32", whole + 1)), "{e}");
    assert!(DataLoader::new(train, LoaderConfig::train(batch, 0).with_batch_multiple(0)).is_err());
}

#[test]
fn inverse_sqrt_flag_schedule_trains_from_step_0() {
    let s = run::inverse_sqrt(1e-3, 100).unwrap();
    assert_eq!(s.lr_at(0), 1e-3 / 101.0);
    assert!((1..=100).all(|k| s.lr_at(k) > s.lr_at(k - 1)), "the warmup must rise to the peak");
    assert!((s.lr_at(100) - 1e-3).abs() < 1e-18);
    assert!((s.lr_at(400) - 5e-4).abs() < 1e-18);
    let s = run::inverse_sqrt(1e-3, 0).unwrap();
    assert_eq!((s.lr_at(0), s.lr_at(4)), (1e-3, 5e-4));
}

#[test]
fn both_examples_build_a_schedule_flag_the_same_way() {
    use common::ScheduleKind;
    let describe = |kind, warmup| run::schedule(kind, 1e-3, 1e-4, warmup, 10).unwrap().describe();
    assert_eq!(describe(ScheduleKind::Cosine, 2), "warmup_cosine(peak=0.001, warmup=2, decay=10, min=0.0001)");
    assert_eq!(describe(ScheduleKind::Linear, 2), "warmup_linear(peak=0.001, warmup=2, total=10, final=0.0001)");
    assert_eq!(describe(ScheduleKind::Constant, 0), "constant(lr=0.001)");
    assert_eq!(describe(ScheduleKind::Constant, 3), "warmup_linear(peak=0.001, warmup=3, total=3, final=0.001)");
    assert!(describe(ScheduleKind::Onecycle, 2).starts_with("one_cycle(max_lr=0.001, total=10,"));
    assert_eq!(describe(ScheduleKind::InverseSqrt, 4), "inverse_sqrt(peak=0.001, warmup=4, init=0.0002)");
    // Each example's --schedule takes every kind.
    for kind in ["cosine", "linear", "constant", "onecycle", "inverse-sqrt"] {
        assert!(vit_args::VitArgs::try_parse_from(["train_vit", "--schedule", kind]).is_ok(), "{kind}");
        assert!(
            gpt_args::GptArgs::try_parse_from(["train_gpt", "--text", "t", "--schedule", kind]).is_ok(),
            "{kind}"
        );
    }
}

#[test]
fn gpt_weight_decay_covers_every_matrix_and_the_embeddings() {
    let cfg = GptConfig {
        vocab_size: 11,
        block_size: 8,
        n_layer: 1,
        n_head: 2,
        n_embd: 8,
        dropout: 0.0,
        bias: true,
        tie_weights: true,
    };
    let model = Gpt::new(cfg, &mut rng(0)).unwrap();
    let groups = split_param_groups(model.named_params(), 0.1, &gpt_args::decay_rule());
    assert_eq!((groups[0].weight_decay, groups[1].weight_decay), (0.1, 0.0));
    let decayed: Vec<&str> = groups[0].params.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        decayed.contains(&"transformer.wte.weight") && decayed.contains(&"transformer.wpe.weight"),
        "{decayed:?}"
    );
    assert!(groups[0].params.iter().all(|(_, p)| p.dims().len() >= 2));
    assert!(groups[1].params.iter().all(|(_, p)| p.dims().len() < 2));
    let help = gpt_args::GptArgs::try_parse_from(["train_gpt", "--help"]).unwrap_err().to_string();
    assert!(help.contains("embeddings (so the tied lm_head too)"), "{help}");
}

/// The examples' profile goes to `TAMER_PROFILE_OUT` when it is set (and not
/// empty), else into the run directory, else nowhere.
#[test]
fn the_profile_goes_to_the_variable_or_the_run_directory() {
    use std::path::Path;
    let dir = Path::new("runs/x");
    assert_eq!(run::profile_path(Some(dir), None), Some(dir.join("profile.json")));
    assert_eq!(run::profile_path(Some(dir), Some("".into())), Some(dir.join("profile.json")));
    assert_eq!(run::profile_path(Some(dir), Some("p.json".into())), Some(PathBuf::from("p.json")));
    assert_eq!(run::profile_path(None, Some("p.json".into())), Some(PathBuf::from("p.json")));
    assert_eq!(run::profile_path(None, None), None);
}

#[test]
fn zero1_in_one_process_trains_exactly_as_without() {
    // ZeRO-1 over a world of one: the same losses, parameters and
    // checkpointed optimizer state, bit for bit.
    let (plain_dir, zero_dir) = (temp_dir("zero1-plain"), temp_dir("zero1-sharded"));
    let mut plain = vit_trainer(6, Some(plain_dir.clone()), 2e-3, 1);
    let mut zero = vit_trainer(6, Some(zero_dir.clone()), 2e-3, 1);
    zero.config.zero1 = true;
    let (a, b) = (plain.fit().unwrap(), zero.fit().unwrap());
    assert!(zero.optimizer.zero1().is_some() && plain.optimizer.zero1().is_none());
    assert_eq!(bits(&a.losses), bits(&b.losses));
    assert_eq!(params_of(&plain.task.model), params_of(&zero.task.model));
    let optim = |dir: &PathBuf| {
        let file = TrainCheckpoint::read(&dir.join(CHECKPOINT_FILE)).unwrap().file;
        let meta: Vec<(String, String)> = file.metadata.into_iter().filter(|(k, _)| k.starts_with("optim.")).collect();
        let tensors: Vec<(String, Vec<f64>)> = file
            .tensors
            .into_iter()
            .filter(|(n, _)| n.starts_with("optim."))
            .map(|(n, t)| (n, t.to_f64_vec().unwrap()))
            .collect();
        (meta, tensors)
    };
    let (plain_state, zero_state) = (optim(&plain_dir), optim(&zero_dir));
    assert!(plain_state.1.len() > 10, "the checkpoint holds the AdamW state");
    assert_eq!(plain_state, zero_state);
    let start = std::fs::read_to_string(zero_dir.join(METRICS_FILE)).unwrap();
    assert!(start.contains("\"zero1_state_bytes_per_rank\""), "the start record reports the state's size");
    let mut refused = vit_trainer(6, None, 2e-3, 1);
    refused.config.zero1 = true;
    refused.config.diagnostics_every = Some(2);
    let e = refused.fit().unwrap_err();
    assert!(e.message.contains("diagnostics_every"), "{e}");
    let _ = std::fs::remove_dir_all(plain_dir);
    let _ = std::fs::remove_dir_all(zero_dir);
}
