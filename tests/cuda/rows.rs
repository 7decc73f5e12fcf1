//! Reductions, argmax, softmax / log_softmax, layer_norm and cross_entropy:
//! forward and backward, contiguous and strided, short and long rows.

use crate::harness::{gpu, randn, randn64};
use crate::parity_test;
use tamer::ops::nn::cross_entropy::{CrossEntropyOptions, Reduction};
use tamer::{DType, Device, Error, GradStore, Result, Tensor};

fn grad(g: &GradStore, t: &Tensor) -> Result<Tensor> {
    g.get(t).cloned().ok_or_else(|| Error::value("test", "no gradient was recorded"))
}

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

// ---- softmax -------------------------------------------------------------------------------

/// softmax and log_softmax over the last axis, and their gradients through
/// `loss = Σ y ⊙ w`.
fn softmax_pair(x: &Tensor, seed: u64, dev: Device) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    for log in [false, true] {
        let y = if log { x.log_softmax(-1)? } else { x.softmax(-1)? };
        let w = Tensor::randn(x.dims().to_vec(), x.dtype(), &mut tamer::rng(seed))?.to_device(dev)?;
        let g = y.mul(&w)?.sum_all()?.backward()?;
        out.push(y);
        out.push(grad(&g, x)?);
    }
    Ok(out)
}

parity_test!(softmax_rows_of_every_length_f32, 1e-6, 1e-5, |dev| {
    let mut out = Vec::new();
    for (k, c) in [1usize, 7, 33, 1000, 1025, 5000].into_iter().enumerate() {
        let x = randn(&[5, c], 30 + k as u64).scale(3.0)?.to_device(dev)?.variable();
        out.extend(softmax_pair(&x, 40 + k as u64, dev)?);
    }
    Ok(out)
});

parity_test!(softmax_rows_of_every_length_f64, 1e-13, 1e-12, |dev| {
    let mut out = Vec::new();
    for (k, c) in [1usize, 7, 1000, 5000].into_iter().enumerate() {
        let x = randn64(&[4, c], 50 + k as u64).scale(3.0)?.to_device(dev)?.variable();
        out.extend(softmax_pair(&x, 60 + k as u64, dev)?);
    }
    Ok(out)
});

parity_test!(softmax_rows_of_fifty_thousand, 1e-7, 1e-5, |dev| {
    let x = randn(&[3, 50_000], 70).scale(4.0)?.to_device(dev)?.variable();
    softmax_pair(&x, 71, dev)
});

parity_test!(softmax_of_strided_views_and_other_axes, 1e-6, 1e-5, |dev| {
    let base = randn(&[40, 6, 9], 72).to_device(dev)?;
    // The class axis strided (a transpose), a narrowed slice, a broadcast row,
    // a scalar, and softmax along axis 0 (moved last internally).
    let t = base.permute(&[1, 2, 0])?.variable();
    let n = base.narrow(0, 3, 30)?.narrow(2, 1, 7)?.variable();
    let b = randn(&[1, 1, 9], 73).to_device(dev)?.broadcast_as([4, 5, 9])?.variable();
    let mut out = softmax_pair(&t, 74, dev)?;
    out.extend(softmax_pair(&n, 75, dev)?);
    out.extend(softmax_pair(&b, 76, dev)?);
    out.push(Tensor::scalar(2.5f32).to_device(dev)?.softmax(0)?);
    out.push(base.softmax(0)?);
    out.push(base.log_softmax(1)?);
    out.push(Tensor::zeros([0, 4], DType::F32)?.to_device(dev)?.softmax(-1)?);
    Ok(out)
});

// ---- layer_norm --------------------------------------------------------------------------------

