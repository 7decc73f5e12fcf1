//! Which parameters get weight decay: rules named after the code they
//! reproduce, the split into parameter groups, and the summary a training
//! run logs at its start.
//!
//! | rule | decays | reproduces |
//! |---|---|---|
//! | [`DecayRule::Torch`] (the default) | every parameter | `torch.optim.AdamW(model.parameters(), weight_decay=wd)` |
//! | [`DecayRule::NanoGpt`] | parameters with ≥ 2 dims: matmul weights and embeddings (a tied `lm_head` with them, once); not biases or norm gains | nanoGPT's `GPT.configure_optimizers` |
//! | [`DecayRule::Timm`] | parameters with ≥ 2 dims, except names ending in `.bias` and names matching the model's `no_weight_decay()` (a ViT's `pos_embed`, `cls_token`) | timm's `param_groups_weight_decay` as `create_optimizer_v2` calls it |
//!
//! The default follows PyTorch: given a model's parameters, `torch.optim.AdamW`
//! decays all of them, and so does [`AdamConfig::adamw`](super::AdamConfig::adamw)
//! with the default rule. Transformer recipes rarely want that (decaying norm
//! gains and position embeddings towards zero hurts), which is why nanoGPT and
//! timm split their parameters; pick their rule to train as they do.

use super::{same_param, ParamGroup};
use crate::nn::{name_matches, Module, Param};
use crate::Tensor;
use std::fmt;
use std::sync::Arc;

/// A custom weight-decay predicate over (name, dims); true = decay.
pub type DecayFn = Arc<dyn Fn(&str, &[usize]) -> bool + Send + Sync>;

/// Which parameters get weight decay (see the [module docs](self) for how
/// each rule compares with PyTorch's).
///
/// ```
/// use tamer::models::{VisionTransformer, VitConfig};
/// use tamer::optim::DecayRule;
/// let (qkv, bias, wte, pos) = (("blocks.0.attn.qkv.weight", &[48, 16][..]), ("blocks.0.attn.qkv.bias", &[48][..]), ("transformer.wte.weight", &[65, 16][..]), ("pos_embed", &[1, 17, 16][..]));
/// let decays = |rule: &DecayRule| [qkv, bias, wte, pos].map(|(n, d)| rule.decays(n, d));
/// assert_eq!(decays(&DecayRule::Torch), [true, true, true, true]);
/// assert_eq!(decays(&DecayRule::NanoGpt), [true, false, true, true]);
/// let vit = VisionTransformer::new(VitConfig::vit_digits(), &mut tamer::rng(0)).unwrap();
/// assert_eq!(decays(&DecayRule::timm(&vit)), [true, false, true, false]);
/// ```
#[derive(Clone, Default)]
pub enum DecayRule {
    /// Every parameter: what `torch.optim.AdamW(model.parameters())` (and
    /// SGD, Adam) do. The default.
    #[default]
    Torch,
    /// Parameters with at least 2 dims (nanoGPT's `p.dim() >= 2`): every
    /// matmul weight and embedding table; biases and layer-norm gains are not
    /// decayed. A tied `lm_head` is the embedding, decayed once.
    NanoGpt,
    /// timm's `param_groups_weight_decay(model, wd, model.no_weight_decay())`:
    /// no decay for parameters with at most 1 dim, names ending in `.bias`,
    /// and names matching one of these globs ([`name_matches`]; timm uses
    /// fnmatch). [`DecayRule::timm`] takes them from the model
    /// ([`Module::no_weight_decay`]).
    Timm(Vec<String>),
    /// Decay every parameter except those whose names match one of these globs.
    Exclude(Vec<String>),
    /// Decay the parameters for which the function of (name, dims) is true.
    Custom(DecayFn),
}

impl DecayRule {
    /// timm's rule with `model`'s [`Module::no_weight_decay`] names.
    pub fn timm(model: &dyn Module) -> DecayRule {
        DecayRule::Timm(model.no_weight_decay())
    }
    /// A rule from a closure of (name, dims), true = decay.
    pub fn custom(f: impl Fn(&str, &[usize]) -> bool + Send + Sync + 'static) -> DecayRule {
        DecayRule::Custom(Arc::new(f))
    }
    /// Whether `name` with shape `dims` gets weight decay.
    pub fn decays(&self, name: &str, dims: &[usize]) -> bool {
        match self {
            DecayRule::Torch => true,
            DecayRule::NanoGpt => dims.len() >= 2,
            DecayRule::Timm(no_decay) => dims.len() >= 2 && !name.ends_with(".bias") && !no_decay.iter().any(|p| name_matches(p, name)),
            DecayRule::Exclude(globs) => !globs.iter().any(|p| name_matches(p, name)),
            DecayRule::Custom(f) => f(name, dims),
        }
    }
}

impl fmt::Debug for DecayRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecayRule::Torch => write!(f, "Torch"),
            DecayRule::NanoGpt => write!(f, "NanoGpt"),
            DecayRule::Timm(g) => write!(f, "Timm({g:?})"),
            DecayRule::Exclude(g) => write!(f, "Exclude({g:?})"),
            DecayRule::Custom(_) => write!(f, "Custom(..)"),
        }
    }
}

