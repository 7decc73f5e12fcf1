//! Scaled dot-product attention with an explicit mask ([`AttnMask`]), with a
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
//! Where the backend has no fused kernel for a call the forward runs this
//! composite graph and keeps P (the attention probabilities, `[.., Tq, Tk]`)
//! for the backward. Where it has one (the CPU: f32 and f64,
//! `backend/cpu/nn/attention/`; CUDA: f32 with head dims up to 128,
//! `cuda/attention.cu`), the op runs the fused kernels through the
//! `AttentionKernels` contract (`backend/contract/nn/attention.rs`): the
//! forward keeps only the per-row logsumexp (`[.., Tq]`) and the backward
//! recomputes P from Q, K and it. Kernels that take strided rows (the
//! CPU's) read views such as a head split's permuted q, k, v in place; for
//! the others the op copies them to contiguous `[BH, T, D]` first.
//! `TAMER_ATTENTION=composite` forces the
//! composite graph everywhere (`reference` the naive reference kernels).
//!
//! # The causal mask when `Tq != Tk`
//!
//! A causal mask is a triangle of visible (query, key) pairs, and with fewer
//! or more queries than keys there are two places to put it. PyTorch names
//! both in `torch.nn.attention.bias.CausalVariant`; tamer makes the caller
//! pick one with [`CausalAlign`] instead of a bare `bool`:
//!
//! | tamer | PyTorch | query `i` sees keys | `[Tq, Tk] = [3, 4]` |
//! |---|---|---|---|
//! | `AttnMask::Causal(CausalAlign::TopLeft)` | `is_causal=True`, `causal_upper_left(Tq, Tk)` = `torch.tril(ones(Tq, Tk))` | `j ≤ i` | `1000 / 1100 / 1110` |
//! | `AttnMask::Causal(CausalAlign::BottomRight)` | `causal_lower_right(Tq, Tk)` = `torch.tril(ones(Tq, Tk), diagonal=Tk − Tq)` | `j ≤ i + Tk − Tq` | `1100 / 1110 / 1111` |
//!
//! Bottom-right is the KV-cache convention: the queries are the *last* `Tq`
//! of `Tk` positions (what [`crate::nn::MultiHeadSelfAttention`] uses when
//! decoding through its cache). Top-left is what `F.scaled_dot_product_attention(
//! q, k, v, is_causal=True)` computes. With `Tq == Tk` they are the same mask.
//!
//! With bottom-right and `Tq > Tk`, the first `Tq − Tk` queries see no key at
//! all. Their output rows are zeros and they pass no gradient, as in
//! PyTorch's math backend (its `_safe_softmax`, since 2.5) and
//! FlashAttention-2, instead of the NaN a plain softmax over no key would
//! give. (A top-left query always sees key 0, so this never happens there.)
//!
//! The mask was once a `bool` meaning bottom-right, which silently gave other
//! numbers than PyTorch's `is_causal=True` for `Tq != Tk`; a `bool` no longer compiles:
//!
//! ```compile_fail
//! let q = tamer::Tensor::zeros([1, 2, 4], tamer::DType::F32).unwrap();
//! let k = tamer::Tensor::zeros([1, 3, 4], tamer::DType::F32).unwrap();
//! q.scaled_dot_product_attention(&k, &k, true, None).unwrap();
//! ```

use crate::autograd::{no_grad, BackwardOp};
use crate::backend::contract::nn::attention::{
    AttentionForward, AttentionGrads, AttentionGradsRows, AttentionKernels, AttnDims, FusedKernel, GradRows, RowLayout,
};
use crate::profile::{self, Cost};
use crate::tensor::Tensor;
use crate::types::Layout;
use crate::{Error, Result};

/// Where a causal mask's triangle sits when there are fewer or more queries
/// than keys (see the [module docs](self) for the table against PyTorch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CausalAlign {
    /// Aligned to the top-left corner: query `i` sees keys `j ≤ i`. PyTorch's
    /// `is_causal=True` and `torch.nn.attention.bias.causal_upper_left`.
    TopLeft,
    /// Aligned to the bottom-right corner: query `i` sees keys
    /// `j ≤ i + Tk − Tq`, i.e. the queries are the last `Tq` positions (a KV
    /// cache). PyTorch's `torch.nn.attention.bias.causal_lower_right`.
    BottomRight,
}

