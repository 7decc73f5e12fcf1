//! A plain transformer encoder for sequence classification, with every block's
//! output exposed for diagnostics (rank collapse, signal propagation).
//!
//! ```text
//! idx [B, T] → tok_embed(idx) + positions → dropout       h₀ [B, T, C]
//!   → blocks.0 .. blocks.{L−1}  (any BlockConfig)          h₁ .. h_L
//!   → [norm] → mean over T → head                          [B, num_classes]
//! ```

use crate::nn::init::{normal_, timm_trunc_normal_, zeros_};
use crate::nn::{
    admin_profile_blocks, prefixed, sincos_1d, BlockConfig, Dropout, Embedding, LayerNorm, LearnedPosEmbed, Linear, Module, Param, TransformerBlock,
};
use crate::tensor::Tensor;
use crate::types::DType;
use crate::{Error, Result};
use rand::Rng;

/// How positions enter the embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionKind {
    /// A learned table `pos_embed` `[1, max_len, C]`.
    Learned,
    /// The fixed 1-D sine-cosine table ([`sincos_1d`]); no parameters.
    SineCosine,
    /// No position information (a bag of tokens).
    None,
}

/// How a [`TransformerEncoder`] is built.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    pub vocab_size: usize,
    /// Longest accepted sequence.
    pub max_len: usize,
    pub n_layer: usize,
    /// Model width C.
    pub dim: usize,
    pub num_classes: usize,
    pub positions: PositionKind,
    /// Every block's structure (norm placement, residuals, MLP, Admin ω, heads, ...);
    /// its `dropout` also applies to the embeddings.
    pub block: BlockConfig,
    /// A layer norm before pooling (timm's `norm`; usual for pre-LN, redundant after post-LN).
    pub final_norm: bool,
}

impl EncoderConfig {
    /// Learned positions, timm ViT-style pre-LN blocks (MLP 4×) and a final norm.
    pub fn new(vocab_size: usize, max_len: usize, n_layer: usize, dim: usize, n_head: usize, num_classes: usize) -> Self {
        EncoderConfig {
            vocab_size,
            max_len,
            n_layer,
            dim,
            num_classes,
            positions: PositionKind::Learned,
            block: BlockConfig::vit(n_head),
            final_norm: true,
        }
    }
}

/// Token classifier over whole sequences. Parameter names: `tok_embed.weight`,
/// `pos_embed` (learned positions only), `blocks.{i}.…` (timm block names),
/// `norm.weight`/`norm.bias` (with `final_norm`), `head.weight`, `head.bias`.
///
/// ```
/// use tamer::models::{EncoderConfig, TransformerEncoder};
/// use tamer::{rng, Tensor};
/// let enc = TransformerEncoder::new(EncoderConfig::new(10, 8, 2, 16, 2, 3), &mut rng(0)).unwrap();
/// let idx = Tensor::from_vec(vec![1i64, 2, 3, 4, 5, 6], [2, 3]).unwrap();
/// let (logits, hidden) = enc.forward_with_hidden(&idx).unwrap();
/// assert_eq!(logits.dims(), &[2, 3]);
/// assert_eq!(hidden.len(), 3); // embeddings + one per block
/// assert_eq!(hidden[2].dims(), &[2, 3, 16]);
/// ```
pub struct TransformerEncoder {
    pub config: EncoderConfig,
    pub tok_embed: Embedding,
    pub pos_embed: Option<LearnedPosEmbed>,
    /// The fixed sine-cosine table `[max_len, C]` (f32), with `PositionKind::SineCosine`.
    pub sincos: Option<Tensor>,
    pub drop: Dropout,
    pub blocks: Vec<TransformerBlock>,
    pub norm: Option<LayerNorm>,
    pub head: Linear,
    training: bool,
}

