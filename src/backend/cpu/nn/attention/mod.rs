//! Fused attention on the CPU: the flash kernels ([`flash`]) and the plain
//! reference kernels they are tested against ([`reference`](mod@reference)), behind the
//! `AttentionKernels` contract (`backend/contract/nn/attention.rs`).
//!
//! `fused_attention` takes every f32 and f64 call with no empty dimension
//! (the composite graph defines those edge cases): the flash kernels by
//! default, the reference kernels under `TAMER_ATTENTION=reference`, none
//! under `TAMER_ATTENTION=composite` (or [`with_attention_impl`] per thread).
//! The f32 flash kernels run their tile products on the CPU GEMM and their
//! exponentials on the SIMD exp of the ISA `TAMER_SIMD` selects; the f64
//! ones (what the finite-difference gradient checks go through) run the same
//! tiles with plain loops.
//!
//! An operand row `(g, t)`, `g` the flattened (batch, head) index, starts
//! where its [`RowLayout`] says; its `D` elements are contiguous.

pub mod flash;
pub mod reference;
#[cfg(test)]
mod tests;

pub use crate::backend::contract::nn::attention::{with_attention_impl, AttentionImpl, RowLayout};

use crate::backend::contract::nn::attention::{
    attention_impl, check_attention_operand, AttentionForward, AttentionGrads, AttentionGradsRows, AttentionKernels, AttnDims, FusedKernel, GradRows, Operand,
    RowsOperand,
};
use crate::backend::cpu::simd::{self, Isa, Simd};
use crate::backend::cpu::{alloc, CpuElem, CpuStorage};
use crate::types::{DType, Float};
use crate::{Error, Result};
use flash::FlashFloat;

const OP: &str = "scaled_dot_product_attention";
const OP_BACKWARD: &str = "scaled_dot_product_attention backward";

/// The fused kernel for a call of `dtype` with `dims`, or `None` for the
/// composite graph: f32 and f64 calls with no empty dimension.
pub fn select(dtype: DType, dims: &AttnDims) -> Result<Option<FusedKernel>> {
    if !matches!(dtype, DType::F32 | DType::F64) || dims.bh == 0 || dims.tq == 0 || dims.tk == 0 || dims.d == 0 || dims.dv == 0 {
        return Ok(None);
    }
    Ok(match attention_impl()? {
        AttentionImpl::Composite => None,
        AttentionImpl::Flash => Some(FusedKernel::Flash),
        AttentionImpl::Reference => Some(FusedKernel::Reference),
    })
}

/// Where each operand of one call lies in its storage.
#[derive(Clone, Copy, Debug)]
pub struct Layouts {
    pub q: RowLayout,
    pub k: RowLayout,
    pub v: RowLayout,
    /// The output O (forward) or the output gradient dO (backward), and in
    /// the backward the forward's output O.
    pub o: RowLayout,
    pub dout: RowLayout,
    /// Where the backward writes dQ, dK and dV.
    pub dq: RowLayout,
    pub dk: RowLayout,
    pub dv: RowLayout,
}

impl Layouts {
    /// Every operand contiguous `[BH, T, D]` from the given offsets, the
    /// gradients contiguous from 0 (fresh buffers).
    pub fn contiguous(dims: &AttnDims, (q, k, v, o, dout): (usize, usize, usize, usize, usize)) -> Layouts {
        Layouts {
            q: RowLayout::contiguous(q, dims.tq, dims.d),
            k: RowLayout::contiguous(k, dims.tk, dims.d),
            v: RowLayout::contiguous(v, dims.tk, dims.dv),
            o: RowLayout::contiguous(o, dims.tq, dims.dv),
            dout: RowLayout::contiguous(dout, dims.tq, dims.dv),
            dq: RowLayout::contiguous(0, dims.tq, dims.d),
            dk: RowLayout::contiguous(0, dims.tk, dims.d),
            dv: RowLayout::contiguous(0, dims.tk, dims.dv),
        }
    }
}

/// `s` from element `at` (empty past its end: the row checks then fail).
fn cut<T>(s: &[T], at: usize) -> &[T] {
    s.get(at..).unwrap_or(&[])
}

