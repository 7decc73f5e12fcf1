//! layer_norm on CUDA (cuda/layer_norm.cu): one warp or block per row for the
//! forward and for dx; column kernels (plus a second pass when the rows are
//! split) for dweight and dbias, deterministic, without atomics.

use crate::backend::contract::nn::layer_norm::{check_layer_norm, check_layer_norm_backward, LayerNormForward, LayerNormGrads, LayerNormKernels};
use crate::backend::cuda::reduce::{coalesce, column_config, column_splits, row_args, row_view, RowKernel};
use crate::backend::cuda::{elementwise_config, kernels, Arg, CudaStorage};
use crate::backend::{described, BackendStorage};
use crate::types::Layout;
use crate::Result;

const OP: &str = "layer_norm";

/// An optional `[C]` operand (checked by the contract's validator) as
/// `(pointer, stride)`; `(0, 0)` for none. A view that is not one strided run
/// (it cannot be, with shape [C], but the trait takes any layout of C
/// elements) is made contiguous first, into `keep`.
fn param(p: Option<(&CudaStorage, &Layout)>, x: &CudaStorage, keep: &mut Option<CudaStorage>) -> Result<(Arg, Arg)> {
    let Some((s, l)) = p else { return Ok((Arg::Ptr(0), Arg::I64(0))) };
    x.check_same_device(OP, s)?;
    let axes = coalesce(l.dims().iter().copied().zip(l.strides().iter().copied()));
    match axes.as_slice() {
        [] => Ok((Arg::Ptr(s.ptr_at(l.offset())), Arg::I64(0))),
        [(_, stride)] => Ok((Arg::Ptr(s.ptr_at(l.offset())), Arg::I64(*stride as i64))),
        _ => {
            let copy = keep.insert(s.copy_contiguous(l)?);
            Ok((Arg::Ptr(copy.ptr()), Arg::I64(1)))
        }
    }
}

impl LayerNormKernels for CudaStorage {
    fn layer_norm(&self, layout: &Layout, weight: Option<(&Self, &Layout)>, bias: Option<(&Self, &Layout)>, eps: f64) -> Result<LayerNormForward<Self>> {
        let dtype = self.dtype();
        check_layer_norm((dtype, layout), described(weight), described(bias))?;
        let dev = self.cuda_device();
        let x = row_view(OP, layout)?;
        let c = x.len;
        // Rows of no elements have no statistics (the CPU returns none).
        let rows = if c == 0 { 0 } else { x.rows };
        let (mut keep_w, mut keep_b) = (None, None);
        let (w, wstep) = param(weight, self, &mut keep_w)?;
        let (b, bstep) = param(bias, self, &mut keep_b)?;
        let y = Self::alloc(dev, dtype, rows * c)?;
        let mean = Self::alloc(dev, dtype, rows)?;
        let rstd = Self::alloc(dev, dtype, rows)?;
        if rows > 0 {
            let (version, cfg) = RowKernel::choose(rows, c);
            let [xp, starts, step] = row_args(self, &x);
            // layer_norm_fwd_<version>(x, starts, step, w, wstep, b, bstep, y, mean, rstd, rows, c, eps)
            dev.launch(
                &kernels::LAYER_NORM,
                &version.name("layer_norm_fwd", dtype),
                cfg,
                &[
                    xp,
                    starts,
                    step,
                    w,
                    wstep,
                    b,
                    bstep,
                    Arg::Ptr(y.ptr()),
                    Arg::Ptr(mean.ptr()),
                    Arg::Ptr(rstd.ptr()),
                    Arg::I64(rows as i64),
                    Arg::I64(c as i64),
                    Arg::F64(eps),
                ],
            )?;
        }
        Ok(LayerNormForward { y, mean, rstd })
    }

