//! Fused attention (flash kernels, reference kernels, the composite fallback)
//! against the CPU's composite graph, forward and gradients; autocast.

use crate::harness::{gpu, gradcheck_on_gpu, randn, randn64};
use crate::parity_test;
use tamer::backend::cuda::nn::attention::{select, with_attention_impl, AttentionImpl, AttnDims, FusedKernel};
use tamer::{AttnMask, CausalAlign, DType, Device, Result, Tensor};

const FULL: AttnMask = AttnMask::None;
/// PyTorch's `is_causal=True`: query `i` sees keys `j <= i`.
const TOP_LEFT: AttnMask = AttnMask::Causal(CausalAlign::TopLeft);
/// The KV-cache alignment: query `i` sees keys `j <= i + Tk - Tq`.
const BOTTOM_RIGHT: AttnMask = AttnMask::Causal(CausalAlign::BottomRight);

/// Attention over `[2, 3, T, D]` heads (batch × heads = 2 × 3) and the
/// gradients of q, k, v under a random output weighting: `[o, dq, dk, dv]`.
/// `strided` feeds q and k as permuted views (as a qkv split makes them) and
/// v as a narrowed one, so the contiguous copies are exercised too.
#[allow(clippy::too_many_arguments)]
fn attention_case(dev: Device, tq: usize, tk: usize, d: usize, dv: usize, mask: AttnMask, f64_: bool, strided: bool, seed: u64) -> Result<Vec<Tensor>> {
    let rand = |dims: &[usize], s: u64| if f64_ { randn64(dims, s) } else { randn(dims, s) };
    let leaf = |dims: &[usize], s: u64| rand(dims, s).to_device(dev).map(|t| t.variable());
    let (q, k, v, qv, kv, vv);
    if strided {
        // [2, T, 3, D] -> [2, 3, T, D]; v narrowed out of a wider last axis.
        (q, k, v) = (
            leaf(&[2, tq, 3, d], seed)?,
            leaf(&[2, tk, 3, d], seed + 1)?,
            leaf(&[2, 3, tk, dv + 3], seed + 2)?,
        );
        (qv, kv, vv) = (q.permute(&[0, 2, 1, 3])?, k.permute(&[0, 2, 1, 3])?, v.narrow(3, 1, dv)?);
    } else {
        (q, k, v) = (leaf(&[2, 3, tq, d], seed)?, leaf(&[2, 3, tk, d], seed + 1)?, leaf(&[2, 3, tk, dv], seed + 2)?);
        (qv, kv, vv) = (q.clone(), k.clone(), v.clone());
    }
    let o = qv.scaled_dot_product_attention(&kv, &vv, mask, None)?;
    let w = rand(o.dims(), seed + 3).to_device(dev)?;
    let grads = o.mul(&w)?.sum_all()?.backward()?;
    let mut out = vec![o];
    for x in [&q, &k, &v] {
        out.push(grads.get(x).cloned().ok_or_else(|| tamer::Error::autograd("test", "missing gradient"))?);
    }
    Ok(out)
}

