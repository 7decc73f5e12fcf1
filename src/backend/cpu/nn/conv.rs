//! CPU kernels for conv2d (`backend/contract/nn/conv.rs`): im2col + one GEMM
//! per image (matrixmultiply's sgemm/dgemm), split over the batch with rayon
//! when the work is large. 1×1 convolutions with stride 1 and no padding skip
//! im2col: the image itself is the column matrix.
//!
//! Shapes: x `[N, C, H, W]`, w `[O, C, kh, kw]` seen as `[O, K]` with
//! `K = C·kh·kw`, cols `[K, L]` with `L = OH·OW`, y `[N, O, L]`.

use super::patches;
use crate::backend::contract::nn::conv::{
    check_conv2d, check_conv2d_backward_bias, check_conv2d_backward_input, check_conv2d_backward_weight, Conv2dParams, ConvKernels,
};
use crate::backend::cpu::{contiguous_or_gather, CpuElem, CpuStorage, PARALLEL_THRESHOLD};
use crate::backend::described;
use crate::cpu_float_dispatch;
use crate::types::{Float, Layout};
use crate::{Error, Result};
use rayon::prelude::*;

/// Multiply-adds below which a convolution stays on one thread. A GEMM
/// multiply-add is far cheaper than an elementwise op's element, hence the factor.
const PARALLEL_MACS: usize = PARALLEL_THRESHOLD * 8;

/// The float types matrixmultiply has a GEMM for.
pub(crate) trait GemmElem: Float + CpuElem {
    /// `c = a·b + beta·c` on strided matrices (strides in elements).
    ///
    /// # Safety
    /// Every element the strides address must lie inside the pointed-to buffers.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(m: usize, k: usize, n: usize, a: *const Self, sa: [isize; 2], b: *const Self, sb: [isize; 2], beta: Self, c: *mut Self, sc: [isize; 2]);
}

impl GemmElem for f32 {
    unsafe fn gemm_raw(m: usize, k: usize, n: usize, a: *const f32, sa: [isize; 2], b: *const f32, sb: [isize; 2], beta: f32, c: *mut f32, sc: [isize; 2]) {
        matrixmultiply::sgemm(m, k, n, 1.0, a, sa[0], sa[1], b, sb[0], sb[1], beta, c, sc[0], sc[1])
    }
}

impl GemmElem for f64 {
    unsafe fn gemm_raw(m: usize, k: usize, n: usize, a: *const f64, sa: [isize; 2], b: *const f64, sb: [isize; 2], beta: f64, c: *mut f64, sc: [isize; 2]) {
        matrixmultiply::dgemm(m, k, n, 1.0, a, sa[0], sa[1], b, sb[0], sb[1], beta, c, sc[0], sc[1])
    }
}

/// Elements a `[rows, cols]` matrix with (row, column) strides `s` spans.
fn span(rows: usize, cols: usize, s: [usize; 2]) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * s[0] + (cols - 1) * s[1] + 1
    }
}

/// `c[m, n] = a[m, k] · b[k, n] + beta·c` with (row, column) strides.
/// `beta` is 0 (overwrite, `c` need not be initialised) or 1 (accumulate).
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm<T: GemmElem>(m: usize, k: usize, n: usize, a: &[T], sa: [usize; 2], b: &[T], sb: [usize; 2], beta: T, c: &mut [T], sc: [usize; 2]) {
    if m == 0 || n == 0 {
        return;
    }
    // Guards the unsafe call below: callers derive these from checked params.
    assert!(
        span(m, k, sa) <= a.len() && span(k, n, sb) <= b.len() && span(m, n, sc) <= c.len(),
        "conv gemm: operand strides exceed their buffers"
    );
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                let e = &mut c[i * sc[0] + j * sc[1]];
                *e = if beta == T::ZERO { T::ZERO } else { beta * *e };
            }
        }
        return;
    }
    let s = |v: [usize; 2]| [v[0] as isize, v[1] as isize];
    // SAFETY: the assert above keeps every addressed element inside a, b and c;
    // `c` is borrowed mutably, so it aliases neither a nor b.
    unsafe { T::gemm_raw(m, k, n, a.as_ptr(), s(sa), b.as_ptr(), s(sb), beta, c.as_mut_ptr(), s(sc)) }
}

