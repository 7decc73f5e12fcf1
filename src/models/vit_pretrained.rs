//! Transfer learning: load a timm-format ViT checkpoint into a model of
//! another class count, image size or pooling, saying what was changed.

use super::config::heads_agree;
use super::vit::{Pool, PosEmbed, VisionTransformer, VitConfig};
use crate::checkpoint::interop::{resample_pos_embed, PosEmbedResize};
use crate::checkpoint::{self, load_into, Checkpoint, FileHoldsModel, LoadOptions};
use crate::nn::init::{timm_trunc_normal_, zeros_};
use crate::tensor::Tensor;
use crate::{rng, Error, Result};
use std::path::{Path, PathBuf};

/// Where pretrained weights come from: a safetensors path, a read
/// [`Checkpoint`], or `(name, tensor)` pairs.
pub trait CheckpointSource {
    fn into_checkpoint(self) -> Result<Checkpoint>;
}

impl CheckpointSource for Checkpoint {
    fn into_checkpoint(self) -> Result<Checkpoint> {
        Ok(self)
    }
}
impl CheckpointSource for Vec<(String, Tensor)> {
    fn into_checkpoint(self) -> Result<Checkpoint> {
        Ok(Checkpoint::from_tensors("tensors", self))
    }
}
impl CheckpointSource for &Path {
    fn into_checkpoint(self) -> Result<Checkpoint> {
        checkpoint::read(self)
    }
}
impl CheckpointSource for PathBuf {
    fn into_checkpoint(self) -> Result<Checkpoint> {
        checkpoint::read(self)
    }
}
impl CheckpointSource for &PathBuf {
    fn into_checkpoint(self) -> Result<Checkpoint> {
        checkpoint::read(self)
    }
}
impl CheckpointSource for &str {
    fn into_checkpoint(self) -> Result<Checkpoint> {
        checkpoint::read(self)
    }
}
impl CheckpointSource for String {
    fn into_checkpoint(self) -> Result<Checkpoint> {
        checkpoint::read(self)
    }
}

/// How [`VisionTransformer::load_pretrained_with`] adapts a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PretrainedOptions {
    /// Resize `pos_embed` with PyTorch's antialiased bicubic, as timm's
    /// checkpoint filter does (default true); false is plain `F.interpolate`.
    pub antialias: bool,
    /// The checkpoint's patch grid; `None` assumes it is square (timm's assumption).
    pub old_grid: Option<(usize, usize)>,
    /// Missing and unexpected names are errors (default true).
    pub strict: bool,
    /// More names to leave at their initial values (globs, e.g. `"blocks.11.*"`).
    pub skip: Vec<String>,
    /// Seed of the model's initialisation (and so of a re-initialised head).
    pub seed: u64,
}

impl Default for PretrainedOptions {
    fn default() -> Self {
        PretrainedOptions {
            antialias: true,
            old_grid: None,
            strict: true,
            skip: Vec::new(),
            seed: 0,
        }
    }
}

const OP: &str = "VisionTransformer::load_pretrained";

impl VisionTransformer {
    /// Build a model for `config` and load timm-format weights into it for
    /// fine-tuning, with [`PretrainedOptions::default`]. Returns the model and
    /// one log line per adaptation (see [`load_pretrained_into`](Self::load_pretrained_into)).
    ///
    /// ```
    /// use tamer::checkpoint::fixture_path;
    /// use tamer::models::{VisionTransformer, VitConfig};
    /// // The timm fixture (8×8×1, patch 4, 10 classes) fine-tuned at 12×12 on 3 classes.
    /// let cfg = VitConfig { img_size: (12, 12), num_classes: 3, ..VitConfig::new((8, 8), 4, 1, 10, 16, 2, 2, 2.0) };
    /// let (vit, notes) = VisionTransformer::load_pretrained(fixture_path("vit_tiny.safetensors"), cfg).unwrap();
    /// assert_eq!(vit.pos_embed.dims(), vec![1, 1 + 9, 16]);
    /// assert!(notes.iter().any(|n| n.contains("pos_embed interpolated")));
    /// assert!(notes.iter().any(|n| n.contains("head re-initialised")));
    /// ```
    pub fn load_pretrained(source: impl CheckpointSource, config: VitConfig) -> Result<(VisionTransformer, Vec<String>)> {
        Self::load_pretrained_with(source, config, &PretrainedOptions::default())
    }

