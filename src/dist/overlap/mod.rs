//! Gradients averaged over the ranks while the backward pass still runs:
//! [`OverlapReducer`] (its documentation tells how).

mod bucket;
mod worker;

use super::bucket::{check_tensor, Fnv};
use super::{Kind, ProcessGroup};
use crate::tensor::TensorId;
use crate::types::Shape;
use crate::{DType, Device, Error, GradStore, Result, Tensor};
pub(crate) use bucket::DeviceExchange;
use bucket::{failed_ranks_on_device, not_back, Bucket};
use std::collections::HashMap;
use std::sync::Arc;
use worker::Worker;

const OP: &str = "OverlapReducer";

/// Gradients averaged over the ranks while the backward pass still runs.
///
/// Without overlap a data-parallel step is compute, then communication: the
/// all-reduce starts when the last gradient is known. But a layer near the
/// loss has its gradient long before the first layer has its own, so the
/// gradients can travel in buckets while the backward pass works on the
/// layers below (PyTorch's DDP, llm.c's "overlap"). This reducer does that,
/// for CPU gradients and, on a group with an NCCL communicator (feature
/// `nccl`), for gradients on its GPU:
///
/// 1. The first step records the order in which the gradients become final
///    ([`Tensor::backward_with_hook`]) and cuts that order into buckets of at
///    most [`ProcessGroup::bucket_elems`] elements per dtype (a gradient
///    never straddles two). The ranks check once that their plans agree.
/// 2. From then on, each final gradient is copied into its bucket's buffer;
///    a bucket whose gradients are all in is handed to a communication
///    thread, which all-reduces it (sum, then division by the world size)
///    while the backward pass goes on. On a GPU, the bucket is a flat device
///    buffer filled on the device's stream, and NCCL sums it on a stream of
///    its own once the fill is done, while the backward pass's kernels run
///    on. Buckets go out in plan order on every rank, so the ranks'
///    collectives pair up.
/// 3. After the backward pass, [`StepSync::finish`] waits for the buckets
///    and writes the means into the gradients (in their own storage where
///    they own it).
///
/// Each bucket carries one extra element, 0 on a rank whose gradients were
/// all there and 1 on one that was missing some (or had one the plan does
/// not know): the sum says, on every rank alike, whether any rank failed,
/// without a collective of its own. The last bucket leaves only in `finish`,
/// so a fault met at any point of the pass reaches the others. After the
/// first step, a step dropped before `finish` (an error in the backward
/// pass) still sends every bucket, flagged, so the other ranks are not left
/// waiting; in the first step, which agrees on the plan, that is the
/// launcher's to end, as for any collective a failed rank leaves. Every
/// parameter must get a gradient in every step or in none.
///
/// Sums are element-wise, so the result does not depend on where the buckets
/// are cut: with two ranks it equals [`ProcessGroup::all_reduce_in_place`]'s
/// bit for bit (with more, MPI may add in another order for other bucket
/// sizes, a difference of rounding only).
///
/// ```
/// use tamer::dist::{OverlapReducer, ProcessGroup};
/// use tamer::Tensor;
/// let w = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap().variable();
/// let mut reducer = OverlapReducer::new(&ProcessGroup::single(), &[w.clone()]).unwrap();
/// for _ in 0..2 {
///     // The first step records the order, the next ones overlap.
///     let loss = w.square().unwrap().sum_all().unwrap();
///     let mut sync = reducer.begin();
///     let mut grads = loss.backward_with_hook(|v, g| sync.ready(v, g)).unwrap();
///     sync.finish(&mut grads).unwrap();
///     assert_eq!(grads.get(&w).unwrap().to_vec::<f32>().unwrap(), [2.0, 4.0]);
/// }
/// assert!(reducer.is_planned());
///  ```
///
/// Keep one for the whole run: the plan, the bucket buffers and the
/// communication thread are made once. Between [`begin`](Self::begin) and
/// [`StepSync::finish`] nothing else may use the group (the communication
/// thread is using it).
pub struct OverlapReducer {
    /// Declared first, so dropped first: the thread is joined while `pg`
    /// still holds the backend (the last handle to MPI must go on the
    /// thread that initialised it, where MPI_Finalize runs).
    worker: Option<Worker>,
    pg: ProcessGroup,
    /// The parameters whose gradients are averaged, by id, with their
    /// index, and in order.
    params: HashMap<TensorId, usize>,
    order: Vec<TensorId>,
    plan: Option<Plan>,
    /// Each bucket's buffer while it is here (not on the communication thread).
    buffers: Vec<Option<Bucket>>,
    /// Where device buckets go (the group's NCCL communicator); None: the
    /// gradients are on the host.
    exchange: Option<Arc<dyn DeviceExchange>>,
    /// Per bucket, the gradients not yet in this step; per parameter, whether
    /// its gradient is in (kept here, so that a steady step allocates nothing).
    missing: Vec<usize>,
    filled: Vec<bool>,
    /// Whether sums started on the device exchange's stream may still be
    /// running: the buckets must not be refilled or freed before a `wait`.
    side_pending: bool,
}

