//! Indexing ops: gradient checks over random shapes, axes, repeated indices and
//! non-contiguous inputs; forward values against plain host references; errors.

use proptest::prelude::*;
use tamer::testing::strategies::{shape, tensor_with, view_kind, ViewKind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{DType, ErrorKind, Tensor};

fn cfg() -> ProptestConfig {
    proptest_config(24)
}

fn assert_grads(f: impl Fn(&[Tensor]) -> tamer::Result<Tensor>, inputs: &[Tensor]) -> Result<(), TestCaseError> {
    let report = check_gradients(f, inputs, &GradCheckConfig::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(report.passed(), "{report}");
    Ok(())
}

/// An axis of a rank-`rank` tensor, given as either its positive or its negative spelling.
fn axis_of(rank: usize) -> impl Strategy<Value = (usize, isize)> {
    (0..rank, any::<bool>()).prop_map(move |(a, neg)| (a, if neg { a as isize - rank as isize } else { a as isize }))
}

/// Dims, an axis, a view kind and a seed for the input tensor.
fn input_and_axis() -> impl Strategy<Value = (Vec<usize>, (usize, isize), ViewKind, u64)> {
    shape(1..=3, 1..=4).prop_flat_map(|dims| {
        let r = dims.len();
        (Just(dims), axis_of(r), view_kind(), any::<u64>())
    })
}

/// Row-major multi-index of `flat` in `dims`.
fn unravel(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for (i, &d) in idx.iter_mut().zip(dims).rev() {
        *i = flat % d;
        flat /= d;
    }
    idx
}
fn ravel(idx: &[usize], dims: &[usize]) -> usize {
    idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + i)
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn index_select_gradients(
        ((dims, (axis, signed), kind, seed), ids) in input_and_axis().prop_flat_map(|(dims, ax, kind, seed)| {
            let size = dims[ax.0] as i64;
            (Just((dims, ax, kind, seed)), proptest::collection::vec(0..size, 0..7))
        })
    ) {
        let x = tensor_with(&dims, kind, seed);
        let idx = Tensor::from_indices(&ids);
        // Forward against the host reference.
        let y = x.index_select(signed, &idx).unwrap();
        let mut out_dims = dims.clone();
        out_dims[axis] = ids.len();
        prop_assert_eq!(y.dims(), &out_dims[..]);
        let xv = x.to_vec::<f64>().unwrap();
        let yv = y.to_vec::<f64>().unwrap();
        for (e, &v) in yv.iter().enumerate() {
            let mut i = unravel(e, &out_dims);
            i[axis] = ids[i[axis]] as usize;
            prop_assert_eq!(v, xv[ravel(&i, &dims)]);
        }
        if !ids.is_empty() {
            assert_grads(|xs| xs[0].index_select(signed, &idx), &[x])?;
        }
    }

    #[test]
    fn index_add_gradients(
        ((dims, (axis, signed), kind, seed), ids, src_kind) in input_and_axis().prop_flat_map(|(dims, ax, kind, seed)| {
            let size = dims[ax.0] as i64;
            (Just((dims, ax, kind, seed)), proptest::collection::vec(0..size, 1..6), view_kind())
        })
    ) {
        let x = tensor_with(&dims, kind, seed);
        let mut src_dims = dims.clone();
        src_dims[axis] = ids.len();
        let src = tensor_with(&src_dims, src_kind, seed ^ 1);
        let idx = Tensor::from_indices(&ids);
        assert_grads(|xs| xs[0].index_add(signed, &idx, &xs[1])?.tanh(), &[x, src])?;
    }

    #[test]
    fn embedding_gradients(
        (v, d, id_dims, kind, seed) in (1usize..6, 1usize..4, shape(0..=2, 1..=3), view_kind(), any::<u64>()),
        raw_ids in proptest::collection::vec(0usize..1000, 9),
    ) {
        let n: usize = id_dims.iter().product();
        let ids: Vec<i64> = raw_ids[..n].iter().map(|&r| (r % v) as i64).collect();
        let weight = tensor_with(&[v, d], kind, seed);
        let idx = Tensor::from_vec(ids.clone(), id_dims.clone()).unwrap();
        let e = Tensor::embedding(&weight, &idx).unwrap();
        let mut expected_dims = id_dims.clone();
        expected_dims.push(d);
        prop_assert_eq!(e.dims(), &expected_dims[..]);
        let w = weight.to_vec2::<f64>().unwrap();
        let expected: Vec<f64> = ids.iter().flat_map(|&i| w[i as usize].clone()).collect();
        prop_assert_eq!(e.to_vec::<f64>().unwrap(), expected);
        assert_grads(|xs| Tensor::embedding(&xs[0], &idx), &[weight])?;
    }

    #[test]
    fn gather_gradients(
        ((dims, (axis, signed), kind, seed), id_dims, raw_ids) in input_and_axis().prop_flat_map(|(dims, ax, kind, seed)| {
            // ids no larger than x off the axis, any length along it
            let id_dims: Vec<BoxedStrategy<usize>> = dims
                .iter()
                .enumerate()
                .map(|(d, &n)| if d == ax.0 { (1usize..=4).boxed() } else { (1..=n).boxed() })
                .collect();
            (Just((dims, ax, kind, seed)), id_dims, proptest::collection::vec(0usize..1000, 64))
        })
    ) {
        let x = tensor_with(&dims, kind, seed);
        let n: usize = id_dims.iter().product();
        let ids: Vec<i64> = raw_ids[..n].iter().map(|&r| (r % dims[axis]) as i64).collect();
        let idx = Tensor::from_vec(ids.clone(), id_dims.clone()).unwrap();
        let y = x.gather(signed, &idx).unwrap();
        prop_assert_eq!(y.dims(), &id_dims[..]);
        let xv = x.to_vec::<f64>().unwrap();
        for (e, &v) in y.to_vec::<f64>().unwrap().iter().enumerate() {
            let mut i = unravel(e, &id_dims);
            i[axis] = ids[e] as usize;
            prop_assert_eq!(v, xv[ravel(&i, &dims)]);
        }
        assert_grads(|xs| xs[0].gather(signed, &idx), std::slice::from_ref(&x))?;
        // scatter_add with a source larger than the indices: only the leading block counts.
        let src_dims: Vec<usize> = id_dims.iter().map(|&d| d + 1).collect();
        let src = tensor_with(&src_dims, ViewKind::Permuted, seed ^ 7);
        assert_grads(|xs| xs[0].scatter_add(signed, &idx, &xs[1]), &[x, src])?;
    }

    #[test]
    fn cat_gradients(
        ((dims, (axis, signed), _, seed), sizes, kinds) in input_and_axis().prop_flat_map(|base| {
            (Just(base), proptest::collection::vec(0usize..=3, 1..=3), proptest::collection::vec(view_kind(), 3))
        })
    ) {
        prop_assume!(sizes.iter().sum::<usize>() > 0);
        let parts: Vec<Tensor> = sizes
            .iter()
            .zip(&kinds)
            .enumerate()
            .map(|(k, (&s, &kind))| {
                let mut d = dims.clone();
                d[axis] = s;
                tensor_with(&d, if s == 0 { ViewKind::Contiguous } else { kind }, seed.wrapping_add(k as u64))
            })
            .collect();
        let y = Tensor::cat(&parts, signed).unwrap();
        let mut out_dims = dims.clone();
        out_dims[axis] = sizes.iter().sum();
        prop_assert_eq!(y.dims(), &out_dims[..]);
        // Forward: every output element comes from the part whose range holds it.
        let yv = y.to_vec::<f64>().unwrap();
        let pv: Vec<Vec<f64>> = parts.iter().map(|p| p.to_vec::<f64>().unwrap()).collect();
        for (e, &v) in yv.iter().enumerate() {
            let mut i = unravel(e, &out_dims);
            let mut p = 0;
            while i[axis] >= sizes[p] {
                i[axis] -= sizes[p];
                p += 1;
            }
            prop_assert_eq!(v, pv[p][ravel(&i, parts[p].dims())]);
        }
        let nonempty: Vec<Tensor> = parts.into_iter().filter(|p| p.numel() > 0).collect();
        assert_grads(|xs| Tensor::cat(xs, signed), &nonempty)?;
    }

    #[test]
    fn stack_gradients(
        (dims, n, axis_raw, kinds, seed) in (shape(0..=3, 1..=3), 1usize..=3, any::<u8>(), proptest::collection::vec(view_kind(), 3), any::<u64>())
    ) {
        let r = dims.len() + 1;
        let axis = (axis_raw as usize % (2 * r)) as isize - r as isize; // -r..r
        let parts: Vec<Tensor> = (0..n).map(|k| tensor_with(&dims, kinds[k], seed.wrapping_add(k as u64))).collect();
        let y = Tensor::stack(&parts, axis).unwrap();
        let a = if axis < 0 { axis + r as isize } else { axis } as usize;
        let mut expected = dims.clone();
        expected.insert(a, n);
        prop_assert_eq!(y.dims(), &expected[..]);
        for (k, p) in parts.iter().enumerate() {
            prop_assert_eq!(y.narrow(a as isize, k, 1).unwrap().to_vec::<f64>().unwrap(), p.to_vec::<f64>().unwrap());
        }
        assert_grads(|xs| Tensor::stack(xs, axis), &parts)?;
    }

    #[test]
    fn split_and_chunk_gradients(
        ((dims, (axis, signed), kind, seed), size, n) in input_and_axis().prop_flat_map(|base| (Just(base), 1usize..=3, 1usize..=4))
    ) {
        let x = tensor_with(&dims, kind, seed);
        let pieces = x.split(size, signed).unwrap();
        prop_assert_eq!(pieces.len(), dims[axis].div_ceil(size));
        prop_assert!(pieces.iter().all(|p| p.same_storage(&x)), "split returns views");
        let chunks = x.chunk(n, signed).unwrap();
        prop_assert!(chunks.len() <= n);
        prop_assert_eq!(chunks.iter().map(|c| c.dims()[axis]).sum::<usize>(), dims[axis]);
        // Rejoined in reverse with a different weight per piece: a misplaced gradient shows.
        let rejoin = |parts: Vec<Tensor>| -> tamer::Result<Tensor> {
            let scaled = parts.iter().rev().enumerate().map(|(k, p)| p.scale(k as f64 + 1.0)).collect::<tamer::Result<Vec<_>>>()?;
            Tensor::cat(&scaled, signed)
        };
        assert_grads(|xs| rejoin(xs[0].split(size, signed)?), std::slice::from_ref(&x))?;
        assert_grads(|xs| rejoin(xs[0].chunk(n, signed)?), &[x])?;
    }
}

#[test]
fn repeated_indices_accumulate_gradients() {
    let weight = Tensor::from_vec(vec![0.0f64; 8], [4, 2]).unwrap().variable();
    let ids = Tensor::from_vec(vec![1i64, 3, 1, 1], [2, 2]).unwrap();
    let loss = Tensor::embedding(&weight, &ids).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap().get(&weight).unwrap().to_vec2::<f64>().unwrap();
    assert_eq!(g, vec![vec![0.0, 0.0], vec![3.0, 3.0], vec![0.0, 0.0], vec![1.0, 1.0]]);

    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], [1, 3]).unwrap().variable();
    let idx = Tensor::from_vec(vec![2i64, 2, 0, 2], [1, 4]).unwrap();
    let loss = x.gather(1, &idx).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap().get(&x).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(g, vec![1.0, 0.0, 3.0]);
}