/// Forward output and the gradients of x, weight and bias (those given).
fn layer_norm_case(x: &Tensor, c: usize, with_w: bool, with_b: bool, seed: u64, dev: Device) -> Result<Vec<Tensor>> {
    let dt = x.dtype();
    let mut rng = tamer::rng(seed);
    let w = Tensor::randn([c], dt, &mut rng)?.to_device(dev)?.variable();
    let b = Tensor::randn([c], dt, &mut rng)?.to_device(dev)?.variable();
    let r = Tensor::randn(x.dims().to_vec(), dt, &mut rng)?.to_device(dev)?;
    let (wo, bo) = (with_w.then_some(&w), with_b.then_some(&b));
    let y = x.layer_norm(wo, bo, 1e-5)?;
    let g = y.mul(&r)?.sum_all()?.backward()?;
    let mut out = vec![y, grad(&g, x)?];
    if with_w {
        out.push(grad(&g, &w)?);
    }
    if with_b {
        out.push(grad(&g, &b)?);
    }
    Ok(out)
}

// dweight/dbias add up to 2000 rows in f32: compare on the partial sums' scale.
parity_test!(layer_norm_with_and_without_parameters_f32, 1e-3, 1e-4, |dev| {
    let mut out = Vec::new();
    // Short rows (warp path), a row of one, long rows (block path), and many
    // rows (the parameter gradients split over several blocks).
    for (k, dims) in [vec![4usize, 7, 33], vec![6, 1], vec![3, 2000], vec![2000, 48]].into_iter().enumerate() {
        let c = dims[dims.len() - 1];
        for (with_w, with_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let x = randn(&dims, 80 + k as u64).scale(2.0)?.to_device(dev)?.variable();
            out.extend(layer_norm_case(&x, c, with_w, with_b, 90 + k as u64, dev)?);
        }
    }
    Ok(out)
});

parity_test!(layer_norm_with_and_without_parameters_f64, 1e-11, 1e-11, |dev| {
    let mut out = Vec::new();
    for (k, dims) in [vec![5usize, 31], vec![2, 1500], vec![3000, 40]].into_iter().enumerate() {
        let c = dims[dims.len() - 1];
        for (with_w, with_b) in [(false, false), (true, true)] {
            let x = randn64(&dims, 100 + k as u64).to_device(dev)?.variable();
            out.extend(layer_norm_case(&x, c, with_w, with_b, 110 + k as u64, dev)?);
        }
    }
    Ok(out)
});

parity_test!(layer_norm_of_strided_inputs, 1e-4, 1e-4, |dev| {
    let base = randn(&[24, 10, 30], 120).to_device(dev)?;
    let t = base.permute(&[1, 0, 2])?.narrow(2, 2, 25)?.variable();
    let p = base.permute(&[2, 0, 1])?.variable(); // the normalised axis strided
    let mut out = layer_norm_case(&t, 25, true, true, 121, dev)?;
    out.extend(layer_norm_case(&p, 10, true, false, 122, dev)?);
    Ok(out)
});

// ---- cross_entropy ---------------------------------------------------------------------------------

/// Targets for `rows` rows of `c` classes; with `ignore`, every fifth row is -100.
fn targets(rows: usize, c: usize, seed: u64, ignore: bool) -> Result<Tensor> {
    let class = |r: usize| ((r as u64 * 7919 + seed * 31) % c as u64) as i64;
    let t: Vec<i64> = (0..rows).map(|r| if ignore && r % 5 == 3 { -100 } else { class(r) }).collect();
    Tensor::from_vec(t, [rows])
}

fn cross_entropy_case(logits: &Tensor, t: &Tensor, opts: CrossEntropyOptions, seed: u64, dev: Device) -> Result<Vec<Tensor>> {
    let loss = logits.cross_entropy(t, opts)?;
    let scalar = if opts.reduction == Reduction::None {
        let w = Tensor::randn(loss.dims().to_vec(), loss.dtype(), &mut tamer::rng(seed))?.to_device(dev)?;
        loss.mul(&w)?.sum_all()?
    } else {
        loss.clone()
    };
    let g = scalar.backward()?;
    Ok(vec![loss, grad(&g, logits)?])
}

