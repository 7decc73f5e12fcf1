//! API traps (issue 9, part 2): each test fails on the behaviour the issue
//! describes and passes on the fixed one.

use proptest::prelude::*;
use tamer::nn::{functional, Conv2d, Embedding, LayerNorm, Linear, Module, Param};
use tamer::testing::strategies::{tensor_with, view_kind};
use tamer::testing::{check_gradients, proptest_config, GradCheckConfig};
use tamer::{rng, DType, Tensor};

fn f64_randn(dims: &[usize], seed: u64) -> Tensor {
    Tensor::randn(dims.to_vec(), DType::F64, &mut rng(seed)).unwrap()
}

fn host(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

// ---------------------------------------------------------------------------
// Layers built from a user's tensors keep them as their parameters.
// ---------------------------------------------------------------------------

#[test]
fn linear_from_user_variables_puts_the_gradients_on_them() {
    let (n, fin, fout) = (3, 4, 2);
    let x = f64_randn(&[n, fin], 1);
    let w = f64_randn(&[fout, fin], 2).variable();
    let b = f64_randn(&[fout], 3).variable();
    let lin = Linear::from_tensors(w.clone(), Some(b.clone())).unwrap();
    assert_eq!(lin.weight.tensor().id(), w.id(), "the layer's weight is the user's tensor");
    // loss = Σ c ⊙ (x Wᵀ + b): dW[o, i] = Σ_n c[n, o] x[n, i], db[o] = Σ_n c[n, o].
    let c = f64_randn(&[n, fout], 4);
    let grads = lin.forward(&x).unwrap().mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
    let (xv, cv) = (host(&x), host(&c));
    let dw: Vec<f64> = (0..fout * fin)
        .map(|k| (0..n).map(|r| cv[r * fout + k / fin] * xv[r * fin + k % fin]).sum())
        .collect();
    let db: Vec<f64> = (0..fout).map(|o| (0..n).map(|r| cv[r * fout + o]).sum()).collect();
    assert_close(&host(grads.get(&w).expect("a gradient for the user's weight")), &dw, "dW");
    assert_close(&host(grads.get(&b).expect("a gradient for the user's bias")), &db, "db");
}

#[test]
fn layer_norm_from_user_variables_puts_the_gradients_on_them() {
    let (n, d) = (3, 5);
    let x = f64_randn(&[n, d], 5);
    let w = f64_randn(&[d], 6).variable();
    let b = f64_randn(&[d], 7).variable();
    let eps = 1e-5;
    let ln = LayerNorm::from_tensors(w.clone(), Some(b.clone()), eps).unwrap();
    let c = f64_randn(&[n, d], 8);
    let grads = ln.forward(&x).unwrap().mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
    // dweight[j] = Σ_n c[n, j]·x̂[n, j], dbias[j] = Σ_n c[n, j].
    let (xv, cv) = (host(&x), host(&c));
    let mut dw = vec![0.0; d];
    let mut db = vec![0.0; d];
    for r in 0..n {
        let row = &xv[r * d..(r + 1) * d];
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        for j in 0..d {
            dw[j] += cv[r * d + j] * (row[j] - mean) / (var + eps).sqrt();
            db[j] += cv[r * d + j];
        }
    }
    let got_w = host(grads.get(&w).expect("a gradient for the user's weight"));
    for (j, (g, want)) in got_w.iter().zip(&dw).enumerate() {
        assert!((g - want).abs() < 1e-9, "dweight[{j}]: {g} vs {want}");
    }
    assert_close(&host(grads.get(&b).expect("a gradient for the user's bias")), &db, "dbias");
}

#[test]
fn conv2d_from_user_variables_puts_the_gradients_on_them() {
    let (n, ci, co, h, wd, k) = (2, 2, 3, 4, 5, 2);
    let (oh, ow) = (h - k + 1, wd - k + 1);
    let x = f64_randn(&[n, ci, h, wd], 9);
    let w = f64_randn(&[co, ci, k, k], 10).variable();
    let b = f64_randn(&[co], 11).variable();
    let conv = Conv2d::from_tensors(w.clone(), Some(b.clone()), (1, 1), (0, 0)).unwrap();
    let c = f64_randn(&[n, co, oh, ow], 12);
    let grads = conv.forward(&x).unwrap().mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
    // dW[o, i, p, q] = Σ_{n, y, z} c[n, o, y, z]·x[n, i, y + p, z + q]; db[o] = Σ c[n, o, ·, ·].
    let (xv, cv) = (host(&x), host(&c));
    let xi = |s: usize, i: usize, y: usize, z: usize| xv[((s * ci + i) * h + y) * wd + z];
    let ci_ = |s: usize, o: usize, y: usize, z: usize| cv[((s * co + o) * oh + y) * ow + z];
    let mut dw = vec![0.0; co * ci * k * k];
    let mut db = vec![0.0; co];
    for s in 0..n {
        for o in 0..co {
            for y in 0..oh {
                for z in 0..ow {
                    db[o] += ci_(s, o, y, z);
                    for i in 0..ci {
                        for p in 0..k {
                            for q in 0..k {
                                dw[((o * ci + i) * k + p) * k + q] += ci_(s, o, y, z) * xi(s, i, y + p, z + q);
                            }
                        }
                    }
                }
            }
        }
    }
    let got = host(grads.get(&w).expect("a gradient for the user's weight"));
    for (j, (g, want)) in got.iter().zip(&dw).enumerate() {
        assert!((g - want).abs() < 1e-9 * (1.0 + want.abs()), "dW[{j}]: {g} vs {want}");
    }
    let got = host(grads.get(&b).expect("a gradient for the user's bias"));
    for (j, (g, want)) in got.iter().zip(&db).enumerate() {
        assert!((g - want).abs() < 1e-9 * (1.0 + want.abs()), "db[{j}]: {g} vs {want}");
    }
}

#[test]
fn embedding_from_a_user_variable_puts_the_gradient_on_it() {
    let table = f64_randn(&[4, 3], 13).variable();
    let emb = Embedding::from_tensor(table.clone()).unwrap();
    let ids = Tensor::from_vec(vec![1i64, 3, 1], [3]).unwrap();
    let grads = emb.forward(&ids).unwrap().sum_all().unwrap().backward().unwrap();
    // Row 1 is looked up twice, row 3 once.
    let want = [0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
    assert_close(&host(grads.get(&table).expect("a gradient for the user's table")), &want, "dtable");
}

#[test]
fn a_plain_tensor_becomes_a_parameter_that_shares_its_storage() {
    // A tensor that is not a variable cannot be made one in place (tensors are
    // immutable handles): the parameter is a variable over the same storage,
    // so updates through the layer are seen through the user's handle.
    let w = Tensor::zeros([2, 3], DType::F64).unwrap();
    let lin = Linear::from_tensors(w.clone(), None).unwrap();
    assert!(lin.weight.tensor().is_variable());
    assert!(lin.weight.tensor().same_storage(&w));
    lin.weight.set(&Tensor::ones([2, 3], DType::F64).unwrap()).unwrap();
    assert_eq!(host(&w), vec![1.0; 6]);
    // A tensor with history is cut from it, as `nn.Parameter(t)` does: the
    // parameter is a new leaf (Param::wrap keeps the history).
    let base = f64_randn(&[2, 3], 14).variable();
    let derived = base.scale(2.0).unwrap();
    let p = Param::new(derived.clone());
    assert!(p.tensor().is_variable() && p.tensor().id() != derived.id());
    let kept = Param::new(base.clone());
    assert_eq!(kept.tensor().id(), base.id());
    assert_eq!(lin.num_params(), 6);
}

#[test]
fn given_tensors_of_mixed_or_integer_dtypes_are_refused_when_the_layer_is_built() {
    let w = Tensor::ones([2, 3], DType::F64).unwrap();
    let b32 = Tensor::ones([2], DType::F32).unwrap();
    let e = Linear::from_tensors(w.clone(), Some(b32.clone())).unwrap_err().to_string();
    assert!(
        e.contains("Linear") && e.contains("bias [2] is f32") && e.contains("weight [2, 3] is f64"),
        "{e}"
    );
    let e = LayerNorm::from_tensors(Tensor::ones([2], DType::F64).unwrap(), Some(b32), 1e-5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("LayerNorm") && e.contains("same dtype"), "{e}");
    let ints = Tensor::from_vec(vec![1i64, 2, 3, 4], [1, 1, 2, 2]).unwrap();
    let e = Conv2d::from_tensors(ints, None, (1, 1), (0, 0)).unwrap_err().to_string();
    assert!(e.contains("Conv2d") && e.contains("float"), "{e}");
}

// ---------------------------------------------------------------------------
// The functional linear and the re-exports.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config(24))]

    /// `functional::linear(x, w, b)` differentiates to x, w and b, strided
    /// views included; `w` is used through a computation (`2·w`), which a
    /// layer's parameter could not be.
    #[test]
    fn functional_linear_gradients(batch in prop::collection::vec(1usize..=3, 0..=2), fin in 1usize..=4, fout in 1usize..=3,
                                   bias in any::<bool>(), kind in view_kind(), seed in any::<u64>()) {
        let mut xd = batch.clone();
        xd.push(fin);
        let mut inputs = vec![tensor_with(&xd, kind, seed), tensor_with(&[fout, fin], kind, seed ^ 1)];
        if bias {
            inputs.push(tensor_with(&[fout], kind, seed ^ 2));
        }
        let f = |xs: &[Tensor]| functional::linear(&xs[0], &xs[1].scale(2.0)?, xs.get(2));
        let report = check_gradients(f, &inputs, &GradCheckConfig::default()).unwrap();
        prop_assert!(report.passed(), "{report}");
    }
}

#[test]
fn functional_linear_is_what_the_layer_computes_and_names_itself_in_errors() {
    let lin = Linear::new(4, 3, true, &mut rng(0)).unwrap();
    let x = Tensor::randn([2, 5, 4], DType::F32, &mut rng(1)).unwrap();
    let by_layer = host(&lin.forward(&x).unwrap());
    let by_function = host(&functional::linear(&x, &lin.weight.tensor(), Some(&lin.bias.as_ref().unwrap().tensor())).unwrap());
    assert_eq!(by_layer, by_function);
    let w = Tensor::ones([3, 4], DType::F32).unwrap();
    let e = functional::linear(&x, &w, Some(&Tensor::ones([4], DType::F32).unwrap()))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("linear") && e.contains("bias has shape [4], expected [3]"), "{e}");
    let e = functional::linear(&x.to_dtype(DType::F64).unwrap(), &w, None).unwrap_err().to_string();
    assert!(e.starts_with("linear") && e.contains("dtype"), "{e}");
    let e = functional::linear(&x, &Tensor::ones([4], DType::F32).unwrap(), None).unwrap_err().to_string();
    assert!(e.contains("weight must be [out_features, in_features]"), "{e}");
}

