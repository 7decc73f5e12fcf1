//! Fused scaled-dot-product attention on CUDA (cuda/attention.cu).
//!
//! [`forward`] launches the flash-attention forward, which returns O and the
//! per-row logsumexp L (`[BH, Tq]`, what the backward needs instead of the
//! `[BH, Tq, Tk]` probabilities); [`backward`] computes `delta = rowsum(dO ⊙ O)`
//! and then dQ, dK, dV, recomputing P from Q, K and L. Operands are
//! contiguous `[BH, T, D]` buffers (batch and heads flattened); the op in
//! `ops/nn/attention.rs` makes copies of strided views first and reaches
//! these through the `AttentionKernels` contract.
//!
//! Which implementation runs is [`AttentionImpl`]: the fused flash kernels
//! (f32, head dims up to [`MAX_FLASH_HEAD_DIM`]) by default, the composite
//! graph (matmul, masked softmax, matmul) otherwise or when asked for, and the
//! naive reference kernels (one thread per row, f32 and f64) for tests. The
//! choice is `TAMER_ATTENTION=composite|flash|reference` (read once per
//! process), overridden per thread by [`with_attention_impl`] (both shared
//! with the CPU backend, in the contract).

use crate::backend::contract::nn::attention::{check_attention_operand, AttentionForward, AttentionGrads, AttentionKernels, Operand as ContractOperand};
use crate::backend::cuda::{elementwise_config, kernel_name, kernels, Arg, CudaStorage};
use crate::types::DType;
use crate::{Error, Result};

pub use crate::backend::contract::nn::attention::{attention_impl, with_attention_impl, AttentionImpl, AttnDims, FusedKernel};
use cudarc::driver::LaunchConfig;

/// The largest head dim (D and Dv) the flash kernels handle; larger heads
/// take the composite path.
pub const MAX_FLASH_HEAD_DIM: usize = 128;

/// The fused kernel for a call of `dtype` with `dims`, or `None` for the
/// composite graph. Empty dims always go to the composite graph (it defines
/// the edge cases: no keys gives zeros, ...).
pub fn select(dtype: DType, dims: &AttnDims) -> Result<Option<FusedKernel>> {
    if dims.bh == 0 || dims.tq == 0 || dims.tk == 0 || dims.d == 0 || dims.dv == 0 {
        return Ok(None);
    }
    Ok(match attention_impl()? {
        AttentionImpl::Composite => None,
        AttentionImpl::Flash if dtype == DType::F32 && dims.d.max(dims.dv) <= MAX_FLASH_HEAD_DIM => Some(FusedKernel::Flash),
        AttentionImpl::Flash => None,
        AttentionImpl::Reference if matches!(dtype, DType::F32 | DType::F64) => Some(FusedKernel::Reference),
        AttentionImpl::Reference => None,
    })
}

/// A contiguous operand: the storage and the element offset where it starts.
pub type Operand<'a> = ContractOperand<'a, CudaStorage>;

/// The flash kernels' tile for the head dim: `(DMAX, query rows per forward
/// block, query rows per backward tile)`, mirroring FLASH_FWD / FLASH_BWD in
/// cuda/attention.cu. (The kernels loop over tiles grid-stride, so a grid
/// computed from other numbers would still be correct, only sized wrongly.)
fn flash_tile(d: usize, dv: usize) -> (usize, usize, usize) {
    match d.max(dv) {
        0..=32 => (32, 32, 32),
        33..=64 => (64, 32, 32),
        _ => (128, 16, 8),
    }
}

/// Keys per tile in cuda/attention.cu (ATTN_BC); the backward runs one block per key tile.
const KEY_TILE: usize = 32;
/// Threads per block of the fused kernels (ATTN_THREADS).
const FLASH_THREADS: u32 = 128;

