//! Reductions (sum, max, min over every axis set, argmax): forward and
//! backward, contiguous and strided, short and long runs, empty tensors, NaN
//! and infinities; and the reference row kernels against the fast ones.

use crate::cross_entropy::targets;
use crate::harness::{gpu, grad, gradcheck_on_gpu, randn, randn64};
use crate::parity_test;
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::{DType, Result, Tensor};

/// Sum, max and min over every non-empty set of axes of a rank-3 `x`.
fn every_reduction(x: &Tensor) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    for axes in [&[0isize][..], &[1], &[2], &[0, 1], &[0, 2], &[1, 2], &[]] {
        out.push(x.sum(axes, true)?);
        out.push(x.max(axes, false)?);
        out.push(x.min(axes, true)?);
    }
    Ok(out)
}

// ---- reductions ----------------------------------------------------------------------

// f32 sums: the CPU adds in its own order; errors scale with the partial sums, not the result.
parity_test!(reduce_every_axis_set_f32, 1e-4, 1e-5, |dev| {
    every_reduction(&randn(&[5, 7, 33], 10).to_device(dev)?)
});

parity_test!(reduce_every_axis_set_f64, 1e-12, 1e-12, |dev| {
    every_reduction(&randn64(&[6, 31, 9], 11).to_device(dev)?)
});

parity_test!(reduce_permuted_narrowed_and_broadcast_views, 1e-4, 1e-5, |dev| {
    let x = randn(&[6, 8, 40], 12).to_device(dev)?;
    let mut out = every_reduction(&x.permute(&[2, 0, 1])?)?;
    out.extend(every_reduction(&x.narrow(2, 3, 33)?.narrow(0, 1, 4)?)?);
    // Stride-0 axes: a row broadcast down 50 rows, a column across 40 columns.
    let row = randn(&[1, 40], 13).to_device(dev)?.broadcast_as([50, 40])?;
    let col = randn(&[50, 1], 14).to_device(dev)?.broadcast_as([50, 40])?;
    for v in [&row, &col] {
        out.push(v.sum(&[0], false)?);
        out.push(v.sum(&[1], false)?);
        out.push(v.max(&[0], true)?);
        out.push(v.sum_all()?);
    }
    Ok(out)
});

// Long runs (block path, split into several blocks), columns of a tall matrix
// (the column kernel, split), and a transposed matrix (columns again).
parity_test!(reduce_long_runs_and_columns_f32, 1e-2, 1e-4, |dev| {
    let wide = randn(&[3, 5000], 15).to_device(dev)?;
    let very_wide = randn(&[2, 100_003], 16).to_device(dev)?;
    let tall = randn(&[3001, 64], 17).to_device(dev)?;
    let narrow_tall = randn(&[20_000, 40], 18).to_device(dev)?;
    let t = randn(&[64, 3000], 19).to_device(dev)?.t()?;
    Ok(vec![
        wide.sum(&[1], false)?,
        wide.max(&[1], false)?,
        very_wide.sum(&[1], false)?,
        very_wide.min(&[1], false)?,
        tall.sum(&[0], false)?,
        tall.max(&[0], false)?,
        narrow_tall.sum(&[0], true)?,
        narrow_tall.min(&[0], true)?,
        t.sum(&[0], false)?,
        t.sum(&[1], false)?,
        t.max(&[0], false)?,
    ])
});

parity_test!(reduce_long_runs_and_columns_f64, 1e-10, 1e-12, |dev| {
    let very_wide = randn64(&[2, 100_003], 20).to_device(dev)?;
    let tall = randn64(&[3001, 64], 21).to_device(dev)?;
    let t = randn64(&[64, 3000], 22).to_device(dev)?.t()?;
    Ok(vec![
        very_wide.sum(&[1], false)?,
        tall.sum(&[0], false)?,
        t.sum(&[1], false)?,
        t.min(&[1], false)?,
    ])
});

// The whole tensor: the two-pass grid reduction. The CPU adds 10^6 f32 values
// in 8 running sums (the transposed view: in one), so its own rounding error
// is up to a few 1e-2 here; an indexing bug would be off by hundreds.
parity_test!(sum_all_of_a_million_f32, 0.5, 1e-4, |dev| {
    let x = randn(&[1_000_003], 23).to_device(dev)?;
    let m = randn(&[1000, 1200], 24).to_device(dev)?;
    Ok(vec![x.sum_all()?, x.max_all()?, x.mean_all()?, m.t()?.sum_all()?, m.min(&[], false)?])
});

parity_test!(sum_all_of_a_million_f64, 1e-9, 1e-12, |dev| {
    let x = randn64(&[1_000_003], 25).to_device(dev)?;
    let m = randn64(&[1000, 1200], 26).to_device(dev)?;
    Ok(vec![x.sum_all()?, x.max_all()?, m.t()?.sum_all()?])
});

parity_test!(reductions_of_empty_tensors, 0.0, 0.0, |dev| {
    let no_rows = Tensor::zeros([0, 5], DType::F32)?.to_device(dev)?;
    let no_cols = Tensor::zeros([3, 0], DType::F32)?.to_device(dev)?;
    Ok(vec![
        no_rows.sum(&[0], true)?,
        no_rows.sum(&[1], false)?,
        no_rows.max(&[1], false)?,
        no_cols.sum(&[1], false)?,
        no_cols.sum_all()?,
    ])
});

parity_test!(max_propagates_nan_and_keeps_infinities, 0.0, 0.0, |dev| {
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    let x = Tensor::from_vec(vec![1.0, nan, 3.0, -inf, -inf, -inf, 2.0, inf, 0.0, -0.0, 0.0, -0.0], [4, 3])?.to_device(dev)?;
    Ok(vec![
        x.max(&[1], false)?,
        x.min(&[1], false)?,
        x.max(&[0], false)?,
        x.max_all()?,
        x.sum(&[1], false)?,
    ])
});