impl std::fmt::Debug for OverlapReducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OverlapReducer {{ params: {}, buckets: {} }}",
            self.params.len(),
            self.plan.as_ref().map_or(0, |p| p.buckets.len())
        )
    }
}

/// Where each gradient goes: buckets in launch order.
struct Plan {
    buckets: Vec<BucketPlan>,
    /// Parameter id → (bucket, offset in it, index among its members).
    slots: HashMap<TensorId, (usize, usize, usize)>,
}

struct BucketPlan {
    dtype: DType,
    /// The gradients' elements, then the status element.
    len: usize,
    /// Each gradient's parameter, offset and shape.
    members: Vec<(TensorId, usize, Shape)>,
}

impl Drop for OverlapReducer {
    /// The device buckets go back to the memory pool: only once no sum
    /// started on the exchange's stream can still be writing them.
    fn drop(&mut self) {
        self.wait_for_side_stream();
    }
}

impl OverlapReducer {
    /// A reducer for the gradients of `params` over `pg`'s ranks: CPU
    /// tensors of f32 or f64, or tensors on the GPU of the group's NCCL
    /// communicator (f32, f64, bf16, f16), all on one device.
    pub fn new(pg: &ProcessGroup, params: &[Tensor]) -> Result<OverlapReducer> {
        let device = params.first().map_or(Device::Cpu, Tensor::device);
        if let Some((i, p)) = params.iter().enumerate().find(|(_, p)| p.device() != device) {
            crate::bail!(
                device,
                OP,
                "parameter {i} (shape {}) is on {}, parameter 0 on {device}; the gradients must be on one device",
                p.shape(),
                p.device()
            );
        }
        if let Some(i) = (1..params.len()).find(|&i| params[..i].iter().any(|p| p.id() == params[i].id())) {
            crate::bail!(value, OP, "parameter {i} (shape {}) is listed twice", params[i].shape());
        }
        let exchange = match device {
            Device::Cpu => {
                for (i, p) in params.iter().enumerate() {
                    check_tensor(OP, i, p)?;
                }
                None
            }
            gpu => Some(pg.device_exchange(OP, gpu, params)?),
        };
        Ok(Self::with_exchange(pg, params, exchange))
    }

    /// [`new`](Self::new) with the device exchange given (tests drive
    /// device buckets on the CPU through a fake one).
    pub(crate) fn with_exchange(pg: &ProcessGroup, params: &[Tensor], exchange: Option<Arc<dyn DeviceExchange>>) -> OverlapReducer {
        OverlapReducer {
            pg: pg.clone(),
            params: params.iter().enumerate().map(|(i, p)| (p.id(), i)).collect(),
            order: params.iter().map(Tensor::id).collect(),
            plan: None,
            buffers: Vec::new(),
            exchange,
            missing: Vec::new(),
            filled: vec![false; params.len()],
            worker: None,
            side_pending: false,
        }
    }

    /// Order the device's stream after any sum still running on the
    /// exchange's (errors are the next step's to meet).
    fn wait_for_side_stream(&mut self) {
        if let (true, Some(exchange)) = (self.side_pending, &self.exchange) {
            if exchange.wait().is_ok() {
                self.side_pending = false;
            }
        }
    }

    /// Whether this reducer is for exactly `params`, in this order (a
    /// parameter frozen, unfrozen or replaced since makes it stale).
    ///
    /// ```
    /// use tamer::dist::{OverlapReducer, ProcessGroup};
    /// use tamer::Tensor;
    /// let (a, b) = (Tensor::scalar(1.0f32).variable(), Tensor::scalar(2.0f32).variable());
    /// let reducer = OverlapReducer::new(&ProcessGroup::single(), &[a.clone(), b.clone()]).unwrap();
    /// assert!(reducer.is_for(&[a.clone(), b.clone()]));
    /// assert!(!reducer.is_for(&[b, a]));
    /// ```
    pub fn is_for(&self, params: &[Tensor]) -> bool {
        self.is_for_ids(params.iter().map(Tensor::id))
    }

