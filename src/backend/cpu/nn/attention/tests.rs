//! The flash kernels against the reference kernels: every mask (blind rows
//! included), Tq ≠ Tk, odd head dims, several tiles, above the parallel
//! threshold, strided rows, each ISA this CPU has (f32) and f64.

use super::flash::{self, FlashFloat};
use super::{backward_into, forward_into, BackwardIn, BackwardOut, Layouts, RowLayout};
use crate::backend::contract::nn::attention::{AttnDims, FusedKernel};
use crate::backend::cpu::simd::{Isa, Simd};
use crate::backend::cpu::test_data::{assert_close, unit_hash};
use crate::testing::proptest_config;
use proptest::prelude::*;

/// The mask choices: none, top-left (diagonal 0), bottom-right (Tk − Tq).
#[derive(Clone, Copy, Debug)]
enum Mask {
    None,
    TopLeft,
    BottomRight,
}

fn dims(bh: usize, tq: usize, tk: usize, d: usize, dv: usize, mask: Mask) -> AttnDims {
    AttnDims {
        bh,
        tq,
        tk,
        d,
        dv,
        causal_diagonal: match mask {
            Mask::None => None,
            Mask::TopLeft => Some(0),
            Mask::BottomRight => Some(tk as i64 - tq as i64),
        },
        scale: 1.0 / (d as f64).sqrt(),
    }
}

/// Values in [-2, 2) from a seed.
fn values<T: FlashFloat>(n: usize, seed: u64) -> Vec<T> {
    unit_hash(n, seed).into_iter().map(|u| T::from_f64(4.0 * u - 2.0)).collect()
}

/// `[o, lse, dq, dk, dv]` of one kernel on contiguous operands, with a
/// random output gradient.
fn run<T: FlashFloat>(kernel: FusedKernel, simd: Simd, dims: &AttnDims, seed: u64) -> Vec<Vec<T>> {
    let (qn, kn, vn, on) = (
        dims.bh * dims.tq * dims.d,
        dims.bh * dims.tk * dims.d,
        dims.bh * dims.tk * dims.dv,
        dims.bh * dims.tq * dims.dv,
    );
    let (q, k, v, dout) = (
        values::<T>(qn, seed),
        values::<T>(kn, seed + 1),
        values::<T>(vn, seed + 2),
        values::<T>(on, seed + 3),
    );
    let layouts = Layouts::contiguous(dims, (0, 0, 0, 0, 0));
    let (mut o, mut lse) = (vec![T::ZERO; on], vec![T::ZERO; dims.bh * dims.tq]);
    forward_into(kernel, simd, (&q, &k, &v), &layouts, dims, &mut o, &mut lse).unwrap();
    let (mut dq, mut dk, mut dv) = (vec![T::ZERO; qn], vec![T::ZERO; kn], vec![T::ZERO; vn]);
    let x = BackwardIn {
        q: &q,
        k: &k,
        v: &v,
        o: &o,
        lse: &lse,
        dout: &dout,
    };
    let grads = BackwardOut::Separate {
        dq: &mut dq,
        dk: &mut dk,
        dv: &mut dv,
    };
    backward_into(kernel, simd, &x, &layouts, dims, grads).unwrap();
    vec![o, lse, dq, dk, dv]
}

/// The flash kernels of `simd` (or f64's) against the reference, within `tol`.
fn compare<T: FlashFloat>(simd: Simd, dims: &AttnDims, seed: u64, tol: f64) {
    let flash = run::<T>(FusedKernel::Flash, simd, dims, seed);
    let reference = run::<T>(FusedKernel::Reference, simd, dims, seed);
    for (name, (a, b)) in ["o", "lse", "dq", "dk", "dv"].iter().zip(flash.iter().zip(&reference)) {
        // lse is −∞ on blind rows in both.
        let finite = |x: &Vec<T>| {
            x.iter()
                .map(|v| if v.to_f64() == f64::NEG_INFINITY { T::from_f64(-1e3) } else { *v })
                .collect::<Vec<T>>()
        };
        assert_close(&finite(a), &finite(b), tol, &format!("{name} ({:?}, {dims:?})", simd.isa()));
    }
}

fn scalar() -> Simd {
    Simd::for_isa(Isa::Scalar).unwrap()
}

fn any_mask() -> impl Strategy<Value = Mask> {
    prop::sample::select(vec![Mask::None, Mask::TopLeft, Mask::BottomRight])
}

