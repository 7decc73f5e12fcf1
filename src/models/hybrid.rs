//! The hybrid ViT's CNN stem: the backbone timm's `HybridEmbed` runs before
//! cutting its feature map into patches (see [`PatchEmbed`](super::PatchEmbed)).
//!
//! ```text
//! backbone: conv1 3×3 s1 p1 → bn1 → ReLU → conv2 3×3 s2 p1 → bn2 → ReLU [→ max-pool 2×2 s2]
//! ```
//!
//! Parameter names: `conv1.weight [c₁, C, 3, 3]`, `bn1.{weight,bias} [c₁]`,
//! `conv2.weight [c₂, c₁, 3, 3]`, `bn2.{weight,bias} [c₂]` (convolutions
//! before a batch norm have no bias), with the batch norms' buffers
//! `bn{1,2}.{running_mean,running_var,num_batches_tracked}`. They follow
//! torchvision's ResNet stem, not any one timm backbone, so timm hybrid
//! checkpoints (ResNetV2 stems) do not load here.

use crate::nn::init::{kaiming_normal_, FanMode, Nonlinearity};
use crate::nn::{prefixed, BatchNorm2d, Conv2d, Module, Param};
use crate::{Result, Tensor};
use rand::Rng;

/// The CNN stem of a hybrid ViT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StemConfig {
    /// Output channels of the first (stride 1) and second (stride 2) 3×3 convolutions.
    pub channels: (usize, usize),
    /// A final 2×2 max-pool with stride 2 (another halving of the grid).
    pub max_pool: bool,
}

impl StemConfig {
    /// The stem's output size for an `h × w` input: the first convolution keeps
    /// it, the second gives `⌊(h − 1)/2⌋ + 1` (= ⌈h/2⌉), the max-pool halves it
    /// (rounding down).
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        let conv2 = |n: usize| if n == 0 { 0 } else { (n - 1) / 2 + 1 };
        let (h, w) = (conv2(h), conv2(w));
        if self.max_pool {
            (h / 2, w / 2)
        } else {
            (h, w)
        }
    }

    /// Parameter count for `in_chans` input channels (convolution weights and
    /// batch-norm affine parameters; buffers are not parameters).
    pub fn num_params(&self, in_chans: usize) -> usize {
        let (c1, c2) = self.channels;
        c1 * in_chans * 9 + 2 * c1 + c2 * c1 * 9 + 2 * c2
    }
}

/// The hybrid ViT's convolutional backbone (see the module docs).
pub struct CnnStem {
    pub conv1: Conv2d,
    pub bn1: BatchNorm2d,
    pub conv2: Conv2d,
    pub bn2: BatchNorm2d,
    pub max_pool: bool,
}

impl CnnStem {
    /// An f32 stem: convolutions Kaiming-normal with fan-out and ReLU gain (as
    /// torchvision's ResNet), batch norms weight 1, bias 0.
    pub fn new(in_chans: usize, config: &StemConfig, rng: &mut impl Rng) -> Result<CnnStem> {
        let (c1, c2) = config.channels;
        let conv1 = Conv2d::new(in_chans, c1, (3, 3), (1, 1), (1, 1), false, rng)?;
        let conv2 = Conv2d::new(c1, c2, (3, 3), (2, 2), (1, 1), false, rng)?;
        for conv in [&conv1, &conv2] {
            kaiming_normal_(&conv.weight, FanMode::FanOut, Nonlinearity::Relu, rng)?;
        }
        Ok(CnnStem {
            conv1,
            bn1: BatchNorm2d::new(c1)?,
            conv2,
            bn2: BatchNorm2d::new(c2)?,
            max_pool: config.max_pool,
        })
    }

    /// `x: [B, C, H, W] -> [B, c₂, H', W']`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.bn1.forward(&self.conv1.forward(x)?)?.relu()?;
        let h = self.bn2.forward(&self.conv2.forward(&h)?)?.relu()?;
        if self.max_pool {
            h.max_pool2d((2, 2), (2, 2), (0, 0))
        } else {
            Ok(h)
        }
    }
}

impl Module for CnnStem {
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut v = prefixed("conv1", self.conv1.named_params());
        v.extend(prefixed("bn1", self.bn1.named_params()));
        v.extend(prefixed("conv2", self.conv2.named_params()));
        v.extend(prefixed("bn2", self.bn2.named_params()));
        v
    }
    fn named_buffers(&self) -> Vec<(String, Param)> {
        let mut v = prefixed("bn1", self.bn1.named_buffers());
        v.extend(prefixed("bn2", self.bn2.named_buffers()));
        v
    }
    fn set_training(&mut self, training: bool) {
        self.bn1.set_training(training);
        self.bn2.set_training(training);
    }
}
