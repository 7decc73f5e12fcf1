//! Multi-head self-attention with a fused qkv projection (timm's `Attention`,
//! nanoGPT's `CausalSelfAttention`) and a KV cache for incremental decoding.
//!
//! ```text
//! x [B, T, C] --qkv--> [B, T, 3C] = [B, T, 3, H, D] --permute--> q, k, v [B, H, T, D]
//! y = softmax(q kᵀ / √D [+ causal mask]) v          [B, H, T, D]
//!   --permute/reshape--> [B, T, C] --proj--> [B, T, C]
//! ```
//!
//! The 3C axis of the qkv output is `[3, H, D]`: the first C channels are the
//! queries of every head in order, then the keys, then the values. timm
//! (`reshape(B, N, 3, H, D)`) and nanoGPT (`split(C)` then `view(B, T, H, D)`)
//! both use this layout, so their fused weights load unchanged.

use super::{prefixed, Dropout, Linear, Module, Param};
use crate::ops::nn::attention::{AttnMask, CausalAlign};
use crate::tensor::Tensor;
use crate::{Error, Result};
use rand::Rng;

/// Multi-head self-attention: `proj(attention(split(qkv(x))))`.
///
/// Parameter names (timm's): `qkv.weight [3C, C]`, `qkv.bias [3C]`,
/// `proj.weight [C, C]`, `proj.bias [C]`.
///
/// Dropout: `attn_dropout` on the attention probabilities and `proj_dropout`
/// on the output, in training mode only. With attention dropout active the
/// probabilities are materialised by an explicit softmax (the dropout sits
/// between the softmax and the product with `v`); otherwise `forward` runs
/// the packed [`Tensor::qkv_attention`] (and `forward_with_cache` the fused
/// [`Tensor::scaled_dot_product_attention`]).
///
/// ```
/// use tamer::nn::{KvCache, MultiHeadSelfAttention};
/// use tamer::{rng, DType, Tensor};
/// let attn = MultiHeadSelfAttention::new(16, 4, true, true, 0.0, 0.0, &mut rng(0)).unwrap();
/// let x = Tensor::randn([2, 5, 16], DType::F32, &mut rng(1)).unwrap();
/// assert_eq!(attn.forward(&x).unwrap().dims(), &[2, 5, 16]);
/// // Decoding one position at a time through a cache gives the same outputs.
/// let mut cache = KvCache::default();
/// let first = attn.forward_with_cache(&x.narrow(1, 0, 4).unwrap(), &mut cache).unwrap();
/// let last = attn.forward_with_cache(&x.narrow(1, 4, 1).unwrap(), &mut cache).unwrap();
/// assert_eq!((first.dims(), last.dims(), cache.len()), (&[2, 4, 16][..], &[2, 1, 16][..], 5));
/// ```
pub struct MultiHeadSelfAttention {
    pub qkv: Linear,
    pub proj: Linear,
    pub n_head: usize,
    /// Causal self-attention: each position sees itself and the earlier ones
    /// (the mask is [`mask`](Self::mask)).
    pub causal: bool,
    pub attn_dropout: Dropout,
    pub proj_dropout: Dropout,
    training: bool,
}

/// Keys and values of the positions seen so far, for one attention layer:
/// `k`, `v` are `[B, H, T_cached, D]` (empty before the first call).
#[derive(Clone, Default)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dims()[2])
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Forget every cached position.
    pub fn clear(&mut self) {
        self.k = None;
        self.v = None;
    }
    /// The cached keys and values, `[B, H, T, D]` each.
    pub fn get(&self) -> Option<(&Tensor, &Tensor)> {
        self.k.as_ref().zip(self.v.as_ref())
    }
}

