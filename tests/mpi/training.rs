//! Data-parallel training is one process's training with the same global
//! batch: the digits ViT, 20 steps of AdamW with clipping, on every rank
//! with batches of 16, against one process with batches of 16 × world (run
//! in this same process, over a world of one). Same losses and final
//! parameters, f64 to 1e-10 and f32 to 1e-5 (the ranks' mean of per-rank
//! means rounds differently from one mean over the global batch); the ranks'
//! final parameters are bit-identical.

use crate::Failures;
use std::sync::Mutex;
use tamer::data::{digits, DataLoader, LoaderConfig};
use tamer::dist::ProcessGroup;
use tamer::models::{Pool, VisionTransformer, VitConfig};
use tamer::nn::{Module, Param};
use tamer::optim::{Adam, AdamConfig, Scheduler, WarmupCosine};
use tamer::train::{Classifier, ImageClassification, Progress, Reseed, TrainConfig, Trainer};
use tamer::{CrossEntropyOptions, DType, Tensor, TensorRng};

const STEPS: u64 = 20;
const RANK_BATCH: usize = 16;

/// The ViT in a float type of choice, fed images converted to it.
struct Vit(VisionTransformer);

impl Module for Vit {
    fn named_params(&self) -> Vec<(String, Param)> {
        self.0.named_params()
    }
    fn named_buffers(&self) -> Vec<(String, Param)> {
        self.0.named_buffers()
    }
    fn no_weight_decay(&self) -> Vec<String> {
        self.0.no_weight_decay()
    }
    fn set_training(&mut self, training: bool) {
        self.0.set_training(training)
    }
}
impl Reseed for Vit {
    fn collect_rngs<'a>(&'a self, out: &mut Vec<&'a Mutex<TensorRng>>) {
        self.0.collect_rngs(out)
    }
}
impl Classifier for Vit {
    fn logits(&self, x: &Tensor) -> tamer::Result<Tensor> {
        let dtype = self.0.named_params()[0].1.tensor().dtype();
        self.0.forward(&x.to_dtype(dtype)?)
    }
    fn is_training(&self) -> bool {
        self.0.is_training()
    }
}

/// Losses and final parameters (as f64) of a run over `pg` with `batch` examples per rank.
fn train(pg: ProcessGroup, dtype: DType, batch: usize) -> tamer::Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let (train, test) = digits::load_images()?;
    let cfg = VitConfig {
        pool: Pool::Mean,
        ..VitConfig::new((8, 8), 4, 1, 10, 16, 2, 2, 2.0)
    };
    let vit = VisionTransformer::new(cfg, &mut tamer::rng(7))?;
    vit.to_dtype(dtype)?;
    let model = Vit(vit);
    let opt = Adam::new(model.named_params(), AdamConfig::adamw(3e-3).weight_decay(0.05))?;
    let loader = DataLoader::new(train, LoaderConfig::train(batch, 3).with_prefetch(0))?;
    let test = test.subset(&(0..64).collect::<Vec<_>>())?;
    let task = ImageClassification::new(model, loader, test, 64, CrossEntropyOptions::default())?;
    let config = TrainConfig {
        total_steps: STEPS,
        clip: Some(0.5),
        print: false,
        progress: Progress::Never,
        ..TrainConfig::default()
    };
    let sched = Scheduler::new(WarmupCosine::new(3e-3, 3, STEPS, 0.0)?);
    let mut trainer = Trainer::new(config, task, Box::new(opt), sched)?.with_process_group(pg)?;
    let summary = trainer.fit()?;
    let params = trainer
        .task
        .model
        .named_params()
        .iter()
        .map(|(_, p)| p.tensor().to_f64_vec())
        .collect::<tamer::Result<_>>()?;
    Ok((summary.losses, params))
}

pub fn run(pg: &ProcessGroup, f: &mut Failures) {
    let world = pg.world_size();
    for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-5)] {
        let Some((losses, params)) = f.ok("data-parallel run", train(pg.clone(), dtype, RANK_BATCH)) else {
            continue;
        };
        let Some((ref_losses, ref_params)) = f.ok("one-process run", train(ProcessGroup::single(), dtype, RANK_BATCH * world)) else {
            continue;
        };
        f.check(losses.len() == STEPS as usize, || format!("{dtype}: {} losses", losses.len()));
        let loss_err = losses.iter().zip(&ref_losses).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        f.check(loss_err <= tol, || {
            format!("{dtype}: losses differ by {loss_err:e} (tolerance {tol:e}): {losses:?} vs {ref_losses:?}")
        });
        let param_err = params
            .iter()
            .zip(&ref_params)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0.0, f64::max);
        f.check(param_err <= tol, || {
            format!("{dtype}: final parameters differ by {param_err:e} (tolerance {tol:e})")
        });
        // The parameters moved (the comparison is not of two untrained models).
        let first = losses.first().copied().unwrap_or(0.0);
        let last = losses.last().copied().unwrap_or(0.0);
        f.check(last < first, || format!("{dtype}: loss went from {first} to {last}"));
        // Every rank holds the same parameters, bit for bit.
        let flat: Vec<f64> = params.concat();
        if let Some(all) = f.ok(
            "all_gather of parameters",
            pg.all_gather(&Tensor::from_vec(flat.clone(), [flat.len()]).unwrap()),
        ) {
            let all = all.to_vec::<f64>().unwrap();
            let same = all.chunks(flat.len()).all(|c| c.iter().zip(&flat).all(|(a, b)| a.to_bits() == b.to_bits()));
            f.check(same, || format!("{dtype}: the ranks' final parameters differ"));
        }
        if pg.is_root() {
            println!("{dtype}: {STEPS} steps on {world} ranks of batch {RANK_BATCH} vs one of {}: loss diff {loss_err:.1e}, parameter diff {param_err:.1e}, loss {first:.4} -> {last:.4}", RANK_BATCH * world);
        }
    }
}
