//! softmax / log_softmax on CUDA (cuda/softmax.cu): one warp or one block per
//! row of the last axis, reading any strides directly (no gather copy).

use crate::backend::contract::nn::softmax::{check_softmax, check_softmax_backward, SoftmaxKernels, SoftmaxKind};
use crate::backend::cuda::reduce::{row_args, row_view, RowKernel};
use crate::backend::cuda::{kernels, Arg, CudaStorage};
use crate::backend::BackendStorage;
use crate::types::Layout;
use crate::Result;

impl SoftmaxKernels for CudaStorage {
    fn softmax_last(&self, layout: &Layout, kind: SoftmaxKind) -> Result<Self> {
        let op = kind.name();
        let dtype = self.dtype();
        check_softmax(kind, (dtype, layout))?;
        let dev = self.cuda_device();
        let x = row_view(op, layout)?;
        let n = x.rows * x.len;
        let y = Self::alloc(dev, dtype, n)?;
        if n == 0 {
            return Ok(y);
        }
        let (version, cfg) = RowKernel::choose(x.rows, x.len);
        let [xp, starts, step] = row_args(self, &x);
        // <op>_fwd_<version>(x, starts, step, y, rows, c)
        dev.launch(
            &kernels::SOFTMAX,
            &version.name(&format!("{op}_fwd"), dtype),
            cfg,
            &[xp, starts, step, Arg::Ptr(y.ptr()), Arg::I64(x.rows as i64), Arg::I64(x.len as i64)],
        )?;
        Ok(y)
    }

    fn softmax_last_backward(&self, y_layout: &Layout, dy: &Self, dy_layout: &Layout, kind: SoftmaxKind) -> Result<Self> {
        let op = kind.name();
        let dtype = self.dtype();
        check_softmax_backward(kind, (dtype, y_layout), (dy.dtype(), dy_layout))?;
        self.check_same_device(op, dy)?;
        let dev = self.cuda_device();
        let (y, g) = (row_view(op, y_layout)?, row_view(op, dy_layout)?);
        let n = y.rows * y.len;
        let dx = Self::alloc(dev, dtype, n)?;
        if n == 0 {
            return Ok(dx);
        }
        let (version, cfg) = RowKernel::choose(y.rows, y.len);
        let [yp, ys, ystep] = row_args(self, &y);
        let [gp, gs, gstep] = row_args(dy, &g);
        // <op>_bwd_<version>(y, ystarts, ystep, dy, gstarts, gstep, dx, rows, c)
        dev.launch(
            &kernels::SOFTMAX,
            &version.name(&format!("{op}_bwd"), dtype),
            cfg,
            &[
                yp,
                ys,
                ystep,
                gp,
                gs,
                gstep,
                Arg::Ptr(dx.ptr()),
                Arg::I64(y.rows as i64),
                Arg::I64(y.len as i64),
            ],
        )?;
        Ok(dx)
    }
}
