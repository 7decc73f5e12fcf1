//! The transformer feed-forward block.

use super::{prefixed, Dropout, Linear, Module, Param};
use crate::{Result, Tensor};
use rand::Rng;

/// Point-wise nonlinearities used between layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, `x·Φ(x)` (`nn.GELU()`, timm and nanoGPT).
    Gelu,
    /// GELU's tanh approximation (`nn.GELU(approximate="tanh")`, HF GPT-2's `gelu_new`).
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => x.gelu(),
            Activation::GeluTanh => x.gelu_tanh(),
            Activation::Relu => x.relu(),
        }
    }
}

/// timm's `Mlp`: `fc1 → act → dropout → fc2 → dropout`, parameters named
/// `fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias`. Both dropouts share one
/// probability and one RNG (timm's `drop`).
///
/// ```
/// use tamer::nn::{Mlp, Module};
/// use tamer::{rng, DType, Tensor};
/// let mlp = Mlp::new(8, 32, 8, true, 0.0, &mut rng(0)).unwrap();
/// assert_eq!(mlp.forward(&Tensor::ones([2, 3, 8], DType::F32).unwrap()).unwrap().dims(), &[2, 3, 8]);
/// let names: Vec<String> = mlp.named_params().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
/// ```
#[derive(Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    pub act: Activation,
    pub dropout: Dropout,
}

impl Mlp {
    /// `in_features → hidden → out_features` with exact GELU; the layers get
    /// PyTorch's default init and the dropout RNG is seeded from `rng`.
    pub fn new(in_features: usize, hidden: usize, out_features: usize, bias: bool, drop: f64, rng: &mut impl Rng) -> Result<Mlp> {
        let fc1 = Linear::new(in_features, hidden, bias, rng)?;
        let fc2 = Linear::new(hidden, out_features, bias, rng)?;
        let dropout = Dropout::new(drop, rng.next_u64())?;
        Ok(Mlp {
            fc1,
            fc2,
            act: Activation::Gelu,
            dropout,
        })
    }
    /// Build from existing layers (e.g. in tests or when loading).
    pub fn from_layers(fc1: Linear, fc2: Linear, act: Activation, dropout: Dropout) -> Mlp {
        Mlp { fc1, fc2, act, dropout }
    }
    /// `x: [.., in_features] -> [.., out_features]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.act.apply(&self.fc1.forward(x)?)?;
        let h = self.dropout.forward(&h)?;
        let y = self.fc2.forward(&h)?;
        self.dropout.forward(&y)
    }
}

impl Module for Mlp {
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut v = prefixed("fc1", self.fc1.named_params());
        v.extend(prefixed("fc2", self.fc2.named_params()));
        v
    }
    fn set_training(&mut self, training: bool) {
        self.dropout.set_training(training);
    }
}
