//! Pooling on CUDA (cuda/pool.cu): one thread per output element in the
//! forward passes, one per input pixel in the backward passes (gathers over
//! the windows containing the pixel, no atomics). Inputs are read through
//! their strides; results are contiguous. Every kernel reads in the CPU
//! kernels' order, so results match the CPU backend bit for bit.
//!
//! Unlike the CPU backend, `max_pool2d_backward` does not check the values
//! of the saved indices (that would need them on the host): they come from
//! the forward pass and are in range, and an index outside the plane would
//! match no pixel, so it cannot make the kernel write out of bounds.

use crate::backend::contract::nn::pool::{check_avg_pool2d, check_avg_pool2d_backward, check_max_pool2d, check_max_pool2d_backward, Pool2dParams, PoolKernels};
use crate::backend::cuda::{elementwise_config, kernels, Arg, CudaDevice, CudaStorage, StridedLayout};
use crate::backend::BackendStorage;
use crate::types::{DType, Layout};
use crate::Result;

/// The geometry in the order of `POOL_GEOM` in cuda/pool.cu: C, H, W, KH, KW, SH, SW, PH, PW.
fn geom_args(p: &Pool2dParams) -> [Arg; 9] {
    [
        p.channels,
        p.in_h,
        p.in_w,
        p.kernel.0,
        p.kernel.1,
        p.stride.0,
        p.stride.1,
        p.padding.0,
        p.padding.1,
    ]
    .map(|v| Arg::I64(v as i64))
}

/// Launch `<kernel>_<suffix>` with one thread per element of its output
/// (`total` of them): the arguments every pooling kernel takes are
/// `buffers` (its pointers and layouts, in the kernel's order), then
/// `total, OH, OW`, then `include_pad` for the average kernels, then the
/// geometry (`POOL_GEOM`).
fn launch(dev: &CudaDevice, kernel: &str, suffix: &str, total: usize, p: &Pool2dParams, buffers: Vec<Arg>, include_pad: Option<bool>) -> Result<()> {
    if total == 0 {
        return Ok(());
    }
    let mut args = buffers;
    args.extend([total, p.out_h, p.out_w].map(|v| Arg::I64(v as i64)));
    args.extend(include_pad.map(|b| Arg::I64(i64::from(b))));
    args.extend(geom_args(p));
    dev.launch(&kernels::POOL, &format!("{kernel}_{suffix}"), elementwise_config(total), &args)
}

impl PoolKernels for CudaStorage {
    fn max_pool2d(&self, layout: &Layout, p: &Pool2dParams) -> Result<(Self, Self)> {
        const OP: &str = "max_pool2d";
        check_max_pool2d(p, (self.dtype(), layout))?;
        let suffix = self.dtype().name();
        let xl = StridedLayout::new(OP, layout)?;
        let dev = self.cuda_device();
        let total = p.planes() * p.out_h * p.out_w;
        let y = CudaStorage::alloc(dev, self.dtype(), total)?;
        let idx = CudaStorage::alloc(dev, DType::I64, total)?;
        // max_pool2d_T(const T* x, StridedLayout xl, T* y, i64* idx, i64 total, i64 OH, i64 OW, POOL_GEOM)
        let buffers = vec![Arg::Ptr(self.ptr()), Arg::Layout(xl), Arg::Ptr(y.ptr()), Arg::Ptr(idx.ptr())];
        launch(dev, OP, suffix, total, p, buffers, None)?;
        Ok((y, idx))
    }

    fn max_pool2d_backward(&self, dy_layout: &Layout, indices: &Self, indices_layout: &Layout, p: &Pool2dParams) -> Result<Self> {
        const OP: &str = "max_pool2d_backward";
        check_max_pool2d_backward(p, (self.dtype(), dy_layout), (indices.dtype(), indices_layout))?;
        let suffix = self.dtype().name();
        self.check_same_device(OP, indices)?;
        let dl = StridedLayout::new(OP, dy_layout)?;
        let il = StridedLayout::new(OP, indices_layout)?;
        let dev = self.cuda_device();
        let total = p.planes() * p.in_h * p.in_w;
        let dx = CudaStorage::alloc(dev, self.dtype(), total)?;
        // max_pool2d_backward_T(const T* dy, StridedLayout dl, const i64* idx, StridedLayout il, T* dx, i64 total, i64 OH, i64 OW, POOL_GEOM)
        let buffers = vec![
            Arg::Ptr(self.ptr()),
            Arg::Layout(dl),
            Arg::Ptr(indices.ptr()),
            Arg::Layout(il),
            Arg::Ptr(dx.ptr()),
        ];
        launch(dev, OP, suffix, total, p, buffers, None)?;
        Ok(dx)
    }

    fn avg_pool2d(&self, layout: &Layout, p: &Pool2dParams, count_include_pad: bool) -> Result<Self> {
        const OP: &str = "avg_pool2d";
        check_avg_pool2d(p, (self.dtype(), layout))?;
        let suffix = self.dtype().name();
        let xl = StridedLayout::new(OP, layout)?;
        let dev = self.cuda_device();
        let total = p.planes() * p.out_h * p.out_w;
        let y = CudaStorage::alloc(dev, self.dtype(), total)?;
        // avg_pool2d_T(const T* x, StridedLayout xl, T* y, i64 total, i64 OH, i64 OW, i64 include_pad, POOL_GEOM)
        let buffers = vec![Arg::Ptr(self.ptr()), Arg::Layout(xl), Arg::Ptr(y.ptr())];
        launch(dev, OP, suffix, total, p, buffers, Some(count_include_pad))?;
        Ok(y)
    }

    fn avg_pool2d_backward(&self, dy_layout: &Layout, p: &Pool2dParams, count_include_pad: bool) -> Result<Self> {
        const OP: &str = "avg_pool2d_backward";
        check_avg_pool2d_backward(p, (self.dtype(), dy_layout))?;
        let suffix = self.dtype().name();
        let dl = StridedLayout::new(OP, dy_layout)?;
        let dev = self.cuda_device();
        let total = p.planes() * p.in_h * p.in_w;
        let dx = CudaStorage::alloc(dev, self.dtype(), total)?;
        // avg_pool2d_backward_T(const T* dy, StridedLayout dl, T* dx, i64 total, i64 OH, i64 OW, i64 include_pad, POOL_GEOM)
        let buffers = vec![Arg::Ptr(self.ptr()), Arg::Layout(dl), Arg::Ptr(dx.ptr())];
        launch(dev, OP, suffix, total, p, buffers, Some(count_include_pad))?;
        Ok(dx)
    }
}
