//! Indexing (index_select / embedding, index_add, gather, scatter_add, cat):
//! CUDA against the CPU. These kernels sum in the CPU's order, so the
//! comparisons are exact (tolerance 0).
//!
//! Gradients are taken with `backward_with_grad` and a seeded upstream
//! gradient on the device, so the backward kernels under test are the only
//! arithmetic between the output and the input gradient.

use crate::harness::{gpu, gradcheck_on_gpu, input, randn64, with_grads};
use crate::parity_test;
use tamer::{DType, Device, Result, Tensor};

fn ids(values: &[i64], dims: &[usize], dev: Device) -> Result<Tensor> {
    Tensor::from_vec(values.to_vec(), dims.to_vec())?.to_device(dev)
}

/// Deterministic ids in 0..size (with repeats once n > size).
fn id_values(n: usize, size: usize, seed: usize) -> Vec<i64> {
    (0..n).map(|j| ((j * 31 + seed * 17 + j * j) % size) as i64).collect()
}
// ---- index_select / embedding ------------------------------------------------------

parity_test!(index_select_every_axis_with_repeats_and_strides, 0.0, 0.0, |dev| {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F64] {
        // [5, 6, 7] seen through a permutation: every axis, repeated ids, an empty selection.
        let x = input(&[7, 5, 6], 1, dtype).to_device(dev)?.variable();
        let xv = x.permute(&[1, 2, 0])?; // [5, 6, 7], strided
        for axis in 0..3 {
            let size = xv.dims()[axis];
            for n in [0, 1, 2 * size + 3] {
                let i = ids(&id_values(n, size, axis), &[n], dev)?;
                let y = xv.index_select(axis as isize, &i)?;
                if n == 0 {
                    out.push(y);
                } else {
                    out.extend(with_grads(y, 10 + axis as u64, &[&x])?);
                }
            }
        }
        // Rows of >= 32 contiguous elements take the row-copy kernel, also under a narrowed view.
        let t = input(&[9, 40], 2, dtype).to_device(dev)?.variable();
        let i = ids(&[8, 0, 3, 3, 8, 1], &[6], dev)?;
        out.extend(with_grads(t.index_select(0, &i)?, 3, &[&t])?);
        out.extend(with_grads(t.narrow(1, 3, 33)?.index_select(0, &i)?, 4, &[&t])?);
        // Rows of an inner block wider than a 256-thread block.
        let big = input(&[3, 4, 700], 5, dtype).to_device(dev)?;
        out.push(big.index_select(1, &ids(&[3, 0, 3], &[3], dev)?)?);
    }
    // Moves of i64 and 16-bit data (width kernels).
    let xi = Tensor::from_vec((0..60i64).collect::<Vec<_>>(), [6, 10])?.to_device(dev)?;
    out.push(xi.t()?.index_select(1, &ids(&[5, 5, 0], &[3], dev)?)?);
    let xb = input(&[6, 40], 6, DType::F32).to_dtype(DType::BF16)?.to_device(dev)?;
    out.push(xb.index_select(0, &ids(&[2, 4, 2], &[3], dev)?)?.to_dtype(DType::F32)?);
    Ok(out)
});

parity_test!(embedding_forward_and_backward_with_repeated_ids, 0.0, 0.0, |dev| {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F64] {
        for (vocab, dim) in [(50, 40), (11, 5), (1000, 64)] {
            let w = input(&[vocab, dim], vocab as u64, dtype).to_device(dev)?.variable();
            // Every token of a [4, 33] batch, many of them repeated.
            let tokens = id_values(4 * 33, vocab.min(17), 1);
            let e = Tensor::embedding(&w, &ids(&tokens, &[4, 33], dev)?)?;
            out.extend(with_grads(e, 7, &[&w])?);
        }
    }
    Ok(out)
});

/// A fallible op on a tensor and its device.
type Case = Box<dyn Fn(&Tensor, Device) -> Result<Tensor>>;

#[test]
fn bad_ids_are_the_same_error_on_both_devices() {
    let Some(dev) = gpu() else { return };
    let x = input(&[3, 4], 1, DType::F32);
    let xg = x.to_device(dev).unwrap();
    let cases: [(&str, Case); 4] = [
        ("index_select", Box::new(|x, d| x.index_select(0, &ids(&[0, 3], &[2], d)?))),
        ("negative", Box::new(|x, d| x.index_select(1, &ids(&[-1], &[1], d)?))),
        ("gather", Box::new(|x, d| x.gather(1, &ids(&[0, 4], &[1, 2], d)?))),
        ("embedding", Box::new(|x, d| Tensor::embedding(x, &ids(&[7], &[1], d)?))),
    ];
    for (what, f) in cases {
        let cpu = f(&x, Device::Cpu).unwrap_err();
        let cuda = f(&xg, dev).unwrap_err();
        assert_eq!(cpu.kind, cuda.kind, "{what}");
        assert_eq!(cpu.to_string(), cuda.to_string(), "{what}");
    }
}

