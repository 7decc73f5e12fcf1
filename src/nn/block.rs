//! The transformer block, with its structure as configuration: norm placement
//! (pre-LN or post-LN), residual connections on or off, MLP on or off, and
//! Admin's residual scaling.
//!
//! ```text
//! pre-LN,  residual:  x = ω₁·x + DropPath(attn(norm1(x)));  x = ω₂·x + DropPath(mlp(norm2(x)))
//! post-LN, residual:  x = norm1(ω₁·x + DropPath(attn(x)));  x = norm2(ω₂·x + DropPath(mlp(x)))
//! residual off:       the same without the ω·x terms (pre-LN: f(norm(x)), post-LN: norm(f(x)))
//! MLP off:            only the attention sublayer (and no norm2): pure attention
//! ```
//!
//! ω is 1 for a plain block. Admin (Liu et al. 2020, "Understanding the
//! Difficulty of Training Transformers") rescales the skip branch of a post-LN
//! block, `x_i = LN(x_{i−1}·ω_i + f_i(x_{i−1}))`, with either the profile-free
//! ω of [`init::admin_omega`](super::init::admin_omega) (set `residual_scale`) or
//! ω measured in one forward pass ([`admin_profile_blocks`]). Admin's reference
//! code makes ω a learnable per-channel vector initialised to that value; here
//! it is a fixed scalar per sublayer, so the parameter names stay timm's.

use super::init::AdminProfiler;
use super::{adopt_weights, converted, prefixed, DropPath, KvCache, LayerNorm, Mlp, Module, MultiHeadSelfAttention, Param};
use crate::tensor::Tensor;
use crate::types::DType;
use crate::{Error, Result};
use rand::Rng;

/// Where the layer norms sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormPlacement {
    /// `x + f(LN(x))` (GPT-2, ViT).
    PreLN,
    /// `LN(x + f(x))` (the original Transformer, BERT).
    PostLN,
}

/// How a [`TransformerBlock`] is built.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockConfig {
    pub norm: NormPlacement,
    /// Residual (skip) connections; off gives `f` alone in each sublayer.
    pub residual: bool,
    /// The MLP sublayer; off gives a pure-attention block.
    pub mlp: bool,
    /// Admin's ω multiplying the skip branch (1.0 = a plain residual).
    pub residual_scale: f64,
    /// Stochastic depth probability on each residual branch.
    pub drop_path: f64,
    /// Dropout after the attention output projection and after the MLP.
    pub dropout: f64,
    /// Dropout on the attention probabilities.
    pub attn_dropout: f64,
    /// Also drop out the MLP's hidden activations (timm's `Mlp`); nanoGPT does not.
    pub mlp_hidden_dropout: bool,
    /// Causal (decoder) self-attention.
    pub causal: bool,
    pub n_head: usize,
    /// MLP hidden width as a multiple of the model width (timm's `int(dim · mlp_ratio)`).
    pub mlp_ratio: f64,
    /// Biases in the linear layers and the layer norms.
    pub bias: bool,
    pub norm_eps: f64,
}

impl BlockConfig {
    /// A timm ViT block: pre-LN, residuals, MLP 4×, biases, eps 1e-6, no dropout.
    pub fn vit(n_head: usize) -> Self {
        BlockConfig {
            norm: NormPlacement::PreLN,
            residual: true,
            mlp: true,
            residual_scale: 1.0,
            drop_path: 0.0,
            dropout: 0.0,
            attn_dropout: 0.0,
            mlp_hidden_dropout: true,
            causal: false,
            n_head,
            mlp_ratio: 4.0,
            bias: true,
            norm_eps: 1e-6,
        }
    }
    /// A nanoGPT block: pre-LN, causal, MLP 4×, exact GELU, eps 1e-5, `dropout`
    /// on the attention probabilities and after each branch.
    pub fn gpt(n_head: usize, dropout: f64, bias: bool) -> Self {
        BlockConfig {
            causal: true,
            dropout,
            attn_dropout: dropout,
            mlp_hidden_dropout: false,
            bias,
            norm_eps: 1e-5,
            ..Self::vit(n_head)
        }
    }
    /// The original (post-LN) Transformer block, non-causal.
    pub fn post_ln(n_head: usize) -> Self {
        BlockConfig {
            norm: NormPlacement::PostLN,
            norm_eps: 1e-5,
            ..Self::vit(n_head)
        }
    }
    /// The MLP hidden width for model width `dim`.
    pub fn mlp_hidden(&self, dim: usize) -> usize {
        (dim as f64 * self.mlp_ratio) as usize
    }
}

