//! The ViT's patch embedding: timm's `PatchEmbed` (a convolution with stride =
//! kernel = patch size) and, for the hybrid ViT, timm's `HybridEmbed` (a
//! [`CnnStem`] whose feature map is cut into patches by the same kind of
//! convolution, usually with patch size 1).
//!
//! ```text
//! plain:   x [B, C, H, W] --proj (p×p, stride p)--> [B, D, H/p, W/p] --flatten, transpose--> [B, N, D]
//! hybrid:  x [B, C, H, W] --backbone--> [B, c₂, H', W'] --proj (p×p, stride p)--> [B, D, H'/p, W'/p] --> [B, N, D]
//! ```
//!
//! Parameter names: `proj.weight [D, c, p, p]`, `proj.bias [D]` and, for the
//! hybrid, the stem's under `backbone.` (see [`CnnStem`]). The ViT prefixes
//! all of them with `patch_embed.`, as timm's hybrid models do
//! (`patch_embed.backbone.*`, `patch_embed.proj.*`).

use super::hybrid::{CnnStem, StemConfig};
use crate::nn::{prefixed, Conv2d, Module, Param};
use crate::{Error, Result, Tensor};
use rand::Rng;

/// How a [`PatchEmbed`] is built: the image it accepts, the patch size and
/// the token width (timm's `PatchEmbed(img_size, patch_size, in_chans,
/// embed_dim)`), and an optional CNN stem before the patch projection.
///
/// ```
/// use tamer::models::{PatchEmbedConfig, StemConfig};
/// let plain = PatchEmbedConfig::new((28, 28), 4, 1, 64);
/// assert_eq!((plain.grid().unwrap(), plain.num_params()), ((7, 7), 64 * 16 + 64));
/// let hybrid = PatchEmbedConfig { stem: Some(StemConfig { channels: (8, 16), max_pool: true }), ..PatchEmbedConfig::new((28, 28), 1, 1, 64) };
/// assert_eq!(hybrid.feature_size(), (7, 7));
/// assert!(PatchEmbedConfig::new((8, 8), 9, 1, 4).grid().unwrap_err().to_string().contains("patch size 9"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PatchEmbedConfig {
    /// Input image (H, W).
    pub img_size: (usize, usize),
    /// Patch side, on the image (or on the stem's feature map).
    pub patch_size: usize,
    pub in_chans: usize,
    /// Token width D.
    pub embed_dim: usize,
    /// A CNN stem before the patch projection (hybrid ViT).
    pub stem: Option<StemConfig>,
}

impl PatchEmbedConfig {
    /// A plain (stem-less) patch embedding.
    pub fn new(img_size: (usize, usize), patch_size: usize, in_chans: usize, embed_dim: usize) -> Self {
        PatchEmbedConfig {
            img_size,
            patch_size,
            in_chans,
            embed_dim,
            stem: None,
        }
    }

    /// The feature map the patch projection sees: the image, or the stem's output.
    pub fn feature_size(&self) -> (usize, usize) {
        match &self.stem {
            Some(s) => s.output_size(self.img_size.0, self.img_size.1),
            None => self.img_size,
        }
    }

    /// The patch grid (rows, columns): `⌊feature size / patch⌋` (timm's
    /// `PatchEmbed`; a remainder is cut off by the strided convolution).
    pub fn grid(&self) -> Result<(usize, usize)> {
        let (fh, fw) = self.feature_size();
        let p = self.patch_size;
        if p == 0 || fh < p || fw < p {
            return Err(Error::value(
                "PatchEmbedConfig",
                format!(
                    "patch size {p} does not fit the {fh}×{fw} {} (img_size {:?})",
                    if self.stem.is_some() { "stem feature map" } else { "image" },
                    self.img_size
                ),
            ));
        }
        Ok((fh / p, fw / p))
    }

    /// Number of patch tokens N.
    pub fn num_patches(&self) -> Result<usize> {
        let (gh, gw) = self.grid()?;
        Ok(gh * gw)
    }

    /// The projection's input channels: the image's, or the stem's output channels.
    pub fn proj_in_chans(&self) -> usize {
        self.stem.map_or(self.in_chans, |s| s.channels.1)
    }

    /// The parameter count: `D·c·p² + D` for the projection (`c` =
    /// [`proj_in_chans`](Self::proj_in_chans)) plus the stem's.
    pub fn num_params(&self) -> usize {
        let p2 = self.patch_size * self.patch_size;
        let stem = self.stem.map_or(0, |s| s.num_params(self.in_chans));
        stem + self.embed_dim * self.proj_in_chans() * p2 + self.embed_dim
    }
}

/// Images to patch tokens: the optional CNN backbone, then the patch projection.
pub struct PatchEmbed {
    pub backbone: Option<CnnStem>,
    pub proj: Conv2d,
    /// The accepted input size (H, W).
    pub img_size: (usize, usize),
    /// The patch grid (rows, columns); `N = rows · columns` tokens.
    pub grid: (usize, usize),
}

impl PatchEmbed {
    /// An f32 embedding for `config`. `proj` gets PyTorch's default
    /// convolution initialisation, as in timm (its ViT init only redraws
    /// `Linear` layers); the stem's initialisation is [`CnnStem::new`]'s.
    pub fn new(config: &PatchEmbedConfig, rng: &mut impl Rng) -> Result<PatchEmbed> {
        let p = config.patch_size;
        let grid = config.grid()?;
        let backbone = match &config.stem {
            Some(stem) => Some(CnnStem::new(config.in_chans, stem, rng)?),
            None => None,
        };
        Ok(PatchEmbed {
            backbone,
            proj: Conv2d::new(config.proj_in_chans(), config.embed_dim, (p, p), (p, p), (0, 0), true, rng)?,
            img_size: config.img_size,
            grid,
        })
    }

    pub fn num_patches(&self) -> usize {
        self.grid.0 * self.grid.1
    }

    /// `x: [B, C, H, W]` (exactly `img_size`) `-> [B, N, D]`, tokens in
    /// row-major patch order.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let feat = match &self.backbone {
            Some(b) => b.forward(x)?,
            None => x.clone(),
        };
        let y = self.proj.forward(&feat)?; // [B, D, gh, gw]
        if (y.dims()[2], y.dims()[3]) != self.grid {
            return Err(Error::shape(
                "PatchEmbed",
                format!("projection output {} does not have the {:?} patch grid", y.shape(), self.grid),
            ));
        }
        y.flatten(2, 3)?.transpose(1, 2) // [B, N, D]
    }
}

impl Module for PatchEmbed {
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut v = match &self.backbone {
            Some(b) => prefixed("backbone", b.named_params()),
            None => Vec::new(),
        };
        v.extend(prefixed("proj", self.proj.named_params()));
        v
    }
    fn named_buffers(&self) -> Vec<(String, Param)> {
        match &self.backbone {
            Some(b) => prefixed("backbone", b.named_buffers()),
            None => Vec::new(),
        }
    }
    fn set_training(&mut self, training: bool) {
        if let Some(b) = &mut self.backbone {
            b.set_training(training);
        }
    }
}
