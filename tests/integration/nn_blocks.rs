//! Multi-head self-attention and the configurable transformer block: gradient
//! checks (inputs and every parameter) in each configuration, forward values
//! against explicit compositions, the KV cache, Admin ω, and the encoder.

use crate::common;

use common::{assert_close, check_param_gradients, names};
use proptest::prelude::*;
use tamer::models::{EncoderConfig, PositionKind, TransformerEncoder};
use tamer::nn::init::admin_omega;
use tamer::nn::{BlockConfig, KvCache, Module, MultiHeadSelfAttention, NormPlacement, TransformerBlock};
use tamer::testing::strategies::{tensor_with, view_kind, ViewKind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{rng, DType, Tensor};

fn attention(dim: usize, n_head: usize, bias: bool, causal: bool, attn_p: f64, seed: u64) -> MultiHeadSelfAttention {
    let a = MultiHeadSelfAttention::new(dim, n_head, bias, causal, attn_p, 0.0, &mut rng(seed)).unwrap();
    a.to_dtype(DType::F64).unwrap();
    a
}

/// Reset the attention-dropout RNG so every forward draws the same mask.
fn reset_dropout(a: &MultiHeadSelfAttention) {
    *a.attn_dropout.rng.lock().unwrap() = rng(99);
}

/// Per-head attention by slicing the qkv output channels: queries of head h are
/// channels `h·D..(h+1)·D`, keys `C + h·D..`, values `2C + h·D..` (timm/nanoGPT layout).
fn attention_reference(a: &MultiHeadSelfAttention, x: &Tensor) -> Tensor {
    let (c, h, d) = (a.dim(), a.n_head, a.head_dim());
    let qkv = a.qkv.forward(x).unwrap();
    let heads: Vec<Tensor> = (0..h)
        .map(|i| {
            let q = qkv.narrow(2, i * d, d).unwrap();
            let k = qkv.narrow(2, c + i * d, d).unwrap();
            let v = qkv.narrow(2, 2 * c + i * d, d).unwrap();
            q.attention_probs(&k, a.mask(), None).unwrap().matmul(&v).unwrap()
        })
        .collect();
    a.proj.forward(&Tensor::cat(&heads, 2).unwrap()).unwrap()
}

fn gradcheck_config() -> GradCheckConfig {
    GradCheckConfig::default()
}

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn attention_gradients(b in 1usize..=2, t in 1usize..=4, n_head in 1usize..=2, head_dim in 1usize..=2,
                           causal in any::<bool>(), bias in any::<bool>(), drop in any::<bool>(),
                           kind in view_kind(), seed in any::<u64>()) {
        let dim = n_head * head_dim;
        let a = attention(dim, n_head, bias, causal, if drop { 0.3 } else { 0.0 }, seed);
        let x = tensor_with(&[b, t, dim], kind, seed ^ 7);
        let f = |xs: &[Tensor]| { reset_dropout(&a); a.forward(&xs[0]) };
        let report = check_gradients(f, std::slice::from_ref(&x), &gradcheck_config()).unwrap();
        prop_assert!(report.passed(), "input: {report}");
        let (checked, failures) = check_param_gradients(&a, || { reset_dropout(&a); a.forward(&x) });
        prop_assert!(checked > 0);
        prop_assert!(failures.is_empty(), "{failures:?}");
    }

    #[test]
    fn block_gradients(b in 1usize..=2, t in 1usize..=3, n_head in 1usize..=2, pre in any::<bool>(), residual in any::<bool>(),
                       mlp in any::<bool>(), scale_pick in 0usize..3, causal in any::<bool>(), bias in any::<bool>(),
                       kind in view_kind(), seed in any::<u64>()) {
        // Four channels per head: a layer norm over two channels is a smoothed sign
        // function of their difference, ill-conditioned whenever the two come close
        // (its derivatives grow like 1/|x₁ − x₂|ᵏ), which no finite difference resolves.
        let dim = 4 * n_head;
        let cfg = BlockConfig {
            norm: if pre { NormPlacement::PreLN } else { NormPlacement::PostLN },
            residual, mlp, causal, bias,
            residual_scale: [1.0, 0.6, 1.7][scale_pick],
            mlp_ratio: 2.0,
            ..BlockConfig::vit(n_head)
        };
        let block = TransformerBlock::new(dim, &cfg, &mut rng(seed)).unwrap();
        block.to_dtype(DType::F64).unwrap();
        // Non-trivial norm affine parameters, so their gradients are exercised too.
        for (name, p) in block.named_params() {
            if name.starts_with("norm") {
                let n = p.numel();
                p.set(&Tensor::uniform([n], 0.5, 1.5, DType::F64, &mut rng(seed ^ 3)).unwrap()).unwrap();
            }
        }
        let x = tensor_with(&[b, t, dim], kind, seed ^ 5);
        let report = check_gradients(|xs: &[Tensor]| block.forward(&xs[0]), std::slice::from_ref(&x), &gradcheck_config()).unwrap();
        prop_assert!(report.passed(), "{cfg:?}: input: {report}");
        let (_, failures) = check_param_gradients(&block, || block.forward(&x));
        prop_assert!(failures.is_empty(), "{cfg:?}: {failures:?}");
    }
}

