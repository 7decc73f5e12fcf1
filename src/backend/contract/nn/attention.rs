//! Fused attention's contract: [`AttentionKernels`], the sizes of one call
//! ([`AttnDims`]), what the fused kernels return, and the operand check.
//!
//! Attention always has a composite form (matmul, masked softmax, matmul),
//! which `ops/nn/attention.rs` runs with the other families' kernels. A
//! backend may also have fused kernels (flash attention); it says for which
//! calls through [`AttentionKernels::fused_attention`], and the op runs them
//! instead. The fused forward keeps only the per-row logsumexp (`[BH, Tq]`),
//! and the backward recomputes the probabilities from Q, K and it.

use crate::types::DType;
use crate::{Error, Result};
use std::cell::Cell;
use std::sync::OnceLock;

/// How `scaled_dot_product_attention` runs on a backend with fused kernels
/// (the CPU and CUDA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionImpl {
    /// The fused flash kernels where the backend has them for the call (CPU:
    /// f32 and f64, no empty dim; CUDA: f32, D, Dv <= 128, no empty dim), else
    /// the composite graph. The default.
    Flash,
    /// Always the composite graph, keeping P for the backward.
    Composite,
    /// The naive reference kernels (one query row at a time; f32 and f64):
    /// slow, for checking the flash kernels.
    Reference,
}

thread_local! {
    static OVERRIDE: Cell<Option<AttentionImpl>> = const { Cell::new(None) };
}

/// Run `f` with attention on this thread using `imp` (then restore the
/// previous choice). A forward run under it also runs its backward with the
/// same kernels, wherever the backward is called.
///
/// ```
/// use tamer::backend::contract::nn::attention::{with_attention_impl, AttentionImpl};
/// # let q = tamer::Tensor::zeros([1, 4, 8], tamer::DType::F32).unwrap();
/// use tamer::{AttnMask, CausalAlign};
/// let causal = AttnMask::Causal(CausalAlign::TopLeft);
/// let o = with_attention_impl(AttentionImpl::Composite, || q.scaled_dot_product_attention(&q, &q, causal, None));
/// ```
pub fn with_attention_impl<R>(imp: AttentionImpl, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<AttentionImpl>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(imp))));
    f()
}

/// `TAMER_ATTENTION`, parsed once: `None` when unset or empty.
fn env_choice() -> std::result::Result<Option<AttentionImpl>, String> {
    static ENV: OnceLock<std::result::Result<Option<AttentionImpl>, String>> = OnceLock::new();
    ENV.get_or_init(|| match std::env::var("TAMER_ATTENTION") {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "flash" | "fused" => Ok(Some(AttentionImpl::Flash)),
            "composite" => Ok(Some(AttentionImpl::Composite)),
            "reference" => Ok(Some(AttentionImpl::Reference)),
            _ => Err(v),
        },
    })
    .clone()
}

/// The implementation in force on this thread.
pub fn attention_impl() -> Result<AttentionImpl> {
    if let Some(imp) = OVERRIDE.with(|o| o.get()) {
        return Ok(imp);
    }
    match env_choice() {
        Ok(choice) => Ok(choice.unwrap_or(AttentionImpl::Flash)),
        Err(v) => Err(Error::value(
            "scaled_dot_product_attention",
            format!("TAMER_ATTENTION={v:?}: expected composite, flash or reference"),
        )),
    }
}

/// Sizes of one attention call, batch and heads flattened into `bh`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnDims {
    pub bh: usize,
    pub tq: usize,
    pub tk: usize,
    pub d: usize,
    pub dv: usize,
    /// The causal mask as `torch.tril`'s `diagonal`: query `i` sees key `j`
    /// iff `j ≤ i + diagonal` (0 for a top-left aligned mask, `Tk − Tq` for
    /// a bottom-right one); `None`: every key. A query that sees no key
    /// (possible when the diagonal is negative) gets a zero output row.
    pub causal_diagonal: Option<i64>,
    pub scale: f64,
}

