//! NCCL in a world of one process (feature `nccl`): every collective on GPU
//! tensors through the NCCL communicator, and a training run whose
//! gradients go through it. One rank cannot show that values are summed
//! across GPUs (tests/mpi does, on a machine with two or more); it shows
//! that the calls reach the right memory, keep their results on the GPU and
//! leave everything else alone, and that the trainer's NCCL path matches a
//! run without it bit for bit (NCCL's mean over one rank is the identity).

use crate::harness::{assert_on, gpu, input, skip};
use tamer::dist::{ProcessGroup, ReduceOp};
use tamer::{DType, Device, Tensor};

/// A world of one with NCCL on `dev`, or None after a skip (a failure under
/// TAMER_REQUIRE_CUDA=1) when the library is missing.
fn nccl_group(dev: Device) -> Option<ProcessGroup> {
    match ProcessGroup::single().with_nccl(dev) {
        Ok(pg) => Some(pg),
        Err(e) if e.to_string().contains("libnccl.so") => {
            skip(&format!("NCCL is not usable: {e}"));
            None
        }
        Err(e) => panic!("with_nccl on {dev}: {e}"),
    }
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_f64_vec().expect("values").iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_collective_keeps_values_and_device_over_one_rank() {
    let Some(dev) = gpu() else { return };
    let Some(pg) = nccl_group(dev) else { return };
    assert_eq!(pg.gpu_backend_name(), Some("nccl"));
    assert!(pg.exchanges_on(dev));
    let on = |t: Tensor| t.to_device(dev).expect("to_device");
    let a = on(input(&[2, 3], 1, DType::F32));
    let b = on(input(&[5], 2, DType::F64));
    let c = on(input(&[4], 3, DType::BF16));
    let at = a.transpose(0, 1).expect("transpose"); // a strided view: exchanged as a copy
    let list = [a.clone(), b.clone(), c.clone(), at.clone()];
    for op in [ReduceOp::Sum, ReduceOp::Mean] {
        let out = pg.all_reduce(&list, op).expect("all_reduce");
        assert_on("all_reduce", dev, &out);
        for (i, (x, y)) in list.iter().zip(&out).enumerate() {
            assert_eq!((x.dims(), x.dtype()), (y.dims(), y.dtype()), "all_reduce output {i}");
            assert_eq!(bits(x), bits(y), "all_reduce {op:?} output {i}");
            assert!(!x.same_storage(y), "all_reduce output {i} must be a new tensor");
        }
    }
    let out = pg.broadcast(&list, 0).expect("broadcast");
    assert_on("broadcast", dev, &out);
    assert!(list.iter().zip(&out).all(|(x, y)| bits(x) == bits(y)));
    assert!(pg.broadcast(&list, 1).is_err(), "no rank 1");

    let gathered = pg.all_gather(&a).expect("all_gather");
    assert_on("all_gather", dev, std::slice::from_ref(&gathered));
    assert_eq!(gathered.dims(), &[1, 2, 3]);
    assert_eq!(bits(&gathered), bits(&a));
    let gathered_view = pg.all_gather(&at).expect("all_gather of a strided view");
    assert_eq!((gathered_view.dims(), bits(&gathered_view)), (&[1usize, 3, 2][..], bits(&at)));
    let x = on(input(&[4, 3], 4, DType::F64));
    let mine = pg.reduce_scatter(&x, ReduceOp::Mean).expect("reduce_scatter");
    assert_eq!((mine.dims(), mine.device()), (&[4usize, 3][..], dev));
    assert_eq!(bits(&mine), bits(&x));
}

#[test]
fn in_place_writes_only_the_tensors_own_elements() {
    let Some(dev) = gpu() else { return };
    let Some(pg) = nccl_group(dev) else { return };
    // Rows 2..5 of a [6, 4] tensor: contiguous, starting 8 elements in.
    let whole = input(&[6, 4], 5, DType::F32).to_device(dev).expect("to_device");
    let before = bits(&whole);
    let rows = whole.narrow(0, 2, 3).expect("narrow");
    let mut buffers = tamer::dist::FlatBuffers::default();
    pg.all_reduce_in_place(std::slice::from_ref(&rows), ReduceOp::Sum, &mut buffers)
        .expect("all_reduce_in_place");
    assert_eq!(bits(&whole), before, "every element as it was, the rows' neighbours too");
    assert_eq!(buffers.capacity_bytes(), 0, "NCCL needs no host buffers");
    // The same storage twice would be written twice: refused.
    let e = pg.all_reduce_in_place(&[rows.clone(), rows.clone()], ReduceOp::Sum, &mut buffers).unwrap_err();
    assert!(e.to_string().contains("share storage"), "{e}");
}

#[test]
fn what_nccl_cannot_exchange_is_an_error() {
    let Some(dev) = gpu() else { return };
    let Some(pg) = nccl_group(dev) else { return };
    let g = input(&[3], 6, DType::F32).to_device(dev).expect("to_device");
    let e = pg.all_reduce(&[g.clone(), input(&[3], 7, DType::F32)], ReduceOp::Sum).unwrap_err();
    assert!(e.to_string().contains("one collective exchanges tensors of one device"), "{e}");
    let ids = Tensor::from_indices(&[1, 2]).to_device(dev).expect("to_device");
    let e = pg.all_reduce(&[ids], ReduceOp::Sum).unwrap_err();
    assert!(e.to_string().contains("exchanges f32, f64, bf16 or f16"), "{e}");
    // A group without NCCL takes CPU tensors only, and says how to get NCCL.
    let e = ProcessGroup::single().all_reduce(&[g], ReduceOp::Sum).unwrap_err();
    assert!(e.to_string().contains("ProcessGroup::with_nccl"), "{e}");
}

/// The trainer takes its NCCL path with one rank (parameters broadcast,
/// gradients averaged on the GPU): the same 20 losses, bit for bit, as the
/// run without a process group.
#[test]
fn gpt_tiny_trains_the_same_through_nccl_with_one_rank() {
    let Some(dev) = gpu() else { return };
    let Some(pg) = nccl_group(dev) else { return };
    let plain = crate::train::gpt_trainer(dev, None, None).fit().expect("plain run");
    let over_nccl = crate::train::gpt_trainer(dev, None, None)
        .with_process_group(pg)
        .expect("with_process_group")
        .fit()
        .expect("NCCL run");
    assert_eq!(plain.losses.len(), 20);
    let same = plain.losses.iter().zip(&over_nccl.losses).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "plain {:?}\nnccl {:?}", plain.losses, over_nccl.losses);
}