#[test]
fn attention_matches_per_head_reference_in_every_layout() {
    for (causal, kind) in [(true, ViewKind::Contiguous), (false, ViewKind::Permuted), (true, ViewKind::Sliced)] {
        let a = attention(12, 3, true, causal, 0.0, 4);
        let x = tensor_with(&[2, 5, 12], kind, 11);
        let got = a.forward(&x).unwrap().to_f64_vec().unwrap();
        let want = attention_reference(&a, &x).to_f64_vec().unwrap();
        assert_close(&got, &want, 1e-12, "attention vs per-head reference");
    }
}

#[test]
fn kv_cache_pieces_equal_one_causal_forward() {
    let a = attention(8, 2, true, true, 0.0, 1);
    let x = tensor_with(&[2, 7, 8], ViewKind::Contiguous, 3);
    let full = a.forward(&x).unwrap().to_f64_vec().unwrap();
    for splits in [vec![7], vec![1; 7], vec![3, 1, 3], vec![2, 5]] {
        let mut cache = KvCache::default();
        let mut start = 0;
        let mut pieces = Vec::new();
        for len in splits {
            pieces.push(a.forward_with_cache(&x.narrow(1, start, len).unwrap(), &mut cache).unwrap());
            start += len;
        }
        assert_eq!(cache.len(), 7);
        let got = Tensor::cat(&pieces, 1).unwrap().to_f64_vec().unwrap();
        assert_close(&got, &full, 1e-12, "cached vs full");
    }
    // Through a whole block too.
    let block = TransformerBlock::new(8, &BlockConfig::gpt(2, 0.0, true), &mut rng(2)).unwrap();
    block.to_dtype(DType::F64).unwrap();
    let full = block.forward(&x).unwrap().to_f64_vec().unwrap();
    let mut cache = KvCache::default();
    let a1 = block.forward_with_cache(&x.narrow(1, 0, 4).unwrap(), &mut cache).unwrap();
    let a2 = block.forward_with_cache(&x.narrow(1, 4, 3).unwrap(), &mut cache).unwrap();
    assert_close(&Tensor::cat(&[a1, a2], 1).unwrap().to_f64_vec().unwrap(), &full, 1e-12, "block cached vs full");
    // A cache of another batch size is an error naming both.
    let err = block
        .forward_with_cache(&x.narrow(0, 0, 1).unwrap().narrow(1, 0, 1).unwrap(), &mut cache)
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch 1") && err.contains("batch 2"), "{err}");
}

#[test]
fn attention_dropout_is_training_only() {
    let mut a = attention(8, 2, true, false, 0.5, 3);
    let x = tensor_with(&[2, 4, 8], ViewKind::Contiguous, 3);
    let y1 = a.forward(&x).unwrap().to_f64_vec().unwrap();
    let y2 = a.forward(&x).unwrap().to_f64_vec().unwrap();
    assert_ne!(y1, y2, "training mode draws fresh masks");
    a.set_training(false);
    let e = a.forward(&x).unwrap().to_f64_vec().unwrap();
    assert_close(&e, &attention_reference(&a, &x).to_f64_vec().unwrap(), 1e-12, "eval = no dropout");
}

/// The block's output against the formula written out with its own sublayers.
#[test]
fn block_structure_follows_the_configuration() {
    let x = tensor_with(&[2, 3, 4], ViewKind::Contiguous, 8);
    for pre in [true, false] {
        for residual in [true, false] {
            for mlp in [true, false] {
                let cfg = BlockConfig {
                    norm: if pre { NormPlacement::PreLN } else { NormPlacement::PostLN },
                    residual,
                    mlp,
                    residual_scale: 1.5,
                    ..BlockConfig::vit(2)
                };
                let block = TransformerBlock::new(4, &cfg, &mut rng(5)).unwrap();
                block.to_dtype(DType::F64).unwrap();
                let attn = |h: &Tensor| block.attn.forward(h).unwrap();
                let ffn = |h: &Tensor| block.mlp.as_ref().unwrap().forward(h).unwrap();
                let combine = |h: &Tensor, f: Tensor| if residual { h.scale(1.5).unwrap().add(&f).unwrap() } else { f };
                let mut h = if pre {
                    combine(&x, attn(&block.norm1.forward(&x).unwrap()))
                } else {
                    block.norm1.forward(&combine(&x, attn(&x))).unwrap()
                };
                if mlp {
                    let n2 = block.norm2.as_ref().unwrap();
                    h = if pre {
                        combine(&h, ffn(&n2.forward(&h).unwrap()))
                    } else {
                        n2.forward(&combine(&h, ffn(&h))).unwrap()
                    };
                }
                let got = block.forward(&x).unwrap().to_f64_vec().unwrap();
                assert_close(&got, &h.to_f64_vec().unwrap(), 1e-12, &format!("{cfg:?}"));
                let n = names(&block);
                assert_eq!(n.iter().any(|s| s.starts_with("mlp.") || s.starts_with("norm2.")), mlp);
            }
        }
    }
}