    /// [`load_pretrained`](Self::load_pretrained) with options.
    pub fn load_pretrained_with(source: impl CheckpointSource, config: VitConfig, options: &PretrainedOptions) -> Result<(VisionTransformer, Vec<String>)> {
        let model = VisionTransformer::new(config, &mut rng(options.seed))?;
        let notes = model.load_pretrained_into(source, options)?;
        Ok((model, notes))
    }

    /// Load a timm-format checkpoint into this model, adapting it first:
    ///
    /// - **head**: when the checkpoint's `head.weight` has another shape (class
    ///   count), `head.*` is skipped and the model's head re-initialised
    ///   (truncated normal std 0.02, bias 0, seeded by `options.seed`); a
    ///   checkpoint without a head, or a model without one, skips it too;
    /// - **pos_embed**: when the checkpoint's patch grid differs from the
    ///   model's (another image or patch-grid size), it is resampled as timm's
    ///   `resample_abs_pos_embed` (bicubic, prefix tokens kept);
    /// - **class token**: a class-token checkpoint loads into a `Pool::Mean`
    ///   model by dropping `cls_token` and its `pos_embed` row, and its final
    ///   `norm.*` becomes the model's `fc_norm.*` (timm's avg-pool layout);
    /// - **sine-cosine** models keep their fixed table (`pos_embed` skipped).
    ///
    /// Each adaptation is one line of the returned notes, and the last line
    /// says what [`load_into`] loaded. Every other mismatch (names, shapes,
    /// dtypes) is one error from [`load_into`], and the model is then unchanged.
    pub fn load_pretrained_into(&self, source: impl CheckpointSource, options: &PretrainedOptions) -> Result<Vec<String>> {
        let mut ckpt = source.into_checkpoint()?;
        let mut notes = Vec::new();
        // A file that records its configuration must agree where the weights depend on it:
        // the head count, for one, is in no shape.
        if let Some(saved) = VitConfig::from_metadata(&ckpt)? {
            let differences = weight_layout_differences(&saved, &self.config);
            if !differences.is_empty() {
                return Err(Error::value(
                    OP,
                    format!(
                        "{}: its model_config differs from this model's where the weights' meaning depends on it: {}",
                        ckpt.source,
                        differences.join("; ")
                    ),
                ));
            }
            notes.push(format!("vit: {}'s model_config agrees with the model's architecture", ckpt.source));
        }
        let mut load_opts = if options.strict { LoadOptions::strict() } else { LoadOptions::non_strict() };
        for pattern in &options.skip {
            load_opts = load_opts.skip(pattern.clone());
        }
        let has = |ckpt: &Checkpoint, name: &str| ckpt.tensors.iter().any(|(n, _)| n == name);

        // Class token and final norm.
        let ckpt_cls = has(&ckpt, "cls_token");
        if ckpt_cls && self.cls_token.is_none() {
            ckpt.remove("cls_token")?;
            let mut row_note = "";
            if let Some((_, pe)) = ckpt.tensors.iter_mut().find(|(n, _)| n == "pos_embed") {
                if pe.rank() == 3 && pe.dims()[1] > 1 {
                    *pe = pe.narrow(1, 1, pe.dims()[1] - 1)?;
                    row_note = " and pos_embed's class-token row";
                }
            }
            notes.push(format!("vit: dropped cls_token{row_note}: the model has no class token (Pool::Mean)"));
        } else if !ckpt_cls && self.cls_token.is_some() && has(&ckpt, "pos_embed") {
            return Err(Error::format(
                OP,
                format!(
                    "{}: the checkpoint has no cls_token (an avg-pool model?) but this model pools a class token; build it with Pool::Mean",
                    ckpt.source
                ),
            ));
        }
        if self.fc_norm.is_some() && !has(&ckpt, "fc_norm.weight") && has(&ckpt, "norm.weight") {
            for (n, _) in ckpt.tensors.iter_mut() {
                if let Some(rest) = n.strip_prefix("norm.") {
                    *n = format!("fc_norm.{rest}");
                }
            }
            notes.push("vit: the checkpoint's final norm.* loaded as fc_norm.* (applied after mean pooling, as timm's avg-pool models)".to_string());
        }

        // Position embedding.
        match self.config.pos {
            PosEmbed::SinCos => {
                if let Ok(pe) = ckpt.get("pos_embed") {
                    let ours = self.pos_embed.tensor();
                    let same = pe.shape() == ours.shape() && {
                        let (a, b) = (pe.to_f64_vec()?, ours.to_f64_vec()?);
                        a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-6)
                    };
                    if !same {
                        notes.push(format!(
                            "vit: the checkpoint's pos_embed {} ignored: the model keeps its fixed 2-D sin-cos table {}",
                            pe.shape(),
                            ours.shape()
                        ));
                    }
                    load_opts = load_opts.skip("pos_embed");
                }
            }
            PosEmbed::Learned => {
                let prefix = self.config.num_prefix_tokens();
                let grid = self.grid();
                let want = self.pos_embed.dims();
                if let Some((_, pe)) = ckpt.tensors.iter_mut().find(|(n, _)| n == "pos_embed") {
                    let regrid = options.old_grid.is_some_and(|g| g != grid);
                    if pe.dims() != want.as_slice() || regrid {
                        if pe.rank() != 3 || pe.dims()[2] != self.config.embed_dim {
                            return Err(Error::shape(
                                OP,
                                format!(
                                    "{}: pos_embed {} cannot be resized to the model's {want:?}: the width differs",
                                    ckpt.source,
                                    pe.shape()
                                ),
                            ));
                        }
                        let how = PosEmbedResize {
                            new_grid: grid,
                            old_grid: options.old_grid,
                            num_prefix_tokens: prefix,
                            antialias: options.antialias,
                        };
                        let resized = resample_pos_embed(pe, &how)?;
                        notes.push(format!(
                            "vit: pos_embed interpolated from {} to {} tokens (grid {} -> {}×{}, {prefix} prefix token(s) kept, bicubic{})",
                            pe.dims()[1],
                            resized.dims()[1],
                            options.old_grid.map_or_else(
                                || {
                                    let s = ((pe.dims()[1] - prefix.min(pe.dims()[1])) as f64).sqrt().round() as usize;
                                    format!("{s}×{s}")
                                },
                                |(h, w)| format!("{h}×{w}")
                            ),
                            grid.0,
                            grid.1,
                            if options.antialias { ", antialiased" } else { "" }
                        ));
                        *pe = resized;
                    }
                }
            }
        }

