//! Adapters between tamer's names and other ecosystems' checkpoints.
//!
//! Each adapter is a pure function over `(name, tensor)` lists that returns the
//! converted list and human-readable notes; callers print the notes (a model
//! loader should say what it changed).
//!
//! - GPT: [`gpt2_hf_to_nanogpt`] (and back, [`nanogpt_to_gpt2_hf`]). Hugging
//!   Face GPT-2 stores `attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`
//!   as `Conv1D` weights, `[in, out]`; nanoGPT (and tamer) use `Linear`,
//!   `[out, in]`.
//! - ViT: timm's names are tamer's names. Fine-tuning at another image size or
//!   class count needs [`resample_pos_embed`] (PyTorch's bicubic
//!   interpolation, as timm's `resample_abs_pos_embed`) and [`reinit_head`];
//!   [`adapt_vit_checkpoint`] does both against a target model.

use crate::nn::Module;
use crate::{DType, Error, Result, Tensor, TensorRng};
use rand_distr::{Distribution, StandardNormal};

/// A converted tensor list and what was done to it.
#[derive(Clone, Default)]
pub struct Adapted {
    pub tensors: Vec<(String, Tensor)>,
    /// One line per change, for the caller to print.
    pub notes: Vec<String>,
}

impl std::fmt::Debug for Adapted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tensors.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Adapted").field("tensors", &names).field("notes", &self.notes).finish()
    }
}

/// The GPT-2 weights stored as `Conv1D` (`[in, out]`) by Hugging Face.
pub const GPT2_CONV1D_WEIGHTS: [&str; 4] = ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"];

fn is_conv1d_weight(name: &str) -> bool {
    GPT2_CONV1D_WEIGHTS.iter().any(|s| name.strip_suffix(s).is_some_and(|head| head.ends_with('.')))
}

fn transpose2(op: &'static str, name: &str, t: &Tensor) -> Result<Tensor> {
    if t.rank() != 2 {
        return Err(Error::shape(op, format!("{name}: a Conv1D weight must be 2-D, got shape {}", t.shape())));
    }
    t.t()?.contiguous()
}

/// Convert a Hugging Face GPT-2 checkpoint (`GPT2Model` or `GPT2LMHeadModel`
/// names) to nanoGPT's names and layout:
///
/// - the four `Conv1D` weights per block ([`GPT2_CONV1D_WEIGHTS`]) are
///   transposed from `[in, out]` to `Linear`'s `[out, in]`;
/// - the `h.{i}.attn.bias` / `h.{i}.attn.masked_bias` buffers (a causal mask
///   and a constant, not parameters) are dropped;
/// - names get the `transformer.` prefix when missing (`GPT2Model` files);
/// - `lm_head.weight`, when absent, is added as the tied `transformer.wte.weight`.
///
/// ```
/// use tamer::{checkpoint::interop::gpt2_hf_to_nanogpt, Tensor};
/// let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap(); // [in 2, out 3]
/// let a = gpt2_hf_to_nanogpt(vec![("h.0.mlp.c_fc.weight".to_string(), w)]).unwrap();
/// assert_eq!(a.tensors[0].0, "transformer.h.0.mlp.c_fc.weight");
/// assert_eq!(a.tensors[0].1.to_vec2::<f32>().unwrap(), vec![vec![1.0, 4.0], vec![2.0, 5.0], vec![3.0, 6.0]]);
/// ```
pub fn gpt2_hf_to_nanogpt(tensors: Vec<(String, Tensor)>) -> Result<Adapted> {
    const OP: &str = "gpt2_hf_to_nanogpt";
    let mut out = Adapted::default();
    let (mut transposed, mut dropped, mut prefixed) = (0, Vec::new(), 0);
    for (name, t) in tensors {
        if name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") {
            dropped.push(name);
            continue;
        }
        let name = if name.starts_with("transformer.") || name.starts_with("lm_head.") {
            name
        } else {
            prefixed += 1;
            format!("transformer.{name}")
        };
        let t = if is_conv1d_weight(&name) {
            transposed += 1;
            transpose2(OP, &name, &t)?
        } else {
            t
        };
        out.tensors.push((name, t));
    }
    if transposed > 0 {
        out.notes
            .push(format!("gpt2: transposed {transposed} Conv1D weights from [in, out] to Linear's [out, in]"));
    }
    if !dropped.is_empty() {
        out.notes
            .push(format!("gpt2: dropped {} attention-mask buffers ({}, ...)", dropped.len(), dropped[0]));
    }
    if prefixed > 0 {
        out.notes.push(format!("gpt2: added the \"transformer.\" prefix to {prefixed} names"));
    }
    let has_head = out.tensors.iter().any(|(n, _)| n == "lm_head.weight");
    if !has_head {
        if let Some((_, wte)) = out.tensors.iter().find(|(n, _)| n == "transformer.wte.weight") {
            let wte = wte.clone();
            out.tensors.push(("lm_head.weight".to_string(), wte));
            out.notes
                .push("gpt2: lm_head.weight tied to transformer.wte.weight (absent from the checkpoint)".to_string());
        }
    }
    Ok(out)
}

