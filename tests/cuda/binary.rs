//! Binary parity: every binary op with broadcasting (each kernel path:
//! contiguous, broadcast block, strided), comparisons with ties, special
//! value pairs, where_cond, gradients through broadcasting, and bf16/f16
//! against an f32 CPU reference.
//!
//! The gradients reduce over broadcast axes and so also run the reduce kernels.

use crate::harness::{grad, gradcheck_on_gpu, randn, randn64};
use crate::parity_test;
use tamer::{DType, Device, Result, Tensor};

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
// and rounds once, which is what the CUDA kernels do.

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

parity_test!(bf16_binary_matches_an_f32_reference, 2e-2, 1e-2, |dev| { half_binary_suite(DType::BF16, dev) });

parity_test!(f16_binary_matches_an_f32_reference, 2e-3, 2e-3, |dev| { half_binary_suite(DType::F16, dev) });

// ---- gradient checks on the device --------------------------------------------
// f64 finite differences taken by re-running the CUDA kernels (`check_gradients`
// with inputs on the GPU), beside the CPU-vs-CUDA comparisons above.

#[test]
fn gradcheck_unary_and_binary_with_broadcasting() {
    gradcheck_on_gpu("gelu * exp + broadcast", &[randn64(&[3, 4], 1), randn64(&[4], 2)], |x| {
        x[0].gelu()?.mul(&x[1].exp()?)?.add(&x[1])?.tanh()
    });
}