/// One block of FLASH_THREADS per tile, `tiles` of them (clamped to the grid
/// limit; the kernels' grid-stride loop covers any rest).
fn tiles_config(tiles: usize) -> LaunchConfig {
    let blocks = tiles.clamp(1, i32::MAX as usize) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (FLASH_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Check an operand's dtype and that `n` elements from its offset lie in its storage.
fn check_operand(op: &'static str, what: &str, x: Operand<'_>, dtype: DType, n: usize) -> Result<()> {
    check_attention_operand(op, what, (x.0.dtype, x.0.len, x.1), dtype, n)
}

fn check_kernel_dtype(op: &'static str, kernel: FusedKernel, dtype: DType, dims: &AttnDims) -> Result<()> {
    let ok = match kernel {
        FusedKernel::Flash => dtype == DType::F32 && dims.d.max(dims.dv) <= MAX_FLASH_HEAD_DIM,
        FusedKernel::Reference => matches!(dtype, DType::F32 | DType::F64),
    };
    if !ok {
        return Err(Error::dtype(
            op,
            format!("the {kernel:?} attention kernels do not take {dtype} with D = {}, Dv = {}", dims.d, dims.dv),
        ));
    }
    Ok(())
}

/// The scalar arguments every attention kernel ends with: the sizes, the
/// scale, and the causal mask as a flag and its diagonal (query `i` sees key
/// `j` iff `j <= i + diagonal`).
fn dim_args(dims: &AttnDims) -> [Arg; 8] {
    [
        Arg::I64(dims.bh as i64),
        Arg::I64(dims.tq as i64),
        Arg::I64(dims.tk as i64),
        Arg::I64(dims.d as i64),
        Arg::I64(dims.dv as i64),
        Arg::F64(dims.scale),
        Arg::I64(dims.causal_diagonal.is_some() as i64),
        Arg::I64(dims.causal_diagonal.unwrap_or(0)),
    ]
}

/// Attention forward: `(O [BH, Tq, Dv], L [BH, Tq])`, both contiguous, in q's dtype.
pub fn forward(kernel: FusedKernel, q: Operand<'_>, k: Operand<'_>, v: Operand<'_>, dims: &AttnDims) -> Result<(CudaStorage, CudaStorage)> {
    const OP: &str = "scaled_dot_product_attention";
    let dtype = q.0.dtype;
    check_kernel_dtype(OP, kernel, dtype, dims)?;
    check_operand(OP, "q", q, dtype, dims.bh * dims.tq * dims.d)?;
    check_operand(OP, "k", k, dtype, dims.bh * dims.tk * dims.d)?;
    check_operand(OP, "v", v, dtype, dims.bh * dims.tk * dims.dv)?;
    q.0.check_same_device(OP, k.0)?;
    q.0.check_same_device(OP, v.0)?;
    let dev = q.0.cuda_device();
    let rows = dims.bh * dims.tq;
    let o = CudaStorage::alloc(dev, dtype, rows * dims.dv)?;
    let lse = CudaStorage::alloc(dev, dtype, rows)?;
    let (name, cfg) = match kernel {
        FusedKernel::Flash => {
            let (dmax, rows_per_block, _) = flash_tile(dims.d, dims.dv);
            (format!("flash_attn_fwd_d{dmax}_f32"), tiles_config(dims.bh * dims.tq.div_ceil(rows_per_block)))
        }
        FusedKernel::Reference => (kernel_name("attn_fwd_ref", dtype), elementwise_config(rows)),
    };
    // (q, k, v, o, lse, bh, tq, tk, d, dv, scale, causal, diagonal)
    let mut args = vec![
        Arg::Ptr(q.0.ptr_at(q.1)),
        Arg::Ptr(k.0.ptr_at(k.1)),
        Arg::Ptr(v.0.ptr_at(v.1)),
        Arg::Ptr(o.ptr()),
        Arg::Ptr(lse.ptr()),
    ];
    args.extend(dim_args(dims));
    dev.launch(&kernels::ATTENTION, &name, cfg, &args)?;
    Ok((o, lse))
}

/// Attention backward from the forward's `o` and `lse` and the output
/// gradient `dout` (`[BH, Tq, Dv]`): `(dQ, dK, dV)`, contiguous.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    kernel: FusedKernel,
    q: Operand<'_>,
    k: Operand<'_>,
    v: Operand<'_>,
    o: Operand<'_>,
    lse: Operand<'_>,
    dout: Operand<'_>,
    dims: &AttnDims,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    const OP: &str = "scaled_dot_product_attention backward";
    let dtype = q.0.dtype;
    check_kernel_dtype(OP, kernel, dtype, dims)?;
    let rows = dims.bh * dims.tq;
    check_operand(OP, "q", q, dtype, rows * dims.d)?;
    check_operand(OP, "k", k, dtype, dims.bh * dims.tk * dims.d)?;
    check_operand(OP, "v", v, dtype, dims.bh * dims.tk * dims.dv)?;
    check_operand(OP, "the output", o, dtype, rows * dims.dv)?;
    check_operand(OP, "the logsumexp", lse, dtype, rows)?;
    check_operand(OP, "the output gradient", dout, dtype, rows * dims.dv)?;
    for other in [k.0, v.0, o.0, lse.0, dout.0] {
        q.0.check_same_device(OP, other)?;
    }
    let dev = q.0.cuda_device();

    // delta_i = Σ_c dO_ic O_ic: one warp per row, 4 rows per block of 128.
    let delta = CudaStorage::alloc(dev, dtype, rows)?;
    let blocks = rows.div_ceil(4).clamp(1, 65_536) as u32;
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    // (dout, out, delta, rows, dv)
    dev.launch(
        &kernels::ATTENTION,
        &kernel_name("attn_bwd_delta", dtype),
        cfg,
        &[
            Arg::Ptr(dout.0.ptr_at(dout.1)),
            Arg::Ptr(o.0.ptr_at(o.1)),
            Arg::Ptr(delta.ptr()),
            Arg::I64(rows as i64),
            Arg::I64(dims.dv as i64),
        ],
    )?;

    let key_rows = dims.bh * dims.tk;
    // The flash kernel adds into dq with atomics, so it starts from zeros; the
    // reference kernels write every element.
    let dq = match kernel {
        FusedKernel::Flash => CudaStorage::zeros(dev, dtype, rows * dims.d)?,
        FusedKernel::Reference => CudaStorage::alloc(dev, dtype, rows * dims.d)?,
    };
    let dk = CudaStorage::alloc(dev, dtype, key_rows * dims.d)?;
    let dv = CudaStorage::alloc(dev, dtype, key_rows * dims.dv)?;
    // (q, k, v, dout, lse, delta, dq, dk, dv, bh, tq, tk, d, dv, scale, causal, diagonal)
    let mut args = vec![
        Arg::Ptr(q.0.ptr_at(q.1)),
        Arg::Ptr(k.0.ptr_at(k.1)),
        Arg::Ptr(v.0.ptr_at(v.1)),
        Arg::Ptr(dout.0.ptr_at(dout.1)),
        Arg::Ptr(lse.0.ptr_at(lse.1)),
        Arg::Ptr(delta.ptr()),
        Arg::Ptr(dq.ptr()),
        Arg::Ptr(dk.ptr()),
        Arg::Ptr(dv.ptr()),
    ];
    args.extend(dim_args(dims));
    match kernel {
        FusedKernel::Flash => {
            let (dmax, _, _) = flash_tile(dims.d, dims.dv);
            let cfg = tiles_config(dims.bh * dims.tk.div_ceil(KEY_TILE));
            dev.launch(&kernels::ATTENTION, &format!("flash_attn_bwd_d{dmax}_f32"), cfg, &args)?;
        }
        FusedKernel::Reference => {
            dev.launch(&kernels::ATTENTION, &kernel_name("attn_bwd_ref_dq", dtype), elementwise_config(rows), &args)?;
            dev.launch(
                &kernels::ATTENTION,
                &kernel_name("attn_bwd_ref_dkdv", dtype),
                elementwise_config(key_rows),
                &args,
            )?;
        }
    }
    Ok((dq, dk, dv))
}

impl AttentionKernels for CudaStorage {
    fn fused_attention(&self, dims: &AttnDims) -> Result<Option<FusedKernel>> {
        select(self.dtype, dims)
    }

    fn attention_forward(kernel: FusedKernel, q: Operand<'_>, k: Operand<'_>, v: Operand<'_>, dims: &AttnDims) -> Result<AttentionForward<Self>> {
        let (out, logsumexp) = forward(kernel, q, k, v, dims)?;
        Ok(AttentionForward { out, logsumexp })
    }

    fn attention_backward(
        kernel: FusedKernel,
        q: Operand<'_>,
        k: Operand<'_>,
        v: Operand<'_>,
        o: Operand<'_>,
        lse: Operand<'_>,
        dout: Operand<'_>,
        dims: &AttnDims,
    ) -> Result<AttentionGrads<Self>> {
        let (dq, dk, dv) = backward(kernel, q, k, v, o, lse, dout, dims)?;
        Ok(AttentionGrads { dq, dk, dv })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_follow_the_kernel_instantiations() {
        assert_eq!(flash_tile(16, 16), (32, 32, 32));
        assert_eq!(flash_tile(64, 33), (64, 32, 32));
        assert_eq!(flash_tile(80, 80), (128, 16, 8));
        assert_eq!(flash_tile(20, 128), (128, 16, 8));
    }

    #[test]
    fn selection_respects_dtype_head_dim_and_override() {
        let dims = AttnDims {
            bh: 6,
            tq: 5,
            tk: 7,
            d: 64,
            dv: 64,
            causal_diagonal: Some(2),
            scale: 0.125,
        };
        with_attention_impl(AttentionImpl::Flash, || {
            assert_eq!(select(DType::F32, &dims).unwrap(), Some(FusedKernel::Flash));
            assert_eq!(select(DType::F64, &dims).unwrap(), None);
            assert_eq!(select(DType::F32, &AttnDims { d: 160, dv: 160, ..dims }).unwrap(), None);
            assert_eq!(select(DType::F32, &AttnDims { tk: 0, ..dims }).unwrap(), None);
        });
        with_attention_impl(AttentionImpl::Reference, || {
            assert_eq!(select(DType::F64, &dims).unwrap(), Some(FusedKernel::Reference));
            assert_eq!(select(DType::BF16, &dims).unwrap(), None);
        });
        with_attention_impl(AttentionImpl::Composite, || assert_eq!(select(DType::F32, &dims).unwrap(), None));
    }
}
