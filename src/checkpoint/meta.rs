//! Reading a checkpoint's structure safely: tensors of a required rank, and
//! the structured (JSON) metadata entries tamer writes beside the tensors.

use super::Checkpoint;
use crate::{Error, Result};
use std::collections::BTreeMap;

impl Checkpoint {
    /// The dimensions of tensor `name`, which must have rank `N`; `pattern`
    /// (e.g. `"[D, C, p, p]"`) names them in the error. For code that reads a
    /// model's configuration off its shapes: a crafted file may hold a scalar
    /// where a matrix belongs.
    ///
    /// ```
    /// use tamer::{checkpoint::Checkpoint, Tensor};
    /// let ckpt = Checkpoint::from_tensors("f", vec![("w".into(), Tensor::scalar(1.0f32))]);
    /// let e = ckpt.dims_of::<2>("w", "[H, D]").unwrap_err().to_string();
    /// assert!(e.contains("f: w must be [H, D], got []"), "{e}");
    /// ```
    pub fn dims_of<const N: usize>(&self, name: &str, pattern: &str) -> Result<[usize; N]> {
        let t = self.get(name)?;
        <[usize; N]>::try_from(t.dims())
            .map_err(|_| Error::format("Checkpoint::dims_of", format!("{}: {name} must be {pattern}, got {}", self.source, t.shape())))
    }

    /// An error (of `op`) unless tensor `name` is here with exactly `shape`:
    /// for loaders that check the file holds the model a configuration
    /// describes before they build (and allocate) it.
    pub fn expect_model_tensor(&self, op: &'static str, name: &str, shape: &[usize]) -> Result<()> {
        let found = self.get(name).ok().map(|t| t.dims().to_vec());
        if found.as_deref() == Some(shape) {
            return Ok(());
        }
        Err(Error::format(
            op,
            format!(
                "{}: the file does not hold the model its configuration describes: {name} should be {shape:?} but is {}",
                self.source,
                found.map_or("missing".to_string(), |f| format!("{f:?}"))
            ),
        ))
    }
}

/// What a loader checks before it builds the model a file's configuration
/// describes: that the file holds the model's large tensors, with their
/// shapes, so that a crafted configuration (a width of 10^9, say) cannot make
/// it allocate a model far larger than the file; and that the sizes it
/// computes on the way do not overflow. Check one tensor at a time and stop
/// at the first missing one: a depth of 10^9 in crafted metadata must not be
/// looped over.
pub(crate) struct FileHoldsModel<'a> {
    op: &'static str,
    ckpt: &'a Checkpoint,
    /// The configuration, for the overflow error.
    config: String,
}

impl<'a> FileHoldsModel<'a> {
    pub(crate) fn new(op: &'static str, ckpt: &'a Checkpoint, config: &impl std::fmt::Debug) -> Self {
        FileHoldsModel {
            op,
            ckpt,
            config: format!("{config:?}"),
        }
    }
    fn overflow(&self) -> Error {
        Error::format(self.op, format!("{}: the configuration's sizes overflow: {}", self.ckpt.source, self.config))
    }
    /// `a · b`, or an error naming the configuration.
    pub(crate) fn mul(&self, a: usize, b: usize) -> Result<usize> {
        a.checked_mul(b).ok_or_else(|| self.overflow())
    }
    /// `a + b`, or an error naming the configuration.
    pub(crate) fn add(&self, a: usize, b: usize) -> Result<usize> {
        a.checked_add(b).ok_or_else(|| self.overflow())
    }
    /// An error unless tensor `name` is in the file with exactly `shape`.
    pub(crate) fn require(&self, name: &str, shape: &[usize]) -> Result<()> {
        self.ckpt.expect_model_tensor(self.op, name, shape)
    }
}

/// The metadata entry holding the model's full configuration as JSON
/// (`VitConfig::to_json`, `GptConfig::to_json`), written by the training
/// examples and read back by every loader instead of guessing from shapes.
pub const MODEL_CONFIG_KEY: &str = "model_config";
/// The metadata entry holding the [`InputNormalization`] the model was trained with.
pub const INPUT_NORMALIZATION_KEY: &str = "input_normalization";

/// The per-channel normalisation a model's inputs went through in training,
/// `x ↦ (x − mean[c]) / std[c]` on pixels in `[0, 1]`; stored in checkpoints
/// so that inference normalises as training did.
///
/// ```
/// use tamer::checkpoint::InputNormalization;
/// use tamer::Tensor;
/// let norm = InputNormalization::new(vec![0.5], vec![0.25]).unwrap();
/// let back = InputNormalization::from_json(&norm.to_json()).unwrap();
/// assert_eq!(back, norm);
/// let x = Tensor::from_vec(vec![0.0f32, 0.5, 1.0, 0.75], [1, 1, 2, 2]).unwrap();
/// assert_eq!(norm.apply(&x).unwrap().to_vec::<f32>().unwrap(), vec![-2.0, 0.0, 2.0, 1.0]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct InputNormalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

