//! A shape whose element count (or, with a zero dimension, the product of the
//! other dimensions, which the strides need) does not fit in `isize` is an
//! error from every constructor, in release builds too.

use tamer::{DType, Tensor};

const HUGE: usize = (1 << 63) - 1;

fn overflow_error(result: tamer::Result<Tensor>, op: &str) {
    let e = result.err().unwrap_or_else(|| panic!("{op}: an overflowing shape was accepted")).to_string();
    assert!(e.contains(op) && e.contains("overflow"), "{e}");
}

#[test]
fn from_vec_rejects_a_shape_whose_strides_overflow() {
    // No elements, but the strides of [0, 2^63 - 1, 3] would be 3·(2^63 − 1).
    overflow_error(Tensor::from_vec(Vec::<f32>::new(), [0, HUGE, 3]), "from_vec");
    overflow_error(Tensor::from_slice::<f32>(&[], [3, HUGE, 0]), "from_vec");
    // 2^33 · 2^33 wraps to 0 in a release build: no values would "fill" it.
    overflow_error(Tensor::from_vec(Vec::<f32>::new(), [1 << 33, 1 << 33]), "from_vec");
    // A shape that fits still works, zero dimensions included.
    assert_eq!(Tensor::from_vec(Vec::<f32>::new(), [0, 1 << 40, 3]).unwrap().dims(), &[0, 1 << 40, 3]);
}

#[test]
fn every_constructor_rejects_overflowing_shapes() {
    let shape = [1usize << 32, 1 << 32];
    overflow_error(Tensor::zeros(shape, DType::F32), "zeros");
    overflow_error(Tensor::ones(shape, DType::F32), "full");
    overflow_error(Tensor::full(shape, 2.0, DType::F64), "full");
    overflow_error(Tensor::zeros_on(shape, DType::F32, tamer::Device::Cpu), "zeros");
    overflow_error(Tensor::full_on(shape, 1.0, DType::F32, tamer::Device::Cpu), "full");
    overflow_error(Tensor::rand(shape, DType::F32, &mut tamer::rng(0)), "uniform");
    overflow_error(Tensor::randn(shape, DType::F32, &mut tamer::rng(0)), "normal");
    overflow_error(Tensor::eye(1 << 32, DType::F32), "eye");
    overflow_error(Tensor::arange(0.0, 1e300, 1.0, DType::F32), "arange");
    let empty = Tensor::zeros([0], DType::F32).unwrap();
    overflow_error(empty.reshape([0, HUGE, 3]), "reshape");
    let one = Tensor::zeros([1, 1], DType::F32).unwrap();
    overflow_error(one.broadcast_as([1 << 40, 1 << 40]), "broadcast_as");
    overflow_error(Tensor::dropout_mask([1 << 33, 1 << 33], 0.5, DType::F32, &mut tamer::rng(0)), "dropout");
    overflow_error(tamer::ops::nn::dropout::philox_dropout_mask([1 << 33, 1 << 33], 0.5, 7, DType::F32), "dropout");
}

#[test]
fn ops_whose_result_would_overflow_are_errors() {
    // Broadcast views cost no memory, so results far larger than any input are one call away.
    let column = Tensor::zeros([1, 1], DType::F32).unwrap().broadcast_as([1 << 31, 1]).unwrap();
    let row = Tensor::zeros([1, 1], DType::F32).unwrap().broadcast_as([1, 1 << 31]).unwrap();
    overflow_error(column.add(&row), "add");
    overflow_error(column.matmul(&row), "matmul");
    let long = Tensor::zeros([1], DType::F32).unwrap().broadcast_as([1 << 60]).unwrap();
    overflow_error(Tensor::cat(&[long.clone(), long.clone()], 0), "cat");
    overflow_error(Tensor::stack(&[long.clone(), long], 0), "stack");
    let wide = Tensor::zeros([1, 1], DType::F32).unwrap().broadcast_as([1, 1 << 60]).unwrap();
    overflow_error(wide.index_select(0, &Tensor::from_indices(&[0; 8])), "index_select");
    // A -1 beside dimensions whose product overflows.
    let x = Tensor::zeros([4], DType::F32).unwrap();
    overflow_error(x.reshape_infer(&[1 << 33, 1 << 33, -1]), "reshape");
    // What fits still works.
    assert_eq!(x.reshape_infer(&[2, -1]).unwrap().dims(), &[2, 2]);
}

#[test]
fn a_safetensors_file_with_an_overflowing_shape_is_an_error() {
    let header = format!(r#"{{"w":{{"dtype":"F32","shape":[0,{HUGE},3],"data_offsets":[0,0]}}}}"#);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let e = tamer::checkpoint::deserialize(&bytes, "crafted.safetensors").unwrap_err().to_string();
    assert!(e.contains("crafted.safetensors") && e.contains("overflow"), "{e}");
}
