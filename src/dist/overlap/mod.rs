//! Gradients averaged over the ranks while the backward pass still runs:
//! [`OverlapReducer`] (its documentation tells how).

use super::bucket::{check_tensor, Fnv};
use super::comm::{Communicator, HostBuf};
use super::flat::{read_host, write_host};
use super::{Kind, ProcessGroup};
use crate::tensor::TensorId;
use crate::types::Shape;
use crate::{DType, Error, GradStore, Result, Tensor};
use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

const OP: &str = "OverlapReducer";

/// Gradients averaged over the ranks while the backward pass still runs.
///
/// Without overlap a data-parallel step is compute, then communication: the
/// all-reduce starts when the last gradient is known. But a layer near the
/// loss has its gradient long before the first layer has its own, so the
/// gradients can travel in buckets while the backward pass works on the
/// layers below (PyTorch's DDP, llm.c's "overlap"). This reducer
/// does that for CPU gradients:
///
/// 1. The first step records the order in which the gradients become final
///    ([`Tensor::backward_with_hook`]) and cuts that order into buckets of at
///    most [`ProcessGroup::bucket_elems`] elements per dtype (a gradient
///    never straddles two). The ranks check once that their plans agree.
/// 2. From then on, each final gradient is copied into its bucket's buffer;
///    a bucket whose gradients are all in is handed to a communication
///    thread, which all-reduces it (sum, then division by the world size)
///    while the backward pass goes on. Buckets go out in plan order on every
///    rank, so the ranks' collectives pair up.
/// 3. After the backward pass, [`StepSync::finish`] waits for the buckets
///    and writes the means into the gradients (in their own storage where
///    they own it).
///
/// Each bucket carries one extra element, 0 on a rank whose gradients were
/// all there and 1 on one that was missing some: the sum says, on every
/// rank alike, whether any rank failed, without a collective of its own. A
/// step dropped before `finish` (an error in the backward pass) still sends
/// every bucket, flagged, so the other ranks are not left waiting.
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
    pg: ProcessGroup,
    /// The parameters whose gradients are averaged, by id, with their index.
    params: HashMap<TensorId, usize>,
    plan: Option<Plan>,
    /// Each bucket's buffer while it is here (not on the communication thread).
    buffers: Vec<Option<Bucket>>,
    /// Per bucket, the gradients not yet in this step; per parameter, whether
    /// its gradient is in (kept here, so that a steady step allocates nothing).
    missing: Vec<usize>,
    filled: Vec<bool>,
    worker: Option<Worker>,
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
    /// Parameter id → (bucket, offset in it, shape).
    slots: HashMap<TensorId, (usize, usize, Shape)>,
}

struct BucketPlan {
    dtype: DType,
    /// The gradients' elements, then the status element.
    len: usize,
    /// Each gradient's parameter, offset and shape.
    members: Vec<(TensorId, usize, Shape)>,
}

