//! Indexing (index_select / embedding, index_add, gather, scatter_add, cat),
//! conv2d, max/avg pooling and dropout: CUDA against the CPU.
//!
//! Gradients are taken with `backward_with_grad` and a seeded upstream
//! gradient on the device, so the backward kernels under test are the only
//! arithmetic between the output and the input gradient. The index, pooling
//! and dropout kernels sum in the CPU's order, so most comparisons are exact
//! (tolerance 0); conv2d goes through a matmul and gets the usual tolerances.

use crate::harness::{gpu, randn64};
use crate::parity_test;
use tamer::ops::nn::dropout::{philox4x32_10, philox_dropout_mask};
use tamer::{rng, DType, Device, Error, Result, Tensor};

/// Seeded normal values of `dtype` (drawn in f64, so both dtypes share them).
fn input(dims: &[usize], seed: u64, dtype: DType) -> Tensor {
    randn64(dims, seed).to_dtype(dtype).expect("to_dtype")
}

/// Small integers in -4..4, so that pooling windows tie.
fn coarse(dims: &[usize], seed: u64, dtype: DType) -> Tensor {
    let v: Vec<f64> = randn64(dims, seed)
        .to_vec::<f64>()
        .expect("values")
        .iter()
        .map(|x| (x * 2.0).round().clamp(-4.0, 4.0))
        .collect();
    Tensor::from_vec(v, dims.to_vec()).and_then(|t| t.to_dtype(dtype)).expect("coarse")
}

fn ids(values: &[i64], dims: &[usize], dev: Device) -> Result<Tensor> {
    Tensor::from_vec(values.to_vec(), dims.to_vec())?.to_device(dev)
}

/// Deterministic ids in 0..size (with repeats once n > size).
fn id_values(n: usize, size: usize, seed: usize) -> Vec<i64> {
    (0..n).map(|j| ((j * 31 + seed * 17 + j * j) % size) as i64).collect()
}

/// The gradients of `wrt` when `y` receives a seeded upstream gradient.
fn grads(y: &Tensor, seed: u64, wrt: &[&Tensor]) -> Result<Vec<Tensor>> {
    let g = input(y.dims(), seed, y.dtype()).to_device(y.device())?;
    let store = y.backward_with_grad(&g)?;
    wrt.iter()
        .map(|t| {
            store
                .get(t)
                .cloned()
                .ok_or_else(|| Error::value("test", format!("no gradient for a tensor of shape {}", t.shape())))
        })
        .collect()
}