/// An f32 or f64 operand's elements, or an error naming it.
fn typed<'a, T: CpuElem>(op: &'static str, what: &str, s: &'a CpuStorage) -> Result<&'a [T]> {
    T::slice(s).ok_or_else(|| Error::dtype(op, format!("{what} is {} but q is {}", s.dtype(), T::DTYPE)))
}

/// Check that every row `layout` addresses for `bh` heads of `rows` rows of
/// `width` lies inside `len` elements.
fn check_rows(op: &'static str, what: &str, len: usize, layout: &RowLayout, (bh, rows, width): (usize, usize, usize)) -> Result<()> {
    let end = layout
        .end(bh, rows, width)
        .ok_or_else(|| Error::shape(op, format!("{what}: its row layout {layout:?} does not fit {bh} heads of {rows} rows")))?;
    if end > len {
        return Err(Error::shape(
            op,
            format!("{what} needs {end} elements for {bh} heads of {rows} rows of {width} but its storage holds {len}"),
        ));
    }
    Ok(())
}

/// The kernels' ISA: the selected one for f32 (an error when `TAMER_SIMD`
/// asks for one this CPU lacks), scalar for f64 (it has no SIMD path).
fn simd_for(op: &'static str, dtype: DType) -> Result<Simd> {
    match dtype {
        DType::F32 => simd::selected(op),
        _ => Simd::for_isa(Isa::Scalar).ok_or_else(|| Error::device(op, "no scalar kernels".to_string())),
    }
}

/// The forward with `kernel`: `(O [BH, Tq, Dv], L [BH, Tq])`, contiguous.
pub fn forward(
    kernel: FusedKernel,
    q: Operand<'_, CpuStorage>,
    k: Operand<'_, CpuStorage>,
    v: Operand<'_, CpuStorage>,
    dims: &AttnDims,
) -> Result<(CpuStorage, CpuStorage)> {
    let layouts = Layouts::contiguous(dims, (q.1, k.1, v.1, 0, 0));
    crate::cpu_float_dispatch!(OP, q.0, |qs: T| {
        let simd = simd_for(OP, T::DTYPE)?;
        let (ks, vs) = (typed::<T>(OP, "k", k.0)?, typed::<T>(OP, "v", v.0)?);
        // Every row of O is zeroed by the task that computes it, and every
        // value of lse written: nothing to zero here.
        let mut out = alloc::overwritable(dims.bh * dims.tq * dims.dv);
        let mut lse = alloc::overwritable(dims.bh * dims.tq);
        forward_into(kernel, simd, (qs, ks, vs), &layouts, dims, &mut out, &mut lse)?;
        Ok((T::wrap(out), T::wrap(lse)))
    })
}

/// A kernel output of `len` elements whose rows, `covered` elements in all,
/// the kernels zero or write themselves (each task its own rows, in its
/// cache): when the rows cover the whole buffer (rows never overlap and lie
/// inside it, which the kernels check), nothing is zeroed here; otherwise
/// the gaps between rows must read 0.
///
/// v1 zeroed every output first (`alloc::filled`) and the tasks zeroed their
/// rows again: 7.8% of vit-cifar's fused attention step (perf, 1 thread).
fn output_buffer<T: Float>(len: usize, covered: usize) -> Vec<T> {
    if covered == len {
        alloc::overwritable(len)
    } else {
        alloc::filled(len, T::ZERO)
    }
}