/// The inverse of [`gpt2_hf_to_nanogpt`] for export: transposes the `Conv1D`
/// weights back to `[in, out]` and keeps the names (`GPT2LMHeadModel` accepts
/// the `transformer.` prefix and `lm_head.weight`). The mask buffers are not
/// recreated; Hugging Face rebuilds them.
pub fn nanogpt_to_gpt2_hf(tensors: Vec<(String, Tensor)>) -> Result<Adapted> {
    const OP: &str = "nanogpt_to_gpt2_hf";
    let mut out = Adapted::default();
    let mut transposed = 0;
    for (name, t) in tensors {
        let t = if is_conv1d_weight(&name) {
            transposed += 1;
            transpose2(OP, &name, &t)?
        } else {
            t
        };
        out.tensors.push((name, t));
    }
    out.notes.push(format!("gpt2: transposed {transposed} Linear weights to Conv1D's [in, out]"));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Bicubic interpolation, as PyTorch's F.interpolate(mode="bicubic", align_corners=False)
// ---------------------------------------------------------------------------------------------

/// For each output index along one axis, the `(input index, weight)` taps.
type Taps = Vec<Vec<(usize, f64)>>;

/// Keys' cubic convolution kernel with parameter `a` (PyTorch: -0.75 plain, -0.5 antialiased).
fn cubic(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// PyTorch's `upsample_bicubic2d` along one axis: the source coordinate is
/// `scale·(i + 0.5) − 0.5` with `scale = in/out`, four taps at
/// `floor(x) − 1 ..= floor(x) + 2`, indices clamped to the edge, a = −0.75.
fn taps_plain(n_in: usize, n_out: usize) -> Taps {
    let scale = n_in as f64 / n_out as f64;
    let last = n_in as i64 - 1;
    (0..n_out)
        .map(|i| {
            let x = scale * (i as f64 + 0.5) - 0.5;
            let x0 = x.floor();
            let t = x - x0;
            let w = [cubic(t + 1.0, -0.75), cubic(t, -0.75), cubic(1.0 - t, -0.75), cubic(2.0 - t, -0.75)];
            (0..4).map(|k| (((x0 as i64) - 1 + k as i64).clamp(0, last) as usize, w[k])).collect()
        })
        .collect()
}

/// PyTorch's antialiased bicubic (`_upsample_bicubic2d_aa`, as PIL): the
/// kernel (a = −0.5) is stretched by `scale` when downsampling, taps cover
/// `center ± support` inside the input, and weights are normalised to sum to 1.
fn taps_antialias(n_in: usize, n_out: usize) -> Taps {
    let scale = n_in as f64 / n_out as f64;
    let (support, invscale) = if scale >= 1.0 { (2.0 * scale, 1.0 / scale) } else { (2.0, 1.0) };
    (0..n_out)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            // PyTorch truncates toward zero here (an int64 cast), then clamps.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(n_in as i64).max(lo as i64) as usize;
            let mut taps: Vec<(usize, f64)> = (lo..hi).map(|j| (j, cubic((j as f64 - center + 0.5) * invscale, -0.5))).collect();
            let total: f64 = taps.iter().map(|(_, w)| w).sum();
            if total != 0.0 {
                for (_, w) in taps.iter_mut() {
                    *w /= total;
                }
            }
            taps
        })
        .collect()
}