/// Gradients averaged during the backward pass (`overlap_grad_sync`): the
/// buckets filled on the device's stream and summed by NCCL on its own
/// stream, joined before the optimizer. Over one rank the sum is the
/// identity, so the run must equal the plain one bit for bit, and it must
/// have used buckets (several: 20,000 elements each).
#[test]
fn gpt_tiny_trains_the_same_with_gradients_averaged_during_backward_over_nccl() {
    let Some(dev) = gpu() else { return };
    let Some(pg) = nccl_group(dev) else { return };
    let pg = pg.with_bucket_elems(20_000).expect("bucket size");
    let plain = crate::train::gpt_trainer(dev, None, None).fit().expect("plain run");
    let mut trainer = crate::train::gpt_trainer(dev, None, None);
    trainer.config.overlap_grad_sync = true;
    let mut trainer = trainer.with_process_group(pg).expect("with_process_group");
    let overlapped = trainer.fit().expect("overlapped NCCL run");
    let buckets = trainer.overlap_buckets();
    assert!(buckets.is_some_and(|n| n > 1), "buckets: {buckets:?}");
    let same = plain.losses.iter().zip(&overlapped.losses).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same && plain.losses.len() == 20, "plain {:?}\noverlapped {:?}", plain.losses, overlapped.losses);
}