    fn layer_norm_backward(
        &self,
        x_layout: &Layout,
        weight: Option<(&Self, &Layout)>,
        mean: &Self,
        rstd: &Self,
        dy: &Self,
        dy_layout: &Layout,
        want_dweight: bool,
        want_dbias: bool,
    ) -> Result<LayerNormGrads<Self>> {
        check_layer_norm_backward(
            (self.dtype(), x_layout),
            described(weight),
            (mean.dtype(), mean.len()),
            (rstd.dtype(), rstd.len()),
            (dy.dtype(), dy_layout),
        )?;
        let dtype = self.dtype();
        for s in [mean, rstd, dy] {
            self.check_same_device(OP, s)?;
        }
        let dev = self.cuda_device();
        let (x, g) = (row_view(OP, x_layout)?, row_view(OP, dy_layout)?);
        let c = x.len;
        let rows = if c == 0 { 0 } else { x.rows };
        let mut keep_w = None;
        let (w, wstep) = param(weight, self, &mut keep_w)?;
        let dx = Self::alloc(dev, dtype, rows * c)?;
        if rows == 0 {
            let zeros = |want: bool| want.then(|| Self::zeros(dev, dtype, c)).transpose();
            return Ok(LayerNormGrads {
                dx,
                dweight: zeros(want_dweight)?,
                dbias: zeros(want_dbias)?,
            });
        }
        let [xp, xs, xstep] = row_args(self, &x);
        let [gp, gs, gstep] = row_args(dy, &g);
        let (m, r) = (Arg::Ptr(mean.ptr()), Arg::Ptr(rstd.ptr()));
        let (n_rows, n_c) = (Arg::I64(rows as i64), Arg::I64(c as i64));

        let (version, cfg) = RowKernel::choose(rows, c);
        // layer_norm_bwd_<version>(x, xstarts, xstep, dy, gstarts, gstep, w, wstep, mean, rstd, dx, rows, c)
        dev.launch(
            &kernels::LAYER_NORM,
            &version.name("layer_norm_bwd", dtype),
            cfg,
            &[xp, xs, xstep, gp, gs, gstep, w, wstep, m, r, Arg::Ptr(dx.ptr()), n_rows, n_c],
        )?;

        let alloc_if = |want: bool, len: usize| want.then(|| Self::alloc(dev, dtype, len)).transpose();
        let (dweight, dbias) = (alloc_if(want_dweight, c)?, alloc_if(want_dbias, c)?);
        if dweight.is_none() && dbias.is_none() {
            return Ok(LayerNormGrads { dx, dweight, dbias });
        }
        let ptr = |s: &Option<Self>| Arg::Ptr(s.as_ref().map_or(0, |s| s.ptr()));
        if version == RowKernel::Reference {
            // layer_norm_dparams_ref(x, xstarts, xstep, dy, gstarts, gstep, mean, rstd, dw, db, rows, c)
            let name = format!("layer_norm_dparams_ref_{}", dtype.name());
            dev.launch(
                &kernels::LAYER_NORM,
                &name,
                elementwise_config(c),
                &[xp, xs, xstep, gp, gs, gstep, m, r, ptr(&dweight), ptr(&dbias), n_rows, n_c],
            )?;
            return Ok(LayerNormGrads { dx, dweight, dbias });
        }
        let (splits, chunk) = column_splits(c, rows);
        // With one split the column kernel writes the results; with more, it
        // writes [splits, C] partials that a second pass adds up.
        let (pw, pb) = if splits > 1 {
            (alloc_if(want_dweight, splits * c)?, alloc_if(want_dbias, splits * c)?)
        } else {
            (None, None)
        };
        let (dst_w, dst_b) = if splits > 1 { (ptr(&pw), ptr(&pb)) } else { (ptr(&dweight), ptr(&dbias)) };
        // layer_norm_dparams(x, xstarts, xstep, dy, gstarts, gstep, mean, rstd, dw, db, rows, c, chunk); block (32, 8)
        dev.launch(
            &kernels::LAYER_NORM,
            &format!("layer_norm_dparams_{}", dtype.name()),
            column_config(c, splits),
            &[xp, xs, xstep, gp, gs, gstep, m, r, dst_w, dst_b, n_rows, n_c, Arg::I64(chunk as i64)],
        )?;
        for (partial, out) in [(&pw, &dweight), (&pb, &dbias)] {
            if let (Some(p), Some(o)) = (partial, out) {
                // layer_norm_dparams_sum(partial, out, c, splits)
                dev.launch(
                    &kernels::LAYER_NORM,
                    &format!("layer_norm_dparams_sum_{}", dtype.name()),
                    elementwise_config(c),
                    &[Arg::Ptr(p.ptr()), Arg::Ptr(o.ptr()), n_c, Arg::I64(splits as i64)],
                )?;
            }
        }
        Ok(LayerNormGrads { dx, dweight, dbias })
    }
}
