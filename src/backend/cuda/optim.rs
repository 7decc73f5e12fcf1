//! Launches of the optimizer kernels (cuda/optim.cu): fused Adam/AdamW and
//! SGD steps, gradient accumulation, a scaled copy, and the deterministic
//! sum of squares behind the global gradient norm.
//!
//! The launches take contiguous runs of elements: a storage and the element
//! offset where the run starts (`ptr_at(offset)`), `n` elements long; the
//! `OptimKernels` implementation at the end makes strided operands
//! contiguous first (and writes a strided parameter back through its
//! layout). The coefficient structs are the contract's
//! (`backend/contract/optim.rs`), with every scalar already rounded to the
//! parameter's dtype, as the CPU loops get them, so both devices run one
//! formula on the same numbers (cuda/optim.cu explains why the results then
//! agree bit for bit).
//!
//! Each launch checks the dtypes, the bounds and the device of its operands
//! and returns an error naming the op rather than handing the GPU a bad
//! pointer: a wrong argument here would be a silent memory corruption.

use super::{elementwise_config, kernel_name, kernels, Arg, CudaStorage};
use crate::backend::contract::optim::{
    check_scaled, check_sum_squares, check_update, AdamCoeffs, AdamDecay, AdamState, AdamStep, OptimKernels, SgdCoeffs, SgdStep,
};
use crate::backend::contract::unsupported_dtype;
use crate::backend::BackendStorage;
use crate::types::{DType, Float, Layout};
use crate::{Error, Result};
use cudarc::driver::LaunchConfig;

/// Threads per block of the sum-of-squares passes (`SSQ_THREADS` in cuda/optim.cu).
const SSQ_THREADS: u32 = 256;
/// Most blocks of pass 1 (`SSQ_MAX_BLOCKS`): the partial sums pass 2 adds.
const SSQ_MAX_BLOCKS: usize = 1024;

/// A scalar kernel parameter of type `T` (`float` or `double` in the kernel).
/// The value is already a `T`, so the round trip through f64 is exact.
fn scalar<T: Float>(v: T) -> Arg {
    match T::DTYPE {
        DType::F32 => Arg::F32(v.to_f64() as f32),
        _ => Arg::F64(v.to_f64()),
    }
}

/// The device address of elements `offset..offset + n` of `s`, after checking
/// that they exist and have dtype `dtype`; `what` names the operand in errors.
fn span_ptr(op: &'static str, what: &str, s: &CudaStorage, offset: usize, n: usize, dtype: DType) -> Result<u64> {
    if s.dtype() != dtype {
        return Err(Error::dtype(op, format!("the {what} is {} but the parameter is {dtype}", s.dtype())));
    }
    if offset.checked_add(n).is_none_or(|end| end > s.len()) {
        return Err(Error::shape(
            op,
            format!(
                "the {what} holds {} elements, fewer than the {n} the update needs from element {offset}",
                s.len()
            ),
        ));
    }
    Ok(s.ptr_at(offset))
}

/// `n` as the kernels' `i64` length.
fn len_arg(n: usize) -> Arg {
    Arg::I64(n as i64)
}

