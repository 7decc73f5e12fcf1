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

/// The fused attention kernels a backend may provide. Operands are
/// contiguous `[BH, T, D]` runs (the op copies strided views first).
pub trait AttentionKernels: Sized {
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