/// The forward into `out` (rows as `layouts.o` says) and `lse` (`[BH, Tq]`),
/// after checking that every row lies inside its slice.
pub fn forward_into<T: FlashFloat>(
    kernel: FusedKernel,
    simd: Simd,
    (q, k, v): (&[T], &[T], &[T]),
    layouts: &Layouts,
    dims: &AttnDims,
    out: &mut [T],
    lse: &mut [T],
) -> Result<()> {
    check_rows(OP, "q", q.len(), &layouts.q, (dims.bh, dims.tq, dims.d))?;
    check_rows(OP, "k", k.len(), &layouts.k, (dims.bh, dims.tk, dims.d))?;
    check_rows(OP, "v", v.len(), &layouts.v, (dims.bh, dims.tk, dims.dv))?;
    check_rows(OP, "the output", out.len(), &layouts.o, (dims.bh, dims.tq, dims.dv))?;
    check_attention_operand(OP, "the logsumexp", (T::DTYPE, lse.len(), 0), T::DTYPE, dims.bh * dims.tq)?;
    if !layouts.o.rows_disjoint(dims.bh, dims.tq, dims.dv) {
        return Err(Error::shape(OP, format!("the output's rows would overlap: {:?} for {dims:?}", layouts.o)));
    }
    match kernel {
        FusedKernel::Flash => flash::forward(simd, (q, k, v), layouts, dims, out, lse),
        FusedKernel::Reference => reference::forward((q, k, v), layouts, dims, out, lse),
    }
    Ok(())
}

/// The inputs of the backward, as slices.
pub struct BackwardIn<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub o: &'a [T],
    pub lse: &'a [T],
    pub dout: &'a [T],
}

/// Where the backward writes its gradients, rows as the layouts of dQ, dK
/// and dV say: three buffers, or one holding all three (the gradient of a packed
/// qkv tensor, whose q, k and v rows interleave).
pub enum BackwardOut<'a, T> {
    Separate { dq: &'a mut [T], dk: &'a mut [T], dv: &'a mut [T] },
    Packed(&'a mut [T]),
}

/// One of the three gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grad {
    Q,
    K,
    V,
}

impl<T> BackwardOut<'_, T> {
    /// The buffer gradient `which` is written into.
    pub fn buffer(&mut self, which: Grad) -> &mut [T] {
        match (self, which) {
            (BackwardOut::Separate { dq, .. }, Grad::Q) => dq,
            (BackwardOut::Separate { dk, .. }, Grad::K) => dk,
            (BackwardOut::Separate { dv, .. }, Grad::V) => dv,
            (BackwardOut::Packed(all), _) => all,
        }
    }

    /// `(start, len)` of the three buffers (the same one thrice when packed),
    /// for kernels whose tasks write disjoint rows of them in parallel.
    fn raw(&mut self) -> [(*mut T, usize); 3] {
        [Grad::Q, Grad::K, Grad::V].map(|g| {
            let b = self.buffer(g);
            (b.as_mut_ptr(), b.len())
        })
    }
}

/// Whether the rows of dQ, dK and dV, written into one buffer, never share an
/// element: the three layouts have the same strides, each one's rows are
/// disjoint with heads inside rows (`[B, T, H, D]`), and their offsets sit
/// at least a row of heads apart within one row stride.
fn packed_rows_disjoint(l: &Layouts, dims: &AttnDims) -> bool {
    let (q, k, v) = (&l.dq, &l.dk, &l.dv);
    let same = |a: &RowLayout| (a.heads, a.batch_stride, a.head_stride, a.row_stride) == (q.heads, q.batch_stride, q.head_stride, q.row_stride);
    let width = dims.d.max(dims.dv);
    let span = (q.heads - 1).saturating_mul(q.head_stride).saturating_add(width);
    let mut offsets = [q.offset, k.offset, v.offset];
    offsets.sort_unstable();
    same(k)
        && same(v)
        && dims.tq == dims.tk
        && q.rows_disjoint(dims.bh, dims.tq, width)
        && q.head_stride >= width
        && offsets[0].saturating_add(span) <= offsets[1]
        && offsets[1].saturating_add(span) <= offsets[2]
        && offsets[2].saturating_add(span) <= offsets[0].saturating_add(q.row_stride)
        && (dims.bh <= q.heads || q.batch_stride >= dims.tq.saturating_mul(q.row_stride))
}