/// Split named parameters into a weight-decay group and a no-decay group by
/// `rule` (empty groups are left out; a parameter listed twice, e.g. tied
/// weights, is kept once, under its first name).
///
/// ```
/// use tamer::nn::{Linear, Module};
/// use tamer::optim::{split_param_groups, DecayRule};
/// let lin = Linear::new(4, 2, true, &mut tamer::rng(0)).unwrap();
/// let groups = split_param_groups(lin.named_params(), 0.1, &DecayRule::NanoGpt);
/// assert_eq!(groups[0].params[0].0, "weight");
/// assert_eq!((groups[1].params[0].0.as_str(), groups[1].weight_decay), ("bias", 0.0));
/// ```
pub fn split_param_groups(named: Vec<(String, Param)>, weight_decay: f64, rule: &DecayRule) -> Vec<ParamGroup> {
    let mut seen: Vec<Tensor> = Vec::new();
    let (mut decay, mut no_decay) = (Vec::new(), Vec::new());
    for (name, p) in named {
        let t = p.tensor();
        if seen.iter().any(|s| same_param(s, &t)) {
            continue;
        }
        seen.push(t);
        if weight_decay != 0.0 && rule.decays(&name, &p.dims()) {
            decay.push((name, p));
        } else {
            no_decay.push((name, p));
        }
    }
    let mut groups = Vec::new();
    if !decay.is_empty() {
        groups.push(ParamGroup::new(decay, weight_decay));
    }
    if !no_decay.is_empty() {
        groups.push(ParamGroup::new(no_decay, 0.0));
    }
    groups
}

/// Which parameters an optimizer's groups decay: what a training run logs at
/// its start, so the rule in force is never a guess.
///
/// ```
/// use tamer::models::{Gpt, GptConfig};
/// use tamer::nn::Module;
/// use tamer::optim::{split_param_groups, DecayRule, DecaySummary};
/// let gpt = Gpt::new(GptConfig::gpt_tiny(), &mut tamer::rng(0)).unwrap();
/// let summary = DecaySummary::of(&split_param_groups(gpt.named_params(), 0.1, &DecayRule::NanoGpt));
/// assert_eq!((summary.decayed.len(), summary.not_decayed.len()), (18, 34));
/// let line = summary.to_string();
/// assert!(line.starts_with("weight decay 0.1 on 18 tensors (802,944 values): transformer.wte.weight, transformer.wpe.weight, transformer.h.*.attn.c_attn.weight ×4"), "{line}");
/// assert!(line.contains("; no decay on 34 tensors (6,912 values): transformer.h.*.ln_1.weight ×4"), "{line}");
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecaySummary {
    /// (name, elements, weight decay) of every decayed parameter, in group order.
    pub decayed: Vec<(String, usize, f64)>,
    /// (name, elements) of every parameter without weight decay.
    pub not_decayed: Vec<(String, usize)>,
}

impl DecaySummary {
    /// The summary of `groups` (a group with weight decay 0 is "no decay").
    pub fn of(groups: &[ParamGroup]) -> DecaySummary {
        let mut s = DecaySummary::default();
        for g in groups {
            for (name, p) in &g.params {
                if g.weight_decay > 0.0 {
                    s.decayed.push((name.clone(), p.numel(), g.weight_decay));
                } else {
                    s.not_decayed.push((name.clone(), p.numel()));
                }
            }
        }
        s
    }

    /// The decayed names, compacted by [`compact_names`].
    pub fn decayed_compact(&self) -> Vec<String> {
        compact_names(self.decayed.iter().map(|(n, _, _)| n.as_str()))
    }
    /// The names without decay, compacted by [`compact_names`].
    pub fn not_decayed_compact(&self) -> Vec<String> {
        compact_names(self.not_decayed.iter().map(|(n, _)| n.as_str()))
    }
    /// The distinct weight-decay rates of the decayed parameters, in order.
    pub fn rates(&self) -> Vec<f64> {
        let mut rates: Vec<f64> = Vec::new();
        for (_, _, wd) in &self.decayed {
            if !rates.contains(wd) {
                rates.push(*wd);
            }
        }
        rates
    }
    /// Elements with and without decay.
    pub fn values(&self) -> (usize, usize) {
        (self.decayed.iter().map(|(_, n, _)| n).sum(), self.not_decayed.iter().map(|(_, n)| n).sum())
    }
}

impl fmt::Display for DecaySummary {
    /// `weight decay 0.1 on 18 tensors (802,944 values): a, b.*.c ×4; no decay on ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (with, without) = self.values();
        let rates: Vec<String> = self.rates().iter().map(|r| format!("{r}")).collect();
        if self.decayed.is_empty() {
            write!(f, "no weight decay")?;
        } else {
            write!(
                f,
                "weight decay {} on {} tensors ({} values): {}",
                rates.join("/"),
                self.decayed.len(),
                thousands(with),
                self.decayed_compact().join(", ")
            )?;
        }
        if !self.not_decayed.is_empty() {
            write!(
                f,
                "; no decay on {} tensors ({} values): {}",
                self.not_decayed.len(),
                thousands(without),
                self.not_decayed_compact().join(", ")
            )?;
        }
        Ok(())
    }
}

/// Parameter names with their numeric path segments (layer indices) folded:
/// names that differ only there become one entry `a.*.b ×N`, in order of
/// first appearance; a name alone in its family stays as it is.
///
/// ```
/// use tamer::optim::compact_names;
/// let names = ["blocks.0.norm1.weight", "blocks.1.norm1.weight", "head.weight", "blocks.10.norm1.weight"];
/// assert_eq!(compact_names(names), ["blocks.*.norm1.weight ×3", "head.weight"]);
/// ```
pub fn compact_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut families: Vec<(String, String, usize)> = Vec::new(); // (pattern, first name, count)
    for name in names {
        let pattern = name
            .split('.')
            .map(|seg| {
                if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                    "*"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join(".");
        match families.iter_mut().find(|(p, _, _)| *p == pattern) {
            Some(family) => family.2 += 1,
            None => families.push((pattern, name.to_string(), 1)),
        }
    }
    families
        .into_iter()
        .map(|(pattern, first, n)| if n == 1 { first } else { format!("{pattern} ×{n}") })
        .collect()
}

/// `1234567` → `"1,234,567"`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