impl MultiHeadSelfAttention {
    /// An f32 layer of width `dim` with `n_head` heads (`dim % n_head == 0`);
    /// `bias` applies to both projections. Weights use [`Linear::new`]'s default
    /// initialisation; models re-initialise them.
    pub fn new(dim: usize, n_head: usize, bias: bool, causal: bool, attn_dropout: f64, proj_dropout: f64, rng: &mut impl Rng) -> Result<Self> {
        if n_head == 0 || !dim.is_multiple_of(n_head) {
            return Err(Error::shape(
                "MultiHeadSelfAttention",
                format!("width {dim} must be a positive multiple of the number of heads {n_head}"),
            ));
        }
        Ok(MultiHeadSelfAttention {
            qkv: Linear::new(dim, 3 * dim, bias, rng)?,
            proj: Linear::new(dim, dim, bias, rng)?,
            n_head,
            causal,
            attn_dropout: Dropout::new(attn_dropout, rng.next_u64())?,
            proj_dropout: Dropout::new(proj_dropout, rng.next_u64())?,
            training: true,
        })
    }

    /// The mask of [`Tensor::scaled_dot_product_attention`] for this layer. In
    /// self-attention a causal query sees its own position and the earlier
    /// ones; with a KV cache the queries are the newest `Tq` of the `Tk`
    /// positions, so the triangle is aligned to the bottom right (which is
    /// also the top-left one when `Tq == Tk`, as in [`forward`](Self::forward)).
    pub fn mask(&self) -> AttnMask {
        if self.causal {
            AttnMask::Causal(CausalAlign::BottomRight)
        } else {
            AttnMask::None
        }
    }

    /// Model width C.
    pub fn dim(&self) -> usize {
        self.proj.out_features()
    }
    pub fn head_dim(&self) -> usize {
        self.dim() / self.n_head
    }

    /// `x: [B, T, C] -> [B, T, C]`. Without active attention dropout this is
    /// [`Tensor::qkv_attention`] of the qkv projection (no copy to split the
    /// heads or merge them where the backend's kernels take strided rows).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.attn_dropout_active() {
            let (q, k, v) = self.split_qkv(x)?;
            return self.attend(&q, &k, &v, x);
        }
        self.check_input(x)?;
        let y = self.qkv.forward(x)?.qkv_attention(self.n_head, self.mask(), None)?;
        self.proj_dropout.forward(&self.proj.forward(&y)?)
    }

    /// The attention probabilities `softmax(q kᵀ / √D [+ causal mask])`
    /// `[B, H, T, T]` that [`forward`](Self::forward) applies to `x [B, T, C]`,
    /// computed from the same weights with composite ops (the fused kernel
    /// keeps no probabilities). For diagnostics on a probe batch, such as the
    /// attention entropy of [`crate::diagnostics`]: it materialises `B·H·T²`
    /// numbers, so keep the batch small. Attention dropout is not applied.
    ///
    /// Multiplying by the values and projecting gives the fused output back:
    ///
    /// ```
    /// use tamer::nn::{Module, MultiHeadSelfAttention};
    /// use tamer::{rng, DType, Tensor};
    /// let attn = MultiHeadSelfAttention::new(8, 2, true, true, 0.0, 0.0, &mut rng(0)).unwrap();
    /// attn.to_dtype(DType::F64).unwrap();
    /// let x = Tensor::randn([1, 4, 8], DType::F64, &mut rng(1)).unwrap();
    /// let p = attn.attention_probs(&x).unwrap();
    /// assert_eq!(p.dims(), &[1, 2, 4, 4]);
    /// let rows = p.sum(&[3], false).unwrap().to_vec::<f64>().unwrap();
    /// assert!(rows.iter().all(|s| (s - 1.0).abs() < 1e-12)); // each query's distribution sums to 1
    /// ```
    pub fn attention_probs(&self, x: &Tensor) -> Result<Tensor> {
        let (q, k, _) = self.split_qkv(x)?;
        q.attention_probs(&k, self.mask(), None)
    }

    fn attn_dropout_active(&self) -> bool {
        self.training && self.attn_dropout.p > 0.0
    }

    /// `x` must be `[B, T, C]`.
    fn check_input(&self, x: &Tensor) -> Result<()> {
        let c = self.dim();
        if x.rank() != 3 || x.dims()[2] != c {
            return Err(Error::shape(
                "MultiHeadSelfAttention",
                format!("input shape {} must be [B, T, {c}] (batch, sequence, width)", x.shape()),
            ));
        }
        Ok(())
    }

    /// Incremental form: `x` holds the `T_new` newest positions `[B, T_new, C]`;
    /// their keys and values are appended to `cache` and the queries attend to
    /// every cached position (with the causal mask aligned to the bottom right,
    /// so that new position `i` sees cached positions `≤ T_cached + i`). Feeding a sequence in pieces
    /// gives the outputs of one [`forward`](Self::forward) over the whole of it.
    pub fn forward_with_cache(&self, x: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (q, k, v) = self.split_qkv(x)?;
        let (k, v) = match cache.get() {
            None => (k, v),
            Some((ck, cv)) => {
                if ck.dims()[0] != k.dims()[0] {
                    return Err(Error::shape(
                        "MultiHeadSelfAttention",
                        format!(
                            "input batch {} differs from the KV cache's batch {} (cache keys {})",
                            k.dims()[0],
                            ck.dims()[0],
                            ck.shape()
                        ),
                    ));
                }
                (Tensor::cat(&[ck.clone(), k], 2)?, Tensor::cat(&[cv.clone(), v], 2)?)
            }
        };
        cache.k = Some(k.clone());
        cache.v = Some(v.clone());
        self.attend(&q, &k, &v, x)
    }

    /// `x [B, T, C]` -> q, k, v `[B, H, T, D]` (strided views of the qkv output).
    fn split_qkv(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        self.check_input(x)?;
        let (b, t) = (x.dims()[0], x.dims()[1]);
        let (h, d) = (self.n_head, self.head_dim());
        let qkv = self.qkv.forward(x)?.reshape([b, t, 3, h, d])?.permute(&[2, 0, 3, 1, 4])?; // [3, B, H, T, D]
        let part = |i: usize| qkv.narrow(0, i, 1)?.squeeze(0);
        Ok((part(0)?, part(1)?, part(2)?))
    }

    /// Attention of q `[B, H, Tq, D]` over k, v `[B, H, Tk, D]`, merged heads, projection.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, x: &Tensor) -> Result<Tensor> {
        let (b, tq) = (x.dims()[0], x.dims()[1]);
        let y = if self.attn_dropout_active() {
            let probs = q.attention_probs(k, self.mask(), None)?; // [B, H, Tq, Tk]
            self.attn_dropout.forward(&probs)?.matmul(v)?
        } else {
            q.scaled_dot_product_attention(k, v, self.mask(), None)?
        }; // [B, H, Tq, D]
        let y = y.permute(&[0, 2, 1, 3])?.reshape([b, tq, self.dim()])?;
        self.proj_dropout.forward(&self.proj.forward(&y)?)
    }
}

