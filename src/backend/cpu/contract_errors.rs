//! Every CPU kernel refuses a bad operand with exactly its contract
//! validator's error (`backend/contract/`), the error the CUDA backend gives
//! for the same call. Each case is the validator's own first failure: the
//! kernel must not fail earlier with an error of its own.

use super::CpuStorage;
use crate::backend::contract::binary::{check_binary, check_where_cond, Add, BinaryKernels};
use crate::backend::contract::index::{check_cat, check_gather_backward, check_index_add, check_index_select_backward, check_scatter_add, IndexKernels};
use crate::backend::contract::matmul::{check_linear, check_matmul, MatmulKernels};
use crate::backend::contract::nn::conv::{check_conv2d, check_conv2d_backward_bias, Conv2dParams, ConvKernels};
use crate::backend::contract::nn::layer_norm::{check_layer_norm, check_layer_norm_backward, LayerNormKernels};
use crate::backend::contract::nn::pool::{check_avg_pool2d, check_avg_pool2d_backward, check_max_pool2d, check_max_pool2d_backward, Pool2dParams, PoolKernels};
use crate::backend::contract::nn::softmax::{check_softmax, check_softmax_backward, SoftmaxKernels, SoftmaxKind};
use crate::backend::contract::reduce::{check_argmax, check_reduce, ReduceKernels, ReduceOp};
use crate::backend::contract::unary::{check_unary, check_unary_backward, Exp, UnaryKernels};
use crate::backend::contract::COMPUTE_FLOATS;
use crate::types::{DType, Layout, Shape};
use crate::Error;
use half::{bf16, f16};

fn f16s(n: usize) -> CpuStorage {
    CpuStorage::F16(vec![f16::ONE; n])
}
fn bf16s(n: usize) -> CpuStorage {
    CpuStorage::BF16(vec![bf16::ONE; n])
}
fn f32s(n: usize) -> CpuStorage {
    CpuStorage::F32(vec![1.0; n])
}
fn f64s(n: usize) -> CpuStorage {
    CpuStorage::F64(vec![1.0; n])
}
fn i64s(n: usize) -> CpuStorage {
    CpuStorage::I64(vec![0; n])
}

/// The kernel's error is the validator's, and the validator did refuse.
fn same<T>(kernel: crate::Result<T>, validator: crate::Result<impl std::fmt::Debug>) {
    let want: Error = validator.expect_err("the validator should refuse this case");
    let Err(got) = kernel else {
        panic!("the kernel accepted what its validator refuses: {want}");
    };
    assert_eq!(got, want);
}

#[test]
fn the_cpu_declares_f32_and_f64_only() {
    assert_eq!(<CpuStorage as UnaryKernels>::DTYPES, COMPUTE_FLOATS);
    assert_eq!(<CpuStorage as BinaryKernels>::DTYPES, COMPUTE_FLOATS);
    assert_eq!(<CpuStorage as MatmulKernels>::DTYPES, COMPUTE_FLOATS);
}

#[test]
fn elementwise_kernels_refuse_16_bit_and_mismatches() {
    let (l, other) = (Layout::contiguous([2, 3]), Layout::contiguous([3, 2]));
    let d = COMPUTE_FLOATS;
    same(f16s(6).unary(&l, Exp), check_unary("exp", DType::F16, d));
    same(i64s(6).unary(&l, Exp), check_unary("exp", DType::I64, d));
    let x = f32s(6);
    same(
        x.unary_backward(&l, &f64s(6), &l, &x, &l, Exp),
        check_unary_backward("exp", (DType::F32, &l), (DType::F64, &l), (DType::F32, &l), d),
    );
    same(
        x.unary_backward(&l, &x, &l, &x, &other, Exp),
        check_unary_backward("exp", (DType::F32, &l), (DType::F32, &l), (DType::F32, &other), d),
    );
    same(
        bf16s(6).binary(&l, &bf16s(6), &l, Add),
        check_binary("add", (DType::BF16, &l), (DType::BF16, &l), d),
    );
    same(x.binary(&l, &f64s(6), &l, Add), check_binary("add", (DType::F32, &l), (DType::F64, &l), d));
    same(x.binary(&l, &x, &other, Add), check_binary("add", (DType::F32, &l), (DType::F32, &other), d));
    same(
        f16s(6).where_cond(&l, &f16s(6), &l, &f16s(6), &l),
        check_where_cond((DType::F16, &l), (DType::F16, &l), (DType::F16, &l), d),
    );
    same(
        x.where_cond(&l, &f64s(6), &l, &x, &l),
        check_where_cond((DType::F32, &l), (DType::F64, &l), (DType::F32, &l), d),
    );
}