impl TransformerEncoder {
    /// An f32 model initialised timm-style: linear weights truncated normal
    /// (std 0.02), biases zero, token embeddings `N(0, 0.02²)`, learned
    /// positions truncated normal (std 0.02), layer norms (1, 0).
    pub fn new(config: EncoderConfig, rng: &mut impl Rng) -> Result<Self> {
        let c = config.dim;
        if config.vocab_size == 0 || config.max_len == 0 || config.num_classes == 0 || c == 0 {
            return Err(Error::value(
                "TransformerEncoder",
                format!("every size in the config must be positive: {config:?}"),
            ));
        }
        let tok_embed = Embedding::new(config.vocab_size, c, rng)?;
        normal_(&tok_embed.weight, 0.0, 0.02, rng)?;
        let (pos_embed, sincos) = match config.positions {
            PositionKind::Learned => (Some(LearnedPosEmbed::new(config.max_len, c, rng)?), None),
            PositionKind::SineCosine => (None, Some(sincos_1d(config.max_len, c)?)),
            PositionKind::None => (None, None),
        };
        let blocks = (0..config.n_layer)
            .map(|_| TransformerBlock::new(c, &config.block, rng))
            .collect::<Result<Vec<_>>>()?;
        let norm = if config.final_norm {
            Some(LayerNorm::new(c, config.block.norm_eps, config.block.bias)?)
        } else {
            None
        };
        let head = Linear::new(c, config.num_classes, true, rng)?;
        let enc = TransformerEncoder {
            drop: Dropout::new(config.block.dropout, rng.next_u64())?,
            tok_embed,
            pos_embed,
            sincos,
            blocks,
            norm,
            head,
            config,
            training: true,
        };
        for (name, p) in enc.named_params() {
            if name.starts_with("blocks.") || name.starts_with("head.") {
                if p.dims().len() == 2 {
                    timm_trunc_normal_(&p, 0.02, rng)?;
                } else if name.ends_with("bias") {
                    zeros_(&p)?;
                }
            }
        }
        Ok(enc)
    }

    /// `idx` i64 `[B, T]` → class logits `[B, num_classes]`.
    pub fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_hidden(idx)?.0)
    }

    /// The logits and the hidden states: `hidden[0]` the embedded input, and
    /// `hidden[l]` the output of block `l − 1`, each `[B, T, C]` (before the final norm).
    pub fn forward_with_hidden(&self, idx: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut h = self.embed(idx)?;
        let mut hidden = Vec::with_capacity(self.blocks.len() + 1);
        hidden.push(h.clone());
        for block in &self.blocks {
            h = block.forward(&h)?;
            hidden.push(h.clone());
        }
        if let Some(norm) = &self.norm {
            h = norm.forward(&h)?;
        }
        let pooled = h.mean(&[1], false)?; // [B, C]
        Ok((self.head.forward(&pooled)?, hidden))
    }

    /// `[B, T]` → token + position embeddings, after dropout, `[B, T, C]`.
    pub fn embed(&self, idx: &Tensor) -> Result<Tensor> {
        if idx.dtype() != DType::I64 || idx.rank() != 2 || idx.dims()[1] == 0 || idx.dims()[1] > self.config.max_len {
            return Err(Error::shape(
                "TransformerEncoder",
                format!(
                    "idx must be i64 token ids [B, T] with 1 <= T <= max_len {}, got {} {}",
                    self.config.max_len,
                    idx.dtype(),
                    idx.shape()
                ),
            ));
        }
        let mut x = self.tok_embed.forward(idx)?;
        if let Some(pe) = &self.pos_embed {
            x = pe.forward(&x)?;
        }
        if let Some(table) = &self.sincos {
            x = x.add(&table.narrow(0, 0, idx.dims()[1])?.to_dtype(x.dtype())?.to_device(x.device())?)?;
        }
        self.drop.forward(&x)
    }

    /// Admin's profiling initialisation: one forward pass of `idx` in eval mode
    /// without gradients sets every block's ω (see [`admin_profile_blocks`]);
    /// returns them in sublayer order. The blocks must be post-LN with residuals.
    pub fn admin_init_profiled(&mut self, idx: &Tensor) -> Result<Vec<f64>> {
        let training = self.training;
        self.set_training(false);
        let result = self.embed(idx).and_then(|x| admin_profile_blocks(&mut self.blocks, &x));
        self.set_training(training);
        result
    }
}

impl Module for TransformerEncoder {
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut v = prefixed("tok_embed", self.tok_embed.named_params());
        if let Some(pe) = &self.pos_embed {
            v.push(("pos_embed".to_string(), pe.weight.clone()));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            v.extend(prefixed(&format!("blocks.{i}"), b.named_params()));
        }
        if let Some(n) = &self.norm {
            v.extend(prefixed("norm", n.named_params()));
        }
        v.extend(prefixed("head", self.head.named_params()));
        v
    }
    /// The learned position table, as timm's ViT declares its `pos_embed`.
    fn no_weight_decay(&self) -> Vec<String> {
        vec!["pos_embed".to_string()]
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
        self.drop.set_training(training);
        self.blocks.iter_mut().for_each(|b| b.set_training(training));
    }
}
