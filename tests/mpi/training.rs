//! Data-parallel training is one process's training with the same global
//! batch: the digits ViT (batches of 16 per rank) and gpt-tiny's shape on a
//! small text (4 windows of 64 per rank), 20 steps of AdamW with clipping,
//! against one process with batches world times larger (run in this same
//! process, over a world of one). Same losses and final
//! parameters, f64 to 1e-10 and f32 to 1e-5 (the ranks' mean of per-rank
//! means rounds differently from one mean over the global batch); the ranks'
//! final parameters are bit-identical.

use crate::Failures;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tamer::data::{digits, CharDataset, DataLoader, LoaderConfig};
use tamer::dist::ProcessGroup;
use tamer::models::{Gpt, GptConfig, Pool, VisionTransformer, VitConfig};
use tamer::nn::{Module, Param};
use tamer::optim::{Adam, AdamConfig, Scheduler, WarmupCosine};
use tamer::train::{CharLanguageModel, Classifier, ImageClassification, Progress, Reseed, TrainConfig, Trainer};
use tamer::{CrossEntropyOptions, DType, Tensor, TensorRng};

pub const STEPS: u64 = 20;
pub const RANK_BATCH: usize = 16;
pub const GPT_RANK_BATCH: usize = 4;

/// The ViT in a float type of choice, fed images converted to it; it may be
/// told to fail at its n-th forward pass ([`Fail`]).
pub struct Vit(VisionTransformer, Option<Fail>);

/// How a rank fails, for the tests that a failing rank stops the job
/// (`failure.rs`): at forward pass `at` (1-based; one per training step).
pub struct Fail {
    pub at: usize,
    pub how: How,
    pub calls: AtomicUsize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum How {
    /// SIGKILL this process (as the kernel's OOM killer or a lost node would).
    Kill,
    /// Return an error from the step.
    Error,
    /// Panic inside the step.
    Panic,
}

impl Fail {
    fn maybe(&self) -> tamer::Result<()> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 != self.at {
            return Ok(());
        }
        match self.how {
            How::Kill => {
                eprintln!("test: killing this rank (pid {}) with SIGKILL", std::process::id());
                let _ = std::process::Command::new("kill").args(["-KILL", &std::process::id().to_string()]).status();
                // The signal is on its way.
                std::thread::sleep(std::time::Duration::from_secs(30));
                Err(tamer::Error::value("test", "SIGKILL did not end this process"))
            }
            How::Error => Err(tamer::Error::value("test", format!("a failure planted at forward pass {}", self.at))),
            How::Panic => panic!("a panic planted at forward pass {}", self.at),
        }
    }
}

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
        if let Some(f) = &self.1 {
            f.maybe()?;
        }
        let dtype = self.0.named_params()[0].1.tensor().dtype();
        self.0.forward(&x.to_dtype(dtype)?)
    }
    fn is_training(&self) -> bool {
        self.0.is_training()
    }
}

/// What a run gives: the losses, the final parameters (as f64) and the last evaluation.
pub type Run = (Vec<f64>, Vec<Vec<f64>>, Vec<(String, f64)>);

pub fn config() -> TrainConfig {
    TrainConfig {
        total_steps: STEPS,
        clip: Some(0.5),
        print: false,
        progress: Progress::Never,
        ..TrainConfig::default()
    }
}

/// A trainer of the digits ViT over `pg` with `batch` images per rank.
pub fn vit_trainer(pg: ProcessGroup, dtype: DType, batch: usize, config: TrainConfig) -> tamer::Result<Trainer<ImageClassification<Vit>>> {
    vit_trainer_failing(pg, dtype, batch, config, None)
}

/// [`vit_trainer`], failing as `fail` says.
pub fn vit_trainer_failing(
    pg: ProcessGroup,
    dtype: DType,
    batch: usize,
    config: TrainConfig,
    fail: Option<Fail>,
) -> tamer::Result<Trainer<ImageClassification<Vit>>> {
    let (train, test) = digits::load_images()?;
    let cfg = VitConfig {
        pool: Pool::Mean,
        ..VitConfig::new((8, 8), 4, 1, 10, 16, 2, 2, 2.0)
    };
    let vit = VisionTransformer::new(cfg, &mut tamer::rng(7))?;
    vit.to_dtype(dtype)?;
    let model = Vit(vit, fail);
    let opt = Adam::new(model.named_params(), AdamConfig::adamw(3e-3).weight_decay(0.05))?;
    // Whole batches only, so that an epoch is the same examples on any number
    // of ranks (a checkpoint of 2 ranks resumes on 1: world.rs).
    let loader = DataLoader::new(train, LoaderConfig::train(batch, 3).with_drop_last(true).with_prefetch(0))?;
    let test = test.subset(&(0..64).collect::<Vec<_>>())?;
    let task = ImageClassification::new(model, loader, test, 64, CrossEntropyOptions::default())?;
    let sched = Scheduler::new(WarmupCosine::new(3e-3, 3, config.total_steps, 0.0)?);
    Trainer::new(config, task, Box::new(opt), sched)?.with_process_group(pg)
}