/// One Adam/AdamW step of `n` parameter elements (`p` from element `p_offset`)
/// with gradient `g` (from `g_offset`) and the state buffers `m` (exp_avg),
/// `v` (exp_avg_sq) and, with AMSGrad, `vmax` (max_exp_avg_sq), each `[n]`.
/// Kernel `adam_<dtype>`, launched with `elementwise_config(n)`.
#[allow(clippy::too_many_arguments)]
fn adam_step<T: Float>(
    p: &mut CudaStorage,
    p_offset: usize,
    g: &CudaStorage,
    g_offset: usize,
    m: &mut CudaStorage,
    v: &mut CudaStorage,
    vmax: Option<&mut CudaStorage>,
    n: usize,
    c: &AdamCoeffs<T>,
) -> Result<()> {
    const OP: &str = "Adam::step";
    let dt = T::DTYPE;
    p.check_same_device(OP, g)?;
    p.check_same_device(OP, m)?;
    p.check_same_device(OP, v)?;
    let pp = span_ptr(OP, "parameter", p, p_offset, n, dt)?;
    let gp = span_ptr(OP, "gradient", g, g_offset, n, dt)?;
    let mp = span_ptr(OP, "state exp_avg", m, 0, n, dt)?;
    let vp = span_ptr(OP, "state exp_avg_sq", v, 0, n, dt)?;
    let (amsgrad, xp) = match vmax {
        Some(x) => {
            p.check_same_device(OP, x)?;
            (1, span_ptr(OP, "state max_exp_avg_sq", x, 0, n, dt)?)
        }
        None => (0, 0),
    };
    let (decay, wd) = match c.decay {
        AdamDecay::None => (0, T::ZERO),
        AdamDecay::Coupled(wd) => (1, wd),
        AdamDecay::Decoupled(factor) => (2, factor),
    };
    if n == 0 {
        return Ok(());
    }
    // adam_T(T* p, const T* g, T* m, T* v, T* vmax, i64 n, i64 decay, i64 amsgrad, i64 w_small,
    //        T wd, T w, T one_minus_w, T beta2, T one_minus_beta2, T bc2_sqrt, T eps, T neg_step_size)
    let args = [
        Arg::Ptr(pp),
        Arg::Ptr(gp),
        Arg::Ptr(mp),
        Arg::Ptr(vp),
        Arg::Ptr(xp),
        len_arg(n),
        Arg::I64(decay),
        Arg::I64(amsgrad),
        Arg::I64(i64::from(c.w_small)),
        scalar(wd),
        scalar(c.w),
        scalar(c.one_minus_w),
        scalar(c.beta2),
        scalar(c.one_minus_beta2),
        scalar(c.bc2_sqrt),
        scalar(c.eps),
        scalar(c.neg_step_size),
    ];
    p.cuda_device().launch(&kernels::OPTIM, &kernel_name("adam", dt), elementwise_config(n), &args)
}

/// One SGD step of `n` parameter elements with gradient `g` and, when
/// `c.momentum` is set, the momentum buffer `buf` `[n]` (required then, and
/// written; `c.init_buffer` makes this its first step). Kernel `sgd_<dtype>`,
/// launched with `elementwise_config(n)`.
fn sgd_step<T: Float>(
    p: &mut CudaStorage,
    p_offset: usize,
    g: &CudaStorage,
    g_offset: usize,
    buf: Option<&mut CudaStorage>,
    n: usize,
    c: &SgdCoeffs<T>,
) -> Result<()> {
    const OP: &str = "Sgd::step";
    let dt = T::DTYPE;
    p.check_same_device(OP, g)?;
    let pp = span_ptr(OP, "parameter", p, p_offset, n, dt)?;
    let gp = span_ptr(OP, "gradient", g, g_offset, n, dt)?;
    let bp = match (c.momentum.is_some(), buf) {
        (true, Some(b)) => {
            p.check_same_device(OP, b)?;
            span_ptr(OP, "momentum buffer", b, 0, n, dt)?
        }
        (true, None) => return Err(Error::value(OP, "momentum is on but no momentum buffer was passed")),
        (false, _) => 0,
    };
    if n == 0 {
        return Ok(());
    }
    // sgd_T(T* p, const T* g, T* buf, i64 n, i64 has_wd, i64 momentum, i64 nesterov, i64 init,
    //       T wd, T mu, T one_minus_dampening, T neg_lr)
    let args = [
        Arg::Ptr(pp),
        Arg::Ptr(gp),
        Arg::Ptr(bp),
        len_arg(n),
        Arg::I64(i64::from(c.weight_decay.is_some())),
        Arg::I64(i64::from(c.momentum.is_some())),
        Arg::I64(i64::from(c.nesterov)),
        Arg::I64(i64::from(c.init_buffer)),
        scalar(c.weight_decay.unwrap_or(T::ZERO)),
        scalar(c.momentum.unwrap_or(T::ZERO)),
        scalar(c.one_minus_dampening),
        scalar(c.neg_lr),
    ];
    p.cuda_device().launch(&kernels::OPTIM, &kernel_name("sgd", dt), elementwise_config(n), &args)
}