#[test]
fn large_embedding_lookup_and_backward_use_the_parallel_paths() {
    // 2 × 300 ids into a [1000, 128] table: 76800 output elements.
    let (v, d) = (1000usize, 128usize);
    let table: Vec<f32> = (0..v * d).map(|i| (i % 977) as f32 * 0.01).collect();
    let weight = Tensor::from_vec(table.clone(), [v, d]).unwrap().variable();
    let ids: Vec<i64> = (0..600).map(|j| ((j * 37) % 250) as i64).collect();
    let idx = Tensor::from_vec(ids.clone(), [2, 300]).unwrap();
    let e = Tensor::embedding(&weight, &idx).unwrap();
    let got = e.to_vec::<f32>().unwrap();
    for (j, &i) in ids.iter().enumerate() {
        assert_eq!(&got[j * d..(j + 1) * d], &table[i as usize * d..(i as usize + 1) * d]);
    }
    let g = e.sum_all().unwrap().backward().unwrap().get(&weight).unwrap().to_vec2::<f32>().unwrap();
    let mut counts = vec![0f32; v];
    for &i in &ids {
        counts[i as usize] += 1.0;
    }
    for (row, &c) in g.iter().zip(&counts) {
        assert!(row.iter().all(|&x| x == c));
    }
}

