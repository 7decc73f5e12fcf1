//! Per-layer training diagnostics: gradient norms, update-to-weight ratios
//! and attention entropy, which the trainer logs every
//! [`diagnostics_every`](crate::train::TrainConfig::diagnostics_every) steps.
//!
//! - **Gradient norms per layer** `‖∇_{W_l} L‖` (the parameters of one block
//!   together, see [`layer_of`]): the global norm that clipping looks at
//!   hides where the gradient comes from. Liu et al. (2020, "Understanding
//!   the Difficulty of Training Transformers") show post-LN
//!   decoders with gradients that grow towards the top layers; Xiong et al.
//!   (2020, "On Layer Normalization in the Transformer Architecture") show
//!   that at initialisation post-LN's gradients near the output are large,
//!   which is why it needs warmup, and pre-LN's are not.
//! - **Update-to-weight ratios** `‖ΔW_l‖ / ‖W_l‖` for one optimizer step:
//!   the relative size of what the optimizer does to each layer, the
//!   quantity a learning rate really sets. Around 1e-3 is the usual healthy
//!   range (Karpathy, "Neural networks: zero to hero", 2022); far above it a
//!   layer is being rewritten each step, far below it it barely learns.
//! - **Attention entropy** per layer, the mean over heads and queries of
//!   `−Σ_k p_k log p_k` (nats) of the attention probabilities: `log T` for
//!   uniform attention, 0 when every query looks at one key. Zhai et al.
//!   (2023, "Stabilizing Transformer Training by Preventing Attention Entropy
//!   Collapse") find that entropy collapsing towards 0 precedes training
//!   instability; entropy stuck at `log T` means the layer attends to
//!   nothing in particular.

use crate::models::{Gpt, TransformerEncoder, VisionTransformer};
use crate::nn::{Param, TransformerBlock};
use crate::tensor::Tensor;
use crate::{no_grad, Error, GradStore, Result};
use std::collections::HashSet;

/// The layer a parameter belongs to, from its hierarchical name: the name up
/// to the first numeric component (the block index: `blocks.3.attn.qkv.weight`
/// → `blocks.3`, `transformer.h.0.ln_1.weight` → `transformer.h.0`), else the
/// module that holds it (`patch_embed.proj.weight` → `patch_embed.proj`,
/// `head.bias` → `head`), else the name itself (`cls_token`).
///
/// ```
/// use tamer::diagnostics::layer_of;
/// assert_eq!(layer_of("blocks.3.attn.qkv.weight"), "blocks.3");
/// assert_eq!(layer_of("transformer.h.11.mlp.c_fc.bias"), "transformer.h.11");
/// assert_eq!(layer_of("transformer.wte.weight"), "transformer.wte");
/// assert_eq!(layer_of("pos_embed"), "pos_embed");
/// ```
pub fn layer_of(name: &str) -> &str {
    let mut end = 0;
    for (i, part) in name.split('.').enumerate() {
        let part_end = end + if i == 0 { 0 } else { 1 } + part.len();
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            return &name[..part_end];
        }
        end = part_end;
    }
    name.rsplit_once('.').map_or(name, |(module, _)| module)
}

/// The parameters grouped by [`layer_of`], layers in order of first appearance,
/// tied parameters once.
fn group(named: &[(String, Param)]) -> Vec<(&str, Vec<&Param>)> {
    let mut seen = HashSet::new();
    let mut layers: Vec<(&str, Vec<&Param>)> = Vec::new();
    for (name, p) in named {
        if !seen.insert(p.tensor().id()) {
            continue;
        }
        let layer = layer_of(name);
        match layers.iter_mut().find(|(l, _)| *l == layer) {
            Some((_, ps)) => ps.push(p),
            None => layers.push((layer, vec![p])),
        }
    }
    layers
}

fn sum_squares(t: &Tensor) -> Result<f64> {
    Ok(no_grad(|| t.to_f64_vec())?.iter().map(|v| v * v).sum())
}

