//! Scaled dot-product attention with an optional causal mask, with a
//! hand-written backward pass.
//!
//! ```text
//! forward                         backward (dO given)
//! S = Q Kᵀ · scale   [.., Tq, Tk]  dV = Pᵀ dO
//! S = mask(S)                      dP = dO Vᵀ
//! P = softmax(S)                   dS = P ⊙ (dP − rowsum(dP ⊙ P))
//! O = P V            [.., Tq, Dv]  dQ = dS K · scale,  dK = dSᵀ Q · scale
//! ```
//!
//! Where the backend has no fused kernel for a call (always on the CPU) the
//! forward runs this composite graph and keeps P (the attention
//! probabilities, `[.., Tq, Tk]`) for the backward. Where it has one (CUDA:
//! f32 with head dims up to 128, `cuda/attention.cu`), the op runs the fused
//! kernels through the `AttentionKernels` contract
//! (`backend/contract/nn/attention.rs`): the forward keeps only the per-row
//! logsumexp (`[.., Tq]`) and the backward recomputes P from Q, K and it.
//! `TAMER_ATTENTION=composite` forces the composite graph everywhere.

use crate::autograd::{no_grad, BackwardOp};
use crate::backend::contract::nn::attention::{AttentionForward, AttentionGrads, AttentionKernels, AttnDims, FusedKernel};
use crate::tensor::{DType, Layout, Tensor};
use crate::{Error, Result};

impl Tensor {
    /// `softmax(Q Kᵀ · scale [+ causal mask]) V` over the last two axes; `self` is Q.
    ///
    /// Shapes: Q `[.., Tq, D]`, K `[.., Tk, D]`, V `[.., Tk, Dv]` with equal leading
    /// (batch, head) dims; the result is `[.., Tq, Dv]`. `scale` defaults to `1/√D`.
    /// With `causal`, query `i` attends to keys `j ≤ i + (Tk − Tq)` (the queries are the
    /// last `Tq` positions, as with a KV cache).
    ///
    /// ```
    /// use tamer::{DType, Tensor};
    /// let q = Tensor::randn([2, 4, 8], DType::F32, &mut tamer::rng(0)).unwrap();
    /// let o = q.scaled_dot_product_attention(&q, &q, true, None).unwrap();
    /// assert_eq!(o.dims(), &[2, 4, 8]);
    /// ```
    pub fn scaled_dot_product_attention(&self, k: &Tensor, v: &Tensor, causal: bool, scale: Option<f64>) -> Result<Tensor> {
        const OP: &str = "scaled_dot_product_attention";
        let q = self;
        q.same_dtype_device(OP, k)?;
        q.same_dtype_device(OP, v)?;
        let (qr, kr, vr) = (q.rank(), k.rank(), v.rank());
        if qr < 2 || qr != kr || qr != vr {
            return Err(Error::shape(
                OP,
                format!(
                    "q {}, k {}, v {}: expected three tensors of the same rank >= 2",
                    q.shape(),
                    k.shape(),
                    v.shape()
                ),
            ));
        }
        let (batch, tq, d) = (&q.dims()[..qr - 2], q.dims()[qr - 2], q.dims()[qr - 1]);
        let (tk, dk) = (k.dims()[qr - 2], k.dims()[qr - 1]);
        if &k.dims()[..qr - 2] != batch || &v.dims()[..qr - 2] != batch || dk != d || v.dims()[qr - 2] != tk {
            return Err(Error::shape(
                OP,
                format!(
                    "q {}, k {}, v {}: expected q [.., Tq, D], k [.., Tk, D], v [.., Tk, Dv] with equal leading dims",
                    q.shape(),
                    k.shape(),
                    v.shape()
                ),
            ));
        }
        if causal && tq > tk {
            return Err(Error::shape(
                OP,
                format!("causal attention with {tq} queries but only {tk} keys: expected Tq <= Tk"),
            ));
        }
        let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
        let dims = attn_dims(q, k, v, causal, scale);
        let fused = crate::dispatch!(OP, [qs = &*q.storage()], |_wrap| qs.fused_attention(&dims)?);
        if let Some(kernel) = fused {
            return fused_attention(q, k, v, dims, kernel);
        }
        let (probs, out) = no_grad(|| -> Result<(Tensor, Tensor)> {
            let mut scores = q.matmul(&k.t()?)?.scale(scale)?; // [.., Tq, Tk]
            if causal {
                scores = scores.masked_fill(&causal_mask(tq, tk, q.dtype())?.to_device(q.device())?, f64::NEG_INFINITY)?;
            }
            let probs = scores.softmax(-1)?;
            let out = probs.matmul(v)?; // [.., Tq, Dv]
            Ok((probs, out))
        })?;
        let layout = out.layout().clone();
        let storage = out.storage().copy_contiguous(&layout)?;
        Ok(Tensor::from_op(
            storage,
            layout,
            vec![q.clone(), k.clone(), v.clone()],
            AttentionBackward { probs, scale },
        ))
    }
}

/// `[Tq, Tk]` mask (on the CPU) with 1 where key `j` is in the future of query `i`.
fn causal_mask(tq: usize, tk: usize, dtype: DType) -> Result<Tensor> {
    let shift = tk - tq;
    let values: Vec<f64> = (0..tq).flat_map(|i| (0..tk).map(move |j| if j > i + shift { 1.0 } else { 0.0 })).collect();
    Tensor::from_vec(values, [tq, tk])?.to_dtype(dtype)
}

struct AttentionBackward {
    /// softmax(scores): `[.., Tq, Tk]`
    probs: Tensor,
    scale: f64,
}