#[test]
fn cross_entropy_options_are_at_the_crate_root() {
    use tamer::{CrossEntropyOptions, Reduction};
    let logits = Tensor::from_vec(vec![0.0f64, 0.0, 0.0, 0.0], [2, 2]).unwrap();
    let targets = Tensor::from_vec(vec![0i64, 1], [2]).unwrap();
    let opts = CrossEntropyOptions {
        reduction: Reduction::Sum,
        ..CrossEntropyOptions::default()
    };
    let loss = logits.cross_entropy(&targets, opts).unwrap().to_scalar().unwrap();
    assert!((loss - 2.0 * 2f64.ln()).abs() < 1e-12, "{loss}");
}

// ---------------------------------------------------------------------------
// load_into renames before it resolves tied aliases.
// ---------------------------------------------------------------------------

mod tied_prefixed_checkpoints {
    use super::*;
    use std::collections::BTreeMap;
    use tamer::checkpoint::{deserialize, load_into, module_tensors, serialize, LoadOptions};
    use tamer::models::{Gpt, GptConfig};

    fn tiny() -> GptConfig {
        GptConfig {
            vocab_size: 11,
            block_size: 8,
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
            ..GptConfig::gpt_tiny()
        }
    }

    /// nanoGPT's state dict after `torch.compile` (every key under `_orig_mod.`),
    /// through a safetensors round trip so the tied head is a separate tensor
    /// of equal values, as in a real file. `keep` filters the keys.
    fn compiled_state_dict(gpt: &Gpt, keep: impl Fn(&str) -> bool) -> tamer::checkpoint::Checkpoint {
        let named: Vec<(String, Tensor)> = module_tensors(gpt)
            .into_iter()
            .filter(|(n, _)| keep(n))
            .map(|(n, t)| (format!("_orig_mod.{n}"), t))
            .collect();
        assert!(named.iter().any(|(n, _)| n == "_orig_mod.lm_head.weight") == keep("lm_head.weight"));
        deserialize(&serialize(&named, &BTreeMap::new()).unwrap(), "compiled nanoGPT").unwrap()
    }