/// Output positions `lo..hi` along one axis whose input index
/// `o·stride + k − pad` falls inside `0..len` (the others read padding).
fn valid_range(k: usize, pad: usize, stride: usize, len: usize, out: usize) -> (usize, usize) {
    let lo = if k >= pad { 0 } else { (pad - k).div_ceil(stride) };
    let hi = if len + pad <= k { 0 } else { (len + pad - k).div_ceil(stride) }.min(out);
    (lo.min(hi), hi)
}

/// Unfold one image into columns. x: element (c, h, w) at `base + c·xs[0] + h·xs[1] + w·xs[2]`;
/// cols: `[K, L]` contiguous, row `(c, ki, kj)`, column `(oh, ow)`.
fn im2col<T: Float>(x: &[T], base: usize, xs: [usize; 3], p: &Conv2dParams, cols: &mut [T]) {
    let ((kh, kw), (sh, sw), (ph, pw)) = (p.kernel, p.stride, p.padding);
    let (ow, l) = (p.out_w, p.out_plane());
    let mut rows = cols.chunks_exact_mut(l);
    for c in 0..p.in_channels {
        for ki in 0..kh {
            let (y_lo, y_hi) = valid_range(ki, ph, sh, p.in_h, p.out_h);
            for kj in 0..kw {
                let (x_lo, x_hi) = valid_range(kj, pw, sw, p.in_w, ow);
                let Some(row) = rows.next() else { return };
                let step = sw * xs[2];
                for (oy, dst) in row.chunks_exact_mut(ow).enumerate() {
                    if oy < y_lo || oy >= y_hi {
                        dst.fill(T::ZERO);
                        continue;
                    }
                    dst[..x_lo].fill(T::ZERO);
                    dst[x_hi..].fill(T::ZERO);
                    let start = base + c * xs[0] + (oy * sh + ki - ph) * xs[1] + (x_lo * sw + kj - pw) * xs[2];
                    let dst = &mut dst[x_lo..x_hi];
                    if step == 1 {
                        dst.copy_from_slice(&x[start..start + dst.len()]);
                    } else {
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = x[start + i * step];
                        }
                    }
                }
            }
        }
    }
}

/// Fold columns back into one image, summing overlaps: the adjoint of `im2col`.
/// cols: `[K, L]`; dx: `[C, H, W]` contiguous, accumulated into.
fn col2im<T: Float>(cols: &[T], p: &Conv2dParams, dx: &mut [T]) {
    let ((kh, kw), (sh, sw), (ph, pw)) = (p.kernel, p.stride, p.padding);
    let (w, ow, l) = (p.in_w, p.out_w, p.out_plane());
    let mut rows = cols.chunks_exact(l);
    for c in 0..p.in_channels {
        let plane = &mut dx[c * p.in_h * w..(c + 1) * p.in_h * w];
        for ki in 0..kh {
            let (y_lo, y_hi) = valid_range(ki, ph, sh, p.in_h, p.out_h);
            for kj in 0..kw {
                let (x_lo, x_hi) = valid_range(kj, pw, sw, w, ow);
                let Some(row) = rows.next() else { return };
                for oy in y_lo..y_hi {
                    let start = (oy * sh + ki - ph) * w + x_lo * sw + kj - pw;
                    for (i, &v) in row[oy * ow + x_lo..oy * ow + x_hi].iter().enumerate() {
                        plane[start + i * sw] += v;
                    }
                }
            }
        }
    }
}

/// How one image of x is addressed: its strides over (c, h, w), and whether the
/// conv is 1×1/stride 1/no padding over rows that merge, so that the image
/// itself is the `[K, L]` column matrix with strides (xs[0], xs[2]).
struct ImageView {
    xs: [usize; 3],
    batch_stride: usize,
    direct: bool,
}

