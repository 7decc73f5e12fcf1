//! Model configurations as JSON, for the `model_config` metadata entry that
//! tamer writes into every checkpoint it saves.
//!
//! A checkpoint's shapes do not say everything: not the head count, not the
//! norm epsilon, not whether a block is pre- or post-LN. A file that carries
//! its configuration is rebuilt from it exactly, and every loader
//! ([`VitConfig::from_checkpoint`], [`GptConfig::from_checkpoint`], a
//! training resume, `--pretrained`) uses it instead of guessing. Every field
//! is written; reading refuses a missing or unknown field, naming it, rather
//! than filling in a default.
//!
//! ```json
//! {"architecture":"vit","img_size":[8,8],"patch_size":2,"in_chans":1,"num_classes":10,
//!  "embed_dim":64,"depth":2,"num_heads":4,"mlp_ratio":2.0,"pool":"mean","pos":"learned",
//!  "qkv_bias":true,"norm_eps":1e-6,"block":{"norm":"pre_ln","residual":true,...},"pos_drop_rate":0.0,
//!  "drop_rate":0.0,"stem":null}
//! ```

use super::gpt::GptConfig;
use super::hybrid::StemConfig;
use super::vit::{Pool, PosEmbed, VitConfig};
use crate::checkpoint::{Checkpoint, MODEL_CONFIG_KEY};
use crate::nn::{BlockConfig, NormPlacement};
use crate::{Error, Result};
use serde_json::{json, Map, Value};

const OP: &str = "model_config";

/// Reads the fields of one JSON object, each exactly once, with errors that
/// name the field's path (`model_config.block.norm`).
struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
    read: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn new(value: &'a Value, path: &str) -> Result<Fields<'a>> {
        let map = value
            .as_object()
            .ok_or_else(|| Error::format(OP, format!("{path} is not a JSON object: {value}")))?;
        Ok(Fields {
            path: path.to_string(),
            map,
            read: Vec::new(),
        })
    }
    fn bad(&self, key: &str, expected: &str) -> Error {
        match self.map.get(key) {
            Some(v) => Error::format(OP, format!("{}.{key} is {v}, expected {expected}", self.path)),
            None => Error::format(OP, format!("{} has no field {key:?} ({expected})", self.path)),
        }
    }
    fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        self.read.push(key);
        self.map.get(key)
    }
    fn usize(&mut self, key: &'static str) -> Result<usize> {
        self.value(key)
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| self.bad(key, "a whole number"))
    }
    fn f64(&mut self, key: &'static str) -> Result<f64> {
        self.value(key).and_then(Value::as_f64).ok_or_else(|| self.bad(key, "a number"))
    }
    fn bool(&mut self, key: &'static str) -> Result<bool> {
        self.value(key).and_then(Value::as_bool).ok_or_else(|| self.bad(key, "true or false"))
    }
    fn str(&mut self, key: &'static str) -> Result<&'a str> {
        self.value(key).and_then(Value::as_str).ok_or_else(|| self.bad(key, "a string"))
    }
    fn pair(&mut self, key: &'static str) -> Result<(usize, usize)> {
        let v = self.value(key).and_then(Value::as_array);
        match v.map(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>()) {
            Some(Some(p)) if p.len() == 2 => Ok((p[0] as usize, p[1] as usize)),
            _ => Err(self.bad(key, "a pair of whole numbers")),
        }
    }
    /// One of `choices` (`(name in the JSON, value)`).
    fn choice<T: Copy>(&mut self, key: &'static str, choices: &[(&str, T)]) -> Result<T> {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let s = self.str(key)?;
        choices
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| self.bad(key, &format!("one of {}", names.join(", "))))
    }
    /// An error if the object has fields nobody read (written by a newer
    /// version, or a typo): better refused than silently ignored.
    fn finish(self) -> Result<()> {
        let unknown: Vec<&str> = self.map.keys().map(String::as_str).filter(|k| !self.read.contains(k)).collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::format(OP, format!("{} has unknown field(s) {}", self.path, unknown.join(", "))))
        }
    }
}

const POOLS: [(&str, Pool); 2] = [("cls", Pool::Cls), ("mean", Pool::Mean)];
const POS: [(&str, PosEmbed); 2] = [("learned", PosEmbed::Learned), ("sincos", PosEmbed::SinCos)];
const NORMS: [(&str, NormPlacement); 2] = [("pre_ln", NormPlacement::PreLN), ("post_ln", NormPlacement::PostLN)];