/// One transformer block (timm parameter names `norm1`, `attn.qkv`, `attn.proj`,
/// `norm2`, `mlp.fc1`, `mlp.fc2`; `norm2` and `mlp` only when the MLP is on).
///
/// ```
/// use tamer::nn::{BlockConfig, NormPlacement, TransformerBlock};
/// use tamer::{rng, DType, Tensor};
/// let cfg = BlockConfig { norm: NormPlacement::PostLN, residual_scale: 2.0, ..BlockConfig::vit(2) };
/// let block = TransformerBlock::new(8, &cfg, &mut rng(0)).unwrap();
/// let x = Tensor::randn([3, 5, 8], DType::F32, &mut rng(1)).unwrap();
/// assert_eq!(block.forward(&x).unwrap().dims(), &[3, 5, 8]);
/// ```
pub struct TransformerBlock {
    pub config: BlockConfig,
    pub norm1: LayerNorm,
    pub attn: MultiHeadSelfAttention,
    pub norm2: Option<LayerNorm>,
    pub mlp: Option<Mlp>,
    pub drop_path1: DropPath,
    pub drop_path2: DropPath,
    /// ω of the attention sublayer's skip branch.
    pub omega_attn: f64,
    /// ω of the MLP sublayer's skip branch.
    pub omega_mlp: f64,
}

impl TransformerBlock {
    /// An f32 block of width `dim`. Linear layers get PyTorch's default
    /// initialisation; models re-initialise them (nanoGPT, timm).
    pub fn new(dim: usize, config: &BlockConfig, rng: &mut impl Rng) -> Result<Self> {
        if !(config.residual_scale.is_finite() && config.residual_scale > 0.0) {
            return Err(Error::value(
                "TransformerBlock",
                format!("residual_scale {} must be finite and positive", config.residual_scale),
            ));
        }
        let hidden = config.mlp_hidden(dim);
        if config.mlp && hidden == 0 {
            return Err(Error::value(
                "TransformerBlock",
                format!("mlp_ratio {} gives an empty MLP for width {dim}", config.mlp_ratio),
            ));
        }
        let attn = MultiHeadSelfAttention::new(dim, config.n_head, config.bias, config.causal, config.attn_dropout, config.dropout, rng)?;
        let (norm2, mlp) = if config.mlp {
            (
                Some(LayerNorm::new(dim, config.norm_eps, config.bias)?),
                Some(Mlp::new(dim, hidden, dim, config.bias, config.dropout, rng)?),
            )
        } else {
            (None, None)
        };
        Ok(TransformerBlock {
            config: config.clone(),
            norm1: LayerNorm::new(dim, config.norm_eps, config.bias)?,
            attn,
            norm2,
            mlp,
            drop_path1: DropPath::new(config.drop_path, rng.next_u64())?,
            drop_path2: DropPath::new(config.drop_path, rng.next_u64())?,
            omega_attn: config.residual_scale,
            omega_mlp: config.residual_scale,
        })
    }

    /// [`new`](Self::new) in `dtype` (any float dtype): the same draws,
    /// converted, so an f64 block computes what the f32 one does to f32 rounding.
    ///
    /// ```
    /// use tamer::nn::{BlockConfig, Module, TransformerBlock};
    /// use tamer::{rng, DType, Tensor};
    /// let block = TransformerBlock::with_dtype(8, &BlockConfig::gpt(2, 0.0, true), DType::F64, &mut rng(0)).unwrap();
    /// assert!(block.params().iter().all(|p| p.tensor().dtype() == DType::F64));
    /// let x = Tensor::randn([1, 3, 8], DType::F64, &mut rng(1)).unwrap();
    /// assert_eq!(block.forward(&x).unwrap().dtype(), DType::F64);
    /// ```
    pub fn with_dtype(dim: usize, config: &BlockConfig, dtype: DType, rng: &mut impl Rng) -> Result<Self> {
        converted("TransformerBlock::with_dtype", Self::new(dim, config, rng)?, dtype)
    }

