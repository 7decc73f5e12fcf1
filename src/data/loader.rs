//! The image loader: seeded per-epoch shuffling, batching, per-channel
//! normalisation, augmentation and mixup, with the next batch prepared on a
//! background thread while the current one trains.
//!
//! Everything random is a pure function of the seed and a position: the
//! epoch's order of `(seed, epoch)`, an image's augmentation of `(seed,
//! epoch, example index)`, a batch's mixup of `(seed, epoch, batch index)`.
//! So the background thread gives exactly the batches the synchronous path
//! gives, and [`LoaderState`] (seed, epoch, position) is all a checkpoint
//! needs to resume the stream exactly.

use super::augment::{self, Augment};
use super::image::ImageDataset;
use super::io::derive_seed;
use super::mix::{mixed_cross_entropy, Mixup};
use crate::ops::nn::cross_entropy::CrossEntropyOptions;
use crate::tensor::rng;
use crate::{Error, Result, Tensor};
use rand::seq::SliceRandom;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

const OP: &str = "DataLoader";
const ORDER_TAG: u64 = 0x0d3e;
const AUGMENT_TAG: u64 = 0xa46e;
const MIX_TAG: u64 = 0x313c;

/// Per-channel normalisation `(x − mean) / std`.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Normalization {
    /// Leave pixels in [0, 1].
    #[default]
    None,
    /// Given mean and std, one per channel.
    Given { mean: Vec<f32>, std: Vec<f32> },
    /// Computed from the loader's own data set ([`ImageDataset::channel_stats`]).
    /// For an evaluation loader pass the training set's statistics as `Given`.
    FromData,
}

/// How a [`DataLoader`] batches.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Reshuffle every epoch (training); false keeps the data set's order.
    pub shuffle: bool,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
    /// With `drop_last`, also round an epoch's batches down to a multiple of
    /// this (the gradient-accumulation steps, so an epoch is whole optimizer
    /// steps); 1 by default, ignored without `drop_last`.
    pub batch_multiple: usize,
    pub seed: u64,
    pub normalization: Normalization,
    pub augment: Augment,
    pub mixup: Option<Mixup>,
    /// Batches prepared ahead on a background thread (1 or 2 is plenty);
    /// 0 prepares each batch on the calling thread.
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Training: shuffled, keep the last partial batch, one batch prefetched.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: false,
            batch_multiple: 1,
            seed,
            normalization: Normalization::None,
            augment: Augment::none(),
            mixup: None,
            prefetch: 1,
        }
    }
    /// Evaluation: data set order, every example, no augmentation.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig {
            shuffle: false,
            ..Self::train(batch_size, 0)
        }
    }
    pub fn with_normalization(mut self, n: Normalization) -> Self {
        self.normalization = n;
        self
    }
    pub fn with_augment(mut self, a: Augment) -> Self {
        self.augment = a;
        self
    }
    pub fn with_mixup(mut self, m: Mixup) -> Self {
        self.mixup = Some(m);
        self
    }
    pub fn with_drop_last(mut self, d: bool) -> Self {
        self.drop_last = d;
        self
    }
    /// See [`batch_multiple`](Self::batch_multiple).
    pub fn with_batch_multiple(mut self, n: usize) -> Self {
        self.batch_multiple = n;
        self
    }
    pub fn with_prefetch(mut self, p: usize) -> Self {
        self.prefetch = p;
        self
    }
}

/// Where a loader is in its stream: `position` batches of epoch `epoch` have
/// been handed out. Serialise it with [`to_json`](Self::to_json) into a checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoaderState {
    pub seed: u64,
    pub epoch: u64,
    pub position: usize,
}

impl LoaderState {
    /// `{"seed":..,"epoch":..,"position":..}`
    pub fn to_json(&self) -> String {
        serde_json::json!({"seed": self.seed, "epoch": self.epoch, "position": self.position}).to_string()
    }
    pub fn from_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::format("LoaderState", format!("not JSON: {e}: {text:?}")))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_u64())
                .ok_or_else(|| Error::format("LoaderState", format!("missing or non-integer {k:?} in {text:?}")))
        };
        Ok(LoaderState {
            seed: field("seed")?,
            epoch: field("epoch")?,
            position: field("position")? as usize,
        })
    }
}

