//! Elementwise parity: every unary function forward and backward (fused
//! backward kernel), binary ops with broadcasting (each kernel path:
//! contiguous, broadcast block, strided), comparisons, where_cond, gradients
//! through broadcasting, special values, and bf16/f16 against an f32 CPU
//! reference.
//!
//! Backward passes start from `backward_with_grad(dy)` with a random `dy` on
//! the device, so the unary tests need no other kernel family; the binary
//! gradients reduce over broadcast axes and so also run the reduce kernels.

use crate::harness::{gpu, randn, randn64};
use crate::parity_test;
use tamer::ops::unary::*;
use tamer::tensor::Float;
use tamer::{DType, Device, Error, GradStore, Result, Tensor};

fn grad(g: &GradStore, t: &Tensor) -> Result<Tensor> {
    g.get(t).cloned().ok_or_else(|| Error::autograd("test", "no gradient for a variable"))
}

/// `y = f(x)` and `dx` for the incoming gradient `dy` (`x` and `dy` may be
/// any views of one shape): pushes both.
fn fwd_bwd<U: UnaryFn>(f: U, x: &Tensor, dy: &Tensor, out: &mut Vec<Tensor>) -> Result<()> {
    let xv = x.variable();
    let y = xv.unary(f)?;
    let g = y.backward_with_grad(dy)?;
    out.push(y);
    out.push(grad(&g, &xv)?);
    Ok(())
}

/// Every UnaryFn of tamer::ops::unary, forward and backward. `x` is any
/// input, `pos` a positive one of the same shape (for log, sqrt, rsqrt and
/// non-integer powers).
fn every_unary_fn(x: &Tensor, pos: &Tensor, dy: &Tensor) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    let o = &mut out;
    fwd_bwd(Neg, x, dy, o)?;
    fwd_bwd(Abs, x, dy, o)?;
    fwd_bwd(Log, pos, dy, o)?;
    fwd_bwd(Sqrt, pos, dy, o)?;
    fwd_bwd(Rsqrt, pos, dy, o)?;
    fwd_bwd(Square, x, dy, o)?;
    fwd_bwd(Tanh, x, dy, o)?;
    fwd_bwd(Sigmoid, x, dy, o)?;
    fwd_bwd(Relu, x, dy, o)?;
    fwd_bwd(Silu, x, dy, o)?;
    fwd_bwd(Sin, x, dy, o)?;
    fwd_bwd(Cos, x, dy, o)?;
    fwd_bwd(Gelu, x, dy, o)?;
    fwd_bwd(GeluTanh, x, dy, o)?;
    fwd_bwd(Exp, x, dy, o)?;
    fwd_bwd(Powf(3.0), x, dy, o)?;
    fwd_bwd(Powf(2.5), pos, dy, o)?;
    fwd_bwd(Powf(-1.5), pos, dy, o)?;
    fwd_bwd(Affine(1.7, -0.3), x, dy, o)?;
    fwd_bwd(Affine(-1.0, 1.0), x, dy, o)?;
    fwd_bwd(Clamp(-0.5, 0.7), x, dy, o)?;
    Ok(out)
}

/// Inputs for [`every_unary_fn`] of shape `dims` in `dtype`, made on the CPU
/// from `seed`, moved to `dev`; `view` then turns each into the view under test.
fn unary_inputs(dims: &[usize], dtype: DType, seed: u64, dev: Device, view: impl Fn(Tensor) -> Result<Tensor>) -> Result<[Tensor; 3]> {
    let x = randn(dims, seed).to_dtype(dtype)?;
    let pos = x.abs()?.add_scalar(0.1)?;
    let dy = randn(dims, seed + 1000).to_dtype(dtype)?;
    Ok([view(x.to_device(dev)?)?, view(pos.to_device(dev)?)?, view(dy.to_device(dev)?)?])
}

// ---- unary: contiguous ------------------------------------------------------------

parity_test!(unary_f32_contiguous_odd_sizes, 1e-5, 1e-5, |dev| {
    let mut out = Vec::new();
    for (k, n) in [1usize, 31, 33, 1037].into_iter().enumerate() {
        let [x, pos, dy] = unary_inputs(&[n], DType::F32, 10 + k as u64, dev, Ok)?;
        out.extend(every_unary_fn(&x, &pos, &dy)?);
    }
    Ok(out)
});

