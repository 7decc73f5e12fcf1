//! cross_entropy on CUDA (cuda/cross_entropy.cu): one warp or block per row
//! of logits, reading any strides directly.
//!
//! Targets are validated on the host: both kernels copy them (one i64 per
//! row, small next to the logits) to the host and run the contract's
//! validators (`backend/contract/nn/cross_entropy.rs`) on them, as the CPU
//! does, so an out-of-range target is the same error, naming the target and
//! its row, on both devices, and the forward's `count` (the rows not ignored)
//! comes from the same pass. A device-side error flag would also need a
//! read-back (and so a synchronisation) to turn into an `Err` before the
//! kernel returns, and could only say that *some* target was bad; and the op
//! needs `count` on the host anyway for the mean. The backward pays the same
//! copy and synchronisation so that a target it is handed directly (not the
//! one its forward checked) is an error rather than silently skipped; its
//! kernel also treats a target outside `0..C` as an ignored row, so no input
//! can make it read outside a row.

use crate::backend::contract::check_indices_dtype;
use crate::backend::contract::nn::cross_entropy::{
    check_cross_entropy, check_cross_entropy_backward, CrossEntropyForward, CrossEntropyKernels, CrossEntropyOptions,
};
use crate::backend::cuda::reduce::{flat_layout, row_args, row_view, RowKernel};
use crate::backend::cuda::{kernels, Arg, CudaStorage};
use crate::backend::BackendStorage;
use crate::types::Layout;
use crate::{Error, Result};

const OP: &str = "cross_entropy";

/// The options as kernel arguments: `has_ignore, ignore, keep, spread` (as
/// the CPU: `keep = 1 − ε`, `spread = ε / C`, each rounded to T in the kernel).
fn option_args(options: &CrossEntropyOptions, c: usize) -> [Arg; 4] {
    let eps = options.label_smoothing;
    [
        Arg::I64(i64::from(options.ignore_index.is_some())),
        Arg::I64(options.ignore_index.unwrap_or(0)),
        Arg::F64(1.0 - eps),
        Arg::F64(eps / c as f64),
    ]
}

/// The targets, once they are known to be i64, as a contiguous copy on the
/// device (what the kernels read) and as values on the host (what the
/// validators check).
fn target_values(targets: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Vec<i64>)> {
    check_indices_dtype(OP, "targets", targets.dtype())?;
    let on_device = targets.copy_contiguous(layout)?;
    match on_device.to_cpu()?.into_vec::<i64>() {
        Ok(host) => Ok((on_device, host)),
        Err(other) => Err(Error::dtype(OP, format!("targets came back as {}, expected i64", other.dtype()))),
    }
}

impl CrossEntropyKernels for CudaStorage {
    fn cross_entropy(
        &self,
        logits_layout: &Layout,
        targets: &Self,
        targets_layout: &Layout,
        options: &CrossEntropyOptions,
    ) -> Result<CrossEntropyForward<Self>> {
        let dtype = self.dtype();
        let (t_dev, values) = target_values(targets, targets_layout)?;
        let t = check_cross_entropy((dtype, logits_layout), (&values, targets_layout.shape()), options.ignore_index)?;
        self.check_same_device(OP, targets)?;
        let dev = self.cuda_device();
        let x = row_view(OP, logits_layout)?;
        let c = x.len;
        let rows = t.len();
        let count = t.iter().filter(|k| k.is_some()).count();
        let losses = Self::alloc(dev, dtype, rows)?;
        let row_max = Self::alloc(dev, dtype, rows)?;
        let row_log_sum = Self::alloc(dev, dtype, rows)?;
        if rows > 0 {
            let (version, cfg) = RowKernel::choose(rows, c);
            let [xp, starts, step] = row_args(self, &x);
            let tl = flat_layout(OP, &Layout::contiguous([rows]))?;
            let [has_ignore, ignore, keep, spread] = option_args(options, c);
            let smooth = Arg::I64(i64::from(options.label_smoothing > 0.0));
            // cross_entropy_fwd_<version>(x, starts, step, targets, tl, losses, row_max, row_log_sum,
            //                             rows, c, has_ignore, ignore, keep, spread, smooth)
            dev.launch(
                &kernels::CROSS_ENTROPY,
                &version.name("cross_entropy_fwd", dtype),
                cfg,
                &[
                    xp,
                    starts,
                    step,
                    Arg::Ptr(t_dev.ptr()),
                    Arg::Layout(tl),
                    Arg::Ptr(losses.ptr()),
                    Arg::Ptr(row_max.ptr()),
                    Arg::Ptr(row_log_sum.ptr()),
                    Arg::I64(rows as i64),
                    Arg::I64(c as i64),
                    has_ignore,
                    ignore,
                    keep,
                    spread,
                    smooth,
                ],
            )?;
        }
        Ok(CrossEntropyForward {
            losses,
            row_max,
            row_log_sum,
            count,
        })
    }

    fn cross_entropy_backward(
        &self,
        logits_layout: &Layout,
        targets: &Self,
        targets_layout: &Layout,
        row_max: &Self,
        row_log_sum: &Self,
        row_grad: &Self,
        row_grad_layout: &Layout,
        options: &CrossEntropyOptions,
    ) -> Result<Self> {
        let dtype = self.dtype();
        let (t_dev, values) = target_values(targets, targets_layout)?;
        let rows = check_cross_entropy_backward(
            (dtype, logits_layout),
            (&values, targets_layout.shape()),
            options.ignore_index,
            (row_max.dtype(), row_max.len()),
            (row_log_sum.dtype(), row_log_sum.len()),
            (row_grad.dtype(), row_grad_layout),
        )?
        .len();
        for s in [targets, row_max, row_log_sum, row_grad] {
            self.check_same_device(OP, s)?;
        }
        let dev = self.cuda_device();
        let x = row_view(OP, logits_layout)?;
        let c = x.len;
        let dx = Self::alloc(dev, dtype, rows * c)?;
        if rows * c == 0 {
            return Ok(dx);
        }
        let (version, cfg) = RowKernel::choose(rows, c);
        let [xp, starts, step] = row_args(self, &x);
        let tl = flat_layout(OP, &Layout::contiguous([rows]))?;
        let gl = flat_layout(OP, row_grad_layout)?;
        let [has_ignore, ignore, keep, spread] = option_args(options, c);
        // cross_entropy_bwd_<version>(x, starts, step, targets, tl, row_max, row_log_sum, row_grad, gl,
        //                             dx, rows, c, has_ignore, ignore, keep, spread)
        dev.launch(
            &kernels::CROSS_ENTROPY,
            &version.name("cross_entropy_bwd", dtype),
            cfg,
            &[
                xp,
                starts,
                step,
                Arg::Ptr(t_dev.ptr()),
                Arg::Layout(tl),
                Arg::Ptr(row_max.ptr()),
                Arg::Ptr(row_log_sum.ptr()),
                Arg::Ptr(row_grad.ptr()),
                Arg::Layout(gl),
                Arg::Ptr(dx.ptr()),
                Arg::I64(rows as i64),
                Arg::I64(c as i64),
                has_ignore,
                ignore,
                keep,
                spread,
            ],
        )?;
        Ok(dx)
    }
}
