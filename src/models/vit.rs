//! Vision Transformer in timm's shape and naming (`timm.models.vision_transformer.VisionTransformer`),
//! with the hybrid variant (a CNN stem before the patch projection).
//!
//! ```text
//! x [B, C, H, W] → patch_embed → [B, N, D]
//!   → [cls_token ;] tokens + pos_embed → pos_drop            h₀ [B, T, D], T = n_prefix + N
//!   → blocks.0 .. blocks.{L−1} (pre-LN)                     h₁ .. h_L
//!   Pool::Cls:   norm → token 0            → head_drop → head   [B, num_classes]
//!   Pool::Mean:  mean over the N tokens → fc_norm → head_drop → head
//! ```
//!
//! # Names and shapes (timm's state dict)
//!
//! | name | shape | when |
//! |---|---|---|
//! | `cls_token` | `[1, 1, D]` | `Pool::Cls` (timm `class_token=True, global_pool='token'`) |
//! | `pos_embed` | `[1, n_prefix + N, D]` | always (a parameter when learned; a buffer when sin-cos, see below) |
//! | `patch_embed.proj.weight` / `.bias` | `[D, C, p, p]` / `[D]` | always (`C` = stem channels for hybrids) |
//! | `patch_embed.backbone.*` | see [`CnnStem`](super::CnnStem) | hybrid |
//! | `blocks.{i}.norm1`, `.attn.qkv`, `.attn.proj`, `.norm2`, `.mlp.fc1`, `.mlp.fc2` | timm's | always |
//! | `norm.weight` / `.bias` | `[D]` | `Pool::Cls` |
//! | `fc_norm.weight` / `.bias` | `[D]` | `Pool::Mean` |
//! | `head.weight` / `.bias` | `[K, D]` / `[K]` | `num_classes > 0` |
//!
//! **Mean pooling** is timm's `class_token=False, global_pool='avg'`: there is
//! no class token, so the mean runs over all output tokens; and because timm
//! sets `use_fc_norm = global_pool == 'avg'`, its final `norm` is an `Identity`
//! and a `fc_norm` LayerNorm is applied *after* pooling instead. Matching this
//! is what lets timm avg-pool checkpoints load.
//!
//! **Sine-cosine positions** (`PosEmbed::SinCos`) use MAE's fixed 2-D table
//! ([`sincos_2d`], a zero row for the CLS token). timm's `VisionTransformer`
//! has no such option; MAE stores its table as a `pos_embed` parameter with
//! `requires_grad=False`. Here it is a frozen tensor listed by
//! [`Module::named_buffers`] under the same name `pos_embed`: it is saved in
//! checkpoints (so the file has timm's key set), is not counted by
//! `num_params` and never gets a gradient.
//!
//! # Initialisation (timm's default `init_weights('')`)
//!
//! Every `Linear` weight (attention, MLP, head) truncated normal with std 0.02
//! (bounds ±2), biases 0; `pos_embed` truncated normal std 0.02; `cls_token`
//! normal with std 1e-6; LayerNorms (1, 0); `patch_embed.proj` PyTorch's
//! default convolution init (uniform on ±1/√fan_in: timm's '' mode leaves it;
//! only the 'jax' mode uses LeCun normal). The hybrid stem's convolutions are
//! Kaiming normal (fan-out, ReLU), its batch norms (1, 0).

use super::hybrid::StemConfig;
use super::patch_embed::{PatchEmbed, PatchEmbedConfig};
use crate::nn::init::{fresh, normal_, skeleton, timm_trunc_normal_, zeros_};
use crate::nn::{adopt_weights, converted, prefixed, sincos_2d, BlockConfig, Dropout, LayerNorm, Linear, Module, Param, TransformerBlock};
use crate::tensor::Tensor;
use crate::types::DType;
use crate::{Error, Result};
use rand::Rng;

