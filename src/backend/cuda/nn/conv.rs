//! conv2d on CUDA: cuda/conv.cu moves the data (im2col, col2im, bias), the
//! matmul kernel (`MatmulKernels` on `CudaStorage`) does the arithmetic.
//!
//! Shapes: x `[N, C, H, W]`, w `[O, C, kh, kw]` seen as `[O, K]` with
//! `K = C·kh·kw`, columns `[K, L]` per image with `L = OH·OW`, y `[N, O, L]`.
//!
//! - forward: `y = W · im2col(x)` as one batched matmul over the images (the
//!   weight broadcast with batch stride 0), then `y += b`.
//! - grad input: `dcols = Wᵀ · dy` (batched), folded back by col2im, a gather
//!   (one thread per input pixel, no atomics).
//! - grad weight: `dW = Σₙ dyₙ · colsₙᵀ` as one matmul with inner dimension
//!   `N·L`: the columns of all images are laid side by side (`[K, N·L]`) and dy
//!   rearranged to `[O, N·L]`.
//! - grad bias: one block per channel sums dy.
//!
//! Column matrices are `K·L` elements per image; the batch is processed in
//! chunks whose columns fit in `COLS_BUDGET` elements, so memory stays bounded
//! for large images. 1×1 convolutions with stride 1 and no padding skip
//! im2col/col2im in the forward and input-gradient passes: the image (or dx)
//! is the column matrix itself.

use crate::backend::contract::matmul::MatmulKernels;
use crate::backend::contract::nn::conv::{
    check_conv2d, check_conv2d_backward_bias, check_conv2d_backward_input, check_conv2d_backward_weight, Conv2dParams, ConvKernels,
};
use crate::backend::cuda::device::rows_config;
use crate::backend::cuda::{elementwise_config, kernel_name, kernels, Arg, CudaStorage, StridedLayout};
use crate::backend::{described, BackendStorage};
use crate::types::{Layout, Shape};
use crate::Result;

/// Most elements of one chunk's column matrix (512 MiB of f32).
const COLS_BUDGET: usize = 1 << 27;

/// The geometry in the order of `CONV_GEOM` in cuda/conv.cu:
/// C, H, W, KH, KW, SH, SW, PH, PW, OH, OW.
fn geom_args(p: &Conv2dParams) -> [Arg; 11] {
    [
        p.in_channels,
        p.in_h,
        p.in_w,
        p.kernel.0,
        p.kernel.1,
        p.stride.0,
        p.stride.1,
        p.padding.0,
        p.padding.1,
        p.out_h,
        p.out_w,
    ]
    .map(|v| Arg::I64(v as i64))
}

/// `s` seen through `l` with `dims`: a view when the strides allow it, else a
/// contiguous copy (returned, so it lives as long as the launches using it).
fn view_as(s: &CudaStorage, l: &Layout, dims: &[usize]) -> Result<(Option<CudaStorage>, Layout)> {
    let shape = Shape::new(dims);
    match l.reshape_view(&shape) {
        Some(v) => Ok((None, v)),
        None => Ok((Some(s.copy_contiguous(l)?), Layout::contiguous(shape))),
    }
}

/// A `[rows, cols]` matrix layout broadcast over `g` batch entries (stride 0).
fn broadcast(m: &Layout, g: usize) -> Layout {
    Layout::new(Shape::new([g, m.dims()[0], m.dims()[1]]), vec![0, m.strides()[0], m.strides()[1]], m.offset())
}

/// The transpose of a `[rows, cols]` matrix layout.
fn transposed(m: &Layout) -> Layout {
    Layout::new(Shape::new([m.dims()[1], m.dims()[0]]), vec![m.strides()[1], m.strides()[0]], m.offset())
}

/// Images per chunk: as many as keep the columns within `COLS_BUDGET`, at least one.
fn chunk_images(p: &Conv2dParams) -> usize {
    (COLS_BUDGET / (p.col_rows() * p.out_plane()).max(1)).clamp(1, p.batch.max(1))
}

/// 1×1, stride 1, no padding: the column matrix of an image is the image.
fn is_pointwise(p: &Conv2dParams) -> bool {
    p.kernel == (1, 1) && p.stride == (1, 1) && p.padding == (0, 0)
}

/// The stride of the merged `H·W` axis of `x`, when H and W merge.
fn merged_plane_stride(x: &Layout, p: &Conv2dParams) -> Option<usize> {
    let s = x.strides();
    if p.in_w == 1 {
        Some(s[2])
    } else if p.in_h == 1 || s[2] == p.in_w * s[3] {
        Some(s[3])
    } else {
        None
    }
}

/// Where the columns of image `nn` of a chunk go.
#[derive(Clone, Copy)]
enum ColsOrder {
    /// `[g, K, L]`: one column matrix per image (forward).
    PerImage,
    /// `[K, g, L]`: the images' columns side by side, `[K, g·L]` (weight gradient).
    SideBySide,
}