/// The backward into `grads` (rows where `layouts.dq`, `.dk`, `.dv` say),
/// after checking that every row lies inside its slice and that no two rows
/// written share an element.
pub fn backward_into<T: FlashFloat>(
    kernel: FusedKernel,
    simd: Simd,
    x: &BackwardIn<'_, T>,
    layouts: &Layouts,
    dims: &AttnDims,
    grads: BackwardOut<'_, T>,
) -> Result<()> {
    let (bh, tq, tk, d, dv) = (dims.bh, dims.tq, dims.tk, dims.d, dims.dv);
    check_rows(OP_BACKWARD, "q", x.q.len(), &layouts.q, (bh, tq, d))?;
    check_rows(OP_BACKWARD, "k", x.k.len(), &layouts.k, (bh, tk, d))?;
    check_rows(OP_BACKWARD, "v", x.v.len(), &layouts.v, (bh, tk, dv))?;
    check_rows(OP_BACKWARD, "the output", x.o.len(), &layouts.o, (bh, tq, dv))?;
    check_rows(OP_BACKWARD, "the output gradient", x.dout.len(), &layouts.dout, (bh, tq, dv))?;
    check_attention_operand(OP_BACKWARD, "the logsumexp", (T::DTYPE, x.lse.len(), 0), T::DTYPE, bh * tq)?;
    let mut grads = grads;
    check_rows(OP_BACKWARD, "dq", grads.buffer(Grad::Q).len(), &layouts.dq, (bh, tq, d))?;
    check_rows(OP_BACKWARD, "dk", grads.buffer(Grad::K).len(), &layouts.dk, (bh, tk, d))?;
    check_rows(OP_BACKWARD, "dv", grads.buffer(Grad::V).len(), &layouts.dv, (bh, tk, dv))?;
    let disjoint = match grads {
        BackwardOut::Separate { .. } => layouts.dq.rows_disjoint(bh, tq, d) && layouts.dk.rows_disjoint(bh, tk, d) && layouts.dv.rows_disjoint(bh, tk, dv),
        BackwardOut::Packed(_) => packed_rows_disjoint(layouts, dims),
    };
    if !disjoint {
        return Err(Error::shape(
            OP_BACKWARD,
            format!("the gradients' rows would overlap: {layouts:?} for {dims:?}"),
        ));
    }
    match kernel {
        FusedKernel::Flash => flash::backward(simd, x, layouts, dims, grads),
        FusedKernel::Reference => reference::backward(x, layouts, dims, grads),
    }
    Ok(())
}

impl AttentionKernels for CpuStorage {
    fn fused_attention(&self, dims: &AttnDims) -> Result<Option<FusedKernel>> {
        select(self.dtype(), dims)
    }

    fn takes_strided_rows(&self) -> bool {
        true
    }

