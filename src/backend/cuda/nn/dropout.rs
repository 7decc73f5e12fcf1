//! Dropout masks on CUDA (cuda/dropout.cu): the scaled keep mask generated on
//! the device by Philox4x32-10 from one 64-bit seed drawn from the caller's
//! RNG, element `i` from counter `i / 4`. The contract
//! (`backend/contract/nn/dropout.rs`) holds the host reference of the same
//! rule (`philox_keep_flags`), which the CUDA tests compare with bit for bit.

use crate::backend::contract::nn::dropout::{check_dropout_mask, drop_threshold, keep_scale, DropoutKernels};
use crate::backend::cuda::{cuda_device_of, elementwise_config, kernel_name, kernels, Arg, CudaDevice, CudaStorage};
use crate::types::{DType, Device};
use crate::{Error, Result};
use rand::RngCore;
use std::sync::Arc;

/// `n` elements of `dtype` on `dev`: `1/(1−p)` where element i is kept, 0
/// where dropped (probability `p`), from `seed`.
pub fn philox_scaled_mask(dev: &Arc<CudaDevice>, dtype: DType, n: usize, p: f64, seed: u64) -> Result<CudaStorage> {
    check_dropout_mask(dtype, p)?;
    let mask = CudaStorage::alloc(dev, dtype, n)?;
    if n == 0 {
        return Ok(mask);
    }
    // dropout_mask_T(T* out, i64 n, u64 seed, u64 threshold, double scale); one thread per 4 elements
    dev.launch(
        &kernels::DROPOUT,
        &kernel_name("dropout_mask", dtype),
        elementwise_config(n.div_ceil(4)),
        &[
            Arg::Ptr(mask.ptr()),
            Arg::I64(n as i64),
            Arg::U64(seed),
            Arg::U64(drop_threshold(p)),
            Arg::F64(keep_scale(p)),
        ],
    )?;
    Ok(mask)
}

/// The raw Philox4x32-10 words for counters `0 .. groups` under key `seed`,
/// computed on the device (four per counter), for testing the generator.
pub fn philox_raw(dev: &Arc<CudaDevice>, groups: usize, seed: u64) -> Result<Vec<u32>> {
    // The words travel in an f32 buffer, bit for bit (a device-to-host copy
    // does not touch the values).
    let out = CudaStorage::alloc(dev, DType::F32, 4 * groups)?;
    if groups == 0 {
        return Ok(Vec::new());
    }
    // philox4x32_10_raw(u32* out, i64 groups, u64 seed)
    dev.launch(
        &kernels::DROPOUT,
        "philox4x32_10_raw",
        elementwise_config(groups),
        &[Arg::Ptr(out.ptr()), Arg::I64(groups as i64), Arg::U64(seed)],
    )?;
    match out.to_cpu()?.into_vec::<f32>() {
        Ok(v) => Ok(v.into_iter().map(f32::to_bits).collect()),
        Err(other) => Err(Error::dtype("philox_raw", format!("expected an f32 buffer, got {}", other.dtype()))),
    }
}

impl DropoutKernels for CudaStorage {
    fn dropout_mask(device: Device, dtype: DType, n: usize, p: f64, rng: &mut dyn RngCore) -> Result<Self> {
        // Checked before the seed is drawn, so a refused call leaves the RNG
        // as it was (as on the CPU).
        check_dropout_mask(dtype, p)?;
        let dev = cuda_device_of("dropout", device)?;
        let seed = rng.next_u64();
        philox_scaled_mask(&dev, dtype, n, p, seed)
    }
}