    fn logits(gpt: &Gpt) -> Vec<f64> {
        let idx = Tensor::from_vec(vec![1i64, 5, 7, 2], [1, 4]).unwrap();
        host(&gpt.forward(&idx, None).unwrap().0)
    }

    #[test]
    fn a_compiled_nanogpt_checkpoint_with_both_tied_names_loads_strictly() {
        let source = Gpt::new(tiny(), &mut rng(0)).unwrap();
        let target = Gpt::new(tiny(), &mut rng(1)).unwrap();
        let ckpt = compiled_state_dict(&source, |_| true);
        let options = LoadOptions::strict().rename_prefix("_orig_mod.", "");
        let report = load_into(&target, ckpt, &options).unwrap();
        assert!(report.skipped.contains(&"_orig_mod.lm_head.weight".to_string()), "{report}");
        assert_eq!(report.loaded.len(), target.named_params().len());
        // Still one parameter, holding the checkpoint's embedding.
        assert!(target.lm_head.weight.same(&target.wte.weight));
        assert_eq!(host(&target.lm_head.weight.tensor()), host(&source.wte.weight.tensor()));
        assert_eq!(logits(&target), logits(&source));
    }

    #[test]
    fn the_prefixed_head_alone_loads_into_the_embedding() {
        let source = Gpt::new(tiny(), &mut rng(2)).unwrap();
        let target = Gpt::new(tiny(), &mut rng(3)).unwrap();
        let ckpt = compiled_state_dict(&source, |n| n != "transformer.wte.weight");
        load_into(&target, ckpt, &LoadOptions::strict().rename_prefix("_orig_mod.", "")).unwrap();
        assert_eq!(host(&target.wte.weight.tensor()), host(&source.wte.weight.tensor()));
        assert_eq!(logits(&target), logits(&source));
    }

