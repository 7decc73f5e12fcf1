//! Layers and the module convention.
//!
//! A module is a plain struct owning [`Param`]s and child modules. It lists its
//! parameters with hierarchical, PyTorch-compatible names
//! ("blocks.0.attn.qkv.weight") through [`Module::named_params`], and its
//! non-learned state (BatchNorm running statistics) through
//! [`Module::named_buffers`]. Train/eval mode is a flag each module keeps and
//! [`Module::set_training`] sets recursively.
//!
//! Layers: [`Linear`] (and its function form [`functional::linear`]), [`Embedding`], [`LayerNorm`], [`Dropout`], [`DropPath`],
//! [`Conv2d`], [`BatchNorm2d`], [`Mlp`], [`LearnedPosEmbed`]; fixed encodings
//! [`sincos_1d`] and [`sincos_2d`]; initialisers in [`init`]. Constructors make
//! f32 parameters with PyTorch's default initialisation and modules start in
//! train mode; [`Module::to_dtype`] converts a module (e.g. to f64 for gradient
//! checks). Parameter shapes and names follow PyTorch, so state dicts map 1:1.
//! Built from given tensors (`from_tensors`, [`adopt_weights`] and the models'
//! `from_weights`), a module keeps the caller's variables as its parameters.
//!
//! Transformer pieces: [`MultiHeadSelfAttention`] (fused qkv, causal mask,
//! attention dropout, [`KvCache`] for decoding) and [`TransformerBlock`], whose
//! structure (pre/post-LN, residuals, MLP, Admin ω) is a [`BlockConfig`].

mod attention;
mod batch_norm;
mod block;
mod conv;
mod dropout;
mod embedding;
pub mod functional;
pub mod init;
mod layer_norm;
mod linear;
mod mlp;
mod param;
mod pos_encoding;
mod weights;

pub use attention::{KvCache, MultiHeadSelfAttention};
pub use batch_norm::BatchNorm2d;
pub use block::{admin_profile_blocks, BlockConfig, NormPlacement, TransformerBlock};
pub use conv::Conv2d;
pub use dropout::{DropPath, Dropout};
pub use embedding::Embedding;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use mlp::{Activation, Mlp};
pub use param::Param;
pub use pos_encoding::{sincos_1d, sincos_2d, LearnedPosEmbed};
pub use weights::adopt_weights;
pub(crate) use weights::same_values;

use crate::{DType, Device, Error, Result, Tensor};

/// The error a layer returns when its input's dtype differs from its parameters'.
pub(crate) fn check_dtype(layer: &'static str, x: &Tensor, param: &Tensor) -> Result<()> {
    if x.dtype() != param.dtype() {
        return Err(Error::dtype(
            layer,
            format!(
                "input dtype {} (shape {}) differs from the parameter dtype {}; convert the module with Module::to_dtype",
                x.dtype(),
                x.shape(),
                param.dtype()
            ),
        ));
    }
    Ok(())
}

/// The checks every `from_tensors` constructor makes on the given values:
/// float parameters, and a bias of the weight's dtype on the weight's device
/// (the layer would otherwise fail at its first forward, far from the cause).
pub(crate) fn check_given(layer: &'static str, weight: &Tensor, bias: Option<&Tensor>) -> Result<()> {
    if !weight.dtype().is_float() {
        return Err(Error::dtype(
            layer,
            format!("weight {} has dtype {}; expected a float dtype", weight.shape(), weight.dtype()),
        ));
    }
    if let Some(b) = bias {
        if b.dtype() != weight.dtype() || b.device() != weight.device() {
            return Err(Error::dtype(
                layer,
                format!(
                    "bias {} is {} on {}, weight {} is {} on {}; expected the same dtype and device",
                    b.shape(),
                    b.dtype(),
                    b.device(),
                    weight.shape(),
                    weight.dtype(),
                    weight.device()
                ),
            ));
        }
    }
    Ok(())
}

/// `module` converted to `dtype` (a float dtype), with errors naming `op`:
/// how the `with_dtype` constructors build in another dtype.
pub(crate) fn converted<M: Module>(op: &'static str, module: M, dtype: DType) -> Result<M> {
    module.to_dtype(dtype).map_err(|e| Error::new(op, e.kind, e.message))?;
    Ok(module)
}