#[test]
fn block_parameter_names_are_timms() {
    let block = TransformerBlock::new(8, &BlockConfig::vit(2), &mut rng(0)).unwrap();
    let want = [
        "norm1.weight",
        "norm1.bias",
        "attn.qkv.weight",
        "attn.qkv.bias",
        "attn.proj.weight",
        "attn.proj.bias",
        "norm2.weight",
        "norm2.bias",
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
    ];
    assert_eq!(names(&block), want);
    let dims: Vec<Vec<usize>> = block.named_params().iter().map(|(_, p)| p.dims()).collect();
    assert_eq!(dims[2], vec![24, 8]);
    assert_eq!(dims[8], vec![32, 8]);
}

#[test]
fn drop_path_and_dropout_only_in_training() {
    let cfg = BlockConfig {
        drop_path: 0.5,
        dropout: 0.3,
        attn_dropout: 0.3,
        ..BlockConfig::vit(2)
    };
    let mut block = TransformerBlock::new(4, &cfg, &mut rng(1)).unwrap();
    let x = Tensor::randn([8, 3, 4], DType::F32, &mut rng(2)).unwrap();
    let a = block.forward(&x).unwrap().to_vec::<f32>().unwrap();
    let b = block.forward(&x).unwrap().to_vec::<f32>().unwrap();
    assert_ne!(a, b);
    block.set_training(false);
    let plain_cfg = BlockConfig {
        drop_path: 0.0,
        dropout: 0.0,
        attn_dropout: 0.0,
        ..cfg
    };
    let plain = TransformerBlock::new(4, &plain_cfg, &mut rng(1)).unwrap();
    for ((_, p), (_, q)) in block.named_params().iter().zip(plain.named_params()) {
        q.set(&p.tensor()).unwrap();
    }
    let e = block.forward(&x).unwrap().to_f64_vec().unwrap();
    assert_close(&e, &plain.forward(&x).unwrap().to_f64_vec().unwrap(), 1e-6, "eval = no dropout");
}

#[test]
fn block_config_errors() {
    let bad_heads = TransformerBlock::new(6, &BlockConfig::vit(4), &mut rng(0)).err().unwrap().to_string();
    assert!(bad_heads.contains("6") && bad_heads.contains("4"), "{bad_heads}");
    let bad_scale = BlockConfig {
        residual_scale: 0.0,
        ..BlockConfig::vit(2)
    };
    assert!(TransformerBlock::new(4, &bad_scale, &mut rng(0))
        .err()
        .unwrap()
        .to_string()
        .contains("residual_scale"));
    let block = TransformerBlock::new(4, &BlockConfig::vit(2), &mut rng(0)).unwrap();
    let err = block.forward(&Tensor::ones([2, 3, 5], DType::F32).unwrap()).unwrap_err().to_string();
    assert!(err.contains("[2, 3, 5]"), "{err}");
}

fn post_ln_encoder(n_layer: usize, residual_scale: f64) -> TransformerEncoder {
    let cfg = EncoderConfig {
        block: BlockConfig {
            residual_scale,
            ..BlockConfig::post_ln(2)
        },
        final_norm: false,
        ..EncoderConfig::new(11, 6, n_layer, 8, 2, 3)
    };
    TransformerEncoder::new(cfg, &mut rng(3)).unwrap()
}

