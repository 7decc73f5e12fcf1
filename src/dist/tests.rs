//! The process group over the single process, and over a fake world of two
//! whose other rank mirrors this one (it passes the same buffers), which
//! shows the bucketing, the mean and the agreement check without MPI.

use super::*;
use crate::DType;
use std::sync::Mutex;

/// World size 2; the other rank sends what this one sends, except that its
/// agreement signature can be changed to fake a disagreeing rank.
#[derive(Default)]
struct Mirror {
    /// Lengths of the float buffers each collective call moved.
    calls: Mutex<Vec<(&'static str, usize)>>,
    other_signature_differs: bool,
}

impl Mirror {
    fn log(&self, what: &'static str, n: usize) {
        self.calls.lock().unwrap().push((what, n));
    }
}

impl Communicator for Mirror {
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
        "mirror"
    }
    fn all_reduce_sum(&self, buf: HostBuf<'_>) -> Result<()> {
        self.log("all_reduce", buf.len());
        match buf {
            HostBuf::F32(b) => b.iter_mut().for_each(|x| *x += *x),
            HostBuf::F64(b) => b.iter_mut().for_each(|x| *x += *x),
            HostBuf::U64(_) => unreachable!("not summed"),
        }
        Ok(())
    }
    fn broadcast(&self, buf: HostBuf<'_>, _root: usize) -> Result<()> {
        self.log("broadcast", buf.len());
        Ok(())
    }
    fn all_gather(&self, send: HostBuf<'_>, recv: HostBuf<'_>) -> Result<()> {
        comm::check_lengths("all_gather", &send, &recv, 2, 1)?;
        match (send, recv) {
            (HostBuf::F32(s), HostBuf::F32(r)) => {
                r[..s.len()].copy_from_slice(s);
                r[s.len()..].copy_from_slice(s);
            }
            (HostBuf::F64(s), HostBuf::F64(r)) => {
                r[..s.len()].copy_from_slice(s);
                r[s.len()..].copy_from_slice(s);
            }
            (HostBuf::U64(s), HostBuf::U64(r)) => {
                r[..s.len()].copy_from_slice(s);
                r[s.len()..].copy_from_slice(s);
                if self.other_signature_differs {
                    r[s.len() + 2] += 1; // the other rank has one more f32 element
                }
            }
            _ => unreachable!("checked"),
        }
        Ok(())
    }
    fn reduce_scatter_sum(&self, send: HostBuf<'_>, recv: HostBuf<'_>) -> Result<()> {
        comm::check_lengths("reduce_scatter", &send, &recv, 1, 2)?;
        match (send, recv) {
            (HostBuf::F32(s), HostBuf::F32(r)) => r.iter_mut().zip(s.iter()).for_each(|(r, s)| *r = 2.0 * s),
            (HostBuf::F64(s), HostBuf::F64(r)) => r.iter_mut().zip(s.iter()).for_each(|(r, s)| *r = 2.0 * s),
            _ => unreachable!("checked"),
        }
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

fn t32(v: &[f32], dims: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), dims.to_vec()).unwrap()
}
fn t64(v: &[f64], dims: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), dims.to_vec()).unwrap()
}

#[test]
fn single_collectives_are_the_identity_with_shapes_and_dtypes_kept() {
    let pg = ProcessGroup::single();
    let a = t32(&[1.0, -2.0, 3.5, 4.0], &[2, 2]);
    let b = t64(&[0.25, 1e300], &[2]);
    for op in [ReduceOp::Sum, ReduceOp::Mean] {
        let r = pg.all_reduce(&[a.clone(), b.clone()], op).unwrap();
        assert_eq!((r[0].dims(), r[0].dtype()), (&[2usize, 2][..], DType::F32));
        assert_eq!(r[0].to_vec::<f32>().unwrap(), [1.0, -2.0, 3.5, 4.0]);
        assert_eq!(r[1].to_vec::<f64>().unwrap(), [0.25, 1e300]);
    }
    let r = pg.broadcast(std::slice::from_ref(&b), 0).unwrap();
    assert_eq!(r[0].to_vec::<f64>().unwrap(), [0.25, 1e300]);
    let g = pg.all_gather(&a).unwrap();
    assert_eq!(g.dims(), &[1, 2, 2]);
    assert_eq!(g.to_vec::<f32>().unwrap(), [1.0, -2.0, 3.5, 4.0]);
    let s = pg.reduce_scatter(&b, ReduceOp::Mean).unwrap();
    assert_eq!((s.dims(), s.to_vec::<f64>().unwrap()), (&[2usize][..], vec![0.25, 1e300]));
    let mut v = [3.0, 4.0];
    pg.all_reduce_scalars(&mut v, ReduceOp::Sum).unwrap();
    assert_eq!(v, [3.0, 4.0]);
    pg.barrier().unwrap();
}