#[test]
fn matmul_refuses_16_bit_mismatches_and_bad_layouts() {
    let (a, b) = (Layout::contiguous([2, 3]), Layout::contiguous([3, 4]));
    let d = COMPUTE_FLOATS;
    same(
        bf16s(6).matmul(&a, &bf16s(12), &b),
        check_matmul((DType::BF16, &a, 6), (DType::BF16, &b, 12), d),
    );
    same(f32s(6).matmul(&a, &f64s(12), &b), check_matmul((DType::F32, &a, 6), (DType::F64, &b, 12), d));
    same(f32s(6).matmul(&a, &f32s(11), &b), check_matmul((DType::F32, &a, 6), (DType::F32, &b, 11), d));
}

#[test]
fn linear_refuses_what_matmul_refuses_and_a_bad_bias() {
    let (a, b, bias) = (Layout::contiguous([2, 3]), Layout::contiguous([3, 4]), Layout::contiguous([4]));
    let d = COMPUTE_FLOATS;
    same(
        bf16s(6).linear(&a, &bf16s(12), &b, None),
        check_linear((DType::BF16, &a, 6), (DType::BF16, &b, 12), None, d),
    );
    same(
        f32s(6).linear(&a, &f32s(11), &b, Some((&f32s(4), &bias))),
        check_linear((DType::F32, &a, 6), (DType::F32, &b, 11), Some((DType::F32, &bias, 4)), d),
    );
    same(
        f32s(6).linear(&a, &f32s(12), &b, Some((&f64s(4), &bias))),
        check_linear((DType::F32, &a, 6), (DType::F32, &b, 12), Some((DType::F64, &bias, 4)), d),
    );
    same(
        f32s(6).linear(&a, &f32s(12), &b, Some((&f32s(3), &bias))),
        check_linear((DType::F32, &a, 6), (DType::F32, &b, 12), Some((DType::F32, &bias, 3)), d),
    );
}

#[test]
fn reductions_and_softmax_refuse_16_bit_and_bad_axes() {
    let l = Layout::contiguous([2, 3]);
    same(f16s(6).reduce(&l, &[1], ReduceOp::Sum), check_reduce(ReduceOp::Sum, (DType::F16, &l), &[1]));
    same(f32s(6).reduce(&l, &[2], ReduceOp::Max), check_reduce(ReduceOp::Max, (DType::F32, &l), &[2]));
    same(i64s(6).argmax(&l, 1), check_argmax((DType::I64, &l), 1));
    same(f64s(6).argmax(&l, 2), check_argmax((DType::F64, &l), 2));
    let k = SoftmaxKind::LogSoftmax;
    same(bf16s(6).softmax_last(&l, k), check_softmax(k, (DType::BF16, &l)));
    let other = Layout::contiguous([3, 2]);
    same(
        f32s(6).softmax_last_backward(&l, &f32s(6), &other, k),
        check_softmax_backward(k, (DType::F32, &l), (DType::F32, &other)),
    );
    same(
        f32s(6).softmax_last_backward(&l, &f64s(6), &l, k),
        check_softmax_backward(k, (DType::F32, &l), (DType::F64, &l)),
    );
}

#[test]
fn layer_norm_refuses_16_bit_and_bad_parameters() {
    let (x, c, bad) = (Layout::contiguous([2, 3]), Layout::contiguous([3]), Layout::contiguous([4]));
    same(f16s(6).layer_norm(&x, None, None, 1e-5), check_layer_norm((DType::F16, &x), None, None));
    same(
        f32s(6).layer_norm(&x, Some((&f32s(4), &bad)), None, 1e-5),
        check_layer_norm((DType::F32, &x), Some((DType::F32, &bad)), None),
    );
    let (s, w) = (f32s(2), f32s(3));
    same(
        f32s(6).layer_norm_backward(&x, Some((&w, &c)), &s, &f64s(2), &f32s(6), &x, true, true),
        check_layer_norm_backward((DType::F32, &x), Some((DType::F32, &c)), (DType::F32, 2), (DType::F64, 2), (DType::F32, &x)),
    );
}