/// Per-layer gradient norms: for each layer ([`layer_of`] the parameter
/// names), `√(Σ ‖g‖²)` over its parameters' gradients in `grads` (parameters
/// without a gradient count 0). The squares of the layer norms sum to the
/// square of the global norm that [`clip_grad_norm`](crate::optim::clip_grad_norm)
/// uses. Layers come in the order of `named_params`.
///
/// ```
/// use tamer::diagnostics::layer_grad_norms;
/// use tamer::models::{Gpt, GptConfig};
/// use tamer::nn::Module;
/// use tamer::{rng, Tensor};
/// let cfg = GptConfig { vocab_size: 11, block_size: 8, n_layer: 2, n_head: 2, n_embd: 16, ..GptConfig::gpt_tiny() };
/// let gpt = Gpt::new(cfg, &mut rng(0)).unwrap();
/// let idx = Tensor::from_vec(vec![1i64, 2, 3, 4], [1, 4]).unwrap();
/// let (_, loss) = gpt.forward(&idx, Some(&idx)).unwrap();
/// let grads = loss.unwrap().backward().unwrap();
/// let norms = layer_grad_norms(&gpt.named_params(), &grads).unwrap();
/// let names: Vec<&str> = norms.iter().map(|(l, _)| l.as_str()).collect();
/// assert_eq!(names, ["transformer.wte", "transformer.wpe", "transformer.h.0", "transformer.h.1", "transformer.ln_f"]);
/// assert!(norms.iter().all(|(_, n)| *n > 0.0));
/// ```
pub fn layer_grad_norms(named_params: &[(String, Param)], grads: &GradStore) -> Result<Vec<(String, f64)>> {
    group(named_params)
        .into_iter()
        .map(|(layer, params)| {
            let mut total = 0.0;
            for p in params {
                if let Some(g) = grads.get(&p.tensor()) {
                    total += sum_squares(g)?;
                }
            }
            Ok((layer.to_string(), total.sqrt()))
        })
        .collect()
}

/// The parameters' values before an optimizer step, for [`update_ratios`].
pub struct ParamSnapshot {
    layers: Vec<(String, Vec<SavedParam>)>,
}

/// A parameter and its values when the snapshot was taken.
type SavedParam = (Param, Vec<f64>);