        // Classifier head.
        let ckpt_head = ckpt.get("head.weight").ok().map(|t| t.dims().to_vec());
        if let (Some(head), Some(dims)) = (&self.head, &ckpt_head) {
            // Another class count is adapted below; anything but [K, D] is a broken file.
            if dims.len() != 2 || dims[1] != head.weight.dims()[1] {
                return Err(Error::shape(
                    OP,
                    format!(
                        "{}: head.weight {dims:?} is not a classifier head [classes, {}] for this model's width",
                        ckpt.source,
                        head.weight.dims()[1]
                    ),
                ));
            }
        }
        let mut reinit_head = false;
        match (&self.head, ckpt_head) {
            (Some(head), Some(dims)) if dims != head.weight.dims() => {
                reinit_head = true;
                notes.push(format!(
                    "vit: head re-initialised for {} classes (the checkpoint's head.weight is {dims:?}, the model's {:?}; trunc_normal std 0.02, bias 0)",
                    head.out_features(),
                    head.weight.dims()
                ));
                load_opts = load_opts.skip("head.*");
            }
            (Some(_), None) => {
                notes.push("vit: the checkpoint has no head.weight: the model's head keeps its fresh initialisation".to_string());
                load_opts = load_opts.skip("head.*");
            }
            (None, Some(dims)) => {
                notes.push(format!("vit: the checkpoint's head {dims:?} dropped: the model has no head (num_classes 0)"));
                load_opts = load_opts.skip("head.*");
            }
            _ => {}
        }