/// Resize `[N, C, H, W]` to `[N, C, out.0, out.1]` like PyTorch's
/// `F.interpolate(x, size=out, mode="bicubic", align_corners=False, antialias=...)`.
/// Computed in f64 and returned in `x`'s dtype; no gradient (a checkpoint tool).
///
/// ```
/// use tamer::{checkpoint::interop::interpolate_bicubic, Tensor};
/// let x = Tensor::from_vec(vec![0.0f32, 1.0, 2.0, 3.0], [1, 1, 2, 2]).unwrap();
/// let y = interpolate_bicubic(&x, (4, 4), false).unwrap();
/// assert_eq!(y.dims(), &[1, 1, 4, 4]);
/// // Same size is the identity.
/// assert_eq!(interpolate_bicubic(&x, (2, 2), false).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
/// ```
pub fn interpolate_bicubic(x: &Tensor, out: (usize, usize), antialias: bool) -> Result<Tensor> {
    const OP: &str = "interpolate_bicubic";
    let &[n, c, h, w] = x.dims() else {
        return Err(Error::shape(OP, format!("expected a [N, C, H, W] tensor, got shape {}", x.shape())));
    };
    if !x.dtype().is_float() {
        return Err(Error::dtype(OP, format!("expected a float tensor, got {}", x.dtype())));
    }
    if h == 0 || w == 0 || out.0 == 0 || out.1 == 0 {
        return Err(Error::value(OP, format!("input {h}×{w} and output {}×{} must be non-empty", out.0, out.1)));
    }
    let taps = if antialias { taps_antialias } else { taps_plain };
    let (ty, tx) = (taps(h, out.0), taps(w, out.1));
    let src = x.to_f64_vec()?;
    let (oh, ow) = out;
    let mut dst = vec![0.0f64; n * c * oh * ow];
    let mut rows = vec![0.0f64; h * ow];
    for (plane, o) in src.chunks_exact(h * w).zip(dst.chunks_exact_mut(oh * ow)) {
        // Horizontal pass: rows [h, ow], then vertical: [oh, ow].
        for r in 0..h {
            for (j, tj) in tx.iter().enumerate() {
                rows[r * ow + j] = tj.iter().map(|&(k, wt)| wt * plane[r * w + k]).sum();
            }
        }
        for (i, ti) in ty.iter().enumerate() {
            for j in 0..ow {
                o[i * ow + j] = ti.iter().map(|&(k, wt)| wt * rows[k * ow + j]).sum();
            }
        }
    }
    let y = Tensor::from_vec(dst, [n, c, oh, ow])?;
    if x.dtype() == DType::F64 {
        Ok(y)
    } else {
        y.to_dtype(x.dtype())
    }
}

/// How to resample a ViT position embedding (timm's `resample_abs_pos_embed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PosEmbedResize {
    /// The target patch grid (rows, cols).
    pub new_grid: (usize, usize),
    /// The checkpoint's grid; `None` means square (timm's assumption).
    pub old_grid: Option<(usize, usize)>,
    /// Leading tokens kept as they are (1 for a CLS token, 0 for none).
    pub num_prefix_tokens: usize,
    /// PyTorch's antialiased bicubic. timm's checkpoint filter passes `true`;
    /// [`resize_pos_embed`] uses `false` (plain `F.interpolate`).
    pub antialias: bool,
}

/// Resize a `[1, n_prefix + gh·gw, D]` position embedding with a square old
/// grid to `new_grid`, keeping the prefix (CLS) tokens, by plain bicubic
/// interpolation (`antialias=False`).
///
/// ```
/// use tamer::{checkpoint::interop::resize_pos_embed, DType, Tensor};
/// let pe = Tensor::randn([1, 1 + 4, 8], DType::F32, &mut tamer::rng(0)).unwrap();
/// let big = resize_pos_embed(&pe, (3, 3), 1).unwrap();
/// assert_eq!(big.dims(), &[1, 1 + 9, 8]);
/// ```
pub fn resize_pos_embed(pos_embed: &Tensor, new_grid: (usize, usize), num_prefix_tokens: usize) -> Result<Tensor> {
    resample_pos_embed(
        pos_embed,
        &PosEmbedResize {
            new_grid,
            old_grid: None,
            num_prefix_tokens,
            antialias: false,
        },
    )
}

