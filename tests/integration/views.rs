//! Views: values and gradients of reshape, permute, transpose, narrow, broadcast, squeeze,
//! unsqueeze, flatten and contiguous over random shapes and layouts; gradient accumulation
//! through several uses and views of one variable; detach, no_grad and repeated backward.

use proptest::prelude::*;
use tamer::testing::strategies::{self, tensor_with};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{no_grad, DType, Result, Shape, Tensor};

fn shapes() -> impl Strategy<Value = Vec<usize>> {
    strategies::shape(1..=4, 1..=4)
}

fn grad_ok(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor) -> std::result::Result<(), TestCaseError> {
    let report = check_gradients(|xs| f(&xs[0]), std::slice::from_ref(x), &GradCheckConfig::default()).unwrap();
    prop_assert!(report.passed(), "{:?} strides {:?}: {}", x.dims(), x.layout().strides(), report);
    Ok(())
}

fn unravel(mut k: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for ax in (0..dims.len()).rev() {
        idx[ax] = k % dims[ax];
        k /= dims[ax];
    }
    idx
}

fn ravel(idx: &[usize], dims: &[usize]) -> usize {
    idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// A tensor and a random permutation of its axes.
/// A tensor, a random permutation of its axes, and the same permutation as
/// passed to `permute`: each axis at random counted from the front or (negative) the end.
fn permuted() -> impl Strategy<Value = (Tensor, Vec<usize>, Vec<isize>)> {
    strategies::tensor(shapes())
        .prop_flat_map(|x| {
            let perm: Vec<usize> = (0..x.rank()).collect();
            let negative = proptest::collection::vec(any::<bool>(), x.rank());
            (Just(x), Just(perm).prop_shuffle(), negative)
        })
        .prop_map(|(x, perm, negative)| {
            let rank = x.rank() as isize;
            let signed = perm
                .iter()
                .zip(&negative)
                .map(|(&p, &n)| if n { p as isize - rank } else { p as isize })
                .collect();
            (x, perm, signed)
        })
}

proptest! {
    #![proptest_config(proptest_config(32))]

    #[test]
    fn reshape_keeps_row_major_order(x in strategies::tensor(shapes()), which in 0usize..5) {
        let n = x.numel();
        let target: Vec<usize> = match which {
            0 => vec![n],
            1 => vec![1, n, 1],
            2 => x.dims().iter().rev().copied().collect(),
            3 => { let mut d = x.dims().to_vec(); d.insert(d.len() / 2, 1); d }
            _ => { let mut d = x.dims().to_vec(); let last = d.pop().unwrap(); d.push(1); d.push(last); d }
        };
        let y = x.reshape(target.clone()).unwrap();
        prop_assert_eq!(y.dims(), &target[..]);
        prop_assert_eq!(y.to_f64_vec().unwrap(), x.to_f64_vec().unwrap());
        if x.is_contiguous() {
            prop_assert!(y.same_storage(&x), "a contiguous reshape must be a view");
        }
        grad_ok(move |x| x.reshape(target.clone()), &x)?;
        let inferred = x.reshape_infer(&[-1]).unwrap();
        prop_assert_eq!(inferred.dims(), &[n][..]);
    }

    #[test]
    fn permute_moves_elements((x, perm, signed) in permuted()) {
        let y = x.permute(&signed).unwrap();
        prop_assert!(y.same_storage(&x));
        let (xv, yv) = (x.to_f64_vec().unwrap(), y.to_f64_vec().unwrap());
        for (k, &v) in yv.iter().enumerate() {
            let out = unravel(k, y.dims());
            let mut src = vec![0; x.rank()];
            for (i, &p) in perm.iter().enumerate() {
                src[p] = out[i];
            }
            prop_assert_eq!(v, xv[ravel(&src, x.dims())]);
        }
        grad_ok(move |x| x.permute(&signed), &x)?;
    }

    #[test]
    fn transpose_and_t(x in strategies::tensor(strategies::shape(2..=4, 1..=4)), a in -4isize..4, b in -4isize..4) {
        let r = x.rank() as isize;
        let (a, b) = (a.rem_euclid(2 * r) - r, b.rem_euclid(r)); // a may be negative
        let y = x.transpose(a, b).unwrap();
        let (ua, ub) = ((a + r) as usize % x.rank(), b as usize);
        let mut perm: Vec<isize> = (0..r).collect();
        perm.swap(ua, ub);
        prop_assert_eq!(y.to_f64_vec().unwrap(), x.permute(&perm).unwrap().to_f64_vec().unwrap());
        grad_ok(move |x| x.transpose(a, b), &x)?;
        grad_ok(|x| x.t()?.exp(), &x)?;
    }

    #[test]
    fn narrow_and_slice(x in strategies::tensor(shapes()), axis_seed in 0usize..4, start_seed in 0usize..4, len_seed in 0usize..5, negative in any::<bool>()) {
        let axis = axis_seed % x.rank();
        let size = x.dims()[axis];
        let start = start_seed % size;
        let len = len_seed % (size - start + 1);
        let a = if negative { axis as isize - x.rank() as isize } else { axis as isize };
        let y = x.narrow(a, start, len).unwrap();
        prop_assert!(y.same_storage(&x));
        let xv = x.to_f64_vec().unwrap();
        for (k, v) in y.to_f64_vec().unwrap().into_iter().enumerate() {
            let mut idx = unravel(k, y.dims());
            idx[axis] += start;
            prop_assert_eq!(v, xv[ravel(&idx, x.dims())]);
        }
        prop_assert_eq!(x.slice(a, start..start + len).unwrap().to_f64_vec().unwrap(), y.to_f64_vec().unwrap());
        if len > 0 {
            grad_ok(move |x| x.narrow(a, start, len)?.sin(), &x)?;
        }
    }

    #[test]
    fn broadcast_as_and_expand((small, other) in strategies::broadcast_pair(3, 4), kind in strategies::view_kind(), seed in any::<u64>()) {
        let target = Shape::new(small.clone()).broadcast_with("test", &Shape::new(other)).unwrap();
        let x = tensor_with(&small, kind, seed);
        let y = x.broadcast_as(target.clone()).unwrap();
        prop_assert!(y.same_storage(&x));
        prop_assert_eq!(y.dims(), target.dims());
        let (xv, lead) = (x.to_f64_vec().unwrap(), target.rank() - x.rank());
        for (k, v) in y.to_f64_vec().unwrap().into_iter().enumerate() {
            let idx = unravel(k, target.dims());
            let src: Vec<usize> = idx[lead..].iter().zip(x.dims()).map(|(&i, &d)| if d == 1 { 0 } else { i }).collect();
            prop_assert_eq!(v, xv[ravel(&src, x.dims())]);
        }
        let t2 = target.clone();
        grad_ok(move |x| x.broadcast_as(target.clone())?.square(), &x)?;
        grad_ok(move |x| x.expand(t2.clone())?.exp(), &x)?;
    }

    #[test]
    fn unsqueeze_then_squeeze(x in strategies::tensor(shapes()), axis_seed in 0usize..5, negative in any::<bool>()) {
        let r = x.rank();
        let pos = axis_seed % (r + 1);
        let a = if negative { pos as isize - (r as isize + 1) } else { pos as isize };
        let y = x.unsqueeze(a).unwrap();
        let mut want = x.dims().to_vec();
        want.insert(pos, 1);
        prop_assert_eq!(y.dims(), &want[..]);
        prop_assert!(y.same_storage(&x), "unsqueeze must not copy");
        let z = y.squeeze(a).unwrap();
        prop_assert_eq!(z.dims(), x.dims());
        prop_assert_eq!(z.to_f64_vec().unwrap(), x.to_f64_vec().unwrap());
        grad_ok(move |x| x.unsqueeze(a)?.tanh()?.squeeze(a), &x)?;
    }

    #[test]
    fn flatten_ranges(x in strategies::tensor(shapes()), s in 0usize..4, len in 0usize..4) {
        let r = x.rank();
        let start = s % r;
        let end = (start + len).min(r - 1);
        let y = x.flatten(start as isize, end as isize - r as isize).unwrap();
        let mut want = x.dims()[..start].to_vec();
        want.push(x.dims()[start..=end].iter().product());
        want.extend_from_slice(&x.dims()[end + 1..]);
        prop_assert_eq!(y.dims(), &want[..]);
        prop_assert_eq!(y.to_f64_vec().unwrap(), x.to_f64_vec().unwrap());
        grad_ok(move |x| x.flatten(start as isize, end as isize)?.square(), &x)?;
        grad_ok(|x| x.flatten_all(), &x)?;
    }

    #[test]
    fn contiguous_copies_only_when_needed(x in strategies::tensor(shapes())) {
        let y = x.contiguous().unwrap();
        prop_assert!(y.is_contiguous());
        prop_assert_eq!(y.same_storage(&x), x.is_contiguous());
        prop_assert_eq!(y.to_f64_vec().unwrap(), x.to_f64_vec().unwrap());
        grad_ok(|x| x.contiguous()?.exp(), &x)?;
    }

    /// x·xᵀ (elementwise, x square) plus two overlapping slices plus a broadcast row:
    /// every element of x gets gradient from several views.
    #[test]
    fn gradients_accumulate_over_views_and_uses(n in 2usize..5, kind in strategies::view_kind(), seed in any::<u64>()) {
        let x = tensor_with(&[n, n], kind, seed);
        let f = |x: &Tensor| -> Result<Tensor> {
            let xxt = x.mul(&x.t()?)?;
            let left = x.narrow(1, 0, n - 1)?;
            let right = x.narrow(1, 1, n - 1)?;
            let overlap = left.mul(&right)?.sum(&[1], true)?; // [n, 1]
            let row = x.narrow(0, 0, 1)?.broadcast_as([n, n])?; // [n, n]
            xxt.add(&overlap)?.add(&row.mul(x)?)?.add(&x.reshape([n * n])?.reshape([n, n])?)?.add(&x.permute(&[1, 0])?.exp()?)
        };
        grad_ok(f, &x)?;
    }
}

#[test]
fn reshape_of_a_transpose_copies_and_differentiates() {
    let x = Tensor::arange(0.0, 6.0, 1.0, DType::F64).unwrap().reshape([2, 3]).unwrap();
    let xt = x.t().unwrap(); // [3, 2], not contiguous
    let flat = xt.reshape([6]).unwrap();
    assert!(!flat.same_storage(&x), "flattening a transpose needs a copy");
    assert_eq!(flat.to_vec::<f64>().unwrap(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    // A split of one axis of the transpose needs no copy.
    let split = x.permute(&[1, 0]).unwrap().reshape([3, 2, 1]).unwrap();
    assert!(split.same_storage(&x));
    let v = x.variable();
    let w = Tensor::arange(1.0, 7.0, 1.0, DType::F64).unwrap();
    let g = v.t().unwrap().reshape([6]).unwrap().mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    // d/dv[i][j] = w[position of v[i][j] in the flattened transpose] = w[j*2 + i]
    assert_eq!(g.get(&v).unwrap().to_vec2::<f64>().unwrap(), vec![vec![1.0, 3.0, 5.0], vec![2.0, 4.0, 6.0]]);
}

#[test]
fn one_tensor_used_several_times_accumulates() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], [3]).unwrap().variable();
    // y = x·x + x + exp(x) - x  =>  dy/dx = 2x + exp(x)
    let y = x.mul(&x).unwrap().add(&x).unwrap().add(&x.exp().unwrap()).unwrap().sub(&x).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let got = g.get(&x).unwrap().to_vec::<f64>().unwrap();
    for (k, &xv) in [1.0f64, 2.0, 3.0].iter().enumerate() {
        assert!((got[k] - (2.0 * xv + xv.exp())).abs() < 1e-12);
    }
    // Only variables are kept in the store.
    assert_eq!(g.len(), 1);
}

