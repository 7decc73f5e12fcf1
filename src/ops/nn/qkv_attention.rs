//! Multi-head self-attention of a packed qkv tensor, like FlashAttention's
//! `flash_attn_qkvpacked_func`: [`Tensor::qkv_attention`].
//!
//! A transformer's qkv projection gives `[B, T, 3C]`, whose channels are
//! `[3, H, D]` (the queries of every head, then the keys, then the values:
//! see `nn/attention.rs`). Cutting it into heads `[B, H, T, D]` and merging
//! the attention's output back into `[B, T, C]` are a permute and a reshape,
//! which cost copies: the merge copies the output forward and its gradient
//! backward, and the split's backward (narrow's) writes three zero-padded
//! `[B, T, 3C]` gradients and sums them. Here, on a backend whose fused
//! kernels take strided rows (the CPU's), the kernels read each head's rows
//! straight out of qkv (row `(b, t)` of head `h` of q starts at channel
//! `h·D`, of k at `C + h·D`, of v at `2C + h·D`), write the output in
//! `[B, T, H, D]` order, which is `[B, T, C]`, and the backward writes dQ,
//! dK and dV into one `d_qkv [B, T, 3C]`: no copy either way. Elsewhere the
//! op runs the split, [`Tensor::scaled_dot_product_attention`] and the merge.

use crate::autograd::BackwardOp;
use crate::backend::contract::nn::attention::{AttentionForward, AttentionGradsRows, AttentionKernels, AttnDims, FusedKernel, GradRows, RowLayout};
use crate::ops::nn::attention::AttnMask;
use crate::profile::{self, Cost};
use crate::tensor::Tensor;
use crate::types::Layout;
use crate::{Error, Result};

const OP: &str = "qkv_attention";

impl Tensor {
    /// Multi-head self-attention of a packed `qkv [B, T, 3C]` (`self`, its
    /// channels `[3, H, D]` as a fused qkv projection makes them, `H =
    /// n_head`), returning the heads' outputs merged into `[B, T, C]`: the
    /// same numbers as cutting q, k, v `[B, H, T, D]` out of it, calling
    /// [`Tensor::scaled_dot_product_attention`] and merging the heads, with no
    /// copy on a backend whose fused kernels take strided rows (see the
    /// [module docs](crate::ops::nn::qkv_attention)). `scale` defaults to `1/√D`.
    ///
    /// ```
    /// use tamer::{AttnMask, CausalAlign, DType, Tensor};
    /// let qkv = Tensor::randn([2, 5, 3 * 8], DType::F32, &mut tamer::rng(0)).unwrap();
    /// let y = qkv.qkv_attention(2, AttnMask::Causal(CausalAlign::TopLeft), None).unwrap();
    /// assert_eq!(y.dims(), &[2, 5, 8]);
    /// ```
    pub fn qkv_attention(&self, n_head: usize, mask: AttnMask, scale: Option<f64>) -> Result<Tensor> {
        let qkv = self;
        let (b, t, c) = match qkv.dims() {
            &[b, t, c3] if n_head > 0 && c3 % (3 * n_head) == 0 && c3 > 0 => (b, t, c3 / 3),
            _ => {
                return Err(Error::shape(
                    OP,
                    format!(
                        "qkv {} with n_head = {n_head}: expected [B, T, 3·C] with C a positive multiple of n_head",
                        qkv.shape()
                    ),
                ))
            }
        };
        if !qkv.dtype().is_float() {
            return Err(Error::dtype(OP, format!("qkv is {}, expected a float dtype", qkv.dtype())));
        }
        let d = c / n_head;
        let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
        let dims = AttnDims {
            bh: b * n_head,
            tq: t,
            tk: t,
            d,
            dv: d,
            causal_diagonal: mask.causal_diagonal(t, t),
            scale,
        };
        let _op = profile::op(OP, || Cost::NONE)?;
        let fused = crate::dispatch!(OP, [s = &*qkv.storage()], |_wrap| if s.takes_strided_rows() {
            s.fused_attention(&dims)?
        } else {
            None
        });
        match (fused, packed_rows(qkv.layout(), n_head, d)) {
            (Some(kernel), Some(rows)) => fused_qkv_attention(qkv, rows, dims, kernel),
            _ => {
                let heads = qkv.reshape([b, t, 3, n_head, d])?.permute(&[2, 0, 3, 1, 4])?; // [3, B, H, T, D]
                let part = |i: usize| heads.narrow(0, i, 1)?.squeeze(0);
                let y = part(0)?.scaled_dot_product_attention(&part(1)?, &part(2)?, mask, Some(scale))?;
                y.permute(&[0, 2, 1, 3])?.reshape([b, t, c])
            }
        }
    }
}

