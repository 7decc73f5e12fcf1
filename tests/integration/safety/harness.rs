//! Small trainers and scratch directories for the tests of this binary.

use std::path::PathBuf;
use tamer::data::{digits, DataLoader, ImageDataset, LoaderConfig, Normalization};
use tamer::models::{Pool, VisionTransformer, VitConfig};
use tamer::nn::Module;
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::optim::{Adam, AdamConfig, LrSchedule, Optimizer, Scheduler, WarmupCosine};
use tamer::rng;
use tamer::train::{ImageClassification, Progress, TrainConfig, Trainer};

pub type VitTrainer = Trainer<ImageClassification<VisionTransformer>>;

/// A fresh, empty directory under the system's temp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tamer-safety-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What a test may vary about the small digits ViT run.
pub struct Setup {
    pub total_steps: u64,
    pub out: Option<PathBuf>,
    pub seed: u64,
    pub loader_seed: u64,
    pub optimizer: AdamConfig,
    pub schedule: Box<dyn LrSchedule>,
    pub train: ImageDataset,
    pub config: VitConfig,
}

impl Setup {
    pub fn new(total_steps: u64, out: Option<PathBuf>) -> Setup {
        Setup {
            total_steps,
            out,
            seed: 11,
            loader_seed: 5,
            optimizer: AdamConfig::adamw(1e-3).weight_decay(0.05),
            schedule: Box::new(WarmupCosine::new(1e-3, 2, total_steps, 1e-5).unwrap()),
            train: digits::load_images().unwrap().0,
            config: VitConfig {
                pool: Pool::Mean,
                ..VitConfig::new((8, 8), 2, 1, 10, 16, 1, 2, 2.0)
            },
        }
    }

    pub fn build(self) -> VitTrainer {
        let test = digits::load_images().unwrap().1;
        let model = VisionTransformer::new(self.config, &mut rng(3)).unwrap();
        let opt: Box<dyn Optimizer> = Box::new(Adam::new(model.named_params(), self.optimizer).unwrap());
        let loader = DataLoader::new(
            self.train,
            LoaderConfig::train(64, self.loader_seed).with_normalization(Normalization::FromData),
        )
        .unwrap();
        let task = ImageClassification::new(model, loader, test, 512, CrossEntropyOptions::default()).unwrap();
        let config = TrainConfig {
            total_steps: self.total_steps,
            log_every: 2,
            eval_every: Some(4),
            checkpoint_every: Some(2),
            out_dir: self.out,
            seed: self.seed,
            print: false,
            progress: Progress::Never,
            ..TrainConfig::default()
        };
        Trainer::new(config, task, opt, Scheduler::from_box(self.schedule)).unwrap()
    }
}

/// The standard small run.
pub fn vit_trainer(total_steps: u64, out: Option<PathBuf>) -> VitTrainer {
    Setup::new(total_steps, out).build()
}

/// Every file in `dir` with its bytes, sorted by name.
pub fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}