    #[test]
    fn a_head_that_differs_from_the_embedding_is_refused_by_a_tied_model() {
        let source = Gpt::new(tiny(), &mut rng(4)).unwrap();
        let target = Gpt::new(tiny(), &mut rng(5)).unwrap();
        let before = host(&target.wte.weight.tensor());
        let mut named = module_tensors(&source);
        for (n, t) in named.iter_mut() {
            if n == "lm_head.weight" {
                *t = t.scale(2.0).unwrap();
            }
            *n = format!("_orig_mod.{n}");
        }
        let e = load_into(&target, named, &LoadOptions::strict().rename_prefix("_orig_mod.", ""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tied weights that differ") && e.contains("_orig_mod.lm_head.weight differs from _orig_mod.transformer.wte.weight"),
            "{e}"
        );
        assert_eq!(host(&target.wte.weight.tensor()), before, "nothing was loaded");
    }
}

// ---------------------------------------------------------------------------
// PatchEmbed has its own file and config.
// ---------------------------------------------------------------------------

#[test]
fn patch_embed_is_built_from_its_own_config() {
    use tamer::models::{PatchEmbed, PatchEmbedConfig, StemConfig, VisionTransformer, VitConfig};
    let cfg = PatchEmbedConfig::new((8, 12), 4, 3, 16);
    let pe = PatchEmbed::new(&cfg, &mut rng(0)).unwrap();
    assert_eq!((pe.grid, pe.num_patches(), pe.num_params()), ((2, 3), 6, cfg.num_params()));
    let x = Tensor::randn([2, 3, 8, 12], DType::F32, &mut rng(1)).unwrap();
    assert_eq!(pe.forward(&x).unwrap().dims(), &[2, 6, 16]);
    // Token r·3 + c is the projection of patch (r, c): the conv output, flattened row-major.
    let conv = pe.proj.forward(&x).unwrap(); // [2, 16, 2, 3]
    let tokens = pe.forward(&x).unwrap();
    let from_conv = host(&conv.narrow(2, 1, 1).unwrap().narrow(3, 2, 1).unwrap().flatten_all().unwrap());
    let from_tokens = host(&tokens.narrow(1, 5, 1).unwrap().flatten_all().unwrap());
    assert_eq!(from_conv, from_tokens);

    // The ViT's patch embedding is the one its config describes, stem included.
    let vit_cfg = VitConfig::hybrid_mnist();
    let pe_cfg = vit_cfg.patch_embed_config();
    assert_eq!(
        pe_cfg.stem,
        Some(StemConfig {
            channels: (32, 64),
            max_pool: true
        })
    );
    let vit = VisionTransformer::new(vit_cfg.clone(), &mut rng(2)).unwrap();
    assert_eq!(vit.patch_embed.num_params(), pe_cfg.num_params());
    assert_eq!((vit.grid(), pe_cfg.grid().unwrap()), ((7, 7), (7, 7)));
    let e = PatchEmbedConfig::new((4, 4), 5, 1, 8).grid().unwrap_err().to_string();
    assert!(e.contains("PatchEmbedConfig") && e.contains("patch size 5 does not fit the 4×4 image"), "{e}");
    let e = VitConfig::new((4, 4), 5, 1, 2, 8, 1, 2, 2.0).grid().unwrap_err().to_string();
    assert!(e.starts_with("VitConfig"), "{e}");
}

/// The dependency points one way: the ViT uses the patch embedding and the
/// stem, neither of which knows the ViT.
#[test]
fn patch_embed_and_the_stem_do_not_import_the_vit() {
    for (file, source) in [
        ("src/models/patch_embed.rs", include_str!("../../src/models/patch_embed.rs")),
        ("src/models/hybrid.rs", include_str!("../../src/models/hybrid.rs")),
    ] {
        assert!(!source.contains("vit::") && !source.contains("VitConfig"), "{file} refers to the ViT");
    }
}

// ---------------------------------------------------------------------------
// TransformerBlock, Gpt and VisionTransformer in f64 and from given weights.
// ---------------------------------------------------------------------------

mod models_in_any_dtype_and_from_weights {
    use super::*;
    use tamer::checkpoint::module_tensors;
    use tamer::models::{Gpt, GptConfig, Pool, PosEmbed, StemConfig, VisionTransformer, VitConfig};
    use tamer::nn::{BlockConfig, NormPlacement, TransformerBlock};

    fn micro_gpt() -> GptConfig {
        GptConfig {
            vocab_size: 5,
            block_size: 4,
            n_layer: 1,
            n_head: 2,
            n_embd: 4,
            ..GptConfig::gpt_tiny()
        }
    }

    fn micro_vit() -> VitConfig {
        VitConfig::new((4, 4), 2, 1, 3, 4, 1, 2, 1.0)
    }