        let source = ckpt.source.clone();
        let report = load_into(self, ckpt, &load_opts)?;
        // Only after a successful load, so that a failed one leaves the model as it was.
        if let (true, Some(head)) = (reinit_head, &self.head) {
            timm_trunc_normal_(&head.weight, 0.02, &mut rng(options.seed))?;
            if let Some(b) = &head.bias {
                zeros_(b)?;
            }
        }
        let mut line = format!("vit: loaded {} tensors from {source}", report.loaded.len());
        for (what, list) in [("skipped", &report.skipped), ("missing", &report.missing), ("unexpected", &report.unexpected)] {
            // load_into lists a skipped name once per side (checkpoint and model).
            let mut names: Vec<&str> = Vec::new();
            for n in list.iter() {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
            if !names.is_empty() {
                line.push_str(&format!("; {what}: {}", names.join(", ")));
            }
        }
        notes.push(line);
        Ok(notes)
    }
}

/// The fields of two configurations that differ where the weights' meaning
/// depends on them (what fine-tuning may change, the classes, image size,
/// pooling, position embedding and dropout rates, is left out).
fn weight_layout_differences(saved: &VitConfig, model: &VitConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what} {a} in the checkpoint, {b} in the model"));
        }
    };
    differ("patch_size", saved.patch_size.to_string(), model.patch_size.to_string());
    differ("in_chans", saved.in_chans.to_string(), model.in_chans.to_string());
    differ("embed_dim", saved.embed_dim.to_string(), model.embed_dim.to_string());
    differ("depth", saved.depth.to_string(), model.depth.to_string());
    differ("num_heads", saved.num_heads.to_string(), model.num_heads.to_string());
    differ("mlp_ratio", saved.mlp_ratio.to_string(), model.mlp_ratio.to_string());
    differ("qkv_bias", saved.qkv_bias.to_string(), model.qkv_bias.to_string());
    differ("norm_eps", saved.norm_eps.to_string(), model.norm_eps.to_string());
    differ("stem", format!("{:?}", saved.stem), format!("{:?}", model.stem));
    let (a, b) = (&saved.block, &model.block);
    differ("block.norm", format!("{:?}", a.norm), format!("{:?}", b.norm));
    differ("block.residual", a.residual.to_string(), b.residual.to_string());
    differ("block.mlp", a.mlp.to_string(), b.mlp.to_string());
    differ("block.residual_scale", a.residual_scale.to_string(), b.residual_scale.to_string());
    differ("block.causal", a.causal.to_string(), b.causal.to_string());
    differ("block.bias", a.bias.to_string(), b.bias.to_string());
    out
}

/// An error unless `ckpt` holds the large tensors of the model `config`
/// describes, with their shapes ([`FileHoldsModel`]): with them present the
/// model is no larger than the file.
fn check_file_holds_model(ckpt: &Checkpoint, config: &VitConfig) -> Result<()> {
    let file = FileHoldsModel::new(OP, ckpt, config);
    let d = config.embed_dim;
    let hidden = (d as f64 * config.mlp_ratio) as usize;
    let (gh, gw) = config.grid()?;
    let tokens = file.add(file.mul(gh, gw)?, config.num_prefix_tokens())?;
    let p = config.patch_size;
    file.require("patch_embed.proj.weight", &[d, config.stem.map_or(config.in_chans, |s| s.channels.1), p, p])?;
    file.require("pos_embed", &[1, tokens, d])?;
    if let Some(stem) = &config.stem {
        let (c1, c2) = stem.channels;
        file.require("patch_embed.backbone.conv1.weight", &[c1, config.in_chans, 3, 3])?;
        file.require("patch_embed.backbone.conv2.weight", &[c2, c1, 3, 3])?;
    }
    for i in 0..config.depth {
        file.require(&format!("blocks.{i}.attn.qkv.weight"), &[file.mul(3, d)?, d])?;
        file.require(&format!("blocks.{i}.attn.proj.weight"), &[d, d])?;
        if config.block.mlp {
            file.require(&format!("blocks.{i}.mlp.fc1.weight"), &[hidden, d])?;
            file.require(&format!("blocks.{i}.mlp.fc2.weight"), &[d, hidden])?;
        }
    }
    if config.num_classes > 0 {
        file.require("head.weight", &[config.num_classes, d])?;
    }
    Ok(())
}