/// A model's parameters, in order, as f64 values.
pub fn params_of(model: &impl Module) -> tamer::Result<Vec<Vec<f64>>> {
    model.named_params().iter().map(|(_, p)| p.tensor().to_f64_vec()).collect()
}

/// The digits ViT over `pg` with `batch` images per rank.
fn train_vit(pg: ProcessGroup, dtype: DType, batch: usize) -> tamer::Result<Run> {
    let mut trainer = vit_trainer(pg, dtype, batch, config())?;
    let summary = trainer.fit()?;
    Ok((summary.losses, params_of(&trainer.task.model)?, summary.eval))
}

/// A trainer of gpt-tiny's shape (4 layers of width 128, no dropout) on a
/// short text, over `pg` with `batch` windows of 64 characters per rank.
pub fn gpt_trainer(pg: ProcessGroup, dtype: DType, batch: usize, config: TrainConfig) -> tamer::Result<Trainer<CharLanguageModel>> {
    gpt_trainer_on(pg, dtype, batch, config, tamer::Device::Cpu)
}

/// [`gpt_trainer`] with the model on `device`.
pub fn gpt_trainer_on(pg: ProcessGroup, dtype: DType, batch: usize, config: TrainConfig, device: tamer::Device) -> tamer::Result<Trainer<CharLanguageModel>> {
    let text = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!\n".repeat(40);
    let data = CharDataset::from_text(&text, "pangrams")?;
    let cfg = GptConfig {
        vocab_size: data.vocab_size(),
        ..GptConfig::gpt_tiny()
    };
    let block_size = cfg.block_size;
    let model = Gpt::new(cfg, &mut tamer::rng(5))?;
    model.to_dtype(dtype)?;
    model.to_device(device)?;
    let opt = Adam::new(model.named_params(), AdamConfig::adamw(3e-3).weight_decay(0.1))?;
    let task = CharLanguageModel {
        model,
        data,
        batch_size: batch,
        block_size,
        micro_batches: 1,
        // Dealt out over the ranks: 2 batches to rank 0, 1 to rank 1.
        eval_iters: 3,
        eval_train: false,
        seed: 11,
        shard: (0, 1),
    };
    let sched = Scheduler::new(WarmupCosine::new(3e-3, 3, config.total_steps, 0.0)?);
    Trainer::new(config, task, Box::new(opt), sched)?.with_process_group(pg)
}

/// One-process runs of gpt-tiny by dtype and batch, kept for the ZeRO-1
/// checks, whose reference they are too.
static GPT_REFERENCES: Mutex<Vec<(DType, usize, Run)>> = Mutex::new(Vec::new());

/// gpt-tiny's shape over `pg` with `batch` windows per rank.
pub fn train_gpt(pg: ProcessGroup, dtype: DType, batch: usize) -> tamer::Result<Run> {
    let single = pg.world_size() == 1;
    let kept = |refs: &Vec<(DType, usize, Run)>| refs.iter().find(|(d, b, _)| (*d, *b) == (dtype, batch)).map(|r| r.2.clone());
    if let Some(run) = kept(&GPT_REFERENCES.lock().unwrap()).filter(|_| single) {
        return Ok(run);
    }
    let mut trainer = gpt_trainer(pg, dtype, batch, config())?;
    let summary = trainer.fit()?;
    let run = (summary.losses, params_of(&trainer.task.model)?, summary.eval);
    if single {
        GPT_REFERENCES.lock().unwrap().push((dtype, batch, run.clone()));
    }
    Ok(run)
}

pub fn run(pg: &ProcessGroup, f: &mut Failures) {
    if let Some(r) = f.ok("checkpoint and resume on 2 ranks", resume_is_exact(pg)) {
        f.check(r.is_empty(), || r.join("; "));
    }
    compare(pg, f, "digits ViT", RANK_BATCH, train_vit, 1e-5);
    // In f32, AdamW divides by √v: a parameter whose gradient is near zero
    // moves by up to the learning rate whichever way rounding tips it, so the
    // one-ulp differences of a mean of rank means grow to about 1e-5 in
    // gpt-tiny's 20 steps (1.03e-5 measured). The f64 runs, to 1e-10, are the
    // check that the algorithm is the same; the f32 losses still agree to 1e-5.
    compare(pg, f, "gpt-tiny", GPT_RANK_BATCH, train_gpt, 5e-5);
}

pub type Train = fn(ProcessGroup, DType, usize) -> tamer::Result<Run>;