#[test]
fn detach_and_no_grad_stop_gradients() {
    let x = Tensor::from_vec(vec![0.5f64, -1.0, 2.0], [3]).unwrap().variable();
    // x · detach(x): the detached factor is a constant, so d/dx = x (not 2x).
    let g = x.mul(&x.detach()).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![0.5, -1.0, 2.0]);
    assert!(!x.detach().requires_grad());
    assert!(x.detach().same_storage(&x));
    // Under no_grad nothing is recorded, even for views and reductions.
    let z = no_grad(|| x.exp().unwrap().t_or_self().sum(&[0], true).unwrap());
    assert!(!z.requires_grad());
    assert!(tamer::is_grad_enabled());
    let g = x.mul(&no_grad(|| x.exp()).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    let got = g.get(&x).unwrap().to_vec::<f64>().unwrap();
    for (k, &xv) in [0.5f64, -1.0, 2.0].iter().enumerate() {
        assert!((got[k] - xv.exp()).abs() < 1e-12);
    }
    // A loss built only from detached data cannot be differentiated.
    let err = x.detach().square().unwrap().sum_all().unwrap().backward().unwrap_err();
    assert!(err.to_string().contains("does not require grad"), "{err}");
    // Gradients flow again once no_grad ends, and a nested guard restores the outer state.
    no_grad(|| {
        no_grad(|| ());
        assert!(!tamer::is_grad_enabled());
    });
    assert!(tamer::is_grad_enabled());
    assert!(x.exp().unwrap().requires_grad());
}