    /// [`is_for`](Self::is_for) by the parameters' ids.
    pub fn is_for_ids(&self, ids: impl IntoIterator<Item = TensorId>) -> bool {
        let mut ids = ids.into_iter();
        self.order.iter().all(|&o| ids.next() == Some(o)) && ids.next().is_none()
    }

    /// Whether the first step has made the plan (the next steps overlap).
    pub fn is_planned(&self) -> bool {
        self.plan.is_some()
    }

    /// The number of buckets of the plan (0 before the first step).
    pub fn bucket_count(&self) -> usize {
        self.plan.as_ref().map_or(0, |p| p.buckets.len())
    }

    /// Start one step's exchange: pass each final gradient to
    /// [`StepSync::ready`] (from [`Tensor::backward_with_hook`]), then call
    /// [`StepSync::finish`].
    pub fn begin(&mut self) -> StepSync<'_> {
        // A step that never reached its end (a forgotten StepSync) may have
        // left sums running in the buckets this step refills.
        self.wait_for_side_stream();
        let buckets = self.plan.as_ref().map_or(0, |p| p.buckets.len());
        self.filled.iter_mut().for_each(|f| *f = false);
        self.missing.clear();
        if let Some(plan) = &self.plan {
            self.missing.extend(plan.buckets.iter().map(|b| b.members.len()));
        }
        StepSync {
            reducer: self,
            launched: 0,
            returned: 0,
            buckets,
            recorded: Vec::new(),
            fault: None,
            finished: false,
        }
    }

    /// The plan from the first step's order of final gradients: buckets of
    /// at most `bucket_elems` elements per dtype, closed in that order.
    fn make_plan(&self, order: &[(TensorId, DType, Shape)]) -> Plan {
        let cap = self.pg.bucket_elems();
        let mut buckets: Vec<BucketPlan> = Vec::new();
        let mut open: Vec<BucketPlan> = Vec::new(); // at most one per dtype
        for (id, dtype, shape) in order {
            let n = shape.numel();
            let i = match open.iter().position(|b| b.dtype == *dtype) {
                // Full: it closes, and goes out before any bucket still open.
                Some(i) if open[i].len + n > cap => {
                    buckets.push(open.remove(i));
                    None
                }
                found => found,
            };
            let i = i.unwrap_or_else(|| {
                open.push(BucketPlan {
                    dtype: *dtype,
                    len: 0,
                    members: Vec::new(),
                });
                open.len() - 1
            });
            let bucket = &mut open[i];
            bucket.members.push((*id, bucket.len, shape.clone()));
            bucket.len += n;
        }
        buckets.extend(open);
        let mut slots = HashMap::new();
        for (b, bucket) in buckets.iter_mut().enumerate() {
            for (m, (id, offset, _)) in bucket.members.iter().enumerate() {
                slots.insert(*id, (b, *offset, m));
            }
            bucket.len += 1; // the status element
        }
        Plan { buckets, slots }
    }

    /// What the ranks compare before the first exchange: the gradients'
    /// count, elements per dtype, and a hash of the plan.
    fn plan_signature(plan: &Plan, order: &[(TensorId, DType, Shape)]) -> Vec<u64> {
        let mut hash = Fnv::new();
        let (mut f32s, mut f64s) = (0u64, 0u64);
        for (_, dtype, shape) in order {
            hash.add(*dtype as u64);
            hash.add(shape.dims().len() as u64);
            shape.dims().iter().for_each(|&d| hash.add(d as u64));
            match dtype {
                DType::F32 => f32s += shape.numel() as u64,
                _ => f64s += shape.numel() as u64,
            }
        }
        for b in &plan.buckets {
            hash.add(b.len as u64);
        }
        vec![order.len() as u64, f32s, f64s, hash.0]
    }
}

/// One step's exchange (see [`OverlapReducer::begin`]).
pub struct StepSync<'a> {
    reducer: &'a mut OverlapReducer,
    /// Buckets handed to the communication thread, and back from it.
    launched: usize,
    returned: usize,
    buckets: usize,
    /// The first step's order of final gradients (no plan yet).
    recorded: Vec<(TensorId, DType, Shape)>,
    /// What went wrong on this rank (the buckets then go out flagged).
    fault: Option<String>,
    finished: bool,
}