parity_test!(unary_f64_contiguous, 1e-12, 1e-12, |dev| {
    let [x, pos, dy] = unary_inputs(&[7, 151], DType::F64, 20, dev, Ok)?;
    every_unary_fn(&x, &pos, &dy)
});

// ---- unary: strided inputs and gradients ------------------------------------------

// x permuted (strided forward and backward kernels), dy contiguous.
parity_test!(unary_f32_permuted_input, 1e-5, 1e-5, |dev| {
    let [x, pos, _] = unary_inputs(&[5, 7, 9], DType::F32, 30, dev, |t| t.permute(&[2, 0, 1]))?;
    let dy = randn(&[9, 5, 7], 31).to_device(dev)?;
    every_unary_fn(&x, &pos, &dy)
});

// x narrowed (an offset into the storage and a gap per row), dy transposed.
parity_test!(unary_f64_narrowed_input_transposed_grad, 1e-12, 1e-12, |dev| {
    let [x, pos, _] = unary_inputs(&[6, 40], DType::F64, 40, dev, |t| t.narrow(1, 3, 33))?;
    let dy = randn64(&[33, 6], 41).to_device(dev)?.t()?;
    every_unary_fn(&x, &pos, &dy)
});

// A narrowed slice that is still contiguous (offset only): the fast path with
// an offset pointer; and a broadcast input (stride 0) through the strided path.
parity_test!(unary_f32_offset_and_broadcast_inputs, 1e-5, 1e-5, |dev| {
    let [x, pos, dy] = unary_inputs(&[9, 33], DType::F32, 50, dev, |t| t.narrow(0, 4, 3))?;
    let mut out = every_unary_fn(&x, &pos, &dy)?;
    let [x, pos, _] = unary_inputs(&[1, 33], DType::F32, 51, dev, |t| t.broadcast_as([4, 33]))?;
    let dy = randn(&[4, 33], 52).to_device(dev)?;
    out.extend(every_unary_fn(&x, &pos, &dy)?);
    Ok(out)
});

// ---- unary: edge cases ----------------------------------------------------------

// Zeros, signed zeros, NaN, infinities and huge/tiny values, in f64 (where
// the CPU runs the scalar formulas): NaN propagation of relu/clamp, abs' at
// 0, the overflow-free sigmoid branch, gelu's tails, rsqrt/log/powf at 0.
parity_test!(unary_f64_special_values, 1e-12, 1e-12, |dev| {
    let v = vec![
        0.0,
        -0.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1.0,
        -1.0,
        0.5,
        -0.5,
        0.7,
        3.0,
        -3.0,
        1e-300,
        700.0,
        -700.0,
        40.0,
        -40.0,
    ];
    let n = v.len();
    let x = Tensor::from_vec(v, [n])?.to_device(dev)?;
    let dy = randn64(&[n], 60).to_device(dev)?;
    every_unary_fn(&x, &x, &dy)
});

// Past one grid (65 536 blocks of 256): the grid-stride loop must wrap.
parity_test!(unary_f32_beyond_one_grid, 1e-5, 1e-5, |dev| {
    let n = 256 * 65_536 + 333;
    let x = randn(&[n], 70).to_device(dev)?;
    let dy = randn(&[n], 71).to_device(dev)?;
    let mut out = Vec::new();
    fwd_bwd(Exp, &x, &dy, &mut out)?;
    fwd_bwd(GeluTanh, &x, &dy, &mut out)?;
    Ok(out)
});

parity_test!(unary_empty_tensors, 0.0, 0.0, |dev| {
    let x = Tensor::zeros([0, 5], DType::F32)?.to_device(dev)?;
    let mut out = Vec::new();
    fwd_bwd(Exp, &x, &x, &mut out)?;
    fwd_bwd(Clamp(0.0, 1.0), &x.t()?, &x.t()?, &mut out)?;
    Ok(out)
});