/// im2col of images `n0 .. n0+g` of x.
fn im2col(op: &'static str, x: &CudaStorage, x_layout: &Layout, p: &Conv2dParams, n0: usize, g: usize, order: ColsOrder) -> Result<CudaStorage> {
    let (k, l) = (p.col_rows(), p.out_plane());
    let total = g * k * l;
    let dev = x.cuda_device();
    let cols = CudaStorage::alloc(dev, x.dtype(), total)?;
    if total == 0 {
        return Ok(cols);
    }
    let (col_sn, col_sk) = match order {
        ColsOrder::PerImage => (k * l, l),
        ColsOrder::SideBySide => (l, g * l),
    };
    let [xp, xl] = x.strided_args(op, x_layout)?;
    // im2col_T(const T* x, StridedLayout xl, i64 n0, T* cols, i64 col_sn, i64 col_sk, i64 total, CONV_GEOM)
    let mut args = vec![
        xp,
        xl,
        Arg::I64(n0 as i64),
        Arg::Ptr(cols.ptr()),
        Arg::I64(col_sn as i64),
        Arg::I64(col_sk as i64),
        Arg::I64(total as i64),
    ];
    args.extend(geom_args(p));
    dev.launch(&kernels::CONV, &kernel_name("im2col", x.dtype()), elementwise_config(total), &args)?;
    Ok(cols)
}

impl ConvKernels for CudaStorage {
    fn conv2d(&self, x_layout: &Layout, w: &Self, w_layout: &Layout, bias: Option<(&Self, &Layout)>, p: &Conv2dParams) -> Result<Self> {
        const OP: &str = "conv2d";
        check_conv2d(p, (self.dtype(), x_layout), (w.dtype(), w_layout), described(bias))?;
        let suffix = self.dtype().name();
        self.check_same_device(OP, w)?;
        if let Some((b, _)) = bias {
            self.check_same_device(OP, b)?;
        }
        let (n, o, k, l) = (p.batch, p.out_channels, p.col_rows(), p.out_plane());
        let dev = self.cuda_device();
        let total = n * o * l;
        if total == 0 {
            return CudaStorage::alloc(dev, self.dtype(), 0);
        }
        let y = if k == 0 {
            CudaStorage::zeros(dev, self.dtype(), total)?
        } else {
            let (wc, wm) = view_as(w, w_layout, &[o, k])?;
            let w = wc.as_ref().unwrap_or(w);
            match (is_pointwise(p), merged_plane_stride(x_layout, p)) {
                (true, Some(plane)) => {
                    // y[n] = W [O, C] · x[n] viewed as [C, H·W].
                    let s = x_layout.strides();
                    let xm = Layout::new(Shape::new([n, k, l]), vec![s[0], s[1], plane], x_layout.offset());
                    w.matmul(&broadcast(&wm, n), self, &xm)?
                }
                _ => {
                    let chunk = chunk_images(p);
                    if chunk >= n {
                        let cols = im2col(OP, self, x_layout, p, 0, n, ColsOrder::PerImage)?;
                        w.matmul(&broadcast(&wm, n), &cols, &Layout::contiguous([n, k, l]))?
                    } else {
                        let mut y = CudaStorage::alloc(dev, self.dtype(), total)?;
                        for n0 in (0..n).step_by(chunk) {
                            let g = chunk.min(n - n0);
                            let cols = im2col(OP, self, x_layout, p, n0, g, ColsOrder::PerImage)?;
                            let part = w.matmul(&broadcast(&wm, g), &cols, &Layout::contiguous([g, k, l]))?;
                            let dst = Layout::new(Shape::new([g * o * l]), vec![1], n0 * o * l);
                            y.copy_into(&dst, &part, &Layout::contiguous([g * o * l]))?;
                        }
                        y
                    }
                }
            }
        };
        if let Some((b, bl)) = bias {
            // conv_bias_add_T(T* y, const T* b, i64 b_stride, i64 O, i64 L, i64 total)
            dev.launch(
                &kernels::CONV,
                &format!("conv_bias_add_{suffix}"),
                elementwise_config(total),
                &[
                    Arg::Ptr(y.ptr()),
                    Arg::Ptr(b.ptr_at(bl.offset())),
                    Arg::I64(bl.strides()[0] as i64),
                    Arg::I64(o as i64),
                    Arg::I64(l as i64),
                    Arg::I64(total as i64),
                ],
            )?;
        }
        Ok(y)
    }