/// Test helper: `t()` for rank >= 2, identity otherwise.
trait TOrSelf {
    fn t_or_self(&self) -> Tensor;
}
impl TOrSelf for Tensor {
    fn t_or_self(&self) -> Tensor {
        if self.rank() >= 2 {
            self.t().unwrap()
        } else {
            self.clone()
        }
    }
}

#[test]
fn backward_twice() {
    let x = Tensor::from_vec(vec![0.3f64, -0.7, 1.1, 2.0], [2, 2]).unwrap().variable();
    let build = || x.t().unwrap().tanh().unwrap().mul(&x).unwrap().sum_all().unwrap();
    let loss = build();
    let first = loss.backward().unwrap().get(&x).unwrap().to_vec::<f64>().unwrap();
    // The same graph again (it is not consumed) and a freshly built one agree.
    let again = loss.backward().unwrap().get(&x).unwrap().to_vec::<f64>().unwrap();
    let fresh = build().backward().unwrap().get(&x).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(first, again);
    assert_eq!(first, fresh);
}

#[test]
fn gradient_of_a_non_scalar_output() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], [2, 2]).unwrap().variable();
    let y = x.square().unwrap().t().unwrap();
    let seed = Tensor::from_vec(vec![1.0f64, 10.0, 100.0, 1000.0], [2, 2]).unwrap();
    let g = y.backward_with_grad(&seed).unwrap();
    // y[i][j] = x[j][i]², so dx[j][i] = 2·x[j][i]·seed[i][j].
    assert_eq!(g.get(&x).unwrap().to_vec2::<f64>().unwrap(), vec![vec![2.0, 400.0], vec![60.0, 8000.0]]);
}