#[test]
fn single_results_are_cut_from_the_graph() {
    let x = t64(&[1.0, 2.0], &[2]).variable();
    let r = ProcessGroup::single().all_reduce(std::slice::from_ref(&x), ReduceOp::Mean).unwrap();
    assert!(x.requires_grad() && !r[0].requires_grad());
}

#[test]
fn single_refuses_what_a_larger_world_would_refuse() {
    let pg = ProcessGroup::single();
    let e = pg.all_reduce(&[t32(&[1.0], &[1]), Tensor::scalar(1i64)], ReduceOp::Sum).err().unwrap();
    assert!(e.message.contains("tensor 1") && e.message.contains("i64"), "{e}");
    let e = pg.broadcast(&[], 3).err().unwrap();
    assert!(e.message.contains("root rank 3"), "{e}");
    assert!(pg.all_gather(&Tensor::scalar(half::f16::ONE)).is_err());
    assert_eq!(
        pg.reduce_scatter(&Tensor::scalar(1.0f64), ReduceOp::Sum).err().unwrap().kind,
        crate::ErrorKind::Shape
    );
}

#[test]
fn all_reduce_goes_in_fixed_size_buckets_per_dtype_and_mean_divides_by_the_world() {
    let mirror = Arc::new(Mirror::default());
    let pg = ProcessGroup::new(mirror.clone()).with_bucket_elems(4).unwrap();
    assert_eq!(pg.world_size(), 2);
    let a = t32(&(0..6).map(|i| i as f32).collect::<Vec<_>>(), &[2, 3]);
    let b = t64(&[1.5, -3.0, 0.5], &[3]);
    let c = t32(&[10.0, 11.0, 12.0], &[3, 1]);
    let sum = pg.all_reduce(&[a.clone(), b.clone(), c.clone()], ReduceOp::Sum).unwrap();
    assert_eq!(sum[0].to_vec::<f32>().unwrap(), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    assert_eq!(sum[1].to_vec::<f64>().unwrap(), [3.0, -6.0, 1.0]);
    assert_eq!((sum[2].dims(), sum[2].to_vec::<f32>().unwrap()), (&[3usize, 1][..], vec![20.0, 22.0, 24.0]));
    // 9 f32 elements in buckets of 4, 4, 1; 3 f64 in one.
    assert_eq!(
        *mirror.calls.lock().unwrap(),
        [("all_reduce", 4), ("all_reduce", 4), ("all_reduce", 1), ("all_reduce", 3)]
    );
    let mean = pg.all_reduce(&[a.clone(), b.clone()], ReduceOp::Mean).unwrap();
    assert_eq!(mean[0].to_vec::<f32>().unwrap(), a.to_vec::<f32>().unwrap());
    assert_eq!(mean[1].to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
}

#[test]
fn in_place_all_reduce_writes_the_copying_results_into_the_tensors() {
    let mirror = Arc::new(Mirror::default());
    let pg = ProcessGroup::new(mirror.clone()).with_bucket_elems(4).unwrap();
    let a = t32(&(0..6).map(|i| i as f32).collect::<Vec<_>>(), &[2, 3]);
    let b = t64(&[1.5, -3.0, 0.5], &[3]);
    let c = t32(&[10.0, 11.0, 12.0], &[3, 1]);
    let copied = pg.all_reduce(&[a.clone(), b.clone(), c.clone()], ReduceOp::Sum).unwrap();
    mirror.calls.lock().unwrap().clear();
    let view_of_a = a.clone();
    let mut buffers = FlatBuffers::default();
    pg.all_reduce_in_place(&[a.clone(), b.clone(), c.clone()], ReduceOp::Sum, &mut buffers).unwrap();
    for (got, want) in [&a, &b, &c].into_iter().zip(&copied) {
        assert_eq!(got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    }
    assert_eq!(view_of_a.to_vec::<f32>().unwrap()[5], 10.0, "the tensor's own storage holds the sum");
    // The same buckets as the copying all-reduce.
    assert_eq!(
        *mirror.calls.lock().unwrap(),
        [("all_reduce", 4), ("all_reduce", 4), ("all_reduce", 1), ("all_reduce", 3)]
    );
    let capacity = buffers.capacity_bytes();
    pg.all_reduce_in_place(&[a.clone(), b.clone(), c.clone()], ReduceOp::Mean, &mut buffers)
        .unwrap();
    assert_eq!(b.to_vec::<f64>().unwrap(), [3.0, -6.0, 1.0], "the mean of two equal ranks");
    assert_eq!(buffers.capacity_bytes(), capacity, "the buffers are reused, not grown");
}

#[test]
fn broadcast_gather_and_scatter_over_a_world_of_two() {
    let mirror = Arc::new(Mirror::default());
    let pg = ProcessGroup::new(mirror.clone()).with_bucket_elems(2).unwrap();
    let b = pg.broadcast(&[t64(&[1.0, 2.0, 3.0], &[3])], 1).unwrap();
    assert_eq!(b[0].to_vec::<f64>().unwrap(), [1.0, 2.0, 3.0]);
    assert_eq!(*mirror.calls.lock().unwrap(), [("broadcast", 2), ("broadcast", 1)]);
    assert!(pg.broadcast(&[], 2).is_err());
    let g = pg.all_gather(&t32(&[1.0, 2.0], &[1, 2])).unwrap();
    assert_eq!((g.dims(), g.to_vec::<f32>().unwrap()), (&[2usize, 1, 2][..], vec![1.0, 2.0, 1.0, 2.0]));
    let s = pg.reduce_scatter(&t64(&[1.0, 2.0, 3.0, 4.0], &[2, 2]), ReduceOp::Mean).unwrap();
    assert_eq!((s.dims(), s.to_vec::<f64>().unwrap()), (&[1usize, 2][..], vec![1.0, 2.0]));
    let e = pg.reduce_scatter(&t64(&[1.0, 2.0, 3.0], &[3]), ReduceOp::Sum).err().unwrap();
    assert!(e.message.contains("does not divide into 2"), "{e}");
    let mut v = [1.0, 3.0];
    pg.all_reduce_scalars(&mut v, ReduceOp::Sum).unwrap();
    assert_eq!(v, [2.0, 6.0]);
}

#[test]
fn a_rank_with_other_tensors_is_an_error_naming_both_ranks_before_any_exchange() {
    let mirror = Arc::new(Mirror {
        other_signature_differs: true,
        ..Mirror::default()
    });
    let pg = ProcessGroup::new(mirror.clone());
    let e = pg.all_reduce(&[t32(&[1.0, 2.0], &[2])], ReduceOp::Sum).err().unwrap();
    assert_eq!((e.op, e.kind.clone()), ("all_reduce", crate::ErrorKind::Shape));
    assert!(e.message.contains("rank 0: all_reduce of 1 tensor(s), 2 f32"), "{e}");
    assert!(e.message.contains("rank 1: all_reduce of 1 tensor(s), 3 f32"), "{e}");
    assert!(mirror.calls.lock().unwrap().is_empty(), "no data moved after the mismatch");
}

#[test]
fn from_env_without_a_launcher_is_a_world_of_one() {
    // The test process is not started by mpirun (the MPI tests are their own binary).
    if LAUNCHER_SIZE_VARS.iter().any(|v| std::env::var(v).is_ok()) {
        println!("skipped: this test process was started by an MPI launcher");
        return;
    }
    let pg = ProcessGroup::from_env().unwrap();
    assert_eq!((pg.world_size(), pg.backend_name()), (1, "single"));
}