impl ParamSnapshot {
    /// Copy every parameter's values (to the host, in f64), grouped by layer.
    ///
    /// ```
    /// use tamer::diagnostics::{update_ratios, ParamSnapshot};
    /// use tamer::nn::{Linear, Module};
    /// use tamer::{rng, DType, Tensor};
    /// let layer = Linear::new(3, 2, true, &mut rng(0)).unwrap();
    /// let before = ParamSnapshot::take(&layer.named_params()).unwrap();
    /// let w = layer.weight.tensor();
    /// w.assign(&w.scale(1.01).unwrap()).unwrap(); // an "update" of 1% of the weight
    /// let ratios = update_ratios(&before).unwrap();
    /// // A bare layer's parameters have no module prefix: each is its own group.
    /// assert_eq!((ratios[0].0.as_str(), ratios[1].0.as_str()), ("weight", "bias"));
    /// assert!((ratios[0].1 - 0.01).abs() < 1e-6);
    /// assert_eq!(ratios[1].1, 0.0); // the bias did not move
    /// ```
    pub fn take(named_params: &[(String, Param)]) -> Result<ParamSnapshot> {
        let layers = group(named_params)
            .into_iter()
            .map(|(layer, params)| {
                let values = params
                    .into_iter()
                    .map(|p| Ok((p.clone(), no_grad(|| p.tensor().to_f64_vec())?)))
                    .collect::<Result<Vec<_>>>()?;
                Ok((layer.to_string(), values))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ParamSnapshot { layers })
    }
}

/// Update-to-weight ratios per layer: `‖W_after − W_before‖ / ‖W_before‖`
/// over each layer's parameters together (Frobenius norms), between a
/// [`ParamSnapshot`] and the parameters' current values. A layer whose
/// weights were all zero reports the norm of its update instead (a ratio
/// to zero means nothing); a parameter whose shape changed is an error.
/// See the [module docs](self) for what the values mean.
///
/// ```
/// use tamer::diagnostics::{update_ratios, ParamSnapshot};
/// use tamer::models::{Gpt, GptConfig};
/// use tamer::nn::Module;
/// use tamer::optim::{Adam, AdamConfig, Optimizer};
/// use tamer::{rng, Tensor};
/// let cfg = GptConfig { vocab_size: 11, block_size: 8, n_layer: 1, n_head: 2, n_embd: 16, ..GptConfig::gpt_tiny() };
/// let gpt = Gpt::new(cfg, &mut rng(0)).unwrap();
/// let mut opt = Adam::new(gpt.named_params(), AdamConfig::adamw(1e-3)).unwrap();
/// let idx = Tensor::from_vec(vec![1i64, 2, 3, 4], [1, 4]).unwrap();
/// let grads = gpt.forward(&idx, Some(&idx)).unwrap().1.unwrap().backward().unwrap();
/// let before = ParamSnapshot::take(&gpt.named_params()).unwrap();
/// opt.step(&grads).unwrap();
/// let ratios = update_ratios(&before).unwrap();
/// assert_eq!(ratios.len(), 4); // wte, wpe, h.0, ln_f
/// assert!(ratios.iter().all(|(_, r)| *r > 0.0 && *r < 0.1));
/// ```
pub fn update_ratios(before: &ParamSnapshot) -> Result<Vec<(String, f64)>> {
    before
        .layers
        .iter()
        .map(|(layer, params)| {
            let (mut delta2, mut weight2) = (0.0, 0.0);
            for (p, old) in params {
                let now = no_grad(|| p.tensor().to_f64_vec())?;
                if now.len() != old.len() {
                    return Err(Error::shape(
                        "update_ratios",
                        format!(
                            "a parameter of layer {layer:?} had {} elements in the snapshot and has {} now",
                            old.len(),
                            now.len()
                        ),
                    ));
                }
                delta2 += now.iter().zip(old).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
                weight2 += old.iter().map(|v| v * v).sum::<f64>();
            }
            let ratio = if weight2 > 0.0 { (delta2 / weight2).sqrt() } else { delta2.sqrt() };
            Ok((layer.clone(), ratio))
        })
        .collect()
}

/// The mean attention entropy `−Σ_k p_k ln p_k` (nats, `0 ln 0 = 0`) of
/// attention probabilities `[B, H, Tq, Tk]` (each row a distribution over
/// keys), averaged over batch, heads and queries. With a causal mask, query
/// `i` sees `i + 1` keys, so its entropy is at most `ln(i + 1)`. See the
/// [module docs](self) for why it matters.
///
/// ```
/// use tamer::diagnostics::attention_entropy;
/// use tamer::Tensor;
/// // One head, two queries over two keys: uniform (ln 2) and one-hot (0).
/// let p = Tensor::from_vec(vec![0.5f64, 0.5, 1.0, 0.0], [1, 1, 2, 2]).unwrap();
/// assert!((attention_entropy(&p).unwrap() - 2f64.ln() / 2.0).abs() < 1e-15);
/// ```
pub fn attention_entropy(probs: &Tensor) -> Result<f64> {
    const OP: &str = "attention_entropy";
    if probs.rank() != 4 || probs.numel() == 0 {
        return Err(Error::shape(
            OP,
            format!("probabilities of shape {}; expected non-empty [batch, heads, queries, keys]", probs.shape()),
        ));
    }
    if !probs.dtype().is_float() {
        return Err(Error::dtype(OP, format!("probabilities of dtype {}; expected a float tensor", probs.dtype())));
    }
    let keys = probs.dims()[3];
    let p = no_grad(|| probs.to_f64_vec())?;
    if let Some(bad) = p.iter().find(|v| !(**v >= 0.0 && **v <= 1.0 + 1e-6)) {
        return Err(Error::value(OP, format!("{bad} is not a probability")));
    }
    let rows = p.len() / keys;
    let total: f64 = p.iter().filter(|v| **v > 0.0).map(|v| -v * v.ln()).sum();
    Ok(total / rows as f64)
}

/// What [`probe_blocks`] measured on a probe batch.
///
/// ```
/// use tamer::diagnostics::{probe_blocks, LayerProbe};
/// use tamer::Tensor;
/// // No blocks: only the input's residual, no attention.
/// let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], [1, 2, 2]).unwrap();
/// let probe: LayerProbe = probe_blocks(&[], &x).unwrap();
/// assert_eq!((probe.rank_collapse.len(), probe.attention_entropy.len()), (1, 0));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerProbe {
    /// [`rank_collapse_residual`](super::rank_collapse_residual) of the
    /// residual stream at every depth: the blocks' input, then each block's output.
    pub rank_collapse: Vec<f64>,
    /// [`attention_entropy`] of each block's attention.
    pub attention_entropy: Vec<f64>,
}