// ---- index_add / gather / scatter_add ----------------------------------------------

parity_test!(index_add_accumulates_repeats_in_order, 0.0, 0.0, |dev| {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F64] {
        for axis in 0..3usize {
            let dims = [4, 5, 6];
            let n = 2 * dims[axis] + 1;
            let x = input(&dims, 20 + axis as u64, dtype).to_device(dev)?.variable();
            let mut sd = dims.to_vec();
            sd[axis] = n;
            // The source through a transposed view.
            sd.swap(0, 2);
            let src = input(&sd, 30 + axis as u64, dtype).to_device(dev)?.variable();
            let i = ids(&id_values(n, dims[axis], axis), &[n], dev)?;
            let y = x.index_add(axis as isize, &i, &src.transpose(0, 2)?)?;
            out.extend(with_grads(y, 40 + axis as u64, &[&x, &src])?);
        }
    }
    Ok(out)
});

parity_test!(gather_and_scatter_add_every_axis, 0.0, 0.0, |dev| {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F64] {
        let dims = [5usize, 4, 6];
        for axis in 0..3usize {
            let x = input(&[6, 4, 5], 50 + axis as u64, dtype).to_device(dev)?.variable();
            let xv = x.permute(&[2, 1, 0])?; // [5, 4, 6], strided
                                             // ids smaller than x off the axis, longer along it.
            let mut id_dims: Vec<usize> = dims.iter().map(|&d| d.div_ceil(2)).collect();
            id_dims[axis] = dims[axis] + 2;
            let count: usize = id_dims.iter().product();
            let i = ids(&id_values(count, dims[axis], axis + 3), &id_dims, dev)?;
            out.extend(with_grads(xv.gather(axis as isize, &i)?, 60 + axis as u64, &[&x])?);
            // scatter_add with a source larger than the ids (only the leading block is used).
            let mut src_dims = id_dims.clone();
            src_dims[0] += 1;
            let src = input(&src_dims, 70 + axis as u64, dtype).to_device(dev)?.variable();
            out.extend(with_grads(xv.scatter_add(axis as isize, &i, &src)?, 80 + axis as u64, &[&x, &src])?);
        }
        // The cross-entropy pattern: one target per row.
        let logits = input(&[33, 10], 90, dtype).to_device(dev)?.variable();
        let t = ids(&id_values(33, 10, 4), &[33, 1], dev)?;
        out.extend(with_grads(logits.gather(1, &t)?, 91, &[&logits])?);
    }
    Ok(out)
});

// ---- cat -----------------------------------------------------------------------------

parity_test!(cat_of_strided_parts_along_each_axis, 0.0, 0.0, |dev| {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F64] {
        for axis in 0..3usize {
            let mut parts = Vec::new();
            let mut leaves = Vec::new();
            for (k, extra) in [2usize, 0, 3].into_iter().enumerate() {
                let mut d = vec![3, 4, 5];
                d[axis] = extra;
                // Part 0 contiguous, part 1 (empty along the axis) plain, part 2 a permuted view.
                let leaf = if k == 2 {
                    let rev: Vec<usize> = d.iter().rev().copied().collect();
                    input(&rev, 100 + k as u64, dtype).to_device(dev)?.variable()
                } else {
                    input(&d, 100 + k as u64, dtype).to_device(dev)?.variable()
                };
                parts.push(if k == 2 { leaf.permute(&[2, 1, 0])? } else { leaf.clone() });
                leaves.push(leaf);
            }
            // A broadcast part as well.
            let mut d = vec![3, 4, 5];
            d[axis] = 2;
            parts.push(input(&[1, 1, 1], 110, dtype).to_device(dev)?.broadcast_as(d)?);
            let y = Tensor::cat(&parts, axis as isize)?;
            let refs: Vec<&Tensor> = leaves.iter().filter(|l| l.numel() > 0).collect();
            out.extend(with_grads(y, 120 + axis as u64, &refs)?);
        }
    }
    let a = Tensor::from_vec((0..12i64).collect::<Vec<_>>(), [3, 4])?.to_device(dev)?;
    out.push(Tensor::cat(&[a.t()?, a.t()?.narrow(1, 1, 2)?], 1)?);
    Ok(out)
});

// ---- gradient checks on the device --------------------------------------------
// f64 finite differences taken by re-running the CUDA kernels (`check_gradients`
// with inputs on the GPU), beside the CPU-vs-CUDA comparisons above.

#[test]
fn gradcheck_index_select() {
    let ids = Tensor::from_indices(&[2, 0, 2, 1]);
    gradcheck_on_gpu("index_select", &[randn64(&[3, 4], 11)], |x| {
        x[0].index_select(0, &ids.to_device(x[0].device())?)
    });
}
