//! What depends on the number of ranks: a checkpoint of 2 ranks resumed by
//! one process with the same global batch (the same examples in the same
//! steps: f64 to 1e-10 of the uninterrupted run), and refused with another;
//! settings that differ between ranks refused at the start of `fit` on
//! every rank; evaluation split over the ranks, every test image once.

use crate::training::{config, params_of, vit_trainer, RANK_BATCH};
use crate::Failures;
use tamer::dist::{ProcessGroup, ReduceOp};
use tamer::optim::{Scheduler, WarmupCosine};
use tamer::train::{shard_range, TrainCheckpoint, TrainConfig, TrainTask, CHECKPOINT_FILE};
use tamer::{DType, Tensor};

pub fn run(pg: &ProcessGroup, f: &mut Failures) {
    if let Some(r) = f.ok("checkpoint on 2 ranks, resume on 1", resume_on_one_process(pg)) {
        f.check(r.is_empty(), || r.join("; "));
    }
    settings_must_agree(pg, f);
    evaluation_is_split(pg, f);
}

/// A directory shared by the ranks (rank 0's process id, broadcast).
fn shared_dir(pg: &ProcessGroup, name: &str) -> tamer::Result<std::path::PathBuf> {
    let id = pg.broadcast(&[Tensor::scalar(std::process::id() as f64)], 0)?[0].to_scalar()?;
    Ok(std::env::temp_dir().join(format!("tamer-mpi-{name}-{id}")))
}

/// 3 steps on the ranks of `pg` (f64, `RANK_BATCH` each), checkpointed; then
/// rank 0 alone resumes them as one process with the global batch and runs to
/// 6: the joined losses and the final parameters are those of 6 steps in one
/// process to 1e-10 (the ranks' mean of means rounds differently), with the
/// same step count; one process with another global batch is refused.
fn resume_on_one_process(pg: &ProcessGroup) -> tamer::Result<Vec<String>> {
    let mut problems = Vec::new();
    let base = shared_dir(pg, "world")?;
    let world = pg.world_size();
    let run_config = |out: Option<&str>, stop_at: Option<u64>| TrainConfig {
        total_steps: 6,
        stop_at,
        checkpoint_every: Some(3),
        out_dir: out.map(|o| base.join(o)),
        ..config()
    };
    let mut ranks = vit_trainer(pg.clone(), DType::F64, RANK_BATCH, run_config(Some("ranks"), Some(3)))?;
    let head = ranks.fit()?;
    pg.barrier()?;
    if pg.is_root() {
        let path = base.join("ranks").join(CHECKPOINT_FILE);
        let ckpt = TrainCheckpoint::read(&path)?;
        if (ckpt.step, ckpt.world_size, ckpt.global_batch_size) != (3, world as u64, Some((RANK_BATCH * world) as u64)) {
            problems.push(format!(
                "the checkpoint says step {}, world size {}, global batch {:?}",
                ckpt.step, ckpt.world_size, ckpt.global_batch_size
            ));
        }
        // One process with the micro-batch of one rank: another global batch, refused.
        let mut wrong = vit_trainer(ProcessGroup::single(), DType::F64, RANK_BATCH, run_config(None, None))?;
        match wrong.resume(&path) {
            Ok(_) => problems.push("one process with a smaller global batch resumed a 2-rank checkpoint".into()),
            Err(e) => {
                let msg = e.to_string();
                let both = format!("{world} rank(s) × {RANK_BATCH} = global batch {}", RANK_BATCH * world);
                if !(msg.contains(&both) && msg.contains(&format!("1 rank(s) × {RANK_BATCH} = global batch {RANK_BATCH}"))) {
                    problems.push(format!("the refusal does not name both layouts: {msg}"));
                }
            }
        }
        let mut one = vit_trainer(ProcessGroup::single(), DType::F64, RANK_BATCH * world, run_config(Some("ranks"), None))?;
        let notes = one.resume(&path)?;
        if !notes.iter().any(|n| n.contains("keeps the global batch")) {
            problems.push(format!("no note that the run continues on another number of ranks: {notes:?}"));
        }
        let tail = one.fit()?;
        let mut straight = vit_trainer(ProcessGroup::single(), DType::F64, RANK_BATCH * world, run_config(None, None))?;
        let all = straight.fit()?;
        let joined: Vec<f64> = head.losses.iter().chain(&tail.losses).copied().collect();
        if tail.steps != 6 || tail.steps_run != 3 || joined.len() != all.losses.len() {
            problems.push(format!(
                "resumed to step {} after {} steps; {} losses",
                tail.steps,
                tail.steps_run,
                joined.len()
            ));
        }
        let loss_err = joined.iter().zip(&all.losses).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let param_err = params_of(&one.task.model)?
            .iter()
            .zip(&params_of(&straight.task.model)?)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0.0, f64::max);
        if loss_err > 1e-10 || param_err > 1e-10 {
            problems.push(format!(
                "3 steps on {world} ranks + 3 on one process differ from 6 on one process: losses by {loss_err:e}, parameters by {param_err:e}"
            ));
        }
        println!("checkpoint at step 3 on {world} ranks, resumed by one process with the global batch: loss diff {loss_err:.1e}, parameter diff {param_err:.1e} from 6 steps in one process (f64)");
        let _ = std::fs::remove_dir_all(&base);
    }
    pg.barrier()?;
    Ok(problems)
}