// ---- flash kernels (the default for f32, D <= 128) -------------------------
parity_test!(flash_d16_causal, 1e-5, 1e-4, |dev| {
    attention_case(dev, 37, 37, 16, 16, TOP_LEFT, false, false, 1)
});
parity_test!(flash_d16_full, 1e-5, 1e-4, |dev| { attention_case(dev, 37, 37, 16, 16, FULL, false, false, 2) });
parity_test!(flash_d64_causal, 1e-5, 1e-4, |dev| {
    attention_case(dev, 70, 70, 64, 64, TOP_LEFT, false, false, 3)
});
parity_test!(flash_d64_full, 1e-5, 1e-4, |dev| { attention_case(dev, 33, 33, 64, 64, FULL, false, false, 4) });
parity_test!(flash_d80_causal, 1e-5, 1e-4, |dev| {
    attention_case(dev, 45, 45, 80, 80, TOP_LEFT, false, false, 5)
});
parity_test!(flash_d128_causal, 1e-5, 1e-4, |dev| {
    attention_case(dev, 50, 50, 128, 128, TOP_LEFT, false, false, 6)
});
parity_test!(flash_d128_full, 1e-5, 1e-4, |dev| {
    attention_case(dev, 17, 17, 128, 128, FULL, false, false, 7)
});
// Tq != Tk: the last Tq positions of a KV cache (causal), cross-attention (not).
parity_test!(flash_kv_cache_shape, 1e-5, 1e-4, |dev| {
    attention_case(dev, 5, 70, 64, 64, BOTTOM_RIGHT, false, false, 8)
});
parity_test!(flash_one_query, 1e-5, 1e-4, |dev| {
    attention_case(dev, 1, 33, 80, 80, BOTTOM_RIGHT, false, false, 9)
});
parity_test!(flash_cross_attention, 1e-5, 1e-4, |dev| {
    attention_case(dev, 40, 9, 32, 32, FULL, false, false, 10)
});
// Both causal alignments with Tq != Tk. Top-left is PyTorch's is_causal; with
// more queries than keys, bottom-right leaves the first Tq - Tk queries without
// a key (zero rows, no gradient): whole query tiles of them (70 - 33 = 37 rows
// over tiles of 32 and 16) and a partial one.
parity_test!(flash_top_left_fewer_queries, 1e-5, 1e-4, |dev| {
    attention_case(dev, 5, 70, 64, 64, TOP_LEFT, false, false, 22)
});
parity_test!(flash_top_left_more_queries, 1e-5, 1e-4, |dev| {
    attention_case(dev, 70, 33, 32, 32, TOP_LEFT, false, false, 23)
});
parity_test!(flash_bottom_right_more_queries, 1e-5, 1e-4, |dev| {
    attention_case(dev, 70, 33, 32, 32, BOTTOM_RIGHT, false, false, 24)
});
parity_test!(flash_d128_bottom_right_more_queries, 1e-5, 1e-4, |dev| {
    attention_case(dev, 40, 9, 128, 128, BOTTOM_RIGHT, false, true, 25)
});
parity_test!(flash_d128_top_left_fewer_queries, 1e-5, 1e-4, |dev| {
    attention_case(dev, 17, 50, 80, 80, TOP_LEFT, false, true, 26)
});
// Dv != D, odd sizes, a single key.
parity_test!(flash_value_dim_differs, 1e-5, 1e-4, |dev| {
    attention_case(dev, 31, 31, 20, 48, TOP_LEFT, false, false, 11)
});
parity_test!(flash_single_key, 1e-5, 1e-4, |dev| {
    attention_case(dev, 1, 1, 16, 16, TOP_LEFT, false, false, 12)
});
// Longer than many tiles (query tiles 8/16/32, key tiles 32).
parity_test!(flash_long_sequence, 1e-5, 1e-4, |dev| {
    attention_case(dev, 300, 300, 64, 64, TOP_LEFT, false, false, 13)
});
// Strided views are made contiguous first.
parity_test!(flash_strided_inputs, 1e-5, 1e-4, |dev| {
    attention_case(dev, 37, 37, 64, 64, TOP_LEFT, false, true, 14)
});

// ---- fallbacks -----------------------------------------------------------------
#[test]
fn fused_kernels_apply_to_f32_heads_up_to_128() {
    let dims = AttnDims {
        bh: 6,
        tq: 37,
        tk: 37,
        d: 128,
        dv: 128,
        causal_diagonal: Some(0),
        scale: 0.1,
    };
    with_attention_impl(AttentionImpl::Flash, || {
        assert_eq!(select(DType::F32, &dims).unwrap(), Some(FusedKernel::Flash));
        assert_eq!(select(DType::F32, &AttnDims { d: 160, dv: 160, ..dims }).unwrap(), None);
        assert_eq!(select(DType::F64, &dims).unwrap(), None);
    });
}

// D = 160 > 128: the composite graph on the GPU.
parity_test!(head_dim_160_falls_back_to_composite, 1e-5, 1e-4, |dev| {
    attention_case(dev, 33, 33, 160, 160, TOP_LEFT, false, false, 15)
});
// f64: the composite graph on the GPU.
parity_test!(f64_uses_the_composite_graph, 1e-12, 1e-10, |dev| {
    attention_case(dev, 37, 40, 64, 64, BOTTOM_RIGHT, true, false, 16)
});
// TAMER_ATTENTION=composite's path, forced per thread.
parity_test!(forced_composite_matches, 1e-5, 1e-4, |dev| {
    with_attention_impl(AttentionImpl::Composite, || attention_case(dev, 37, 37, 64, 64, TOP_LEFT, false, true, 17))
});