/// How the output tokens become one vector per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// A learned class token is prepended; its output (after `norm`) is used.
    Cls,
    /// No class token; the mean of all output tokens, then `fc_norm`.
    Mean,
}

/// How positions enter the token embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PosEmbed {
    /// A learned `pos_embed` parameter (timm's default).
    Learned,
    /// The fixed 2-D sine-cosine table (MAE); not a parameter.
    SinCos,
}

/// How a [`VisionTransformer`] is built (timm's constructor arguments).
#[derive(Clone, Debug, PartialEq)]
pub struct VitConfig {
    /// Input image (H, W).
    pub img_size: (usize, usize),
    /// Patch side, on the image (or on the stem's feature map for hybrids).
    pub patch_size: usize,
    pub in_chans: usize,
    /// Classes of the head; 0 means no head (`forward` returns the pooled features).
    pub num_classes: usize,
    /// Model width D.
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    /// MLP hidden width `int(D · mlp_ratio)`.
    pub mlp_ratio: f64,
    pub pool: Pool,
    pub pos: PosEmbed,
    /// Bias on the fused qkv projection (timm's `qkv_bias`, default true).
    pub qkv_bias: bool,
    /// LayerNorm epsilon of every norm (timm's ViT: 1e-6).
    pub norm_eps: f64,
    /// The structure of every block (norm placement, residuals, MLP on/off,
    /// Admin ω, dropouts, biases). Its `n_head`, `mlp_ratio` and `norm_eps`
    /// are replaced by the fields above. Its `drop_path` is timm's
    /// `drop_path_rate`: block `i` gets `drop_path · i/(depth − 1)` (the linear
    /// decay rule, `torch.linspace(0, rate, depth)`). `dropout` is timm's
    /// `proj_drop_rate`, `attn_dropout` its `attn_drop_rate`.
    pub block: BlockConfig,
    /// Dropout after adding the position embedding (timm's `pos_drop_rate`).
    pub pos_drop_rate: f64,
    /// Dropout before the head (timm's `drop_rate`).
    pub drop_rate: f64,
    /// A CNN stem before the patch projection (hybrid ViT).
    pub stem: Option<StemConfig>,
}

