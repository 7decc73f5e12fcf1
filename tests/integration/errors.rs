//! Misuse returns `Err` (never a panic) with a message naming the op and the shapes or
//! dtypes involved.

use tamer::testing::{check_gradients, GradCheckConfig};
use tamer::{DType, Error, ErrorKind, Result, Tensor};

/// Unwrap the error and check its kind, its op and that the message contains every fragment.
#[track_caller]
fn expect_err<T>(result: Result<T>, kind: ErrorKind, op: &str, fragments: &[&str]) -> Error {
    let err = match result {
        Ok(_) => panic!("expected a {kind:?} error from {op}, got Ok"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert_eq!(err.kind, kind, "{text}");
    assert_eq!(err.op, op, "{text}");
    assert!(text.starts_with(&format!("{op}: ")), "the message should start with the op: {text}");
    for f in fragments {
        assert!(text.contains(f), "expected {f:?} in: {text}");
    }
    err
}

fn f32s(dims: &[usize]) -> Tensor {
    Tensor::ones(dims.to_vec(), DType::F32).unwrap()
}

#[test]
fn broadcast_mismatch() {
    let (a, b) = (f32s(&[2, 3]), f32s(&[4]));
    expect_err(a.add(&b), ErrorKind::Shape, "add", &["[2, 3]", "[4]", "broadcast"]);
    expect_err(a.mul(&f32s(&[3, 3])), ErrorKind::Shape, "mul", &["[2, 3]", "[3, 3]"]);
    expect_err(a.lt(&b), ErrorKind::Shape, "lt", &["[2, 3]", "[4]"]);
    expect_err(a.maximum(&b), ErrorKind::Shape, "maximum", &["[2, 3]", "[4]"]);
    expect_err(f32s(&[2]).where_cond(&a, &a), ErrorKind::Shape, "where_cond", &["[2]", "[2, 3]"]);
    expect_err(a.masked_fill(&f32s(&[4]), 0.0), ErrorKind::Shape, "where_cond", &["[4]", "[2, 3]"]);
    // As in PyTorch, the out-of-place masked_fill broadcasts self and the mask together.
    assert_eq!(a.masked_fill(&f32s(&[5, 2, 1]), 0.0).unwrap().dims(), &[5, 2, 3]);
    expect_err(a.broadcast_as([4, 3]), ErrorKind::Shape, "broadcast_as", &["[2, 3]", "[4, 3]"]);
    expect_err(a.expand([3]), ErrorKind::Shape, "broadcast_as", &["[2, 3]", "[3]", "lower-rank"]);
    expect_err(a.sum_to_shape(&tamer::Shape::new([4])), ErrorKind::Shape, "sum_to_shape", &["[2, 3]", "[4]"]);
    expect_err(
        a.sum_to_shape(&tamer::Shape::new([1, 2, 3])),
        ErrorKind::Shape,
        "sum_to_shape",
        &["[2, 3]", "[1, 2, 3]"],
    );
}

#[test]
fn reshape_numel_mismatch() {
    let x = f32s(&[2, 3]);
    expect_err(
        x.reshape([4, 2]),
        ErrorKind::Shape,
        "reshape",
        &["[2, 3]", "[4, 2]", "6 elements", "8 elements"],
    );
    expect_err(x.t().unwrap().reshape([5]), ErrorKind::Shape, "reshape", &["[3, 2]", "[5]"]);
    expect_err(x.reshape_infer(&[-1, -1]), ErrorKind::Shape, "reshape", &["[2, 3]", "[-1, -1]"]);
    expect_err(x.reshape_infer(&[4, -1]), ErrorKind::Shape, "reshape", &["[2, 3]", "[4, -1]"]);
    expect_err(x.reshape_infer(&[-2, 3]), ErrorKind::Shape, "reshape", &["[-2, 3]"]);
    expect_err(x.squeeze(0), ErrorKind::Shape, "squeeze", &["[2, 3]", "size 2", "expected 1"]);
    expect_err(f32s(&[3]).t(), ErrorKind::Shape, "t", &["[3]", "rank >= 2"]);
    expect_err(x.permute(&[0, 0]), ErrorKind::Shape, "permute", &["[0, 0]", "[2, 3]"]);
    expect_err(x.permute(&[1]), ErrorKind::Shape, "permute", &["[1]", "[2, 3]"]);
    // Negative axes count from the end, as for every other axis argument:
    // [1, -1] names axis 1 twice, [0, 2] an axis a rank-2 tensor lacks.
    expect_err(x.permute(&[1, -1]), ErrorKind::Shape, "permute", &["[1, -1]", "[2, 3]"]);
    expect_err(x.permute(&[0, 2]), ErrorKind::Axis, "permute", &["2", "[2, 3]"]);
    expect_err(x.permute(&[-3, 0]), ErrorKind::Axis, "permute", &["-3", "[2, 3]"]);
}

#[test]
fn out_of_range_axes() {
    let x = f32s(&[2, 3]);
    for axis in [2isize, -3, 100, isize::MIN] {
        let a = axis.to_string();
        expect_err(x.sum(&[axis], false), ErrorKind::Axis, "sum", &[&a, "[2, 3]", "rank 2"]);
        expect_err(x.mean(&[0, axis], true), ErrorKind::Axis, "mean", &[&a, "[2, 3]"]);
        expect_err(x.max(&[axis], false), ErrorKind::Axis, "max", &[&a, "[2, 3]"]);
        expect_err(x.min(&[axis], false), ErrorKind::Axis, "min", &[&a, "[2, 3]"]);
        expect_err(x.var(&[axis], false, 0), ErrorKind::Axis, "var", &[&a, "[2, 3]"]);
        expect_err(x.argmax(axis, false), ErrorKind::Axis, "argmax", &[&a, "[2, 3]"]);
        expect_err(x.argmin(axis, false), ErrorKind::Axis, "argmin", &[&a, "[2, 3]"]);
        expect_err(x.max_with_indices(axis, false), ErrorKind::Axis, "max_with_indices", &[&a, "[2, 3]"]);
        expect_err(x.min_with_indices(axis, true), ErrorKind::Axis, "min_with_indices", &[&a, "[2, 3]"]);
        expect_err(x.transpose(0, axis), ErrorKind::Axis, "transpose", &[&a, "[2, 3]"]);
        expect_err(x.narrow(axis, 0, 1), ErrorKind::Axis, "narrow", &[&a, "[2, 3]"]);
        expect_err(x.squeeze(axis), ErrorKind::Axis, "squeeze", &[&a, "[2, 3]"]);
        expect_err(x.flatten(0, axis), ErrorKind::Axis, "flatten", &[&a, "[2, 3]"]);
        expect_err(x.dim(axis), ErrorKind::Axis, "dim", &[&a, "[2, 3]"]);
    }
    // unsqueeze accepts -rank-1..=rank.
    expect_err(x.unsqueeze(3), ErrorKind::Axis, "unsqueeze", &["3", "[2, 3]"]);
    expect_err(x.unsqueeze(-4), ErrorKind::Axis, "unsqueeze", &["-4", "[2, 3]"]);
    expect_err(x.sum(&[0, -2], false), ErrorKind::Axis, "sum", &["[0, -2]", "repeat", "[2, 3]"]);
    expect_err(x.flatten(1, 0), ErrorKind::Axis, "flatten", &["[2, 3]"]);
    expect_err(Tensor::scalar(1.0f32).sum(&[0], false), ErrorKind::Axis, "sum", &["rank 0"]);
}

#[test]
fn narrow_out_of_range() {
    let x = f32s(&[3, 4]);
    expect_err(x.narrow(0, 2, 2), ErrorKind::Index, "narrow", &["2..4", "size 3", "[3, 4]"]);
    expect_err(x.narrow(-1, 5, 0), ErrorKind::Index, "narrow", &["5..5", "size 4", "[3, 4]"]);
    expect_err(x.narrow(1, usize::MAX, 2), ErrorKind::Index, "narrow", &["[3, 4]"]);
    expect_err(x.slice(1, 3..6), ErrorKind::Index, "narrow", &["3..6", "[3, 4]"]);
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = x.slice(1, 3..1);
    expect_err(reversed, ErrorKind::Index, "slice", &["3..1", "[3, 4]"]);
}

#[test]
fn dtype_mismatch() {
    let (a, b) = (f32s(&[2]), Tensor::ones([2], DType::F64).unwrap());
    for (op, r) in [
        ("add", a.add(&b)),
        ("sub", a.sub(&b)),
        ("mul", b.mul(&a)),
        ("div", a.div(&b)),
        ("pow", a.pow(&b)),
        ("eq", a.eq(&b)),
    ] {
        expect_err(r, ErrorKind::DType, op, &["f32", "f64", "[2]"]);
    }
    expect_err(a.where_cond(&b, &b), ErrorKind::DType, "where_cond", &["f32", "f64"]);
    expect_err(a.where_cond(&a, &b), ErrorKind::DType, "where_cond", &["f32", "f64"]);
    expect_err(a.assign(&b), ErrorKind::DType, "assign", &["f32", "f64"]);
    expect_err(a.to_vec::<f64>(), ErrorKind::DType, "to_vec", &["f32", "f64"]);
}

#[test]
fn half_precision_must_be_converted_for_compute() {
    let h = f32s(&[2, 2]).to_dtype(DType::F16).unwrap();
    let b = f32s(&[2]).to_dtype(DType::BF16).unwrap();
    for (op, r) in [
        ("exp", h.exp()),
        ("tanh", h.tanh()),
        ("clamp", h.clamp(0.0, 1.0)),
        ("add", h.add(&h)),
        ("sum", h.sum_all()),
    ] {
        expect_err(r, ErrorKind::DType, op, &["f16", "convert", "to_dtype"]);
    }
    expect_err(b.max_all(), ErrorKind::DType, "max", &["bf16", "convert"]);
    expect_err(b.argmax(0, false), ErrorKind::DType, "argmax", &["bf16", "convert"]);
    expect_err(b.argmin(0, false), ErrorKind::DType, "argmin", &["bf16", "convert"]);
    expect_err(b.max_with_indices(0, false), ErrorKind::DType, "max_with_indices", &["bf16", "convert"]);
    expect_err(h.min_with_indices(-1, false), ErrorKind::DType, "min_with_indices", &["f16", "convert"]);
    // Converting works, and gradients flow back through the cast.
    assert_eq!(h.to_dtype(DType::F32).unwrap().exp().unwrap().dtype(), DType::F32);
}

#[test]
fn integer_tensors_are_not_computed_on() {
    let i = f32s(&[3]).argmax(0, true).unwrap();
    assert_eq!(i.dtype(), DType::I64);
    let ints = Tensor::from_vec(vec![1i64, 2, 3], [3]).unwrap();
    for (op, r) in [
        ("exp", ints.exp()),
        ("relu", ints.relu()),
        ("mul", ints.mul(&ints)),
        ("sum", ints.sum_all()),
        ("mean", ints.mean_all()),
    ] {
        expect_err(r, ErrorKind::DType, op, &["i64", "indices"]);
    }
    expect_err(ints.max_with_indices(0, false), ErrorKind::DType, "max_with_indices", &["i64", "indices"]);
    expect_err(ints.argmin(0, false), ErrorKind::DType, "argmin", &["i64", "indices"]);
    expect_err(ints.add(&f32s(&[3])), ErrorKind::DType, "add", &["i64", "f32"]);
    // Casting an index tensor gives a constant: nothing to differentiate.
    expect_err(
        ints.to_dtype(DType::F32).unwrap().sum_all().unwrap().backward(),
        ErrorKind::Autograd,
        "backward",
        &["does not require grad"],
    );
}

#[test]
fn backward_misuse() {
    let x = f32s(&[2, 3]).variable();
    let y = x.exp().unwrap();
    expect_err(y.backward(), ErrorKind::Autograd, "backward", &["[2, 3]", "one element"]);
    let constant = f32s(&[2]).exp().unwrap().sum_all().unwrap();
    expect_err(constant.backward(), ErrorKind::Autograd, "backward", &["does not require grad"]);
    let under_no_grad = tamer::no_grad(|| x.sum_all()).unwrap();
    expect_err(under_no_grad.backward(), ErrorKind::Autograd, "backward", &["no_grad"]);
    expect_err(y.backward_with_grad(&f32s(&[3, 2])), ErrorKind::Shape, "backward", &["[3, 2]", "[2, 3]"]);
    let f64_grad = Tensor::ones([2, 3], DType::F64).unwrap();
    expect_err(y.backward_with_grad(&f64_grad), ErrorKind::DType, "backward", &["f64", "f32", "[2, 3]"]);
}

#[test]
fn creation_misuse() {
    expect_err(
        Tensor::from_vec(vec![1.0f32; 5], [2, 3]),
        ErrorKind::Shape,
        "from_vec",
        &["5 values", "[2, 3]", "6 elements"],
    );
    expect_err(Tensor::from_slice(&[1i64, 2], [3]), ErrorKind::Shape, "from_vec", &["2 values", "[3]"]);
    expect_err(Tensor::arange(0.0, 1.0, 0.0, DType::F32), ErrorKind::Value, "arange", &["step 0", "non-zero"]);
    expect_err(Tensor::arange(0.0, f64::INFINITY, 1.0, DType::F32), ErrorKind::Value, "arange", &["finite"]);
    expect_err(Tensor::arange(f64::NAN, 1.0, 1.0, DType::F32), ErrorKind::Value, "arange", &["NaN"]);
    let mut r = tamer::rng(0);
    expect_err(Tensor::uniform([2], 1.0, 1.0, DType::F32, &mut r), ErrorKind::Value, "uniform", &["1", "below"]);
    expect_err(
        Tensor::uniform([2], 0.0, f64::INFINITY, DType::F32, &mut r),
        ErrorKind::Value,
        "uniform",
        &["inf"],
    );
    expect_err(Tensor::normal([2], 0.0, -1.0, DType::F32, &mut r), ErrorKind::Value, "normal", &["-1"]);
    expect_err(Tensor::normal([2], 0.0, f64::NAN, DType::F32, &mut r), ErrorKind::Value, "normal", &["NaN"]);
}

#[test]
fn value_and_size_misuse() {
    let x = f32s(&[2, 3]);
    expect_err(x.clamp(1.0, 0.0), ErrorKind::Value, "clamp", &["[1, 0]", "lo <= hi"]);
    expect_err(x.clamp(f64::NAN, 0.0), ErrorKind::Value, "clamp", &["NaN"]);
    expect_err(x.var(&[0], false, 2), ErrorKind::Shape, "var", &["2 elements", "[2, 3]", "correction 2"]);
    let empty = f32s(&[2, 0]);
    expect_err(empty.max(&[1], false), ErrorKind::Shape, "max", &["[2, 0]"]);
    expect_err(empty.mean(&[-1], false), ErrorKind::Shape, "mean", &["[2, 0]"]);
    expect_err(empty.argmax(1, false), ErrorKind::Shape, "argmax", &["[2, 0]"]);
    expect_err(empty.argmin(-1, false), ErrorKind::Shape, "argmin", &["[2, 0]", "empty"]);
    expect_err(empty.max_with_indices(1, false), ErrorKind::Shape, "max_with_indices", &["[2, 0]", "empty"]);
    expect_err(empty.min_with_indices(1, true), ErrorKind::Shape, "min_with_indices", &["[2, 0]", "empty"]);
    expect_err(x.to_scalar(), ErrorKind::Shape, "to_scalar", &["[2, 3]"]);
    expect_err(f32s(&[2]).to_vec2::<f32>(), ErrorKind::Shape, "to_vec2", &["[2]"]);
    expect_err(x.assign(&f32s(&[3, 2])), ErrorKind::Shape, "assign", &["[2, 3]", "[3, 2]"]);
    expect_err(
        x.assign(&f32s(&[3]).broadcast_as([2, 3]).unwrap().t().unwrap()),
        ErrorKind::Shape,
        "assign",
        &["[2, 3]", "[3, 2]"],
    );
}

#[test]
fn gradient_checker_misuse() {
    let cfg = GradCheckConfig::default();
    let f32_input = f32s(&[2]);
    expect_err(
        check_gradients(|xs| xs[0].exp(), &[f32_input], &cfg),
        ErrorKind::DType,
        "check_gradients",
        &["f32", "f64"],
    );
    let broadcast = Tensor::ones([1], DType::F64).unwrap().broadcast_as([3]).unwrap();
    expect_err(
        check_gradients(|xs| xs[0].exp(), &[broadcast], &cfg),
        ErrorKind::Shape,
        "check_gradients",
        &["broadcast", "[3]"],
    );
    let x = Tensor::ones([2], DType::F64).unwrap();
    let constant = Tensor::ones([2], DType::F64).unwrap();
    expect_err(
        check_gradients(|_| constant.exp(), &[x], &cfg),
        ErrorKind::Autograd,
        "check_gradients",
        &["depend"],
    );
}