/// Resize a `[1, prefix + gh·gw, D]` position embedding as timm's
/// `resample_abs_pos_embed` does: split off the prefix tokens, view the rest
/// as a `D`-channel `gh × gw` image, bicubic-resize it, flatten back, re-attach
/// the prefix. Same grid in and out returns the input.
pub fn resample_pos_embed(pos_embed: &Tensor, how: &PosEmbedResize) -> Result<Tensor> {
    const OP: &str = "resample_pos_embed";
    let &[1, tokens, d] = pos_embed.dims() else {
        return Err(Error::shape(
            OP,
            format!("expected a [1, tokens, dim] position embedding, got shape {}", pos_embed.shape()),
        ));
    };
    let npre = how.num_prefix_tokens;
    let grid_tokens = tokens
        .checked_sub(npre)
        .ok_or_else(|| Error::shape(OP, format!("{tokens} tokens cannot hold {npre} prefix tokens")))?;
    let old = match how.old_grid {
        Some(g) => g,
        None => {
            let s = (grid_tokens as f64).sqrt().round() as usize;
            (s, s)
        }
    };
    if old.0 * old.1 != grid_tokens {
        return Err(Error::shape(
            OP,
            format!(
                "pos_embed {} has {grid_tokens} grid tokens after {npre} prefix tokens, which is not a {}×{} grid{}",
                pos_embed.shape(),
                old.0,
                old.1,
                if how.old_grid.is_none() {
                    " (give old_grid for a non-square grid)"
                } else {
                    ""
                }
            ),
        ));
    }
    if old == how.new_grid {
        return Ok(pos_embed.clone());
    }
    let prefix = pos_embed.narrow(1, 0, npre)?;
    // [1, gh·gw, D] -> [1, D, gh, gw]
    let grid = pos_embed
        .narrow(1, npre, grid_tokens)?
        .reshape([old.0, old.1, d])?
        .permute(&[2, 0, 1])?
        .unsqueeze(0)?;
    let resized = interpolate_bicubic(&grid, how.new_grid, how.antialias)?;
    let (gh, gw) = how.new_grid;
    let tokens = resized.reshape([d, gh * gw])?.t()?.unsqueeze(0)?;
    let tokens = if tokens.dtype() == pos_embed.dtype() {
        tokens
    } else {
        tokens.to_dtype(pos_embed.dtype())?
    };
    Tensor::cat(&[prefix.detach(), tokens], 1)?.contiguous()
}

/// timm's default for `Linear` weights: a normal with std `std` truncated to `[-2, 2]`.
fn trunc_normal(dims: &[usize], std: f64, dtype: DType, rng: &mut TensorRng) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let z: f64 = StandardNormal.sample(rng);
        let x = z * std;
        if (-2.0..=2.0).contains(&x) {
            v.push(x);
        }
    }
    let t = Tensor::from_vec(v, dims.to_vec())?;
    if dtype == DType::F64 {
        Ok(t)
    } else {
        t.to_dtype(dtype)
    }
}

/// Replace checkpoint tensors under `head_prefix.` ("head" for timm ViTs)
/// whose shapes differ from `model`'s by a fresh initialisation of the model's
/// shape (weights: truncated normal, std 0.02 as timm; biases: zeros), so a
/// strict load then succeeds. Used when fine-tuning on another class count.
pub fn reinit_head(tensors: Vec<(String, Tensor)>, model: &dyn Module, head_prefix: &str, rng: &mut TensorRng) -> Result<Adapted> {
    let prefix = format!("{head_prefix}.");
    let shapes: Vec<(String, Vec<usize>, DType)> = model
        .named_params()
        .into_iter()
        .map(|(n, p)| {
            let t = p.tensor();
            (n, t.dims().to_vec(), t.dtype())
        })
        .collect();
    let mut out = Adapted::default();
    let mut changed = Vec::new();
    for (name, t) in tensors {
        let target = shapes.iter().find(|(n, _, _)| *n == name);
        match target {
            Some((_, dims, dtype)) if name.starts_with(&prefix) && dims.as_slice() != t.dims() => {
                let fresh = if name.ends_with("bias") {
                    Tensor::zeros(dims.clone(), *dtype)?
                } else {
                    trunc_normal(dims, 0.02, *dtype, rng)?
                };
                changed.push(format!("{name} {} -> {:?}", t.shape(), dims));
                out.tensors.push((name, fresh));
            }
            _ => out.tensors.push((name, t)),
        }
    }
    if !changed.is_empty() {
        out.notes.push(format!(
            "vit: classifier head re-initialised (the class count differs; weights trunc_normal std 0.02, biases 0): {}",
            changed.join(", ")
        ));
    }
    Ok(out)
}