impl ImageView {
    fn new(layout: &Layout, p: &Conv2dParams) -> Self {
        let s = layout.strides();
        let plain = p.kernel == (1, 1) && p.stride == (1, 1) && p.padding == (0, 0);
        ImageView {
            xs: [s[1], s[2], s[3]],
            batch_stride: s[0],
            direct: plain && (p.in_h == 1 || s[2] == p.in_w * s[3]),
        }
    }
    /// The column-matrix strides of an image in the direct case.
    fn direct_strides(&self) -> [usize; 2] {
        [self.xs[0], self.xs[2]]
    }
    fn cols_len(&self, p: &Conv2dParams) -> usize {
        if self.direct {
            0
        } else {
            p.col_rows() * p.out_plane()
        }
    }
}

fn parallel(p: &Conv2dParams) -> bool {
    p.batch > 1 && p.batch * p.out_channels * p.col_rows() * p.out_plane() >= PARALLEL_MACS
}

/// y `[N, O, L]` = w `[O, K]` · cols(xₙ) + b. `w` and `bias` contiguous.
fn conv2d_forward<T: GemmElem>(x: &[T], x_layout: &Layout, w: &[T], bias: Option<&[T]>, p: &Conv2dParams) -> Vec<T> {
    let (o, k, l) = (p.out_channels, p.col_rows(), p.out_plane());
    let mut y = crate::backend::cpu::alloc::zeroed(p.batch * o * l);
    if y.is_empty() {
        return y;
    }
    let view = ImageView::new(x_layout, p);
    let image = |n: usize, y_n: &mut [T], cols: &mut [T]| {
        let beta = match bias {
            Some(b) => {
                for (row, &bv) in y_n.chunks_exact_mut(l).zip(b) {
                    row.fill(bv);
                }
                T::ONE
            }
            None => T::ZERO,
        };
        let base = x_layout.offset() + n * view.batch_stride;
        if view.direct {
            gemm(o, k, l, w, [k, 1], &x[base..], view.direct_strides(), beta, y_n, [l, 1]);
        } else {
            im2col(x, base, view.xs, p, cols);
            gemm(o, k, l, w, [k, 1], cols, [l, 1], beta, y_n, [l, 1]);
        }
    };
    let cols_len = view.cols_len(p);
    if parallel(p) {
        crate::backend::cpu::warm::keep_workers_warm();
        y.par_chunks_mut(o * l)
            .enumerate()
            .for_each_init(|| vec![T::ZERO; cols_len], |cols, (n, y_n)| image(n, y_n, cols));
    } else {
        let mut cols = vec![T::ZERO; cols_len];
        for (n, y_n) in y.chunks_mut(o * l).enumerate() {
            image(n, y_n, &mut cols);
        }
    }
    y
}

/// dx `[N, C, H, W]`: dcols = wᵀ `[K, O]` · dyₙ `[O, L]`, folded back by col2im.
fn conv2d_dx<T: GemmElem>(dy: &[T], w: &[T], p: &Conv2dParams) -> Vec<T> {
    let (o, k, l) = (p.out_channels, p.col_rows(), p.out_plane());
    let plane = p.in_channels * p.in_h * p.in_w;
    let mut dx = crate::backend::cpu::alloc::zeroed(p.batch * plane);
    if dx.is_empty() {
        return dx;
    }
    // dx is ours and contiguous, so the direct case applies whenever the conv is 1×1 plain.
    let direct = p.kernel == (1, 1) && p.stride == (1, 1) && p.padding == (0, 0);
    let image = |n: usize, dx_n: &mut [T], dcols: &mut [T]| {
        let dy_n = &dy[n * o * l..(n + 1) * o * l];
        if direct {
            gemm(k, o, l, w, [1, k], dy_n, [l, 1], T::ZERO, dx_n, [l, 1]);
        } else {
            gemm(k, o, l, w, [1, k], dy_n, [l, 1], T::ZERO, dcols, [l, 1]);
            col2im(dcols, p, dx_n);
        }
    };
    let cols_len = if direct { 0 } else { k * l };
    if parallel(p) {
        crate::backend::cpu::warm::keep_workers_warm();
        dx.par_chunks_mut(plane)
            .enumerate()
            .for_each_init(|| vec![T::ZERO; cols_len], |dcols, (n, dx_n)| image(n, dx_n, dcols));
    } else {
        let mut dcols = vec![T::ZERO; cols_len];
        for (n, dx_n) in dx.chunks_mut(plane).enumerate() {
            image(n, dx_n, &mut dcols);
        }
    }
    dx
}

