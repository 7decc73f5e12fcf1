//! Views and copies on the GPU: strided views made contiguous, dtype casts
//! of strided tensors and in-place writes through strided destinations, each
//! bit for bit like the CPU.

use crate::harness::randn;
use crate::parity_test;
use tamer::{DType, Tensor};

parity_test!(strided_views_copy_like_the_cpu, 0.0, 0.0, |dev| {
    let x = randn(&[4, 6, 5], 2).to_device(dev)?;
    Ok(vec![
        x.permute(&[2, 0, 1])?.contiguous()?,
        x.narrow(1, 2, 3)?.contiguous()?,
        x.t()?.contiguous()?,
        x.narrow(2, 1, 1)?.broadcast_as([4, 6, 3])?.contiguous()?,
    ])
});

parity_test!(casts_match_the_cpu, 0.0, 0.0, |dev| {
    let x = randn(&[64, 33], 3).scale(100.0)?.to_device(dev)?;
    let xt = x.t()?;
    Ok(vec![
        x.to_dtype(DType::BF16)?.to_dtype(DType::F32)?,
        xt.to_dtype(DType::F16)?.to_dtype(DType::F32)?,
        x.to_dtype(DType::F64)?,
        x.to_dtype(DType::I64)?.to_dtype(DType::F64)?,
    ])
});

parity_test!(assign_writes_through_strided_destinations, 0.0, 0.0, |dev| {
    let dst = Tensor::zeros([5, 4], DType::F32)?.to_device(dev)?;
    let src = randn(&[4, 3], 4).to_device(dev)?;
    dst.t()?.narrow(1, 1, 3)?.assign(&src)?;
    Ok(vec![dst])
});

/// Views of a GPU buffer read to the host: only the selected elements cross
/// (the buffer is compacted on the device first), and they are the CPU's.
#[test]
fn views_read_to_the_host_hold_the_selected_elements() {
    let Some(dev) = crate::harness::gpu() else { return };
    let x = randn(&[4, 6, 5], 5);
    let on_gpu = x.to_device(dev).expect("to the GPU");
    let views = |t: &Tensor| -> tamer::Result<Vec<Tensor>> {
        Ok(vec![
            t.narrow(1, 2, 3)?,
            t.permute(&[2, 0, 1])?,
            t.narrow(0, 3, 1)?.narrow(2, 4, 1)?.reshape([6])?,
            t.narrow(2, 1, 1)?.broadcast_as([4, 6, 3])?,
            t.narrow(0, 1, 1)?.narrow(1, 5, 1)?.narrow(2, 0, 1)?, // one element
            t.clone(),
        ])
    };
    for (i, (g, c)) in views(&on_gpu).unwrap().iter().zip(views(&x).unwrap()).enumerate() {
        assert_eq!(g.to_vec::<f32>().unwrap(), c.to_vec::<f32>().unwrap(), "view {i}");
        assert_eq!(g.to_f64_vec().unwrap(), c.to_f64_vec().unwrap(), "view {i}");
    }
    assert_eq!(views(&on_gpu).unwrap()[4].to_scalar().unwrap(), views(&x).unwrap()[4].to_scalar().unwrap());
}