/// Output, then gradients.
fn with_grads(y: Tensor, seed: u64, wrt: &[&Tensor]) -> Result<Vec<Tensor>> {
    let mut out = grads(&y, seed, wrt)?;
    out.insert(0, y);
    Ok(out)
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

// ---- conv2d --------------------------------------------------------------------------

/// (N, C, H, W, O, kernel, stride, padding)
type ConvCase = (usize, usize, usize, usize, usize, (usize, usize), (usize, usize), (usize, usize));
const CONV_CASES: [ConvCase; 6] = [
    (2, 3, 5, 4, 2, (3, 2), (1, 1), (1, 1)),
    (2, 2, 7, 6, 3, (3, 3), (2, 3), (2, 1)),
    (3, 4, 4, 5, 5, (1, 1), (1, 1), (0, 0)), // pointwise: no im2col
    (2, 3, 6, 6, 2, (1, 1), (2, 2), (1, 0)),
    (1, 2, 2, 2, 2, (4, 4), (1, 1), (1, 1)), // the kernel covers the padded input
    (4, 3, 33, 31, 8, (3, 3), (1, 1), (1, 1)),
];

fn conv_case(dev: Device, dtype: DType, c: &ConvCase, seed: u64, channels_last: bool) -> Result<Vec<Tensor>> {
    let &(n, ci, h, w, o, k, s, p) = c;
    let (x, xv) = if channels_last {
        // Stored [N, H, W, C], viewed as [N, C, H, W].
        let x = input(&[n, h, w, ci], seed, dtype).to_device(dev)?.variable();
        let xv = x.permute(&[0, 3, 1, 2])?;
        (x, xv)
    } else {
        let x = input(&[n, ci, h, w], seed, dtype).to_device(dev)?.variable();
        (x.clone(), x)
    };
    let wt = input(&[o, ci, k.0, k.1], seed + 1, dtype).to_device(dev)?.variable();
    let b = input(&[o], seed + 2, dtype).to_device(dev)?.variable();
    let y = xv.conv2d(&wt, Some(&b), s, p)?;
    let mut out = with_grads(y, seed + 3, &[&x, &wt, &b])?;
    out.push(xv.conv2d(&wt, None, s, p)?);
    Ok(out)
}

parity_test!(conv2d_f32_forward_and_gradients, 1e-4, 1e-4, |dev| {
    let mut out = Vec::new();
    for (i, c) in CONV_CASES.iter().enumerate() {
        out.extend(conv_case(dev, DType::F32, c, 200 + 10 * i as u64, i % 2 == 1)?);
    }
    Ok(out)
});

parity_test!(conv2d_f64_forward_and_gradients, 1e-11, 1e-11, |dev| {
    let mut out = Vec::new();
    for (i, c) in CONV_CASES.iter().enumerate() {
        out.extend(conv_case(dev, DType::F64, c, 300 + 10 * i as u64, i % 2 == 0)?);
    }
    Ok(out)
});

// ---- pooling -------------------------------------------------------------------------

/// (N, C, H, W, kernel, stride, padding)
type PoolCase = (usize, usize, usize, usize, (usize, usize), (usize, usize), (usize, usize));
const POOL_CASES: [PoolCase; 6] = [
    (1, 1, 4, 4, (2, 2), (2, 2), (0, 0)),
    (2, 3, 5, 7, (3, 2), (1, 2), (1, 1)),
    (1, 2, 6, 5, (3, 3), (2, 1), (1, 0)),
    (2, 3, 1, 4, (1, 3), (1, 1), (0, 1)),
    (2, 2, 9, 8, (4, 5), (3, 2), (2, 2)),
    (4, 8, 33, 31, (3, 3), (2, 2), (1, 1)),
];

parity_test!(max_pool_with_ties_padding_and_nan, 0.0, 0.0, |dev| {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F64] {
        for (i, &(n, c, h, w, k, s, p)) in POOL_CASES.iter().enumerate() {
            // Coarse values tie inside most windows; a channels-last view for odd cases.
            let seed = 400 + i as u64;
            let (x, xv) = if i % 2 == 1 {
                let x = coarse(&[n, h, w, c], seed, dtype).to_device(dev)?.variable();
                let xv = x.permute(&[0, 3, 1, 2])?;
                (x, xv)
            } else {
                let x = coarse(&[n, c, h, w], seed, dtype).to_device(dev)?.variable();
                (x.clone(), x)
            };
            let (y, idx) = xv.max_pool2d_with_indices(k, s, p)?;
            out.push(idx);
            out.extend(with_grads(y, seed + 50, &[&x])?);
        }
        // NaN wins (the last one of a window), an all -inf window reports its first tap.
        let mut v = vec![1.0f64; 2 * 16];
        v[5] = f64::NAN;
        v[6] = f64::NAN;
        v[16..].fill(f64::NEG_INFINITY);
        let x = Tensor::from_vec(v, [2, 1, 4, 4])?.to_dtype(dtype)?.to_device(dev)?;
        let (y, idx) = x.max_pool2d_with_indices((3, 3), (1, 1), (1, 1))?;
        out.push(y);
        out.push(idx);
    }
    Ok(out)
});

parity_test!(avg_pool_both_divisors_forward_and_backward, 0.0, 0.0, |dev| {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F64] {
        for (i, &(n, c, h, w, k, s, p)) in POOL_CASES.iter().enumerate() {
            let x = input(&[n, c, w, h], 500 + i as u64, dtype).to_device(dev)?.variable();
            let xv = x.transpose(2, 3)?; // [n, c, h, w], strided
            for include in [true, false] {
                out.extend(with_grads(xv.avg_pool2d(k, s, p, include)?, 550 + i as u64, &[&x])?);
            }
        }
    }
    Ok(out)
});