/// A function with no CUDA kernel.
#[derive(Clone, Copy)]
struct Cube;
impl UnaryFn for Cube {
    const NAME: &'static str = "user_cube";
    fn apply<T: Float>(&self, x: T) -> T {
        x * x * x
    }
    fn derivative<T: Float>(&self, x: T, _y: T) -> T {
        T::from_f64(3.0) * x * x
    }
}

#[test]
fn a_user_defined_unary_fn_is_an_error_on_cuda() {
    let Some(dev) = gpu() else { return };
    let x = randn(&[4], 80).to_device(dev).unwrap();
    let e = x.unary(Cube).unwrap_err();
    assert_eq!(e.kind, tamer::ErrorKind::Device, "{e}");
    assert!(e.message.contains("no CUDA kernel for unary function `user_cube`"), "{e}");
    // ... and still works on the CPU
    assert_eq!(randn(&[4], 80).unary(Cube).unwrap().dims(), &[4]);
}

// ---- binary ----------------------------------------------------------------------

/// Every binary op of `a` and `b` (shapes broadcastable). pow uses `|a| + 0.5`
/// as its base so that real results are compared, not NaNs.
fn every_binary_op(a: &Tensor, b: &Tensor) -> Result<Vec<Tensor>> {
    let base = a.abs()?.add_scalar(0.5)?;
    Ok(vec![
        a.add(b)?,
        a.sub(b)?,
        a.mul(b)?,
        a.div(b)?,
        base.pow(b)?,
        a.maximum(b)?,
        a.minimum(b)?,
        a.eq(b)?,
        a.ne(b)?,
        a.lt(b)?,
        a.le(b)?,
        a.gt(b)?,
        a.ge(b)?,
    ])
}

/// Seeded inputs of two shapes on `dev`.
fn pair(da: &[usize], db: &[usize], dtype: DType, seed: u64, dev: Device) -> Result<(Tensor, Tensor)> {
    let a = randn(da, seed).to_dtype(dtype)?.to_device(dev)?;
    let b = randn(db, seed + 1).to_dtype(dtype)?.to_device(dev)?;
    Ok((a, b))
}

// Same shapes, both contiguous: the `<op>_<dt>` fast path.
parity_test!(binary_f32_contiguous, 1e-6, 1e-5, |dev| {
    let mut out = Vec::new();
    for (k, n) in [1usize, 33, 1037].into_iter().enumerate() {
        let (a, b) = pair(&[n], &[n], DType::F32, 100 + k as u64, dev)?;
        out.extend(every_binary_op(&a, &b)?);
    }
    Ok(out)
});

parity_test!(binary_f64_contiguous, 1e-12, 1e-12, |dev| {
    let (a, b) = pair(&[31, 33], &[31, 33], DType::F64, 110, dev)?;
    every_binary_op(&a, &b)
});

// One operand contiguous, the other one broadcast block: `<op>_bcast_<dt>`,
// with the block on the right and on the left.
parity_test!(binary_f32_broadcast_blocks, 1e-6, 1e-5, |dev| {
    let cases: [(&[usize], &[usize]); 8] = [
        (&[300, 257], &[257]),       // bias add: div 1, mod C
        (&[257], &[300, 257]),       // the same with the block on the left
        (&[31, 33], &[31, 1]),       // per-row: div C, mod R
        (&[2, 4, 3, 5], &[4, 1, 1]), // per-channel: div H·W, mod C
        (&[7, 9], &[1]),             // scalar-like: mod 1
        (&[1], &[7, 9]),             // scalar-like on the left
        (&[2, 3, 6, 7], &[6, 7]),    // leading broadcast axes only
        (&[3, 7, 2], &[1, 7, 1]),    // broadcast both before and after
    ];
    let mut out = Vec::new();
    for (k, (da, db)) in cases.into_iter().enumerate() {
        let (a, b) = pair(da, db, DType::F32, 120 + 2 * k as u64, dev)?;
        out.extend(every_binary_op(&a, &b)?);
    }
    Ok(out)
});

