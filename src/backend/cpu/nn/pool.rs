//! CPU kernels for pooling (`backend/contract/nn/pool.rs`). Each image plane
//! `[H, W]` is independent: the kernels walk planes (in parallel when the work
//! is large) and read the input through its strides, so non-contiguous inputs
//! need no copy. Windows are clipped to the input up front instead of testing
//! every tap.
//!
//! Shapes: x `[N, C, H, W]`, y / indices / dy `[N, C, OH, OW]`.

use crate::backend::contract::nn::pool::{check_avg_pool2d, check_avg_pool2d_backward, check_max_pool2d, check_max_pool2d_backward, Pool2dParams, PoolKernels};
use crate::backend::cpu::{contiguous_or_gather, CpuElem, CpuStorage, PARALLEL_THRESHOLD};
use crate::cpu_float_dispatch;
use crate::types::{Float, Layout};
use crate::{Error, Result};
use rayon::prelude::*;

/// The in-bounds part `[start, end)` of the window of output `o` along one axis.
#[inline]
fn window(o: usize, stride: usize, pad: usize, kernel: usize, len: usize) -> (usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let end = (start + kernel as isize).min(len as isize);
    (start.max(0) as usize, end.max(0) as usize)
}

/// Windows × taps below which pooling stays on one thread.
fn parallel(p: &Pool2dParams) -> bool {
    p.planes() > 1 && p.planes() * p.out_h * p.out_w * p.kernel.0 * p.kernel.1 >= PARALLEL_THRESHOLD
}