/// Run `x [B, T, C]` (the embedded input) through `blocks` without a graph,
/// recording the rank-collapse residual at every depth and the attention
/// entropy of every block. The models' `probe` methods call it with their
/// embeddings; the trainer logs it for a fixed probe batch. Run in eval mode
/// (the probabilities are computed without attention dropout, the blocks'
/// outputs with whatever dropout is on).
///
/// ```
/// use tamer::diagnostics::probe_blocks;
/// use tamer::nn::{BlockConfig, TransformerBlock};
/// use tamer::{rng, DType, Tensor};
/// let blocks: Vec<TransformerBlock> = (0..3).map(|i| TransformerBlock::new(8, &BlockConfig::vit(2), &mut rng(i)).unwrap()).collect();
/// let x = Tensor::randn([2, 5, 8], DType::F32, &mut rng(9)).unwrap();
/// let probe = probe_blocks(&blocks, &x).unwrap();
/// assert_eq!((probe.rank_collapse.len(), probe.attention_entropy.len()), (4, 3));
/// assert!(probe.attention_entropy.iter().all(|h| *h > 0.0 && *h <= 5f64.ln() + 1e-6));
/// ```
pub fn probe_blocks(blocks: &[TransformerBlock], x: &Tensor) -> Result<LayerProbe> {
    no_grad(|| {
        let mut probe = LayerProbe::default();
        let mut h = x.clone();
        probe.rank_collapse.push(super::rank_collapse_residual(&h)?);
        for block in blocks {
            probe.attention_entropy.push(attention_entropy(&block.attention_probs(&h)?)?);
            h = block.forward(&h)?;
            probe.rank_collapse.push(super::rank_collapse_residual(&h)?);
        }
        Ok(probe)
    })
}

/// A model whose transformer blocks [`probe_blocks`] can look into: its
/// embedding of an input and its blocks. The trainer's tasks use it to log
/// per-layer diagnostics for a probe batch.
///
/// ```
/// use tamer::diagnostics::Probe;
/// use tamer::models::{Pool, VisionTransformer, VitConfig};
/// use tamer::{rng, DType, Tensor};
/// let vit = VisionTransformer::new(VitConfig { pool: Pool::Mean, ..VitConfig::new((8, 8), 4, 1, 10, 16, 2, 2, 2.0) }, &mut rng(0)).unwrap();
/// let x = Tensor::randn([2, 1, 8, 8], DType::F32, &mut rng(1)).unwrap();
/// let probe = vit.probe(&x).unwrap();
/// assert_eq!(probe.rank_collapse.len(), 3); // embeddings + 2 blocks
/// ```
pub trait Probe {
    /// The input of the first block for model input `x`.
    fn embed_for_probe(&self, x: &Tensor) -> Result<Tensor>;
    /// The transformer blocks, in order.
    fn blocks(&self) -> &[TransformerBlock];
    /// [`probe_blocks`] of this model's blocks on its embedding of `x`.
    fn probe(&self, x: &Tensor) -> Result<LayerProbe> {
        let embedded = no_grad(|| self.embed_for_probe(x))?;
        probe_blocks(self.blocks(), &embedded)
    }
}

