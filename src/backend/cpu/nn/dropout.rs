//! Dropout's mask on the CPU (`backend/contract/nn/dropout.rs`): one keep
//! decision per element from the caller's RNG, in row-major order.

use crate::backend::contract::nn::dropout::{keep_flags, keep_scale, DropoutKernels};
use crate::backend::contract::unsupported_dtype;
use crate::backend::cpu::{CpuElem, CpuStorage};
use crate::types::DType;
use crate::Result;
use rand::RngCore;

/// `value` where kept, 0 where dropped, as a storage of `dtype`.
fn mask<T: CpuElem>(keep: &[bool], value: f64) -> CpuStorage {
    let (on, off) = (T::from_f64(value), T::from_f64(0.0));
    T::wrap(keep.iter().map(|&k| if k { on } else { off }).collect())
}

impl DropoutKernels for CpuStorage {
    fn dropout_mask(&self, dtype: DType, n: usize, p: f64, rng: &mut dyn RngCore) -> Result<Self> {
        let keep = keep_flags(n, p, rng);
        let value = keep_scale(p);
        match dtype {
            DType::F16 => Ok(mask::<half::f16>(&keep, value)),
            DType::BF16 => Ok(mask::<half::bf16>(&keep, value)),
            DType::F32 => Ok(mask::<f32>(&keep, value)),
            DType::F64 => Ok(mask::<f64>(&keep, value)),
            DType::I64 => Err(unsupported_dtype("dropout", dtype)),
        }
    }
}