/// dw `[O, K]` = Σₙ dyₙ `[O, L]` · cols(xₙ)ᵀ `[L, K]`.
fn conv2d_dw<T: GemmElem>(dy: &[T], x: &[T], x_layout: &Layout, p: &Conv2dParams) -> Vec<T> {
    let (o, k, l) = (p.out_channels, p.col_rows(), p.out_plane());
    let view = ImageView::new(x_layout, p);
    // Accumulate images `range` into `dw` (beta = 1).
    let images = |range: std::ops::Range<usize>, dw: &mut [T]| {
        let mut cols = vec![T::ZERO; view.cols_len(p)];
        for n in range {
            let dy_n = &dy[n * o * l..(n + 1) * o * l];
            let base = x_layout.offset() + n * view.batch_stride;
            if view.direct {
                let [rs, cs] = view.direct_strides();
                gemm(o, l, k, dy_n, [l, 1], &x[base..], [cs, rs], T::ONE, dw, [k, 1]);
            } else {
                im2col(x, base, view.xs, p, &mut cols);
                gemm(o, l, k, dy_n, [l, 1], &cols, [1, l], T::ONE, dw, [k, 1]);
            }
        }
    };
    let mut dw = crate::backend::cpu::alloc::zeroed(o * k);
    if !parallel(p) {
        images(0..p.batch, &mut dw);
        return dw;
    }
    // Fixed groups of images, partial sums added in group order: the result does
    // not depend on how rayon schedules the work.
    let groups = rayon::current_num_threads().clamp(1, p.batch);
    let per = p.batch.div_ceil(groups);
    crate::backend::cpu::warm::keep_workers_warm();
    let partials: Vec<Vec<T>> = (0..groups)
        .into_par_iter()
        .map(|g| {
            let mut part = vec![T::ZERO; o * k];
            images(g * per..((g + 1) * per).min(p.batch), &mut part);
            part
        })
        .collect();
    for part in partials {
        for (d, v) in dw.iter_mut().zip(part) {
            *d += v;
        }
    }
    dw
}

/// db `[O]` = Σ over n and positions of dy `[N, O, L]`.
fn conv2d_db<T: Float>(dy: &[T], p: &Conv2dParams) -> Vec<T> {
    let (o, l) = (p.out_channels, p.out_plane());
    let mut db = crate::backend::cpu::alloc::zeroed(o);
    for image in dy.chunks_exact(o * l) {
        for (d, row) in db.iter_mut().zip(image.chunks_exact(l)) {
            *d += lane_sum(row);
        }
    }
    db
}

/// Σ row with eight independent accumulators: a serial sum is bound by the
/// add latency, lanes let the compiler use one vector add per eight elements.
fn lane_sum<T: Float>(row: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder().iter().copied().sum::<T>();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().copied().sum::<T>() + tail
}

/// The naive seven-loop convolution on contiguous x `[N, C, H, W]`, w `[O, C, kh, kw]`.
pub fn conv2d_reference<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, p: &Conv2dParams) -> Vec<T> {
    let [n_, c_, h_, w_] = p.input_dims();
    let ((kh, kw), (sh, sw), (ph, pw)) = (p.kernel, p.stride, p.padding);
    let mut y = Vec::with_capacity(p.output_dims().iter().product());
    for n in 0..n_ {
        for o in 0..p.out_channels {
            for oy in 0..p.out_h {
                for ox in 0..p.out_w {
                    let mut acc = bias.map_or(T::ZERO, |b| b[o]);
                    for c in 0..c_ {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let (iy, ix) = ((oy * sh + ki) as isize - ph as isize, (ox * sw + kj) as isize - pw as isize);
                                if iy < 0 || ix < 0 || iy >= h_ as isize || ix >= w_ as isize {
                                    continue;
                                }
                                let xi = ((n * c_ + c) * h_ + iy as usize) * w_ + ix as usize;
                                acc += x[xi] * w[((o * c_ + c) * kh + ki) * kw + kj];
                            }
                        }
                    }
                    y.push(acc);
                }
            }
        }
    }
    y
}