#[test]
fn admin_profiling_sets_the_papers_omegas() {
    let mut enc = post_ln_encoder(3, 1.0);
    enc.to_dtype(DType::F64).unwrap();
    let idx = Tensor::from_vec((0..12).map(|i| i % 11).collect::<Vec<i64>>(), [2, 6]).unwrap();
    let omegas = enc.admin_init_profiled(&idx).unwrap();
    assert_eq!(omegas.len(), 6);
    assert_eq!(omegas[0], 1.0);
    // Recompute with the profiled ω's in place: ω_{i+1}² = ω_i² + Var[f_i(x_i)],
    // i.e. ω_i = √(1 + Σ_{j<i} Var[f_j]).
    let var = |t: &Tensor| t.flatten_all().unwrap().var(&[0], false, 0).unwrap().to_scalar().unwrap();
    let mut h = enc.embed(&idx).unwrap();
    let mut sum = 0.0f64;
    for (k, block) in enc.blocks.iter().enumerate() {
        assert_eq!((block.omega_attn, block.omega_mlp), (omegas[2 * k], omegas[2 * k + 1]));
        assert!((omegas[2 * k] - (1.0 + sum).sqrt()).abs() < 1e-12);
        let f = block.attn.forward(&h).unwrap();
        sum += var(&f);
        assert!((omegas[2 * k + 1] - (1.0 + sum).sqrt()).abs() < 1e-12);
        h = block.norm1.forward(&h.scale(omegas[2 * k]).unwrap().add(&f).unwrap()).unwrap();
        let f = block.mlp.as_ref().unwrap().forward(&h).unwrap();
        sum += var(&f);
        h = block
            .norm2
            .as_ref()
            .unwrap()
            .forward(&h.scale(omegas[2 * k + 1]).unwrap().add(&f).unwrap())
            .unwrap();
    }
    assert!(omegas.windows(2).all(|w| w[1] > w[0]), "{omegas:?}");
    // The profiled ω's are used by the next forward pass.
    let after = enc.forward(&idx).unwrap().to_f64_vec().unwrap();
    let plain = post_ln_encoder(3, 1.0);
    plain.to_dtype(DType::F64).unwrap();
    assert_ne!(after, plain.forward(&idx).unwrap().to_f64_vec().unwrap());
    // Pre-LN blocks are refused.
    let mut pre = TransformerEncoder::new(EncoderConfig::new(11, 6, 2, 8, 2, 3), &mut rng(0)).unwrap();
    let err = pre.admin_init_profiled(&idx).unwrap_err().to_string();
    assert!(err.contains("post-LN"), "{err}");
}

#[test]
fn admin_profile_free_scale_is_applied_to_every_sublayer() {
    let w = admin_omega(2 * 3).unwrap();
    let enc = post_ln_encoder(3, w);
    assert!(enc.blocks.iter().all(|b| b.omega_attn == w && b.omega_mlp == w));
}

#[test]
fn encoder_hidden_states_positions_and_gradients() {
    let idx = Tensor::from_vec(vec![1i64, 2, 3, 4, 5, 6, 7, 8], [2, 4]).unwrap();
    for positions in [PositionKind::Learned, PositionKind::SineCosine, PositionKind::None] {
        let cfg = EncoderConfig {
            positions,
            ..EncoderConfig::new(10, 6, 2, 8, 2, 3)
        };
        let enc = TransformerEncoder::new(cfg, &mut rng(1)).unwrap();
        let (logits, hidden) = enc.forward_with_hidden(&idx).unwrap();
        assert_eq!(logits.dims(), &[2, 3]);
        assert_eq!(hidden.len(), 3);
        assert!(hidden.iter().all(|h| h.dims() == [2, 4, 8]));
        assert_eq!(names(&enc).contains(&"pos_embed".to_string()), positions == PositionKind::Learned);
        let grads = logits.sum_all().unwrap().backward().unwrap();
        for (name, p) in enc.named_params() {
            let g = grads.get(&p.tensor()).unwrap_or_else(|| panic!("{name} has no gradient"));
            assert!(g.to_f64_vec().unwrap().iter().all(|v| v.is_finite()), "{name}");
        }
    }
    // Positions matter with a table, not without one.
    let swapped = Tensor::from_vec(vec![2i64, 1, 3, 4, 6, 5, 7, 8], [2, 4]).unwrap();
    let bag = TransformerEncoder::new(
        EncoderConfig {
            positions: PositionKind::None,
            ..EncoderConfig::new(10, 6, 2, 8, 2, 3)
        },
        &mut rng(1),
    )
    .unwrap();
    assert_close(
        &bag.forward(&idx).unwrap().to_f64_vec().unwrap(),
        &bag.forward(&swapped).unwrap().to_f64_vec().unwrap(),
        1e-5,
        "bag of tokens",
    );
    let sc = TransformerEncoder::new(
        EncoderConfig {
            positions: PositionKind::SineCosine,
            ..EncoderConfig::new(10, 6, 2, 8, 2, 3)
        },
        &mut rng(1),
    )
    .unwrap();
    assert_ne!(
        sc.forward(&idx).unwrap().to_f64_vec().unwrap(),
        sc.forward(&swapped).unwrap().to_f64_vec().unwrap()
    );
    // Too long a sequence.
    let enc = TransformerEncoder::new(EncoderConfig::new(10, 3, 1, 8, 2, 3), &mut rng(1)).unwrap();
    let err = enc.forward(&idx).unwrap_err().to_string();
    assert!(err.contains("max_len 3") && err.contains("[2, 4]"), "{err}");
}
