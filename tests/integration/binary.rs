//! Binary ops with broadcasting: gradient checks over broadcast-compatible shapes and
//! non-contiguous views, comparison masks, and forward values against a naive reference.

use proptest::prelude::*;
use tamer::testing::strategies::{self, tensor_with, tensor_with_dtype, ViewKind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{DType, Result, Tensor};

/// Two f64 tensors of broadcast-compatible shapes, each in any view kind.
fn pair() -> impl Strategy<Value = (Tensor, Tensor)> {
    (strategies::broadcast_pair(3, 4), strategies::view_kind(), strategies::view_kind(), any::<u64>())
        .prop_map(|((a, b), ka, kb, seed)| (tensor_with(&a, ka, seed), tensor_with(&b, kb, seed.wrapping_add(0x9E37_79B9))))
}

/// Rewrite `x`'s values through `f`, keeping its layout.
fn remap(x: &Tensor, f: impl Fn(f64) -> f64) -> Tensor {
    let values: Vec<f64> = x.to_f64_vec().unwrap().into_iter().map(f).collect();
    let src = Tensor::from_vec(values, x.dims().to_vec()).unwrap().to_dtype(x.dtype()).unwrap();
    x.assign(&src).unwrap();
    x.clone()
}

fn grad_ok(f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>, a: Tensor, b: Tensor) -> std::result::Result<(), TestCaseError> {
    let what = format!(
        "{:?} (strides {:?}) with {:?} (strides {:?})",
        a.dims(),
        a.layout().strides(),
        b.dims(),
        b.layout().strides()
    );
    let report = check_gradients(|xs| f(&xs[0], &xs[1]), &[a, b], &GradCheckConfig::default()).unwrap();
    prop_assert!(report.passed(), "{what}: {report}");
    Ok(())
}

/// The smallest |a - b| over the broadcast pairs.
fn min_gap(a: &Tensor, b: &Tensor) -> f64 {
    a.sub(b).unwrap().abs().unwrap().min(&[], false).unwrap().to_scalar().unwrap()
}

proptest! {
    #![proptest_config(proptest_config(32))]

    #[test]
    fn grad_add((a, b) in pair()) { grad_ok(|a, b| a.add(b), a, b)?; }
    #[test]
    fn grad_sub((a, b) in pair()) { grad_ok(|a, b| a.sub(b), a, b)?; }
    #[test]
    fn grad_mul((a, b) in pair()) { grad_ok(|a, b| a.mul(b), a, b)?; }
    #[test]
    fn grad_div((a, b) in pair()) {
        let b = remap(&b, |v| v.signum() * (v.abs() + 0.5));
        grad_ok(|a, b| a.div(b), a, b)?;
    }
    #[test]
    fn grad_pow((a, b) in pair()) {
        let a = remap(&a, |v| v.abs() + 0.5);
        grad_ok(|a, b| a.pow(b), a, b)?;
    }
    #[test]
    fn grad_maximum((a, b) in pair()) {
        prop_assume!(min_gap(&a, &b) > 1e-3);
        grad_ok(|a, b| a.maximum(b), a, b)?;
    }
    #[test]
    fn grad_minimum((a, b) in pair()) {
        prop_assume!(min_gap(&a, &b) > 1e-3);
        grad_ok(|a, b| a.minimum(b), a, b)?;
    }
    /// Operand order and reuse: `a·b + a/(b² + 1) - b`.
    #[test]
    fn grad_composite((a, b) in pair()) {
        grad_ok(|a, b| a.mul(b)?.add(&a.div(&b.square()?.add_scalar(1.0)?)?)?.sub(b), a, b)?;
    }
    #[test]
    fn grad_where_cond((t, f) in pair(), kind in strategies::view_kind(), seed in any::<u64>(), cond_first in any::<bool>()) {
        // The condition takes one operand's shape, so all three broadcast together.
        let dims = if cond_first { t.dims().to_vec() } else { f.dims().to_vec() };
        let cond = tensor_with(&dims, kind, seed).gt(&Tensor::zeros([1], DType::F64).unwrap()).unwrap();
        grad_ok(|t, f| cond.where_cond(t, f), t, f)?;
    }
    #[test]
    fn grad_masked_fill((x, m) in pair()) {
        let mask = m.lt(&Tensor::zeros([], DType::F64).unwrap()).unwrap();
        let report = check_gradients(|xs| xs[0].masked_fill(&mask, 3.5), &[x], &GradCheckConfig::default()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }

    #[test]
    fn forward_values_match_naive_broadcast(
        (da, db) in strategies::broadcast_pair(4, 5),
        ka in strategies::view_kind(),
        kb in strategies::view_kind(),
        seed in any::<u64>(),
        f32_dtype in any::<bool>(),
    ) {
        let dtype = if f32_dtype { DType::F32 } else { DType::F64 };
        let a = tensor_with_dtype(&da, ka, seed, dtype);
        let b = remap(&tensor_with_dtype(&db, kb, !seed, dtype), |v| v.signum() * (v.abs() + 0.25));
        check_all_binary(&a, &b);
    }

    #[test]
    fn comparisons_return_correct_masks((a, b) in pair(), f32_dtype in any::<bool>()) {
        // Round to a few values so that ties are common.
        let dtype = if f32_dtype { DType::F32 } else { DType::F64 };
        let a = remap(&a, |v| v.round()).to_dtype(dtype).unwrap();
        let b = remap(&b, |v| v.round()).to_dtype(dtype).unwrap();
        let (av, bv) = (a.variable(), b.variable());
        type Cmp = (&'static str, fn(&Tensor, &Tensor) -> Result<Tensor>, fn(f64, f64) -> bool);
        let cmps: [Cmp; 6] = [
            ("eq", |a, b| a.eq(b), |a, b| a == b),
            ("ne", |a, b| a.ne(b), |a, b| a != b),
            ("lt", |a, b| a.lt(b), |a, b| a < b),
            ("le", |a, b| a.le(b), |a, b| a <= b),
            ("gt", |a, b| a.gt(b), |a, b| a > b),
            ("ge", |a, b| a.ge(b), |a, b| a >= b),
        ];
        for (name, op, reference) in cmps {
            let mask = op(&av, &bv).unwrap();
            prop_assert!(!mask.requires_grad(), "{name} must not record a gradient");
            prop_assert_eq!(mask.dtype(), dtype);
            let (dims, want) = naive(&a, &b, |x, y| if reference(x, y) { 1.0 } else { 0.0 });
            prop_assert_eq!(mask.dims(), &dims[..], "{}", name);
            prop_assert_eq!(mask.to_f64_vec().unwrap(), want, "{}", name);
        }
    }
}

/// `f` applied over the numpy broadcast of `a` and `b`, by explicit index arithmetic.
fn naive(a: &Tensor, b: &Tensor, f: impl Fn(f64, f64) -> f64) -> (Vec<usize>, Vec<f64>) {
    let (av, bv) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    let rank = a.rank().max(b.rank());
    let pad = |d: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, rank - d.len()).chain(d.iter().copied()).collect() };
    let (pa, pb) = (pad(a.dims()), pad(b.dims()));
    let out: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
    let n: usize = out.iter().product();
    let flat = |idx: &[usize], dims: &[usize]| idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + if d == 1 { 0 } else { i });
    let values = (0..n)
        .map(|mut k| {
            let mut idx = vec![0; rank];
            for ax in (0..rank).rev() {
                idx[ax] = k % out[ax];
                k /= out[ax];
            }
            f(av[flat(&idx, &pa)], bv[flat(&idx, &pb)])
        })
        .collect();
    (out, values)
}