impl VitConfig {
    /// A timm-default ViT (class token, learned positions, qkv bias, eps 1e-6,
    /// no dropout) of the given shape.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        img_size: (usize, usize),
        patch_size: usize,
        in_chans: usize,
        num_classes: usize,
        embed_dim: usize,
        depth: usize,
        num_heads: usize,
        mlp_ratio: f64,
    ) -> Self {
        VitConfig {
            img_size,
            patch_size,
            in_chans,
            num_classes,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio,
            pool: Pool::Cls,
            pos: PosEmbed::Learned,
            qkv_bias: true,
            norm_eps: 1e-6,
            // The fields above are what the blocks use; the block's copies say the same.
            block: BlockConfig {
                mlp_ratio,
                ..BlockConfig::vit(num_heads)
            },
            pos_drop_rate: 0.0,
            drop_rate: 0.0,
            stem: None,
        }
    }

    /// vit-tiny for MNIST-sized input: 28×28×1, patch 4 (a 7×7 grid, 49 patches
    /// plus CLS: 50 tokens), width 64, 4 layers, 4 heads of 16, MLP 128, 10
    /// classes. 139,018 parameters.
    pub fn vit_tiny() -> Self {
        Self::new((28, 28), 4, 1, 10, 64, 4, 4, 2.0)
    }

    /// vit-cifar: 32×32×3, patch 4 (8×8 grid, 65 tokens), width 192, 6 layers,
    /// 3 heads of 64, MLP 384, 10 classes. 1,806,538 parameters.
    pub fn vit_cifar() -> Self {
        Self::new((32, 32), 4, 3, 10, 192, 6, 3, 2.0)
    }

    /// vit-digits for the 8×8 UCI digits: patch 2 (a 4×4 grid of 2×2 patches, 17
    /// tokens with CLS), width 64, 4 layers, 4 heads of 16, MLP 128, 10 classes.
    /// Patch 2 keeps 16 tokens, enough for attention to matter on 64 pixels,
    /// while each token still sees a stroke fragment. 136,138 parameters.
    pub fn vit_digits() -> Self {
        Self::new((8, 8), 2, 1, 10, 64, 4, 4, 2.0)
    }

    /// hybrid-mnist: 28×28×1 through the CNN stem (conv 3×3 → 32 channels at
    /// 28×28, conv 3×3 stride 2 → 64 channels at 14×14, max-pool → 7×7), then a
    /// 1×1 projection to width 64: 49 tokens + CLS. 4 layers, 4 heads, MLP 128,
    /// 10 classes. 161,002 parameters (+ 194 buffer values).
    pub fn hybrid_mnist() -> Self {
        VitConfig {
            stem: Some(StemConfig {
                channels: (32, 64),
                max_pool: true,
            }),
            ..Self::new((28, 28), 1, 1, 10, 64, 4, 4, 2.0)
        }
    }

    /// timm's `vit_tiny_patch16_224`: 224×224×3, patch 16 (14×14 grid, 197
    /// tokens), width 192, 12 layers, 3 heads of 64, MLP 768, 1000 classes.
    /// 5,717,416 parameters (timm's count).
    pub fn vit_tiny_patch16_224() -> Self {
        Self::new((224, 224), 16, 3, 1000, 192, 12, 3, 4.0)
    }

    /// timm's `deit_tiny_patch16_224`: the same architecture as
    /// [`vit_tiny_patch16_224`](Self::vit_tiny_patch16_224) (DeiT changes the
    /// training recipe, not the model). 5,717,416 parameters.
    pub fn deit_tiny_patch16_224() -> Self {
        Self::vit_tiny_patch16_224()
    }

    /// The patch embedding's part of the configuration.
    pub fn patch_embed_config(&self) -> PatchEmbedConfig {
        PatchEmbedConfig {
            img_size: self.img_size,
            patch_size: self.patch_size,
            in_chans: self.in_chans,
            embed_dim: self.embed_dim,
            stem: self.stem,
        }
    }

    /// The feature map the patch projection sees: the image, or the stem's output.
    pub fn feature_size(&self) -> (usize, usize) {
        self.patch_embed_config().feature_size()
    }

    /// The patch grid (rows, columns): see [`PatchEmbedConfig::grid`].
    pub fn grid(&self) -> Result<(usize, usize)> {
        self.patch_embed_config().grid().map_err(|e| Error::new("VitConfig", e.kind, e.message))
    }

    /// Number of patch tokens N.
    pub fn num_patches(&self) -> Result<usize> {
        let (gh, gw) = self.grid()?;
        Ok(gh * gw)
    }

    /// Tokens before the patches: 1 (the class token) with `Pool::Cls`, else 0.
    pub fn num_prefix_tokens(&self) -> usize {
        usize::from(self.pool == Pool::Cls)
    }

    /// Stochastic-depth rate of each block (timm's linear decay from 0 to `block.drop_path`).
    pub fn drop_path_rates(&self) -> Vec<f64> {
        let rate = self.block.drop_path;
        match self.depth {
            0 => Vec::new(),
            1 => vec![0.0],
            d => (0..d).map(|i| rate * i as f64 / (d - 1) as f64).collect(),
        }
    }

    /// The configuration of block `i`.
    pub fn block_config(&self, i: usize) -> BlockConfig {
        BlockConfig {
            n_head: self.num_heads,
            mlp_ratio: self.mlp_ratio,
            norm_eps: self.norm_eps,
            drop_path: self.drop_path_rates().get(i).copied().unwrap_or(0.0),
            ..self.block.clone()
        }
    }

    /// The parameter count in closed form:
    ///
    /// - the patch embedding's [`PatchEmbedConfig::num_params`]: `D·c·p² + D`
    ///   (`c = in_chans`, or the stem's `c₂` plus the stem's `9·c₁·C + 2c₁ + 9·c₂·c₁ + 2c₂`);
    /// - `D` for the class token; `(n_prefix + N)·D` for a learned `pos_embed`;
    /// - per block `3D² + D² + 2·D·H` of weights (`H` the MLP width; `D²` only
    ///   without the MLP), biases `3D` (qkv, with `qkv_bias`) + `D + H + D`, and
    ///   `2D` per LayerNorm (`D` without biases), two norms with the MLP, one without;
    /// - the final norm `2D` (`norm` or `fc_norm`) and the head `K·D + K`.
    pub fn num_params_closed_form(&self) -> Result<usize> {
        let d = self.embed_dim;
        let n = self.num_patches()?;
        let b = usize::from(self.block.bias);
        let patch = self.patch_embed_config().num_params();
        let prefix = self.num_prefix_tokens();
        let cls = prefix * d;
        let pos = if self.pos == PosEmbed::Learned { (prefix + n) * d } else { 0 };
        let norm = d + b * d;
        let h = (d as f64 * self.mlp_ratio) as usize;
        let attn = norm + 3 * d * d + usize::from(self.qkv_bias) * 3 * d + d * d + b * d;
        let mlp = if self.block.mlp { norm + d * h + b * h + h * d + b * d } else { 0 };
        let head = if self.num_classes > 0 { self.num_classes * d + self.num_classes } else { 0 };
        Ok(patch + cls + pos + self.depth * (attn + mlp) + norm + head)
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "VitConfig";
        let c = self;
        if c.img_size.0 == 0 || c.img_size.1 == 0 || c.in_chans == 0 || c.embed_dim == 0 || c.num_heads == 0 {
            return Err(Error::value(OP, format!("img_size, in_chans, embed_dim and num_heads must be positive: {c:?}")));
        }
        if !c.embed_dim.is_multiple_of(c.num_heads) {
            return Err(Error::value(
                OP,
                format!("embed_dim {} must be a multiple of num_heads {}", c.embed_dim, c.num_heads),
            ));
        }
        if c.pos == PosEmbed::SinCos && !c.embed_dim.is_multiple_of(4) {
            return Err(Error::value(
                OP,
                format!("sine-cosine positions need embed_dim divisible by 4, got {}", c.embed_dim),
            ));
        }
        for (what, p) in [
            ("pos_drop_rate", c.pos_drop_rate),
            ("drop_rate", c.drop_rate),
            ("block.drop_path", c.block.drop_path),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::value(OP, format!("{what} {p} must lie in [0, 1]")));
            }
        }
        c.grid().map(|_| ())
    }
}