// Neither operand contiguous: `<op>_strided_<dt>` (after coalescing).
parity_test!(binary_f64_strided, 1e-12, 1e-12, |dev| {
    let mut out = Vec::new();
    let (a, b) = pair(&[3, 1, 5], &[4, 5], DType::F64, 140, dev)?;
    out.extend(every_binary_op(&a, &b)?);
    let (a, b) = pair(&[33, 31], &[31, 33], DType::F64, 142, dev)?;
    out.extend(every_binary_op(&a.t()?, &b)?); // a transposed operand
    let (a, b) = pair(&[4, 40], &[33], DType::F64, 144, dev)?;
    out.extend(every_binary_op(&a.narrow(1, 5, 33)?, &b)?); // narrowed rows + broadcast row
    let (a, b) = pair(&[5, 6, 7], &[7, 5], DType::F64, 146, dev)?;
    out.extend(every_binary_op(&a.permute(&[1, 2, 0])?, &b)?); // permuted + broadcast block (not contiguous: strided)
    Ok(out)
});

// Ties and exact equalities for the comparisons and maximum/minimum: small
// integers, so many pairs are equal.
parity_test!(binary_comparisons_with_ties, 0.0, 0.0, |dev| {
    let ints = |n: usize, m: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 + m) % 5) as f32 - 2.0).collect() };
    let a = Tensor::from_vec(ints(60, 1), [6, 10])?.to_device(dev)?;
    let b = Tensor::from_vec(ints(10, 3), [10])?.to_device(dev)?;
    let mut out = vec![a.eq(&b)?, a.ne(&b)?, a.lt(&b)?, a.le(&b)?, a.gt(&b)?, a.ge(&b)?, a.maximum(&b)?, a.minimum(&b)?];
    let at = a.t()?.contiguous()?.t()?; // same values, column-major storage
    out.extend([at.eq(&a)?, at.lt(&b)?, b.ge(&at)?]);
    Ok(out)
});

// Every pair of special values (a [k, 1] against a [1, k]): NaN propagation
// of maximum/minimum, comparisons with NaN (all false but ne), inf - inf,
// 0/0, pow at 0 and inf.
parity_test!(binary_f64_special_value_pairs, 0.0, 1e-14, |dev| {
    let v = vec![0.0, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.0, -1.0, 0.5, 2.0, -3.0];
    let k = v.len();
    let t = Tensor::from_vec(v, [k])?.to_device(dev)?;
    let (a, b) = (t.reshape([k, 1])?, t.reshape([1, k])?);
    let mut out = every_binary_op(&a, &b)?;
    out.push(a.pow(&b)?); // negative and NaN bases too
    let ones = Tensor::ones([k, k], DType::F64)?.to_device(dev)?;
    out.push(ones.maximum(&b)?); // contiguous lhs, block rhs containing NaN
    out.push(a.where_cond(&ones, &b)?); // NaN and -0.0 as conditions
    Ok(out)
});

// Past one grid, both the contiguous and the broadcast-block kernels.
parity_test!(binary_f32_beyond_one_grid, 1e-6, 1e-5, |dev| {
    let (a, b) = pair(&[65_536 + 7, 257], &[257], DType::F32, 150, dev)?;
    Ok(vec![a.add(&b)?, a.mul(&a)?])
});

parity_test!(binary_empty_tensors, 0.0, 0.0, |dev| {
    let a = Tensor::zeros([0, 5], DType::F32)?.to_device(dev)?;
    let b = Tensor::zeros([5], DType::F32)?.to_device(dev)?;
    Ok(vec![a.add(&b)?, a.t()?.mul(&a.t()?)?, a.gt(&b)?.where_cond(&a, &b)?])
});

// ---- where_cond ---------------------------------------------------------------

parity_test!(where_cond_contiguous_and_broadcast, 0.0, 0.0, |dev| {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F64] {
        let (x, y) = pair(&[37, 29], &[37, 29], dtype, 160, dev)?;
        let c = x.gt(&y)?;
        out.push(c.where_cond(&x, &y)?); // all contiguous
        let zero = Tensor::zeros([1], dtype)?.to_device(dev)?;
        out.push(x.gt(&zero)?.where_cond(&x, &zero)?); // relu by where: broadcast value
        out.push(c.t()?.where_cond(&y.t()?, &x.t()?)?); // all transposed
        let row = randn(&[29], 161).to_dtype(dtype)?.to_device(dev)?;
        out.push(c.where_cond(&row, &x)?); // broadcast row
        out.push(x.masked_fill(&c, -1e9)?);
    }
    Ok(out)
});

