//! Checkpoints: safetensors files with PyTorch-compatible names.
//!
//! - [`save`] / [`save_module`] write tensors (f32, f64, f16, bf16, i64)
//!   atomically; [`load`] / [`read`] read them back and turn every corrupt
//!   file into an `Err` (kind `Format` or `Io`) naming the file and the fault.
//! - [`load_into`] / [`load_module`] copy a checkpoint into a module's
//!   parameters and buffers by name, checking names, shapes and dtypes first
//!   and reporting every mismatch in one error; [`LoadOptions`] relaxes
//!   strictness, skips names by glob and renames keys for interop.
//! - [`interop`] converts other layouts: Hugging Face GPT-2 to nanoGPT
//!   names, and timm ViT fine-tuning fixes (position-embedding resizing with
//!   PyTorch's bicubic interpolation, classifier-head re-initialisation).
//!
//! ```
//! use tamer::{checkpoint, Tensor};
//! let path = std::env::temp_dir().join(format!("tamer-doc-ckpt-{}.safetensors", std::process::id()));
//! let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).unwrap();
//! checkpoint::save(&path, &[("layer.weight".to_string(), w)]).unwrap();
//! let ckpt = checkpoint::read(&path).unwrap();
//! assert_eq!(ckpt.get("layer.weight").unwrap().dims(), &[2, 2]);
//! assert!(ckpt.get("layer.bias").unwrap_err().to_string().contains("layer.weight"));
//! std::fs::remove_file(&path).unwrap();
//! ```

pub mod interop;
mod io;
mod load;
mod meta;

pub use io::{deserialize, load, module_tensors, read, remove_stale_temp_files, save, save_module, save_with_metadata, serialize};
pub use load::{load_into, load_module, LoadOptions, LoadReport};
pub(crate) use meta::FileHoldsModel;
pub use meta::{model_metadata, InputNormalization, INPUT_NORMALIZATION_KEY, MODEL_CONFIG_KEY};

use crate::{DType, Error, Result, Tensor};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The content of a safetensors file.
#[derive(Clone, Default)]
pub struct Checkpoint {
    /// Where it came from (a path), for error messages.
    pub source: String,
    /// Tensors in file order.
    pub tensors: Vec<(String, Tensor)>,
    /// Tensors whose dtype tamer cannot hold; loading them into a module is an
    /// error unless they are skipped.
    pub unsupported: Vec<Unsupported>,
    /// The header's `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
}

/// A tensor [`read`] found but could not convert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    pub name: String,
    /// The safetensors dtype name ("F8_E4M3", "C64" ...).
    pub dtype: String,
    pub shape: Vec<usize>,
    pub reason: String,
}

impl Checkpoint {
    /// Wrap in-memory tensors (e.g. the output of an [`interop`] adapter).
    pub fn from_tensors(source: impl Into<String>, tensors: Vec<(String, Tensor)>) -> Checkpoint {
        Checkpoint {
            source: source.into(),
            tensors,
            ..Checkpoint::default()
        }
    }