impl VisionTransformer {
    /// Rebuild a saved model for inference: the configuration from the
    /// file's `model_config` metadata, or, for a file without it (timm's, or
    /// tamer's before it wrote one), from the shapes as
    /// [`VitConfig::from_checkpoint`] reads them; then the weights, strictly
    /// (a training checkpoint's `optim.*` entries are skipped). The notes say
    /// where the configuration came from and what was loaded.
    ///
    /// ```
    /// use tamer::checkpoint::fixture_path;
    /// use tamer::models::VisionTransformer;
    /// let (vit, notes) = VisionTransformer::from_checkpoint(fixture_path("vit_tiny.safetensors"), Some(2)).unwrap();
    /// assert_eq!(vit.config.num_heads, 2);
    /// assert!(notes[0].contains("no model_config metadata"), "{notes:?}");
    /// ```
    pub fn from_checkpoint(source: impl CheckpointSource, num_heads: Option<usize>) -> Result<(VisionTransformer, Vec<String>)> {
        let ckpt = source.into_checkpoint()?;
        let from_metadata = ckpt.metadata.contains_key(crate::checkpoint::MODEL_CONFIG_KEY);
        let config = VitConfig::from_checkpoint(&ckpt, num_heads)?;
        check_file_holds_model(&ckpt, &config)?;
        let mut notes = vec![if from_metadata {
            format!("vit: configuration from {}'s model_config metadata", ckpt.source)
        } else {
            format!(
                "vit: {} has no model_config metadata: configuration read off the tensor shapes, {} heads ({})",
                ckpt.source,
                config.num_heads,
                if num_heads.is_some() { "as given" } else { "assuming timm's 64-wide heads" }
            )
        }];
        let options = PretrainedOptions {
            skip: vec!["optim.*".into()],
            ..PretrainedOptions::default()
        };
        let model = VisionTransformer::new(config, &mut rng(0))?;
        notes.extend(model.load_pretrained_into(ckpt, &options)?);
        Ok((model, notes))
    }
}

