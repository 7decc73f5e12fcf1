//! The experiments, in the report's order (the numbering in each file's header).

pub mod batch_size;
pub mod char_gpt;
pub mod clipping;
pub mod data_hunger;
pub mod digits;
pub mod optimizers;
pub mod patch_size;
pub mod perturbation;
pub mod pooling;
pub mod position;
pub mod rank_collapse;
pub mod regularization;
pub mod start_small;
pub mod transfer;
pub mod warmup;

// The experiments' shared vocabulary, named relative to this module so that the
// files compile both in the example and inside the integration test that includes it.
pub(super) use super::{experiment, stats};
use experiment::Experiment;

/// Every experiment, in the report's order.
pub fn all() -> Vec<&'static dyn Experiment> {
    vec![
        &rank_collapse::RankCollapse,
        &perturbation::Perturbation,
        &optimizers::Optimizers,
        &warmup::Warmup,
        &clipping::Clipping,
        &start_small::StartSmall,
        &batch_size::BatchSize,
        &data_hunger::DataHunger,
        &transfer::Transfer,
        &regularization::Regularization,
        &patch_size::PatchSize,
        &position::Position,
        &pooling::Pooling,
    ]
}
