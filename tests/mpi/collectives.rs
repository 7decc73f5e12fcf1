//! Every collective over the MPI world, checked exactly: each rank sends
//! values that are a formula of its rank, and compares what it gets with the
//! formula evaluated for every rank (small integers and quarters, whose sums
//! are exact in any order).

use crate::Failures;
use tamer::dist::{ProcessGroup, ReduceOp};
use tamer::{ErrorKind, Tensor};

pub fn a(r: usize) -> Vec<f32> {
    (0..6).map(|i| (r + 1) as f32 * i as f32 + 0.25).collect()
}
pub fn b(r: usize) -> Vec<f64> {
    (0..5).map(|i| r as f64 * 10.0 - i as f64 * 0.5).collect()
}
pub fn c(r: usize) -> f32 {
    r as f32 + 1.0
}

pub fn tensors(r: usize) -> Vec<Tensor> {
    vec![
        Tensor::from_vec(a(r), [2, 3]).unwrap(),
        Tensor::from_vec(b(r), [5]).unwrap(),
        Tensor::scalar(c(r)),
    ]
}

pub fn run(pg0: &ProcessGroup, f: &mut Failures) {
    let (rank, world) = (pg0.rank(), pg0.world_size());
    f.check(world >= 2, || format!("expected at least 2 ranks, got {world}"));
    f.check(pg0.backend_name() == "mpi", || format!("backend {}", pg0.backend_name()));
    // One machine: the local rank is the rank.
    f.check(pg0.local_rank() == rank, || format!("local rank {} on rank {rank}", pg0.local_rank()));
    // Buckets of 3 elements cut across the tensors' boundaries.
    let Some(pg) = f.ok("with_bucket_elems", pg0.clone().with_bucket_elems(3)) else {
        return;
    };

    exact_values(&pg, f, &|t| t);

    let mut v = [rank as f64, 1.0];
    if f.ok("all_reduce_scalars", pg.all_reduce_scalars(&mut v, ReduceOp::Sum)).is_some() {
        let expected = [(0..world).sum::<usize>() as f64, world as f64];
        f.check(v == expected, || format!("all_reduce_scalars: got {v:?}, expected {expected:?}"));
    }
    f.ok("barrier", pg.barrier());
    mismatches(&pg, f);
}