/// Fit a timm-format ViT checkpoint to `model` for fine-tuning.
#[derive(Clone, Debug)]
pub struct VitAdapt {
    /// Prefix tokens in `pos_embed` (1 with a CLS token, 0 without).
    pub num_prefix_tokens: usize,
    /// The model's patch grid; `None` infers a square one from its `pos_embed`.
    pub grid: Option<(usize, usize)>,
    /// The checkpoint's patch grid; `None` assumes square.
    pub old_grid: Option<(usize, usize)>,
    /// See [`PosEmbedResize::antialias`]; timm's checkpoint loading uses true.
    pub antialias: bool,
    /// The classifier's name prefix ("head").
    pub head_prefix: String,
    /// Seed for the re-initialised head.
    pub seed: u64,
}

impl Default for VitAdapt {
    fn default() -> Self {
        VitAdapt {
            num_prefix_tokens: 1,
            grid: None,
            old_grid: None,
            antialias: false,
            head_prefix: "head".to_string(),
            seed: 0,
        }
    }
}

/// Resize `pos_embed` to `model`'s (when the token count or grid differs) and
/// re-initialise a classifier head of another class count (see
/// [`reinit_head`]); each change is one line in `notes`.
pub fn adapt_vit_checkpoint(tensors: Vec<(String, Tensor)>, model: &dyn Module, cfg: &VitAdapt) -> Result<Adapted> {
    const OP: &str = "adapt_vit_checkpoint";
    let target = model.named_params().into_iter().find(|(n, _)| n == "pos_embed").map(|(_, p)| p.dims());
    let mut notes = Vec::new();
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        match (&target, name.as_str()) {
            (Some(want), "pos_embed") if want.as_slice() != t.dims() || (cfg.old_grid.is_some() && cfg.grid.is_some() && cfg.grid != cfg.old_grid) => {
                let (Some(&wd), Some(&td)) = (want.last(), t.dims().last()) else {
                    return Err(Error::shape(OP, format!("pos_embed: model {want:?}, checkpoint {}", t.shape())));
                };
                if want.len() != 3 || wd != td {
                    return Err(Error::shape(
                        OP,
                        format!(
                            "pos_embed: model {want:?} and checkpoint {} differ in width or rank, which resizing cannot fix",
                            t.shape()
                        ),
                    ));
                }
                let new_grid = match cfg.grid {
                    Some(g) => g,
                    None => {
                        let n = want[1].saturating_sub(cfg.num_prefix_tokens);
                        let s = (n as f64).sqrt().round() as usize;
                        if s * s != n {
                            return Err(Error::shape(
                                OP,
                                format!("pos_embed: the model's {n} grid tokens are not square; set VitAdapt::grid"),
                            ));
                        }
                        (s, s)
                    }
                };
                let how = PosEmbedResize {
                    new_grid,
                    old_grid: cfg.old_grid,
                    num_prefix_tokens: cfg.num_prefix_tokens,
                    antialias: cfg.antialias,
                };
                let resized = resample_pos_embed(&t, &how)?;
                if resized.dims() != want.as_slice() {
                    return Err(Error::shape(
                        OP,
                        format!("pos_embed: resized to {} but the model has {want:?}", resized.shape()),
                    ));
                }
                notes.push(format!(
                    "vit: pos_embed interpolated from {} to {} tokens (grid {:?} -> {new_grid:?}, bicubic{})",
                    t.dims()[1],
                    want[1],
                    cfg.old_grid.map_or_else(|| "square".to_string(), |g| format!("{g:?}")),
                    if cfg.antialias { ", antialiased" } else { "" }
                ));
                out.push((name, resized));
            }
            _ => out.push((name, t)),
        }
    }
    let mut rng = crate::rng(cfg.seed);
    let mut adapted = reinit_head(out, model, &cfg.head_prefix, &mut rng)?;
    notes.append(&mut adapted.notes);
    adapted.notes = notes;
    Ok(adapted)
}