// ---- gradients through broadcasting ---------------------------------------------

/// `op(a, b)` with a random incoming gradient; returns the output and both
/// input gradients (summed over broadcast axes on the device).
fn binary_grads(op: fn(&Tensor, &Tensor) -> Result<Tensor>, a: &Tensor, b: &Tensor, seed: u64, dev: Device) -> Result<Vec<Tensor>> {
    let (av, bv) = (a.variable(), b.variable());
    let y = op(&av, &bv)?;
    let dy = randn(y.dims(), seed).to_dtype(a.dtype())?.to_device(dev)?;
    let g = y.backward_with_grad(&dy)?;
    Ok(vec![y, grad(&g, &av)?, grad(&g, &bv)?])
}

fn every_differentiable_op(a: &Tensor, b: &Tensor, seed: u64, dev: Device) -> Result<Vec<Tensor>> {
    let base = a.abs()?.add_scalar(0.5)?.detach();
    let mut out = Vec::new();
    out.extend(binary_grads(Tensor::add, a, b, seed, dev)?);
    out.extend(binary_grads(Tensor::sub, a, b, seed + 1, dev)?);
    out.extend(binary_grads(Tensor::mul, a, b, seed + 2, dev)?);
    out.extend(binary_grads(Tensor::div, a, b, seed + 3, dev)?);
    out.extend(binary_grads(Tensor::pow, &base, b, seed + 4, dev)?);
    out.extend(binary_grads(Tensor::maximum, a, b, seed + 5, dev)?);
    out.extend(binary_grads(Tensor::minimum, a, b, seed + 6, dev)?);
    Ok(out)
}

parity_test!(binary_f32_backward_through_broadcasting, 1e-5, 1e-4, |dev| {
    let mut out = Vec::new();
    let (a, b) = pair(&[3, 1, 5], &[4, 5], DType::F32, 170, dev)?;
    out.extend(every_differentiable_op(&a, &b, 171, dev)?);
    let (a, b) = pair(&[300, 257], &[257], DType::F32, 180, dev)?;
    out.extend(every_differentiable_op(&a, &b, 181, dev)?);
    let (a, b) = pair(&[1], &[7, 9], DType::F32, 190, dev)?;
    out.extend(every_differentiable_op(&a, &b, 191, dev)?);
    Ok(out)
});

parity_test!(binary_f64_backward_through_broadcasting, 1e-12, 1e-11, |dev| {
    let mut out = Vec::new();
    let (a, b) = pair(&[31, 1], &[1, 33], DType::F64, 200, dev)?;
    out.extend(every_differentiable_op(&a, &b, 201, dev)?);
    let (a, b) = pair(&[33, 31], &[31, 33], DType::F64, 210, dev)?;
    out.extend(every_differentiable_op(&a.t()?, &b, 211, dev)?);
    // ties: maximum/minimum split the gradient evenly
    let t = Tensor::from_vec((0..12).map(|i| (i % 3) as f64).collect::<Vec<_>>(), [4, 3])?.to_device(dev)?;
    let u = Tensor::from_vec(vec![1.0f64, 1.0, 0.0], [3])?.to_device(dev)?;
    out.extend(binary_grads(Tensor::maximum, &t, &u, 220, dev)?);
    out.extend(binary_grads(Tensor::minimum, &t, &u, 221, dev)?);
    Ok(out)
});

parity_test!(where_cond_backward, 1e-6, 1e-5, |dev| {
    let (x, y) = pair(&[6, 7], &[7], DType::F32, 230, dev)?;
    let c = x.gt(&y)?;
    let (xv, yv) = (x.variable(), y.variable());
    let out = c.where_cond(&xv, &yv)?;
    let dy = randn(&[6, 7], 231).to_device(dev)?;
    let g = out.backward_with_grad(&dy)?;
    Ok(vec![out, grad(&g, &xv)?, grad(&g, &yv)?])
});

// ---- 16-bit floats ------------------------------------------------------------
// The CPU has no bf16/f16 arithmetic; its reference converts to f32, computes,
// and rounds once, which is what the CUDA kernels do. The backward reference
// uses `y` as the GPU stores it (rounded to 16 bits) in `f'(x, y)`. An f32
// result that lands within an ulp of a 16-bit rounding boundary may round the
// other way on one device, hence one 16-bit ulp of tolerance.