#[test]
fn data_movement_works_for_every_dtype() {
    let ids = Tensor::from_vec(vec![5i64, 7, 9, 11], [2, 2]).unwrap();
    let more = Tensor::from_vec(vec![1i64, 2], [1, 2]).unwrap();
    let both = Tensor::cat(&[ids.clone(), more], 0).unwrap();
    assert_eq!(both.to_vec::<i64>().unwrap(), vec![5, 7, 9, 11, 1, 2]);
    assert_eq!(ids.index_select(1, &Tensor::from_indices(&[1])).unwrap().to_vec::<i64>().unwrap(), vec![7, 11]);
    let h = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]).unwrap().to_dtype(DType::BF16).unwrap();
    let picked = h.index_select(0, &Tensor::from_indices(&[2, 0])).unwrap();
    assert_eq!(picked.dtype(), DType::BF16);
    assert_eq!(picked.to_f64_vec().unwrap(), vec![3.0, 1.0]);
}

#[test]
fn transposed_inputs_select_correctly() {
    // x.t() is [3, 2] with strides [1, 3]: the strided path.
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap().t().unwrap();
    let rows = x.index_select(0, &Tensor::from_indices(&[2, 0])).unwrap();
    assert_eq!(rows.to_vec2::<f32>().unwrap(), vec![vec![3.0, 6.0], vec![1.0, 4.0]]);
    let ids = Tensor::from_vec(vec![1i64, 0, 0], [3, 1]).unwrap();
    assert_eq!(x.gather(1, &ids).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 2.0, 3.0]);
}