/// One batch: `x` f32 `[B, C, H, W]`, `y` i64 `[B]`; with mixup also the
/// second targets `y_b` and the weight `lam` of `y` (1 without mixup).
#[derive(Clone, Debug)]
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
    pub y_b: Option<Tensor>,
    pub lam: f64,
    pub epoch: u64,
    /// Index of this batch within its epoch.
    pub index: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.y.dims()[0]
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Cross-entropy of `logits` against this batch's targets: plain, or
    /// [`mixed_cross_entropy`] when the batch was mixed.
    pub fn loss(&self, logits: &Tensor, options: CrossEntropyOptions) -> Result<Tensor> {
        match &self.y_b {
            Some(y_b) => mixed_cross_entropy(logits, &self.y, y_b, self.lam, options),
            None => logits.cross_entropy(&self.y, options),
        }
    }
}

/// A batch on the host, as the worker makes it (plain data crosses threads).
struct HostBatch {
    x: Vec<f32>,
    y: Vec<i64>,
    y_b: Option<Vec<i64>>,
    lam: f64,
    epoch: u64,
    index: usize,
}

/// Everything needed to make any batch: shared, immutable.
struct Plan {
    dataset: Arc<ImageDataset>,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    batch_multiple: usize,
    seed: u64,
    norm: Option<(Vec<f32>, Vec<f32>)>,
    augment: Augment,
    mixup: Option<Mixup>,
    /// This process's part of every epoch: (rank, world size); (0, 1) is all of it.
    shard: (usize, usize),
}

impl Plan {
    /// Examples per epoch in this shard: the data set's size, split evenly
    /// over the world (the remainder, fewer than `world` examples, is left out).
    fn len(&self) -> usize {
        self.dataset.len() / self.shard.1
    }

    fn num_batches(&self) -> usize {
        let n = self.len();
        if self.drop_last {
            let whole = n / self.batch_size;
            whole - whole % self.batch_multiple.max(1)
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            idx.shuffle(&mut rng(derive_seed(self.seed, &[ORDER_TAG, epoch])));
        }
        let (rank, world) = self.shard;
        if world > 1 {
            // Strided, as PyTorch's DistributedSampler: rank r's batch i holds
            // positions world·(i·b + j) + r, so the ranks' batches i together
            // are exactly batch i of one process with batches world times larger.
            idx = idx.into_iter().skip(rank).step_by(world).take(self.len()).collect();
        }
        idx
    }

    fn make_batch(&self, epoch: u64, order: &[usize], index: usize) -> Result<HostBatch> {
        let ds = &*self.dataset;
        let (c, h, w) = ds.shape;
        let rows = &order[index * self.batch_size..((index + 1) * self.batch_size).min(order.len())];
        let mut x = Vec::with_capacity(rows.len() * ds.image_len());
        let plain = self.augment.is_identity();
        for &i in rows {
            if plain {
                let start = x.len();
                x.extend_from_slice(ds.image(i));
                if let Some((mean, std)) = &self.norm {
                    augment::normalize(&mut x[start..], ds.shape, mean, std);
                }
            } else {
                let mut r = rng(derive_seed(self.seed, &[AUGMENT_TAG, epoch, i as u64]));
                x.extend(augment::apply(ds.image(i), ds.shape, &self.augment, self.norm.as_ref(), &mut r));
            }
        }
        let y: Vec<i64> = rows.iter().map(|&i| ds.labels[i]).collect();
        let (y_b, lam) = match &self.mixup {
            Some(m) => {
                let mut r = rng(derive_seed(self.seed, &[MIX_TAG, epoch, index as u64]));
                let info = m.apply_host(&mut x, (rows.len(), c, h, w), &y, &mut r)?;
                (Some(info.y_b), info.lam)
            }
            None => (None, 1.0),
        };
        Ok(HostBatch { x, y, y_b, lam, epoch, index })
    }
}

enum Msg {
    Batch(Result<HostBatch>),
    EpochEnd,
}