// ---- dropout ---------------------------------------------------------------------------

/// The seed `Tensor::dropout` draws on a CUDA device from `rng(seed)`.
fn dropout_seed(seed: u64) -> u64 {
    use rand::RngCore;
    rng(seed).next_u64()
}

/// Bit-equal values, else the first differing element.
fn assert_same_mask(got: &Tensor, want: &Tensor, what: &str) {
    let (a, b) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x.to_bits() != y.to_bits()) {
        panic!("{what}: element {i}: device {} vs reference {}", a[i], b[i]);
    }
}

#[test]
fn dropout_mask_is_the_cpu_philox_reference_bit_for_bit() {
    let Some(dev) = gpu() else { return };
    for dtype in [DType::F32, DType::F64] {
        for (dims, p, seed) in [(vec![1001], 0.3, 1u64), (vec![7, 143], 0.5, 2), (vec![3], 0.9, 3), (vec![64, 1025], 0.1, 4)] {
            let x = Tensor::ones(dims.clone(), dtype).unwrap().to_device(dev).unwrap().variable();
            let y = x.dropout(p, true, &mut rng(seed)).unwrap();
            let want = philox_dropout_mask(dims.clone(), p, dropout_seed(seed), dtype).unwrap();
            // 1 · mask is exact, so y is the device mask.
            assert_same_mask(&y, &want, &format!("{dtype} {dims:?} p {p}"));
            // Backward multiplies by the same mask.
            let g = y
                .backward_with_grad(&Tensor::ones(dims.clone(), dtype).unwrap().to_device(dev).unwrap())
                .unwrap();
            assert_same_mask(g.get(&x).unwrap(), &want, &format!("{dtype} {dims:?} p {p} grad"));
        }
        let x = Tensor::ones([33], dtype).unwrap().to_device(dev).unwrap();
        assert!(x.dropout(1.0, true, &mut rng(5)).unwrap().to_f64_vec().unwrap().iter().all(|&v| v == 0.0));
    }
}

#[test]
fn device_philox_words_match_the_reference() {
    let Some(dev) = gpu() else { return };
    let Device::Cuda(ordinal) = dev else { unreachable!() };
    let d = tamer::backend::cuda::device(ordinal).unwrap();
    for seed in [0u64, 0x0123_4567_89ab_cdef, u64::MAX] {
        let words = tamer::backend::cuda::nn::dropout::philox_raw(&d, 1000, seed).unwrap();
        for g in 0..1000usize {
            let want = philox4x32_10([g as u32, 0, 0, 0], [seed as u32, (seed >> 32) as u32]);
            assert_eq!(&words[4 * g..4 * g + 4], &want, "seed {seed:x} counter {g}");
        }
    }
}

#[test]
fn dropout_drops_about_p_on_the_gpu() {
    let Some(dev) = gpu() else { return };
    let n = 1 << 20;
    for (p, seed) in [(0.1, 11u64), (0.5, 12), (0.75, 13)] {
        let x = Tensor::ones([n], DType::F32).unwrap().to_device(dev).unwrap();
        let y = x.dropout(p, true, &mut rng(seed)).unwrap().to_vec::<f32>().unwrap();
        let scale = (1.0 / (1.0 - p)) as f32;
        assert!(y.iter().all(|&v| v == 0.0 || v == scale), "p {p}: values other than 0 and {scale}");
        let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (dropped - n as f64 * p).abs() <= 3.0 * sigma,
            "p {p}: {dropped} of {n} dropped, expected {} ± {:.0}",
            n as f64 * p,
            3.0 * sigma
        );
        // Different seeds, different masks; the same seed, the same mask.
        let again = x.dropout(p, true, &mut rng(seed)).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(again, y);
        let other = x.dropout(p, true, &mut rng(seed + 100)).unwrap().to_vec::<f32>().unwrap();
        assert_ne!(other, y);
    }
}