impl Probe for VisionTransformer {
    fn embed_for_probe(&self, x: &Tensor) -> Result<Tensor> {
        self.embed(x)
    }
    fn blocks(&self) -> &[TransformerBlock] {
        &self.blocks
    }
}

impl Probe for TransformerEncoder {
    fn embed_for_probe(&self, x: &Tensor) -> Result<Tensor> {
        self.embed(x)
    }
    fn blocks(&self) -> &[TransformerBlock] {
        &self.blocks
    }
}

impl Probe for Gpt {
    fn embed_for_probe(&self, x: &Tensor) -> Result<Tensor> {
        self.embed(x)
    }
    fn blocks(&self) -> &[TransformerBlock] {
        &self.h
    }
}

/// What [`StepDiagnostics::before_step`] and [`after_step`](StepDiagnostics::after_step)
/// measure around one optimizer step: the gradient norm and the update ratio
/// of every layer.
pub struct StepDiagnostics {
    /// Layer names ([`layer_of`]), in the order of the model's parameters.
    pub layers: Vec<String>,
    /// The gradient norm of each layer (before clipping).
    pub grad_norms: Vec<f64>,
    /// The update-to-weight ratio of each layer, once [`after_step`](Self::after_step) ran.
    pub update_ratios: Vec<f64>,
    snapshot: ParamSnapshot,
}

impl StepDiagnostics {
    /// Before the optimizer step (and before clipping): the layers' gradient
    /// norms and a snapshot of the parameters.
    ///
    /// ```
    /// use tamer::diagnostics::StepDiagnostics;
    /// use tamer::nn::{Linear, Module};
    /// use tamer::optim::{Optimizer, Sgd, SgdConfig};
    /// use tamer::{rng, DType, Tensor};
    /// let layer = Linear::new(3, 2, true, &mut rng(0)).unwrap();
    /// let mut opt = Sgd::new(layer.named_params(), SgdConfig::new(0.1)).unwrap();
    /// let x = Tensor::randn([4, 3], DType::F32, &mut rng(1)).unwrap();
    /// let grads = layer.forward(&x).unwrap().powf(2.0).unwrap().mean_all().unwrap().backward().unwrap();
    /// let mut diag = StepDiagnostics::before_step(&layer.named_params(), &grads).unwrap();
    /// opt.step(&grads).unwrap();
    /// diag.after_step().unwrap();
    /// assert_eq!(diag.layers, ["weight", "bias"]); // a bare layer: one group per parameter
    /// assert_eq!((diag.grad_norms.len(), diag.update_ratios.len()), (2, 2));
    /// assert!(diag.update_ratios.iter().all(|r| *r > 0.0));
    /// ```
    pub fn before_step(named_params: &[(String, Param)], grads: &GradStore) -> Result<StepDiagnostics> {
        let (layers, grad_norms) = layer_grad_norms(named_params, grads)?.into_iter().unzip();
        Ok(StepDiagnostics {
            layers,
            grad_norms,
            update_ratios: Vec::new(),
            snapshot: ParamSnapshot::take(named_params)?,
        })
    }

    /// After the optimizer step: the layers' update-to-weight ratios (see
    /// [`before_step`](Self::before_step)'s example).
    pub fn after_step(&mut self) -> Result<()> {
        self.update_ratios = update_ratios(&self.snapshot)?.into_iter().map(|(_, r)| r).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Pool, VitConfig};
    use crate::nn::Module;
    use crate::optim::grad_norm;
    use crate::{rng, DType};