/// Naive gradients `(dx, dw, db)` of `conv2d_reference` for contiguous operands.
pub fn conv2d_backward_reference<T: Float>(x: &[T], w: &[T], dy: &[T], p: &Conv2dParams) -> (Vec<T>, Vec<T>, Vec<T>) {
    let [n_, c_, h_, w_] = p.input_dims();
    let ((kh, kw), (sh, sw), (ph, pw)) = (p.kernel, p.stride, p.padding);
    let mut dx = vec![T::ZERO; x.len()];
    let mut dw = vec![T::ZERO; w.len()];
    let mut db = vec![T::ZERO; p.out_channels];
    for n in 0..n_ {
        for o in 0..p.out_channels {
            for oy in 0..p.out_h {
                for ox in 0..p.out_w {
                    let g = dy[((n * p.out_channels + o) * p.out_h + oy) * p.out_w + ox];
                    db[o] += g;
                    for c in 0..c_ {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let (iy, ix) = ((oy * sh + ki) as isize - ph as isize, (ox * sw + kj) as isize - pw as isize);
                                if iy < 0 || ix < 0 || iy >= h_ as isize || ix >= w_ as isize {
                                    continue;
                                }
                                let xi = ((n * c_ + c) * h_ + iy as usize) * w_ + ix as usize;
                                let wi = ((o * c_ + c) * kh + ki) * kw + kj;
                                dx[xi] += g * w[wi];
                                dw[wi] += g * x[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}

/// The typed slice of a second operand (the op layer has checked dtypes; this
/// only turns a mismatch into an error instead of a panic).
fn operand<'a, T: CpuElem>(op: &'static str, what: &str, s: &'a CpuStorage) -> Result<&'a [T]> {
    T::slice(s).ok_or_else(|| Error::dtype(op, format!("{what} has dtype {}, expected {}", s.dtype(), T::DTYPE)))
}

impl ConvKernels for CpuStorage {
    fn conv2d(&self, x_layout: &Layout, w: &Self, w_layout: &Layout, bias: Option<(&Self, &Layout)>, p: &Conv2dParams) -> Result<Self> {
        check_conv2d(p, (self.dtype(), x_layout), (w.dtype(), w_layout), described(bias))?;
        cpu_float_dispatch!("conv2d", self, |xv: T| {
            let w = contiguous_or_gather(operand::<T>("conv2d", "weight", w)?, w_layout);
            let b = match bias {
                Some((b, bl)) => Some(contiguous_or_gather(operand::<T>("conv2d", "bias", b)?, bl)),
                None => None,
            };
            Ok(T::wrap(conv2d_forward(xv, x_layout, &w, b.as_deref(), p)))
        })
    }

    fn conv2d_backward_input(&self, dy_layout: &Layout, w: &Self, w_layout: &Layout, p: &Conv2dParams) -> Result<Self> {
        check_conv2d_backward_input(p, (self.dtype(), dy_layout), (w.dtype(), w_layout))?;
        cpu_float_dispatch!("conv2d_backward", self, |gv: T| {
            let w = contiguous_or_gather(operand::<T>("conv2d_backward", "weight", w)?, w_layout);
            Ok(T::wrap(if patches::applies(p) {
                patches::input_grad(gv, dy_layout, &w, p)
            } else {
                conv2d_dx(&contiguous_or_gather(gv, dy_layout), &w, p)
            }))
        })
    }

    fn conv2d_backward_weight(&self, dy_layout: &Layout, x: &Self, x_layout: &Layout, p: &Conv2dParams) -> Result<Self> {
        check_conv2d_backward_weight(p, (self.dtype(), dy_layout), (x.dtype(), x_layout))?;
        cpu_float_dispatch!("conv2d_backward", self, |gv: T| {
            let x = operand::<T>("conv2d_backward", "input", x)?;
            Ok(T::wrap(if patches::applies(p) {
                patches::weight_grad(gv, dy_layout, x, x_layout, p)
            } else {
                conv2d_dw(&contiguous_or_gather(gv, dy_layout), x, x_layout, p)
            }))
        })
    }

    fn conv2d_backward_bias(&self, dy_layout: &Layout, p: &Conv2dParams) -> Result<Self> {
        check_conv2d_backward_bias(p, (self.dtype(), dy_layout))?;
        cpu_float_dispatch!("conv2d_backward", self, |gv: T| {
            let dy = contiguous_or_gather(gv, dy_layout);
            Ok(T::wrap(conv2d_db(&dy, p)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::patches;
    use super::*;
    use crate::backend::cpu::test_data::{assert_close, unit_hash};

    fn params(n: usize, c: usize, hw: (usize, usize), o: usize, k: (usize, usize), s: (usize, usize), pad: (usize, usize)) -> Conv2dParams {
        Conv2dParams {
            batch: n,
            in_channels: c,
            in_h: hw.0,
            in_w: hw.1,
            out_channels: o,
            kernel: k,
            stride: s,
            padding: pad,
            out_h: (hw.0 + 2 * pad.0 - k.0) / s.0 + 1,
            out_w: (hw.1 + 2 * pad.1 - k.1) / s.1 + 1,
        }
    }

    /// Deterministic values in [-1, 1).
    fn values<T: Float>(len: usize, seed: u64) -> Vec<T> {
        unit_hash(len, seed).into_iter().map(|u| T::from_f64(u * 2.0 - 1.0)).collect()
    }

    fn cases() -> Vec<Conv2dParams> {
        vec![
            params(1, 1, (3, 3), 1, (2, 2), (1, 1), (0, 0)),
            params(2, 3, (5, 4), 2, (3, 2), (1, 1), (1, 1)),
            params(2, 2, (7, 6), 3, (3, 3), (2, 3), (2, 1)),
            params(3, 4, (4, 5), 5, (1, 1), (1, 1), (0, 0)),     // direct 1×1
            params(2, 3, (6, 6), 2, (1, 1), (2, 2), (1, 0)),     // 1×1 through im2col
            params(1, 2, (2, 2), 2, (4, 4), (1, 1), (1, 1)),     // kernel covers the padded input
            params(4, 3, (16, 16), 16, (3, 3), (1, 1), (1, 1)),  // large enough to go parallel
            params(5, 32, (12, 12), 32, (1, 1), (1, 1), (0, 0)), // parallel and direct
            params(3, 1, (28, 28), 8, (4, 4), (4, 4), (0, 0)),   // patches (ViT embedding)
            params(2, 3, (9, 8), 4, (2, 2), (2, 2), (0, 0)),     // patches, last input row uncovered
            params(2, 2, (6, 7), 3, (3, 2), (3, 2), (0, 0)),     // patches, rectangular, last column uncovered
        ]
    }

    fn check_against_reference<T: GemmElem>(p: &Conv2dParams, tol: f64) {
        let x: Vec<T> = values(p.input_dims().iter().product(), 1);
        let w: Vec<T> = values(p.weight_dims().iter().product(), 2);
        let b: Vec<T> = values(p.out_channels, 3);
        let dy: Vec<T> = values(p.output_dims().iter().product(), 4);
        let xl = Layout::contiguous(p.input_dims().to_vec());
        let y = conv2d_forward(&x, &xl, &w, Some(&b), p);
        assert_close(&y, &conv2d_reference(&x, &w, Some(&b), p), tol, &format!("y {p:?}"));
        let y = conv2d_forward(&x, &xl, &w, None, p);
        assert_close(&y, &conv2d_reference(&x, &w, None, p), tol, &format!("y (no bias) {p:?}"));
        let (dx, dw, db) = conv2d_backward_reference(&x, &w, &dy, p);
        assert_close(&conv2d_dx(&dy, &w, p), &dx, tol, &format!("dx {p:?}"));
        assert_close(&conv2d_dw(&dy, &x, &xl, p), &dw, tol, &format!("dw {p:?}"));
        assert_close(&conv2d_db(&dy, p), &db, tol, &format!("db {p:?}"));
    }

    #[test]
    fn fast_kernels_match_the_reference() {
        for p in cases() {
            check_against_reference::<f64>(&p, 1e-10);
            check_against_reference::<f32>(&p, 1e-4);
        }
        assert!(parallel(&cases()[6]) && parallel(&cases()[7]));
    }

    /// The patch path against the general im2col path and the naive reference,
    /// through contiguous and channels-last inputs.
    fn check_patches<T: GemmElem>(p: &Conv2dParams, tol: f64) {
        let [n, c, h, w] = p.input_dims();
        let x: Vec<T> = values(n * c * h * w, 8);
        let wt: Vec<T> = values(p.weight_dims().iter().product(), 9);
        let dy: Vec<T> = values(p.output_dims().iter().product(), 11);
        let dy_layout = Layout::contiguous(p.output_dims().to_vec());
        let nhwc = Layout::new(p.input_dims().to_vec().into(), vec![h * w * c, 1, w * c, c], 0);
        for layout in [Layout::contiguous(p.input_dims().to_vec()), nhwc] {
            let what = format!("{p:?} strides {:?}", layout.strides());
            let dw = patches::weight_grad(&dy, &dy_layout, &x, &layout, p);
            assert_close(&dw, &conv2d_dw(&dy, &x, &layout, p), tol, &format!("dw {what}"));
            let nchw: Vec<T> = layout.offsets().map(|o| x[o]).collect();
            let (_, dw_ref, _) = conv2d_backward_reference(&nchw, &wt, &dy, p);
            assert_close(&dw, &dw_ref, tol, &format!("dw (reference) {what}"));
        }
        let dx = patches::input_grad(&dy, &dy_layout, &wt, p);
        assert_close(&dx, &conv2d_dx(&dy, &wt, p), tol, &format!("dx {p:?}"));
        // dy read through its strides: stored as [N, OH, OW, O].
        let [_, o, oh, ow] = p.output_dims();
        let dy_nhwc: Vec<T> = values(n * o * oh * ow, 12);
        let nhwc_dy = Layout::new(p.output_dims().to_vec().into(), vec![oh * ow * o, 1, ow * o, o], 0);
        let dy_nchw: Vec<T> = nhwc_dy.offsets().map(|k| dy_nhwc[k]).collect();
        let dx = patches::input_grad(&dy_nhwc, &nhwc_dy, &wt, p);
        assert_close(&dx, &conv2d_dx(&dy_nchw, &wt, p), tol, &format!("dx (strided dy) {p:?}"));
        let xl = Layout::contiguous(p.input_dims().to_vec());
        let dw = patches::weight_grad(&dy_nhwc, &nhwc_dy, &x, &xl, p);
        assert_close(&dw, &conv2d_dw(&dy_nchw, &x, &xl, p), tol, &format!("dw (strided dy) {p:?}"));
    }

    #[test]
    fn patch_path_matches_the_general_path() {
        let patch_cases: Vec<Conv2dParams> = cases().into_iter().filter(patches::applies).collect();
        assert!(patch_cases.len() >= 3);
        for p in &patch_cases {
            check_patches::<f64>(p, 1e-10);
            check_patches::<f32>(p, 1e-4);
        }
        // Shapes the general path's tests above do not hold: one image and one channel, a 1×3 patch.
        for p in [params(1, 1, (4, 4), 2, (2, 2), (2, 2), (0, 0)), params(2, 3, (3, 5), 2, (1, 3), (1, 3), (0, 0))] {
            assert!(patches::applies(&p));
            check_patches::<f64>(&p, 1e-10);
        }
    }

    #[test]
    fn channels_last_input_is_read_through_its_strides() {
        for p in cases() {
            let [n, c, h, w] = p.input_dims();
            // Stored as [N, H, W, C], viewed as [N, C, H, W].
            let nhwc: Vec<f64> = values(n * h * w * c, 5);
            let layout = Layout::new(p.input_dims().to_vec().into(), vec![h * w * c, 1, w * c, c], 0);
            let nchw: Vec<f64> = layout.offsets().map(|o| nhwc[o]).collect();
            let wt: Vec<f64> = values(p.weight_dims().iter().product(), 6);
            let dy: Vec<f64> = values(p.output_dims().iter().product(), 7);
            assert_close(
                &conv2d_forward(&nhwc, &layout, &wt, None, &p),
                &conv2d_reference(&nchw, &wt, None, &p),
                1e-10,
                "y",
            );
            let (_, dw, _) = conv2d_backward_reference(&nchw, &wt, &dy, &p);
            assert_close(&conv2d_dw(&dy, &nhwc, &layout, &p), &dw, 1e-10, "dw");
        }
    }
}