struct Worker {
    rx: Option<Receiver<Msg>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Produce batches from `(epoch, position)` on, forever, until the receiver goes away.
    fn spawn(plan: Arc<Plan>, depth: usize, mut epoch: u64, mut position: usize) -> Result<Worker> {
        let (tx, rx) = sync_channel(depth);
        let handle = std::thread::Builder::new()
            .name("tamer-data".into())
            .spawn(move || loop {
                let order = plan.order(epoch);
                for index in position..plan.num_batches() {
                    let b = plan.make_batch(epoch, &order, index);
                    let failed = b.is_err();
                    if tx.send(Msg::Batch(b)).is_err() || failed {
                        return;
                    }
                }
                if tx.send(Msg::EpochEnd).is_err() {
                    return;
                }
                epoch += 1;
                position = 0;
            })
            .map_err(|e| Error::io(OP, format!("cannot start the background thread: {e}")))?;
        Ok(Worker {
            rx: Some(rx),
            handle: Some(handle),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Dropping the receiver makes the worker's next (or blocked) send fail.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Batches of an [`ImageDataset`], epoch after epoch.
///
/// [`next_batch`](Self::next_batch) returns the batches of the current epoch,
/// then `None` once (the epoch ended; the next call starts the next epoch).
///
/// ```
/// use tamer::data::{DataLoader, ImageDataset, LoaderConfig};
/// let ds = ImageDataset::new("toy", (0..10 * 4).map(|v| v as f32 / 40.0).collect(), vec![0, 1, 2, 0, 1, 2, 0, 1, 2, 0], (1, 2, 2), 3).unwrap();
/// let mut loader = DataLoader::new(ds, LoaderConfig::train(4, 7)).unwrap();
/// let mut sizes = vec![];
/// while let Some(b) = loader.next_batch().unwrap() {
///     assert_eq!(&b.x.dims()[1..], &[1, 2, 2]);
///     sizes.push(b.len());
/// }
/// assert_eq!(sizes, vec![4, 4, 2]);
/// assert_eq!(loader.state().epoch, 1);
/// ```
pub struct DataLoader {
    plan: Arc<Plan>,
    prefetch: usize,
    state: LoaderState,
    /// The current epoch's order, for the synchronous path.
    order: Option<(u64, Vec<usize>)>,
    worker: Option<Worker>,
}

impl DataLoader {
    pub fn new(dataset: impl Into<Arc<ImageDataset>>, config: LoaderConfig) -> Result<Self> {
        let dataset = dataset.into();
        let c = dataset.shape.0;
        if dataset.is_empty() {
            return Err(Error::value(OP, format!("{}: the data set is empty", dataset.name)));
        }
        if config.batch_size == 0 {
            return Err(Error::value(OP, "batch_size must be positive"));
        }
        if config.batch_multiple == 0 {
            return Err(Error::value(OP, "batch_multiple must be positive"));
        }
        config.augment.validate()?;
        if let Some(m) = &config.mixup {
            m.validate()?;
        }
        let norm = match config.normalization {
            Normalization::None => None,
            Normalization::FromData => Some(dataset.channel_stats()),
            Normalization::Given { mean, std } => Some((mean, std)),
        };
        if let Some((mean, std)) = &norm {
            if mean.len() != c || std.len() != c {
                return Err(Error::shape(
                    OP,
                    format!("normalisation has {} means and {} stds for {c} channels", mean.len(), std.len()),
                ));
            }
            if let Some(s) = std.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
                return Err(Error::value(OP, format!("normalisation std {s} must be positive and finite (std {std:?})")));
            }
        }
        let plan = Plan {
            dataset,
            batch_size: config.batch_size,
            shuffle: config.shuffle,
            drop_last: config.drop_last,
            batch_multiple: config.batch_multiple,
            seed: config.seed,
            norm,
            augment: config.augment,
            mixup: config.mixup,
            shard: (0, 1),
        };
        if plan.num_batches() == 0 {
            return Err(Error::value(
                OP,
                format!(
                    "{}: {} examples make no {} of {} with drop_last",
                    plan.dataset.name,
                    plan.dataset.len(),
                    if plan.batch_multiple > 1 {
                        format!("{} batches", plan.batch_multiple)
                    } else {
                        "batch".to_string()
                    },
                    plan.batch_size
                ),
            ));
        }
        Ok(DataLoader {
            state: LoaderState {
                seed: plan.seed,
                epoch: 0,
                position: 0,
            },
            plan: Arc::new(plan),
            prefetch: config.prefetch,
            order: None,
            worker: None,
        })
    }

    pub fn dataset(&self) -> &ImageDataset {
        &self.plan.dataset
    }
    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        self.plan.num_batches()
    }
    pub fn batch_size(&self) -> usize {
        self.plan.batch_size
    }
    /// This loader's part of the data, `(rank, world size)` ([`shard`](Self::shard)); `(0, 1)` is all of it.
    pub fn sharding(&self) -> (usize, usize) {
        self.plan.shard
    }
    /// The examples of an epoch over all ranks together: every rank's
    /// batches of an epoch, times the world size. Two runs whose ranks'
    /// batches together are the same (a global batch kept on another number
    /// of ranks) train on the same examples per epoch only when this agrees:
    /// a last partial batch, or the examples left over by the split, differ.
    ///
    /// ```
    /// use tamer::data::{DataLoader, ImageDataset, LoaderConfig};
    /// let ds = ImageDataset::new("five", vec![0.0; 5], vec![0, 1, 2, 3, 4], (1, 1, 1), 5).unwrap();
    /// let mut loader = DataLoader::new(ds, LoaderConfig::eval(2)).unwrap();
    /// assert_eq!(loader.epoch_examples(), 5);
    /// loader.shard(0, 2).unwrap();
    /// assert_eq!(loader.epoch_examples(), 4); // one example is left over
    /// ```
    pub fn epoch_examples(&self) -> usize {
        let p = &self.plan;
        let per_rank = if p.drop_last { p.num_batches() * p.batch_size } else { p.len() };
        per_rank * p.shard.1
    }
    /// The normalisation in use: (mean, std) per channel.
    pub fn normalization(&self) -> Option<&(Vec<f32>, Vec<f32>)> {
        self.plan.norm.as_ref()
    }
    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// Continue from `state` (taken with [`state`](Self::state), possibly in
    /// another process): the following batches are exactly those the saved
    /// loader would have produced. The state's seed replaces the configured one.
    pub fn set_state(&mut self, state: LoaderState) -> Result<()> {
        if state.position > self.num_batches() {
            return Err(Error::value(
                OP,
                format!("state position {} is past the {} batches of an epoch", state.position, self.num_batches()),
            ));
        }
        self.worker = None;
        self.order = None;
        if state.seed != self.plan.seed {
            let p = &self.plan;
            self.plan = Arc::new(Plan {
                dataset: p.dataset.clone(),
                batch_size: p.batch_size,
                shuffle: p.shuffle,
                drop_last: p.drop_last,
                batch_multiple: p.batch_multiple,
                seed: state.seed,
                norm: p.norm.clone(),
                augment: p.augment,
                mixup: p.mixup,
                shard: p.shard,
            });
        }
        self.state = state;
        Ok(())
    }

    /// Read only this process's part of every epoch, for data-parallel
    /// training over `world` processes: the epoch's (seeded) order is the
    /// same on every rank and split by striding, so the ranks' batches i
    /// together are batch i of one process whose batch size is `world`
    /// times this loader's (as PyTorch's `DistributedSampler`). Every rank
    /// gets `len / world` examples per epoch (the remainder is left out),
    /// and thus the same number of batches. The stream restarts at the
    /// current epoch's first batch. Mixup pairs within a rank's batch, so
    /// with mixup the union differs from the larger batch.
    ///
    /// ```
    /// use tamer::data::{DataLoader, ImageDataset, LoaderConfig};
    /// let ds = ImageDataset::new("five", vec![0.0, 0.1, 0.2, 0.3, 0.4], vec![0, 1, 2, 3, 4], (1, 1, 1), 5).unwrap();
    /// let mut loader = DataLoader::new(ds, LoaderConfig::eval(2)).unwrap();
    /// loader.shard(1, 2).unwrap();
    /// let y = loader.next_batch().unwrap().unwrap().y.to_vec::<i64>().unwrap();
    /// assert_eq!(y, [1, 3]); // positions 1 and 3 of the epoch; 4 is left out
    /// assert!(loader.next_batch().unwrap().is_none());
    /// ```
    pub fn shard(&mut self, rank: usize, world: usize) -> Result<()> {
        if world == 0 || rank >= world {
            return Err(Error::value(OP, format!("shard rank {rank} of a world of {world}: expected 0 <= rank < world")));
        }
        let p = &self.plan;
        let plan = Plan {
            dataset: p.dataset.clone(),
            batch_size: p.batch_size,
            shuffle: p.shuffle,
            drop_last: p.drop_last,
            batch_multiple: p.batch_multiple,
            seed: p.seed,
            norm: p.norm.clone(),
            augment: p.augment,
            mixup: p.mixup,
            shard: (rank, world),
        };
        if plan.num_batches() == 0 {
            return Err(Error::value(
                OP,
                format!(
                    "{}: {} examples split over {world} ranks leave {} per rank, which make no batch of {}",
                    p.dataset.name,
                    p.dataset.len(),
                    plan.len(),
                    p.batch_size
                ),
            ));
        }
        self.plan = Arc::new(plan);
        self.worker = None;
        self.order = None;
        self.state.position = 0;
        Ok(())
    }

    /// The next batch of the current epoch, or `None` when the epoch is over
    /// (the state then moves to the next epoch).
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        if self.state.position >= self.num_batches() {
            if let Some(w) = &self.worker {
                match w.rx.as_ref().map(|rx| rx.recv()) {
                    Some(Ok(Msg::EpochEnd)) => {}
                    _ => return Err(self.worker_lost()),
                }
            }
            self.state.epoch += 1;
            self.state.position = 0;
            return Ok(None);
        }
        let host = if self.prefetch > 0 {
            if self.worker.is_none() {
                self.worker = Some(Worker::spawn(self.plan.clone(), self.prefetch, self.state.epoch, self.state.position)?);
            }
            match self.worker.as_ref().and_then(|w| w.rx.as_ref()).map(|rx| rx.recv()) {
                Some(Ok(Msg::Batch(Ok(b)))) => b,
                Some(Ok(Msg::Batch(Err(e)))) => {
                    self.worker = None;
                    return Err(e);
                }
                _ => return Err(self.worker_lost()),
            }
        } else {
            let epoch = self.state.epoch;
            if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                self.order = Some((epoch, self.plan.order(epoch)));
            }
            let order = self.order.as_ref().map(|(_, o)| o.as_slice()).unwrap_or(&[]);
            self.plan.make_batch(epoch, order, self.state.position)?
        };
        if host.epoch != self.state.epoch || host.index != self.state.position {
            return Err(Error::value(
                OP,
                format!(
                    "internal: got batch {} of epoch {}, expected {} of {}",
                    host.index, host.epoch, self.state.position, self.state.epoch
                ),
            ));
        }
        self.state.position += 1;
        let (c, h, w) = self.plan.dataset.shape;
        let b = host.y.len();
        Ok(Some(Batch {
            x: Tensor::from_vec(host.x, [b, c, h, w])?,
            y: Tensor::from_vec(host.y, [b])?,
            y_b: host.y_b.map(|v| Tensor::from_vec(v, [b])).transpose()?,
            lam: host.lam,
            epoch: host.epoch,
            index: host.index,
        }))
    }

    /// The remaining batches of the current epoch as an iterator.
    pub fn epoch(&mut self) -> EpochIter<'_> {
        EpochIter { loader: self, done: false }
    }

    fn worker_lost(&mut self) -> Error {
        self.worker = None;
        Error::io(OP, "the background data thread stopped unexpectedly")
    }
}

/// See [`DataLoader::epoch`].
pub struct EpochIter<'a> {
    loader: &'a mut DataLoader,
    done: bool,
}

impl Iterator for EpochIter<'_> {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        if self.done {
            return None;
        }
        match self.loader.next_batch() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
