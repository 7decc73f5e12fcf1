//! ZeRO stage 1: an optimizer whose state is sharded over the ranks of a
//! process group ([`Zero1`]).
//!
//! The parameters, each once in group order, are laid end to end in one
//! flat vector of N elements, cut into `world` contiguous ranges of
//! `B = ⌈N / world⌉` elements ([`ShardSplit`]): rank r owns elements
//! `r·B .. min((r+1)·B, N)`, so every rank but the last owns exactly B and
//! the last the rest (fewer by `world·B − N < world`). A range may start or
//! end inside a parameter; each rank keeps state for its pieces only.
//!
//! One step: the ranks' gradients are reduce-scattered (summed, then divided
//! by the world size), so each rank holds the averaged gradient of its range
//! only; the global norm is the square root of the sum over the ranks of
//! each range's `Σ g²`, so clipping scales as in the unsharded run; each rank
//! updates its range with an optimizer of the wrapped kind and settings
//! built over its pieces; then the parameters are all-gathered. A rank holds
//! 1/world of the optimizer state (AdamW: 2·B elements instead of 2·N), plus
//! working copies of its range's values and gradient (B each), and the flat
//! exchange buffers (world·B each, for gradients and parameters).

use super::device::{scaled, sum_squares};
use super::{slot_grad, Optimizer, OptimizerState, ParamGroup};
use crate::dist::{read_host, write_host, FlatBuffers, ProcessGroup, ReduceOp, Wire};
use crate::nn::Param;
use crate::{DType, Device, Error, GradStore, Result, Tensor};
use std::collections::BTreeMap;
use std::ops::Range;

const OP: &str = "Zero1";

/// How ZeRO-1 cuts a flat vector of `total` elements over `world` ranks:
/// blocks of `⌈total / world⌉`, the last one shorter.
///
/// ```
/// use tamer::optim::ShardSplit;
/// let split = ShardSplit::new(10, 4);
/// assert_eq!(split.block(), 3);
/// assert_eq!((split.range(0), split.range(3)), (0..3, 9..10));
/// assert_eq!(ShardSplit::new(2, 4).range(3), 2..2); // more ranks than elements
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSplit {
    total: usize,
    world: usize,
    block: usize,
}

impl ShardSplit {
    /// The split of `total` elements over `world` ranks (at least one).
    pub fn new(total: usize, world: usize) -> ShardSplit {
        let world = world.max(1);
        ShardSplit {
            total,
            world,
            block: total.div_ceil(world),
        }
    }
    /// Elements per block: what every rank but the last owns.
    pub fn block(&self) -> usize {
        self.block
    }
    /// The elements rank `rank` owns.
    pub fn range(&self, rank: usize) -> Range<usize> {
        (rank * self.block).min(self.total)..((rank + 1) * self.block).min(self.total)
    }
    /// Elements in all.
    pub fn total(&self) -> usize {
        self.total
    }
}

/// The per-parameter state of the optimizer kinds ZeRO-1 shards: the
/// elementwise buffers (`state.<name>.<buffer>`) and the per-parameter
/// numbers (`state.<name>.<entry>` metadata), as their `state_dict` names them.
struct StateKind {
    names: &'static [&'static str],
    buffers: &'static [&'static str],
    numbers: &'static [&'static str],
    /// How many buffers a parameter has once stepped, from the settings.
    buffers_in_use: fn(&BTreeMap<String, String>) -> usize,
}

const KINDS: [StateKind; 2] = [
    StateKind {
        names: &["adam", "adamw"],
        buffers: &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
        numbers: &["step"],
        buffers_in_use: |m| if m.get("amsgrad").is_some_and(|v| v == "true") { 3 } else { 2 },
    },
    StateKind {
        names: &["sgd"],
        buffers: &["momentum_buffer"],
        numbers: &[],
        buffers_in_use: |m| usize::from(m.get("momentum").is_some_and(|v| v.parse::<f64>().is_ok_and(|x| x != 0.0))),
    },
];

/// One rank's piece of one parameter, with working copies of its values and
/// averaged gradient.
struct Segment {
    /// Index into the flat parameter list.
    param: usize,
    /// Where the piece starts inside the parameter.
    start: usize,
    len: usize,
    /// Where it starts inside this rank's range.
    at: usize,
    /// The piece's values: what the wrapped optimizer updates.
    value: Param,
    /// The piece's averaged gradient, rewritten each step.
    grad: Tensor,
}