#[test]
fn variable_of_a_view_is_a_new_leaf() {
    let base = Tensor::arange(0.0, 6.0, 1.0, DType::F64).unwrap().reshape([2, 3]).unwrap();
    let v = base.t().unwrap().variable();
    assert!(v.is_variable() && !v.is_contiguous());
    let g = v.square().unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&v).unwrap().dims(), &[3, 2]);
    assert_eq!(g.get(&v).unwrap().to_vec::<f64>().unwrap(), vec![0.0, 6.0, 2.0, 8.0, 4.0, 10.0]);
}

/// A tensor with an arbitrary strided layout over distinct values: a permuted,
/// narrowed (and sometimes broadcast) view of an arange.
fn strided_layout() -> impl Strategy<Value = Tensor> {
    (strategies::shape(1..=4, 1..=5), any::<u64>(), any::<bool>())
        .prop_flat_map(|(dims, seed, broadcast)| {
            let n: usize = dims.iter().product();
            let base = Tensor::arange(0.0, n as f64, 1.0, DType::F64).unwrap().reshape(dims.clone()).unwrap();
            let perm: Vec<isize> = (0..dims.len() as isize).collect();
            (
                Just(base),
                Just(perm).prop_shuffle(),
                proptest::collection::vec((any::<usize>(), any::<usize>()), dims.len()),
                Just(seed),
                Just(broadcast),
            )
        })
        .prop_map(|(base, perm, cuts, seed, broadcast)| {
            let mut x = base.permute(&perm).unwrap();
            for (axis, &(s, l)) in cuts.iter().enumerate() {
                let size = x.dims()[axis];
                let start = s % size;
                let len = 1 + l % (size - start);
                x = x.narrow(axis as isize, start, len).unwrap();
            }
            if broadcast {
                let mut target = x.dims().to_vec();
                target.insert(0, 1 + (seed % 3) as usize);
                x = x.broadcast_as(target).unwrap();
            }
            x
        })
}