    /// A block whose parameters are the given tensors, by their names
    /// (`norm1.weight`, `attn.qkv.weight`, ... as [`Module::named_params`]
    /// lists them; the width is `norm1.weight`'s length). The tensors are
    /// adopted, not copied: see [`adopt_weights`] for the rules and checks.
    /// No block is initialised first: the structure is built with
    /// placeholders (no memory, no random draws) that the given tensors
    /// replace. Dropout and drop-path RNGs start from a fixed seed.
    ///
    /// ```
    /// use tamer::nn::{BlockConfig, Module, TransformerBlock};
    /// use tamer::{rng, DType, Tensor};
    /// let cfg = BlockConfig::vit(2);
    /// let source = TransformerBlock::new(8, &cfg, &mut rng(0)).unwrap();
    /// let weights = source.named_params().into_iter().map(|(n, p)| (n, p.tensor().to_dtype(DType::F64).unwrap()));
    /// let block = TransformerBlock::from_weights(&cfg, weights).unwrap();
    /// let x = Tensor::randn([1, 3, 8], DType::F64, &mut rng(1)).unwrap();
    /// assert_eq!(block.forward(&x).unwrap().dims(), &[1, 3, 8]);
    /// ```
    pub fn from_weights(config: &BlockConfig, weights: impl IntoIterator<Item = (String, Tensor)>) -> Result<Self> {
        const OP: &str = "TransformerBlock::from_weights";
        let weights: Vec<(String, Tensor)> = weights.into_iter().collect();
        let dim = match weights.iter().find(|(n, _)| n == "norm1.weight") {
            Some((_, w)) if w.rank() == 1 => w.dims()[0],
            Some((_, w)) => return Err(Error::shape(OP, format!("norm1.weight has shape {}, expected [dim]", w.shape()))),
            None => return Err(Error::value(OP, "the weights have no norm1.weight, which gives the block's width")),
        };
        // Every parameter is about to be replaced: build placeholders, not a random block.
        let block = super::init::skeleton(|| Self::new(dim, config, &mut crate::rng(0))).map_err(|e| Error::new(OP, e.kind, e.message))?;
        adopt_weights(OP, &block, weights)?;
        Ok(block)
    }

    /// `x: [B, T, C] -> [B, T, C]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, None, None)
    }

    /// The attention probabilities `[B, H, T, T]` of this block's attention
    /// sublayer for the block input `x [B, T, C]` (after `norm1` in a pre-LN
    /// block, as the sublayer sees it), from
    /// [`MultiHeadSelfAttention::attention_probs`]. For diagnostics on a
    /// probe batch (attention entropy, [`crate::diagnostics`]).
    ///
    /// ```
    /// use tamer::nn::{BlockConfig, TransformerBlock};
    /// use tamer::{rng, DType, Tensor};
    /// let block = TransformerBlock::new(8, &BlockConfig::vit(2), &mut rng(0)).unwrap();
    /// let x = Tensor::randn([3, 5, 8], DType::F32, &mut rng(1)).unwrap();
    /// assert_eq!(block.attention_probs(&x).unwrap().dims(), &[3, 2, 5, 5]);
    /// ```
    pub fn attention_probs(&self, x: &Tensor) -> Result<Tensor> {
        match self.config.norm {
            NormPlacement::PreLN => self.attn.attention_probs(&self.norm1.forward(x)?),
            NormPlacement::PostLN => self.attn.attention_probs(x),
        }
    }

    /// Incremental decoding: `x` holds the newest positions, `cache` this
    /// block's keys and values so far (see [`MultiHeadSelfAttention::forward_with_cache`]).
    pub fn forward_with_cache(&self, x: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.run(x, Some(cache), None)
    }

    /// One step of Admin's profiling pass: sets `omega_attn` and `omega_mlp`
    /// from `profiler` as this block's sublayers run (see [`admin_profile_blocks`]) and
    /// returns the block's output. Only for post-LN blocks with residuals.
    pub fn admin_profile(&mut self, x: &Tensor, profiler: &mut AdminProfiler) -> Result<Tensor> {
        if self.config.norm != NormPlacement::PostLN || !self.config.residual {
            return Err(Error::value(
                "TransformerBlock::admin_profile",
                format!(
                    "Admin profiling rescales the skip branch of post-LN residual blocks; this block is {:?} with residual {}",
                    self.config.norm, self.config.residual
                ),
            ));
        }
        let mut omegas = [self.omega_attn, self.omega_mlp];
        let out = self.run(x, None, Some((profiler, &mut omegas)))?;
        [self.omega_attn, self.omega_mlp] = omegas;
        Ok(out)
    }

    /// The forward pass; with `profile`, each sublayer's ω is taken from the
    /// profiler (and written to `omegas`) before it is used.
    fn run(&self, x: &Tensor, cache: Option<&mut KvCache>, mut profile: Option<(&mut AdminProfiler, &mut [f64; 2])>) -> Result<Tensor> {
        let pre = self.config.norm == NormPlacement::PreLN;
        // Attention sublayer.
        let input = if pre { self.norm1.forward(x)? } else { x.clone() };
        let f = match cache {
            Some(c) => self.attn.forward_with_cache(&input, c)?,
            None => self.attn.forward(&input)?,
        };
        let f = self.drop_path1.forward(&f)?;
        let omega = sublayer_omega(&mut profile, 0, self.omega_attn);
        let mut x = self.combine(x, &f, omega, &mut profile)?;
        if !pre {
            x = self.norm1.forward(&x)?;
        }
        // MLP sublayer.
        if let (Some(norm2), Some(mlp)) = (&self.norm2, &self.mlp) {
            let input = if pre { norm2.forward(&x)? } else { x.clone() };
            let f = self.drop_path2.forward(&self.mlp_branch(mlp, &input)?)?;
            let omega = sublayer_omega(&mut profile, 1, self.omega_mlp);
            let y = self.combine(&x, &f, omega, &mut profile)?;
            x = if pre { y } else { norm2.forward(&y)? };
        }
        Ok(x)
    }

    /// `fc1 → act → [dropout] → fc2 → dropout`, the hidden dropout per config.
    fn mlp_branch(&self, mlp: &Mlp, x: &Tensor) -> Result<Tensor> {
        let h = mlp.act.apply(&mlp.fc1.forward(x)?)?;
        let h = if self.config.mlp_hidden_dropout { mlp.dropout.forward(&h)? } else { h };
        mlp.dropout.forward(&mlp.fc2.forward(&h)?)
    }

    /// `ω·x + f` (or `f` alone without residuals); while profiling, records
    /// `Var[f]` (and `ω²` for the unit-variance stream, see [`admin_profile_blocks`]).
    fn combine(&self, x: &Tensor, f: &Tensor, omega: f64, profile: &mut Option<(&mut AdminProfiler, &mut [f64; 2])>) -> Result<Tensor> {
        if !self.config.residual {
            return Ok(f.clone());
        }
        let skip = if omega == 1.0 { x.clone() } else { x.scale(omega)? };
        if let Some((profiler, _)) = profile {
            profiler.record(omega * omega, variance(f)?)?;
        }
        skip.add(f)
    }
}

