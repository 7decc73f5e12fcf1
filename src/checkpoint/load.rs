//! Loading a checkpoint into a module: match names, check everything, then copy.

use super::Checkpoint;
use crate::nn::{name_matches, same_values, Module, Param};
use crate::{Error, Result, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

const OP: &str = "checkpoint::load_into";

type Rename = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How [`load_into`] matches a checkpoint to a module.
///
/// ```
/// use tamer::checkpoint::LoadOptions;
/// // Fine-tuning with a new classifier: keep the model's own head.
/// let opts = LoadOptions::default().skip("head.*");
/// // A checkpoint saved from a wrapper module whose names start with "model.".
/// let opts = opts.rename_prefix("model.", "");
/// assert!(opts.strict);
/// ```
#[derive(Clone)]
pub struct LoadOptions {
    /// Missing keys (in the module, not the checkpoint) and unexpected keys (in
    /// the checkpoint, not the module) are errors. Shape and dtype mismatches
    /// are errors either way. Default true.
    pub strict: bool,
    /// Glob patterns (see [`crate::nn::name_matches`]): names matching one are
    /// neither loaded nor required, on either side.
    pub skip: Vec<String>,
    rename: Option<Rename>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            strict: true,
            skip: Vec::new(),
            rename: None,
        }
    }
}

impl fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadOptions")
            .field("strict", &self.strict)
            .field("skip", &self.skip)
            .field("rename", &self.rename.is_some())
            .finish()
    }
}

impl LoadOptions {
    /// Strict loading (the default).
    pub fn strict() -> Self {
        Self::default()
    }
    /// Missing and unexpected keys are reported in the [`LoadReport`], not errors.
    pub fn non_strict() -> Self {
        LoadOptions {
            strict: false,
            ..Self::default()
        }
    }
    /// Ignore names matching `pattern` (a glob: `"head.*"`, `"*.attn.bias"`).
    pub fn skip(mut self, pattern: impl Into<String>) -> Self {
        self.skip.push(pattern.into());
        self
    }
    /// Map each checkpoint name to the module's name for it; `None` drops the
    /// tensor. Applied after any earlier rename, and before anything else
    /// (skip patterns may name either side; tied aliases are resolved on the
    /// renamed names).
    pub fn rename_with(mut self, f: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        self.rename = Some(match self.rename.take() {
            None => Arc::new(f),
            Some(prev) => Arc::new(move |n: &str| prev(n).and_then(|m| f(&m))),
        });
        self
    }
    /// Rename exact checkpoint names (`from → to`); other names pass unchanged.
    pub fn rename_map<K: Into<String>, V: Into<String>>(self, map: impl IntoIterator<Item = (K, V)>) -> Self {
        let map: HashMap<String, String> = map.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        self.rename_with(move |n| Some(map.get(n).cloned().unwrap_or_else(|| n.to_string())))
    }
    /// Replace a leading `from` with `to` in checkpoint names that start with it.
    pub fn rename_prefix(self, from: impl Into<String>, to: impl Into<String>) -> Self {
        let (from, to) = (from.into(), to.into());
        self.rename_with(move |n| Some(n.strip_prefix(from.as_str()).map_or_else(|| n.to_string(), |rest| format!("{to}{rest}"))))
    }

    fn renamed(&self, name: &str) -> Option<String> {
        match &self.rename {
            Some(f) => f(name),
            None => Some(name.to_string()),
        }
    }
    fn skipped(&self, name: &str) -> bool {
        self.skip.iter().any(|p| name_matches(p, name))
    }
}

/// What [`load_into`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Module names that received checkpoint values.
    pub loaded: Vec<String>,
    /// Module names with no checkpoint value (only when not strict).
    pub missing: Vec<String>,
    /// Checkpoint names the module does not have (only when not strict).
    pub unexpected: Vec<String>,
    /// Names ignored because of [`LoadOptions::skip`] (checkpoint and module side).
    pub skipped: Vec<String>,
    /// Checkpoint names the rename mapped to `None`.
    pub dropped: Vec<String>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loaded {} tensors", self.loaded.len())?;
        for (what, list) in [
            ("missing", &self.missing),
            ("unexpected", &self.unexpected),
            ("skipped", &self.skipped),
            ("dropped", &self.dropped),
        ] {
            if !list.is_empty() {
                write!(f, "; {what}: {}", list.join(", "))?;
            }
        }
        Ok(())
    }
}

