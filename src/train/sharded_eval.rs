//! Evaluation over several ranks: each rank evaluates its part of the
//! held-out data ([`TrainTask::evaluate_part`]) and the parts' sums and
//! counts are added over the ranks, so the metrics are those of one process
//! evaluating everything, in about `1/world` of the time.
//!
//! The images of a test set are split into contiguous blocks by
//! [`shard_range`]: rank r takes examples `⌊r·n/w⌋..⌊(r+1)·n/w⌋`, so the
//! blocks cover every example once and their sizes differ by at most one
//! (the remainder of `n / w` goes one each to some ranks; nothing is padded,
//! repeated or dropped). A language model's `eval_iters` fixed batches are
//! dealt out by index: rank r takes batches r, r + w, r + 2w, ...

use super::data_parallel::all_ok;
use super::TrainTask;
use crate::dist::{ProcessGroup, ReduceOp};
use crate::{Error, Result};
use std::ops::Range;

const OP: &str = "Trainer::evaluate";

/// Rank `rank`'s block of `n` examples split over `world` ranks: the
/// contiguous range `⌊rank·n/world⌋..⌊(rank+1)·n/world⌋`. The blocks of all
/// ranks cover `0..n` once; their lengths differ by at most one.
///
/// ```
/// use tamer::train::shard_range;
/// assert_eq!([0, 1, 2].map(|r| shard_range(10, r, 3)), [0..3, 3..6, 6..10]);
/// assert_eq!(shard_range(1, 1, 2), 0..1); // fewer examples than ranks: some get none
/// assert_eq!(shard_range(1, 0, 2), 0..0);
/// ```
pub fn shard_range(n: usize, rank: usize, world: usize) -> Range<usize> {
    let world = world.max(1) as u128;
    let at = |r: usize| ((n as u128 * r as u128) / world) as usize;
    at(rank.min(world as usize))..at((rank + 1).min(world as usize))
}

/// Evaluate `task` over the ranks of `pg`: in a world of one (or for a task
/// without [`evaluate_part`](TrainTask::evaluate_part)) its
/// [`evaluate`](TrainTask::evaluate); otherwise every rank's part, each
/// metric's sums added over the ranks and divided by the ranks' counts
/// together. A rank whose part fails stops every rank.
pub(super) fn evaluate(pg: &ProcessGroup, task: &mut dyn TrainTask) -> Result<Vec<(String, f64)>> {
    let world = pg.world_size();
    if world == 1 {
        return task.evaluate();
    }
    let Some(part) = all_ok(pg, OP, task.evaluate_part(pg.rank(), world))? else {
        return task.evaluate();
    };
    let mut totals: Vec<f64> = part.sums.iter().map(|(_, v)| *v).chain([part.count]).collect();
    pg.all_reduce_scalars(&mut totals, ReduceOp::Sum)?;
    let count = totals.pop().unwrap_or(0.0);
    if count <= 0.0 {
        return Err(Error::value(OP, "no rank evaluated anything (an empty evaluation set)"));
    }
    Ok(part.sums.into_iter().zip(totals).map(|((name, _), total)| (name, total / count)).collect())
}