/// A bucket's host buffer.
enum Bucket {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Bucket {
    fn zeros(dtype: DType, len: usize) -> Bucket {
        match dtype {
            DType::F32 => Bucket::F32(vec![0.0; len]),
            _ => Bucket::F64(vec![0.0; len]),
        }
    }
    fn host_buf(&mut self) -> HostBuf<'_> {
        match self {
            Bucket::F32(b) => HostBuf::F32(b),
            Bucket::F64(b) => HostBuf::F64(b),
        }
    }
    /// Copy `grad`'s elements in at `offset`; false when its dtype or size
    /// does not fit there.
    fn fill(&mut self, offset: usize, grad: &Tensor) -> Result<bool> {
        let n = grad.numel();
        // A gradient that is a strided view (rare) is read through a contiguous copy.
        let contiguous;
        let g = if grad.layout().contiguous_range().is_some() {
            grad
        } else {
            contiguous = grad.contiguous()?;
            &contiguous
        };
        Ok(match self {
            Bucket::F32(b) => b
                .get_mut(offset..offset + n)
                .and_then(|dst| read_host::<f32, _>(g, |src| dst.copy_from_slice(src)))
                .is_some(),
            Bucket::F64(b) => b
                .get_mut(offset..offset + n)
                .and_then(|dst| read_host::<f64, _>(g, |src| dst.copy_from_slice(src)))
                .is_some(),
        })
    }
    fn set_status(&mut self, failed: bool) {
        let v = f64::from(u8::from(failed));
        match self {
            Bucket::F32(b) => b.last_mut().into_iter().for_each(|s| *s = v as f32),
            Bucket::F64(b) => b.last_mut().into_iter().for_each(|s| *s = v),
        }
    }
    /// The summed status: how many ranks were missing gradients.
    fn failed_ranks(&self) -> usize {
        match self {
            Bucket::F32(b) => b.last().map_or(0, |&v| v.round() as usize),
            Bucket::F64(b) => b.last().map_or(0, |&v| v.round() as usize),
        }
    }
    /// The mean's elements of one gradient written into `grad` (in its own
    /// storage when it owns it, else a new tensor replaces it in `grads`).
    fn write_back(&self, offset: usize, shape: &Shape, id: TensorId, grads: &mut GradStore) -> Result<()> {
        let n = shape.numel();
        if let Some(g) = grads.get_by_id(id) {
            if g.is_sole_owner() {
                let written = match self {
                    Bucket::F32(b) => write_host::<f32, _>(g, |dst| dst.copy_from_slice(&b[offset..offset + n])),
                    Bucket::F64(b) => write_host::<f64, _>(g, |dst| dst.copy_from_slice(&b[offset..offset + n])),
                };
                if written.is_some() {
                    return Ok(());
                }
            }
        }
        let fresh = match self {
            Bucket::F32(b) => Tensor::from_vec(b[offset..offset + n].to_vec(), shape.clone())?,
            Bucket::F64(b) => Tensor::from_vec(b[offset..offset + n].to_vec(), shape.clone())?,
        };
        grads.insert_by_id(id, fresh);
        Ok(())
    }
}