/// Where the rows of one attention operand lie in its storage: row `t` of
/// head `g` (batch and heads flattened, `g = b·heads + h`) starts at element
/// `offset + b·batch_stride + h·head_stride + t·row_stride`, and its `D`
/// elements follow contiguously. A contiguous `[BH, T, D]` run is one head
/// per batch entry (`heads = 1`); the heads of a `[B, T, H, D]` tensor (a
/// `[B, T, C]` activation cut into heads) are `heads = H`,
/// `batch_stride = T·C`, `head_stride = D`, `row_stride = C`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowLayout {
    pub offset: usize,
    /// Heads per batch entry: `g / heads` is the batch index, `g % heads` the head.
    pub heads: usize,
    pub batch_stride: usize,
    pub head_stride: usize,
    pub row_stride: usize,
}

impl RowLayout {
    /// Contiguous `[BH, rows, width]` from `offset`.
    pub fn contiguous(offset: usize, rows: usize, width: usize) -> RowLayout {
        RowLayout {
            offset,
            heads: 1,
            batch_stride: rows * width,
            head_stride: 0,
            row_stride: width,
        }
    }

    /// The element where row `t` of head `g` starts (in range once [`RowLayout::end`] was).
    #[inline]
    pub fn row(&self, g: usize, t: usize) -> usize {
        self.offset + (g / self.heads) * self.batch_stride + (g % self.heads) * self.head_stride + t * self.row_stride
    }

    /// Whether no two of the rows (`bh` heads of `rows` rows of `width`) share
    /// an element, so that they can be written in parallel: heads inside
    /// rows (`[B, T, H, D]`) or rows inside heads (`[B, H, T, D]`), each level
    /// at least as wide as the one below.
    pub fn rows_disjoint(&self, bh: usize, rows: usize, width: usize) -> bool {
        let batches_apart = |inner: usize| bh <= self.heads || self.batch_stride >= inner;
        if self.heads <= 1 {
            return (rows <= 1 || self.row_stride >= width) && batches_apart(rows.saturating_mul(self.row_stride).max(width));
        }
        let heads_in_rows = self.head_stride >= width && (rows <= 1 || self.row_stride >= self.heads.saturating_mul(self.head_stride));
        let rows_in_heads = (rows <= 1 || self.row_stride >= width) && self.head_stride >= rows.saturating_mul(self.row_stride).max(width);
        if heads_in_rows {
            batches_apart(rows.saturating_mul(self.row_stride).max(self.heads.saturating_mul(self.head_stride)))
        } else {
            rows_in_heads && batches_apart(self.heads.saturating_mul(self.head_stride))
        }
    }

    /// One past the last element of `bh` heads of `rows` rows of `width`
    /// elements (`offset` when there are none), or `None` when `heads` is 0
    /// or does not divide `bh`, or the sum overflows.
    pub fn end(&self, bh: usize, rows: usize, width: usize) -> Option<usize> {
        if self.heads == 0 || !bh.is_multiple_of(self.heads) {
            return None;
        }
        if bh == 0 || rows == 0 || width == 0 {
            return Some(self.offset);
        }
        // Strides are unsigned, so the last row of the last head ends last.
        let batches = bh / self.heads;
        (batches - 1)
            .checked_mul(self.batch_stride)?
            .checked_add((self.heads - 1).checked_mul(self.head_stride)?)?
            .checked_add((rows - 1).checked_mul(self.row_stride)?)?
            .checked_add(self.offset)?
            .checked_add(width)
    }
}

/// Which fused kernels a call runs with (the composite graph is not one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedKernel {
    /// The tiled flash-attention kernels.
    Flash,
    /// Naive reference kernels (one thread per row), for checking the flash ones.
    Reference,
}

/// A contiguous operand: its storage and the element where it starts.
pub type Operand<'a, S> = (&'a S, usize);

/// What the fused forward returns: `O` `[BH, Tq, Dv]` and the per-row
/// logsumexp `L` `[BH, Tq]`, both contiguous, in q's dtype.
pub struct AttentionForward<S> {
    pub out: S,
    pub logsumexp: S,
}

/// What the fused backward returns: `dQ`, `dK`, `dV`, contiguous.
pub struct AttentionGrads<S> {
    pub dq: S,
    pub dk: S,
    pub dv: S,
}

/// An operand given by rows: its storage and where its rows lie.
pub type RowsOperand<'a, S> = (&'a S, RowLayout);