impl BackwardOp for AttentionBackward {
    fn name(&self) -> &'static str {
        "scaled_dot_product_attention"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, d_out: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // Every tensor here derives from d_out, the inputs and P, so it lives on
        // their device: nothing is created on the CPU.
        let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
        let p = &self.probs;
        let d_v = p.t()?.matmul(d_out)?; // [.., Tk, Dv]
        let d_p = d_out.matmul(&v.t()?)?; // [.., Tq, Tk]
        let row_dot = d_p.mul(p)?.sum(&[-1], true)?; // [.., Tq, 1]
        let d_s = p.mul(&d_p.sub(&row_dot)?)?.scale(self.scale)?; // includes ∂S/∂(QKᵀ)
        let d_q = d_s.matmul(k)?; // [.., Tq, D]
        let d_k = d_s.t()?.matmul(q)?; // [.., Tk, D]
        Ok(vec![Some(d_q), Some(d_k), Some(d_v)])
    }
}

/// The call's sizes with batch and heads flattened (shapes already validated).
fn attn_dims(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool, scale: f64) -> AttnDims {
    let r = q.rank();
    AttnDims {
        bh: q.dims()[..r - 2].iter().product(),
        tq: q.dims()[r - 2],
        tk: k.dims()[r - 2],
        d: q.dims()[r - 1],
        dv: v.dims()[r - 1],
        causal,
        scale,
    }
}

/// Where a contiguous operand starts in its storage.
fn start(op: &'static str, t: &Tensor) -> Result<usize> {
    t.layout()
        .contiguous_range()
        .map(|r| r.start)
        .ok_or_else(|| Error::shape(op, format!("operand of shape {} is not contiguous", t.shape())))
}

/// `[.., T, D]` dims of an output shaped like `x` but with last dim `last`.
fn with_last(x: &Tensor, last: usize) -> Vec<usize> {
    let mut dims = x.dims().to_vec();
    if let Some(l) = dims.last_mut() {
        *l = last;
    }
    dims
}

/// The fused forward, recorded with its own backward.
fn fused_attention(q: &Tensor, k: &Tensor, v: &Tensor, dims: AttnDims, kernel: FusedKernel) -> Result<Tensor> {
    const OP: &str = "scaled_dot_product_attention";
    // The kernels read [BH, T, D] rows: strided views are copied first
    // (outside the graph: the backward takes the original inputs).
    let (qc, kc, vc) = no_grad(|| -> Result<_> { Ok((q.contiguous()?, k.contiguous()?, v.contiguous()?)) })?;
    let (qo, ko, vo) = (start(OP, &qc)?, start(OP, &kc)?, start(OP, &vc)?);
    let fwd = crate::dispatch!(OP, [qs = &*qc.storage(), ks = &*kc.storage(), vs = &*vc.storage()], |wrap| {
        let f = AttentionKernels::attention_forward(kernel, (qs, qo), (ks, ko), (vs, vo), &dims)?;
        AttentionForward {
            out: wrap(f.out),
            logsumexp: wrap(f.logsumexp),
        }
    });
    let lse = Tensor::from_storage(fwd.logsumexp, Layout::contiguous([dims.bh, dims.tq]));
    Ok(Tensor::from_op(
        fwd.out,
        Layout::contiguous(with_last(q, dims.dv)),
        vec![q.clone(), k.clone(), v.clone()],
        FusedAttentionBackward { lse, dims, kernel },
    ))
}

/// Keeps the logsumexp L `[BH, Tq]` (not P); the output O it needs is the
/// node's own output, handed to `backward`.
struct FusedAttentionBackward {
    lse: Tensor,
    dims: AttnDims,
    kernel: FusedKernel,
}

impl BackwardOp for FusedAttentionBackward {
    fn name(&self) -> &'static str {
        "scaled_dot_product_attention"
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, d_out: &Tensor) -> Result<Vec<Option<Tensor>>> {
        const OP: &str = "scaled_dot_product_attention backward";
        let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
        if d_out.dtype() != q.dtype() || d_out.device() != q.device() {
            return Err(Error::dtype(
                OP,
                format!(
                    "the output gradient is {} on {}, expected {} on {}",
                    d_out.dtype(),
                    d_out.device(),
                    q.dtype(),
                    q.device()
                ),
            ));
        }
        // Runs under the backward pass's no-grad guard: these copies are plain.
        let (qc, kc, vc, oc, gc) = (q.contiguous()?, k.contiguous()?, v.contiguous()?, out.contiguous()?, d_out.contiguous()?);
        let lse = &self.lse;
        let (qo, ko, vo) = (start(OP, &qc)?, start(OP, &kc)?, start(OP, &vc)?);
        let (oo, lo, go) = (start(OP, &oc)?, start(OP, lse)?, start(OP, &gc)?);
        let grads = crate::dispatch!(
            OP,
            [
                qs = &*qc.storage(),
                ks = &*kc.storage(),
                vs = &*vc.storage(),
                os = &*oc.storage(),
                ls = &*lse.storage(),
                gs = &*gc.storage()
            ],
            |wrap| {
                let g = AttentionKernels::attention_backward(self.kernel, (qs, qo), (ks, ko), (vs, vo), (os, oo), (ls, lo), (gs, go), &self.dims)?;
                AttentionGrads {
                    dq: wrap(g.dq),
                    dk: wrap(g.dk),
                    dv: wrap(g.dv),
                }
            }
        );
        let wrap = |s, like: &Tensor| Tensor::from_storage(s, Layout::contiguous(like.shape().clone()));
        Ok(vec![Some(wrap(grads.dq, q)), Some(wrap(grads.dk, k)), Some(wrap(grads.dv, v))])
    }
}