fn half_unary<U: UnaryFn>(f: U, x16: &Tensor, dy16: &Tensor, dev: Device, out: &mut Vec<Tensor>) -> Result<()> {
    let dt = x16.dtype();
    if dev != Device::Cpu {
        return fwd_bwd(f, x16, dy16, out);
    }
    let x = x16.to_dtype(DType::F32)?;
    let y16 = x.unary(f)?.to_dtype(dt)?;
    let (xs, ys, gs) = (
        x.to_vec::<f32>()?,
        y16.to_dtype(DType::F32)?.to_vec::<f32>()?,
        dy16.to_dtype(DType::F32)?.to_vec::<f32>()?,
    );
    let dx: Vec<f32> = xs.iter().zip(&ys).zip(&gs).map(|((&x, &y), &g)| g * f.derivative(x, y)).collect();
    out.push(y16);
    out.push(Tensor::from_vec(dx, x16.dims().to_vec())?.to_dtype(dt)?);
    Ok(())
}

fn half_unary_suite(dt: DType, dev: Device) -> Result<Vec<Tensor>> {
    let x32 = randn(&[37, 41], 300);
    let x = x32.to_dtype(dt)?.to_device(dev)?;
    let pos = x32.abs()?.add_scalar(0.1)?.to_dtype(dt)?.to_device(dev)?;
    let dy = randn(&[37, 41], 301).scale(0.5)?.to_dtype(dt)?.to_device(dev)?;
    let mut out = Vec::new();
    let o = &mut out;
    for x in [x.clone(), x.t()?.contiguous()?.t()?] {
        // contiguous, then a transposed view of the same values (strided kernels)
        half_unary(Gelu, &x, &dy, dev, o)?;
        half_unary(GeluTanh, &x, &dy, dev, o)?;
        half_unary(Silu, &x, &dy, dev, o)?;
        half_unary(Relu, &x, &dy, dev, o)?;
        half_unary(Exp, &x, &dy, dev, o)?;
        half_unary(Tanh, &x, &dy, dev, o)?;
        half_unary(Sigmoid, &x, &dy, dev, o)?;
        half_unary(Affine(0.5, 0.25), &x, &dy, dev, o)?;
    }
    half_unary(Rsqrt, &pos, &dy, dev, o)?;
    half_unary(Log, &pos, &dy, dev, o)?;
    Ok(out)
}

fn half_binary_suite(dt: DType, dev: Device) -> Result<Vec<Tensor>> {
    let a = randn(&[37, 41], 310).to_dtype(dt)?;
    let b = randn(&[41], 311).to_dtype(dt)?;
    let c = randn(&[41, 37], 312).to_dtype(dt)?;
    let run = |a: &Tensor, b: &Tensor, c: &Tensor| -> Result<Vec<Tensor>> {
        let ct = c.t()?;
        let mut v = vec![a.add(b)?, a.mul(b)?, a.sub(&ct)?, a.div(&ct)?, a.maximum(b)?, a.gt(&ct)?];
        v.push(a.gt(b)?.where_cond(a, &ct)?);
        Ok(v)
    };
    if dev != Device::Cpu {
        return run(&a.to_device(dev)?, &b.to_device(dev)?, &c.to_device(dev)?);
    }
    let f32 = |t: &Tensor| t.to_dtype(DType::F32);
    run(&f32(&a)?, &f32(&b)?, &f32(&c)?)?.iter().map(|t| t.to_dtype(dt)).collect()
}

parity_test!(bf16_elementwise_matches_an_f32_reference, 2e-2, 1e-2, |dev| {
    let mut out = half_unary_suite(DType::BF16, dev)?;
    out.extend(half_binary_suite(DType::BF16, dev)?);
    Ok(out)
});

parity_test!(f16_elementwise_matches_an_f32_reference, 2e-3, 2e-3, |dev| {
    let mut out = half_unary_suite(DType::F16, dev)?;
    out.extend(half_binary_suite(DType::F16, dev)?);
    Ok(out)
});