fn cross_entropy_all(dims: &[usize], f64s: bool, seed: u64, dev: Device) -> Result<Vec<Tensor>> {
    let (rows, c) = (dims[..dims.len() - 1].iter().product::<usize>(), dims[dims.len() - 1]);
    let x = if f64s { randn64(dims, seed) } else { randn(dims, seed) };
    let x = x.scale(3.0)?.to_device(dev)?.variable();
    let t = targets(rows, c, seed, true)?.reshape(dims[..dims.len() - 1].to_vec())?.to_device(dev)?;
    let mut out = Vec::new();
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for smoothing in [0.0, 0.1] {
            let opts = CrossEntropyOptions::default()
                .with_ignore_index(-100)
                .with_label_smoothing(smoothing)
                .with_reduction(reduction);
            out.extend(cross_entropy_case(&x, &t, opts, seed + 1, dev)?);
        }
    }
    // Without an ignore index (every target valid).
    let valid = targets(rows, c, seed + 2, false)?.reshape(dims[..dims.len() - 1].to_vec())?.to_device(dev)?;
    out.extend(cross_entropy_case(&x, &valid, CrossEntropyOptions::default(), seed + 3, dev)?);
    Ok(out)
}

parity_test!(cross_entropy_smoothing_ignore_and_reductions_f32, 1e-5, 1e-4, |dev| {
    let mut out = cross_entropy_all(&[37, 5], false, 130, dev)?;
    out.extend(cross_entropy_all(&[4, 6, 1000], false, 131, dev)?);
    out.extend(cross_entropy_all(&[9, 3000], false, 132, dev)?);
    out.extend(cross_entropy_all(&[2, 1], false, 133, dev)?);
    Ok(out)
});

parity_test!(cross_entropy_smoothing_ignore_and_reductions_f64, 1e-12, 1e-11, |dev| {
    let mut out = cross_entropy_all(&[23, 7], true, 140, dev)?;
    out.extend(cross_entropy_all(&[5, 2000], true, 141, dev)?);
    Ok(out)
});

parity_test!(cross_entropy_of_strided_logits, 1e-5, 1e-4, |dev| {
    // Logits [N, C] as the transpose of a [C, N] buffer; targets strided too.
    let x = randn(&[11, 40], 150).scale(2.0)?.to_device(dev)?.t()?.variable();
    let t = targets(80, 11, 151, true)?.reshape([40, 2])?.to_device(dev)?.narrow(1, 1, 1)?.reshape([40])?;
    let opts = CrossEntropyOptions::default().with_ignore_index(-100).with_label_smoothing(0.1);
    let mut out = cross_entropy_case(&x, &t, opts, 152, dev)?;
    out.extend(cross_entropy_case(&x, &t, opts.with_reduction(Reduction::None), 153, dev)?);
    Ok(out)
});

#[test]
fn cross_entropy_rejects_an_out_of_range_target_on_cuda() {
    let Some(dev) = gpu() else { return };
    let logits = randn(&[4, 5], 160).to_device(dev).unwrap();
    for bad in [5i64, -1, 99] {
        let t = Tensor::from_vec(vec![0i64, 1, bad, 2], [4]).unwrap().to_device(dev).unwrap();
        let opts = CrossEntropyOptions::default().with_ignore_index(-100);
        let err = logits.cross_entropy(&t, opts).unwrap_err().to_string();
        assert!(
            err.contains(&format!("target {bad}")) && err.contains("5 classes") && err.contains("row 2"),
            "{err}"
        );
    }
    // The ignore index itself is fine, and the error leaves the device usable.
    let t = Tensor::from_vec(vec![0i64, -100, 4, 2], [4]).unwrap().to_device(dev).unwrap();
    let loss = logits.cross_entropy(&t, CrossEntropyOptions::default().with_ignore_index(-100)).unwrap();
    assert!(loss.to_scalar().unwrap().is_finite());
}

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
    crate::harness::assert_all_close("reference kernels", &reference, &fast, 1e-12, 1e-12);
}
