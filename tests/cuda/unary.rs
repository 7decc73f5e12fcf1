//! Unary parity: every unary function forward and backward (fused backward
//! kernel), contiguous and strided inputs and gradients, special values, a
//! user-defined function (an error on CUDA), and bf16/f16 against an f32 CPU
//! reference.
//!
//! Backward passes start from `backward_with_grad(dy)` with a random `dy` on
//! the device, so these tests need no other kernel family.

use crate::harness::{gpu, grad, randn, randn64};
use crate::parity_test;
use tamer::ops::unary::*;
use tamer::tensor::Float;
use tamer::{DType, Device, Result, Tensor};

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

parity_test!(bf16_unary_matches_an_f32_reference, 2e-2, 1e-2, |dev| { half_unary_suite(DType::BF16, dev) });

parity_test!(f16_unary_matches_an_f32_reference, 2e-3, 2e-3, |dev| { half_unary_suite(DType::F16, dev) });