/// An optimizer whose state is sharded over the ranks of a process group
/// (ZeRO stage 1; the module docs say how). Wraps an [`Adam`](super::Adam)
/// or [`Sgd`](super::Sgd): every rank builds the same optimizer, and
/// `Zero1::new` keeps that optimizer's settings and state for this rank's
/// range. Its [`state_dict`](Optimizer::state_dict) is the wrapped kind's,
/// gathered from every rank (a collective: every rank calls it at once), so
/// a checkpoint of a ZeRO-1 run loads into a plain one and back; its
/// [`load_state_dict`](Optimizer::load_state_dict) takes a full state and
/// keeps this rank's slice. The parameters must be CPU tensors of one float
/// type (f32 or f64).
///
/// [`step`](Optimizer::step) averages the ranks' gradients itself; a
/// trainer that clips calls [`reduce_grads`](Self::reduce_grads) and
/// [`clip_grad_norm`](Self::clip_grad_norm) first. In a world of one it
/// trains exactly as the wrapped optimizer does.
///
/// ```
/// use tamer::dist::ProcessGroup;
/// use tamer::nn::Param;
/// use tamer::optim::{Adam, AdamConfig, Optimizer, Zero1};
/// use tamer::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![1.0f64, -2.0], [2]).unwrap());
/// let adam = Adam::new(vec![("w".into(), w.clone())], AdamConfig::adamw(0.1)).unwrap();
/// let mut opt = Zero1::new(ProcessGroup::single(), &adam).unwrap();
/// let grads = w.tensor().square().unwrap().sum_all().unwrap().backward().unwrap();
/// opt.step(&grads).unwrap();
/// assert!((w.tensor().to_vec::<f64>().unwrap()[0] - 0.899).abs() < 1e-6);
/// assert_eq!(opt.state_bytes_per_rank(), 2 * 2 * 8); // exp_avg and exp_avg_sq, 2 f64 each
/// ```
pub struct Zero1 {
    pg: ProcessGroup,
    groups: Vec<ParamGroup>,
    /// Every parameter once, in group order: the flat vector's order.
    params: Vec<(String, Param)>,
    /// Where each parameter starts in the flat vector, and the total last.
    offsets: Vec<usize>,
    dtype: DType,
    split: ShardSplit,
    segments: Vec<Segment>,
    inner: Box<dyn Optimizer>,
    kind: &'static StateKind,
    /// State buffers per element once stepped (AdamW: 2).
    buffers_in_use: usize,
    /// Flat exchange buffers: all gradients (world·B), then all parameters.
    flat: FlatBuffers,
    /// This rank's block (B): its averaged gradient, then its values.
    shard: FlatBuffers,
    /// The averaged (and clipped) gradients of the step under way, keyed by the pieces.
    pending: Option<GradStore>,
}

