//! Unary kernels on CUDA (cuda/unary.cu): `y = f(x)` and the fused backward
//! `dx = dy · f'(x, y)` for every [`UnaryFn`] of the contract
//! (`backend/contract/unary.rs`).
//!
//! The kernel is chosen by name: `U::NAME` and the dtype give `exp_f32`,
//! `exp_strided_f32`, `exp_backward_f32`, `exp_backward_strided_f32`. A
//! `UnaryFn` defined outside this crate has no kernel and gets an error (see
//! [`CUDA_UNARY_FNS`]). `U::params()` travels as the two trailing `double`
//! arguments of every kernel. The kernels read f16 and bf16 too (computing
//! in f32 and rounding once), which this backend declares in
//! [`UnaryKernels::DTYPES`].

use super::{elementwise_config, kernel_name, kernels, Arg, CudaStorage};
use crate::backend::contract::unary::{check_unary, check_unary_backward, UnaryFn, UnaryKernels};
use crate::backend::contract::FLOATS;
use crate::backend::BackendStorage;
use crate::types::{DType, Layout};
use crate::{Error, Result};

/// The `UnaryFn::NAME`s that cuda/unary.cu has kernels for (its
/// `UNARY_ALL_DTYPES` lines, in the same order).
pub const CUDA_UNARY_FNS: &[&str] = &[
    "neg",
    "abs",
    "log",
    "sqrt",
    "rsqrt",
    "square",
    "tanh",
    "sigmoid",
    "relu",
    "silu",
    "sin",
    "cos",
    "gelu",
    "gelu_tanh",
    "exp",
    "powf",
    "affine",
    "clamp",
];

/// Error unless `U` has CUDA kernels.
fn check_known<U: UnaryFn>() -> Result<()> {
    if CUDA_UNARY_FNS.contains(&U::NAME) {
        return Ok(());
    }
    Err(Error::device(
        U::NAME,
        format!(
            "no CUDA kernel for unary function `{}`: only the functions of tamer::ops::unary have one ({}); run a user-defined UnaryFn on the CPU (.to_cpu())",
            U::NAME,
            CUDA_UNARY_FNS.join(", ")
        ),
    ))
}

impl UnaryKernels for CudaStorage {
    const DTYPES: &'static [DType] = FLOATS;

    fn unary<U: UnaryFn>(&self, layout: &Layout, f: U) -> Result<Self> {
        let dtype = self.dtype();
        check_unary(U::NAME, dtype, <Self as UnaryKernels>::DTYPES)?;
        check_known::<U>()?;
        let dev = self.cuda_device();
        let n = layout.numel();
        let out = CudaStorage::alloc(dev, dtype, n)?;
        if n == 0 {
            return Ok(out);
        }
        let [p0, p1] = f.params();
        let (n64, p0, p1) = (Arg::I64(n as i64), Arg::F64(p0), Arg::F64(p1));
        let cfg = elementwise_config(n);
        match layout.contiguous_range() {
            // <name>_<dt>(const T* x, T* y, i64 n, double p0, double p1)
            Some(r) => dev.launch(
                &kernels::UNARY,
                &kernel_name(U::NAME, dtype),
                cfg,
                &[Arg::Ptr(self.ptr_at(r.start)), Arg::Ptr(out.ptr()), n64, p0, p1],
            )?,
            // <name>_strided_<dt>(const T* x, StridedLayout xl, T* y, i64 n, double p0, double p1)
            None => {
                let [x, xl] = self.strided_args(U::NAME, layout)?;
                let name = kernel_name(&format!("{}_strided", U::NAME), dtype);
                dev.launch(&kernels::UNARY, &name, cfg, &[x, xl, Arg::Ptr(out.ptr()), n64, p0, p1])?
            }
        }
        Ok(out)
    }