    /// The module's parameters in f64 (what a gradient check differentiates)
    /// and their names.
    fn f64_state(module: &dyn Module) -> (Vec<String>, Vec<Tensor>) {
        module
            .named_params()
            .into_iter()
            .map(|(n, p)| (n, p.tensor().detach().to_dtype(DType::F64).unwrap()))
            .unzip()
    }

    /// Its buffers (batch-norm statistics: not differentiated), floats in f64.
    fn f64_buffers(module: &dyn Module) -> Vec<(String, Tensor)> {
        module
            .named_buffers()
            .into_iter()
            .map(|(n, p)| {
                let t = p.tensor().detach();
                (n, if t.dtype().is_float() { t.to_dtype(DType::F64).unwrap() } else { t })
            })
            .collect()
    }

    fn named(names: &[String], xs: &[Tensor]) -> Vec<(String, Tensor)> {
        names.iter().cloned().zip(xs.iter().cloned()).collect()
    }

    fn assert_f32_close(f64_values: &[f64], f32_values: &[f64], what: &str) {
        assert_eq!(f64_values.len(), f32_values.len());
        for (i, (a, b)) in f64_values.iter().zip(f32_values).enumerate() {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{what}[{i}]: f64 {a} vs f32 {b}");
        }
    }

    #[test]
    fn models_built_in_f64_compute_what_the_f32_ones_do() {
        let idx = Tensor::from_vec(vec![1i64, 4, 0, 2, 3, 3], [2, 3]).unwrap();
        let gpt32 = Gpt::new(micro_gpt(), &mut rng(7)).unwrap();
        let gpt64 = Gpt::with_dtype(micro_gpt(), DType::F64, &mut rng(7)).unwrap();
        assert!(gpt64.params().iter().all(|p| p.tensor().dtype() == DType::F64));
        assert!(gpt64.lm_head.weight.same(&gpt64.wte.weight), "still tied");
        let logits64 = gpt64.forward(&idx, None).unwrap().0;
        assert_eq!(logits64.dtype(), DType::F64);
        assert_f32_close(&host(&logits64), &host(&gpt32.forward(&idx, None).unwrap().0), "gpt logits");

        let cfg = VitConfig {
            pool: Pool::Mean,
            pos: PosEmbed::SinCos,
            ..micro_vit()
        };
        let vit32 = VisionTransformer::new(cfg.clone(), &mut rng(8)).unwrap();
        let vit64 = VisionTransformer::with_dtype(cfg, DType::F64, &mut rng(8)).unwrap();
        assert!(vit64
            .params()
            .iter()
            .chain(vit64.named_buffers().iter().map(|(_, p)| p))
            .all(|p| p.tensor().dtype() == DType::F64));
        let x = Tensor::randn([2, 1, 4, 4], DType::F64, &mut rng(9)).unwrap();
        let out64 = host(&vit64.forward(&x).unwrap());
        let out32 = host(&vit32.forward(&x.to_dtype(DType::F32).unwrap()).unwrap());
        assert_f32_close(&out64, &out32, "vit logits");

        let bcfg = BlockConfig {
            norm: NormPlacement::PostLN,
            ..BlockConfig::vit(2)
        };
        let b32 = TransformerBlock::new(4, &bcfg, &mut rng(10)).unwrap();
        let b64 = TransformerBlock::with_dtype(4, &bcfg, DType::F64, &mut rng(10)).unwrap();
        let h = Tensor::randn([2, 3, 4], DType::F64, &mut rng(11)).unwrap();
        assert_f32_close(
            &host(&b64.forward(&h).unwrap()),
            &host(&b32.forward(&h.to_dtype(DType::F32).unwrap()).unwrap()),
            "block",
        );

        // Any float dtype builds; an integer one is refused naming the constructor.
        let half = Gpt::with_dtype(micro_gpt(), DType::BF16, &mut rng(0)).unwrap();
        assert!(half.params().iter().all(|p| p.tensor().dtype() == DType::BF16));
        let e = VisionTransformer::with_dtype(micro_vit(), DType::I64, &mut rng(0)).err().unwrap().to_string();
        assert!(e.contains("VisionTransformer::with_dtype") && e.contains("not a float"), "{e}");
    }

    /// A finite-difference check of the GPT's loss with respect to every
    /// parameter: the checker's f64 variables become the model's parameters
    /// through `from_weights`, so a gradient that landed on another handle
    /// would read as zero and fail.
    #[test]
    fn a_gpt_built_from_f64_weights_passes_a_gradient_check() {
        let (names, weights) = f64_state(&Gpt::with_dtype(micro_gpt(), DType::F64, &mut rng(1)).unwrap());
        let idx = Tensor::from_vec(vec![1i64, 4, 0, 2, 3, 3], [2, 3]).unwrap();
        let targets = Tensor::from_vec(vec![4i64, 0, 2, 3, 3, 1], [2, 3]).unwrap();
        let f = |xs: &[Tensor]| {
            Gpt::from_weights(micro_gpt(), named(&names, xs))?
                .forward(&idx, Some(&targets))
                .map(|(_, loss)| loss.unwrap())
        };
        let report = check_gradients(f, &weights, &GradCheckConfig::default()).unwrap();
        assert!(report.passed() && report.checked == micro_gpt().num_params_closed_form(), "{report}");
    }