proptest! {
    #![proptest_config(proptest_config(32))]

    /// Up to two tiles each way, odd head dims, every mask (bottom-right with
    /// Tq > Tk leaves rows that see no key), every ISA.
    #[test]
    fn flash_matches_the_reference(
        bh in 1usize..=3, tq in 1usize..=2 * flash::BR + 3, tk in 1usize..=2 * flash::BC + 3,
        d in 1usize..=40, dv in 1usize..=40, mask in any_mask(), seed in 0u64..1000,
    ) {
        let dims = dims(bh, tq, tk, d, dv, mask);
        compare::<f64>(scalar(), &dims, seed, 1e-12);
        for simd in Simd::available() {
            compare::<f32>(simd, &dims, seed, 2e-5);
        }
    }
}

#[test]
fn flash_matches_the_reference_at_the_benchmark_head_dims() {
    for (d, mask) in [(16, Mask::None), (32, Mask::TopLeft), (64, Mask::TopLeft), (64, Mask::None)] {
        let dims = dims(2, 77, 77, d, d, mask);
        for simd in Simd::available() {
            compare::<f32>(simd, &dims, d as u64, 2e-5);
        }
    }
}

#[test]
fn flash_matches_the_reference_above_the_parallel_threshold() {
    let dims = dims(8, 70, 90, 48, 40, Mask::BottomRight);
    assert!(dims.bh * dims.tq * dims.tk * dims.d >= flash::PARALLEL_MIN_WORK);
    compare::<f64>(scalar(), &dims, 5, 1e-12);
    for simd in Simd::available() {
        compare::<f32>(simd, &dims, 5, 2e-5);
    }
}

/// Bottom-right with Tq > Tk: the first Tq − Tk queries see nothing. Their
/// output rows are 0, their lse −∞, and no gradient flows from their dO.
#[test]
fn rows_that_see_no_key_give_zeros_and_no_gradient() {
    let dims = dims(2, 9, 4, 5, 3, Mask::BottomRight);
    for kernel in [FusedKernel::Flash, FusedKernel::Reference] {
        let out = run::<f64>(kernel, scalar(), &dims, 11);
        for g in 0..2 {
            for i in 0..5 {
                let row = g * 9 + i;
                assert!(out[0][row * 3..row * 3 + 3].iter().all(|&x| x == 0.0), "{kernel:?} o");
                assert_eq!(out[1][row], f64::NEG_INFINITY, "{kernel:?} lse");
                assert!(out[2][row * 5..row * 5 + 5].iter().all(|&x| x == 0.0), "{kernel:?} dq");
            }
            // Query 5 sees key 0 only: its output is V's row 0.
            let row = g * 9 + 5;
            let v = values::<f64>(2 * 4 * 3, 13);
            assert_close(&out[0][row * 3..row * 3 + 3], &v[g * 12..g * 12 + 3], 1e-12, "o of query 5");
        }
        assert!(out.iter().flatten().all(|x| !x.is_nan()), "{kernel:?}: NaN");
    }
}

/// Rows read and written through `[B, T, 3, H, D]` layouts (q, k and v cut
/// out of one packed buffer, the gradients written into one, the output in
/// `[B, T, H, D]` order) give what the contiguous operands give.
#[test]
fn strided_rows_match_contiguous_ones() {
    let (b, h, t, d) = (2, 3, 70, 8);
    let c = h * d;
    let dims = dims(b * h, t, t, d, d, Mask::TopLeft);
    let packed = values::<f32>(b * t * 3 * c, 21);
    let dout_packed = values::<f32>(b * t * c, 22);
    let layout = |which: usize| RowLayout {
        offset: which * c,
        heads: h,
        batch_stride: t * 3 * c,
        head_stride: d,
        row_stride: 3 * c,
    };
    let out_layout = RowLayout {
        offset: 0,
        heads: h,
        batch_stride: t * c,
        head_stride: d,
        row_stride: c,
    };
    let layouts = Layouts {
        q: layout(0),
        k: layout(1),
        v: layout(2),
        o: out_layout,
        dout: out_layout,
        dq: layout(0),
        dk: layout(1),
        dv: layout(2),
    };
    // The same operands gathered into contiguous [BH, T, D].
    let gather = |src: &[f32], l: &RowLayout| -> Vec<f32> {
        (0..b * h)
            .flat_map(|g| (0..t).flat_map(move |i| src[l.row(g, i)..l.row(g, i) + d].to_vec()))
            .collect()
    };
    for simd in Simd::available() {
        let (mut o, mut lse) = (vec![0f32; b * t * c], vec![0f32; b * h * t]);
        let qkv = (&packed[..], &packed[..], &packed[..]);
        forward_into(FusedKernel::Flash, simd, qkv, &layouts, &dims, &mut o, &mut lse).unwrap();
        let mut d_packed = vec![f32::NAN; b * t * 3 * c];
        let x = BackwardIn {
            q: &packed,
            k: &packed,
            v: &packed,
            o: &o,
            lse: &lse,
            dout: &dout_packed,
        };
        backward_into(FusedKernel::Flash, simd, &x, &layouts, &dims, BackwardOut::Packed(&mut d_packed)).unwrap();
        assert!(d_packed.iter().all(|g| g.is_finite()), "every element of the packed gradient is written");

        let (q, k, v) = (gather(&packed, &layouts.q), gather(&packed, &layouts.k), gather(&packed, &layouts.v));
        let go = gather(&dout_packed, &out_layout);
        let flat = Layouts::contiguous(&dims, (0, 0, 0, 0, 0));
        let (mut o2, mut lse2) = (vec![0f32; b * t * c], vec![0f32; b * h * t]);
        forward_into(FusedKernel::Flash, simd, (&q, &k, &v), &flat, &dims, &mut o2, &mut lse2).unwrap();
        let (mut dq2, mut dk2, mut dv2) = (vec![0f32; q.len()], vec![0f32; k.len()], vec![0f32; v.len()]);
        let x2 = BackwardIn {
            q: &q,
            k: &k,
            v: &v,
            o: &o2,
            lse: &lse2,
            dout: &go,
        };
        backward_into(
            FusedKernel::Flash,
            simd,
            &x2,
            &flat,
            &dims,
            BackwardOut::Separate {
                dq: &mut dq2,
                dk: &mut dk2,
                dv: &mut dv2,
            },
        )
        .unwrap();
        assert_close(&gather(&o, &out_layout), &o2, 1e-6, "o");
        assert_close(&lse, &lse2, 1e-6, "lse");
        assert_close(&gather(&d_packed, &layouts.q), &dq2, 1e-6, "dq");
        assert_close(&gather(&d_packed, &layouts.k), &dk2, 1e-6, "dk");
        assert_close(&gather(&d_packed, &layouts.v), &dv2, 1e-6, "dv");
    }
}