/// Where the rows of q, k and v lie in a `[B, T, 3C]` layout whose channels
/// are unit-stride (as any qkv projection's output is), or `None`.
fn packed_rows(layout: &Layout, heads: usize, d: usize) -> Option<[RowLayout; 3]> {
    let (strides, c) = (layout.strides(), layout.dims()[2] / 3);
    if strides[2] != 1 && layout.dims()[2] > 1 {
        return None;
    }
    Some([0, 1, 2].map(|part| RowLayout {
        offset: layout.offset() + part * c,
        heads,
        batch_stride: strides[0],
        head_stride: d,
        row_stride: strides[1],
    }))
}

/// `[B, T, H, D]` rows: contiguous `[B, T, width·H]` with `base + h·D` channels.
fn rows_in(dims: &AttnDims, heads: usize, row_width: usize, base: usize) -> RowLayout {
    RowLayout {
        offset: base,
        heads,
        batch_stride: dims.tq * row_width,
        head_stride: dims.d,
        row_stride: row_width,
    }
}

fn fused_qkv_attention(qkv: &Tensor, rows: [RowLayout; 3], dims: AttnDims, kernel: FusedKernel) -> Result<Tensor> {
    let (b, t, heads) = (qkv.dims()[0], qkv.dims()[1], rows[0].heads);
    let c = heads * dims.d;
    let _op = profile::op(OP, || super::attention::fused_cost(qkv, &dims, false))?;
    let out_rows = rows_in(&dims, heads, c, 0);
    let fwd = crate::dispatch!(OP, [s = &*qkv.storage()], |wrap| {
        let f = AttentionKernels::attention_forward_rows(kernel, (s, rows[0]), (s, rows[1]), (s, rows[2]), &dims, (out_rows, b * t * c))?;
        AttentionForward {
            out: wrap(f.out),
            logsumexp: wrap(f.logsumexp),
        }
    });
    let lse = Tensor::from_storage(fwd.logsumexp, Layout::contiguous([dims.bh, dims.tq]));
    Ok(Tensor::from_op(
        fwd.out,
        Layout::contiguous([b, t, c]),
        vec![qkv.clone()],
        QkvAttentionBackward { lse, dims, kernel, rows },
    ))
}

/// Keeps the logsumexp `[BH, T]` and where q, k, v's rows lie in qkv.
struct QkvAttentionBackward {
    lse: Tensor,
    dims: AttnDims,
    kernel: FusedKernel,
    rows: [RowLayout; 3],
}

impl BackwardOp for QkvAttentionBackward {
    fn name(&self) -> &'static str {
        OP
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, d_out: &Tensor) -> Result<Vec<Option<Tensor>>> {
        const OP_BACKWARD: &str = "qkv_attention backward";
        let qkv = &inputs[0];
        if d_out.dtype() != qkv.dtype() || d_out.device() != qkv.device() || d_out.dims() != out.dims() {
            return Err(Error::dtype(
                OP_BACKWARD,
                format!(
                    "the output gradient is {} {} on {}, expected {} {} on {}",
                    d_out.dtype(),
                    d_out.shape(),
                    d_out.device(),
                    qkv.dtype(),
                    out.shape(),
                    qkv.device()
                ),
            ));
        }
        let dims = &self.dims;
        let _op = profile::op(OP, || super::attention::fused_cost(qkv, dims, true))?;
        let (b, t, heads) = (qkv.dims()[0], qkv.dims()[1], self.rows[0].heads);
        let c = heads * dims.d;
        // Runs under the backward pass's no-grad guard: a strided output
        // gradient is copied plainly (usually it is contiguous already).
        let gc = d_out.contiguous()?;
        let start = |x: &Tensor| {
            x.layout()
                .contiguous_range()
                .map(|r| r.start)
                .ok_or_else(|| Error::shape(OP_BACKWARD, format!("operand of shape {} is not contiguous", x.shape())))
        };
        let (o_rows, g_rows) = (rows_in(dims, heads, c, start(out)?), rows_in(dims, heads, c, start(&gc)?));
        let lo = start(&self.lse)?;
        let grad = GradRows::Packed {
            len: b * t * 3 * c,
            dq: rows_in(dims, heads, 3 * c, 0),
            dk: rows_in(dims, heads, 3 * c, c),
            dv: rows_in(dims, heads, 3 * c, 2 * c),
        };
        let rows = &self.rows;
        let d_qkv = crate::dispatch!(
            OP_BACKWARD,
            [s = &*qkv.storage(), os = &*out.storage(), ls = &*self.lse.storage(), gs = &*gc.storage()],
            |wrap| {
                match AttentionKernels::attention_backward_rows(
                    self.kernel,
                    (s, rows[0]),
                    (s, rows[1]),
                    (s, rows[2]),
                    (os, o_rows),
                    (ls, lo),
                    (gs, g_rows),
                    dims,
                    grad,
                )? {
                    AttentionGradsRows::Packed(all) => wrap(all),
                    AttentionGradsRows::Separate(_) => {
                        return Err(Error::device(
                            OP_BACKWARD,
                            "the backend returned separate gradients for a packed call".to_string(),
                        ))
                    }
                }
            }
        );
        Ok(vec![Some(Tensor::from_storage(d_qkv, Layout::contiguous([b, t, 3 * c])))])
    }
}
