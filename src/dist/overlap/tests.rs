//! The overlapped reducer against a fake world of two whose other rank
//! sends `g + 1`: the means, the buckets' timing and sizes, and the failures.

use super::*;
use crate::dist::{Communicator, HostBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// World size 2; the other rank sends `x + 1` where this one sends `x`
/// (so the mean is `x + 0.5`), and its status element is `other_failed`.
#[derive(Default)]
struct PlusOne {
    other_failed: AtomicUsize,
    /// Lengths of the float buffers summed, in order.
    sums: Mutex<Vec<usize>>,
    /// This rank's status element of each bucket, in order.
    statuses: Mutex<Vec<f64>>,
}

impl Communicator for PlusOne {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        2
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn name(&self) -> &'static str {
        "plus-one"
    }
    fn all_reduce_sum(&self, buf: HostBuf<'_>) -> Result<()> {
        self.sums.lock().unwrap().push(buf.len());
        let other = self.other_failed.load(Ordering::Relaxed) as f64;
        let mut statuses = self.statuses.lock().unwrap();
        match buf {
            HostBuf::F32(b) => {
                let n = b.len() - 1;
                statuses.push(f64::from(b[n]));
                b[..n].iter_mut().for_each(|x| *x = *x + (*x + 1.0));
                b[n] += other as f32;
            }
            HostBuf::F64(b) => {
                let n = b.len() - 1;
                statuses.push(b[n]);
                b[..n].iter_mut().for_each(|x| *x = *x + (*x + 1.0));
                b[n] += other;
            }
            HostBuf::U64(_) => unreachable!("not summed"),
        }
        Ok(())
    }
    fn broadcast(&self, _buf: HostBuf<'_>, _root: usize) -> Result<()> {
        Ok(())
    }
    fn all_gather(&self, send: HostBuf<'_>, recv: HostBuf<'_>) -> Result<()> {
        // The agreement: the other rank sends the same signature.
        match (send, recv) {
            (HostBuf::U64(s), HostBuf::U64(r)) => {
                r[..s.len()].copy_from_slice(s);
                r[s.len()..].copy_from_slice(s);
            }
            _ => unreachable!("only the agreement gathers here"),
        }
        Ok(())
    }
    fn reduce_scatter_sum(&self, _send: HostBuf<'_>, _recv: HostBuf<'_>) -> Result<()> {
        unreachable!("not used")
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// Three layers of f32 (4, 6 and 2 elements) and an f64 one, in one loss.
struct Model {
    w: Vec<Tensor>,
    bias64: Tensor,
}

impl Model {
    fn new() -> Model {
        let w = [4usize, 6, 2]
            .iter()
            .enumerate()
            .map(|(i, &n)| Tensor::from_vec((0..n).map(|k| 0.1 * (k + i) as f32 - 0.2).collect(), [n]).unwrap().variable())
            .collect();
        let bias64 = Tensor::from_vec(vec![0.5f64, -1.5, 2.0], [3]).unwrap().variable();
        Model { w, bias64 }
    }
    fn params(&self) -> Vec<Tensor> {
        let mut p = self.w.clone();
        p.push(self.bias64.clone());
        p
    }
    /// w0 first, w2 last (nearest the loss).
    fn loss(&self, skip_w1: bool) -> Tensor {
        let h0 = self.w[0].square().unwrap().sum_all().unwrap();
        let mut h = h0.mul(&self.w[2].sum_all().unwrap()).unwrap();
        if !skip_w1 {
            h = h.add(&self.w[1].tanh().unwrap().sum_all().unwrap()).unwrap();
        }
        let b = self.bias64.square().unwrap().sum_all().unwrap().to_dtype(DType::F32).unwrap();
        h.mul(&self.w[2].square().unwrap().sum_all().unwrap()).unwrap().add(&b).unwrap()
    }
}

fn group(comm: Arc<PlusOne>, bucket_elems: usize) -> ProcessGroup {
    ProcessGroup::new(comm).with_bucket_elems(bucket_elems).unwrap()
}

/// Device buckets driven on the CPU, summed (by [`PlusOne`]) only at
/// `wait`, from what the bucket holds then, as a GPU's side stream would
/// read it whenever it gets to it: a read before `wait` sees the unsummed
/// values, and a bucket refilled before `wait` is summed with the new ones.
struct FakeExchange {
    comm: Arc<PlusOne>,
    pending: Mutex<Vec<Tensor>>,
}

impl DeviceExchange for FakeExchange {
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn start_sum(&self, bucket: &Tensor) -> Result<()> {
        self.pending.lock().unwrap().push(bucket.clone());
        Ok(())
    }
    fn wait(&self) -> Result<()> {
        for bucket in self.pending.lock().unwrap().drain(..) {
            let summed = match bucket.dtype() {
                DType::F32 => {
                    let mut v = bucket.to_vec::<f32>()?;
                    self.comm.all_reduce_sum(HostBuf::F32(&mut v))?;
                    Tensor::from_vec(v, [bucket.numel()])?
                }
                _ => {
                    let mut v = bucket.to_vec::<f64>()?;
                    self.comm.all_reduce_sum(HostBuf::F64(&mut v))?;
                    Tensor::from_vec(v, [bucket.numel()])?
                }
            };
            bucket.assign(&summed)?;
        }
        Ok(())
    }
}

/// A reducer of `model`'s gradients over `pg`: host buckets, or device
/// buckets through a [`FakeExchange`].
fn reducer(pg: &ProcessGroup, comm: &Arc<PlusOne>, model: &Model, device: bool) -> OverlapReducer {
    reducer_of(pg, comm, &model.params(), device)
}

/// [`reducer`] of any parameters.
fn reducer_of(pg: &ProcessGroup, comm: &Arc<PlusOne>, params: &[Tensor], device: bool) -> OverlapReducer {
    match device {
        false => OverlapReducer::new(pg, params).unwrap(),
        true => {
            let fake = FakeExchange {
                comm: comm.clone(),
                pending: Mutex::new(Vec::new()),
            };
            OverlapReducer::with_exchange(pg, params, Some(Arc::new(fake)))
        }
    }
}

/// The mean of `g` and the other rank's `g + 1`, in `g`'s dtype, as f64.
fn mean_with_other(g: &Tensor) -> Vec<f64> {
    match g.dtype() {
        DType::F32 => g.to_vec::<f32>().unwrap().iter().map(|&x| f64::from((x + (x + 1.0)) / 2.0)).collect(),
        _ => g.to_vec::<f64>().unwrap().iter().map(|&x| (x + (x + 1.0)) / 2.0).collect(),
    }
}

/// `test(comm, model, reducer)` with host buckets, then with device
/// buckets, each time on a fresh world whose first step has made the plan.
fn with_both_kinds(test: impl Fn(&Arc<PlusOne>, &Model, &mut OverlapReducer)) {
    for device in [false, true] {
        let comm = Arc::new(PlusOne::default());
        let model = Model::new();
        let mut reducer = planned(&comm, &model, device);
        test(&comm, &model, &mut reducer);
    }
}

#[test]
fn the_means_equal_the_flat_all_reduce_and_buckets_leave_during_the_backward_pass() {
    for device in [false, true] {
        the_means_and_buckets(device);
    }
}

fn the_means_and_buckets(device: bool) {
    let comm = Arc::new(PlusOne::default());
    let pg = group(comm.clone(), 8);
    let model = Model::new();
    let mut reducer = reducer(&pg, &comm, &model, device);
    for step in 0..3 {
        // The other rank sends g + 1: the mean is g + 0.5.
        let expected: Vec<Vec<f64>> = {
            let grads = model.loss(false).backward().unwrap();
            model.params().iter().map(|p| mean_with_other(grads.get(p).unwrap())).collect()
        };
        comm.sums.lock().unwrap().clear();
        let mut sync = reducer.begin();
        let (mut sent_while_running, mut order) = (Vec::new(), Vec::new());
        let mut grads = model
            .loss(false)
            .backward_with_hook(|v, g| {
                sync.ready(v, g)?;
                order.push(v.numel());
                sent_while_running.push(sync.buckets_sent());
                Ok(())
            })
            .unwrap();
        sync.finish(&mut grads).unwrap();
        for (p, want) in model.params().iter().zip(&expected) {
            assert_eq!(&grads.get(p).unwrap().to_f64_vec().unwrap(), want, "step {step}, device buckets {device}");
        }
        // The walk is depth-first: w0's branch is done first, the f64 bias last.
        assert_eq!(order, [4, 6, 2, 3]);
        if step == 0 {
            // The first step records the order and sends everything at the end.
            assert!(sent_while_running.iter().all(|&n| n == 0), "{sent_while_running:?}");
        } else {
            // w0's bucket left at w0's report; w1 and w2 share the next,
            // sent at w2's, while the pass still had the bias to do. The
            // last bucket (the bias) waits for `finish`.
            assert_eq!(sent_while_running, [1, 1, 2, 2]);
        }
        // Buckets of at most 8 f32 elements, each plus its status element:
        // [w0] (w1 would overflow it), [w1, w2], then the f64 bucket [bias].
        assert_eq!(reducer.bucket_count(), 3);
        assert_eq!(*comm.sums.lock().unwrap(), [5, 9, 4]);
    }
}

/// One overlapped step of `model` (skipping w1 when asked); the hook's
/// error after `fail_after` reports, if given.
fn step(reducer: &mut OverlapReducer, model: &Model, skip_w1: bool, fail_after: Option<usize>) -> Result<GradStore> {
    let mut sync = reducer.begin();
    let mut seen = 0;
    let mut grads = model.loss(skip_w1).backward_with_hook(|v, g| {
        if fail_after == Some(seen) {
            return Err(Error::value("test", "the backward pass failed here"));
        }
        seen += 1;
        sync.ready(v, g)
    })?;
    sync.finish(&mut grads)?;
    Ok(grads)
}

fn planned(comm: &Arc<PlusOne>, model: &Model, device: bool) -> OverlapReducer {
    let mut reducer = reducer(&group(comm.clone(), 8), comm, model, device);
    step(&mut reducer, model, false, None).unwrap();
    comm.sums.lock().unwrap().clear();
    comm.statuses.lock().unwrap().clear();
    reducer
}

#[test]
fn a_rank_missing_a_gradient_still_sends_every_bucket_flagged_and_every_rank_errs() {
    with_both_kinds(|comm, model, reducer| {
        // This rank: w1 gets no gradient.
        let err = step(reducer, model, true, None).unwrap_err();
        assert!(err.to_string().contains("some parameters got no gradient"), "{err}");
        assert_eq!(*comm.statuses.lock().unwrap(), [0.0, 1.0, 1.0], "w0's bucket left before the fault was known");
        // The other rank's flag: this rank's step fails too, naming the count.
        comm.statuses.lock().unwrap().clear();
        comm.other_failed.store(1, Ordering::Relaxed);
        let err = step(reducer, model, false, None).unwrap_err();
        assert!(err.to_string().contains("1 other rank(s) were missing gradients"), "{err}");
        assert_eq!(*comm.statuses.lock().unwrap(), [0.0, 0.0, 0.0]);
        // And when both ranks are whole again, the step goes through.
        comm.other_failed.store(0, Ordering::Relaxed);
        step(reducer, model, false, None).unwrap();
    });
}

#[test]
fn a_backward_pass_that_fails_midway_still_sends_its_buckets_flagged() {
    with_both_kinds(|comm, model, reducer| {
        let err = step(reducer, model, false, Some(2)).unwrap_err();
        assert!(err.to_string().contains("failed here"), "{err}");
        // w0's bucket had left; the other two went out flagged when the step was dropped.
        assert_eq!(*comm.sums.lock().unwrap(), [5, 9, 4]);
        assert_eq!(*comm.statuses.lock().unwrap(), [0.0, 1.0, 1.0]);
        // The reducer is whole for the next step.
        step(reducer, model, false, None).unwrap();
    });
}

#[test]
fn gradients_are_written_in_place_unless_shared_and_other_variables_are_left_alone() {
    with_both_kinds(|_, model, reducer| {
        let extra = Tensor::from_vec(vec![3.0f32], [1]).unwrap().variable();
        let loss = model.loss(false).add(&extra.sum_all().unwrap()).unwrap();
        let mut sync = reducer.begin();
        let mut held = None;
        let mut grads = loss
            .backward_with_hook(|v, g| {
                if v.id() == model.w[1].id() {
                    held = Some(g.clone()); // a second handle: w1's gradient is shared
                }
                sync.ready(v, g)
            })
            .unwrap();
        let held = held.unwrap();
        let held_values = held.to_vec::<f32>().unwrap();
        let w0_values = grads.get(&model.w[0]).unwrap().to_vec::<f32>().unwrap();
        let w0_tensor = grads.get(&model.w[0]).unwrap().id();
        sync.finish(&mut grads).unwrap();
        // w0's gradient was the store's alone: the mean is written into it.
        assert_eq!(grads.get(&model.w[0]).unwrap().id(), w0_tensor);
        // w1's gradient was shared: replaced by a new tensor, the held one untouched.
        assert_eq!(held.to_vec::<f32>().unwrap(), held_values);
        assert!(!grads.get(&model.w[1]).unwrap().same_storage(&held));
        let w1: Vec<f32> = held_values.iter().map(|&x| (x + (x + 1.0)) / 2.0).collect();
        assert_eq!(grads.get(&model.w[1]).unwrap().to_vec::<f32>().unwrap(), w1);
        let w0: Vec<f32> = w0_values.iter().map(|&x| (x + (x + 1.0)) / 2.0).collect();
        assert_eq!(grads.get(&model.w[0]).unwrap().to_vec::<f32>().unwrap(), w0);
        // Not a parameter of the reducer: its gradient is this rank's own.
        assert_eq!(grads.get(&extra).unwrap().to_vec::<f32>().unwrap(), [1.0]);
    });
}

#[test]
fn parameters_the_host_cannot_exchange_are_refused() {
    let pg = ProcessGroup::single();
    let half = Tensor::ones([2], DType::F32).unwrap().to_dtype(DType::F16).unwrap().variable();
    let err = OverlapReducer::new(&pg, &[half]).unwrap_err();
    assert!(err.to_string().contains("expected f32 or f64"), "{err}");
}

#[test]
fn gradients_only_earlier_micro_batches_reached_are_averaged_too() {
    for device in [false, true] {
        let comm = Arc::new(PlusOne::default());
        let pg = group(comm.clone(), 8);
        let model = Model::new();
        let mut reducer = reducer(&pg, &comm, &model, device);
        for step in 0..3 {
            // Two micro-batches; w1 only in the first. The last pass's hook
            // never reports w1: `finish` finds its sum in the store.
            let expected = {
                let mut plain = crate::optim::GradAccumulator::new(2).unwrap();
                plain.add(&model.loss(false).backward().unwrap()).unwrap();
                plain.add(&model.loss(true).backward().unwrap()).unwrap();
                plain.take()
            };
            let mut acc = crate::optim::GradAccumulator::new(2).unwrap();
            acc.add(&model.loss(false).backward().unwrap()).unwrap();
            let mut sync = reducer.begin();
            let mut reported = 0;
            model
                .loss(true)
                .backward_with_hook(|v, g| {
                    let sum = acc.add_one(v.id(), g)?;
                    reported += 1;
                    sync.ready(v, sum)
                })
                .unwrap();
            acc.end_pass();
            let mut grads = acc.take();
            sync.finish(&mut grads).unwrap();
            assert_eq!(reported, 3, "w1 was not in the last pass");
            for p in model.params() {
                let want = mean_with_other(expected.get(&p).unwrap());
                assert_eq!(grads.get(&p).unwrap().to_f64_vec().unwrap(), want, "step {step}, device buckets {device}");
            }
        }
        assert_eq!(reducer.bucket_count(), 3);
    }
}

#[test]
fn a_fault_met_after_the_other_buckets_left_reaches_the_other_ranks_in_the_last() {
    for device in [false, true] {
        let comm = Arc::new(PlusOne::default());
        let pg = group(comm.clone(), 8);
        let model = Model::new();
        // A parameter the first step gives no gradient.
        let late = Tensor::from_vec(vec![2.0f32], [1]).unwrap().variable();
        let mut params = model.params();
        params.push(late.clone());
        let mut reducer = reducer_of(&pg, &comm, &params, device);
        let mut run = |with_late: bool| -> Result<()> {
            let mut loss = model.loss(false);
            if with_late {
                loss = loss.add(&late.square()?.sum_all()?)?;
            }
            let mut sync = reducer.begin();
            let mut grads = loss.backward_with_hook(|v, g| sync.ready(v, g))?;
            sync.finish(&mut grads)
        };
        run(false).unwrap();
        comm.statuses.lock().unwrap().clear();
        let err = run(true).unwrap_err();
        assert!(err.to_string().contains("that the first step did not give it"), "{err}");
        // Whenever this rank met the fault, the last bucket, sent by `finish`, carries it.
        let statuses = comm.statuses.lock().unwrap().clone();
        assert_eq!((statuses.len(), statuses.last()), (3, Some(&1.0)), "device buckets {device}");
    }
}

#[test]
fn a_parameter_listed_twice_is_refused() {
    let w = Tensor::ones([2], DType::F32).unwrap().variable();
    let err = OverlapReducer::new(&ProcessGroup::single(), &[w.clone(), w]).unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
}

#[test]
fn a_step_forgotten_mid_flight_cannot_race_the_next_on_device_buckets() {
    let comm = Arc::new(PlusOne::default());
    let model = Model::new();
    let mut reducer = planned(&comm, &model, true);
    // A step whose buckets went out (the fake holds their sums until `wait`),
    // then forgotten: no finish, no drop.
    let mut sync = reducer.begin();
    let grads = model.loss(false).backward_with_hook(|v, g| sync.ready(v, g)).unwrap();
    assert_eq!(sync.buckets_sent(), 2);
    std::mem::forget(sync);
    drop(grads);
    // The next step waits for them before refilling: its means are its own.
    let mut sync = reducer.begin();
    let mut grads = model.loss(false).backward_with_hook(|v, g| sync.ready(v, g)).unwrap();
    sync.finish(&mut grads).unwrap();
    let plain = model.loss(false).backward().unwrap();
    for p in model.params() {
        let want = mean_with_other(plain.get(&p).unwrap());
        assert_eq!(grads.get(&p).unwrap().to_f64_vec().unwrap(), want);
    }
}