    fn conv2d_backward_input(&self, dy_layout: &Layout, w: &Self, w_layout: &Layout, p: &Conv2dParams) -> Result<Self> {
        const OP: &str = "conv2d_backward";
        check_conv2d_backward_input(p, (self.dtype(), dy_layout), (w.dtype(), w_layout))?;
        let suffix = self.dtype().name();
        self.check_same_device(OP, w)?;
        let (n, o, k, l) = (p.batch, p.out_channels, p.col_rows(), p.out_plane());
        let dev = self.cuda_device();
        let total = n * p.in_channels * p.in_h * p.in_w;
        if total == 0 || o == 0 {
            return CudaStorage::zeros(dev, self.dtype(), total);
        }
        let (wc, wm) = view_as(w, w_layout, &[o, k])?;
        let w = wc.as_ref().unwrap_or(w);
        let wt = transposed(&wm); // [K, O]
        let (dyc, dym) = view_as(self, dy_layout, &[n, o, l])?;
        let dy = dyc.as_ref().unwrap_or(self);
        if is_pointwise(p) {
            // dx[n] viewed as [C, H·W] is dcols[n] itself.
            return w.matmul(&broadcast(&wt, n), dy, &dym);
        }
        let dx = CudaStorage::alloc(dev, self.dtype(), total)?;
        let chunk = chunk_images(p);
        for n0 in (0..n).step_by(chunk) {
            let g = chunk.min(n - n0);
            let dcols = w.matmul(&broadcast(&wt, g), dy, &dym.narrow(0, n0, g))?; // [g, K, L]
            let chunk_total = g * p.in_channels * p.in_h * p.in_w;
            // col2im_T(const T* dcols, T* dx, i64 n0, i64 total, CONV_GEOM)
            let mut args = vec![Arg::Ptr(dcols.ptr()), Arg::Ptr(dx.ptr()), Arg::I64(n0 as i64), Arg::I64(chunk_total as i64)];
            args.extend(geom_args(p));
            dev.launch(&kernels::CONV, &format!("col2im_{suffix}"), elementwise_config(chunk_total), &args)?;
        }
        Ok(dx)
    }

    fn conv2d_backward_weight(&self, dy_layout: &Layout, x: &Self, x_layout: &Layout, p: &Conv2dParams) -> Result<Self> {
        const OP: &str = "conv2d_backward";
        check_conv2d_backward_weight(p, (self.dtype(), dy_layout), (x.dtype(), x_layout))?;
        let suffix = self.dtype().name();
        self.check_same_device(OP, x)?;
        let (n, o, k, l) = (p.batch, p.out_channels, p.col_rows(), p.out_plane());
        let dev = self.cuda_device();
        if o * k == 0 || n == 0 {
            return CudaStorage::zeros(dev, self.dtype(), o * k);
        }
        let (dyc, dym) = view_as(self, dy_layout, &[n, o, l])?;
        let dy = dyc.as_ref().unwrap_or(self);
        let chunk = chunk_images(p);
        let mut dw: Option<CudaStorage> = None;
        for n0 in (0..n).step_by(chunk) {
            let g = chunk.min(n - n0);
            let cols = im2col(OP, x, x_layout, p, n0, g, ColsOrder::SideBySide)?; // [K, g·L]
                                                                                  // dy of the chunk as [O, g, L], contiguous: [O, g·L].
            let dy_t = dy.copy_contiguous(&dym.narrow(0, n0, g).permute(OP, &[1, 0, 2])?)?;
            let cols_t = Layout::new(Shape::new([g * l, k]), vec![1, g * l], 0);
            let part = dy_t.matmul(&Layout::contiguous([o, g * l]), &cols, &cols_t)?; // [O, K]
            dw = Some(match dw {
                None => part,
                Some(acc) => {
                    // conv_accumulate_T(T* acc, const T* part, i64 n)
                    dev.launch(
                        &kernels::CONV,
                        &format!("conv_accumulate_{suffix}"),
                        elementwise_config(o * k),
                        &[Arg::Ptr(acc.ptr()), Arg::Ptr(part.ptr()), Arg::I64((o * k) as i64)],
                    )?;
                    acc
                }
            });
        }
        match dw {
            Some(dw) => Ok(dw),
            None => CudaStorage::zeros(dev, self.dtype(), o * k),
        }
    }

    fn conv2d_backward_bias(&self, dy_layout: &Layout, p: &Conv2dParams) -> Result<Self> {
        const OP: &str = "conv2d_backward";
        check_conv2d_backward_bias(p, (self.dtype(), dy_layout))?;
        let suffix = self.dtype().name();
        let o = p.out_channels;
        let dev = self.cuda_device();
        if o == 0 || p.batch == 0 {
            return CudaStorage::zeros(dev, self.dtype(), o);
        }
        let db = CudaStorage::alloc(dev, self.dtype(), o)?;
        let dl = StridedLayout::new(OP, dy_layout)?;
        // conv_bias_grad_T(const T* dy, StridedLayout dl, T* db, i64 N, i64 O, i64 OH, i64 OW), 256 threads
        dev.launch(
            &kernels::CONV,
            &format!("conv_bias_grad_{suffix}"),
            rows_config(OP, o, 256, 0)?,
            &[
                Arg::Ptr(self.ptr()),
                Arg::Layout(dl),
                Arg::Ptr(db.ptr()),
                Arg::I64(p.batch as i64),
                Arg::I64(o as i64),
                Arg::I64(p.out_h as i64),
                Arg::I64(p.out_w as i64),
            ],
        )?;
        Ok(db)
    }
}