fn close(got: &[f64], want: &[f64], dtype: DType, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let (rtol, atol) = if dtype == DType::F32 { (1e-6, 1e-6) } else { (1e-14, 1e-14) };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= atol + rtol * w.abs(), "{what}: element {i} is {g}, expected {w}");
    }
}

/// Every arithmetic op of `a` and `b` (b nonzero) against the naive reference computed in `a`'s dtype.
fn check_all_binary(a: &Tensor, b: &Tensor) {
    let dtype = a.dtype();
    // Round each reference result to the dtype, as the kernel computes in it.
    let round = |v: f64| if dtype == DType::F32 { v as f32 as f64 } else { v };
    type Op = (&'static str, fn(&Tensor, &Tensor) -> Result<Tensor>, fn(f64, f64) -> f64);
    let ops: [Op; 7] = [
        ("add", |a, b| a.add(b), |a, b| a + b),
        ("sub", |a, b| a.sub(b), |a, b| a - b),
        ("mul", |a, b| a.mul(b), |a, b| a * b),
        ("div", |a, b| a.div(b), |a, b| a / b),
        ("pow", |a, b| a.abs()?.pow(b), |a, b| a.abs().powf(b)),
        ("maximum", |a, b| a.maximum(b), f64::max),
        ("minimum", |a, b| a.minimum(b), f64::min),
    ];
    for (name, op, reference) in ops {
        let what = format!(
            "{name} {dtype} {:?}/{:?} with {:?}/{:?}",
            a.dims(),
            a.layout().strides(),
            b.dims(),
            b.layout().strides()
        );
        let y = op(a, b).unwrap();
        let (dims, want) = naive(a, b, |x, y| round(reference(x, y)));
        assert_eq!(y.dims(), &dims[..], "{what}");
        assert_eq!(y.dtype(), dtype, "{what}");
        assert!(y.is_contiguous());
        close(&y.to_f64_vec().unwrap(), &want, dtype, &what);
    }
}

#[test]
fn forward_values_on_the_threaded_path() {
    // Above PARALLEL_THRESHOLD: contiguous pairs, broadcast rows and columns, transposed operands.
    for dtype in [DType::F32, DType::F64] {
        let shapes: [(&[usize], ViewKind, &[usize], ViewKind); 5] = [
            (&[300, 257], ViewKind::Contiguous, &[300, 257], ViewKind::Contiguous),
            (&[300, 257], ViewKind::Sliced, &[257], ViewKind::Contiguous),
            (&[300, 257], ViewKind::Permuted, &[300, 1], ViewKind::Sliced),
            (&[3, 1, 257], ViewKind::Contiguous, &[50, 1], ViewKind::Permuted),
            (&[1], ViewKind::Contiguous, &[40000], ViewKind::Sliced),
        ];
        for (da, ka, db, kb) in shapes {
            let a = tensor_with_dtype(da, ka, 1, dtype);
            let b = remap(&tensor_with_dtype(db, kb, 2, dtype), |v| v.signum() * (v.abs() + 0.25));
            check_all_binary(&a, &b);
            check_all_binary(&b, &a.add_scalar(1.0).unwrap());
        }
    }
}

#[test]
fn scalar_operands() {
    let x = Tensor::from_vec(vec![1.0f64, -2.0, 3.0], [3]).unwrap();
    let s = Tensor::scalar(2.0f64);
    assert_eq!(x.mul(&s).unwrap().to_vec::<f64>().unwrap(), vec![2.0, -4.0, 6.0]);
    assert_eq!(s.sub(&x).unwrap().to_vec::<f64>().unwrap(), vec![1.0, 4.0, -1.0]);
    let y = s.add(&Tensor::scalar(0.5f64)).unwrap();
    assert_eq!(y.rank(), 0);
    assert_eq!(y.to_scalar().unwrap(), 2.5);
    let report = check_gradients(|xs| xs[0].div(&xs[1]), &[x, s], &GradCheckConfig::default()).unwrap();
    assert!(report.passed(), "{report}");
}

#[test]
fn extremum_ties_split_the_gradient() {
    let a = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], [3]).unwrap().variable();
    let b = Tensor::from_vec(vec![1.0f64, 5.0, 0.0], [3]).unwrap().variable();
    for y in [a.maximum(&b).unwrap(), a.minimum(&b).unwrap()] {
        let is_max = y.to_vec::<f64>().unwrap()[1] == 5.0;
        let g = y.sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (g.get(&a).unwrap().to_vec::<f64>().unwrap(), g.get(&b).unwrap().to_vec::<f64>().unwrap());
        if is_max {
            assert_eq!((ga, gb), (vec![0.5, 0.0, 1.0], vec![0.5, 1.0, 0.0]));
        } else {
            assert_eq!((ga, gb), (vec![0.5, 1.0, 0.0], vec![0.5, 0.0, 1.0]));
        }
    }
    // maximum(x, x) passes the whole gradient to x.
    let g = a.maximum(&a).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&a).unwrap().to_vec::<f64>().unwrap(), vec![1.0; 3]);
}