/// The communication thread: all-reduces the buckets it is sent, in the
/// order sent, and sends each back with the outcome.
struct Worker {
    jobs: Sender<(usize, Bucket)>,
    done: Receiver<(usize, Bucket, Result<()>)>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(comm: Arc<dyn Communicator + Send + Sync>) -> Result<Worker> {
        let (jobs, inbox) = channel::<(usize, Bucket)>();
        let (outbox, done) = channel();
        let world = comm.world_size();
        let thread = std::thread::Builder::new()
            .name("tamer-grad-allreduce".into())
            .spawn(move || {
                for (i, mut bucket) in inbox {
                    let r = comm.all_reduce_sum(bucket.host_buf()).map(|()| divide_by(&mut bucket, world));
                    if outbox.send((i, bucket, r)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::io(OP, format!("cannot start the communication thread: {e}")))?;
        Ok(Worker {
            jobs,
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it is idle (every step
        // waits for its buckets, so it is).
        let (closed, _) = channel();
        self.jobs = closed;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The mean: the sum divided by the world size, as the flat path divides
/// (a division, not a multiplication by a rounded reciprocal). The status
/// element stays a count.
fn divide_by(bucket: &mut Bucket, world: usize) {
    match bucket {
        Bucket::F32(b) => {
            let n = b.len() - 1;
            b[..n].iter_mut().for_each(|x| *x /= world as f32);
        }
        Bucket::F64(b) => {
            let n = b.len() - 1;
            b[..n].iter_mut().for_each(|x| *x /= world as f64);
        }
    }
}

impl OverlapReducer {
    /// A reducer for the gradients of `params` (CPU tensors of f32 or f64)
    /// over `pg`'s ranks.
    pub fn new(pg: &ProcessGroup, params: &[Tensor]) -> Result<OverlapReducer> {
        for (i, p) in params.iter().enumerate() {
            check_tensor(OP, i, p)?;
        }
        Ok(OverlapReducer {
            pg: pg.clone(),
            params: params.iter().enumerate().map(|(i, p)| (p.id(), i)).collect(),
            plan: None,
            buffers: Vec::new(),
            missing: Vec::new(),
            filled: vec![false; params.len()],
            worker: None,
        })
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
        params.len() == self.params.len() && params.iter().enumerate().all(|(i, p)| self.params.get(&p.id()) == Some(&i))
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
            for (id, offset, shape) in &bucket.members {
                slots.insert(*id, (b, *offset, shape.clone()));
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
            check_tensor(OP, self.recorded.len(), grad)?;
            self.recorded.push((id, grad.dtype(), grad.shape().clone()));
            return Ok(());
        };
        let Some((b, offset, shape)) = plan.slots.get(&id).cloned() else {
            self.fault.get_or_insert_with(|| {
                format!(
                    "a parameter of shape {} got a gradient that the first step did not give it; overlapped gradient averaging needs the same parameters to get gradients every step",
                    grad.shape()
                )
            });
            return Ok(());
        };
        if std::mem::replace(&mut self.reducer.filled[index], true) {
            self.fault
                .get_or_insert_with(|| format!("the gradient of a parameter of shape {shape} was passed twice in one step"));
            return Ok(());
        }
        let fits = grad.shape() == &shape
            && grad.dtype() == plan.buckets[b].dtype
            && self.reducer.buffers[b].as_mut().map(|buf| buf.fill(offset, grad)).transpose()?.unwrap_or(false);
        if !fits {
            self.fault.get_or_insert_with(|| {
                format!(
                    "a gradient of {} {} where the first step had {} {shape} (on the CPU)",
                    grad.dtype(),
                    grad.shape(),
                    plan.buckets[b].dtype
                )
            });
        }
        self.reducer.missing[b] -= 1;
        self.launch_ready()
    }

    /// How many buckets have gone to the communication thread so far.
    pub fn buckets_sent(&self) -> usize {
        self.launched
    }

    /// Send out, in plan order, every bucket whose gradients are all in.
    fn launch_ready(&mut self) -> Result<()> {
        while self.launched < self.buckets && self.reducer.missing[self.launched] == 0 {
            self.launch(self.launched)?;
        }
        Ok(())
    }

    fn launch(&mut self, b: usize) -> Result<()> {
        let failed = self.fault.is_some();
        let reducer = &mut *self.reducer;
        let mut bucket = reducer.buffers[b]
            .take()
            .ok_or_else(|| Error::value(OP, format!("bucket {b} is already out")))?;
        bucket.set_status(failed);
        let worker = match &mut reducer.worker {
            Some(w) => w,
            None => reducer.worker.insert(Worker::start(reducer.pg.comm.clone())?),
        };
        worker
            .jobs
            .send((b, bucket))
            .map_err(|_| Error::value(OP, "the communication thread has stopped"))?;
        self.launched += 1;
        Ok(())
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
        while self.returned < self.launched {
            let Some(worker) = &self.reducer.worker else { break };
            match worker.done.recv() {
                Ok((b, bucket, r)) => {
                    if let Err(e) = r {
                        first_error.get_or_insert(e);
                    }
                    failed_ranks = failed_ranks.max(bucket.failed_ranks());
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
        for (id, (b, offset, shape)) in &plan.slots {
            let bucket = reducer.buffers[*b]
                .as_ref()
                .ok_or_else(|| Error::value(OP, format!("bucket {b} did not come back")))?;
            bucket.write_back(*offset, shape, *id, grads)?;
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
        for b in &plan.buckets {
            if i32::try_from(b.len).is_err() {
                crate::bail!(value, OP, "a gradient of {} elements exceeds MPI's count limit", b.len);
            }
        }
        self.reducer.buffers = plan.buckets.iter().map(|b| Some(Bucket::zeros(b.dtype, b.len))).collect();
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