impl StepSync<'_> {
    /// `grad`, the final gradient of `variable`: into its bucket, and the
    /// buckets that are complete out to the other ranks. Variables that are
    /// not the reducer's parameters are left alone.
    pub fn ready(&mut self, variable: &Tensor, grad: &Tensor) -> Result<()> {
        self.ready_id(variable.id(), grad)
    }

    fn ready_id(&mut self, id: TensorId, grad: &Tensor) -> Result<()> {
        let Some(&index) = self.reducer.params.get(&id) else {
            return Ok(());
        };
        let Some(plan) = &self.reducer.plan else {
            if self.reducer.exchange.is_none() {
                check_tensor(OP, self.recorded.len(), grad)?;
            }
            self.recorded.push((id, grad.dtype(), grad.shape().clone()));
            return Ok(());
        };
        let Some(&(b, offset, member)) = plan.slots.get(&id) else {
            self.fault.get_or_insert_with(|| {
                format!(
                    "a parameter of shape {} got a gradient that the first step did not give it; overlapped gradient averaging needs the same parameters to get gradients every step",
                    grad.shape()
                )
            });
            return Ok(());
        };
        let shape = &plan.buckets[b].members[member].2;
        if std::mem::replace(&mut self.reducer.filled[index], true) {
            self.fault
                .get_or_insert_with(|| format!("the gradient of a parameter of shape {shape} was passed twice in one step"));
            return Ok(());
        }
        let buffer = self.reducer.buffers[b].as_mut().ok_or_else(|| not_back(b))?;
        let fits = grad.shape() == shape && grad.dtype() == plan.buckets[b].dtype && buffer.fill(offset, grad)?;
        if !fits {
            self.fault.get_or_insert_with(|| {
                format!(
                    "a gradient of {} {} on {} where the first step had {} {shape}",
                    grad.dtype(),
                    grad.shape(),
                    grad.device(),
                    plan.buckets[b].dtype
                )
            });
        }
        self.reducer.missing[b] -= 1;
        self.launch_ready()
    }

    /// How many buckets have gone out to the other ranks so far.
    pub fn buckets_sent(&self) -> usize {
        self.launched
    }

    /// Send out, in plan order, every bucket whose gradients are all in,
    /// except the last: it leaves from `finish` (or the drop of an
    /// unfinished step), when everything this rank could find wrong with
    /// its gradients is known, so that its status element tells the other
    /// ranks even of a fault met after every other bucket had left.
    fn launch_ready(&mut self) -> Result<()> {
        while self.launched + 1 < self.buckets && self.reducer.missing[self.launched] == 0 {
            self.launch(self.launched)?;
        }
        Ok(())
    }

    /// Bucket `b` out: to the device exchange (the buffer stays here; the
    /// exchange works in it on its stream), or to the communication thread.
    fn launch(&mut self, b: usize) -> Result<()> {
        let failed = self.fault.is_some();
        let reducer = &mut *self.reducer;
        // Counted first: a bucket that fails to go out is still waited for.
        self.launched += 1;
        if let Some(exchange) = &reducer.exchange {
            let bucket = reducer.buffers[b].as_mut().ok_or_else(|| not_back(b))?;
            bucket.set_status(failed)?;
            let Bucket::Device(flat) = bucket else {
                crate::bail!(value, OP, "bucket {b} is on the host, the gradients on {}", exchange.device());
            };
            reducer.side_pending = true;
            return exchange.start_sum(flat);
        }
        let mut bucket = reducer.buffers[b].take().ok_or_else(|| not_back(b))?;
        bucket.set_status(failed)?;
        let worker = match &mut reducer.worker {
            Some(w) => w,
            None => reducer.worker.insert(Worker::start(reducer.pg.comm.clone())?),
        };
        worker.send(b, bucket)
    }

    /// Wait for every bucket (sending those still here, flagged when a
    /// gradient is missing) and take them back; the first error met.
    fn collect(&mut self) -> Result<usize> {
        let mut first_error = None;
        while self.launched < self.buckets {
            if self.reducer.missing[self.launched] > 0 {
                self.fault.get_or_insert_with(|| "some parameters got no gradient this step".to_string());
            }
            if let Err(e) = self.launch(self.launched) {
                first_error.get_or_insert(e);
                break;
            }
        }
        let mut failed_ranks = 0;
        if let Some(exchange) = &self.reducer.exchange {
            // Every sum started, then the means and the statuses on the device's stream.
            let waited = exchange.wait().and_then(|()| {
                self.reducer.side_pending = false;
                let world = self.reducer.pg.world_size();
                for bucket in self.reducer.buffers.iter_mut().flatten() {
                    bucket.divide_by(world)?;
                }
                failed_ranks_on_device(self.reducer.buffers.iter().flatten())
            });
            self.returned = self.launched;
            return match (first_error, waited) {
                (Some(e), _) | (None, Err(e)) => Err(e),
                (None, Ok(failed)) => Ok(failed),
            };
        }
        while self.returned < self.launched {
            let Some(worker) = &self.reducer.worker else { break };
            match worker.done.recv() {
                Ok((b, bucket, r)) => {
                    if let Err(e) = r {
                        first_error.get_or_insert(e);
                    }
                    match bucket.failed_ranks() {
                        Ok(n) => failed_ranks = failed_ranks.max(n),
                        Err(e) => drop(first_error.get_or_insert(e)),
                    }
                    self.reducer.buffers[b] = Some(bucket);
                    self.returned += 1;
                }
                Err(_) => {
                    first_error.get_or_insert(Error::value(OP, "the communication thread stopped"));
                    break;
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(failed_ranks),
        }
    }

    /// Wait for the exchange and replace each parameter's gradient in
    /// `grads` with its mean over the ranks. The first step makes the plan
    /// here (after the ranks agree on it) and exchanges everything at once.
    pub fn finish(mut self, grads: &mut GradStore) -> Result<()> {
        // Gradients the hook did not report: with accumulation, those of
        // parameters that only earlier micro-batches reached. In parameter
        // order, the same on every rank.
        for index in 0..self.reducer.order.len() {
            let id = self.reducer.order[index];
            let unreported = match self.reducer.plan {
                None => !self.recorded.iter().any(|r| r.0 == id),
                Some(_) => !self.reducer.filled[index],
            };
            if unreported {
                if let Some(g) = grads.get_by_id(id).cloned() {
                    self.ready_id(id, &g)?;
                }
            }
        }
        if self.reducer.plan.is_none() {
            self.make_plan_and_fill(grads)?;
        }
        self.finished = true;
        let failed_ranks = self.collect()?;
        if let Some(fault) = &self.fault {
            return Err(Error::value(OP, format!("{fault}; no gradient was averaged this step")));
        }
        if failed_ranks > 0 {
            crate::bail!(
                value,
                OP,
                "{failed_ranks} other rank(s) were missing gradients this step (see their message); no gradient was averaged"
            );
        }
        let reducer = &*self.reducer;
        let plan = reducer.plan.as_ref().ok_or_else(|| Error::value(OP, "no plan"))?;
        for (b, planned) in plan.buckets.iter().enumerate() {
            let bucket = reducer.buffers[b].as_ref().ok_or_else(|| not_back(b))?;
            for (id, offset, shape) in &planned.members {
                bucket.write_back(*offset, shape, *id, grads)?;
            }
        }
        Ok(())
    }

    /// The first step: the plan from the recorded order, agreed by the
    /// ranks, its buffers, then every gradient of the store into them.
    fn make_plan_and_fill(&mut self, grads: &GradStore) -> Result<()> {
        let order = std::mem::take(&mut self.recorded);
        let plan = self.reducer.make_plan(&order);
        if self.reducer.pg.world_size() > 1 {
            let sig = OverlapReducer::plan_signature(&plan, &order);
            self.reducer.pg.agree(OP, Kind::AllReduce, &sig)?;
        }
        let device = self.reducer.exchange.as_ref().map(|e| e.device());
        if device.is_none() {
            if let Some(b) = plan.buckets.iter().find(|b| i32::try_from(b.len).is_err()) {
                crate::bail!(value, OP, "a gradient of {} elements exceeds MPI's count limit", b.len);
            }
        }
        self.reducer.buffers = plan
            .buckets
            .iter()
            .map(|b| Bucket::zeros(b.dtype, b.len, device).map(Some))
            .collect::<Result<_>>()?;
        self.reducer.missing = plan.buckets.iter().map(|b| b.members.len()).collect();
        self.buckets = plan.buckets.len();
        self.reducer.plan = Some(plan);
        for (id, _, _) in &order {
            let g = grads
                .get_by_id(*id)
                .ok_or_else(|| Error::value(OP, "a recorded gradient is missing from the store"))?
                .clone();
            self.ready_id(*id, &g)?;
        }
        Ok(())
    }
}

impl Drop for StepSync<'_> {
    /// A step left unfinished (an error in the backward pass) still sends
    /// its buckets, flagged, so the other ranks' collectives complete and
    /// they stop with an error instead of waiting for this rank.
    fn drop(&mut self) {
        if !self.finished && self.reducer.plan.is_some() {
            self.fault.get_or_insert_with(|| "this rank's backward pass failed".to_string());
            let _ = self.collect();
        }
    }
}

#[cfg(test)]
mod tests;