/// Run `train` data-parallel and in one process, in f64 (to 1e-10) and f32
/// (losses to 1e-5, parameters to `f32_param_tol`).
pub fn compare(pg: &ProcessGroup, f: &mut Failures, name: &str, rank_batch: usize, train: Train, f32_param_tol: f64) {
    let world = pg.world_size();
    for (dtype, tol, param_tol) in [(DType::F64, 1e-10, 1e-10), (DType::F32, 1e-5, f32_param_tol)] {
        let Some((losses, params, eval)) = f.ok(&format!("{name} {dtype}: data-parallel run"), train(pg.clone(), dtype, rank_batch)) else {
            continue;
        };
        let reference = train(ProcessGroup::single(), dtype, rank_batch * world);
        let Some((ref_losses, ref_params, ref_eval)) = f.ok(&format!("{name} {dtype}: one-process run"), reference) else {
            continue;
        };
        let dtype = format!("{name} {dtype}");
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
        f.check(param_err <= param_tol, || {
            format!("{dtype}: final parameters differ by {param_err:e} (tolerance {param_tol:e})")
        });
        // The evaluation, sharded over the ranks, is the one process's (f32: to
        // the losses' tolerance, as the parameters it runs on differ as much).
        let eval_tol = if tol == 1e-10 { 1e-10 } else { 1e-4 };
        let names = |e: &[(String, f64)]| e.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        f.check(!eval.is_empty() && names(&eval) == names(&ref_eval), || {
            format!("{dtype}: eval metrics {eval:?} vs {ref_eval:?}")
        });
        let eval_err = eval.iter().zip(&ref_eval).map(|((_, a), (_, b))| (a - b).abs()).fold(0.0, f64::max);
        f.check(eval_err <= eval_tol, || {
            format!("{dtype}: sharded evaluation {eval:?} differs from one process's {ref_eval:?} by {eval_err:e}")
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
            println!(
                "{dtype}: {STEPS} steps on {world} ranks of batch {rank_batch} vs one of {}: loss diff {loss_err:.1e}, parameter diff {param_err:.1e}, eval diff {eval_err:.1e}, loss {first:.4} -> {last:.4}",
                rank_batch * world
            );
        }
    }
}

/// Checkpoint on every rank's behalf (rank 0 writes), stop, fit again with
/// nothing to do, resume in new trainers: the same losses and parameters,
/// bit for bit, as an uninterrupted run; rank 0 alone wrote the metrics.
fn resume_is_exact(pg: &ProcessGroup) -> tamer::Result<Vec<String>> {
    let mut problems = Vec::new();
    // One directory for all ranks: rank 0's process id, broadcast.
    let id = pg.broadcast(&[Tensor::scalar(std::process::id() as f64)], 0)?[0].to_scalar()?;
    let base = std::env::temp_dir().join(format!("tamer-mpi-resume-{id}"));
    let run_config = |out: &str, stop_at: Option<u64>| TrainConfig {
        total_steps: 6,
        stop_at,
        checkpoint_every: Some(2),
        out_dir: Some(base.join(out)),
        ..config()
    };
    let mut straight = vit_trainer(pg.clone(), DType::F32, RANK_BATCH, run_config("straight", None))?;
    let all = straight.fit()?;
    let mut first = vit_trainer(pg.clone(), DType::F32, RANK_BATCH, run_config("split", Some(3)))?;
    let head = first.fit()?;
    // Stopped at its end: a second fit has nothing to train, on every rank alike.
    let again = first.fit()?;
    if again.steps_run != 0 {
        problems.push(format!("a fit at the end trained {} steps", again.steps_run));
    }
    let mut second = vit_trainer(pg.clone(), DType::F32, RANK_BATCH, run_config("split", None))?;
    second.resume(base.join("split").join(tamer::train::CHECKPOINT_FILE))?;
    let tail = second.fit()?;
    let joined: Vec<f64> = head.losses.iter().chain(&tail.losses).copied().collect();
    if joined.iter().map(|x| x.to_bits()).ne(all.losses.iter().map(|x| x.to_bits())) {
        problems.push(format!("resumed losses {joined:?} differ from the uninterrupted {:?}", all.losses));
    }
    if params_of(&second.task.model)? != params_of(&straight.task.model)? {
        problems.push("resumed final parameters differ from the uninterrupted run's".to_string());
    }
    pg.barrier()?;
    if pg.is_root() {
        // One writer: one start record per fit in the metrics.
        let text =
            std::fs::read_to_string(base.join("straight").join(tamer::train::METRICS_FILE)).map_err(|e| tamer::Error::io("resume_is_exact", e.to_string()))?;
        let starts = text.lines().filter(|l| l.contains("\"event\":\"start\"")).count();
        if starts != 1 {
            problems.push(format!("{starts} start records in the straight run's metrics (one writer expected)"));
        }
        println!(
            "checkpoint at step 3 on {} ranks, resumed: losses and parameters bit-identical to 6 straight steps",
            pg.world_size()
        );
    }
    pg.barrier()?;
    if pg.is_root() {
        let _ = std::fs::remove_dir_all(&base);
    }
    Ok(problems)
}