/// The Vision Transformer. See the module docs for the structure, names and
/// initialisation.
///
/// ```
/// use tamer::models::{Pool, VisionTransformer, VitConfig};
/// use tamer::nn::Module;
/// use tamer::{rng, DType, Tensor};
/// let cfg = VitConfig { pool: Pool::Mean, ..VitConfig::new((8, 8), 4, 1, 3, 16, 2, 2, 2.0) };
/// let vit = VisionTransformer::new(cfg.clone(), &mut rng(0)).unwrap();
/// assert_eq!(vit.num_params(), cfg.num_params_closed_form().unwrap());
/// let x = Tensor::randn([2, 1, 8, 8], DType::F32, &mut rng(1)).unwrap();
/// assert_eq!(vit.forward(&x).unwrap().dims(), &[2, 3]);
/// let (_, hidden) = vit.forward_with_hidden(&x).unwrap();
/// assert_eq!(hidden.len(), 3); // embeddings + one per block
/// assert_eq!(hidden[2].dims(), &[2, 4, 16]); // 2×2 patches, no class token
/// assert!(vit.forward(&Tensor::zeros([2, 1, 9, 8], DType::F32).unwrap()).unwrap_err().to_string().contains("img_size"));
/// ```
pub struct VisionTransformer {
    pub config: VitConfig,
    pub patch_embed: PatchEmbed,
    pub cls_token: Option<Param>,
    /// `[1, n_prefix + N, D]`: trainable (learned) or frozen (sine-cosine).
    pub pos_embed: Param,
    pub pos_drop: Dropout,
    pub blocks: Vec<TransformerBlock>,
    /// The final norm before pooling (`Pool::Cls`).
    pub norm: Option<LayerNorm>,
    /// The norm after pooling (`Pool::Mean`).
    pub fc_norm: Option<LayerNorm>,
    pub head_drop: Dropout,
    pub head: Option<Linear>,
    training: bool,
}