    #[test]
    fn layer_names() {
        assert_eq!(layer_of("blocks.0.norm1.weight"), "blocks.0");
        assert_eq!(layer_of("blocks.12.mlp.fc2.bias"), "blocks.12");
        assert_eq!(layer_of("stem.3.conv.weight"), "stem.3");
        assert_eq!(layer_of("patch_embed.proj.weight"), "patch_embed.proj");
        assert_eq!(layer_of("norm.bias"), "norm");
        assert_eq!(layer_of("cls_token"), "cls_token");
        assert_eq!(layer_of("weight"), "weight");
    }

    #[test]
    fn layer_grad_norms_square_sum_to_the_global_norm() {
        let cfg = VitConfig {
            pool: Pool::Cls,
            ..VitConfig::new((8, 8), 4, 1, 10, 16, 3, 2, 2.0)
        };
        let vit = VisionTransformer::new(cfg, &mut rng(0)).unwrap();
        let x = Tensor::randn([3, 1, 8, 8], DType::F32, &mut rng(1)).unwrap();
        let labels = Tensor::from_vec(vec![1i64, 4, 7], [3]).unwrap();
        let grads = vit.forward(&x).unwrap().cross_entropy(&labels, Default::default()).unwrap().backward().unwrap();
        let norms = layer_grad_norms(&vit.named_params(), &grads).unwrap();
        let names: Vec<&str> = norms.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.contains(&"blocks.0") && names.contains(&"blocks.2") && names.contains(&"head"),
            "{names:?}"
        );
        assert_eq!(names.iter().filter(|n| n.starts_with("blocks.")).count(), 3);
        let sum: f64 = norms.iter().map(|(_, n)| n * n).sum();
        let global = grad_norm(&grads, &vit.params()).unwrap();
        assert!((sum.sqrt() - global).abs() < 1e-5 * global, "{} vs {global}", sum.sqrt());
    }

    #[test]
    fn entropy_values_and_errors() {
        // Uniform over 4 keys: ln 4 for every query.
        let p = Tensor::full([2, 3, 5, 4], 0.25, DType::F64).unwrap();
        assert!((attention_entropy(&p).unwrap() - 4f64.ln()).abs() < 1e-14);
        // [0.5, 0.25, 0.25]: ½ ln 2 + 2·¼ ln 4 = 1.5 ln 2.
        let p = Tensor::from_vec(vec![0.5f64, 0.25, 0.25], [1, 1, 1, 3]).unwrap();
        assert!((attention_entropy(&p).unwrap() - 1.5 * 2f64.ln()).abs() < 1e-15);
        assert!(attention_entropy(&Tensor::ones([2, 2], DType::F64).unwrap())
            .unwrap_err()
            .to_string()
            .contains("attention_entropy"));
        assert!(attention_entropy(&Tensor::full([1, 1, 1, 2], -0.5, DType::F64).unwrap()).is_err());
    }

    #[test]
    fn probe_matches_the_models_hidden_states() {
        let cfg = VitConfig {
            pool: Pool::Mean,
            ..VitConfig::new((8, 8), 4, 1, 10, 16, 2, 2, 2.0)
        };
        let vit = VisionTransformer::new(cfg, &mut rng(0)).unwrap();
        let x = Tensor::randn([2, 1, 8, 8], DType::F32, &mut rng(1)).unwrap();
        let probe = vit.probe(&x).unwrap();
        let (_, hidden) = no_grad(|| vit.forward_with_hidden(&x)).unwrap();
        assert_eq!(probe.rank_collapse, super::super::rank_collapse_by_depth(&hidden).unwrap());
        assert_eq!(probe.attention_entropy.len(), 2);
        // The entropy of a 4-token attention lies in (0, ln 4].
        assert!(
            probe.attention_entropy.iter().all(|h| *h > 0.0 && *h <= 4f64.ln() + 1e-6),
            "{:?}",
            probe.attention_entropy
        );
    }
}