    /// The tensor called `name`; the error lists the names there are.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or_else(|| self.not_found(name))
    }

    /// The tensor called `name`, converted to f32 (fixtures compare in f32).
    pub fn get_f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.get(name)?;
        if t.dtype() == DType::F32 {
            t.to_vec::<f32>()
        } else {
            t.to_dtype(DType::F32)?.to_vec::<f32>()
        }
    }

    /// Compare `actual` with the stored tensor `name` elementwise:
    /// `|a − e| ≤ rtol·|e| + atol` everywhere, the shapes equal. The error
    /// names the worst element (for interop tests against PyTorch fixtures).
    ///
    /// ```
    /// use tamer::{checkpoint::Checkpoint, Tensor};
    /// let ckpt = Checkpoint::from_tensors("ref", vec![("y".into(), Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap())]);
    /// ckpt.check_close("y", &Tensor::from_vec(vec![1.00001f32, 2.0], [2]).unwrap(), 1e-4, 0.0).unwrap();
    /// assert!(ckpt.check_close("y", &Tensor::from_vec(vec![1.1f32, 2.0], [2]).unwrap(), 1e-4, 0.0).is_err());
    /// ```
    pub fn check_close(&self, name: &str, actual: &Tensor, rtol: f64, atol: f64) -> Result<()> {
        const OP: &str = "Checkpoint::check_close";
        let expected = self.get(name)?;
        if expected.shape() != actual.shape() {
            return Err(Error::shape(
                OP,
                format!("{}: {name}: expected shape {}, got {}", self.source, expected.shape(), actual.shape()),
            ));
        }
        let (e, a) = (expected.to_f64_vec()?, actual.to_f64_vec()?);
        let mut worst: Option<(usize, f64)> = None;
        for (i, (&e, &a)) in e.iter().zip(&a).enumerate() {
            let excess = (a - e).abs() - (rtol * e.abs() + atol);
            // NaN anywhere fails: `within` is false for it.
            let within = excess <= 0.0;
            if !within && worst.is_none_or(|(_, w)| excess > w || excess.is_nan()) {
                worst = Some((i, excess));
            }
        }
        match worst {
            None => Ok(()),
            Some((i, _)) => Err(Error::value(
                OP,
                format!(
                    "{}: {name} {}: element {i} is {} but the reference is {} (|diff| {:.3e}, allowed rtol {rtol:e}·|ref| + atol {atol:e})",
                    self.source,
                    expected.shape(),
                    a[i],
                    e[i],
                    (a[i] - e[i]).abs()
                ),
            )),
        }
    }

    /// Take the tensor called `name` out.
    pub fn remove(&mut self, name: &str) -> Result<Tensor> {
        match self.tensors.iter().position(|(n, _)| n == name) {
            Some(i) => Ok(self.tensors.remove(i).1),
            None => Err(self.not_found(name)),
        }
    }

    pub fn names(&self) -> Vec<&str> {
        self.tensors.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Convert every floating-point tensor to `dtype` (integer tensors stay
    /// i64). `to_floats(DType::F32)` turns f16/bf16 weights into f32.
    pub fn to_floats(mut self, dtype: DType) -> Result<Checkpoint> {
        if !dtype.is_float() {
            return Err(Error::dtype("Checkpoint::to_floats", format!("target dtype {dtype} is not a float type")));
        }
        for (_, t) in self.tensors.iter_mut() {
            if t.dtype().is_float() && t.dtype() != dtype {
                *t = t.to_dtype(dtype)?;
            }
        }
        Ok(self)
    }

    /// The tensors as a map by name.
    pub fn into_map(self) -> BTreeMap<String, Tensor> {
        self.tensors.into_iter().collect()
    }

    fn not_found(&self, name: &str) -> Error {
        let mut names: Vec<&str> = self.names();
        names.sort_unstable();
        Error::value(
            "Checkpoint::get",
            format!("{}: no tensor named {name:?}; it has {}: {}", self.source, names.len(), names.join(", ")),
        )
    }
}

impl From<Vec<(String, Tensor)>> for Checkpoint {
    fn from(tensors: Vec<(String, Tensor)>) -> Self {
        Checkpoint::from_tensors("tensors", tensors)
    }
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tensors: Vec<String> = self.tensors.iter().map(|(n, t)| format!("{n}: {} {}", t.dtype(), t.shape())).collect();
        f.debug_struct("Checkpoint")
            .field("source", &self.source)
            .field("tensors", &tensors)
            .field("unsupported", &self.unsupported)
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// The path of a committed test fixture: `tests/fixtures/<name>` in this
/// crate's source tree (made by `scripts/make_fixtures.py`).
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures").join(name)
}

/// Read a committed fixture (see [`fixture_path`]); e.g. `fixture("vit_tiny_io.safetensors")?.get("logits")`.
pub fn fixture(name: &str) -> Result<Checkpoint> {
    read(fixture_path(name))
}
