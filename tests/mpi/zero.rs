//! ZeRO-1 (optimizer state sharded over the ranks) trains as one process
//! with the same global batch: the digits ViT and gpt-tiny, 20 steps, f64
//! to 1e-10 and f32 as the plain data-parallel runs (the ViT with a clip
//! that is active at every step); each rank holds the AdamW state of its range of the split only;
//! checkpoints of a ZeRO-1 run resume in a plain run and the other way.

use crate::training::{compare, config, gpt_trainer, params_of, train_gpt, vit_trainer, Run, GPT_RANK_BATCH, RANK_BATCH};
use crate::Failures;
use tamer::dist::ProcessGroup;
use tamer::nn::Module;
use tamer::optim::ShardSplit;
use tamer::train::TrainConfig;
use tamer::{DType, Tensor};

/// Tight enough that every step of these runs clips (checked below).
const CLIP: f64 = 0.1;

fn zero_config(pg: &ProcessGroup) -> TrainConfig {
    TrainConfig {
        clip: Some(CLIP),
        // The one-process reference is a plain run.
        zero1: pg.world_size() > 1,
        ..config()
    }
}

fn vit_zero1(pg: ProcessGroup, dtype: DType, batch: usize) -> tamer::Result<Run> {
    let mut trainer = vit_trainer(pg.clone(), dtype, batch, zero_config(&pg))?;
    let summary = trainer.fit()?;
    Ok((summary.losses, params_of(&trainer.task.model)?, summary.eval))
}

/// gpt-tiny with the plain runs' clip: the one-process reference is then
/// the plain comparison's, already run.
fn gpt_zero1(pg: ProcessGroup, dtype: DType, batch: usize) -> tamer::Result<Run> {
    if pg.world_size() == 1 {
        return train_gpt(pg, dtype, batch);
    }
    let cfg = TrainConfig { zero1: true, ..config() };
    let mut trainer = gpt_trainer(pg.clone(), dtype, batch, cfg)?;
    let summary = trainer.fit()?;
    Ok((summary.losses, params_of(&trainer.task.model)?, summary.eval))
}

pub fn run(pg: &ProcessGroup, f: &mut Failures) {
    compare(pg, f, "digits ViT, ZeRO-1", RANK_BATCH, vit_zero1, 1e-5);
    compare(pg, f, "gpt-tiny, ZeRO-1", GPT_RANK_BATCH, gpt_zero1, 5e-5);
    if let Some(r) = f.ok("the clip is active", clip_is_active()) {
        f.check(r.is_empty(), || r.join("; "));
    }
    if let Some(r) = f.ok("state bytes per rank", state_bytes(pg)) {
        f.check(r.is_empty(), || r.join("; "));
    }
    if let Some(r) = f.ok("ZeRO-1 and plain checkpoints", checkpoints_cross(pg)) {
        f.check(r.is_empty(), || r.join("; "));
    }
}

/// Every step's gradient norm in these runs is above the clip (one process,
/// f64): the logged norms of the run's metrics.
fn clip_is_active() -> tamer::Result<Vec<String>> {
    let dir = std::env::temp_dir().join(format!("tamer-mpi-zero-clip-{}", std::process::id()));
    let cfg = TrainConfig {
        log_every: 1,
        out_dir: Some(dir.clone()),
        overwrite: true,
        ..zero_config(&ProcessGroup::single())
    };
    let mut trainer = vit_trainer(ProcessGroup::single(), DType::F64, RANK_BATCH * 2, cfg)?;
    trainer.fit()?;
    let records = tamer::train::read_jsonl(dir.join(tamer::train::METRICS_FILE))?;
    let _ = std::fs::remove_dir_all(&dir);
    let norms: Vec<f64> = records.iter().filter_map(|r| r.get("grad_norm").and_then(|v| v.as_f64())).collect();
    let mut problems = Vec::new();
    if norms.len() != 20 || norms.iter().any(|&n| n <= CLIP) {
        problems.push(format!("expected 20 gradient norms above the clip {CLIP}, got {norms:?}"));
    }
    Ok(problems)
}

