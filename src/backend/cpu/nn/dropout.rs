//! Dropout's mask on the CPU (`backend/contract/nn/dropout.rs`): one keep
//! decision per element from the caller's RNG, in row-major order.

use crate::backend::contract::nn::dropout::{check_dropout_mask, keep_flags, keep_scale, DropoutKernels};
use crate::backend::contract::unsupported_dtype;
use crate::backend::cpu::alloc::CollectPooled;
use crate::backend::cpu::{CpuElem, CpuStorage};
use crate::types::{DType, Device, Float};
use crate::Result;
use rand::RngCore;

/// `value` where kept, 0 where dropped, as a storage of `T`.
fn mask<T: Float + CpuElem>(keep: &[bool], value: f64) -> CpuStorage {
    let on = <T as Float>::from_f64(value);
    T::wrap(keep.iter().map(|&k| if k { on } else { T::ZERO }).collect_pooled())
}

impl DropoutKernels for CpuStorage {
    // The CPU is one device, `Device::Cpu`.
    fn dropout_mask(_device: Device, dtype: DType, n: usize, p: f64, rng: &mut dyn RngCore) -> Result<Self> {
        check_dropout_mask(dtype, p)?;
        let keep = keep_flags(n, p, rng);
        let value = keep_scale(p);
        match dtype {
            DType::F32 => Ok(mask::<f32>(&keep, value)),
            DType::F64 => Ok(mask::<f64>(&keep, value)),
            other => Err(unsupported_dtype("dropout", other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use rand::SeedableRng;

    #[test]
    fn the_mask_follows_the_keep_flags() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let Ok(mask) = CpuStorage::dropout_mask(Device::Cpu, DType::F64, 101, 0.25, &mut rng)
            .unwrap()
            .into_vec::<f64>()
        else {
            panic!("an f64 mask was asked for");
        };
        let keep = keep_flags(101, 0.25, &mut rand::rngs::StdRng::seed_from_u64(5));
        let want: Vec<f64> = keep.iter().map(|&k| if k { 1.0 / 0.75 } else { 0.0 }).collect();
        assert_eq!(mask, want);
    }

    #[test]
    fn the_kernel_gives_the_contracts_errors() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for (dtype, p) in [(DType::BF16, 0.5), (DType::I64, 0.5), (DType::F32, 1.5), (DType::F32, -0.5)] {
            let got = CpuStorage::dropout_mask(Device::Cpu, dtype, 4, p, &mut rng).unwrap_err();
            assert_eq!(got, check_dropout_mask(dtype, p).unwrap_err());
            assert!(matches!(got.kind, ErrorKind::DType | ErrorKind::Value), "{got}");
        }
    }
}