#[test]
fn pow_gradient_at_zero_base() {
    // d(aᵇ)/db at a = 0 is taken as 0 (PyTorch's convention), not NaN.
    let a = Tensor::from_vec(vec![0.0f64, 2.0], [2]).unwrap().variable();
    let b = Tensor::from_vec(vec![2.0f64, 3.0], [2]).unwrap().variable();
    let g = a.pow(&b).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&a).unwrap().to_vec::<f64>().unwrap(), vec![0.0, 12.0]);
    let gb = g.get(&b).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(gb[0], 0.0);
    assert!((gb[1] - 8.0 * 2f64.ln()).abs() < 1e-12);
}

#[test]
fn where_and_masked_fill_values() {
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.0, -4.0, 5.0, -6.0], [2, 3]).unwrap();
    let zero = Tensor::zeros([], DType::F32).unwrap();
    let mask = x.lt(&zero).unwrap();
    assert_eq!(x.masked_fill(&mask, 0.5).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 0.5, 3.0, 0.5, 5.0, 0.5]);
    // A row mask broadcast over columns, and a transposed input.
    let row = Tensor::from_vec(vec![0.0f32, 1.0], [2, 1]).unwrap();
    assert_eq!(
        x.masked_fill(&row, 9.0).unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![1.0, -2.0, 3.0], vec![9.0; 3]]
    );
    let xt = x.t().unwrap();
    let col = Tensor::from_vec(vec![1.0f32, 0.0], [2]).unwrap();
    let y = col.where_cond(&xt, &xt.neg().unwrap()).unwrap();
    assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![1.0, 4.0], vec![-2.0, -5.0], vec![3.0, 6.0]]);
    // The condition gets no gradient, the values get theirs routed by the mask.
    let t = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], [3]).unwrap().variable();
    let f = Tensor::scalar(7.0f64).variable();
    let c = Tensor::from_vec(vec![1.0f64, 0.0, 1.0], [3]).unwrap().variable();
    let g = c.where_cond(&t, &f).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&t).unwrap().to_vec::<f64>().unwrap(), vec![1.0, 0.0, 1.0]);
    assert_eq!(g.get(&f).unwrap().to_scalar().unwrap(), 1.0);
    assert!(g.get(&c).is_none());
}

#[test]
fn nan_propagates_through_maximum_and_minimum() {
    for dtype in [DType::F32, DType::F64] {
        let a = Tensor::from_vec(vec![f64::NAN, 1.0, f64::NAN], [3]).unwrap().to_dtype(dtype).unwrap();
        let b = Tensor::from_vec(vec![1.0, f64::NAN, f64::NAN], [3]).unwrap().to_dtype(dtype).unwrap();
        for y in [a.maximum(&b).unwrap(), b.maximum(&a).unwrap(), a.minimum(&b).unwrap(), b.minimum(&a).unwrap()] {
            assert!(y.to_f64_vec().unwrap().iter().all(|v| v.is_nan()), "{y}");
        }
    }
}