/// `acc[acc_offset..][i] += scale · x[x_offset..][i]` for `i < n`. Kernel
/// `axpy_<dtype>`, launched with `elementwise_config(n)`.
fn axpy<T: Float>(acc: &mut CudaStorage, acc_offset: usize, x: &CudaStorage, x_offset: usize, n: usize, scale: T) -> Result<()> {
    const OP: &str = "GradAccumulator::add";
    acc.check_same_device(OP, x)?;
    let ap = span_ptr(OP, "accumulated gradient", acc, acc_offset, n, T::DTYPE)?;
    let xp = span_ptr(OP, "gradient", x, x_offset, n, T::DTYPE)?;
    if n == 0 {
        return Ok(());
    }
    // axpy_T(T* acc, const T* x, i64 n, T scale)
    let args = [Arg::Ptr(ap), Arg::Ptr(xp), len_arg(n), scalar(scale)];
    acc.cuda_device()
        .launch(&kernels::OPTIM, &kernel_name("axpy", T::DTYPE), elementwise_config(n), &args)
}

/// A new storage of `n` elements `a · x[x_offset..][i] + 0` (as the CPU's
/// `Tensor::scale`). Kernel `scale_<dtype>`, launched with `elementwise_config(n)`.
fn scaled_copy<T: Float>(op: &'static str, x: &CudaStorage, x_offset: usize, n: usize, a: T) -> Result<CudaStorage> {
    let xp = span_ptr(op, "gradient", x, x_offset, n, T::DTYPE)?;
    let out = CudaStorage::alloc(x.cuda_device(), T::DTYPE, n)?;
    if n > 0 {
        // scale_T(const T* x, i64 n, T a, T* out)
        let args = [Arg::Ptr(xp), len_arg(n), scalar(a), Arg::Ptr(out.ptr())];
        x.cuda_device()
            .launch(&kernels::OPTIM, &kernel_name("scale", T::DTYPE), elementwise_config(n), &args)?;
    }
    Ok(out)
}

/// Pass 1's grid for `n` elements: one block per `SSQ_THREADS` elements, at
/// least 1 and at most `SSQ_MAX_BLOCKS`; a function of `n` alone, so the
/// summation tree (and the result, to the last bit) is the same on every run.
pub(crate) fn sum_squares_blocks(n: usize) -> usize {
    n.div_ceil(SSQ_THREADS as usize).clamp(1, SSQ_MAX_BLOCKS)
}