#[test]
fn conv_and_pool_refuse_16_bit_and_bad_shapes() {
    let p = Conv2dParams {
        batch: 1,
        in_channels: 2,
        in_h: 4,
        in_w: 4,
        out_channels: 3,
        kernel: (3, 3),
        stride: (1, 1),
        padding: (1, 1),
        out_h: 4,
        out_w: 4,
    };
    let (x, w, y) = (
        Layout::contiguous(p.input_dims()),
        Layout::contiguous(p.weight_dims()),
        Layout::contiguous(p.output_dims()),
    );
    same(
        f16s(32).conv2d(&x, &f16s(54), &w, None, &p),
        check_conv2d(&p, (DType::F16, &x), (DType::F16, &w), None),
    );
    let bias = Layout::contiguous([2]);
    same(
        f32s(32).conv2d(&x, &f32s(54), &w, Some((&f32s(2), &bias)), &p),
        check_conv2d(&p, (DType::F32, &x), (DType::F32, &w), Some((DType::F32, &bias))),
    );
    same(f16s(48).conv2d_backward_bias(&y, &p), check_conv2d_backward_bias(&p, (DType::F16, &y)));
    same(f64s(32).conv2d_backward_bias(&x, &p), check_conv2d_backward_bias(&p, (DType::F64, &x)));

    let q = Pool2dParams {
        batch: 1,
        channels: 2,
        in_h: 4,
        in_w: 4,
        kernel: (2, 2),
        stride: (2, 2),
        padding: (0, 0),
        out_h: 2,
        out_w: 2,
    };
    let (px, py) = (Layout::contiguous(q.input_dims()), Layout::contiguous(q.output_dims()));
    same(bf16s(32).max_pool2d(&px, &q), check_max_pool2d(&q, (DType::BF16, &px)));
    same(f32s(8).max_pool2d(&py, &q), check_max_pool2d(&q, (DType::F32, &py)));
    same(
        f16s(8).max_pool2d_backward(&py, &i64s(8), &py, &q),
        check_max_pool2d_backward(&q, (DType::F16, &py), (DType::I64, &py)),
    );
    same(
        f32s(8).max_pool2d_backward(&py, &f32s(8), &py, &q),
        check_max_pool2d_backward(&q, (DType::F32, &py), (DType::F32, &py)),
    );
    same(i64s(32).avg_pool2d(&px, &q, true), check_avg_pool2d(&q, (DType::I64, &px)));
    same(f32s(32).avg_pool2d_backward(&px, &q, false), check_avg_pool2d_backward(&q, (DType::F32, &px)));
}

#[test]
fn indexing_refuses_16_bit_adds_and_mismatched_parts() {
    let (x, ids_l) = (Layout::contiguous([3, 2]), Layout::contiguous([2]));
    let ids = CpuStorage::I64(vec![0, 2]);
    let src = Layout::contiguous([2, 2]);
    same(
        f16s(6).index_add(&x, 0, &ids, &ids_l, &f16s(4), &src),
        check_index_add((DType::F16, &x), 0, &[0, 2], (DType::F16, &src)),
    );
    same(
        f32s(6).index_add(&x, 0, &ids, &ids_l, &f64s(4), &src),
        check_index_add((DType::F32, &x), 0, &[0, 2], (DType::F64, &src)),
    );
    let square = Layout::contiguous([2, 2]);
    let square_ids = CpuStorage::I64(vec![0, 1, 2, 0]);
    same(
        bf16s(6).scatter_add(&x, 0, &square_ids, &square, &bf16s(4), &square),
        check_scatter_add((DType::BF16, &x), 0, &square, &[0, 1, 2, 0], (DType::BF16, &square)),
    );
    let shape = Shape::new([3, 2]);
    same(
        f16s(4).index_select_backward(&src, 0, &ids, &ids_l, &shape),
        check_index_select_backward((DType::F16, &src), 0, &[0, 2], &shape),
    );
    same(
        i64s(4).gather_backward(&square, 0, &square_ids, &square, &shape),
        check_gather_backward((DType::I64, &square), 0, &square, &[0, 1, 2, 0], &shape),
    );
    let (a, b) = (f32s(6), f16s(6));
    same(CpuStorage::cat(&[(&a, &x), (&b, &x)], 0), check_cat([(DType::F32, &x), (DType::F16, &x)], 0));
}