/// Where the strided-rows backward writes its gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradRows {
    /// Three fresh contiguous buffers, `dQ [BH, Tq, D]`, `dK`, `dV` ([`AttentionGrads`]).
    Separate,
    /// One fresh buffer of `len` elements holding dQ, dK and dV, rows where
    /// `dq`, `dk` and `dv` put them (for q, k, v cut from one packed qkv
    /// tensor: the gradient of that tensor). Every element not covered by a
    /// row is zero; rows must not share elements.
    Packed { len: usize, dq: RowLayout, dk: RowLayout, dv: RowLayout },
}

/// What the strided-rows backward returns.
pub enum AttentionGradsRows<S> {
    Separate(AttentionGrads<S>),
    Packed(S),
}

/// The fused attention kernels a backend may provide. Operands of
/// `attention_forward`/`attention_backward` are contiguous `[BH, T, D]` runs
/// (the op copies strided views first); a backend whose kernels read and
/// write strided rows ([`AttentionKernels::takes_strided_rows`]) also has
/// the `_rows` forms, which take a [`RowLayout`] per operand.
pub trait AttentionKernels: Sized {
    /// Whether this backend's fused kernels take operands as strided rows
    /// (the `_rows` methods). Without them the op makes contiguous copies.
    fn takes_strided_rows(&self) -> bool {
        false
    }
    /// The fused forward over strided rows, writing `O` where `out` says
    /// (rows of `dims.dv` elements in a fresh buffer of `out_len` elements,
    /// zeros outside the rows) and the logsumexp `[BH, Tq]` contiguous.
    fn attention_forward_rows(
        kernel: FusedKernel,
        q: RowsOperand<'_, Self>,
        k: RowsOperand<'_, Self>,
        v: RowsOperand<'_, Self>,
        dims: &AttnDims,
        out: (RowLayout, usize),
    ) -> Result<AttentionForward<Self>> {
        let _ = (kernel, q, k, v, dims, out);
        Err(Error::device(
            "scaled_dot_product_attention",
            "this backend's attention kernels take no strided rows".to_string(),
        ))
    }
    /// The fused backward over strided rows (`lse` contiguous `[BH, Tq]`).
    #[allow(clippy::too_many_arguments)]
    fn attention_backward_rows(
        kernel: FusedKernel,
        q: RowsOperand<'_, Self>,
        k: RowsOperand<'_, Self>,
        v: RowsOperand<'_, Self>,
        o: RowsOperand<'_, Self>,
        lse: Operand<'_, Self>,
        dout: RowsOperand<'_, Self>,
        dims: &AttnDims,
        grads: GradRows,
    ) -> Result<AttentionGradsRows<Self>> {
        let _ = (kernel, q, k, v, o, lse, dout, dims, grads);
        Err(Error::device(
            "scaled_dot_product_attention backward",
            "this backend's attention kernels take no strided rows".to_string(),
        ))
    }
    /// The fused kernels this backend runs for a call of `dims` whose query
    /// is `self`, or `None`: the op then runs the composite graph.
    fn fused_attention(&self, dims: &AttnDims) -> Result<Option<FusedKernel>>;
    /// The fused forward.
    fn attention_forward(
        kernel: FusedKernel,
        q: Operand<'_, Self>,
        k: Operand<'_, Self>,
        v: Operand<'_, Self>,
        dims: &AttnDims,
    ) -> Result<AttentionForward<Self>>;
    /// The fused backward from the forward's output `o` and logsumexp `lse`
    /// and the output gradient `dout` (`[BH, Tq, Dv]`).
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        kernel: FusedKernel,
        q: Operand<'_, Self>,
        k: Operand<'_, Self>,
        v: Operand<'_, Self>,
        o: Operand<'_, Self>,
        lse: Operand<'_, Self>,
        dout: Operand<'_, Self>,
        dims: &AttnDims,
    ) -> Result<AttentionGrads<Self>>;
}

/// An operand of the fused kernels: dtype `dtype`, and `n` elements from its
/// `start` within its storage of `len`; `what` names it in the error.
pub fn check_attention_operand(op: &'static str, what: &str, (got, len, start): (DType, usize, usize), dtype: DType, n: usize) -> Result<()> {
    if got != dtype {
        return Err(Error::dtype(op, format!("{what} is {got} but q is {dtype}")));
    }
    if start.checked_add(n).is_none_or(|end| end > len) {
        return Err(Error::shape(
            op,
            format!("{what} needs {n} elements from offset {start} but its storage holds {len}"),
        ));
    }
    Ok(())
}