#[test]
fn out_of_range_and_negative_indices_are_errors() {
    let x = Tensor::zeros([3, 4], DType::F32).unwrap();
    let err = x.index_select(1, &Tensor::from_indices(&[0, 4])).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Index);
    assert_eq!(err.op, "index_select");
    assert!(
        err.message.contains("index 4") && err.message.contains("size 4") && err.message.contains("axis 1"),
        "{err}"
    );
    let err = x.index_select(0, &Tensor::from_indices(&[-1])).unwrap_err();
    assert!(err.message.contains("index -1") && err.message.contains("negative"), "{err}");

    let err = x.gather(0, &Tensor::from_vec(vec![0i64, 3], [1, 2]).unwrap()).unwrap_err();
    assert_eq!((&err.kind, err.op), (&ErrorKind::Index, "gather"));
    assert!(err.message.contains("index 3") && err.message.contains("size 3"), "{err}");

    let w = Tensor::zeros([10, 2], DType::F32).unwrap();
    let err = Tensor::embedding(&w, &Tensor::from_vec(vec![3i64, 10], [1, 2]).unwrap()).unwrap_err();
    assert_eq!((&err.kind, err.op), (&ErrorKind::Index, "embedding"));
    assert!(err.message.contains("index 10") && err.message.contains("size 10"), "{err}");

    let err = Tensor::zeros([2], DType::F64)
        .unwrap()
        .index_add(0, &Tensor::from_indices(&[2]), &Tensor::zeros([1], DType::F64).unwrap())
        .unwrap_err();
    assert_eq!((&err.kind, err.op), (&ErrorKind::Index, "index_add"));
}

#[test]
fn bad_axes_are_errors() {
    let x = Tensor::zeros([2, 3], DType::F32).unwrap();
    let ids = Tensor::from_indices(&[0]);
    for axis in [2, -3] {
        let err = x.index_select(axis, &ids).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Axis);
        assert!(
            err.to_string().contains("index_select") && err.message.contains(&format!("axis {axis}")),
            "{err}"
        );
    }
    assert_eq!(x.gather(2, &Tensor::from_vec(vec![0i64], [1, 1]).unwrap()).unwrap_err().kind, ErrorKind::Axis);
    assert_eq!(Tensor::cat(&[x.clone(), x.clone()], 2).unwrap_err().kind, ErrorKind::Axis);
    assert_eq!(Tensor::stack(std::slice::from_ref(&x), 3).unwrap_err().kind, ErrorKind::Axis);
    assert!(Tensor::stack(std::slice::from_ref(&x), 2).is_ok());
    assert_eq!(x.split(1, -3).unwrap_err().kind, ErrorKind::Axis);
    assert_eq!(x.chunk(2, 5).unwrap_err().kind, ErrorKind::Axis);
}