/// After a step, each rank holds AdamW's two f32 buffers for exactly its
/// range of the split: about half of the unsharded state on 2 ranks.
fn state_bytes(pg: &ProcessGroup) -> tamer::Result<Vec<String>> {
    let cfg = TrainConfig {
        total_steps: 4,
        stop_at: Some(2),
        zero1: true,
        ..config()
    };
    let mut trainer = vit_trainer(pg.clone(), DType::F32, RANK_BATCH, cfg)?;
    trainer.fit()?;
    let n = trainer.task.model.num_params();
    let split = ShardSplit::new(n, pg.world_size());
    let expected = split.range(pg.rank()).len() * 2 * 4;
    let mut problems = Vec::new();
    let Some(z) = trainer.optimizer.zero1() else {
        return Ok(vec!["the trainer did not shard its optimizer".into()]);
    };
    let held = z.held_state_bytes()?;
    if (held, z.state_bytes_per_rank(), z.unsharded_state_bytes()) != (expected, expected, n * 8) {
        problems.push(format!(
            "rank {} holds {held} bytes of state, reports {} of {} unsharded; expected {expected} of {}",
            pg.rank(),
            z.state_bytes_per_rank(),
            z.unsharded_state_bytes(),
            n * 8
        ));
    }
    if expected > n * 8 / pg.world_size() + 8 {
        problems.push(format!("{expected} bytes per rank is not 1/{} of {}", pg.world_size(), n * 8));
    }
    if pg.is_root() {
        println!(
            "ZeRO-1 state per rank: {held} bytes of AdamW state on rank 0 ({} elements of {n}), {} unsharded",
            split.range(0).len(),
            n * 8
        );
    }
    Ok(problems)
}

/// 6 steps of the f64 ViT on the ranks, checkpoints at step 3: a ZeRO-1 run
/// resumed as ZeRO-1 is bit-identical to the uninterrupted ZeRO-1 run; its
/// checkpoint resumed as a plain run, and a plain run's resumed as ZeRO-1,
/// match the uninterrupted runs to 1e-10.
fn checkpoints_cross(pg: &ProcessGroup) -> tamer::Result<Vec<String>> {
    let id = pg.broadcast(&[Tensor::scalar(std::process::id() as f64)], 0)?[0].to_scalar()?;
    let base = std::env::temp_dir().join(format!("tamer-mpi-zero-{id}"));
    let run = |out: &str, zero1: bool, stop_at: Option<u64>| TrainConfig {
        total_steps: 6,
        stop_at,
        checkpoint_every: Some(3),
        out_dir: Some(base.join(out)),
        zero1,
        ..config()
    };
    let trainer = |cfg: TrainConfig| vit_trainer(pg.clone(), DType::F64, RANK_BATCH, cfg);
    let fit = |cfg: TrainConfig, from: Option<&str>| -> tamer::Result<Run> {
        let mut t = trainer(cfg)?;
        if let Some(dir) = from {
            t.resume(base.join(dir).join(tamer::train::CHECKPOINT_FILE))?;
        }
        let s = t.fit()?;
        Ok((s.losses, params_of(&t.task.model)?, s.eval))
    };
    let zero = fit(run("zero", true, None), None)?;
    let plain = fit(run("plain", false, None), None)?;
    let zero_head = fit(run("zero3", true, Some(3)), None)?;
    let plain_head = fit(run("plain3", false, Some(3)), None)?;
    let mut problems = Vec::new();
    let mut against = |what: &str, head: &Run, tail: Run, straight: &Run, tol: f64| {
        let losses: Vec<f64> = head.0.iter().chain(&tail.0).copied().collect();
        let loss_err = losses.iter().zip(&straight.0).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let param_err = tail
            .1
            .iter()
            .flatten()
            .zip(straight.1.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        if losses.len() != 6 || loss_err > tol || param_err > tol {
            problems.push(format!(
                "{what}: losses differ by {loss_err:e}, parameters by {param_err:e} (tolerance {tol:e})"
            ));
        }
        if pg.is_root() {
            println!("{what}: losses differ by {loss_err:.1e}, parameters by {param_err:.1e}");
        }
    };
    against(
        "ZeRO-1 checkpoint resumed as ZeRO-1",
        &zero_head,
        fit(run("zero3-zero", true, None), Some("zero3"))?,
        &zero,
        0.0,
    );
    against(
        "ZeRO-1 checkpoint resumed as plain",
        &zero_head,
        fit(run("zero3-plain", false, None), Some("zero3"))?,
        &plain,
        1e-10,
    );
    against(
        "plain checkpoint resumed as ZeRO-1",
        &plain_head,
        fit(run("plain3-zero", true, None), Some("plain3"))?,
        &zero,
        1e-10,
    );
    pg.barrier()?;
    if pg.is_root() {
        let _ = std::fs::remove_dir_all(&base);
    }
    Ok(problems)
}