/// Run `f(plane, chunk)` for each plane's chunk of `out` (chunks of `chunk` elements).
fn for_planes<U: Send>(out: &mut [U], chunk: usize, p: &Pool2dParams, f: impl Fn(usize, &mut [U]) + Sync) {
    if chunk == 0 {
        return;
    }
    if parallel(p) {
        crate::backend::cpu::warm::keep_workers_warm();
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Where plane `i` (= n·C + c) of x starts, and its (h, w) strides.
fn plane_base(layout: &Layout, p: &Pool2dParams, i: usize) -> (usize, [usize; 2]) {
    let s = layout.strides();
    let (n, c) = (i / p.channels, i % p.channels);
    (layout.offset() + n * s[0] + c * s[1], [s[2], s[3]])
}

fn max_pool_forward<T: Float>(x: &[T], layout: &Layout, p: &Pool2dParams) -> (Vec<T>, Vec<i64>) {
    let plane_out = p.out_h * p.out_w;
    let mut y = vec![T::ZERO; p.planes() * plane_out];
    let mut idx = vec![0i64; y.len()];
    let plane = |i: usize, (y, idx): (&mut [T], &mut [i64])| {
        let (base, strides) = plane_base(layout, p, i);
        for oy in 0..p.out_h {
            let wy = window(oy, p.stride.0, p.padding.0, p.kernel.0, p.in_h);
            for ox in 0..p.out_w {
                let wx = window(ox, p.stride.1, p.padding.1, p.kernel.1, p.in_w);
                (y[oy * p.out_w + ox], idx[oy * p.out_w + ox]) = window_max(x, base, strides, p.in_w, wy, wx);
            }
        }
    };
    if plane_out == 0 {
        return (y, idx);
    }
    if parallel(p) {
        crate::backend::cpu::warm::keep_workers_warm();
        y.par_chunks_mut(plane_out)
            .zip(idx.par_chunks_mut(plane_out))
            .enumerate()
            .for_each(|(i, c)| plane(i, c));
    } else {
        y.chunks_mut(plane_out)
            .zip(idx.chunks_mut(plane_out))
            .enumerate()
            .for_each(|(i, c)| plane(i, c));
    }
    (y, idx)
}

/// The maximum of one clipped window and its flat in-plane index: the first
/// maximum at ties (taps in row-major order), NaN wins. An all −∞ window
/// reports its first tap, as PyTorch does.
#[inline]
fn window_max<T: Float>(x: &[T], base: usize, [hs, ws]: [usize; 2], in_w: usize, (y0, y1): (usize, usize), (x0, x1): (usize, usize)) -> (T, i64) {
    // Selects instead of branches: on real data `v > best` is a coin flip, and
    // a mispredicted branch costs more than the whole window.
    let (mut best, mut idx, mut nan) = (T::NEG_INFINITY, (y0 * in_w + x0) as i64, false);
    for iy in y0..y1 {
        let (row, flat) = (base + iy * hs, (iy * in_w + x0) as i64);
        let mut tap = |j: usize, v: T| {
            let gt = v > best;
            // `best` is never NaN (a NaN fails `>`), so this plain select is
            // exact and cheaper than NaN-aware `max`.
            best = if gt { v } else { best };
            idx += gt as i64 * (flat + j as i64 - idx);
            nan |= v.is_nan();
        };
        if ws == 1 {
            // Contiguous rows: a slice, so no bounds check per tap.
            x[row + x0..row + x1].iter().enumerate().for_each(|(j, &v)| tap(j, v));
        } else {
            (0..x1 - x0).for_each(|j| tap(j, x[row + (x0 + j) * ws]));
        }
    }
    if nan {
        return nan_window_max(x, base, [hs, ws], in_w, (y0, y1), (x0, x1), (best, idx));
    }
    (best, idx)
}

/// Redo one window under PyTorch's NaN rule (a NaN replaces anything, so the
/// last NaN wins); `found` is the NaN-blind result, kept when there is no NaN.
fn nan_window_max<T: Float>(
    x: &[T],
    base: usize,
    [hs, ws]: [usize; 2],
    in_w: usize,
    (y0, y1): (usize, usize),
    (x0, x1): (usize, usize),
    found: (T, i64),
) -> (T, i64) {
    let mut found = found;
    for iy in y0..y1 {
        for ix in x0..x1 {
            let v = x[base + iy * hs + ix * ws];
            if v.is_nan() {
                found = (v, (iy * in_w + ix) as i64);
            }
        }
    }
    found
}

fn max_pool_backward<T: Float>(dy: &[T], idx: &[i64], p: &Pool2dParams) -> Result<Vec<T>> {
    let (plane_in, plane_out) = (p.in_h * p.in_w, p.out_h * p.out_w);
    if let Some(&bad) = idx.iter().find(|&&i| i < 0 || i as usize >= plane_in) {
        return Err(Error::index(
            "max_pool2d_backward",
            format!("saved index {bad} is outside the {}×{} input plane", p.in_h, p.in_w),
        ));
    }
    let mut dx = vec![T::ZERO; p.planes() * plane_in];
    for_planes(&mut dx, plane_in, p, |i, dx| {
        let range = i * plane_out..(i + 1) * plane_out;
        for (&g, &j) in dy[range.clone()].iter().zip(&idx[range]) {
            dx[j as usize] += g;
        }
    });
    Ok(dx)
}

/// The divisor of window (y0..y1, x0..x1).
#[inline]
fn divisor(p: &Pool2dParams, count_include_pad: bool, (y0, y1): (usize, usize), (x0, x1): (usize, usize)) -> usize {
    // Without ceil mode a window never reaches past the padding, so the padded
    // window is always the full kernel.
    if count_include_pad {
        p.kernel.0 * p.kernel.1
    } else {
        (y1 - y0) * (x1 - x0)
    }
}

fn avg_pool_forward<T: Float>(x: &[T], layout: &Layout, p: &Pool2dParams, count_include_pad: bool) -> Vec<T> {
    let plane_out = p.out_h * p.out_w;
    let mut y = vec![T::ZERO; p.planes() * plane_out];
    for_planes(&mut y, plane_out, p, |i, out| {
        let (base, [hs, ws]) = plane_base(layout, p, i);
        for (oy, out_row) in out.chunks_exact_mut(p.out_w).enumerate() {
            let wy = window(oy, p.stride.0, p.padding.0, p.kernel.0, p.in_h);
            for (ox, o) in out_row.iter_mut().enumerate() {
                let wx = window(ox, p.stride.1, p.padding.1, p.kernel.1, p.in_w);
                let mut acc = T::ZERO;
                for iy in wy.0..wy.1 {
                    let row = base + iy * hs;
                    if ws == 1 {
                        x[row + wx.0..row + wx.1].iter().for_each(|&v| acc += v);
                    } else {
                        (wx.0..wx.1).for_each(|ix| acc += x[row + ix * ws]);
                    }
                }
                *o = acc / T::from_f64(divisor(p, count_include_pad, wy, wx) as f64);
            }
        }
    });
    y
}

fn avg_pool_backward<T: Float>(dy: &[T], p: &Pool2dParams, count_include_pad: bool) -> Vec<T> {
    let (plane_in, plane_out) = (p.in_h * p.in_w, p.out_h * p.out_w);
    let mut dx = vec![T::ZERO; p.planes() * plane_in];
    for_planes(&mut dx, plane_in, p, |i, dx| {
        let dy = &dy[i * plane_out..(i + 1) * plane_out];
        for oy in 0..p.out_h {
            let wy = window(oy, p.stride.0, p.padding.0, p.kernel.0, p.in_h);
            for ox in 0..p.out_w {
                let wx = window(ox, p.stride.1, p.padding.1, p.kernel.1, p.in_w);
                let g = dy[oy * p.out_w + ox] / T::from_f64(divisor(p, count_include_pad, wy, wx) as f64);
                for iy in wy.0..wy.1 {
                    for d in &mut dx[iy * p.in_w + wx.0..iy * p.in_w + wx.1] {
                        *d += g;
                    }
                }
            }
        }
    });
    dx
}

/// Visit every tap of every window of the naive formulation: `f(plane, out_index, tap)`
/// where `tap` is the flat in-plane input index, or `None` for a padding tap.
fn for_each_tap(p: &Pool2dParams, mut f: impl FnMut(usize, usize, Option<usize>)) {
    for plane in 0..p.planes() {
        for oy in 0..p.out_h {
            for ox in 0..p.out_w {
                for ki in 0..p.kernel.0 {
                    for kj in 0..p.kernel.1 {
                        let iy = (oy * p.stride.0 + ki) as isize - p.padding.0 as isize;
                        let ix = (ox * p.stride.1 + kj) as isize - p.padding.1 as isize;
                        let inside = iy >= 0 && ix >= 0 && iy < p.in_h as isize && ix < p.in_w as isize;
                        let tap = inside.then(|| iy as usize * p.in_w + ix as usize);
                        f(plane, oy * p.out_w + ox, tap);
                    }
                }
            }
        }
    }
}

/// Naive max pooling of contiguous x: every tap of the full window, padding as −∞.
pub fn max_pool2d_reference<T: Float>(x: &[T], p: &Pool2dParams) -> (Vec<T>, Vec<i64>) {
    let (plane_in, plane_out) = (p.in_h * p.in_w, p.out_h * p.out_w);
    let mut y = vec![T::NEG_INFINITY; p.planes() * plane_out];
    let mut idx = vec![-1i64; y.len()];
    for_each_tap(p, |plane, o, tap| {
        let k = plane * plane_out + o;
        if let Some(t) = tap {
            let v = x[plane * plane_in + t];
            if idx[k] < 0 || v > y[k] || v.is_nan() {
                y[k] = v;
                idx[k] = t as i64;
            }
        }
    });
    (y, idx)
}

/// Naive max-pool gradient: `dx[index] += dy`.
pub fn max_pool2d_backward_reference<T: Float>(dy: &[T], idx: &[i64], p: &Pool2dParams) -> Vec<T> {
    let (plane_in, plane_out) = (p.in_h * p.in_w, p.out_h * p.out_w);
    let mut dx = vec![T::ZERO; p.planes() * plane_in];
    for (k, (&g, &i)) in dy.iter().zip(idx).enumerate() {
        dx[(k / plane_out) * plane_in + i as usize] += g;
    }
    dx
}

/// Naive average pooling of contiguous x.
pub fn avg_pool2d_reference<T: Float>(x: &[T], p: &Pool2dParams, count_include_pad: bool) -> Vec<T> {
    let (plane_in, plane_out) = (p.in_h * p.in_w, p.out_h * p.out_w);
    let mut sums = vec![T::ZERO; p.planes() * plane_out];
    let mut counts = vec![0usize; sums.len()];
    for_each_tap(p, |plane, o, tap| {
        let k = plane * plane_out + o;
        if let Some(t) = tap {
            sums[k] += x[plane * plane_in + t];
            counts[k] += 1;
        } else if count_include_pad {
            counts[k] += 1;
        }
    });
    sums.iter().zip(&counts).map(|(&s, &c)| s / T::from_f64(c as f64)).collect()
}

/// Naive average-pool gradient.
pub fn avg_pool2d_backward_reference<T: Float>(dy: &[T], p: &Pool2dParams, count_include_pad: bool) -> Vec<T> {
    let (plane_in, plane_out) = (p.in_h * p.in_w, p.out_h * p.out_w);
    let mut counts = vec![0usize; p.planes() * plane_out];
    for_each_tap(p, |plane, o, tap| {
        if tap.is_some() || count_include_pad {
            counts[plane * plane_out + o] += 1;
        }
    });
    let mut dx = vec![T::ZERO; p.planes() * plane_in];
    for_each_tap(p, |plane, o, tap| {
        let k = plane * plane_out + o;
        if let Some(t) = tap {
            dx[plane * plane_in + t] += dy[k] / T::from_f64(counts[k] as f64);
        }
    });
    dx
}

impl PoolKernels for CpuStorage {
    fn max_pool2d(&self, layout: &Layout, p: &Pool2dParams) -> Result<(Self, Self)> {
        check_max_pool2d(p, (self.dtype(), layout))?;
        cpu_float_dispatch!("max_pool2d", self, |xv: T| {
            let (y, idx) = max_pool_forward::<T>(xv, layout, p);
            Ok((T::wrap(y), CpuStorage::I64(idx)))
        })
    }

    fn max_pool2d_backward(&self, dy_layout: &Layout, indices: &Self, indices_layout: &Layout, p: &Pool2dParams) -> Result<Self> {
        check_max_pool2d_backward(p, (self.dtype(), dy_layout), (indices.dtype(), indices_layout))?;
        cpu_float_dispatch!("max_pool2d_backward", self, |gv: T| {
            let CpuStorage::I64(iv) = indices else {
                return Err(Error::dtype(
                    "max_pool2d_backward",
                    format!("saved indices have dtype {}, expected i64", indices.dtype()),
                ));
            };
            let dy = contiguous_or_gather(gv, dy_layout);
            let idx = contiguous_or_gather(iv, indices_layout);
            Ok(T::wrap(max_pool_backward(&dy, &idx, p)?))
        })
    }

    fn avg_pool2d(&self, layout: &Layout, p: &Pool2dParams, count_include_pad: bool) -> Result<Self> {
        check_avg_pool2d(p, (self.dtype(), layout))?;
        cpu_float_dispatch!("avg_pool2d", self, |xv: T| Ok(T::wrap(avg_pool_forward::<T>(xv, layout, p, count_include_pad))))
    }

    fn avg_pool2d_backward(&self, dy_layout: &Layout, p: &Pool2dParams, count_include_pad: bool) -> Result<Self> {
        check_avg_pool2d_backward(p, (self.dtype(), dy_layout))?;
        cpu_float_dispatch!("avg_pool2d_backward", self, |gv: T| {
            let dy = contiguous_or_gather(gv, dy_layout);
            Ok(T::wrap(avg_pool_backward(&dy, p, count_include_pad)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::test_data::unit_hash;

    fn params(n: usize, c: usize, hw: (usize, usize), k: (usize, usize), s: (usize, usize), pad: (usize, usize)) -> Pool2dParams {
        Pool2dParams {
            batch: n,
            channels: c,
            in_h: hw.0,
            in_w: hw.1,
            kernel: k,
            stride: s,
            padding: pad,
            out_h: (hw.0 + 2 * pad.0 - k.0) / s.0 + 1,
            out_w: (hw.1 + 2 * pad.1 - k.1) / s.1 + 1,
        }
    }

    /// Coarse values so that ties happen: integers in -4..4.
    fn values(len: usize, seed: u64) -> Vec<f64> {
        unit_hash(len, seed).into_iter().map(|u| (u * 8.0).floor() - 4.0).collect()
    }

    #[test]
    fn fast_kernels_match_the_reference() {
        let cases = [
            params(1, 1, (4, 4), (2, 2), (2, 2), (0, 0)),
            params(2, 3, (5, 7), (3, 2), (1, 2), (1, 1)),
            params(1, 2, (6, 5), (3, 3), (2, 1), (1, 0)),
            params(2, 2, (3, 3), (1, 1), (1, 1), (0, 0)),
            params(2, 3, (1, 4), (1, 3), (1, 1), (0, 1)),
            params(8, 16, (28, 28), (2, 2), (2, 2), (0, 0)), // parallel
            params(4, 8, (14, 14), (3, 3), (2, 2), (1, 1)),  // parallel, padded
        ];
        for p in cases {
            let x = values(p.input_dims().iter().product(), 1);
            let dy = values(p.output_dims().iter().product(), 2);
            // Permuted copy: stored [N, H, W, C], viewed as NCHW.
            let [_, c, h, w] = p.input_dims();
            let perm = Layout::new(p.input_dims().to_vec().into(), vec![h * w * c, 1, w * c, c], 0);
            let mut nhwc = vec![0.0; x.len()];
            for (o, &v) in perm.offsets().zip(&x) {
                nhwc[o] = v;
            }
            let contiguous = Layout::contiguous(p.input_dims().to_vec());
            let (ry, ri) = max_pool2d_reference(&x, &p);
            for (data, layout) in [(&x, &contiguous), (&nhwc, &perm)] {
                let (y, i) = max_pool_forward(data, layout, &p);
                assert_eq!((&y, &i), (&ry, &ri), "max {p:?}");
                for include in [true, false] {
                    let y = avg_pool_forward(data, layout, &p, include);
                    let r = avg_pool2d_reference(&x, &p, include);
                    assert!(y.iter().zip(&r).all(|(a, b)| (a - b).abs() < 1e-12), "avg {p:?}");
                }
            }
            assert_eq!(max_pool_backward(&dy, &ri, &p).unwrap(), max_pool2d_backward_reference(&dy, &ri, &p));
            for include in [true, false] {
                let d = avg_pool_backward(&dy, &p, include);
                let r = avg_pool2d_backward_reference(&dy, &p, include);
                assert!(d.iter().zip(&r).all(|(a, b)| (a - b).abs() < 1e-12), "avg backward {p:?}");
            }
        }
    }

    #[test]
    fn bad_saved_indices_are_an_error() {
        let p = params(1, 1, (2, 2), (2, 2), (2, 2), (0, 0));
        assert!(max_pool_backward(&[1.0f64], &[4], &p).is_err());
        assert!(max_pool_backward(&[1.0f64], &[-1], &p).is_err());
    }
}