impl VisionTransformer {
    /// An f32 model initialised as timm's (module docs), in train mode.
    pub fn new(config: VitConfig, rng: &mut impl Rng) -> Result<VisionTransformer> {
        config.validate()?;
        let d = config.embed_dim;
        let patch_embed = PatchEmbed::new(&config.patch_embed_config(), rng)?;
        let prefix = config.num_prefix_tokens();
        let cls_token = if prefix > 0 {
            let p = Param::new(fresh([1, 1, d], 0.0)?);
            normal_(&p, 0.0, 1e-6, rng)?;
            Some(p)
        } else {
            None
        };
        let (gh, gw) = patch_embed.grid;
        let pos_embed = match config.pos {
            PosEmbed::Learned => {
                let p = Param::new(fresh([1, prefix + gh * gw, d], 0.0)?);
                timm_trunc_normal_(&p, 0.02, rng)?;
                p
            }
            PosEmbed::SinCos => {
                let p = Param::new(sincos_2d(gh, gw, d, prefix > 0)?.unsqueeze(0)?);
                p.set_trainable(false);
                p
            }
        };
        let mut blocks = Vec::with_capacity(config.depth);
        for i in 0..config.depth {
            let mut block = TransformerBlock::new(d, &config.block_config(i), rng)?;
            block.attn.qkv.bias = if config.qkv_bias { Some(Param::new(fresh([3 * d], 0.0)?)) } else { None };
            blocks.push(block);
        }
        let final_norm = || LayerNorm::new(d, config.norm_eps, config.block.bias);
        let (norm, fc_norm) = match config.pool {
            Pool::Cls => (Some(final_norm()?), None),
            Pool::Mean => (None, Some(final_norm()?)),
        };
        let head = if config.num_classes > 0 {
            Some(Linear::new(d, config.num_classes, true, rng)?)
        } else {
            None
        };
        let vit = VisionTransformer {
            pos_drop: Dropout::new(config.pos_drop_rate, rng.next_u64())?,
            head_drop: Dropout::new(config.drop_rate, rng.next_u64())?,
            config,
            patch_embed,
            cls_token,
            pos_embed,
            blocks,
            norm,
            fc_norm,
            head,
            training: true,
        };
        // timm's init_weights_vit_timm: every nn.Linear (blocks and head).
        for (name, p) in vit.named_params() {
            if name.starts_with("blocks.") || name.starts_with("head.") {
                if p.dims().len() == 2 {
                    timm_trunc_normal_(&p, 0.02, rng)?;
                } else if (name.contains(".attn.") || name.contains(".mlp.") || name.starts_with("head.")) && name.ends_with(".bias") {
                    zeros_(&p)?;
                }
            }
        }
        Ok(vit)
    }

    /// [`new`](Self::new) in `dtype` (any float dtype; the CPU computes in
    /// f32 and f64): the same draws, converted, so an f64 model's logits are
    /// the f32 model's to f32 rounding.
    ///
    /// ```
    /// use tamer::models::{VisionTransformer, VitConfig};
    /// use tamer::{rng, DType, Tensor};
    /// let vit = VisionTransformer::with_dtype(VitConfig::new((8, 8), 4, 1, 3, 8, 1, 2, 2.0), DType::F64, &mut rng(0)).unwrap();
    /// let x = Tensor::randn([2, 1, 8, 8], DType::F64, &mut rng(1)).unwrap();
    /// assert_eq!(vit.forward(&x).unwrap().dtype(), DType::F64);
    /// ```
    pub fn with_dtype(config: VitConfig, dtype: DType, rng: &mut impl Rng) -> Result<VisionTransformer> {
        converted("VisionTransformer::with_dtype", Self::new(config, rng)?, dtype)
    }

