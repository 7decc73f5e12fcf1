//! Checkpoints record the ranks that wrote them: the world size and the
//! global batch round-trip, files written before they were stored load as a
//! world of one, and a resume with another global batch is refused with both
//! layouts named. (Resuming on another number of ranks for real is in
//! tests/mpi, which runs under mpirun.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tamer::data::{digits, DataLoader, LoaderConfig};
use tamer::models::{Pool, VisionTransformer, VitConfig};
use tamer::nn::Module;
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::optim::{Adam, AdamConfig, Scheduler, WarmupCosine};
use tamer::train::{batch_layout_difference, ImageClassification, Progress, TrainCheckpoint, TrainConfig, Trainer, CHECKPOINT_FILE};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tamer-world-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn trainer(batch: usize, out: Option<PathBuf>) -> Trainer<ImageClassification<VisionTransformer>> {
    let (train, test) = digits::load_images().unwrap();
    let cfg = VitConfig {
        pool: Pool::Mean,
        ..VitConfig::new((8, 8), 4, 1, 10, 16, 1, 2, 2.0)
    };
    let model = VisionTransformer::new(cfg, &mut tamer::rng(1)).unwrap();
    let opt = Adam::new(model.named_params(), AdamConfig::adamw(1e-3)).unwrap();
    let loader = DataLoader::new(train, LoaderConfig::train(batch, 2).with_drop_last(true).with_prefetch(0)).unwrap();
    let test = test.subset(&(0..32).collect::<Vec<_>>()).unwrap();
    let task = ImageClassification::new(model, loader, test, 32, CrossEntropyOptions::default()).unwrap();
    let config = TrainConfig {
        total_steps: 4,
        out_dir: out,
        print: false,
        progress: Progress::Never,
        ..TrainConfig::default()
    };
    Trainer::new(config, task, Box::new(opt), Scheduler::new(WarmupCosine::new(1e-3, 1, 4, 0.0).unwrap())).unwrap()
}

/// Rewrite the checkpoint at `path` with its metadata changed by `edit`.
fn edit_metadata(path: &Path, edit: impl FnOnce(&mut BTreeMap<String, String>)) {
    let file = tamer::checkpoint::read(path).unwrap();
    let mut metadata = file.metadata.clone();
    edit(&mut metadata);
    tamer::checkpoint::save_with_metadata(path, &file.tensors, &metadata).unwrap();
}

/// A fresh run directory `name` holding the checkpoint of 2 steps at a batch
/// of 16 in one process: the directory and the checkpoint's path.
fn checkpoint_after_two_steps(name: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(name);
    let mut t = trainer(16, Some(dir.clone()));
    t.config.stop_at = Some(2);
    t.fit().unwrap();
    let path = dir.join(CHECKPOINT_FILE);
    (dir, path)
}

#[test]
fn checkpoints_record_the_world_size_and_global_batch_and_older_files_are_one_process() {
    let (dir, path) = checkpoint_after_two_steps("fields");
    let ckpt = TrainCheckpoint::read(&path).unwrap();
    assert_eq!((ckpt.world_size, ckpt.global_batch_size, ckpt.micro_batch_size), (1, Some(16), Some(16)));
    assert_eq!(ckpt.file.metadata["world_size"], "1");
    assert_eq!(ckpt.file.metadata["global_batch_size"], "16");
    // Written before the fields existed: one process, and it still resumes.
    edit_metadata(&path, |m| {
        m.remove("world_size");
        m.remove("global_batch_size");
    });
    let old = TrainCheckpoint::read(&path).unwrap();
    assert_eq!((old.world_size, old.global_batch_size), (1, None));
    let mut resumed = trainer(16, Some(dir.clone()));
    resumed.resume(&path).unwrap();
    assert_eq!(resumed.step, 2);
    assert_eq!(resumed.fit().unwrap().steps, 4);
    // A world size of 0 is no world.
    edit_metadata(&path, |m| {
        m.insert("world_size".into(), "0".into());
    });
    let msg = TrainCheckpoint::read(&path).unwrap_err().to_string();
    assert!(msg.contains("'world_size' is 0"), "{msg}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_resume_on_another_world_size_keeps_the_global_batch_or_names_both_layouts() {
    let (dir, path) = checkpoint_after_two_steps("refuse");
    // As if 2 ranks of 16 had written it: a global batch of 32, which this run of 16 is not.
    edit_metadata(&path, |m| {
        m.insert("world_size".into(), "2".into());
        m.insert("global_batch_size".into(), "32".into());
    });
    let mut other = trainer(16, None);
    let msg = other.resume(&path).unwrap_err().to_string();
    assert!(msg.contains("world size and batch"), "{msg}");
    assert!(msg.contains("2 rank(s) × 16 = global batch 32"), "{msg}");
    assert!(msg.contains("1 rank(s) × 16 = global batch 16"), "{msg}");
    assert!(msg.contains("micro-batches of 32"), "{msg}");
    assert_eq!(other.step, 0, "nothing changes when a resume is refused");
    let _ = std::fs::remove_dir_all(dir);

    // The rule itself, both ways and when the global batch does not split.
    assert_eq!(batch_layout_difference(16, 2, 32, 1), None);
    assert_eq!(batch_layout_difference(32, 1, 8, 4), None);
    assert_eq!(batch_layout_difference(8, 2, 8, 2), None);
    let same_world = batch_layout_difference(8, 2, 4, 2).unwrap();
    assert_eq!(same_world, "micro-batch size: 8 in the checkpoint, 4 in this run");
    let uneven = batch_layout_difference(16, 2, 10, 3).unwrap();
    assert!(uneven.contains("a global batch of 32 does not split evenly over 3 ranks"), "{uneven}");
}
