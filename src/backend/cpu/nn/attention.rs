//! Attention on the CPU: no fused kernels. `fused_attention` declines every
//! call, so `ops/nn/attention.rs` runs the composite graph (matmul, masked
//! softmax, matmul) with the CPU's kernels for those families.

use crate::backend::contract::nn::attention::{AttentionForward, AttentionGrads, AttentionKernels, AttnDims, FusedKernel, Operand};
use crate::backend::cpu::CpuStorage;
use crate::{Error, Result};

const OP: &str = "scaled_dot_product_attention";

fn no_fused_kernel(kernel: FusedKernel) -> Error {
    Error::device(OP, format!("the CPU has no fused attention kernels ({kernel:?}); it runs the composite graph"))
}

impl AttentionKernels for CpuStorage {
    fn fused_attention(&self, _dims: &AttnDims) -> Result<Option<FusedKernel>> {
        Ok(None)
    }

    fn attention_forward(
        kernel: FusedKernel,
        _q: Operand<'_, Self>,
        _k: Operand<'_, Self>,
        _v: Operand<'_, Self>,
        _dims: &AttnDims,
    ) -> Result<AttentionForward<Self>> {
        Err(no_fused_kernel(kernel))
    }

    fn attention_backward(
        kernel: FusedKernel,
        _q: Operand<'_, Self>,
        _k: Operand<'_, Self>,
        _v: Operand<'_, Self>,
        _o: Operand<'_, Self>,
        _lse: Operand<'_, Self>,
        _dout: Operand<'_, Self>,
        _dims: &AttnDims,
    ) -> Result<AttentionGrads<Self>> {
        Err(no_fused_kernel(kernel))
    }
}
