//! A resume checks everything it restores or depends on, and names every
//! difference: optimizer settings (β₁ included), parameter groups, the data
//! stream (seed, data set, position), and the model configuration field by field.

use super::harness::{scratch, vit_trainer, Setup, VitTrainer};
use tamer::checkpoint::{self, model_metadata, MODEL_CONFIG_KEY};
use tamer::data::digits;
use tamer::optim::{AdamConfig, OneCycle};
use tamer::train::{TrainCheckpoint, CHECKPOINT_FILE};

/// A run stopped at step 2 of 4 in a fresh directory, with `edit` applied to its setup.
fn stopped_run(name: &str, edit: impl FnOnce(&mut Setup)) -> std::path::PathBuf {
    let dir = scratch(name);
    let mut setup = Setup::new(4, Some(dir.clone()));
    edit(&mut setup);
    let mut t = setup.build();
    t.config.stop_at = Some(2);
    t.fit().unwrap();
    dir
}

fn resume_error(t: &mut VitTrainer, dir: &std::path::Path) -> String {
    let before = std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap();
    let msg = t.resume(dir.join(CHECKPOINT_FILE)).unwrap_err().to_string();
    assert_eq!(t.step, 0, "a refused resume changed the trainer");
    assert!(std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap() == before);
    msg
}

#[test]
fn another_beta1_or_weight_decay_is_named() {
    let dir = stopped_run("beta1", |_| {});
    let mut setup = Setup::new(4, None);
    setup.optimizer = AdamConfig::adamw(1e-3).betas(0.8, 0.999).weight_decay(0.05);
    let msg = resume_error(&mut setup.build(), &dir);
    assert!(msg.contains("optimizer beta1: 0.9 in the checkpoint, 0.8 in this run"), "{msg}");
    assert!(msg.contains("1 difference"), "{msg}");

    let mut setup = Setup::new(4, None);
    setup.optimizer = AdamConfig::adamw(1e-3).weight_decay(0.1).betas(0.9, 0.99);
    let msg = resume_error(&mut setup.build(), &dir);
    assert!(msg.contains("optimizer beta2: 0.999 in the checkpoint, 0.99 in this run"), "{msg}");
    assert!(msg.contains("param_groups[0].weight_decay: 0.05 in the checkpoint, 0.1 in this run"), "{msg}");
    assert!(msg.contains("2 difference"), "{msg}");

    let mut setup = Setup::new(4, None);
    setup.optimizer = AdamConfig::adam(1e-3).weight_decay(0.05);
    let msg = resume_error(&mut setup.build(), &dir);
    assert!(msg.contains("optimizer: adamw in the checkpoint, adam in this run"), "{msg}");

    // The same settings resume.
    let mut same = vit_trainer(4, None);
    same.resume(dir.join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(same.step, 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_schedule_that_cycles_momentum_owns_beta1() {
    // OneCycle sets β₁ every step: the saved β₁ is the schedule's, not a setting.
    let with_onecycle = |s: &mut Setup| s.schedule = Box::new(OneCycle::new(1e-3, 4).unwrap());
    let dir = stopped_run("onecycle", with_onecycle);
    let mut setup = Setup::new(4, None);
    with_onecycle(&mut setup);
    let mut t = setup.build();
    t.resume(dir.join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(t.step, 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn another_data_stream_is_named() {
    let dir = stopped_run("data", |_| {});
    let mut setup = Setup::new(4, None);
    setup.loader_seed = 6;
    let msg = resume_error(&mut setup.build(), &dir);
    assert!(msg.contains("data seed: 5 in the checkpoint, 6 in this run"), "{msg}");

    let mut setup = Setup::new(4, None);
    let (train, _) = digits::load_images().unwrap();
    setup.train = train.split_at(1000).unwrap().0;
    let msg = resume_error(&mut setup.build(), &dir);
    assert!(msg.contains("training examples: 1442 in the checkpoint, 1000 in this run"), "{msg}");
    assert!(msg.contains("batches per epoch: 23 in the checkpoint, 16 in this run"), "{msg}");

    // A position outside what this run's epochs give for the step (a doctored file).
    let path = dir.join(CHECKPOINT_FILE);
    let mut ckpt = checkpoint::read(&path).unwrap();
    let data = ckpt.metadata["data"].replace("\"epoch\":0", "\"epoch\":7");
    ckpt.metadata.insert("data".into(), data);
    checkpoint::save_with_metadata(&path, &ckpt.tensors, &ckpt.metadata).unwrap();
    let msg = resume_error(&mut vit_trainer(4, None), &dir);
    assert!(
        msg.contains("data position: the checkpoint's loader is at epoch 7, batch 2") && msg.contains("is epoch 0, batch 2"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn another_model_config_is_named_field_by_field() {
    let with_config = |heads: usize, eps: f64| {
        move |s: &mut Setup| {
            s.config.num_heads = heads;
            s.config.norm_eps = eps;
        }
    };
    let tag = |t: &mut VitTrainer| {
        let cfg = t.task.model.config.to_json();
        t.config.metadata.extend(model_metadata(&cfg, None));
    };
    let dir = scratch("model-config");
    let mut setup = Setup::new(4, Some(dir.clone()));
    with_config(2, 1e-6)(&mut setup);
    let mut first = setup.build();
    tag(&mut first);
    first.config.stop_at = Some(2);
    first.fit().unwrap();

    let mut setup = Setup::new(4, None);
    with_config(4, 1e-5)(&mut setup);
    let mut other = setup.build();
    tag(&mut other);
    let msg = resume_error(&mut other, &dir);
    assert!(msg.contains("model_config.num_heads: 2 in the checkpoint, 4 in this run"), "{msg}");
    assert!(msg.contains("model_config.norm_eps: 1e-6 in the checkpoint, 0.00001 in this run"), "{msg}");
    // Two named fields, not two truncated strings.
    assert!(!msg.contains('…'), "{msg}");

    // A checkpoint from before model_config was stored resumes, with a note saying what was not checked.
    let path = dir.join(CHECKPOINT_FILE);
    let mut ckpt = checkpoint::read(&path).unwrap();
    ckpt.metadata.remove(MODEL_CONFIG_KEY);
    checkpoint::save_with_metadata(&path, &ckpt.tensors, &ckpt.metadata).unwrap();
    let mut setup = Setup::new(4, None);
    with_config(2, 1e-6)(&mut setup);
    let mut old = setup.build();
    tag(&mut old);
    let notes = old.resume(&path).unwrap();
    assert!(notes.iter().any(|n| n.contains("no model_config metadata")), "{notes:?}");
    assert_eq!(TrainCheckpoint::read(&path).unwrap().step, 2);
    let _ = std::fs::remove_dir_all(dir);
}
