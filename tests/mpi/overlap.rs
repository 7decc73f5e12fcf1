//! Gradients averaged during the backward pass (`overlap_grad_sync`)
//! against after it (the default): the same run, bit for bit, with one and with
//! two micro-batches per step, and with a parameter frozen between fits
//! (the reducer is remade for the new set of parameters).

use crate::training::{config, gpt_trainer_on, params_of, vit_trainer};
use crate::Failures;
use tamer::dist::ProcessGroup;
use tamer::nn::Module;
use tamer::train::TrainConfig;
use tamer::{DType, Device};

/// Losses, final parameters, and the buckets the overlapped run used.
pub type Outcome = (Vec<f64>, Vec<Vec<f64>>, Option<usize>);

/// A run with the gradients averaged during backward (true) or after it.
pub type Train<'a> = &'a dyn Fn(bool) -> tamer::Result<Outcome>;

fn vit(pg: &ProcessGroup, overlap: bool, grad_accum: usize, freeze_after: Option<u64>) -> tamer::Result<Outcome> {
    let cfg = TrainConfig {
        overlap_grad_sync: overlap,
        grad_accum,
        stop_at: freeze_after,
        ..config()
    };
    // Buckets of 1,000 elements: the ViT's 4,986 gradients in several.
    let mut trainer = vit_trainer(pg.clone().with_bucket_elems(1_000)?, DType::F32, 8, cfg)?;
    let mut losses = trainer.fit()?.losses;
    if freeze_after.is_some() {
        // Transfer-learning style: stop training the position embedding, go on.
        let frozen = trainer.task.model.set_trainable_matching("pos_embed", false);
        assert_eq!(frozen, 1, "the ViT has one position embedding");
        trainer.config.stop_at = None;
        losses.extend(trainer.fit()?.losses);
    }
    Ok((losses, params_of(&trainer.task.model)?, trainer.overlap_buckets()))
}

/// gpt-tiny with its model on `device` (each rank its own GPU under NCCL).
pub fn gpt(pg: &ProcessGroup, overlap: bool, device: Device) -> tamer::Result<Outcome> {
    let cfg = TrainConfig {
        overlap_grad_sync: overlap,
        ..config()
    };
    let mut trainer = gpt_trainer_on(pg.clone().with_bucket_elems(100_000)?, DType::F32, 4, cfg, device)?;
    let losses = trainer.fit()?.losses;
    Ok((losses, params_of(&trainer.task.model)?, trainer.overlap_buckets()))
}

pub fn run(pg: &ProcessGroup, f: &mut Failures) {
    let cases: [(&str, Train); 4] = [
        ("digits ViT", &|o| vit(pg, o, 1, None)),
        ("digits ViT, 2 micro-batches per step", &|o| vit(pg, o, 2, None)),
        ("digits ViT, pos_embed frozen after 8 steps", &|o| vit(pg, o, 1, Some(8))),
        ("gpt-tiny", &|o| gpt(pg, o, Device::Cpu)),
    ];
    for (name, train) in cases {
        compare(pg, f, name, train);
    }
}

/// `train` overlapped and after backward: the same losses and final
/// parameters bit for bit, several buckets in the overlapped run and none in
/// the other.
pub fn compare(pg: &ProcessGroup, f: &mut Failures, name: &str, train: Train) {
    let (Some(on), Some(off)) = (
        f.ok(&format!("{name}: overlapped"), train(true)),
        f.ok(&format!("{name}: after backward"), train(false)),
    ) else {
        return;
    };
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    f.check(bits(&on.0) == bits(&off.0), || {
        format!("{name}: losses {:?} overlapped vs {:?} after backward", on.0, off.0)
    });
    f.check(on.1.iter().zip(&off.1).all(|(a, b)| bits(a) == bits(b)), || {
        format!("{name}: the final parameters differ between the overlapped run and the other")
    });
    f.check(on.2.is_some_and(|n| n > 1) && off.2.is_none(), || {
        format!("{name}: buckets {:?} overlapped, {:?} after backward (expected several, none)", on.2, off.2)
    });
    if pg.is_root() {
        println!(
            "{name}: {} steps on {} ranks, gradients in {} bucket(s) during backward: losses and parameters bit-identical to averaging after backward",
            on.0.len(),
            pg.world_size(),
            on.2.unwrap_or(0)
        );
    }
}