impl Zero1 {
    /// `opt`'s kind, settings, groups and state, sharded over `pg`'s ranks.
    pub fn new(pg: ProcessGroup, opt: &dyn Optimizer) -> Result<Zero1> {
        let kind = KINDS
            .iter()
            .find(|k| k.names.contains(&opt.name()))
            .ok_or_else(|| Error::value(OP, format!("ZeRO-1 shards adam, adamw and sgd state; this optimizer is '{}'", opt.name())))?;
        let groups = opt.param_groups().to_vec();
        let mut params = Vec::new();
        let mut group_of = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            for (name, p) in &g.params {
                params.push((name.clone(), p.clone()));
                group_of.push(gi);
            }
        }
        let dtype = params.first().map_or(DType::F32, |(_, p)| p.tensor().dtype());
        for (name, p) in &params {
            let t = p.tensor();
            if t.device() != Device::Cpu || t.dtype() != dtype || !matches!(dtype, DType::F32 | DType::F64) {
                return Err(Error::value(
                    OP,
                    format!(
                        "parameter '{name}' is {} on {}; ZeRO-1 takes CPU parameters of one float type (f32 or f64), here {dtype}",
                        t.dtype(),
                        t.device()
                    ),
                ));
            }
        }
        let mut offsets = vec![0];
        for (_, p) in &params {
            offsets.push(offsets[offsets.len() - 1] + p.numel());
        }
        let split = ShardSplit::new(offsets[params.len()], pg.world_size());
        let mine = split.range(pg.rank());
        let mut segments = Vec::new();
        let mut inner_groups: Vec<ParamGroup> = groups
            .iter()
            .map(|g| ParamGroup::new(Vec::new(), g.weight_decay).with_lr_scale(g.lr_scale))
            .collect();
        for (i, (name, _)) in params.iter().enumerate() {
            let (lo, hi) = (offsets[i].max(mine.start), offsets[i + 1].min(mine.end));
            if lo >= hi {
                continue;
            }
            let len = hi - lo;
            let value = Param::new(Tensor::zeros([len], dtype)?);
            inner_groups[group_of[i]].params.push((name.clone(), value.clone()));
            segments.push(Segment {
                param: i,
                start: lo - offsets[i],
                len,
                at: lo - mine.start,
                value,
                grad: Tensor::zeros([len], dtype)?,
            });
        }
        let inner = opt.fresh_over(inner_groups)?;
        let state = opt.state_dict()?;
        let mut zero = Zero1 {
            pg,
            groups,
            params,
            offsets,
            dtype,
            split,
            segments,
            inner,
            kind,
            buffers_in_use: (kind.buffers_in_use)(&state.metadata),
            flat: FlatBuffers::default(),
            shard: FlatBuffers::default(),
            pending: None,
        };
        zero.load_state_dict(&state)?;
        Ok(zero)
    }

    /// How the flat parameter vector is cut over the ranks.
    pub fn split(&self) -> ShardSplit {
        self.split
    }
    /// The elements of the flat parameter vector this rank updates.
    pub fn shard_range(&self) -> Range<usize> {
        self.split.range(self.pg.rank())
    }
    /// The bytes of optimizer state this rank holds once every parameter
    /// has been stepped: its range's elements × the kind's buffers in use
    /// (AdamW: 2, with AMSGrad 3) × the element size.
    pub fn state_bytes_per_rank(&self) -> usize {
        self.shard_range().len() * self.state_bytes_per_element()
    }
    /// What the same optimizer holds in one process: every element's state.
    pub fn unsharded_state_bytes(&self) -> usize {
        self.split.total() * self.state_bytes_per_element()
    }
    fn state_bytes_per_element(&self) -> usize {
        self.buffers_in_use * self.dtype.size_in_bytes()
    }
    /// The wrapped optimizer's settings and step count: its state dict's
    /// metadata without the per-parameter entries, from this rank alone
    /// (no collective, unlike [`state_dict`](Optimizer::state_dict)).
    pub fn settings(&self) -> Result<BTreeMap<String, String>> {
        Ok(self
            .inner
            .state_dict()?
            .metadata
            .into_iter()
            .filter(|(k, _)| !k.starts_with("state."))
            .collect())
    }
    /// The bytes of state buffers this rank holds now (0 before the first
    /// step: state is made at a parameter's first update).
    pub fn held_state_bytes(&self) -> Result<usize> {
        let state = self.inner.state_dict()?;
        Ok(state.tensors.iter().map(|(_, t)| t.numel() * t.dtype().size_in_bytes()).sum())
    }

    /// Average the ranks' gradients of this rank's range (reduce-scatter)
    /// for the next [`step`](Optimizer::step). Every rank must hold
    /// gradients for the same parameters (a parameter without one is not
    /// updated, as in PyTorch); the ranks check it before exchanging.
    pub fn reduce_grads(&mut self, grads: &GradStore) -> Result<()> {
        match self.dtype {
            DType::F32 => self.reduce_typed::<f32>(grads),
            _ => self.reduce_typed::<f64>(grads),
        }
    }

    fn reduce_typed<T: Wire>(&mut self, grads: &GradStore) -> Result<()> {
        let world = self.pg.world_size();
        let flat = T::buffer(&mut self.flat);
        flat.clear();
        flat.resize(world * self.split.block(), T::default());
        let mut present = vec![false; self.params.len()];
        // A hash of which parameters have gradients: the ranks must agree.
        let mut check: u64 = 0xcbf2_9ce4_8422_2325;
        for (i, (name, p)) in self.params.iter().enumerate() {
            let Some((_, g)) = slot_grad(OP, name, p, grads)? else { continue };
            present[i] = true;
            check = (check ^ i as u64).wrapping_mul(0x100_0000_01b3);
            let dst = &mut flat[self.offsets[i]..self.offsets[i + 1]];
            if read_host::<T, _>(&g, |d| dst.copy_from_slice(d)).is_none() {
                dst.copy_from_slice(&g.to_vec::<T>()?);
            }
        }
        let shard = T::buffer(&mut self.shard);
        shard.clear();
        shard.resize(self.split.block(), T::default());
        self.pg.reduce_scatter_host(T::host_buf(flat), T::host_buf(shard), check)?;
        let world = T::from_f64(world as f64);
        shard.iter_mut().for_each(|x| *x /= world);
        let mut store = GradStore::default();
        for s in self.segments.iter().filter(|s| present[s.param]) {
            write_host::<T, _>(&s.grad, |d| d.copy_from_slice(&shard[s.at..s.at + s.len])).ok_or_else(|| internal("gradient piece"))?;
            store.insert(&s.value.tensor(), s.grad.clone());
        }
        self.pending = Some(store);
        Ok(())
    }

    /// The global L2 norm of the gradients [`reduce_grads`](Self::reduce_grads)
    /// averaged (each rank's `Σ g²` of its range, summed over the ranks),
    /// and, with `max_norm`, the clip of [`clip_grad_norm`](super::clip_grad_norm):
    /// every gradient times `max_norm / (norm + 1e-6)` when that is below 1,
    /// nothing when the norm is not finite. Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: Option<f64>) -> Result<f64> {
        if let Some(m) = max_norm.filter(|m| m.is_nan() || *m < 0.0) {
            return Err(Error::value(OP, format!("max_norm {m} must be >= 0")));
        }
        let Some(store) = self.pending.as_mut() else {
            return Err(Error::value(OP, "clip_grad_norm before reduce_grads: there are no averaged gradients"));
        };
        let keys: Vec<Tensor> = self.segments.iter().map(|s| s.value.tensor()).filter(|t| store.get(t).is_some()).collect();
        let grads: Vec<Tensor> = keys.iter().filter_map(|t| store.get(t).cloned()).collect();
        let mut total = [sum_squares(OP, &grads)?.into_iter().fold(0.0, |acc, s| acc + s)];
        self.pg.all_reduce_scalars(&mut total, ReduceOp::Sum)?;
        let norm = total[0].sqrt();
        if let Some(max) = max_norm.filter(|_| norm.is_finite()) {
            let coef = max / (norm + 1e-6);
            if coef < 1.0 {
                for (t, g) in keys.iter().zip(&grads) {
                    store.insert(t, scaled(OP, g, coef)?);
                }
            }
        }
        Ok(norm)
    }

    /// Copy each piece's values from its parameter (which may have been
    /// changed since the last step: broadcast, loaded from a checkpoint).
    fn refresh_pieces<T: Wire>(&self) -> Result<()> {
        for s in &self.segments {
            let p = self.params[s.param].1.tensor();
            read_host::<T, _>(&p, |src| {
                write_host::<T, _>(&s.value.tensor(), |d| d.copy_from_slice(&src[s.start..s.start + s.len]))
            })
            .flatten()
            .ok_or_else(|| internal("parameter or its piece"))?;
        }
        Ok(())
    }

    /// Every rank's updated range into every rank's parameters.
    fn all_gather_params<T: Wire>(&mut self) -> Result<()> {
        let shard = T::buffer(&mut self.shard);
        shard.clear();
        shard.resize(self.split.block(), T::default());
        for s in &self.segments {
            read_host::<T, _>(&s.value.tensor(), |d| shard[s.at..s.at + s.len].copy_from_slice(d)).ok_or_else(|| internal("value piece"))?;
        }
        let flat = T::buffer(&mut self.flat);
        flat.clear();
        flat.resize(self.pg.world_size() * self.split.block(), T::default());
        self.pg.all_gather_host(T::host_buf(shard), T::host_buf(flat), self.split.total() as u64)?;
        for (i, (_, p)) in self.params.iter().enumerate() {
            let values = &flat[self.offsets[i]..self.offsets[i + 1]];
            write_host::<T, _>(&p.tensor(), |d| d.copy_from_slice(values)).ok_or_else(|| internal("parameter"))?;
        }
        Ok(())
    }

    fn step_typed<T: Wire>(&mut self) -> Result<()> {
        self.refresh_pieces::<T>()?;
        let store = self.pending.take().ok_or_else(|| internal("averaged gradients"))?;
        self.inner.step(&store)?;
        drop(store);
        self.all_gather_params::<T>()
    }

    fn gather_state_typed<T: Wire>(&self) -> Result<OptimizerState> {
        let mine = self.inner.state_dict()?;
        let mut out = OptimizerState {
            tensors: Vec::new(),
            metadata: mine
                .metadata
                .iter()
                .filter(|(k, _)| !k.starts_with("state."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let (n, kind) = (self.params.len(), self.kind);
        // Per parameter, from the rank holding its first element: each
        // number + 1 (0: absent), then whether each buffer exists.
        let width = kind.numbers.len() + kind.buffers.len();
        let mut table = vec![0.0; n * width];
        for s in self.segments.iter().filter(|s| s.start == 0) {
            let name = &self.params[s.param].0;
            for (j, entry) in kind.numbers.iter().enumerate() {
                if let Some(v) = mine.metadata.get(&format!("state.{name}.{entry}")) {
                    let v: u64 = v
                        .parse()
                        .map_err(|_| Error::value(OP, format!("state.{name}.{entry} = {v:?} is not a count")))?;
                    table[s.param * width + j] = v as f64 + 1.0;
                }
            }
            for (j, buf) in kind.buffers.iter().enumerate() {
                if mine.get(&format!("state.{name}.{buf}")).is_some() {
                    table[s.param * width + kind.numbers.len() + j] = 1.0;
                }
            }
        }
        self.pg.all_reduce_scalars(&mut table, ReduceOp::Sum)?;
        let mut gathered: Vec<Vec<Option<Tensor>>> = vec![vec![None; kind.buffers.len()]; n];
        for (j, buf) in kind.buffers.iter().enumerate() {
            let has = |i: usize| table[i * width + kind.numbers.len() + j] > 0.0;
            if !(0..n).any(has) {
                continue;
            }
            let mut shard = vec![T::default(); self.split.block()];
            for s in &self.segments {
                if let Some(t) = mine.get(&format!("state.{}.{buf}", self.params[s.param].0)) {
                    shard[s.at..s.at + s.len].copy_from_slice(&t.to_vec::<T>()?);
                }
            }
            let mut all = vec![T::default(); self.pg.world_size() * self.split.block()];
            self.pg.all_gather_host(T::host_buf(&mut shard), T::host_buf(&mut all), j as u64)?;
            for (i, (_, p)) in self.params.iter().enumerate().filter(|(i, _)| has(*i)) {
                gathered[i][j] = Some(Tensor::from_slice(&all[self.offsets[i]..self.offsets[i + 1]], p.dims())?);
            }
        }
        for (i, (name, _)) in self.params.iter().enumerate() {
            for (j, entry) in kind.numbers.iter().enumerate() {
                let v = table[i * width + j];
                if v > 0.0 {
                    out.metadata.insert(format!("state.{name}.{entry}"), ((v - 1.0) as u64).to_string());
                }
            }
            for (j, buf) in kind.buffers.iter().enumerate() {
                if let Some(t) = gathered[i][j].take() {
                    out.tensors.push((format!("state.{name}.{buf}"), t));
                }
            }
        }
        Ok(out)
    }
}

fn internal(what: &str) -> Error {
    Error::device(OP, format!("a {what} was no longer a contiguous CPU tensor of the parameters' dtype"))
}

impl Optimizer for Zero1 {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    /// Average the gradients over the ranks (unless
    /// [`reduce_grads`](Zero1::reduce_grads) already did for this step),
    /// update this rank's range, all-gather the parameters.
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        if self.pending.is_none() {
            self.reduce_grads(grads)?;
        }
        match self.dtype {
            DType::F32 => self.step_typed::<f32>(),
            _ => self.step_typed::<f64>(),
        }
    }
    fn lr(&self) -> f64 {
        self.inner.lr()
    }
    fn set_lr(&mut self, lr: f64) {
        self.inner.set_lr(lr)
    }
    fn momentum(&self) -> f64 {
        self.inner.momentum()
    }
    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        self.inner.set_momentum(momentum)
    }
    fn step_count(&self) -> u64 {
        self.inner.step_count()
    }
    fn param_groups(&self) -> &[ParamGroup] {
        &self.groups
    }
    /// The wrapped kind's full state, gathered from every rank: a
    /// collective, which every rank must call at once.
    fn state_dict(&self) -> Result<OptimizerState> {
        match self.dtype {
            DType::F32 => self.gather_state_typed::<f32>(),
            _ => self.gather_state_typed::<f64>(),
        }
    }
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        const LOAD: &str = "Zero1::load_state_dict";
        let mut sliced = OptimizerState {
            tensors: Vec::new(),
            metadata: state
                .metadata
                .iter()
                .filter(|(k, _)| !k.starts_with("state."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let mut known = 0;
        for (i, (name, p)) in self.params.iter().enumerate() {
            let piece = self.segments.iter().find(|s| s.param == i);
            for entry in self.kind.numbers {
                let key = format!("state.{name}.{entry}");
                if let Some(v) = state.metadata.get(&key) {
                    known += 1;
                    if piece.is_some() {
                        sliced.metadata.insert(key, v.clone());
                    }
                }
            }
            for buf in self.kind.buffers {
                let key = format!("state.{name}.{buf}");
                let Some(t) = state.get(&key) else { continue };
                known += 1;
                if t.numel() != p.numel() {
                    return Err(Error::shape(
                        LOAD,
                        format!("'{key}' has {} elements, parameter '{name}' {}", t.numel(), p.numel()),
                    ));
                }
                if let Some(s) = piece {
                    let values = t.to_f64_vec()?;
                    sliced
                        .tensors
                        .push((key, Tensor::from_vec(values[s.start..s.start + s.len].to_vec(), [s.len])?));
                }
            }
        }
        let entries = state
            .tensors
            .iter()
            .map(|(n, _)| n)
            .chain(state.metadata.keys())
            .filter(|k| k.starts_with("state."));
        if entries.clone().count() != known {
            let unknown = entries
                .filter(|k| !self.params.iter().any(|(n, _)| self.kind_keys(n).any(|key| &key == *k)))
                .collect::<Vec<_>>();
            return Err(Error::value(
                LOAD,
                format!("the state has entries for no parameter of this optimizer: {unknown:?} (a renamed model would lose them)"),
            ));
        }
        self.inner.load_state_dict(&sliced)?;
        self.pending = None;
        Ok(())
    }
    fn fresh_over(&self, groups: Vec<ParamGroup>) -> Result<Box<dyn Optimizer>> {
        self.inner.fresh_over(groups)
    }
    fn zero1(&self) -> Option<&Zero1> {
        Some(self)
    }
    fn zero1_mut(&mut self) -> Option<&mut Zero1> {
        Some(self)
    }
}

impl Zero1 {
    /// Every state key the kind may write for parameter `name`.
    fn kind_keys<'a>(&'a self, name: &'a str) -> impl Iterator<Item = String> + 'a {
        self.kind.numbers.iter().chain(self.kind.buffers).map(move |e| format!("state.{name}.{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{clip_grad_norm, Adam, AdamConfig, Sgd, SgdConfig};

    /// Two parameters, and a loss of them whose gradients differ per step.
    fn model(dtype: DType) -> Vec<(String, Param)> {
        let w = Tensor::from_vec((0..12).map(|i| (i as f64 * 0.37).sin()).collect::<Vec<_>>(), [3, 4]).unwrap();
        let b = Tensor::from_vec(vec![0.5, -0.25, 1.5], [3]).unwrap();
        vec![
            ("w".to_string(), Param::new(w.to_dtype(dtype).unwrap())),
            ("b".to_string(), Param::new(b.to_dtype(dtype).unwrap())),
        ]
    }

    fn grads_of(ps: &[(String, Param)], step: usize) -> GradStore {
        let (w, b) = (ps[0].1.tensor(), ps[1].1.tensor());
        let x = Tensor::full([4, 2], 1.0 + step as f64, w.dtype()).unwrap();
        let y = w.matmul(&x).unwrap().add(&b.reshape([3, 1]).unwrap()).unwrap();
        y.square().unwrap().sum_all().unwrap().backward().unwrap()
    }

    fn values(ps: &[(String, Param)]) -> Vec<Vec<f64>> {
        ps.iter().map(|(_, p)| p.tensor().to_f64_vec().unwrap()).collect()
    }

    #[test]
    fn a_world_of_one_trains_exactly_as_the_wrapped_optimizer() {
        for dtype in [DType::F32, DType::F64] {
            let (plain_ps, zero_ps) = (model(dtype), model(dtype));
            let cfg = AdamConfig::adamw(0.05).weight_decay(0.1);
            let mut plain = Adam::new(plain_ps.clone(), cfg.clone()).unwrap();
            let mut zero = Zero1::new(ProcessGroup::single(), &Adam::new(zero_ps.clone(), cfg).unwrap()).unwrap();
            for step in 0..5 {
                let mut g = grads_of(&plain_ps, step);
                let params: Vec<Param> = plain_ps.iter().map(|(_, p)| p.clone()).collect();
                let norm = clip_grad_norm(&mut g, &params, 1.0).unwrap();
                plain.step(&g).unwrap();
                zero.reduce_grads(&grads_of(&zero_ps, step)).unwrap();
                let zero_norm = zero.clip_grad_norm(Some(1.0)).unwrap();
                assert!(norm > 1.0, "clipping is active");
                assert_eq!(norm.to_bits(), zero_norm.to_bits(), "{dtype} step {step}");
                zero.step(&GradStore::default()).unwrap();
                assert_eq!(values(&plain_ps), values(&zero_ps), "{dtype} step {step}");
            }
            // The same state dict, entry by entry.
            let (a, b) = (plain.state_dict().unwrap(), zero.state_dict().unwrap());
            assert_eq!(a.metadata, b.metadata);
            let names = |s: &OptimizerState| s.tensors.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
            assert_eq!(names(&a), names(&b));
            for ((n, x), (_, y)) in a.tensors.iter().zip(&b.tensors) {
                assert_eq!(x.dims(), y.dims(), "{n}");
                assert_eq!(x.to_f64_vec().unwrap(), y.to_f64_vec().unwrap(), "{n}");
            }
            assert_eq!(zero.held_state_bytes().unwrap(), 15 * 2 * dtype.size_in_bytes());
            assert_eq!(zero.state_bytes_per_rank(), zero.unsharded_state_bytes());
        }
    }

    #[test]
    fn state_moves_between_plain_and_sharded_optimizers() {
        let ps = model(DType::F64);
        let mut plain = Adam::new(ps.clone(), AdamConfig::adamw(0.05)).unwrap();
        plain.step(&grads_of(&ps, 0)).unwrap();
        // Built from a stepped optimizer, Zero1 takes its state over.
        let zero = Zero1::new(ProcessGroup::single(), &plain).unwrap();
        assert_eq!(zero.step_count(), 1);
        let saved = zero.state_dict().unwrap();
        let mut other = Adam::new(ps.clone(), AdamConfig::adamw(0.05)).unwrap();
        other.load_state_dict(&saved).unwrap();
        assert_eq!(other.state_dict().unwrap().metadata, plain.state_dict().unwrap().metadata);
        // State for a parameter the optimizer does not have is refused, by name.
        let mut stray = saved.clone();
        stray.metadata.insert("state.gone.step".into(), "1".into());
        let mut zero = zero;
        let e = zero.load_state_dict(&stray).unwrap_err();
        assert!(e.message.contains("state.gone.step"), "{e}");
        let mut short = saved;
        short.tensors[0].1 = Tensor::zeros([2], DType::F64).unwrap();
        assert!(zero.load_state_dict(&short).unwrap_err().message.contains("elements"));
    }

    #[test]
    fn sgd_is_sharded_too_and_the_split_is_by_elements() {
        let ps = model(DType::F32);
        let sgd = Sgd::new(ps.clone(), SgdConfig::new(0.1).momentum(0.9)).unwrap();
        let zero = Zero1::new(ProcessGroup::single(), &sgd).unwrap();
        assert_eq!((zero.name(), zero.state_bytes_per_rank()), ("sgd", 15 * 4));
        let split = ShardSplit::new(15, 2);
        assert_eq!((split.range(0), split.range(1)), (0..8, 8..15));
    }
}