    #[test]
    fn a_vit_built_from_f64_weights_passes_a_gradient_check() {
        let cfg = VitConfig {
            stem: Some(StemConfig {
                channels: (2, 2),
                max_pool: false,
            }),
            ..VitConfig::new((4, 4), 1, 1, 3, 4, 1, 2, 1.0)
        };
        let mut vit = VisionTransformer::with_dtype(cfg.clone(), DType::F64, &mut rng(2)).unwrap();
        vit.set_training(false); // the stem's batch norms on their running statistics
        let (names, weights) = f64_state(&vit);
        let buffers = f64_buffers(&vit);
        assert_eq!(buffers.len(), 6);
        let x = Tensor::randn([2, 1, 4, 4], DType::F64, &mut rng(3)).unwrap();
        let f = |xs: &[Tensor]| {
            let mut m = VisionTransformer::from_weights(cfg.clone(), named(&names, xs).into_iter().chain(buffers.clone()))?;
            m.set_training(false);
            m.forward(&x)
        };
        let report = check_gradients(f, &weights, &GradCheckConfig::default()).unwrap();
        assert!(report.passed() && report.checked == cfg.num_params_closed_form().unwrap(), "{report}");
    }

    #[test]
    fn a_block_built_from_f64_weights_passes_a_gradient_check() {
        let cfg = BlockConfig {
            norm: NormPlacement::PostLN,
            residual_scale: 1.5,
            ..BlockConfig::gpt(2, 0.0, true)
        };
        let (names, weights) = f64_state(&TransformerBlock::with_dtype(4, &cfg, DType::F64, &mut rng(4)).unwrap());
        let h = Tensor::randn([2, 3, 4], DType::F64, &mut rng(5)).unwrap();
        let f = |xs: &[Tensor]| TransformerBlock::from_weights(&cfg, named(&names, xs))?.forward(&h);
        let report = check_gradients(f, &weights, &GradCheckConfig::default()).unwrap();
        assert!(report.passed(), "{report}");
    }

    #[test]
    fn a_model_built_from_a_state_dict_computes_what_its_source_does() {
        let source = Gpt::new(micro_gpt(), &mut rng(6)).unwrap();
        let state = module_tensors(&source); // both tied names, as nanoGPT's state_dict
        assert!(state.iter().any(|(n, _)| n == "lm_head.weight"));
        let gpt = Gpt::from_weights(micro_gpt(), state).unwrap();
        assert!(gpt.lm_head.weight.same(&gpt.wte.weight));
        let idx = Tensor::from_vec(vec![1i64, 4, 0, 2], [1, 4]).unwrap();
        assert_eq!(host(&gpt.forward(&idx, None).unwrap().0), host(&source.forward(&idx, None).unwrap().0));

        let cfg = VitConfig {
            pos: PosEmbed::SinCos,
            stem: Some(StemConfig {
                channels: (2, 3),
                max_pool: true,
            }),
            ..VitConfig::new((6, 6), 1, 2, 3, 8, 2, 2, 2.0)
        };
        let mut source = VisionTransformer::new(cfg.clone(), &mut rng(7)).unwrap();
        let x = Tensor::randn([2, 2, 6, 6], DType::F32, &mut rng(8)).unwrap();
        source.forward(&x).unwrap(); // moves the batch norms' running statistics off their start
        source.set_training(false);
        let mut vit = VisionTransformer::from_weights(cfg, module_tensors(&source)).unwrap();
        vit.set_training(false);
        assert_eq!(host(&vit.forward(&x).unwrap()), host(&source.forward(&x).unwrap()));
    }

    #[test]
    fn the_given_variables_are_the_models_parameters() {
        let (names, weights) = f64_state(&Gpt::new(micro_gpt(), &mut rng(9)).unwrap());
        let vars: Vec<Tensor> = weights.iter().map(Tensor::variable).collect();
        let gpt = Gpt::from_weights(micro_gpt(), named(&names, &vars)).unwrap();
        let idx = Tensor::from_vec(vec![1i64, 4, 0], [1, 3]).unwrap();
        let grads = gpt.forward(&idx, Some(&idx)).unwrap().1.unwrap().backward().unwrap();
        for (name, v) in names.iter().zip(&vars) {
            assert!(grads.get(v).is_some(), "no gradient on the given {name}");
        }
    }