parity_test!(reduction_gradients, 1e-5, 1e-5, |dev| {
    let x = randn(&[7, 300], 27).to_device(dev)?.variable();
    let w = randn(&[7, 1], 28).to_device(dev)?;
    let loss = x.sum(&[1], true)?.mul(&w)?.sum_all()?.add(&x.max(&[1], true)?.mul(&w)?.sum_all()?)?;
    let g = loss.backward()?;
    Ok(vec![loss, grad(&g, &x)?])
});

// ---- argmax ------------------------------------------------------------------------------

parity_test!(argmax_takes_the_first_of_ties_and_of_nans, 0.0, 0.0, |dev| {
    let nan = f32::NAN;
    let inf = f32::NEG_INFINITY;
    let small = Tensor::from_vec(
        vec![
            1.0, 3.0, 3.0, 2.0, 5.0, 5.0, 5.0, 5.0, inf, inf, inf, inf, 0.0, nan, 7.0, nan, -0.0, 0.0, -1.0, 0.0,
        ],
        [5, 4],
    )?
    .to_device(dev)?;
    // A long row (block path) whose maximum appears twice, and many short rows
    // through a transposed view (warp path, strided).
    let mut long: Vec<f32> = (0..3000).map(|i| ((i * 7919) % 1000) as f32).collect();
    long[2100] = 5000.0;
    long[1200] = 5000.0;
    let long = Tensor::from_vec(long, [1, 3000])?.to_device(dev)?;
    let ties = Tensor::from_vec((0..600).map(|i| (i % 7) as f64).collect::<Vec<_>>(), [20, 30])?.to_device(dev)?;
    let x = randn(&[9, 33, 5], 29).to_device(dev)?;
    Ok(vec![
        small.argmax(1, false)?,
        small.argmax(0, true)?,
        long.argmax(1, false)?,
        ties.argmax(1, false)?,
        ties.t()?.argmax(1, false)?,
        ties.argmax(0, false)?,
        x.argmax(1, false)?,
        x.permute(&[2, 0, 1])?.argmax(2, true)?,
        x.argmax(0, false)?,
    ])
});
// torch.max / torch.min with a dim: argmax (of −x for min) and a gather, so
// the indices must agree exactly and the gradient lands on the same elements.
parity_test!(max_and_min_with_indices_pick_the_same_elements, 0.0, 0.0, |dev| {
    let ties = Tensor::from_vec((0..600).map(|i| (i % 7) as f64).collect::<Vec<_>>(), [20, 30])?
        .to_device(dev)?
        .variable();
    let x = randn(&[9, 33, 5], 30).to_device(dev)?.variable();
    let (tmax, tmax_i) = ties.max_with_indices(1, false)?;
    let (tmin, tmin_i) = ties.t()?.min_with_indices(-1, true)?;
    let (xmax, xmax_i) = x.max_with_indices(1, true)?;
    let (xmin, xmin_i) = x.permute(&[2, 0, 1])?.min_with_indices(0, false)?;
    let loss_ties = tmax.sum_all()?.add(&tmin.scale(2.0)?.sum_all()?)?;
    let loss_x = xmax.sum_all()?.add(&xmin.scale(3.0)?.sum_all()?)?;
    let (g_ties, g_x) = (loss_ties.backward()?, loss_x.backward()?);
    Ok(vec![
        tmax,
        tmax_i,
        tmin,
        tmin_i,
        xmax,
        xmax_i,
        xmin,
        xmin_i,
        x.argmin(2, false)?,
        grad(&g_ties, &ties)?,
        grad(&g_x, &x)?,
    ])
});

#[test]
fn reference_kernels_agree_with_the_fast_ones() {
    let Some(dev) = gpu() else { return };
    let x = randn64(&[300, 70], 170).to_device(dev).unwrap();
    let w = randn64(&[70], 171).to_device(dev).unwrap();
    let t = targets(300, 70, 172, true).unwrap().to_device(dev).unwrap();
    let opts = CrossEntropyOptions::default().with_ignore_index(-100).with_label_smoothing(0.1);
    let run = || -> Vec<Tensor> {
        vec![
            x.sum(&[0], false).unwrap(),
            x.t().unwrap().max(&[1], false).unwrap(),
            x.argmax(1, false).unwrap(),
            x.softmax(-1).unwrap(),
            x.layer_norm(Some(&w), None, 1e-5).unwrap(),
            x.cross_entropy(&t, opts).unwrap(),
        ]
    };
    let fast = run();
    tamer::backend::cuda::reduce::set_reference_kernels(true);
    let reference = run();
    tamer::backend::cuda::reduce::set_reference_kernels(false);
    crate::harness::assert_on("fast kernels", dev, &fast);
    crate::harness::assert_on("reference kernels", dev, &reference);
    crate::harness::assert_all_close("reference kernels", &reference, &fast, 1e-12, 1e-12);
}

// ---- gradient checks on the device --------------------------------------------
// f64 finite differences taken by re-running the CUDA kernels (`check_gradients`
// with inputs on the GPU), beside the CPU-vs-CUDA comparisons above.

#[test]
fn gradcheck_permuted_inputs_and_reductions() {
    gradcheck_on_gpu("sum/max over a permuted view", &[randn64(&[3, 5, 2], 3)], |x| {
        let p = x[0].permute(&[2, 0, 1])?;
        p.sum(&[1], false)?.add(&p.max(&[2], true)?.sum(&[2], false)?)
    });
}