    /// A model whose parameters and buffers are the given tensors, by timm's
    /// names (a state dict: `cls_token`, `pos_embed`, `patch_embed.proj.weight`,
    /// `blocks.0.attn.qkv.weight`, ...; see the module docs). The tensors are
    /// adopted, not copied, and their dtype is the model's: see
    /// [`adopt_weights`] for the rules and the checks (every name, shape and
    /// dtype, in one error). For a timm checkpoint of another image size or
    /// class count, use [`load_pretrained`](Self::load_pretrained), which
    /// resizes. No model is initialised first: the structure is built with
    /// placeholders (no memory, no random draws) that the given tensors
    /// replace. Dropout RNGs start from a fixed seed.
    pub fn from_weights(config: VitConfig, weights: impl IntoIterator<Item = (String, Tensor)>) -> Result<VisionTransformer> {
        const OP: &str = "VisionTransformer::from_weights";
        // Every parameter is about to be replaced: build placeholders, not a random model.
        let vit = skeleton(|| Self::new(config, &mut crate::rng(0))).map_err(|e| Error::new(OP, e.kind, e.message))?;
        adopt_weights(OP, &vit, weights)?;
        Ok(vit)
    }

    /// Patch grid (rows, columns).
    pub fn grid(&self) -> (usize, usize) {
        self.patch_embed.grid
    }
    /// Tokens per image in the blocks: `n_prefix + N`.
    pub fn num_tokens(&self) -> usize {
        self.config.num_prefix_tokens() + self.patch_embed.num_patches()
    }
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// `x [B, C, H, W] → logits [B, num_classes]` (or the pooled, normed
    /// features `[B, D]` without a head).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let features = self.forward_features(x)?;
        self.forward_head(&features)
    }

    /// timm's `forward_features`: the tokens after the blocks and the final
    /// `norm` (no norm with `Pool::Mean`, whose norm follows pooling), `[B, T, D]`.
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.embed(x)?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        self.final_norm(&h)
    }

    /// timm's `forward_head`: pool `[B, T, D]` features, `fc_norm`, dropout, head.
    pub fn forward_head(&self, features: &Tensor) -> Result<Tensor> {
        let mut x = self.pool(features)?;
        if let Some(n) = &self.fc_norm {
            x = n.forward(&x)?;
        }
        x = self.head_drop.forward(&x)?;
        match &self.head {
            Some(head) => head.forward(&x),
            None => Ok(x),
        }
    }

    /// `[B, T, D] → [B, D]`: token 0 (`Pool::Cls`) or the mean over all tokens
    /// (`Pool::Mean`, which has no prefix tokens).
    pub fn pool(&self, features: &Tensor) -> Result<Tensor> {
        let t = self.num_tokens();
        let d = self.config.embed_dim;
        if features.rank() != 3 || features.dims()[1] != t || features.dims()[2] != d {
            return Err(Error::shape(
                "VisionTransformer::pool",
                format!("features shape {} must be [B, {t}, {d}]", features.shape()),
            ));
        }
        match self.config.pool {
            Pool::Cls => features.narrow(1, 0, 1)?.squeeze(1),
            Pool::Mean => features.mean(&[1], false),
        }
    }

    /// The logits and the residual stream at every depth: `hidden[0]` the
    /// embedded tokens (after `pos_embed`), `hidden[l]` the output of block
    /// `l − 1`, each `[B, T, D]` before the final norm (for rank-collapse and
    /// signal-propagation diagnostics).
    pub fn forward_with_hidden(&self, x: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut h = self.embed(x)?;
        let mut hidden = Vec::with_capacity(self.blocks.len() + 1);
        hidden.push(h.clone());
        for block in &self.blocks {
            h = block.forward(&h)?;
            hidden.push(h.clone());
        }
        let logits = self.forward_head(&self.final_norm(&h)?)?;
        Ok((logits, hidden))
    }

    /// `x [B, C, H, W] →` patch tokens, class token prepended, `pos_embed`
    /// added, position dropout: `[B, T, D]`.
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let tokens = self.patch_embed.forward(x)?; // [B, N, D]
        let (b, d) = (tokens.dims()[0], tokens.dims()[2]);
        let tokens = match &self.cls_token {
            Some(cls) => {
                let cls = cls.tensor();
                let cls = if cls.dtype() == tokens.dtype() { cls } else { cls.to_dtype(tokens.dtype())? };
                Tensor::cat(&[cls.expand([b, 1, d])?, tokens], 1)?
            }
            None => tokens,
        };
        let pos = self.pos_embed.tensor();
        let pos = if pos.dtype() == tokens.dtype() { pos } else { pos.to_dtype(tokens.dtype())? };
        self.pos_drop.forward(&tokens.add(&pos)?)
    }

    fn final_norm(&self, h: &Tensor) -> Result<Tensor> {
        match &self.norm {
            Some(n) => n.forward(h),
            None => Ok(h.clone()),
        }
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let (c, (h, w)) = (self.config.in_chans, self.config.img_size);
        if x.rank() != 4 || x.dims()[1] != c || x.dims()[2] != h || x.dims()[3] != w || x.dims()[0] == 0 {
            return Err(Error::shape(
                "VisionTransformer",
                format!(
                    "input shape {} must be [B, {c}, {h}, {w}] (B >= 1, in_chans {c}, img_size {h}×{w}); \
                     to use another image size, build a model with that img_size and load_pretrained into it (pos_embed is resized)",
                    x.shape()
                ),
            ));
        }
        if !x.dtype().is_compute_float() {
            return Err(Error::dtype(
                "VisionTransformer",
                format!("input dtype {} (shape {}) must be f32 or f64", x.dtype(), x.shape()),
            ));
        }
        Ok(())
    }
}