    #[test]
    fn wrong_weights_are_refused_with_every_problem_listed() {
        let mut state = module_tensors(&Gpt::new(micro_gpt(), &mut rng(10)).unwrap());
        state.retain(|(n, _)| n != "transformer.ln_f.bias");
        for (n, t) in state.iter_mut() {
            if n == "transformer.wpe.weight" {
                *t = Tensor::zeros([3, 4], DType::F32).unwrap();
            } else if n == "lm_head.weight" {
                *t = t.scale(-1.0).unwrap();
            } else if n.ends_with("ln_1.weight") {
                *t = t.to_dtype(DType::F64).unwrap();
            }
        }
        state.push(("transformer.h.9.attn.c_attn.weight".into(), Tensor::zeros([12, 4], DType::F32).unwrap()));
        let e = Gpt::from_weights(micro_gpt(), state).err().unwrap().to_string();
        for part in [
            "Gpt::from_weights",
            "transformer.ln_f.bias: missing",
            "transformer.wpe.weight: given shape [3, 4], the model's is [4, 4]",
            "lm_head.weight: differs from transformer.wte.weight",
            "transformer.h.9.attn.c_attn.weight: not a parameter",
            "float tensors of several dtypes",
        ] {
            assert!(e.contains(part), "missing '{part}' in: {e}");
        }
        let e = TransformerBlock::from_weights(&BlockConfig::vit(2), Vec::new()).err().unwrap().to_string();
        assert!(e.contains("norm1.weight"), "{e}");
    }
}

// ---------------------------------------------------------------------------
// Weight-decay rules named after what they reproduce, and the training log.
// ---------------------------------------------------------------------------

mod weight_decay_rules {
    use super::*;
    use tamer::models::{Gpt, GptConfig, VisionTransformer, VitConfig};
    use tamer::optim::{split_param_groups, Adam, AdamConfig, DecayRule, DecaySummary, Optimizer};

    /// nanoGPT's `named_parameters()` for gpt-tiny (4 layers, biases, tied):
    /// PyTorch lists the tied `lm_head.weight` once, as `transformer.wte.weight`.
    fn nanogpt_parameter_names() -> Vec<String> {
        let mut v = vec!["transformer.wte.weight".to_string(), "transformer.wpe.weight".to_string()];
        for i in 0..4 {
            for s in [
                "ln_1.weight",
                "ln_1.bias",
                "attn.c_attn.weight",
                "attn.c_attn.bias",
                "attn.c_proj.weight",
                "attn.c_proj.bias",
                "ln_2.weight",
                "ln_2.bias",
                "mlp.c_fc.weight",
                "mlp.c_fc.bias",
                "mlp.c_proj.weight",
                "mlp.c_proj.bias",
            ] {
                v.push(format!("transformer.h.{i}.{s}"));
            }
        }
        v.extend(["transformer.ln_f.weight".to_string(), "transformer.ln_f.bias".to_string()]);
        v
    }

    /// timm's `named_parameters()` for vit-tiny (class token, learned positions, 4 blocks, head).
    fn timm_vit_parameter_names() -> Vec<String> {
        let mut v: Vec<String> = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
            .map(String::from)
            .to_vec();
        for i in 0..4 {
            for s in [
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
            ] {
                v.push(format!("blocks.{i}.{s}"));
            }
        }
        v.extend(["norm.weight", "norm.bias", "head.weight", "head.bias"].map(String::from));
        v
    }

    fn decayed(module: &dyn Module, rule: &DecayRule) -> Vec<String> {
        let groups = split_param_groups(module.named_params(), 0.1, rule);
        groups
            .iter()
            .filter(|g| g.weight_decay > 0.0)
            .flat_map(|g| g.params.iter().map(|(n, _)| n.clone()))
            .collect()
    }

    fn keep(names: Vec<String>, f: impl Fn(&str) -> bool) -> Vec<String> {
        names.into_iter().filter(|n| f(n)).collect()
    }

    #[test]
    fn each_rule_decays_exactly_what_its_namesake_does_on_gpt_tiny() {
        let gpt = Gpt::new(GptConfig::gpt_tiny(), &mut rng(0)).unwrap();
        let all = nanogpt_parameter_names();
        // torch.optim.AdamW(model.parameters()): everything, the tied head once.
        assert_eq!(decayed(&gpt, &DecayRule::Torch), all);
        // nanoGPT's configure_optimizers: p.dim() >= 2, i.e. the four matmul
        // weights per block and both embeddings (so the tied lm_head, once).
        let nanogpt = keep(all.clone(), |n| {
            n.ends_with("wte.weight") || n.ends_with("wpe.weight") || n.ends_with("c_attn.weight") || n.ends_with("c_proj.weight") || n.ends_with("c_fc.weight")
        });
        assert_eq!(nanogpt.len(), 18);
        assert_eq!(decayed(&gpt, &DecayRule::NanoGpt), nanogpt);
        // nanoGPT prints "num decayed parameter tensors: 18, with 802,944 parameters".
        let summary = DecaySummary::of(&split_param_groups(gpt.named_params(), 0.1, &DecayRule::NanoGpt));
        assert_eq!((summary.decayed.len(), summary.values()), (18, (802_944, 6_912)));
        // timm's rule (a GPT declares no no_weight_decay names): the same split.
        assert_eq!(decayed(&gpt, &DecayRule::timm(&gpt)), nanogpt);
    }