/// A random shape with `n` elements: `n`'s prime factors shuffled into groups, with some 1s.
fn factorization(n: usize, seed: u64) -> Vec<usize> {
    let mut primes = Vec::new();
    let (mut m, mut p) = (n, 2);
    while m > 1 {
        while m % p == 0 {
            primes.push(p);
            m /= p;
        }
        p += 1;
    }
    let mut h = seed;
    let mut next = || {
        h = h.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (h >> 33) as usize
    };
    for i in (1..primes.len()).rev() {
        primes.swap(i, next() % (i + 1));
    }
    let mut dims = vec![1usize];
    for q in primes {
        if next() % 2 == 0 {
            dims.push(q);
        } else {
            *dims.last_mut().unwrap() *= q;
        }
    }
    if next() % 3 == 0 {
        let at = next() % (dims.len() + 1);
        dims.insert(at, 1);
    }
    if dims.len() > 1 && dims[0] == 1 && next() % 2 == 0 {
        dims.remove(0);
    }
    dims
}

proptest! {
    #![proptest_config(proptest_config(128))]

    /// reshape of any strided layout (view when the strides allow, copy otherwise)
    /// reads the elements in row-major order.
    #[test]
    fn reshape_of_any_layout(x in strided_layout(), seed in any::<u64>()) {
        let target = factorization(x.numel(), seed);
        let y = x.reshape(target.clone()).unwrap();
        prop_assert_eq!(y.dims(), &target[..]);
        prop_assert_eq!(y.to_f64_vec().unwrap(), x.to_f64_vec().unwrap(), "{:?} strides {:?} -> {:?}", x.dims(), x.layout().strides(), target);
        // And back again.
        prop_assert_eq!(y.reshape(x.dims().to_vec()).unwrap().to_f64_vec().unwrap(), x.to_f64_vec().unwrap());
    }
}

#[test]
fn empty_tensors_flow_through_forward_and_backward() {
    let x = Tensor::ones([0, 3], DType::F64).unwrap().variable();
    let y = x.exp().unwrap().mul(&Tensor::ones([3], DType::F64).unwrap()).unwrap();
    assert_eq!(y.dims(), &[0, 3]);
    assert_eq!(y.sum(&[0], false).unwrap().to_vec::<f64>().unwrap(), vec![0.0; 3]);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().dims(), &[0, 3]);
    // A zero-length slice of a variable gets a zero gradient.
    let v = Tensor::ones([2, 3], DType::F64).unwrap().variable();
    let loss = v.narrow(1, 1, 0).unwrap().sum_all().unwrap().add(&v.sum_all().unwrap()).unwrap();
    let g = loss.backward().unwrap();
    assert_eq!(g.get(&v).unwrap().to_vec::<f64>().unwrap(), vec![1.0; 6]);
    assert_eq!(
        Tensor::zeros([4, 0], DType::F32).unwrap().t().unwrap().reshape([0, 2, 2]).unwrap().dims(),
        &[0, 2, 2]
    );
}