impl Module for VisionTransformer {
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut v = Vec::new();
        if let Some(cls) = &self.cls_token {
            v.push(("cls_token".to_string(), cls.clone()));
        }
        if self.config.pos == PosEmbed::Learned {
            v.push(("pos_embed".to_string(), self.pos_embed.clone()));
        }
        v.extend(prefixed("patch_embed", self.patch_embed.named_params()));
        for (i, b) in self.blocks.iter().enumerate() {
            v.extend(prefixed(&format!("blocks.{i}"), b.named_params()));
        }
        if let Some(n) = &self.norm {
            v.extend(prefixed("norm", n.named_params()));
        }
        if let Some(n) = &self.fc_norm {
            v.extend(prefixed("fc_norm", n.named_params()));
        }
        if let Some(h) = &self.head {
            v.extend(prefixed("head", h.named_params()));
        }
        v
    }
    fn named_buffers(&self) -> Vec<(String, Param)> {
        let mut v = Vec::new();
        if self.config.pos == PosEmbed::SinCos {
            v.push(("pos_embed".to_string(), self.pos_embed.clone()));
        }
        v.extend(prefixed("patch_embed", self.patch_embed.named_buffers()));
        v
    }
    /// timm's `VisionTransformer.no_weight_decay()`.
    fn no_weight_decay(&self) -> Vec<String> {
        ["pos_embed", "cls_token", "dist_token"].map(String::from).to_vec()
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
        self.patch_embed.set_training(training);
        self.pos_drop.set_training(training);
        self.blocks.iter_mut().for_each(|b| b.set_training(training));
        self.head_drop.set_training(training);
    }
}