/// `Σ x²` in f64 of each `(storage, offset, n)` run, all on one device.
///
/// Each run takes two launches (cuda/optim.cu): `sum_squares_partial_<dtype>`
/// over `sum_squares_blocks(n)` blocks of 256 threads writes one partial sum
/// per block into a scratch buffer, then `sum_partials_f64` (one block of 256)
/// adds them into slot `k` of a device array with one f64 per run. That array
/// comes back to the host in one copy (one scalar per tensor); the caller adds
/// the per-tensor sums on the host, in f64 and in its own order. No atomics:
/// the result is deterministic.
fn sum_squares(op: &'static str, runs: &[(&CudaStorage, usize, usize)]) -> Result<Vec<f64>> {
    let Some((first, _, _)) = runs.first() else { return Ok(Vec::new()) };
    let dev = first.cuda_device();
    // One scratch buffer for every run's partial sums: the launches are queued
    // on the device's one stream, so run k+1's pass 1 starts after run k's pass 2.
    let partial = CudaStorage::alloc(dev, DType::F64, SSQ_MAX_BLOCKS)?;
    let out = CudaStorage::alloc(dev, DType::F64, runs.len())?;
    for (k, &(s, offset, n)) in runs.iter().enumerate() {
        first.check_same_device(op, s)?;
        let dt = s.dtype();
        let xp = span_ptr(op, "gradient", s, offset, n, dt)?;
        let blocks = sum_squares_blocks(n);
        let pass1 = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (SSQ_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // sum_squares_partial_T(const T* x, i64 n, double* partial)
        dev.launch(
            &kernels::OPTIM,
            &kernel_name("sum_squares_partial", dt),
            pass1,
            &[Arg::Ptr(xp), len_arg(n), Arg::Ptr(partial.ptr())],
        )?;
        let pass2 = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (SSQ_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // sum_partials_f64(const double* partial, i64 count, double* out, i64 index)
        dev.launch(
            &kernels::OPTIM,
            "sum_partials_f64",
            pass2,
            &[Arg::Ptr(partial.ptr()), Arg::I64(blocks as i64), Arg::Ptr(out.ptr()), Arg::I64(k as i64)],
        )?;
    }
    match out.to_cpu()?.into_vec::<f64>() {
        Ok(v) => Ok(v),
        Err(other) => Err(Error::dtype(op, format!("the sums came back as {}, expected f64", other.dtype()))),
    }
}

/// `s`'s elements that `layout` selects as one contiguous run: `(storage,
/// offset)`, the storage itself when they already are one, else a contiguous
/// copy kept in `copy`.
fn contiguous_run<'a>(s: &'a CudaStorage, layout: &Layout, copy: &'a mut Option<CudaStorage>) -> Result<(&'a CudaStorage, usize)> {
    match layout.contiguous_range() {
        Some(r) => Ok((s, r.start)),
        None => Ok((copy.insert(s.copy_contiguous(layout)?), 0)),
    }
}

/// Run `f(storage, offset)` on the parameter's elements as one contiguous
/// run: where they lie when contiguous, else in a contiguous copy on the
/// device that is written back through `layout` afterwards (the last write
/// wins where a broadcast layout overlaps, as on the CPU).
fn update_in_place<R>(p: &mut CudaStorage, layout: &Layout, f: impl FnOnce(&mut CudaStorage, usize) -> Result<R>) -> Result<R> {
    match layout.contiguous_range() {
        Some(r) => f(p, r.start),
        None => {
            let mut tmp = p.copy_contiguous(layout)?;
            let out = f(&mut tmp, 0)?;
            p.copy_into(layout, &tmp, &Layout::contiguous(layout.shape().clone()))?;
            Ok(out)
        }
    }
}

impl OptimKernels for CudaStorage {
    fn adam_step(
        &mut self,
        op: &'static str,
        name: &str,
        layout: &Layout,
        grad: &Self,
        grad_layout: &Layout,
        state: AdamState<'_, Self>,
        h: &AdamStep,
    ) -> Result<()> {
        let AdamState { m, v, vmax } = state;
        let mut states = vec![("exp_avg", m.dtype(), m.len()), ("exp_avg_sq", v.dtype(), v.len())];
        if let Some(x) = &vmax {
            states.push(("max_exp_avg_sq", x.dtype(), x.len()));
        }
        check_update(op, name, (self.dtype(), layout), (grad.dtype(), grad_layout), &states)?;
        let mut copy = None;
        let (g, g_off) = contiguous_run(grad, grad_layout, &mut copy)?;
        let n = layout.numel();
        match self.dtype() {
            DType::F32 => update_in_place(self, layout, |p, off| adam_step(p, off, g, g_off, m, v, vmax, n, &AdamCoeffs::<f32>::new(h))),
            DType::F64 => update_in_place(self, layout, |p, off| adam_step(p, off, g, g_off, m, v, vmax, n, &AdamCoeffs::<f64>::new(h))),
            other => Err(unsupported_dtype(op, other)),
        }
    }

    fn sgd_step(
        &mut self,
        op: &'static str,
        name: &str,
        layout: &Layout,
        grad: &Self,
        grad_layout: &Layout,
        momentum_buffer: Option<&mut Self>,
        h: &SgdStep,
    ) -> Result<()> {
        let states: Vec<_> = momentum_buffer.iter().map(|b| ("momentum_buffer", b.dtype(), b.len())).collect();
        check_update(op, name, (self.dtype(), layout), (grad.dtype(), grad_layout), &states)?;
        let mut copy = None;
        let (g, g_off) = contiguous_run(grad, grad_layout, &mut copy)?;
        let n = layout.numel();
        match self.dtype() {
            DType::F32 => update_in_place(self, layout, |p, off| sgd_step(p, off, g, g_off, momentum_buffer, n, &SgdCoeffs::<f32>::new(h))),
            DType::F64 => update_in_place(self, layout, |p, off| sgd_step(p, off, g, g_off, momentum_buffer, n, &SgdCoeffs::<f64>::new(h))),
            other => Err(unsupported_dtype(op, other)),
        }
    }

    fn axpy(&mut self, op: &'static str, layout: &Layout, x: &Self, x_layout: &Layout, scale: f64) -> Result<()> {
        check_update(op, "accumulated gradient", (self.dtype(), layout), (x.dtype(), x_layout), &[])?;
        let mut copy = None;
        let (x, x_off) = contiguous_run(x, x_layout, &mut copy)?;
        let n = layout.numel();
        match self.dtype() {
            DType::F32 => update_in_place(self, layout, |a, off| axpy(a, off, x, x_off, n, f32::from_f64(scale))),
            DType::F64 => update_in_place(self, layout, |a, off| axpy(a, off, x, x_off, n, scale)),
            other => Err(unsupported_dtype(op, other)),
        }
    }

    fn scaled(&self, op: &'static str, layout: &Layout, a: f64) -> Result<Self> {
        check_scaled(op, self.dtype())?;
        let mut copy = None;
        let (x, off) = contiguous_run(self, layout, &mut copy)?;
        let n = layout.numel();
        match self.dtype() {
            DType::F32 => scaled_copy::<f32>(op, x, off, n, f32::from_f64(a)),
            DType::F64 => scaled_copy::<f64>(op, x, off, n, a),
            other => Err(unsupported_dtype(op, other)),
        }
    }

    fn sum_squares(op: &'static str, parts: &[(&Self, &Layout)]) -> Result<Vec<f64>> {
        check_sum_squares(op, parts.iter().map(|(s, _)| s.dtype()))?;
        // Strided parts are copied to contiguous runs first; the copies live until the sums are back.
        let copies: Vec<Option<CudaStorage>> = parts
            .iter()
            .map(|&(s, l)| {
                if l.contiguous_range().is_some() {
                    Ok(None)
                } else {
                    s.copy_contiguous(l).map(Some)
                }
            })
            .collect::<Result<_>>()?;
        let runs: Vec<(&CudaStorage, usize, usize)> = parts
            .iter()
            .zip(&copies)
            .map(|(&(s, l), copy)| match copy {
                Some(c) => (c, 0, l.numel()),
                None => (s, l.contiguous_range().map_or(0, |r| r.start), l.numel()),
            })
            .collect();
        sum_squares(op, &runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reduction_grid_depends_on_the_length_only() {
        assert_eq!(sum_squares_blocks(0), 1);
        assert_eq!(sum_squares_blocks(1), 1);
        assert_eq!(sum_squares_blocks(256), 1);
        assert_eq!(sum_squares_blocks(257), 2);
        assert_eq!(sum_squares_blocks(1 << 30), SSQ_MAX_BLOCKS);
    }

    #[test]
    fn scalars_keep_their_dtype() {
        assert!(matches!(scalar(0.1f32), Arg::F32(x) if x == 0.1f32));
        assert!(matches!(scalar(0.1f64), Arg::F64(x) if x == 0.1f64));
    }
}