/// Which keys each query of [`Tensor::scaled_dot_product_attention`] attends to.
///
/// ```
/// use tamer::{AttnMask, CausalAlign};
/// // 2 queries, 3 keys: top-left hides key 1 from query 0, bottom-right does not.
/// assert!(!AttnMask::Causal(CausalAlign::TopLeft).is_visible(0, 1, 2, 3));
/// assert!(AttnMask::Causal(CausalAlign::BottomRight).is_visible(0, 1, 2, 3));
/// assert!(AttnMask::None.is_visible(0, 2, 2, 3));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttnMask {
    /// Every query sees every key (PyTorch's default, no `attn_mask`).
    #[default]
    None,
    /// Query `i` sees key `j` only on or below the causal diagonal, placed as the [`CausalAlign`] says.
    Causal(CausalAlign),
}

impl AttnMask {
    /// `torch.tril`'s `diagonal` of this mask for `tq` queries and `tk` keys:
    /// query `i` sees key `j` iff `j ≤ i + diagonal`. `None` without a mask.
    pub fn causal_diagonal(self, tq: usize, tk: usize) -> Option<i64> {
        match self {
            AttnMask::None => None,
            AttnMask::Causal(CausalAlign::TopLeft) => Some(0),
            AttnMask::Causal(CausalAlign::BottomRight) => Some(tk as i64 - tq as i64),
        }
    }

    /// Whether query `i` (of `tq`) may attend to key `j` (of `tk`).
    pub fn is_visible(self, i: usize, j: usize, tq: usize, tk: usize) -> bool {
        self.causal_diagonal(tq, tk).is_none_or(|diagonal| j as i64 <= i as i64 + diagonal)
    }
}