/// Every collective's values, exactly, on tensors `place` puts where the
/// group exchanges them (the host for MPI, the rank's GPU for NCCL); every
/// result must come back there too.
pub fn exact_values(pg: &ProcessGroup, f: &mut Failures, place: &dyn Fn(Tensor) -> Tensor) {
    let (rank, world) = (pg.rank(), pg.world_size());
    let home = place(Tensor::scalar(0.0f32)).device();
    let on_home = |f: &mut Failures, what: &str, ts: &[Tensor]| {
        f.check(ts.iter().all(|t| t.device() == home), || format!("{what}: a result off {home}"));
    };
    if let Some(ranks) = f.ok("all_gather of ranks", pg.all_gather(&place(Tensor::scalar(rank as f64)))) {
        let got = ranks.to_vec::<f64>().unwrap();
        f.check(got == (0..world).map(|r| r as f64).collect::<Vec<_>>(), || format!("ranks gathered {got:?}"));
    }

    for op in [ReduceOp::Sum, ReduceOp::Mean] {
        let div = if op == ReduceOp::Mean { world } else { 1 };
        let Some(out) = f.ok("all_reduce", pg.all_reduce(&tensors(rank).into_iter().map(place).collect::<Vec<_>>(), op)) else {
            continue;
        };
        on_home(f, "all_reduce", &out);
        let sum_a: Vec<f32> = (0..6).map(|i| (0..world).map(|r| a(r)[i]).sum::<f32>() / div as f32).collect();
        let sum_b: Vec<f64> = (0..5).map(|i| (0..world).map(|r| b(r)[i]).sum::<f64>() / div as f64).collect();
        let sum_c: f32 = (0..world).map(c).sum::<f32>() / div as f32;
        let got_a = out[0].to_vec::<f32>().unwrap();
        let got_b = out[1].to_vec::<f64>().unwrap();
        let got_c = out[2].to_vec::<f32>().unwrap();
        f.check(out[0].dims() == [2, 3] && got_a == sum_a, || {
            format!("{op:?} f32: got {got_a:?}, expected {sum_a:?}")
        });
        f.check(got_b == sum_b, || format!("{op:?} f64: got {got_b:?}, expected {sum_b:?}"));
        f.check(out[2].dims().is_empty() && got_c == [sum_c], || {
            format!("{op:?} scalar: got {got_c:?}, expected {sum_c}")
        });
    }

    let root = world - 1;
    if let Some(out) = f.ok("broadcast", pg.broadcast(&tensors(rank).into_iter().map(place).collect::<Vec<_>>(), root)) {
        let got = (
            out[0].to_vec::<f32>().unwrap(),
            out[1].to_vec::<f64>().unwrap(),
            out[2].to_vec::<f32>().unwrap(),
        );
        f.check(got == (a(root), b(root), vec![c(root)]), || format!("broadcast from {root}: got {got:?}"));
    }

    let row = |r: usize| (0..3).map(|i| (r * 100 + i) as f64).collect::<Vec<f64>>();
    if let Some(out) = f.ok("all_gather", pg.all_gather(&place(Tensor::from_vec(row(rank), [3]).unwrap()))) {
        let expected: Vec<f64> = (0..world).flat_map(row).collect();
        let got = out.to_vec::<f64>().unwrap();
        f.check(out.dims() == [world, 3] && got == expected, || format!("all_gather: {:?} {got:?}", out.dims()));
    }

    // Rank r sends [2·world, 2] with element (k, j) = r + 2k + j; it gets rows 2r, 2r + 1 summed.
    let blocks = |r: usize| (0..2 * world * 2).map(|e| (r + e) as f32).collect::<Vec<f32>>();
    for op in [ReduceOp::Sum, ReduceOp::Mean] {
        let div = if op == ReduceOp::Mean { world as f32 } else { 1.0 };
        let t = place(Tensor::from_vec(blocks(rank), [2 * world, 2]).unwrap());
        let Some(out) = f.ok("reduce_scatter", pg.reduce_scatter(&t, op)) else {
            continue;
        };
        on_home(f, "reduce_scatter", std::slice::from_ref(&out));
        let expected: Vec<f32> = (rank * 4..rank * 4 + 4).map(|e| (0..world).map(|r| blocks(r)[e]).sum::<f32>() / div).collect();
        let got = out.to_vec::<f32>().unwrap();
        f.check(out.dims() == [2, 2] && got == expected, || {
            format!("reduce_scatter {op:?}: got {got:?}, expected {expected:?}")
        });
    }
}

/// Ranks that pass different tensors, or call different collectives, all
/// get an error naming the ranks, and the group works on afterwards.
fn mismatches(pg: &ProcessGroup, f: &mut Failures) {
    let rank = pg.rank();
    let expect_shape_error = |f: &mut Failures, what: &str, r: tamer::Result<Vec<Tensor>>| match r {
        Ok(_) => f.check(false, || format!("{what}: expected an error on rank {rank}, got values")),
        Err(e) => f.check(
            e.kind == ErrorKind::Shape && e.message.contains("rank 1:") && e.message.contains("rank 0:"),
            || format!("{what}: unexpected error {e}"),
        ),
    };
    let n = if rank == 1 { 4 } else { 3 };
    let shapes = pg.all_reduce(&[Tensor::zeros([n], tamer::DType::F32).unwrap()], ReduceOp::Sum);
    expect_shape_error(f, "all_reduce of other shapes", shapes);
    let dtype = if rank == 1 { tamer::DType::F64 } else { tamer::DType::F32 };
    let dtypes = pg.all_reduce(&[Tensor::zeros([3], dtype).unwrap()], ReduceOp::Mean);
    expect_shape_error(f, "all_reduce of other dtypes", dtypes);
    let same = [Tensor::zeros([3], tamer::DType::F64).unwrap()];
    let calls = if rank == 1 {
        pg.broadcast(&same, 0)
    } else {
        pg.all_reduce(&same, ReduceOp::Sum)
    };
    expect_shape_error(f, "broadcast on rank 1, all_reduce elsewhere", calls);
    // Still in step: a matching call works.
    if let Some(out) = f.ok("all_reduce after the mismatches", pg.all_reduce(&[Tensor::scalar(1.0f64)], ReduceOp::Sum)) {
        let got = out[0].to_scalar().unwrap();
        f.check(got == pg.world_size() as f64, || format!("sum of ones: {got}"));
    }
}