impl VitConfig {
    /// The configuration of a ViT checkpoint. A file tamer wrote carries it
    /// in its `model_config` metadata ([`VitConfig::to_json`]), which is
    /// used as it is (`num_heads`, if given, must agree with it). A plain timm
    /// checkpoint has none, and the configuration is read off its tensor
    /// shapes: `patch_embed.proj.weight [D, C, p, p]` gives width, channels and
    /// patch; `cls_token` the pooling (`fc_norm.*` marks timm's avg pool);
    /// `pos_embed [1, n_prefix + N, D]` a square grid and so the image size;
    /// the `blocks.{i}` the depth; `mlp.fc1.weight [H, D]` the MLP ratio;
    /// `attn.qkv.bias` the qkv bias; `head.weight [K, D]` the classes (0
    /// without a head). The number of heads is not in the shapes: give it as
    /// `num_heads`, or `None` for timm's 64-wide heads (`D / 64`). `norm_eps` is timm's 1e-6.
    ///
    /// ```
    /// use tamer::checkpoint::fixture;
    /// use tamer::models::{Pool, VitConfig};
    /// let cfg = VitConfig::from_checkpoint(&fixture("vit_tiny.safetensors").unwrap(), Some(2)).unwrap();
    /// assert_eq!(cfg, VitConfig::new((8, 8), 4, 1, 10, 16, 2, 2, 2.0));
    /// let avg = VitConfig::from_checkpoint(&fixture("vit_tiny_avg.safetensors").unwrap(), Some(2)).unwrap();
    /// assert_eq!(avg.pool, Pool::Mean);
    /// ```
    pub fn from_checkpoint(ckpt: &Checkpoint, num_heads: Option<usize>) -> Result<VitConfig> {
        const OP: &str = "VitConfig::from_checkpoint";
        let bad = |what: String| Error::format(OP, format!("{}: {what}", ckpt.source));
        if let Some(cfg) = VitConfig::from_metadata(ckpt)? {
            heads_agree(OP, ckpt, num_heads, "num_heads", cfg.num_heads)?;
            return Ok(cfg);
        }
        if ckpt.names().iter().any(|n| n.starts_with("patch_embed.backbone.")) {
            return Err(bad(
                "a hybrid checkpoint (patch_embed.backbone.*): its stem is not in the shapes; build the VitConfig by hand".into(),
            ));
        }
        let [d, c, p, p2] = ckpt.dims_of("patch_embed.proj.weight", "[D, C, p, p]")?;
        if p != p2 {
            return Err(bad(format!("non-square patches {p}×{p2} are not supported")));
        }
        if d == 0 || c == 0 || p == 0 {
            return Err(bad(format!("patch_embed.proj.weight [{d}, {c}, {p}, {p2}] has a zero dimension")));
        }
        let has = |name: &str| ckpt.names().contains(&name);
        let pool = match (has("cls_token"), has("fc_norm.weight")) {
            (true, false) => Pool::Cls,
            (false, _) => Pool::Mean,
            (true, true) => {
                return Err(bad(
                    "a class token with fc_norm (global_pool='avg' with class_token=True) is not supported".into()
                ))
            }
        };
        let prefix = usize::from(pool == Pool::Cls);
        let [one, t, pd] = ckpt.dims_of("pos_embed", "[1, tokens, D]")?;
        if one != 1 {
            return Err(bad(format!("pos_embed must be [1, tokens, D], got [{one}, {t}, {pd}]")));
        }
        let n = t
            .checked_sub(prefix)
            .filter(|&n| pd == d && n > 0)
            .ok_or_else(|| bad(format!("pos_embed [1, {t}, {pd}] does not fit width {d} with {prefix} prefix token(s)")))?;
        let side = (n as f64).sqrt().round() as usize;
        if side.checked_mul(side) != Some(n) {
            return Err(bad(format!("pos_embed has {n} patch tokens, not a square grid")));
        }
        let img = side
            .checked_mul(p)
            .ok_or_else(|| bad(format!("a {side}×{side} grid of {p}-pixel patches is too large")))?;
        let depth = (0..).take_while(|i| has(&format!("blocks.{i}.norm1.weight"))).count();
        let [hidden, fc1_in] = ckpt.dims_of("blocks.0.mlp.fc1.weight", "[H, D]")?;
        if fc1_in != d {
            return Err(bad(format!("blocks.0.mlp.fc1.weight [{hidden}, {fc1_in}] does not fit width {d}")));
        }
        let num_classes = if has("head.weight") {
            match ckpt.dims_of("head.weight", "[K, D]")? {
                [k, hd] if hd == d => k,
                [k, hd] => return Err(bad(format!("head.weight [{k}, {hd}] does not fit width {d}"))),
            }
        } else {
            0
        };
        let num_heads = match num_heads {
            Some(h) => h,
            None if d.is_multiple_of(64) => d / 64,
            None => {
                return Err(bad(format!(
                    "the head count is not in the shapes, and timm's 64-wide heads do not divide width {d}: give num_heads"
                )))
            }
        };
        Ok(VitConfig {
            pool,
            qkv_bias: has("blocks.0.attn.qkv.bias"),
            ..VitConfig::new((img, img), p, c, num_classes, d, depth, num_heads, hidden as f64 / d as f64)
        })
    }
}
