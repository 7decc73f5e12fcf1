//! Convolutions whose kernel equals their stride, without padding: a ViT's
//! patch embedding. The patches do not overlap, so im2col is a pure
//! permutation: the patch matrix P `[N·L, K]` (row `(n, oy, ox)`, column
//! `(c, ki, kj)`) holds every input element at most once, and the whole batch
//! is one GEMM instead of one small GEMM per image. The backward runs here:
//! - weight gradient: dw `[O, K]` = dyᵀ `[O, N·L]` · P;
//! - input gradient: dP `[N·L, K]` = dyᵀᵀ · w, scattered back into dx (inputs
//!   that no patch covers, past the last whole patch, get zero).
//!
//! v1 (rows): vit-tiny's patch embedding (Conv2d 1→64, kernel = stride = 4 on
//! 28×28, batch 128) ran 128 GEMMs of `[64, 16] · [16, 49]` per call, whose
//! fixed costs dominated. vit-tiny train_step, 2 threads, load 2.5, two rounds
//! interleaved, TAMER_PROFILE=1, 6 calls: backward 13.1 / 16.0 ms -> 10.0 /
//! 10.1 ms. The forward this way (gather, one single-threaded GEMM, permute)
//! measured slower than `conv.rs`'s images split over the threads (3.1 -> 5.3
//! ms), so the forward stays there. The general path stays for every
//! convolution, and the tests there check this one against it and against
//! the naive reference.

use super::conv::{gemm, GemmElem};
use crate::backend::contract::nn::conv::Conv2dParams;
use crate::backend::cpu::alloc;
use crate::types::Layout;

/// Whether the convolution's patches tile the input without overlap or
/// padding. 1×1 convolutions keep `conv.rs`'s direct path, which reads the
/// image itself as the column matrix.
pub(super) fn applies(p: &Conv2dParams) -> bool {
    p.kernel == p.stride && p.padding == (0, 0) && p.kernel != (1, 1)
}

/// The patch matrix P `[N·L, K]` of x `[N, C, H, W]` read through its layout.
fn gather<T: GemmElem>(x: &[T], layout: &Layout, p: &Conv2dParams) -> Vec<T> {
    let s = layout.strides();
    let ((kh, kw), k) = (p.kernel, p.col_rows());
    let mut patches: Vec<T> = alloc::with_capacity(p.batch * p.out_plane() * k);
    for n in 0..p.batch {
        for oy in 0..p.out_h {
            for ox in 0..p.out_w {
                for c in 0..p.in_channels {
                    for ki in 0..kh {
                        let row = layout.offset() + n * s[0] + c * s[1] + (oy * kh + ki) * s[2] + ox * kw * s[3];
                        patches.extend((0..kw).map(|kj| x[row + kj * s[3]]));
                    }
                }
            }
        }
    }
    patches
}

/// dy `[N, O, OH, OW]`, read through its layout (the gradient of a ViT's
/// transposed patch tokens is not contiguous), as dyᵀ `[O, N·L]` contiguous:
/// one pass, with no gathered copy of dy first.
fn output_channels_first<T: GemmElem>(dy: &[T], layout: &Layout, p: &Conv2dParams) -> Vec<T> {
    let s = layout.strides();
    let mut out: Vec<T> = alloc::with_capacity(p.batch * p.out_channels * p.out_plane());
    for oc in 0..p.out_channels {
        for n in 0..p.batch {
            for oy in 0..p.out_h {
                let row = layout.offset() + n * s[0] + oc * s[1] + oy * s[2];
                out.extend((0..p.out_w).map(|ox| dy[row + ox * s[3]]));
            }
        }
    }
    out
}

/// dw `[O, K]` = dyᵀ `[O, N·L]` · P `[N·L, K]`.
pub(super) fn weight_grad<T: GemmElem>(dy: &[T], dy_layout: &Layout, x: &[T], layout: &Layout, p: &Conv2dParams) -> Vec<T> {
    let (o, k) = (p.out_channels, p.col_rows());
    let rows = p.batch * p.out_plane();
    let patches = gather(x, layout, p);
    let dyt = output_channels_first(dy, dy_layout, p);
    let mut dw = alloc::zeroed(o * k);
    gemm(o, rows, k, &dyt, [rows, 1], &patches, [k, 1], T::ZERO, &mut dw, [k, 1]);
    // Scratch goes back to the pool, not the system: a steady step makes no new pages.
    alloc::recycle(patches);
    alloc::recycle(dyt);
    dw
}

/// dx `[N, C, H, W]`: dP `[N·L, K]` = dy `[N·L, O]` · w `[O, K]`, scattered back.
pub(super) fn input_grad<T: GemmElem>(dy: &[T], dy_layout: &Layout, w: &[T], p: &Conv2dParams) -> Vec<T> {
    let (o, k) = (p.out_channels, p.col_rows());
    let rows = p.batch * p.out_plane();
    let dyt = output_channels_first(dy, dy_layout, p);
    let mut dpatches = alloc::zeroed(rows * k);
    gemm(rows, o, k, &dyt, [1, rows], w, [k, 1], T::ZERO, &mut dpatches, [k, 1]);
    let ((kh, kw), (h, wd)) = (p.kernel, (p.in_h, p.in_w));
    let plane = p.in_channels * h * wd;
    let mut dx = alloc::zeroed(p.batch * plane);
    let mut values = dpatches.chunks_exact(kw);
    for n in 0..p.batch {
        for oy in 0..p.out_h {
            for ox in 0..p.out_w {
                for c in 0..p.in_channels {
                    for ki in 0..kh {
                        let start = n * plane + c * h * wd + (oy * kh + ki) * wd + ox * kw;
                        if let Some(v) = values.next() {
                            dx[start..start + kw].copy_from_slice(v);
                        }
                    }
                }
            }
        }
    }
    alloc::recycle(dpatches);
    alloc::recycle(dyt);
    dx
}