/// Read `path` and load it into `module` (see [`load_into`]).
pub fn load_module(path: impl AsRef<Path>, module: &dyn Module, options: &LoadOptions) -> Result<LoadReport> {
    load_into(module, super::read(path)?, options)
}

/// Copy checkpoint tensors into `module`'s parameters and buffers by name.
///
/// Names are first renamed ([`LoadOptions::rename_prefix`] and co.), then
/// the module's tied aliases are resolved ([`Module::tied_aliases`]: an alias
/// loads into its canonical parameter, or, when both names are present, must
/// hold the same values), then skip patterns apply.
///
/// Every check runs before anything is written, and every problem found
/// (missing or unexpected keys when strict, shape mismatches, integer/float
/// dtype mismatches, dtypes tamer cannot hold, tied tensors that differ) is listed in one `Format` error;
/// on error the module is unchanged. Float values are converted to the
/// parameter's dtype, so f16 and bf16 checkpoints load into f32 models.
///
/// ```
/// use tamer::checkpoint::{load_into, LoadOptions};
/// use tamer::nn::{Module, Param};
/// use tamer::{DType, Tensor};
/// struct Lin { w: Param }
/// impl Module for Lin {
///     fn named_params(&self) -> Vec<(String, Param)> { vec![("weight".into(), self.w.clone())] }
///     fn set_training(&mut self, _: bool) {}
/// }
/// let m = Lin { w: Param::new(Tensor::zeros([2], DType::F32).unwrap()) };
/// let half = Tensor::from_vec(vec![1.5f32, -2.0], [2]).unwrap().to_dtype(DType::F16).unwrap();
/// load_into(&m, vec![("weight".to_string(), half)], &LoadOptions::default()).unwrap();
/// assert_eq!(m.w.tensor().to_vec::<f32>().unwrap(), vec![1.5, -2.0]);
///
/// let wrong = vec![("weight".to_string(), Tensor::zeros([3], DType::F32).unwrap()), ("bias".to_string(), Tensor::zeros([2], DType::F32).unwrap())];
/// let err = load_into(&m, wrong, &LoadOptions::default()).unwrap_err().to_string();
/// assert!(err.contains("weight: checkpoint [3], model [2]") && err.contains("unexpected") && err.contains("bias"));
/// ```
pub fn load_into(module: &dyn Module, checkpoint: impl Into<Checkpoint>, options: &LoadOptions) -> Result<LoadReport> {
    let ckpt: Checkpoint = checkpoint.into();
    let mut report = LoadReport::default();
    let targets: Vec<(String, Param)> = module.named_params().into_iter().chain(module.named_buffers()).collect();
    let by_name: BTreeMap<&str, &Param> = targets.iter().map(|(n, p)| (n.as_str(), p)).collect();

    let mut shape_problems = Vec::new();
    let mut dtype_problems = Vec::new();
    let mut tie_problems = Vec::new();
    let mut duplicates = Vec::new();
    let mut unexpected = Vec::new();
    // module name -> checkpoint name it came from
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    let mut plan: Vec<(&Param, Tensor)> = Vec::new();

    // Rename first, so that everything after sees the module's names: a
    // prefixed checkpoint (`_orig_mod.lm_head.weight` from torch.compile)
    // has its tied aliases only once the prefix is gone.
    let mut renamed: Vec<(String, String, Tensor)> = Vec::new(); // (module name, checkpoint name, value)
    for (ckpt_name, t) in &ckpt.tensors {
        match options.renamed(ckpt_name) {
            Some(name) => renamed.push((name, ckpt_name.clone(), t.clone())),
            None => report.dropped.push(ckpt_name.clone()),
        }
    }
    // A tied alias (lm_head.weight for a tied GPT) is the canonical tensor under a
    // second name: it loads into the canonical parameter when the checkpoint
    // lacks that name, and must hold the same values when it has it (a
    // checkpoint with an untied head cannot load into a tied model unnoticed).
    for (alias, canonical) in module.tied_aliases() {
        let Some(pos) = renamed.iter().position(|(n, _, _)| *n == alias) else {
            continue;
        };
        match renamed.iter().find(|(n, _, _)| *n == canonical) {
            None => renamed[pos].0 = canonical,
            Some((_, canonical_src, canonical_value)) => {
                let (_, alias_src, alias_value) = &renamed[pos];
                if !same_values(alias_value, canonical_value)? {
                    tie_problems.push(format!("{alias_src} differs from {canonical_src}, but the model ties {alias} to {canonical}"));
                }
                report.skipped.push(alias_src.clone());
                renamed.remove(pos);
            }
        }
    }

    let mut route = |name: String, ckpt_name: &str, report: &mut LoadReport| -> Option<String> {
        if options.skipped(&name) || options.skipped(ckpt_name) {
            report.skipped.push(ckpt_name.to_string());
            return None;
        }
        let label = if name == ckpt_name {
            name.clone()
        } else {
            format!("{name} (checkpoint {ckpt_name})")
        };
        if !by_name.contains_key(name.as_str()) {
            unexpected.push(label);
            return None;
        }
        if let Some(first) = sources.insert(name.clone(), ckpt_name.to_string()) {
            duplicates.push(format!("{name}: from both {first} and {ckpt_name}"));
            return None;
        }
        Some(name)
    };

    for (name, ckpt_name, t) in renamed {
        let Some(name) = route(name, &ckpt_name, &mut report) else { continue };
        let Some(param) = by_name.get(name.as_str()) else { continue };
        let want = param.tensor();
        if want.shape() != t.shape() {
            shape_problems.push(format!("{name}: checkpoint {}, model {}", t.shape(), want.shape()));
        } else if want.dtype().is_float() != t.dtype().is_float() {
            dtype_problems.push(format!("{name}: checkpoint {}, model {}", t.dtype(), want.dtype()));
        } else {
            plan.push((param, t));
        }
    }
    for u in &ckpt.unsupported {
        let Some(name) = options.renamed(&u.name) else {
            report.dropped.push(u.name.clone());
            continue;
        };
        if let Some(name) = route(name, &u.name, &mut report) {
            dtype_problems.push(format!("{name}: checkpoint dtype {} cannot be loaded ({})", u.dtype, u.reason));
        }
    }
    let mut missing = Vec::new();
    for (name, _) in &targets {
        if sources.contains_key(name) {
            continue;
        }
        if options.skipped(name) {
            report.skipped.push(name.clone());
        } else {
            missing.push(name.clone());
        }
    }

    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    if options.strict && !missing.is_empty() {
        sections.push(("missing (in the model, not in the checkpoint)".into(), missing.clone()));
    }
    if options.strict && !unexpected.is_empty() {
        sections.push(("unexpected (in the checkpoint, not in the model)".into(), unexpected.clone()));
    }
    if !shape_problems.is_empty() {
        sections.push(("shape mismatch".into(), shape_problems));
    }
    if !dtype_problems.is_empty() {
        sections.push(("dtype mismatch".into(), dtype_problems));
    }
    if !duplicates.is_empty() {
        sections.push(("loaded twice after renaming".into(), duplicates));
    }
    if !tie_problems.is_empty() {
        sections.push(("tied weights that differ".into(), tie_problems));
    }
    if !sections.is_empty() {
        let count: usize = sections.iter().map(|(_, l)| l.len()).sum();
        let mut msg = format!(
            "{}: {count} problem(s) loading {} checkpoint tensors into a model with {} ({}); nothing was loaded:",
            ckpt.source,
            ckpt.tensors.len() + ckpt.unsupported.len(),
            targets.len(),
            if options.strict { "strict" } else { "non-strict" }
        );
        for (title, list) in &sections {
            msg.push_str(&format!("\n  {title} [{}]:", list.len()));
            for item in list {
                msg.push_str(&format!("\n    {item}"));
            }
        }
        msg.push_str("\n  (LoadOptions: skip(\"glob\") ignores names, rename_* maps names, non_strict() allows missing/unexpected keys)");
        return Err(Error::format(OP, msg));
    }

    for (param, t) in plan {
        param.set(&t)?;
    }
    report.loaded = sources.into_keys().collect();
    report.missing = missing;
    report.unexpected = unexpected;
    Ok(report)
}
