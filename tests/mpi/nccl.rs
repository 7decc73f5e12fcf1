//! NCCL across the ranks (feature `nccl`), each rank on the GPU of its
//! local rank. With a GPU per rank: every collective on GPU tensors,
//! checked exactly against the formula of what each rank sent (as in
//! collectives.rs). With fewer GPUs (CI, this project's CPU machines, a
//! one-GPU host): `with_nccl` must fail on every rank, promptly, rather
//! than leave one rank waiting for the others.

use crate::collectives::{a, tensors};
use crate::Failures;
use tamer::dist::{ProcessGroup, ReduceOp};
use tamer::{DType, Device, Tensor};

pub fn run(pg: &ProcessGroup, f: &mut Failures) {
    let (rank, world) = (pg.rank(), pg.world_size());
    let gpus = Device::cuda_count().unwrap_or(0);
    let dev = Device::Cuda(pg.local_rank());
    // Ranks without a GPU of their own, over the whole job (machines may differ).
    let mut missing = [f64::from(u8::from(pg.local_rank() >= gpus))];
    if f.ok("count the ranks without a GPU", pg.all_reduce_scalars(&mut missing, ReduceOp::Sum))
        .is_none()
    {
        return;
    }
    let joined = pg.clone().with_nccl(dev);
    if missing[0] > 0.0 {
        match &joined {
            Ok(_) => f.check(false, || format!("with_nccl on {dev} worked while {} rank(s) have no GPU", missing[0])),
            Err(e) => f.check(!e.message.is_empty(), || "an empty error".to_string()),
        }
        if pg.is_root() {
            println!(
                "nccl: {} of {world} ranks without a GPU: with_nccl failed on every rank without hanging; the GPU collectives need a GPU per rank",
                missing[0]
            );
        }
        return;
    }
    let Some(pg) = f.ok("with_nccl", joined) else { return };
    f.check(pg.gpu_backend_name() == Some("nccl"), || format!("gpu backend {:?}", pg.gpu_backend_name()));
    let on_gpu = |ts: Vec<Tensor>| ts.into_iter().map(|t| t.to_device(dev).unwrap()).collect::<Vec<_>>();

    // Every collective, exactly, on this rank's GPU (the means are sums
    // divided on the GPU, so they match the host's to the bit).
    crate::collectives::exact_values(&pg, f, &|t: Tensor| t.to_device(dev).unwrap());
    // bf16 small integers sum exactly.
    let h = Tensor::from_vec(vec![rank as f32 + 1.0; 4], [4])
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap()
        .to_device(dev)
        .unwrap();
    if let Some(out) = f.ok("all_reduce bf16 (nccl)", pg.all_reduce(&[h], ReduceOp::Sum)) {
        let got = out[0].to_f64_vec().unwrap();
        let expected = vec![(1..=world).sum::<usize>() as f64; 4];
        f.check(got == expected, || format!("bf16 all_reduce: got {got:?}, expected {expected:?}"));
    }
    // In place, as the trainer averages gradients.
    let grads = on_gpu(tensors(rank));
    let mut buffers = tamer::dist::FlatBuffers::default();
    if f.ok("all_reduce_in_place (nccl)", pg.all_reduce_in_place(&grads, ReduceOp::Mean, &mut buffers))
        .is_some()
    {
        let mean_a: Vec<f32> = (0..6).map(|i| (0..world).map(|r| a(r)[i]).sum::<f32>() / world as f32).collect();
        let got = grads[0].to_vec::<f32>().unwrap();
        f.check(got == mean_a, || format!("in place: got {got:?}, expected {mean_a:?}"));
    }

    overlapped_training(&pg, f, dev);
    if pg.is_root() {
        println!("nccl: NCCL {} on {world} GPUs", pg.nccl().map_or(0, |n| n.version()));
    }
}

/// gpt-tiny on the ranks' GPUs with the gradients averaged during the
/// backward pass (NCCL on its own stream) and after it: the same losses and
/// parameters, bit for bit (element-wise sums over two ranks). The check of
/// the ordering between the two streams, which one rank cannot make.
fn overlapped_training(pg: &ProcessGroup, f: &mut Failures, dev: Device) {
    crate::overlap::compare(pg, f, "nccl: gpt-tiny", &|o| crate::overlap::gpt(pg, o, dev));
}