/// Rank 1 is given another learning rate: `fit` refuses on every rank,
/// naming rank 1 and the schedule, before a step is taken.
fn settings_must_agree(pg: &ProcessGroup, f: &mut Failures) {
    let Some(mut t) = f.ok("build", vit_trainer(pg.clone(), DType::F32, RANK_BATCH, config())) else {
        return;
    };
    if pg.rank() == 1 {
        let Some(schedule) = f.ok("schedule", WarmupCosine::new(1e-3, 3, t.config.total_steps, 0.0)) else {
            return;
        };
        t.scheduler = Scheduler::new(schedule);
    }
    match t.fit() {
        Ok(_) => f.check(false, || "ranks with different learning rates trained".to_string()),
        Err(e) => {
            let msg = e.to_string();
            f.check(msg.contains("rank 1 differs from rank 0 in schedule"), || {
                format!("the error does not name rank 1 and the schedule: {msg}")
            });
            if pg.rank() == 1 {
                f.check(msg.contains("on this rank, 1: schedule = "), || {
                    format!("rank 1's error does not show its schedule: {msg}")
                });
            }
            f.check(t.step == 0, || format!("{} steps were taken", t.step));
            if pg.is_root() {
                println!("different learning rates on the ranks: {msg}");
            }
        }
    }
}

/// 65 test images over 2 ranks: rank 0 takes 32, rank 1 33, together all of
/// them once; the reduced metrics are one process's (f64, to 1e-10).
fn evaluation_is_split(pg: &ProcessGroup, f: &mut Failures) {
    let build = |pg: ProcessGroup| -> tamer::Result<_> {
        let mut t = vit_trainer(pg, DType::F64, RANK_BATCH, config())?;
        let (_, test) = tamer::data::digits::load_images()?;
        // Batches of 16 that the ranks' blocks cut across.
        t.task.test = tamer::data::DataLoader::new(test.subset(&(0..65).collect::<Vec<_>>())?, tamer::data::LoaderConfig::eval(16))?;
        Ok(t)
    };
    let (Some(mut ranks), Some(mut one)) = (f.ok("build", build(pg.clone())), f.ok("build one", build(ProcessGroup::single()))) else {
        return;
    };
    let (rank, world) = (pg.rank(), pg.world_size());
    if let Some(Some(part)) = f.ok("evaluate_part", ranks.task.evaluate_part(rank, world)) {
        let mine = shard_range(65, rank, world).len() as f64;
        f.check(part.count == mine, || format!("rank {rank} evaluated {} images, expected {mine}", part.count));
        let mut total = [part.count];
        if f.ok("sum", pg.all_reduce_scalars(&mut total, ReduceOp::Sum)).is_some() {
            f.check(total[0] == 65.0, || format!("the ranks evaluated {} images of 65", total[0]));
        }
    }
    let (Some(split), Some(whole)) = (f.ok("sharded evaluate", ranks.evaluate()), f.ok("one-process evaluate", one.evaluate())) else {
        return;
    };
    let names_match = split.iter().map(|(k, _)| k).eq(whole.iter().map(|(k, _)| k));
    let err = split.iter().zip(&whole).map(|((_, a), (_, b))| (a - b).abs()).fold(0.0, f64::max);
    f.check(names_match && err <= 1e-10 && split.iter().all(|(_, v)| v.is_finite()), || {
        format!("sharded evaluation {split:?} vs one process {whole:?}")
    });
    if pg.is_root() {
        println!("evaluation of 65 images split over {world} ranks: {split:?}, {err:.1e} from one process's");
    }
}