#[test]
fn wrong_index_dtype_is_an_error() {
    let x = Tensor::zeros([3, 2], DType::F32).unwrap();
    let float_ids = Tensor::from_vec(vec![0.0f32, 1.0], [2]).unwrap();
    for err in [
        x.index_select(0, &float_ids).unwrap_err(),
        Tensor::embedding(&x, &float_ids).unwrap_err(),
        x.gather(0, &float_ids.reshape([2, 1]).unwrap()).unwrap_err(),
    ] {
        assert_eq!(err.kind, ErrorKind::DType);
        assert!(err.message.contains("i64") && err.message.contains("f32"), "{err}");
    }
}

#[test]
fn shape_mismatches_are_errors() {
    let a = Tensor::zeros([2, 3], DType::F32).unwrap();
    let b = Tensor::zeros([2, 4], DType::F32).unwrap();
    let err = Tensor::cat(&[a.clone(), b.clone()], 0).unwrap_err();
    assert_eq!((&err.kind, err.op), (&ErrorKind::Shape, "cat"));
    assert!(
        err.message.contains("[2, 4]") && err.message.contains("[2, 3]") && err.message.contains("tensor 1"),
        "{err}"
    );
    assert_eq!(Tensor::cat(&[a.clone(), b.clone()], 1).unwrap().dims(), &[2, 7]);
    let err = Tensor::cat(&[a.clone(), Tensor::zeros([2, 3, 1], DType::F32).unwrap()], 0).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Shape);
    let err = Tensor::cat(&[], 0).unwrap_err();
    assert!(err.message.contains("empty"), "{err}");
    let err = Tensor::stack(&[], 0).unwrap_err();
    assert_eq!(err.op, "stack");
    let err = Tensor::cat(&[a.clone(), Tensor::zeros([2, 3], DType::F64).unwrap()], 0).unwrap_err();
    assert_eq!(err.kind, ErrorKind::DType);
    assert!(err.message.contains("f32") && err.message.contains("f64"), "{err}");
    let err = Tensor::stack(&[a.clone(), b.clone()], 0).unwrap_err();
    assert_eq!((&err.kind, err.op), (&ErrorKind::Shape, "stack"));

    let ids2d = Tensor::from_vec(vec![0i64, 1], [1, 2]).unwrap();
    assert_eq!(a.index_select(0, &ids2d).unwrap_err().kind, ErrorKind::Shape);
    let err = a.gather(1, &Tensor::from_indices(&[0])).unwrap_err();
    assert!(err.kind == ErrorKind::Shape && err.message.contains("rank"), "{err}");
    let err = a.gather(1, &Tensor::from_vec(vec![0i64; 3], [3, 1]).unwrap()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Shape, "ids larger than the input off the axis: {err}");
    let err = Tensor::embedding(&Tensor::zeros([4], DType::F32).unwrap(), &ids2d).unwrap_err();
    assert!(err.kind == ErrorKind::Shape && err.message.contains("2-D"), "{err}");
    let err = a.index_add(1, &Tensor::from_indices(&[0]), &b).unwrap_err();
    assert!(err.kind == ErrorKind::Shape && err.message.contains("[2, 1]"), "{err}");

    assert_eq!(a.split(0, 0).unwrap_err().kind, ErrorKind::Value);
    assert_eq!(a.chunk(0, 0).unwrap_err().kind, ErrorKind::Value);
    assert_eq!(a.split_with_sizes(&[1, 1], 1).unwrap_err().kind, ErrorKind::Shape);
    assert_eq!(a.split_with_sizes(&[usize::MAX, 4], 1).unwrap_err().kind, ErrorKind::Shape);
}

#[test]
fn split_and_chunk_follow_pytorch_sizes() {
    let x = Tensor::arange(0.0, 6.0, 1.0, DType::F32).unwrap();
    let lens = |v: Vec<Tensor>| v.iter().map(|t| t.numel()).collect::<Vec<_>>();
    assert_eq!(lens(x.chunk(4, 0).unwrap()), vec![2, 2, 2]);
    assert_eq!(lens(x.chunk(6, 0).unwrap()), vec![1; 6]);
    assert_eq!(lens(x.chunk(8, 0).unwrap()), vec![1; 6]);
    assert_eq!(lens(x.split(4, 0).unwrap()), vec![4, 2]);
    assert_eq!(lens(x.split(10, 0).unwrap()), vec![6]);
    let empty = Tensor::zeros([0, 2], DType::F32).unwrap();
    assert_eq!(lens(empty.split(2, 0).unwrap()), vec![0]);
    assert_eq!(lens(empty.chunk(3, 0).unwrap()), vec![0, 0, 0]);
}
