//! Autocast on the CPU: the scope changes nothing there (the CPU has no fast
//! 16-bit product), bit for bit, values and gradients.
//! The CUDA side, where products run in bf16/f16, is tests/cuda/autocast.rs.

use tamer::autocast::{autocast, autocast_dtype};
use tamer::{DType, Tensor};

#[test]
fn cpu_products_are_untouched() {
    let a = Tensor::randn([3, 5], DType::F32, &mut tamer::rng(2)).unwrap().variable();
    let b = Tensor::randn([5, 2], DType::F32, &mut tamer::rng(3)).unwrap();
    let plain = a.matmul(&b).unwrap();
    let mixed = autocast(DType::BF16, || {
        assert_eq!(autocast_dtype(), Some(DType::BF16));
        a.matmul(&b)
    })
    .unwrap();
    assert_eq!(autocast_dtype(), None);
    assert_eq!(mixed.dtype(), DType::F32);
    assert_eq!(plain.to_vec::<f32>().unwrap(), mixed.to_vec::<f32>().unwrap());
    // The gradient is the f32 product's, unrounded.
    let grad = |c: &Tensor| c.sum_all().unwrap().backward().unwrap().get(&a).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(grad(&mixed), grad(&plain));
}
