//! A resume checks everything it restores or depends on, and names every
//! difference: optimizer settings (β₁ included), parameter groups, the data
//! stream (seed, data set, position), and the model configuration field by field.

use super::harness::{scratch, vit_trainer, Setup, VitTrainer};
use tamer::checkpoint::{self, model_metadata, MODEL_CONFIG_KEY};
use tamer::data::digits;
use tamer::optim::{AdamConfig, OneCycle, WarmupCosine};
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

    // A checkpoint whose model_config still has the block's copies of num_heads,
    // mlp_ratio and norm_eps (as tamer wrote them before) resumes: they never had an effect.
    let path = dir.join(CHECKPOINT_FILE);
    let mut ckpt = checkpoint::read(&path).unwrap();
    let mut legacy: serde_json::Value = serde_json::from_str(&ckpt.metadata[MODEL_CONFIG_KEY]).unwrap();
    let block = legacy["block"].as_object_mut().unwrap();
    block.insert("n_head".into(), 1.into());
    block.insert("mlp_ratio".into(), 4.0.into());
    block.insert("norm_eps".into(), 1e-6.into());
    ckpt.metadata.insert(MODEL_CONFIG_KEY.into(), legacy.to_string());
    checkpoint::save_with_metadata(&path, &ckpt.tensors, &ckpt.metadata).unwrap();
    let mut setup = Setup::new(4, None);
    with_config(2, 1e-6)(&mut setup);
    let mut current = setup.build();
    tag(&mut current);
    current.resume(&path).unwrap();
    assert_eq!(current.step, 2);

    // A checkpoint from before model_config was stored resumes, with a note saying what was not checked.
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

#[test]
fn metadata_the_run_lacks_clipping_and_schedule_fields_are_named() {
    let dir = stopped_run("both-directions", |_| {});
    // Written with a model_config and a recipe the resuming run does not have.
    let path = dir.join(CHECKPOINT_FILE);
    let mut ckpt = checkpoint::read(&path).unwrap();
    let cfg = Setup::new(4, None).config.to_json();
    ckpt.metadata.extend(model_metadata(&cfg, None));
    ckpt.metadata.insert("recipe".into(), r#"{"label_smoothing":0.1,"mixup":0.0}"#.into());
    checkpoint::save_with_metadata(&path, &ckpt.tensors, &ckpt.metadata).unwrap();
    let msg = resume_error(&mut vit_trainer(4, None), &dir);
    assert!(
        msg.contains("model_config: {\"architecture\":\"vit\"") && msg.contains("in the checkpoint, none in this run"),
        "{msg}"
    );
    assert!(msg.contains("recipe: {\"label_smoothing\":0.1"), "{msg}");
    assert!(msg.contains("2 difference"), "{msg}");
    // The same metadata with another value is named field by field.
    let mut t = vit_trainer(4, None);
    t.config.metadata.extend(model_metadata(&cfg, None));
    t.config.metadata.insert("recipe".into(), r#"{"label_smoothing":0.0,"mixup":0.0}"#.into());
    let msg = resume_error(&mut t, &dir);
    assert!(msg.contains("recipe.label_smoothing: 0.1 in the checkpoint, 0.0 in this run"), "{msg}");
    assert!(msg.contains("1 difference"), "{msg}");

    // Gradient clipping is stored and compared.
    let dir = stopped_run("clip", |_| {});
    let mut t = vit_trainer(4, None);
    t.config.clip = Some(0.5);
    let msg = resume_error(&mut t, &dir);
    assert!(msg.contains("clip: 1 in the checkpoint, 0.5 in this run"), "{msg}");
    let mut t = vit_trainer(4, None);
    t.config.clip = None;
    let msg = resume_error(&mut t, &dir);
    assert!(msg.contains("clip: 1 in the checkpoint, none in this run"), "{msg}");

    // Another schedule: the fields that differ, not two whole descriptions.
    let mut setup = Setup::new(4, None);
    setup.schedule = Box::new(WarmupCosine::new(1e-3, 3, 4, 1e-5).unwrap());
    let msg = resume_error(&mut setup.build(), &dir);
    assert!(msg.contains("schedule warmup: 2 in the checkpoint, 3 in this run"), "{msg}");
    assert!(!msg.contains("warmup_cosine("), "{msg}");
    let mut setup = Setup::new(4, None);
    setup.schedule = Box::new(OneCycle::new(1e-3, 4).unwrap());
    let msg = resume_error(&mut setup.build(), &dir);
    assert!(msg.contains("schedule: warmup_cosine in the checkpoint, one_cycle in this run"), "{msg}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Every parameter and buffer of the trainer's model, as f64 values.
fn model_values(t: &VitTrainer) -> Vec<(String, Vec<f64>)> {
    checkpoint::module_tensors(&t.task.model)
        .into_iter()
        .map(|(n, v)| (n, v.to_f64_vec().unwrap()))
        .collect()
}

#[test]
fn a_resume_that_fails_while_restoring_changes_nothing() {
    let dir = stopped_run("all-or-nothing", |_| {});
    let path = dir.join(CHECKPOINT_FILE);
    let good = std::fs::read(&path).unwrap();
    let damage = |edit: &dyn Fn(&mut tamer::checkpoint::Checkpoint)| {
        let mut ckpt = checkpoint::deserialize(&good, "c").unwrap();
        edit(&mut ckpt);
        checkpoint::save_with_metadata(&path, &ckpt.tensors, &ckpt.metadata).unwrap();
    };
    let optimizer_tensor = |ckpt: &tamer::checkpoint::Checkpoint| ckpt.names().into_iter().find(|n| n.ends_with(".exp_avg")).unwrap().to_string();
    // The settings agree, but an optimizer state tensor has the wrong shape: found after
    // the model's tensors, which must not have been loaded.
    damage(&|ckpt| {
        let name = optimizer_tensor(ckpt);
        ckpt.remove(&name).unwrap();
        ckpt.tensors.push((name, tamer::Tensor::zeros([3], tamer::DType::F32).unwrap()));
    });
    let mut t = vit_trainer(4, None);
    let before = model_values(&t);
    let msg = resume_error(&mut t, &dir);
    assert!(msg.contains("exp_avg"), "{msg}");
    assert!(model_values(&t) == before, "the model was replaced by a refused checkpoint's");
    assert_eq!(t.scheduler.step(), 0);

    // A model tensor of the wrong shape, found after the optimizer state: that is put back.
    damage(&|ckpt| {
        ckpt.remove("head.bias").unwrap();
        ckpt.tensors.push(("head.bias".into(), tamer::Tensor::zeros([3], tamer::DType::F32).unwrap()));
    });
    let mut t = vit_trainer(4, None);
    let (before, optim_before) = (model_values(&t), t.optimizer.state_dict().unwrap());
    let msg = resume_error(&mut t, &dir);
    assert!(msg.contains("head.bias"), "{msg}");
    assert!(model_values(&t) == before);
    let optim_after = t.optimizer.state_dict().unwrap();
    assert_eq!(optim_after.metadata, optim_before.metadata, "the optimizer kept the refused checkpoint's state");
    assert!(optim_after.tensors.is_empty(), "a fresh optimizer has no moments yet");
    assert_eq!(t.scheduler.step(), 0);
    // The trainer is still good for a fresh run: the same losses as another fresh one.
    let mut other = vit_trainer(4, None);
    other.config.stop_at = Some(2);
    let fresh = other.fit().unwrap().losses;
    t.config.stop_at = Some(2);
    assert_eq!(&t.fit().unwrap().losses[..], &fresh[..]);
    let _ = std::fs::remove_dir_all(dir);
}