    fn unary_backward<U: UnaryFn>(&self, x_layout: &Layout, y: &Self, y_layout: &Layout, dy: &Self, dy_layout: &Layout, f: U) -> Result<Self> {
        let dtype = self.dtype();
        check_unary_backward(
            U::NAME,
            (dtype, x_layout),
            (y.dtype(), y_layout),
            (dy.dtype(), dy_layout),
            <Self as UnaryKernels>::DTYPES,
        )?;
        check_known::<U>()?;
        self.check_same_device(U::NAME, y)?;
        self.check_same_device(U::NAME, dy)?;
        let dev = self.cuda_device();
        let n = x_layout.numel();
        let dx = CudaStorage::alloc(dev, dtype, n)?;
        if n == 0 {
            return Ok(dx);
        }
        let [p0, p1] = f.params();
        let (n64, p0, p1) = (Arg::I64(n as i64), Arg::F64(p0), Arg::F64(p1));
        let cfg = elementwise_config(n);
        match (x_layout.contiguous_range(), y_layout.contiguous_range(), dy_layout.contiguous_range()) {
            // <name>_backward_<dt>(const T* x, const T* y, const T* dy, T* dx, i64 n, double p0, double p1)
            (Some(rx), Some(ry), Some(rg)) => {
                let name = kernel_name(&format!("{}_backward", U::NAME), dtype);
                let args = [
                    Arg::Ptr(self.ptr_at(rx.start)),
                    Arg::Ptr(y.ptr_at(ry.start)),
                    Arg::Ptr(dy.ptr_at(rg.start)),
                    Arg::Ptr(dx.ptr()),
                    n64,
                    p0,
                    p1,
                ];
                dev.launch(&kernels::UNARY, &name, cfg, &args)?
            }
            // <name>_backward_strided_<dt>(const T* x, StridedLayout xl, const T* y, StridedLayout yl,
            //                              const T* dy, StridedLayout dyl, T* dx, i64 n, double p0, double p1)
            _ => {
                let [x, xl] = self.strided_args(U::NAME, x_layout)?;
                let [yp, yl] = y.strided_args(U::NAME, y_layout)?;
                let [g, gl] = dy.strided_args(U::NAME, dy_layout)?;
                let name = kernel_name(&format!("{}_backward_strided", U::NAME), dtype);
                dev.launch(&kernels::UNARY, &name, cfg, &[x, xl, yp, yl, g, gl, Arg::Ptr(dx.ptr()), n64, p0, p1])?
            }
        }
        Ok(dx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name in the Rust list has an instantiation line in the .cu, and
    /// the other way round.
    #[test]
    fn the_name_list_matches_the_kernel_source() {
        let src = kernels::UNARY.source;
        let in_cu: Vec<&str> = src
            .lines()
            .filter_map(|l| l.strip_prefix("UNARY_ALL_DTYPES("))
            .filter_map(|l| l.split(',').next())
            .collect();
        assert_eq!(in_cu, CUDA_UNARY_FNS);
    }

    /// Every `UnaryFn` of the contract is in the list (a new one added there
    /// without a kernel fails here rather than on a GPU).
    #[test]
    fn every_builtin_unary_fn_has_a_kernel() {
        use crate::backend::contract::unary::*;
        let names = [
            Neg::NAME,
            Abs::NAME,
            Log::NAME,
            Sqrt::NAME,
            Rsqrt::NAME,
            Square::NAME,
            Tanh::NAME,
            Sigmoid::NAME,
            Relu::NAME,
            Silu::NAME,
            Sin::NAME,
            Cos::NAME,
            Gelu::NAME,
            GeluTanh::NAME,
            Exp::NAME,
            Powf::NAME,
            Affine::NAME,
            Clamp::NAME,
        ];
        for n in names {
            assert!(CUDA_UNARY_FNS.contains(&n), "{n}");
        }
        let src = include_str!("../contract/unary.rs");
        // hand-written impls (the macro's own `impl UnaryFn for $ty` excluded) plus macro invocations
        let impls = src.matches("impl UnaryFn for ").count() - src.matches("impl UnaryFn for $").count() + src.matches("\nunary_fn!(").count();
        assert_eq!(
            impls,
            CUDA_UNARY_FNS.len(),
            "src/backend/contract/unary.rs defines a UnaryFn without a CUDA kernel"
        );
    }
}