/// ω for sublayer `k` (0 attention, 1 MLP): the profiler's next value while
/// profiling (also stored in `omegas[k]`), else the block's own.
fn sublayer_omega(profile: &mut Option<(&mut AdminProfiler, &mut [f64; 2])>, k: usize, own: f64) -> f64 {
    match profile {
        Some((profiler, omegas)) => {
            omegas[k] = profiler.omega();
            omegas[k]
        }
        None => own,
    }
}

/// Population variance over every element (numpy's `np.var`).
fn variance(t: &Tensor) -> Result<f64> {
    t.flatten_all()?.var(&[0], false, 0)?.to_scalar()
}

/// Admin's profiling initialisation over a stack of post-LN blocks: run `x`
/// `[B, T, C]` (the embedded input) through `blocks` once without gradients,
/// setting the ω of each of the 2·L sublayers as it is reached to the paper's
///
/// ```text
/// ω_i = √(1 + Σ_{j<i} Var[f_j(x_{j−1})])
/// ```
///
/// (Liu et al. 2020, Algorithm 1; the `1` is the input's share, the paper's
/// branch 0), where `Var` is the population variance over every element of the
/// branch output, measured with the ω's of the earlier sublayers already in
/// place. So ω₁ = 1 and `ω_{i+1}² = ω_i² + Var[f_i]`.
///
/// Admin's reference code (`adaptive-profiling`) measures `Var[ω_i·x_{i−1}]`
/// instead of assuming `ω_i²`; the two agree when the stream entering each
/// sublayer has unit variance, which layer norm gives every sublayer but the
/// first (fairseq also scales its embeddings to unit variance). Here the
/// first sublayer's input is the embedding, whose scale depends on its
/// initialisation, so the formula is used as written; drive
/// [`AdminProfiler`] directly for the measured variant.
///
/// Returns the ω's in sublayer order (attention, MLP, attention, ...). Run it
/// in eval mode so dropout does not perturb the measured variances; the
/// models' `admin_init_profiled` methods do so.
pub fn admin_profile_blocks(blocks: &mut [TransformerBlock], x: &Tensor) -> Result<Vec<f64>> {
    crate::no_grad(|| {
        let mut profiler = AdminProfiler::new();
        let mut h = x.clone();
        let mut omegas = Vec::with_capacity(2 * blocks.len());
        for block in blocks.iter_mut() {
            h = block.admin_profile(&h, &mut profiler)?;
            omegas.push(block.omega_attn);
            if block.mlp.is_some() {
                omegas.push(block.omega_mlp);
            }
        }
        Ok(omegas)
    })
}

impl Module for TransformerBlock {
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut v = prefixed("norm1", self.norm1.named_params());
        v.extend(prefixed("attn", self.attn.named_params()));
        if let Some(n) = &self.norm2 {
            v.extend(prefixed("norm2", n.named_params()));
        }
        if let Some(m) = &self.mlp {
            v.extend(prefixed("mlp", m.named_params()));
        }
        v
    }
    fn set_training(&mut self, training: bool) {
        self.attn.set_training(training);
        if let Some(m) = &mut self.mlp {
            m.set_training(training);
        }
        self.drop_path1.set_training(training);
        self.drop_path2.set_training(training);
    }
}