    fn attention_forward_rows(
        kernel: FusedKernel,
        q: RowsOperand<'_, Self>,
        k: RowsOperand<'_, Self>,
        v: RowsOperand<'_, Self>,
        dims: &AttnDims,
        (out_layout, out_len): (RowLayout, usize),
    ) -> Result<AttentionForward<Self>> {
        let layouts = Layouts {
            q: q.1,
            k: k.1,
            v: v.1,
            o: out_layout,
            ..Layouts::contiguous(dims, (0, 0, 0, 0, 0))
        };
        crate::cpu_float_dispatch!(OP, q.0, |qs: T| {
            let simd = simd_for(OP, T::DTYPE)?;
            let (ks, vs) = (typed::<T>(OP, "k", k.0)?, typed::<T>(OP, "v", v.0)?);
            let mut out = output_buffer(out_len, dims.bh * dims.tq * dims.dv);
            let mut lse = alloc::overwritable(dims.bh * dims.tq);
            forward_into(kernel, simd, (qs, ks, vs), &layouts, dims, &mut out, &mut lse)?;
            Ok(AttentionForward {
                out: T::wrap(out),
                logsumexp: T::wrap(lse),
            })
        })
    }

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
        let contiguous = Layouts::contiguous(dims, (0, 0, 0, 0, 0));
        let layouts = Layouts {
            q: q.1,
            k: k.1,
            v: v.1,
            o: o.1,
            dout: dout.1,
            ..match grads {
                GradRows::Separate => contiguous,
                GradRows::Packed { dq, dk, dv, .. } => Layouts { dq, dk, dv, ..contiguous },
            }
        };
        crate::cpu_float_dispatch!(OP_BACKWARD, q.0, |qs: T| {
            let simd = simd_for(OP_BACKWARD, T::DTYPE)?;
            let x = BackwardIn {
                q: qs,
                k: typed::<T>(OP_BACKWARD, "k", k.0)?,
                v: typed::<T>(OP_BACKWARD, "v", v.0)?,
                o: typed::<T>(OP_BACKWARD, "the output", o.0)?,
                lse: cut(typed::<T>(OP_BACKWARD, "the logsumexp", lse.0)?, lse.1),
                dout: typed::<T>(OP_BACKWARD, "the output gradient", dout.0)?,
            };
            match grads {
                GradRows::Packed { len, .. } => {
                    let mut all = output_buffer(len, dims.bh * ((dims.tq + dims.tk) * dims.d + dims.tk * dims.dv));
                    backward_into(kernel, simd, &x, &layouts, dims, BackwardOut::Packed(&mut all))?;
                    Ok(AttentionGradsRows::Packed(T::wrap(all)))
                }
                GradRows::Separate => {
                    let (qn, kn, vn) = (dims.bh * dims.tq * dims.d, dims.bh * dims.tk * dims.d, dims.bh * dims.tk * dims.dv);
                    let (mut dq, mut dk, mut dv) = (alloc::overwritable(qn), alloc::overwritable(kn), alloc::overwritable(vn));
                    let out = BackwardOut::Separate {
                        dq: &mut dq,
                        dk: &mut dk,
                        dv: &mut dv,
                    };
                    backward_into(kernel, simd, &x, &layouts, dims, out)?;
                    Ok(AttentionGradsRows::Separate(AttentionGrads {
                        dq: T::wrap(dq),
                        dk: T::wrap(dk),
                        dv: T::wrap(dv),
                    }))
                }
            }
        })
    }

    fn attention_forward(
        kernel: FusedKernel,
        q: Operand<'_, Self>,
        k: Operand<'_, Self>,
        v: Operand<'_, Self>,
        dims: &AttnDims,
    ) -> Result<AttentionForward<Self>> {
        let (out, logsumexp) = forward(kernel, q, k, v, dims)?;
        Ok(AttentionForward { out, logsumexp })
    }

    fn attention_backward(
        kernel: FusedKernel,
        q: Operand<'_, Self>,
        k: Operand<'_, Self>,
        v: Operand<'_, Self>,
        o: Operand<'_, Self>,
        lse: Operand<'_, Self>,
        dout: Operand<'_, Self>,
        dims: &AttnDims,
    ) -> Result<AttentionGrads<Self>> {
        // Each operand is cut at its offset, so that one set of layouts
        // (offset 0) addresses both the inputs and the fresh gradients.
        let layouts = Layouts::contiguous(dims, (0, 0, 0, 0, 0));
        let from = |x: Operand<'_, Self>| x.1;
        crate::cpu_float_dispatch!(OP_BACKWARD, q.0, |qs: T| {
            let simd = simd_for(OP_BACKWARD, T::DTYPE)?;
            let x = BackwardIn {
                q: cut(qs, from(q)),
                k: cut(typed::<T>(OP_BACKWARD, "k", k.0)?, from(k)),
                v: cut(typed::<T>(OP_BACKWARD, "v", v.0)?, from(v)),
                o: cut(typed::<T>(OP_BACKWARD, "the output", o.0)?, from(o)),
                lse: cut(typed::<T>(OP_BACKWARD, "the logsumexp", lse.0)?, from(lse)),
                dout: cut(typed::<T>(OP_BACKWARD, "the output gradient", dout.0)?, from(dout)),
            };
            let (qn, kn, vn) = (dims.bh * dims.tq * dims.d, dims.bh * dims.tk * dims.d, dims.bh * dims.tk * dims.dv);
            let (mut dq, mut dk, mut dv) = (alloc::overwritable(qn), alloc::overwritable(kn), alloc::overwritable(vn));
            backward_into(
                kernel,
                simd,
                &x,
                &layouts,
                dims,
                BackwardOut::Separate {
                    dq: &mut dq,
                    dk: &mut dk,
                    dv: &mut dv,
                },
            )?;
            Ok(AttentionGrads {
                dq: T::wrap(dq),
                dk: T::wrap(dk),
                dv: T::wrap(dv),
            })
        })
    }
}