impl Tensor {
    /// `softmax(Q Kᵀ · scale, masked) V` over the last two axes; `self` is Q.
    ///
    /// Shapes: Q `[.., Tq, D]`, K `[.., Tk, D]`, V `[.., Tk, Dv]` with equal leading
    /// (batch, head) dims; the result is `[.., Tq, Dv]`. `scale` defaults to `1/√D`.
    /// `mask` says which keys each query sees; a causal one must say how it is
    /// aligned when `Tq != Tk` (PyTorch's `is_causal=True` is
    /// `AttnMask::Causal(CausalAlign::TopLeft)`, a KV cache needs
    /// `BottomRight`: see the [module docs](crate::ops::nn::attention)).
    /// A query that sees no key gets a zero output row.
    ///
    /// ```
    /// use tamer::{AttnMask, CausalAlign, DType, Tensor};
    /// let q = Tensor::randn([2, 4, 8], DType::F32, &mut tamer::rng(0)).unwrap();
    /// let o = q.scaled_dot_product_attention(&q, &q, AttnMask::Causal(CausalAlign::TopLeft), None).unwrap();
    /// assert_eq!(o.dims(), &[2, 4, 8]);
    /// ```
    pub fn scaled_dot_product_attention(&self, k: &Tensor, v: &Tensor, mask: AttnMask, scale: Option<f64>) -> Result<Tensor> {
        const OP: &str = "scaled_dot_product_attention";
        let q = self;
        check_shapes(OP, q, k, Some(v))?;
        let scale = scale.unwrap_or(1.0 / (q.dims()[q.rank() - 1] as f64).sqrt());
        let dims = attn_dims(q, k, v, mask, scale);
        // One row for the op, fused or composite: the composite graph's ops
        // (and the fused kernels' scope) add their own costs to it.
        let _op = profile::op(OP, || Cost::NONE)?;
        let fused = crate::dispatch!(OP, [qs = &*q.storage()], |_wrap| qs.fused_attention(&dims)?);
        if let Some(kernel) = fused {
            return fused_attention(q, k, v, dims, kernel);
        }
        let (probs, out) = no_grad(|| -> Result<(Tensor, Tensor)> {
            let probs = q.attention_probs(k, mask, Some(scale))?; // [.., Tq, Tk]
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

    /// The attention probabilities `softmax(Q Kᵀ · scale, masked)` `[.., Tq, Tk]`
    /// of [`Tensor::scaled_dot_product_attention`] (`self` is Q), as a graph of
    /// differentiable ops: for attention dropout, which sits between the
    /// softmax and the product with V. Hidden keys get probability 0; a query
    /// that sees no key gets a row of zeros.
    pub fn attention_probs(&self, k: &Tensor, mask: AttnMask, scale: Option<f64>) -> Result<Tensor> {
        let q = self;
        check_shapes("attention_probs", q, k, None)?;
        let r = q.rank();
        let (tq, tk) = (q.dims()[r - 2], k.dims()[r - 2]);
        let scale = scale.unwrap_or(1.0 / (q.dims()[r - 1] as f64).sqrt());
        let scores = q.matmul(&k.t()?)?.scale(scale)?; // [.., Tq, Tk]
        let Some(hidden) = HiddenKeys::new(mask, tq, tk) else {
            return scores.softmax(-1);
        };
        let on_device = |m: Vec<bool>| -> Result<Tensor> {
            let values = m.into_iter().map(|h| if h { 1.0 } else { 0.0 }).collect::<Vec<f64>>();
            Tensor::from_vec(values, [tq, tk])?.to_dtype(q.dtype())?.to_device(q.device())
        };
        if !hidden.has_blind_rows() {
            return scores.masked_fill(&on_device(hidden.hidden)?, f64::NEG_INFINITY)?.softmax(-1);
        }
        // A row that sees no key would be softmax(−∞, …, −∞) = NaN, in the
        // value and in the gradient. Its scores are left as they are instead
        // (a finite softmax) and its probabilities zeroed after it, which
        // also stops the gradient: the row's output is 0 and passes nothing back.
        let masked = scores.masked_fill(&on_device(hidden.in_seeing_rows())?, f64::NEG_INFINITY)?;
        masked.softmax(-1)?.masked_fill(&on_device(hidden.hidden)?, 0.0)
    }
}

/// The `[Tq, Tk]` pattern of hidden (query, key) pairs of a mask, row-major.
struct HiddenKeys {
    tq: usize,
    tk: usize,
    hidden: Vec<bool>,
}

impl HiddenKeys {
    /// `None` for a mask that hides nothing.
    fn new(mask: AttnMask, tq: usize, tk: usize) -> Option<Self> {
        mask.causal_diagonal(tq, tk)?;
        let hidden = (0..tq).flat_map(|i| (0..tk).map(move |j| !mask.is_visible(i, j, tq, tk))).collect();
        Some(HiddenKeys { tq, tk, hidden })
    }
    fn blind(&self, row: usize) -> bool {
        self.tk > 0 && self.hidden[row * self.tk..(row + 1) * self.tk].iter().all(|&h| h)
    }
    /// Whether some query sees no key at all.
    fn has_blind_rows(&self) -> bool {
        (0..self.tq).any(|i| self.blind(i))
    }
    /// The hidden pairs of the queries that see at least one key.
    fn in_seeing_rows(&self) -> Vec<bool> {
        (0..self.tq)
            .flat_map(|i| {
                let blind = self.blind(i);
                self.hidden[i * self.tk..(i + 1) * self.tk].iter().map(move |&h| h && !blind)
            })
            .collect()
    }
}

/// Q `[.., Tq, D]`, K `[.., Tk, D]` and V `[.., Tk, Dv]` (when given) with equal leading dims.
fn check_shapes(op: &'static str, q: &Tensor, k: &Tensor, v: Option<&Tensor>) -> Result<()> {
    q.same_dtype_device(op, k)?;
    if let Some(v) = v {
        q.same_dtype_device(op, v)?;
    }
    let r = q.rank();
    let qk_ok = r >= 2 && k.rank() == r && k.dims()[..r - 2] == q.dims()[..r - 2] && k.dims()[r - 1] == q.dims()[r - 1];
    // Only looked at once q and k are known to be of rank r >= 2.
    let v_ok = || v.is_none_or(|v| v.rank() == r && v.dims()[..r - 2] == q.dims()[..r - 2] && v.dims()[r - 2] == k.dims()[r - 2]);
    if qk_ok && v_ok() {
        return Ok(());
    }
    let message = match v {
        Some(v) => format!(
            "q {}, k {}, v {}: expected q [.., Tq, D], k [.., Tk, D], v [.., Tk, Dv] of one rank >= 2 with equal leading dims",
            q.shape(),
            k.shape(),
            v.shape()
        ),
        None => format!(
            "q {}, k {}: expected q [.., Tq, D] and k [.., Tk, D] of one rank >= 2 with equal leading dims",
            q.shape(),
            k.shape()
        ),
    };
    Err(Error::shape(op, message))
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
fn attn_dims(q: &Tensor, k: &Tensor, v: &Tensor, mask: AttnMask, scale: f64) -> AttnDims {
    let r = q.rank();
    let (tq, tk) = (q.dims()[r - 2], k.dims()[r - 2]);
    AttnDims {
        bh: q.dims()[..r - 2].iter().product(),
        tq,
        tk,
        d: q.dims()[r - 1],
        dv: v.dims()[r - 1],
        causal_diagonal: mask.causal_diagonal(tq, tk),
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
/// The fused kernels' work, dense whatever the mask: forward `QKᵀ` and `PV`,
/// backward the recomputed `QKᵀ`, then `dV`, `dP`, `dQ` and `dK`.
pub(super) fn fused_cost(q: &Tensor, d: &AttnDims, backward: bool) -> Cost {
    let (qk, pv) = ([2, d.bh, d.tq, d.tk, d.d], [2, d.bh, d.tq, d.tk, d.dv]);
    let (q_k, v_out) = (d.bh * (d.tq + d.tk) * d.d, d.bh * (d.tk + d.tq) * d.dv);
    let lse = d.bh * d.tq;
    let products = if backward { [(qk, 3), (pv, 2)] } else { [(qk, 1), (pv, 1)] };
    let flops = products
        .iter()
        .map(|(f, n)| Cost::flops_product(f).flops.saturating_mul(*n))
        .fold(0, u64::saturating_add);
    // Forward: q, k, v read, out and the logsumexp written; backward: those
    // and dO read, dq, dk, dv written.
    let moved = if backward { 2 * (q_k + v_out) + lse } else { q_k + v_out + lse };
    Cost { flops, bytes: 0 }.moving(q.dtype(), moved)
}

/// Where the rows of a `[.., T, D]` operand lie, for kernels that take
/// strided rows: rank 2, 3 (`[BH, T, D]`) or 4 (`[B, H, T, D]`, any order of
/// strides, as a head split's permuted view has them) with unit-stride rows;
/// `None` otherwise (the op then copies).
fn row_layout(t: &Tensor) -> Option<RowLayout> {
    let (dims, strides, offset) = (t.dims(), t.layout().strides(), t.layout().offset());
    let r = dims.len();
    if r < 2 || (strides[r - 1] != 1 && dims[r - 1] > 1) {
        return None;
    }
    let row_stride = strides[r - 2];
    Some(match r {
        2 => RowLayout {
            offset,
            heads: 1,
            batch_stride: 0,
            head_stride: 0,
            row_stride,
        },
        3 => RowLayout {
            offset,
            heads: 1,
            batch_stride: strides[0],
            head_stride: 0,
            row_stride,
        },
        4 => RowLayout {
            offset,
            heads: dims[1],
            batch_stride: strides[0],
            head_stride: strides[1],
            row_stride,
        },
        _ => return None,
    })
}

/// The row layouts of q, k and v when the backend's kernels take strided
/// rows and every operand has one.
fn strided_rows(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<[RowLayout; 3]>> {
    let takes = crate::dispatch!("scaled_dot_product_attention", [qs = &*q.storage()], |_wrap| qs.takes_strided_rows());
    Ok(match (takes, row_layout(q), row_layout(k), row_layout(v)) {
        (true, Some(q), Some(k), Some(v)) => Some([q, k, v]),
        _ => None,
    })
}

fn fused_attention(q: &Tensor, k: &Tensor, v: &Tensor, dims: AttnDims, kernel: FusedKernel) -> Result<Tensor> {
    const OP: &str = "scaled_dot_product_attention";
    let _op = profile::op(OP, || fused_cost(q, &dims, false))?;
    if let Some([qr, kr, vr]) = strided_rows(q, k, v)? {
        // The kernels read the views' rows in place: no copy.
        let out_rows = (RowLayout::contiguous(0, dims.tq, dims.dv), dims.bh * dims.tq * dims.dv);
        let fwd = crate::dispatch!(OP, [qs = &*q.storage(), ks = &*k.storage(), vs = &*v.storage()], |wrap| {
            let f = AttentionKernels::attention_forward_rows(kernel, (qs, qr), (ks, kr), (vs, vr), &dims, out_rows)?;
            AttentionForward {
                out: wrap(f.out),
                logsumexp: wrap(f.logsumexp),
            }
        });
        let lse = Tensor::from_storage(fwd.logsumexp, Layout::contiguous([dims.bh, dims.tq]));
        return Ok(Tensor::from_op(
            fwd.out,
            Layout::contiguous(with_last(q, dims.dv)),
            vec![q.clone(), k.clone(), v.clone()],
            FusedAttentionBackward { lse, dims, kernel },
        ));
    }
    // These kernels read [BH, T, D] runs: strided views are copied first
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

impl FusedAttentionBackward {
    /// The backward on kernels that read q, k and v's rows in place (`rows`).
    fn backward_rows(&self, [qr, kr, vr]: [RowLayout; 3], (q, k, v): (&Tensor, &Tensor, &Tensor), out: &Tensor, d_out: &Tensor) -> Result<Vec<Option<Tensor>>> {
        const OP: &str = "scaled_dot_product_attention backward";
        let dims = &self.dims;
        // Runs under the backward pass's no-grad guard: a strided output
        // gradient is copied plainly (usually it is contiguous already).
        let gc = d_out.contiguous()?;
        let rows = |x: &Tensor| -> Result<RowLayout> { Ok(RowLayout::contiguous(start(OP, x)?, dims.tq, dims.dv)) };
        let (or, gr, lo) = (rows(out)?, rows(&gc)?, start(OP, &self.lse)?);
        let grads = crate::dispatch!(
            OP,
            [
                qs = &*q.storage(),
                ks = &*k.storage(),
                vs = &*v.storage(),
                os = &*out.storage(),
                ls = &*self.lse.storage(),
                gs = &*gc.storage()
            ],
            |wrap| {
                let separate = GradRows::Separate;
                match AttentionKernels::attention_backward_rows(self.kernel, (qs, qr), (ks, kr), (vs, vr), (os, or), (ls, lo), (gs, gr), dims, separate)? {
                    AttentionGradsRows::Separate(g) => AttentionGrads {
                        dq: wrap(g.dq),
                        dk: wrap(g.dk),
                        dv: wrap(g.dv),
                    },
                    AttentionGradsRows::Packed(_) => return Err(Error::device(OP, "the backend returned packed gradients for separate operands".to_string())),
                }
            }
        );
        let wrap = |s, like: &Tensor| Tensor::from_storage(s, Layout::contiguous(like.shape().clone()));
        Ok(vec![Some(wrap(grads.dq, q)), Some(wrap(grads.dk, k)), Some(wrap(grads.dv, v))])
    }
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
        let _op = profile::op("scaled_dot_product_attention", || fused_cost(q, &self.dims, true))?;
        if let Some(rows) = strided_rows(q, k, v)? {
            return self.backward_rows(rows, (q, k, v), out, d_out);
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
