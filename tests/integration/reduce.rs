//! Reductions: gradient checks over random axis subsets (negative axes, keepdim),
//! forward values against a naive grouping reference, argmax/argmin, max and
//! min with indices (torch.max(x, dim)), and sum_to_shape.

use crate::common::spread_apart;
use proptest::prelude::*;
use tamer::testing::strategies::{self, tensor_with, tensor_with_dtype, ViewKind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{DType, Result, Tensor};

/// A tensor, an axis list (each axis maybe negative, in random order; empty means all) and keepdim.
fn reduction() -> impl Strategy<Value = (Tensor, Vec<isize>, bool)> {
    (
        strategies::tensor(strategies::shape(1..=4, 1..=4)),
        proptest::collection::vec(any::<bool>(), 4),
        proptest::collection::vec(any::<bool>(), 4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(x, pick, negative, reversed, keepdim)| {
            let rank = x.rank() as isize;
            let mut axes: Vec<isize> = (0..rank)
                .filter(|&i| pick[i as usize])
                .map(|i| if negative[i as usize] { i - rank } else { i })
                .collect();
            if reversed {
                axes.reverse();
            }
            (x, axes, keepdim)
        })
}

/// Normalised, sorted axes (empty input: all axes).
fn resolve(axes: &[isize], rank: usize) -> Vec<usize> {
    if axes.is_empty() {
        return (0..rank).collect();
    }
    let mut out: Vec<usize> = axes.iter().map(|&a| if a < 0 { (a + rank as isize) as usize } else { a as usize }).collect();
    out.sort_unstable();
    out
}

/// The elements of `x` grouped by output position (reduced axes collapsed), and the keepdim shape.
fn groups(x: &Tensor, axes: &[usize]) -> (Vec<usize>, Vec<Vec<f64>>) {
    let dims = x.dims();
    let keep: Vec<usize> = dims.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
    let mut out = vec![Vec::new(); keep.iter().product()];
    for (k, v) in x.to_f64_vec().unwrap().into_iter().enumerate() {
        // Unravel k over dims, re-ravel over keep.
        let (mut rest, mut flat, mut scale) = (k, 0, 1);
        for ax in (0..dims.len()).rev() {
            let i = rest % dims[ax];
            rest /= dims[ax];
            flat += if keep[ax] == 1 { 0 } else { i * scale };
            scale *= keep[ax];
        }
        out[flat].push(v);
    }
    (keep, out)
}

fn squeeze_dims(keep: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    keep.iter().enumerate().filter(|(i, _)| keepdim || !axes.contains(i)).map(|(_, &d)| d).collect()
}

type Reduce = fn(&Tensor, &[isize], bool) -> Result<Tensor>;

/// (name, `max_with_indices` or `min_with_indices`, whether a value beats the best so far)
type ExtremeCase = (&'static str, fn(&Tensor, isize, bool) -> Result<(Tensor, Tensor)>, fn(f64, f64) -> bool);

/// (name, op, reference over one group, correction: groups this small must be an error)
type ReduceCase = (&'static str, Reduce, fn(&[f64]) -> f64, usize);

fn ops() -> Vec<ReduceCase> {
    let mean = |g: &[f64]| g.iter().sum::<f64>() / g.len() as f64;
    fn var(g: &[f64], correction: usize) -> f64 {
        let m = g.iter().sum::<f64>() / g.len() as f64;
        g.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (g.len() - correction) as f64
    }
    vec![
        ("sum", |x, a, k| x.sum(a, k), |g| g.iter().sum(), 0),
        ("mean", |x, a, k| x.mean(a, k), mean, 0),
        ("max", |x, a, k| x.max(a, k), |g| g.iter().copied().fold(f64::NEG_INFINITY, f64::max), 0),
        ("min", |x, a, k| x.min(a, k), |g| g.iter().copied().fold(f64::INFINITY, f64::min), 0),
        ("var0", |x, a, k| x.var(a, k, 0), |g| var(g, 0), 0),
        ("var1", |x, a, k| x.var(a, k, 1), |g| var(g, 1), 1),
    ]
}

proptest! {
    #![proptest_config(proptest_config(32))]

    #[test]
    fn gradients_and_values((x, axes, keepdim) in reduction()) {
        // No near-ties: a finite difference step must not change which element is the max or min.
        let x = spread_apart(&x);
        let resolved = resolve(&axes, x.rank());
        let (keep, groups) = groups(&x, &resolved);
        let count = groups[0].len();
        for (name, op, reference, correction) in ops() {
            if count <= correction {
                prop_assert!(op(&x, &axes, keepdim).is_err(), "{} over {} elements", name, count);
                continue;
            }
            let y = op(&x, &axes, keepdim).unwrap();
            prop_assert_eq!(y.dims(), &squeeze_dims(&keep, &resolved, keepdim)[..], "{} {:?} keepdim {}", name, axes, keepdim);
            for (got, g) in y.to_f64_vec().unwrap().iter().zip(&groups) {
                let want = reference(g);
                prop_assert!((got - want).abs() < 1e-12 * (1.0 + want.abs()), "{} {:?}: {} vs {}", name, axes, got, want);
            }
            let report = check_gradients(|xs| op(&xs[0], &axes, keepdim), std::slice::from_ref(&x), &GradCheckConfig::default()).unwrap();
            prop_assert!(report.passed(), "{} over {:?} of {:?} (strides {:?}) keepdim {}: {}", name, axes, x.dims(), x.layout().strides(), keepdim, report);
        }
    }

    #[test]
    fn argmax_matches_first_maximal_index(x in strategies::tensor(strategies::shape(1..=4, 1..=4)), axis_seed in 0usize..4, negative in any::<bool>(), keepdim in any::<bool>()) {
        // Rounded values make ties common; the first maximal index wins.
        let x = x.affine(2.0, 0.0).unwrap().to_dtype(DType::F32).unwrap().sign_round();
        let rank = x.rank();
        let axis = axis_seed % rank;
        let a = if negative { axis as isize - rank as isize } else { axis as isize };
        let idx = x.argmax(a, keepdim).unwrap();
        prop_assert_eq!(idx.dtype(), DType::I64);
        prop_assert!(!idx.requires_grad());
        let (keep, groups) = groups(&x, &[axis]);
        prop_assert_eq!(idx.dims(), &squeeze_dims(&keep, &[axis], keepdim)[..]);
        let want: Vec<i64> = groups
            .iter()
            .map(|g| g.iter().enumerate().fold(0, |best, (i, &v)| if v > g[best] { i } else { best }) as i64)
            .collect();
        prop_assert_eq!(idx.to_vec::<i64>().unwrap(), want);
    }

    /// torch.max / torch.min with a dim: the values and indices of the first
    /// extreme element of each run (rounded values make ties common), and the
    /// gradient to exactly that element.
    #[test]
    fn extremes_with_indices_pick_the_first_and_route_the_gradient_to_it(
        x in strategies::tensor(strategies::shape(1..=4, 1..=4)), axis_seed in 0usize..4, negative in any::<bool>(),
        keepdim in any::<bool>(), rounded in any::<bool>(),
    ) {
        // Rounded: ties to route; otherwise no near-ties, which a finite difference step would cross.
        let x = if rounded { x.affine(2.0, 0.0).unwrap().sign_round() } else { spread_apart(&x) };
        let rank = x.rank();
        let axis = axis_seed % rank;
        let a = if negative { axis as isize - rank as isize } else { axis as isize };
        let (keep, runs) = groups(&x, &[axis]);
        let first = |g: &[f64], better: fn(f64, f64) -> bool| g.iter().enumerate().fold(0, |best, (i, &v)| if better(v, g[best]) { i } else { best });
        let cases: [ExtremeCase; 2] = [
            ("max", |x, a, k| x.max_with_indices(a, k), |v, best| v > best),
            ("min", |x, a, k| x.min_with_indices(a, k), |v, best| v < best),
        ];
        for (name, op, better) in cases {
            let (values, indices) = op(&x, a, keepdim).unwrap();
            let dims = squeeze_dims(&keep, &[axis], keepdim);
            prop_assert_eq!(values.dims(), &dims[..]);
            prop_assert_eq!(indices.dims(), &dims[..]);
            prop_assert_eq!(indices.dtype(), DType::I64);
            prop_assert!(!indices.requires_grad());
            let want: Vec<usize> = runs.iter().map(|g| first(g, better)).collect();
            let got: Vec<i64> = indices.to_vec::<i64>().unwrap();
            prop_assert_eq!(got.iter().map(|&i| i as usize).collect::<Vec<_>>(), want.clone(), "{} indices", name);
            let want_values: Vec<f64> = runs.iter().zip(&want).map(|(g, &i)| g[i]).collect();
            prop_assert_eq!(values.to_f64_vec().unwrap(), want_values, "{} values", name);
            let argfn = if name == "max" { x.argmax(a, keepdim) } else { x.argmin(a, keepdim) };
            prop_assert_eq!(argfn.unwrap().to_vec::<i64>().unwrap(), got.clone());

            // d(values · w)/dx is w at the picked element of each run, 0 elsewhere.
            let xv = x.variable();
            let w = tensor_with(values.dims(), ViewKind::Contiguous, 5);
            let grads = op(&xv, a, keepdim).unwrap().0.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
            let (_, grad_groups) = groups(grads.get(&xv).unwrap(), &[axis]);
            for ((g, &pick), wk) in grad_groups.iter().zip(&want).zip(w.to_f64_vec().unwrap()) {
                let expected: Vec<f64> = (0..g.len()).map(|i| if i == pick { wk } else { 0.0 }).collect();
                prop_assert_eq!(g, &expected, "{} gradient", name);
            }
            if !rounded {
                let report = check_gradients(|xs| Ok(op(&xs[0], a, keepdim)?.0), std::slice::from_ref(&x), &GradCheckConfig::default()).unwrap();
                prop_assert!(report.passed(), "{} along {}: {}", name, a, report);
            }
        }
    }

    #[test]
    fn sum_to_shape_values_and_gradient((full_src, target) in strategies::broadcast_pair(4, 4), kind in strategies::view_kind(), seed in any::<u64>()) {
        // x has the broadcast shape of the pair; sum it back onto `target`.
        let full = tamer::Shape::new(full_src).broadcast_with("test", &tamer::Shape::new(target.clone())).unwrap();
        let x = tensor_with(full.dims(), kind, seed);
        let y = x.sum_to_shape(&tamer::Shape::new(target.clone())).unwrap();
        prop_assert_eq!(y.dims(), &target[..]);
        // Naive: add each element into the target position it broadcasts from.
        let lead = full.rank() - target.len();
        let mut want = vec![0.0; target.iter().product()];
        for (k, v) in x.to_f64_vec().unwrap().into_iter().enumerate() {
            let (mut rest, mut flat, mut scale) = (k, 0, 1);
            for ax in (0..full.rank()).rev() {
                let i = rest % full.dims()[ax];
                rest /= full.dims()[ax];
                if ax >= lead {
                    let t = target[ax - lead];
                    flat += if t == 1 { 0 } else { i * scale };
                    scale *= t;
                }
            }
            want[flat] += v;
        }
        for (g, w) in y.to_f64_vec().unwrap().iter().zip(&want) {
            prop_assert!((g - w).abs() < 1e-12, "{} vs {}", g, w);
        }
        let shape = tamer::Shape::new(target);
        let report = check_gradients(|xs| xs[0].sum_to_shape(&shape), &[x], &GradCheckConfig::default()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }
}

/// Test helper: round to integers (creating ties) while keeping the dtype.
trait SignRound {
    fn sign_round(&self) -> Tensor;
}
impl SignRound for Tensor {
    fn sign_round(&self) -> Tensor {
        let v: Vec<f64> = self.to_f64_vec().unwrap().into_iter().map(f64::round).collect();
        Tensor::from_vec(v, self.dims().to_vec()).unwrap().to_dtype(self.dtype()).unwrap()
    }
}

#[test]
fn max_and_min_split_the_gradient_among_ties() {
    let x = Tensor::from_vec(vec![1.0f64, 3.0, 3.0, -2.0, -2.0, 0.0], [2, 3]).unwrap().variable();
    let g = x.max(&[-1], false).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![0.0, 0.5, 0.5, 0.0, 0.0, 1.0]);
    let g = x.min(&[], false).unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![0.0, 0.0, 0.0, 0.5, 0.5, 0.0]);
    let g = x.max_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![0.0, 0.5, 0.5, 0.0, 0.0, 0.0]);
}

#[test]
fn known_values() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
    assert_eq!(x.sum(&[0], false).unwrap().to_vec::<f32>().unwrap(), vec![5.0, 7.0, 9.0]);
    assert_eq!(x.sum(&[-1], true).unwrap().to_vec2::<f32>().unwrap(), vec![vec![6.0], vec![15.0]]);
    assert_eq!(x.mean_all().unwrap().to_scalar().unwrap(), 3.5);
    assert_eq!(x.var(&[1], false, 1).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
    assert_eq!(x.var(&[0], false, 0).unwrap().to_vec::<f32>().unwrap(), vec![2.25; 3]);
    assert_eq!(x.max(&[0, 1], true).unwrap().dims(), &[1, 1]);
    assert_eq!(x.argmax(0, false).unwrap().to_vec::<i64>().unwrap(), vec![1, 1, 1]);
    assert_eq!(
        x.t().unwrap().argmax(-1, true).unwrap().to_vec2::<i64>().unwrap(),
        vec![vec![1], vec![1], vec![1]]
    );
    // A scalar reduces to itself; an empty axis sums to zero.
    let s = Tensor::scalar(4.0f64);
    assert_eq!(s.sum_all().unwrap().to_scalar().unwrap(), 4.0);
    assert_eq!(s.max_all().unwrap().to_scalar().unwrap(), 4.0);
    let e = Tensor::zeros([2, 0], DType::F64).unwrap();
    assert_eq!(e.sum(&[1], false).unwrap().to_vec::<f64>().unwrap(), vec![0.0, 0.0]);
    assert!(e.max(&[1], false).is_err());
    // NaN propagates through max, and argmax points at it.
    let n = Tensor::from_vec(vec![1.0f64, f64::NAN, 3.0], [3]).unwrap();
    assert!(n.max_all().unwrap().to_scalar().unwrap().is_nan());
    assert_eq!(n.argmax(0, false).unwrap().to_vec::<i64>().unwrap(), vec![1]);
}

#[test]
fn extremes_with_indices_follow_pytorch_at_ties_and_nans() {
    // torch.max(x, 1) / torch.min(x, 1) (PyTorch 2.15, CPU): the first
    // extreme element wins a tie and alone receives the gradient.
    let x = Tensor::from_vec(vec![1.0f64, 3.0, 3.0, 2.0, 2.0, 1.0], [2, 3]).unwrap().variable();
    let (values, indices) = x.max_with_indices(1, false).unwrap();
    assert_eq!(
        (values.to_vec::<f64>().unwrap(), indices.to_vec::<i64>().unwrap()),
        (vec![3.0, 2.0], vec![1, 0])
    );
    let grad = values.sum_all().unwrap().backward().unwrap().get(&x).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(grad, [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
    let (values, indices) = x.min_with_indices(1, false).unwrap();
    assert_eq!(
        (values.to_vec::<f64>().unwrap(), indices.to_vec::<i64>().unwrap()),
        (vec![1.0, 1.0], vec![0, 2])
    );
    let grad = values.sum_all().unwrap().backward().unwrap().get(&x).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(grad, [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    // keepdim, along axis 0 (negative), and the amax-style split of max() for contrast.
    let y = Tensor::from_vec(vec![1.0f64, 1.0, 1.0, 2.0], [2, 2]).unwrap().variable();
    let (values, indices) = y.max_with_indices(-2, true).unwrap();
    assert_eq!(values.to_vec2::<f64>().unwrap(), vec![vec![1.0, 2.0]]);
    assert_eq!(indices.to_vec2::<i64>().unwrap(), vec![vec![0, 1]]);
    let picked = values.sum_all().unwrap().backward().unwrap().get(&y).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(picked, [1.0, 0.0, 0.0, 1.0]);
    let split = y
        .max(&[-2], true)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap()
        .get(&y)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    assert_eq!(split, [0.5, 0.0, 0.5, 1.0]);
    // A NaN is the extreme of its row for both, at its first position.
    let n = Tensor::from_vec(vec![1.0f32, f32::NAN, 5.0, f32::NAN], [1, 4]).unwrap();
    for (values, indices) in [n.max_with_indices(1, false).unwrap(), n.min_with_indices(1, false).unwrap()] {
        assert!(values.to_vec::<f32>().unwrap()[0].is_nan());
        assert_eq!(indices.to_vec::<i64>().unwrap(), vec![1]);
    }
}

/// Large reductions run the threaded row and column paths; compare with an f64 reference.
#[test]
fn large_reductions_match_the_reference() {
    for dtype in [DType::F32, DType::F64] {
        for (dims, kind) in [
            (&[40usize, 1100][..], ViewKind::Contiguous),
            (&[1100, 40][..], ViewKind::Contiguous),
            (&[33, 40, 30][..], ViewKind::Permuted),
            (&[12, 40, 80][..], ViewKind::Sliced),
        ] {
            let x = tensor_with_dtype(dims, kind, 5, dtype);
            let rank = dims.len() as isize;
            let mut axis_sets: Vec<Vec<isize>> = (0..rank).map(|a| vec![a]).collect();
            axis_sets.extend([vec![0, 1], vec![-1, -2], vec![]]);
            for axes in axis_sets {
                let resolved = resolve(&axes, dims.len());
                let (_, groups) = groups(&x, &resolved);
                for (name, op, reference, _) in ops() {
                    let got = op(&x, &axes, false).unwrap().to_f64_vec().unwrap();
                    assert_eq!(got.len(), groups.len());
                    for (g, group) in got.iter().zip(&groups) {
                        let want = reference(group);
                        // f32 accumulates rounding error in proportion to the magnitudes summed.
                        let scale: f64 = group.iter().map(|v| v.abs()).sum::<f64>() / group.len() as f64;
                        let tol = if dtype == DType::F32 {
                            1e-5 * (1.0 + scale * group.len() as f64)
                        } else {
                            1e-9
                        };
                        assert!(
                            (g - want).abs() <= tol * (1.0 + want.abs()).max(1.0),
                            "{name} {dtype} {dims:?} {kind:?} {axes:?}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
