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
//! The forward keeps P (the attention probabilities) for the backward, as the
//! composite graph would; a fused flash-style kernel that recomputes P instead
//! comes with the CUDA backend.

use crate::autograd::{no_grad, BackwardOp};
use crate::tensor::{DType, Tensor};
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

/// `[Tq, Tk]` mask with 1 where key `j` is in the future of query `i`.
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