// ---- reference kernels (one thread per row) ------------------------------------
parity_test!(reference_kernels_f32, 1e-5, 1e-4, |dev| {
    with_attention_impl(AttentionImpl::Reference, || attention_case(dev, 37, 45, 80, 48, BOTTOM_RIGHT, false, false, 18))
});
parity_test!(reference_kernels_f32_full, 1e-5, 1e-4, |dev| {
    with_attention_impl(AttentionImpl::Reference, || attention_case(dev, 20, 7, 16, 16, FULL, false, true, 19))
});
parity_test!(reference_kernels_f64, 1e-12, 1e-10, |dev| {
    with_attention_impl(AttentionImpl::Reference, || attention_case(dev, 37, 45, 160, 33, BOTTOM_RIGHT, true, false, 20))
});
parity_test!(reference_kernels_f32_top_left, 1e-5, 1e-4, |dev| {
    with_attention_impl(AttentionImpl::Reference, || attention_case(dev, 37, 45, 80, 48, TOP_LEFT, false, false, 27))
});
parity_test!(reference_kernels_f64_more_queries, 1e-12, 1e-10, |dev| {
    with_attention_impl(AttentionImpl::Reference, || {
        let mut out = attention_case(dev, 30, 12, 16, 8, TOP_LEFT, true, false, 28)?;
        out.extend(attention_case(dev, 30, 12, 16, 8, BOTTOM_RIGHT, true, false, 28)?);
        Ok(out)
    })
});

/// Flash against the reference kernels on the GPU alone (no CPU involved).
#[test]
fn flash_matches_the_reference_kernels() {
    let Some(dev) = gpu() else { return };
    let cases = [
        (37, 37, 64, TOP_LEFT),
        (5, 70, 128, BOTTOM_RIGHT),
        (5, 70, 128, TOP_LEFT),
        (70, 33, 64, BOTTOM_RIGHT),
        (70, 33, 64, TOP_LEFT),
        (40, 9, 16, FULL),
    ];
    for (tq, tk, d, mask) in cases {
        let flash = with_attention_impl(AttentionImpl::Flash, || attention_case(dev, tq, tk, d, d, mask, false, false, 21)).unwrap();
        let reference = with_attention_impl(AttentionImpl::Reference, || attention_case(dev, tq, tk, d, d, mask, false, false, 21)).unwrap();
        let what = format!("flash vs reference ({tq}, {tk}, {d}, {mask:?})");
        crate::harness::assert_on(&what, dev, &flash);
        crate::harness::assert_on(&what, dev, &reference);
        crate::harness::assert_all_close(&what, &reference, &flash, 1e-5, 1e-4);
    }
}

// ---- gradient checks on the device --------------------------------------------
// f64 finite differences taken by re-running the CUDA kernels (`check_gradients`
// with inputs on the GPU), beside the CPU-vs-CUDA comparisons above.

#[test]
fn gradcheck_attention_causal() {
    // Both alignments, with fewer and with more queries than keys (bottom-right
    // over 5 queries and 3 keys leaves two queries without a key), on the f64
    // composite graph (the default for f64) and on the f64 reference kernels.
    for imp in [AttentionImpl::Composite, AttentionImpl::Reference] {
        for (tq, tk) in [(5, 5), (3, 5), (5, 3)] {
            for align in [CausalAlign::TopLeft, CausalAlign::BottomRight] {
                with_attention_impl(imp, || {
                    gradcheck_on_gpu(
                        &format!("scaled_dot_product_attention {imp:?} {align:?} Tq {tq} Tk {tk}"),
                        &[randn64(&[2, tq, 4], 8), randn64(&[2, tk, 4], 9), randn64(&[2, tk, 4], 10)],
                        |x| x[0].scaled_dot_product_attention(&x[1], &x[2], AttnMask::Causal(align), None),
                    )
                });
            }
        }
    }
}