#[test]
fn rows_outside_the_buffers_are_an_error_not_a_read() {
    let dims = dims(2, 4, 4, 3, 3, Mask::None);
    let short = vec![0f32; 2 * 4 * 3 - 1];
    let full = vec![0f32; 2 * 4 * 3];
    let layouts = Layouts::contiguous(&dims, (0, 0, 0, 0, 0));
    let (mut o, mut lse) = (vec![0f32; 24], vec![0f32; 8]);
    let e = forward_into(FusedKernel::Flash, scalar(), (&full, &short, &full), &layouts, &dims, &mut o, &mut lse).unwrap_err();
    assert!(e.to_string().contains("scaled_dot_product_attention") && e.to_string().contains('k'), "{e}");
    let bad_heads = Layouts {
        q: RowLayout { heads: 3, ..layouts.q },
        ..layouts
    };
    let e = forward_into(FusedKernel::Flash, scalar(), (&full, &full, &full), &bad_heads, &dims, &mut o, &mut lse).unwrap_err();
    assert!(e.to_string().contains("row layout"), "{e}");
}

#[test]
fn overlapping_output_rows_are_refused() {
    let dims = dims(4, 3, 3, 2, 2, Mask::None);
    let full = vec![0f32; 4 * 3 * 2];
    let mut layouts = Layouts::contiguous(&dims, (0, 0, 0, 0, 0));
    layouts.o.row_stride = 1;
    let (mut o, mut lse) = (vec![0f32; 24], vec![0f32; 12]);
    let e = forward_into(FusedKernel::Flash, scalar(), (&full, &full, &full), &layouts, &dims, &mut o, &mut lse).unwrap_err();
    assert!(e.to_string().contains("overlap"), "{e}");
    // q, k and v packed at offsets that collide.
    let packed = Layouts {
        dk: layouts.dq,
        ..Layouts::contiguous(&dims, (0, 0, 0, 0, 0))
    };
    let x = BackwardIn {
        q: &full,
        k: &full,
        v: &full,
        o: &full,
        lse: &lse,
        dout: &full,
    };
    let mut g = vec![0f32; 24];
    let e = backward_into(FusedKernel::Flash, scalar(), &x, &packed, &dims, BackwardOut::Packed(&mut g)).unwrap_err();
    assert!(e.to_string().contains("overlap"), "{e}");
}

#[test]
fn tiles_split_the_sequence_evenly() {
    assert_eq!(flash::tiles(&dims(1, 65, 65, 64, 64, Mask::None)), (65, 65));
    assert_eq!(flash::tiles(&dims(1, 65, 65, 64, 64, Mask::TopLeft)), (33, 33));
    assert_eq!(flash::tiles(&dims(1, 256, 256, 64, 64, Mask::TopLeft)), (64, 64));
    assert_eq!(flash::tiles(&dims(1, 300, 50, 16, 16, Mask::None)), (100, 50));
    assert_eq!(flash::tiles(&dims(1, 1, 1, 1, 1, Mask::BottomRight)), (1, 1));
}