    #[test]
    fn each_rule_decays_exactly_what_its_namesake_does_on_vit_tiny() {
        let vit = VisionTransformer::new(VitConfig::vit_tiny(), &mut rng(0)).unwrap();
        let all = timm_vit_parameter_names();
        assert_eq!(decayed(&vit, &DecayRule::Torch), all);
        // nanoGPT's dim >= 2 takes the [1, 1, D] class token, the [1, T, D]
        // positions and the 4-D patch projection too.
        let matrices =
            |n: &str| n.ends_with("qkv.weight") || n.ends_with("proj.weight") || n.ends_with("fc1.weight") || n.ends_with("fc2.weight") || n == "head.weight";
        assert_eq!(
            decayed(&vit, &DecayRule::NanoGpt),
            keep(all.clone(), |n| n == "cls_token" || n == "pos_embed" || matrices(n))
        );
        // timm: ndim <= 1, *.bias and no_weight_decay() = {pos_embed, cls_token, dist_token} are exempt.
        assert_eq!(vit.no_weight_decay(), ["pos_embed", "cls_token", "dist_token"]);
        assert_eq!(decayed(&vit, &DecayRule::timm(&vit)), keep(all, matrices));
    }

    #[test]
    fn adamw_defaults_to_pytorchs_rule_and_the_tied_head_is_one_parameter() {
        let gpt = Gpt::new(GptConfig::gpt_tiny(), &mut rng(0)).unwrap();
        let opt = Adam::new(gpt.named_params(), AdamConfig::adamw(1e-3)).unwrap();
        let groups = opt.param_groups();
        assert_eq!((groups.len(), groups[0].weight_decay, groups[0].params.len()), (1, 0.01, 52));
        assert!(opt.params().iter().filter(|p| p.same(&gpt.lm_head.weight)).count() == 1);
    }

    #[test]
    fn the_trainer_logs_which_parameters_are_decayed_at_the_start() {
        use tamer::data::{digits, DataLoader, LoaderConfig};
        use tamer::optim::{Constant, Scheduler};
        use tamer::train::{read_jsonl, ImageClassification, TrainConfig, Trainer};
        let (train, test) = digits::load_images().unwrap();
        let cfg = VitConfig::new((8, 8), 4, 1, 10, 8, 2, 2, 2.0);
        let model = VisionTransformer::new(cfg, &mut rng(0)).unwrap();
        let opt = Adam::new(
            model.named_params(),
            AdamConfig::adamw(1e-3).weight_decay(0.05).decay_rule(DecayRule::timm(&model)),
        )
        .unwrap();
        let loader = DataLoader::new(train, LoaderConfig::train(16, 0)).unwrap();
        let task = ImageClassification::new(model, loader, test, 512, tamer::CrossEntropyOptions::default()).unwrap();
        let dir = std::env::temp_dir().join(format!("tamer-api-traps-decay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = TrainConfig {
            total_steps: 1,
            out_dir: Some(dir.clone()),
            print: false,
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::new(config, task, Box::new(opt), Scheduler::new(Constant { lr: 1e-3 })).unwrap();
        trainer.fit().unwrap();
        let records = read_jsonl(dir.join("metrics.jsonl")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let rec = records.iter().find(|r| r["event"] == "weight_decay").expect("a weight_decay record");
        let start = records.iter().position(|r| r["event"] == "start").unwrap();
        assert!(
            records.iter().position(|r| r["event"] == "weight_decay").unwrap() == start + 1,
            "logged at the start"
        );
        // Decayed: patch_embed.proj.weight, per block qkv, proj, fc1, fc2 weights, head.weight.
        assert_eq!(
            (rec["decayed"].as_u64(), rec["not_decayed"].as_u64()),
            (Some(1 + 2 * 4 + 1), Some(3 + 2 * 8 + 2 + 1))
        );
        let names: Vec<&str> = rec["decayed_names"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "patch_embed.proj.weight",
                "blocks.*.attn.qkv.weight ×2",
                "blocks.*.attn.proj.weight ×2",
                "blocks.*.mlp.fc1.weight ×2",
                "blocks.*.mlp.fc2.weight ×2",
                "head.weight"
            ]
        );
        let exempt: Vec<&str> = rec["not_decayed_names"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(&exempt[..3], ["cls_token", "pos_embed", "patch_embed.proj.bias"]);
        assert_eq!(rec["rates"], serde_json::json!([0.05]));
        let d = 8;
        let decayed_values = d * 16 + 2 * (3 * d * d + d * d + 2 * d * 16) + 10 * d;
        assert_eq!(rec["decayed_values"].as_u64(), Some(decayed_values as u64));
    }
}