const NORM_OP: &str = "InputNormalization";

impl InputNormalization {
    /// One mean and one positive, finite std per channel.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(Error::value(
                NORM_OP,
                format!("{} means and {} stds: expected one of each per channel", mean.len(), std.len()),
            ));
        }
        if let Some(s) = std.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
            return Err(Error::value(NORM_OP, format!("std {s} must be positive and finite (std {std:?})")));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::value(NORM_OP, format!("mean {m} must be finite (mean {mean:?})")));
        }
        Ok(InputNormalization { mean, std })
    }

    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// `{"mean": [..], "std": [..]}`
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"mean": self.mean, "std": self.std})
    }

    /// Parse [`to_json`](Self::to_json)'s output.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let list = |key: &str| -> Result<Vec<f32>> {
            v.get(key)
                .and_then(|a| a.as_array())
                .and_then(|a| a.iter().map(|x| x.as_f64().map(|x| x as f32)).collect::<Option<Vec<f32>>>())
                .ok_or_else(|| Error::format(NORM_OP, format!("{v}: expected {{\"mean\": [numbers], \"std\": [numbers]}} ({key:?})")))
        };
        if let Some(extra) = v.as_object().and_then(|o| o.keys().find(|k| *k != "mean" && *k != "std")) {
            return Err(Error::format(NORM_OP, format!("{v}: unknown field {extra:?}")));
        }
        InputNormalization::new(list("mean")?, list("std")?)
    }

    /// The normalisation recorded in `ckpt`'s metadata, if any.
    pub fn from_checkpoint(ckpt: &Checkpoint) -> Result<Option<Self>> {
        let Some(text) = ckpt.metadata.get(INPUT_NORMALIZATION_KEY) else {
            return Ok(None);
        };
        let fail = |what: String| Error::format(NORM_OP, format!("{}: metadata {INPUT_NORMALIZATION_KEY:?}: {what}", ckpt.source));
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| fail(format!("not valid JSON ({e})")))?;
        InputNormalization::from_json(&v).map(Some).map_err(|e| fail(e.message))
    }

    /// Normalise images `[B, C, H, W]` (or `[C, H, W]`) with pixels in
    /// `[0, 1]`, computing `(x − mean) · (1 / std)` in f32 exactly as the
    /// data loader does, so the model sees the values it was trained on.
    pub fn apply(&self, x: &crate::Tensor) -> Result<crate::Tensor> {
        let c = self.channels();
        let axis = x.rank().checked_sub(3).filter(|_| x.rank() <= 4);
        if axis.is_none_or(|a| x.dims()[a] != c) {
            return Err(Error::shape(
                NORM_OP,
                format!("images {} must be [B, {c}, H, W] or [{c}, H, W] for a {c}-channel normalisation", x.shape()),
            ));
        }
        let inv: Vec<f32> = self.std.iter().map(|s| 1.0 / s).collect();
        let mean = crate::Tensor::from_slice(&self.mean, [c, 1, 1])?.to_dtype(x.dtype())?.to_device(x.device())?;
        let inv = crate::Tensor::from_slice(&inv, [c, 1, 1])?.to_dtype(x.dtype())?.to_device(x.device())?;
        x.sub(&mean)?.mul(&inv)
    }
}

/// The metadata entries that describe a model for whoever loads it later:
/// its configuration (`model_config`, the JSON of `VitConfig::to_json` or
/// `GptConfig::to_json`) and, for image models, the input normalisation.
///
/// ```
/// use tamer::checkpoint::{model_metadata, InputNormalization, MODEL_CONFIG_KEY};
/// use tamer::models::VitConfig;
/// let norm = InputNormalization::new(vec![0.3], vec![0.4]).unwrap();
/// let meta = model_metadata(&VitConfig::vit_digits().to_json(), Some(&norm));
/// assert!(meta[MODEL_CONFIG_KEY].contains("\"num_heads\":4"));
/// ```
pub fn model_metadata(model_config: &serde_json::Value, input: Option<&InputNormalization>) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::from([(MODEL_CONFIG_KEY.to_string(), model_config.to_string())]);
    if let Some(norm) = input {
        meta.insert(INPUT_NORMALIZATION_KEY.to_string(), norm.to_json().to_string());
    }
    meta
}