impl Module for MultiHeadSelfAttention {
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut v = prefixed("qkv", self.qkv.named_params());
        v.extend(prefixed("proj", self.proj.named_params()));
        v
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
        self.attn_dropout.set_training(training);
        self.proj_dropout.set_training(training);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{rng, DType};

    /// `attention_probs` is the fused forward's distribution: its product with
    /// the values, heads merged and projected, is `forward`'s output.
    #[test]
    fn attention_probs_times_values_is_the_fused_forward() {
        for causal in [false, true] {
            let attn = MultiHeadSelfAttention::new(12, 3, true, causal, 0.0, 0.0, &mut rng(7)).unwrap();
            attn.to_dtype(DType::F64).unwrap();
            let x = Tensor::randn([2, 5, 12], DType::F64, &mut rng(8)).unwrap();
            let probs = attn.attention_probs(&x).unwrap();
            assert_eq!(probs.dims(), &[2, 3, 5, 5]);
            let (_, _, v) = attn.split_qkv(&x).unwrap();
            let y = probs.matmul(&v).unwrap().permute(&[0, 2, 1, 3]).unwrap().reshape([2, 5, 12]).unwrap();
            let composite = attn.proj.forward(&y).unwrap().to_vec::<f64>().unwrap();
            let fused = attn.forward(&x).unwrap().to_vec::<f64>().unwrap();
            let worst = composite.iter().zip(&fused).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-12, "causal {causal}: largest difference {worst}");
            if causal {
                // A query never sees a later key.
                let p = probs.to_vec::<f64>().unwrap();
                assert_eq!(p[1], 0.0);
                assert!((p[0] - 1.0).abs() < 1e-15);
            }
        }
    }
}