fn name_of<T: PartialEq>(choices: &[(&'static str, T)], v: &T) -> &'static str {
    choices.iter().find(|(_, c)| c == v).map_or("?", |(n, _)| n)
}

/// The fields of a ViT's [`BlockConfig`] that the ViT's own fields replace
/// (`num_heads`, `mlp_ratio`, `norm_eps`): not written under `block`, so that
/// a file cannot disagree with itself. Files written before they were left
/// out have them there; they never had an effect and are read past.
const VIT_BLOCK_FIELDS_SET_ABOVE: [&str; 3] = ["n_head", "mlp_ratio", "norm_eps"];

/// A ViT block's structure as JSON: every field but those the ViT sets.
fn block_to_json(b: &BlockConfig) -> Value {
    // Destructured so that a new field is a compile error here, not a silent omission.
    let BlockConfig {
        norm,
        residual,
        mlp,
        residual_scale,
        drop_path,
        dropout,
        attn_dropout,
        mlp_hidden_dropout,
        causal,
        n_head: _,
        mlp_ratio: _,
        bias,
        norm_eps: _,
    } = b;
    json!({
        "norm": name_of(&NORMS, norm),
        "residual": residual,
        "mlp": mlp,
        "residual_scale": residual_scale,
        "drop_path": drop_path,
        "dropout": dropout,
        "attn_dropout": attn_dropout,
        "mlp_hidden_dropout": mlp_hidden_dropout,
        "causal": causal,
        "bias": bias,
    })
}

/// Parse [`block_to_json`]'s output into the block of a ViT with `n_head`
/// heads, `mlp_ratio` and `norm_eps`.
fn block_from_json(v: &Value, path: &str, n_head: usize, mlp_ratio: f64, norm_eps: f64) -> Result<BlockConfig> {
    let mut f = Fields::new(v, path)?;
    for legacy in VIT_BLOCK_FIELDS_SET_ABOVE {
        f.value(legacy);
    }
    let b = BlockConfig {
        norm: f.choice("norm", &NORMS)?,
        residual: f.bool("residual")?,
        mlp: f.bool("mlp")?,
        residual_scale: f.f64("residual_scale")?,
        drop_path: f.f64("drop_path")?,
        dropout: f.f64("dropout")?,
        attn_dropout: f.f64("attn_dropout")?,
        mlp_hidden_dropout: f.bool("mlp_hidden_dropout")?,
        causal: f.bool("causal")?,
        n_head,
        mlp_ratio,
        bias: f.bool("bias")?,
        norm_eps,
    };
    f.finish()?;
    Ok(b)
}

/// Check the `architecture` field of a model_config object.
fn check_architecture(v: &Value, want: &str) -> Result<()> {
    match v.get("architecture").and_then(Value::as_str) {
        Some(a) if a == want => Ok(()),
        Some(a) => Err(Error::format(OP, format!("the configuration is of a {a:?} model, expected {want:?}"))),
        None => Err(Error::format(OP, format!("the configuration has no \"architecture\" (expected {want:?})"))),
    }
}

/// The `model_config` entry of `ckpt`, parsed as JSON, if it has one.
fn metadata_json(ckpt: &Checkpoint) -> Result<Option<Value>> {
    ckpt.metadata
        .get(MODEL_CONFIG_KEY)
        .map(|s| serde_json::from_str(s).map_err(|e| Error::format(OP, format!("{}: metadata {MODEL_CONFIG_KEY:?} is not valid JSON ({e})", ckpt.source))))
        .transpose()
}

/// Prefix an error with the checkpoint it came from.
fn in_file(ckpt: &Checkpoint, e: Error) -> Error {
    Error::new(e.op, e.kind.clone(), format!("{}: metadata {}", ckpt.source, e.message))
}

impl VitConfig {
    /// This configuration as the JSON of a `model_config` metadata entry
    /// (every field, `"architecture": "vit"` first; `block` without the
    /// `n_head`, `mlp_ratio` and `norm_eps` that `num_heads`, `mlp_ratio` and
    /// `norm_eps` set).
    ///
    /// ```
    /// use tamer::models::VitConfig;
    /// let cfg = VitConfig::vit_digits();
    /// assert_eq!(VitConfig::from_json(&cfg.to_json()).unwrap(), cfg);
    /// ```
    pub fn to_json(&self) -> Value {
        let VitConfig {
            img_size,
            patch_size,
            in_chans,
            num_classes,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio,
            pool,
            pos,
            qkv_bias,
            norm_eps,
            block,
            pos_drop_rate,
            drop_rate,
            stem,
        } = self;
        json!({
            "architecture": "vit",
            "img_size": [img_size.0, img_size.1],
            "patch_size": patch_size,
            "in_chans": in_chans,
            "num_classes": num_classes,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
            "mlp_ratio": mlp_ratio,
            "pool": name_of(&POOLS, pool),
            "pos": name_of(&POS, pos),
            "qkv_bias": qkv_bias,
            "norm_eps": norm_eps,
            "block": block_to_json(block),
            "pos_drop_rate": pos_drop_rate,
            "drop_rate": drop_rate,
            "stem": stem.map(|s| json!({"channels": [s.channels.0, s.channels.1], "max_pool": s.max_pool})),
        })
    }

    /// Parse [`to_json`](Self::to_json)'s output; a missing, mistyped or
    /// unknown field is an error naming it. The block's `n_head`,
    /// `mlp_ratio` and `norm_eps` are the top-level fields (what the model
    /// uses: [`VitConfig::block_config`]); in files that still carry them
    /// under `block` those are read past.
    pub fn from_json(v: &Value) -> Result<VitConfig> {
        check_architecture(v, "vit")?;
        let mut f = Fields::new(v, OP)?;
        f.value("architecture");
        let stem = match f.value("stem") {
            None => return Err(f.bad("stem", "null or {\"channels\": [c1, c2], \"max_pool\": bool}")),
            Some(Value::Null) => None,
            Some(s) => {
                let mut sf = Fields::new(s, &format!("{OP}.stem"))?;
                let stem = StemConfig {
                    channels: sf.pair("channels")?,
                    max_pool: sf.bool("max_pool")?,
                };
                sf.finish()?;
                Some(stem)
            }
        };
        let (num_heads, mlp_ratio, norm_eps) = (f.usize("num_heads")?, f.f64("mlp_ratio")?, f.f64("norm_eps")?);
        let block = match f.value("block") {
            Some(b) => block_from_json(b, &format!("{OP}.block"), num_heads, mlp_ratio, norm_eps)?,
            None => return Err(f.bad("block", "an object")),
        };
        let cfg = VitConfig {
            img_size: f.pair("img_size")?,
            patch_size: f.usize("patch_size")?,
            in_chans: f.usize("in_chans")?,
            num_classes: f.usize("num_classes")?,
            embed_dim: f.usize("embed_dim")?,
            depth: f.usize("depth")?,
            num_heads,
            mlp_ratio,
            pool: f.choice("pool", &POOLS)?,
            pos: f.choice("pos", &POS)?,
            qkv_bias: f.bool("qkv_bias")?,
            norm_eps,
            block,
            pos_drop_rate: f.f64("pos_drop_rate")?,
            drop_rate: f.f64("drop_rate")?,
            stem,
        };
        f.finish()?;
        Ok(cfg)
    }

    /// The configuration stored in `ckpt`'s `model_config` metadata, if it
    /// has one (tamer writes it; timm's files have none).
    pub fn from_metadata(ckpt: &Checkpoint) -> Result<Option<VitConfig>> {
        match metadata_json(ckpt)? {
            Some(v) => VitConfig::from_json(&v).map(Some).map_err(|e| in_file(ckpt, e)),
            None => Ok(None),
        }
    }
}

impl GptConfig {
    /// This configuration as the JSON of a `model_config` metadata entry.
    ///
    /// ```
    /// use tamer::models::GptConfig;
    /// let cfg = GptConfig::gpt_small();
    /// assert_eq!(GptConfig::from_json(&cfg.to_json()).unwrap(), cfg);
    /// ```
    pub fn to_json(&self) -> Value {
        let GptConfig {
            vocab_size,
            block_size,
            n_layer,
            n_head,
            n_embd,
            dropout,
            bias,
            tie_weights,
        } = self;
        json!({
            "architecture": "gpt",
            "vocab_size": vocab_size,
            "block_size": block_size,
            "n_layer": n_layer,
            "n_head": n_head,
            "n_embd": n_embd,
            "dropout": dropout,
            "bias": bias,
            "tie_weights": tie_weights,
        })
    }

    /// Parse [`to_json`](Self::to_json)'s output; a missing, mistyped or
    /// unknown field is an error naming it.
    pub fn from_json(v: &Value) -> Result<GptConfig> {
        check_architecture(v, "gpt")?;
        let mut f = Fields::new(v, OP)?;
        f.value("architecture");
        let cfg = GptConfig {
            vocab_size: f.usize("vocab_size")?,
            block_size: f.usize("block_size")?,
            n_layer: f.usize("n_layer")?,
            n_head: f.usize("n_head")?,
            n_embd: f.usize("n_embd")?,
            dropout: f.f64("dropout")?,
            bias: f.bool("bias")?,
            tie_weights: f.bool("tie_weights")?,
        };
        f.finish()?;
        Ok(cfg)
    }

    /// The configuration stored in `ckpt`'s `model_config` metadata, if any.
    pub fn from_metadata(ckpt: &Checkpoint) -> Result<Option<GptConfig>> {
        match metadata_json(ckpt)? {
            Some(v) => GptConfig::from_json(&v).map(Some).map_err(|e| in_file(ckpt, e)),
            None => Ok(None),
        }
    }
}

/// A loader was asked for `asked` heads (a flag, an argument) of a model
/// whose file records `stored` in its model_config (as `field`): they must
/// agree, since the file's figure is what the weights were trained with.
pub(crate) fn heads_agree(op: &'static str, ckpt: &Checkpoint, asked: Option<usize>, field: &str, stored: usize) -> Result<()> {
    match asked {
        Some(h) if h != stored => Err(Error::format(
            op,
            format!(
                "{}: {h} heads were asked for but the file's model_config metadata says {field} {stored}",
                ckpt.source
            ),
        )),
        _ => Ok(()),
    }
}

/// A `model_config` entry as the current version writes it (a ViT's
/// configuration without the block fields older files repeated), so that
/// two entries describing one model compare equal; None for text that is
/// not a ViT or GPT configuration.
pub(crate) fn canonical_model_config(text: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(text).ok()?;
    match v.get("architecture")?.as_str()? {
        "vit" => VitConfig::from_json(&v).ok().map(|c| c.to_json()),
        "gpt" => GptConfig::from_json(&v).ok().map(|c| c.to_json()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_round_trips_and_bad_fields_are_named() {
        for cfg in [VitConfig::vit_tiny(), VitConfig::hybrid_mnist(), VitConfig::vit_cifar()] {
            let back = VitConfig::from_json(&serde_json::from_str(&cfg.to_json().to_string()).unwrap()).unwrap();
            assert_eq!(back, cfg);
        }
        let post = VitConfig {
            // The block's own copies agree with the ViT's fields (what it is built with).
            block: BlockConfig {
                mlp_ratio: 2.0,
                norm_eps: 1e-6,
                ..BlockConfig::post_ln(4)
            },
            pool: Pool::Mean,
            pos: PosEmbed::SinCos,
            ..VitConfig::vit_digits()
        };
        assert_eq!(VitConfig::from_json(&post.to_json()).unwrap(), post);
        let mut v = VitConfig::vit_tiny().to_json();
        v["block"].as_object_mut().unwrap().remove("norm");
        let e = VitConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("model_config.block has no field \"norm\""), "{e}");
        let mut v = VitConfig::vit_tiny().to_json();
        v["pool"] = json!("max");
        let e = VitConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("model_config.pool is \"max\", expected one of cls, mean"), "{e}");
        let mut v = VitConfig::vit_tiny().to_json();
        v["dtype"] = json!("f64");
        let e = VitConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("unknown field(s) dtype"), "{e}");
        let e = GptConfig::from_json(&VitConfig::vit_tiny().to_json()).unwrap_err().to_string();
        assert!(e.contains("\"vit\" model, expected \"gpt\""), "{e}");
        let e = VitConfig::from_json(&json!([1, 2])).unwrap_err().to_string();
        assert!(e.contains("architecture"), "{e}");
    }
}