/// What every layer and model implements.
pub trait Module {
    /// Every parameter with its hierarchical name, in a stable order.
    fn named_params(&self) -> Vec<(String, Param)>;
    /// Non-learned state saved in checkpoints (running statistics); none by default.
    fn named_buffers(&self) -> Vec<(String, Param)> {
        Vec::new()
    }
    /// Extra state-dict names for tied parameters, as `(alias, canonical name)`:
    /// checkpoints are written with both (as PyTorch's state_dict does) and an
    /// alias found in a checkpoint loads into the canonical parameter.
    fn tied_aliases(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Names (globs, see [`name_matches`]) of parameters that weight decay
    /// should skip besides biases and norm gains, as timm models declare them
    /// (a ViT's `pos_embed` and `cls_token`): what
    /// [`DecayRule::timm`](crate::optim::DecayRule::timm) reads. None by default.
    fn no_weight_decay(&self) -> Vec<String> {
        Vec::new()
    }
    /// Train mode (dropout, drop-path and batch statistics on) or eval mode.
    fn set_training(&mut self, training: bool);

    /// The parameters without names.
    fn params(&self) -> Vec<Param> {
        self.named_params().into_iter().map(|(_, p)| p).collect()
    }
    /// Total number of parameter elements.
    fn num_params(&self) -> usize {
        self.named_params().iter().map(|(_, p)| p.numel()).sum()
    }
    /// Number of trainable parameter elements.
    fn num_trainable_params(&self) -> usize {
        self.named_params().iter().filter(|(_, p)| p.is_trainable()).map(|(_, p)| p.numel()).sum()
    }
    /// Freeze (or unfreeze) every parameter whose name matches `pattern`
    /// (see [`name_matches`]); returns how many matched.
    fn set_trainable_matching(&self, pattern: &str, trainable: bool) -> usize {
        let mut n = 0;
        for (name, p) in self.named_params() {
            if name_matches(pattern, &name) {
                p.set_trainable(trainable);
                n += 1;
            }
        }
        n
    }
    /// Move every parameter and buffer to `device`, in place: each is copied
    /// there and the copy replaces the old value, so every handle to a
    /// [`Param`] (the model's, an optimizer's, a tied alias's) sees the moved
    /// tensor, and tied parameters (one `Param` listed under two names) stay
    /// one parameter. Gradients are keyed by the new handles. Values already on
    /// `device` are left as they are, so `to_device(Device::Cpu)` on a CPU
    /// model does nothing. Every copy is made before any parameter is
    /// replaced: a failed copy (out of device memory, no such device, a build
    /// without the `cuda` feature) leaves the module where it was.
    ///
    /// Optimizer state follows its parameter at the next step; the layers
    /// create what they need during `forward` on the input's device.
    ///
    /// ```
    /// use tamer::nn::{Linear, Module};
    /// use tamer::Device;
    /// let lin = Linear::new(3, 2, true, &mut tamer::rng(0)).unwrap();
    /// let w = lin.weight.tensor();
    /// lin.to_device(Device::Cpu).unwrap();
    /// assert!(lin.weight.tensor().same_storage(&w)); // already there: nothing moves
    /// // A GPU needs the `cuda` feature and a driver; otherwise this is an error.
    /// if let Ok(gpu) = Device::cuda(0) {
    ///     lin.to_device(gpu).unwrap();
    ///     assert_eq!(lin.weight.tensor().device(), gpu);
    /// }
    /// ```
    fn to_device(&self, device: Device) -> Result<()> {
        let mut moved: Vec<(Param, Tensor)> = Vec::new();
        for (_, p) in self.named_params().into_iter().chain(self.named_buffers()) {
            if moved.iter().any(|(q, _)| q.same(&p)) {
                continue;
            }
            let t = p.tensor();
            if t.device() != device {
                let copy = t.to_device(device).map_err(|e| Error::new("Module::to_device", e.kind, e.message))?;
                moved.push((p, copy));
            }
        }
        for (p, t) in moved {
            p.replace(t);
        }
        Ok(())
    }
    /// The device of the first parameter (or buffer); the CPU for a module
    /// with neither. Where its inputs must be.
    fn device(&self) -> Device {
        self.named_params()
            .into_iter()
            .chain(self.named_buffers())
            .next()
            .map_or(Device::Cpu, |(_, p)| p.device())
    }
    /// Convert every float parameter and buffer to `dtype` (e.g. f64 for
    /// gradient checks). Index buffers (i64) are left alone.
    fn to_dtype(&self, dtype: DType) -> Result<()> {
        if !dtype.is_float() {
            return Err(Error::dtype("Module::to_dtype", format!("target dtype {dtype} is not a float type")));
        }
        for (_, p) in self.named_params().into_iter().chain(self.named_buffers()) {
            let t = p.tensor();
            if t.dtype().is_float() && t.dtype() != dtype {
                p.replace(t.to_dtype(dtype)?);
            }
        }
        Ok(())
    }
}

/// Prefix every name in `params` with `prefix.` (how a parent lists a child's parameters).
pub fn prefixed(prefix: &str, params: Vec<(String, Param)>) -> Vec<(String, Param)> {
    params.into_iter().map(|(n, p)| (format!("{prefix}.{n}"), p)).collect()
}

/// Glob matching on parameter names: `*` matches any run of characters
/// (including dots), everything else matches itself. `"blocks.*.attn.*"`,
/// `"head.*"`, `"*bias"`.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|k| go(rest, &n[k..])),
            Some((c, rest)) => n.split_first().is_some_and(|(d, nrest)| c == d && go(rest, nrest)),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn glob_patterns() {
        assert!(name_matches("blocks.*.attn.*", "blocks.3.attn.qkv.weight"));
        assert!(name_matches("*bias", "head.bias"));
        assert!(!name_matches("head.*", "blocks.0.head.weight"));
        assert!(name_matches("head.weight", "head.weight"));
    }
}
