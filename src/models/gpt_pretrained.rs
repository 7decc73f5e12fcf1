//! A GPT's configuration read back from a nanoGPT-format checkpoint.

use super::config::heads_agree;
use super::gpt::{Gpt, GptConfig};
use crate::checkpoint::{load_into, Checkpoint, FileHoldsModel, LoadOptions};
use crate::nn::Module;
use crate::{rng, Error, Result};

impl GptConfig {
    /// The configuration of a GPT checkpoint: from its `model_config`
    /// metadata when tamer wrote it ([`GptConfig::to_json`]; `n_head`, if
    /// given, must agree), else read off the shapes of the nanoGPT names:
    /// `transformer.wte.weight [V, C]` gives the vocabulary and width,
    /// `transformer.wpe.weight [T, C]` the context, the `transformer.h.{i}`
    /// the depth, `transformer.ln_f.bias` the biases, and an `lm_head.weight`
    /// equal to the token embedding (or none) the tying. The head count is not
    /// in the shapes: `n_head`, else the file's `n_head` metadata, else an
    /// error. Dropout, which is not in the shapes either, is then 0 (inference).
    ///
    /// ```
    /// use tamer::checkpoint::fixture;
    /// use tamer::models::GptConfig;
    /// let cfg = GptConfig::from_checkpoint(&fixture("gpt_tiny.safetensors").unwrap(), Some(2)).unwrap();
    /// assert_eq!((cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd), (11, 8, 2, 16));
    /// ```
    pub fn from_checkpoint(ckpt: &Checkpoint, n_head: Option<usize>) -> Result<GptConfig> {
        const OP: &str = "GptConfig::from_checkpoint";
        let bad = |what: String| Error::format(OP, format!("{}: {what}", ckpt.source));
        if let Some(cfg) = GptConfig::from_metadata(ckpt)? {
            heads_agree(OP, ckpt, n_head, "n_head", cfg.n_head)?;
            return Ok(cfg);
        }
        let [vocab_size, n_embd] = ckpt.dims_of("transformer.wte.weight", "[vocab_size, n_embd]")?;
        let [block_size, wpe_width] = ckpt.dims_of("transformer.wpe.weight", "[block_size, n_embd]")?;
        if wpe_width != n_embd {
            return Err(bad(format!(
                "transformer.wpe.weight [{block_size}, {wpe_width}] does not fit the token embedding's width {n_embd}"
            )));
        }
        let has = |name: &str| ckpt.names().contains(&name);
        let n_layer = (0..).take_while(|i| has(&format!("transformer.h.{i}.ln_1.weight"))).count();
        let n_head = match (n_head, ckpt.metadata.get("n_head")) {
            (Some(n), _) => n,
            (None, Some(s)) => s.parse().map_err(|_| bad(format!("metadata n_head {s:?} is not a whole number")))?,
            (None, None) => return Err(bad("the head count is not in the shapes and the metadata has no n_head: give n_head".into())),
        };
        let tie_weights = match ckpt.get("lm_head.weight") {
            Err(_) => true,
            Ok(head) => {
                let wte = ckpt.get("transformer.wte.weight")?;
                head.shape() == wte.shape() && head.to_f64_vec()? == wte.to_f64_vec()?
            }
        };
        Ok(GptConfig {
            vocab_size,
            block_size,
            n_layer,
            n_head,
            n_embd,
            dropout: 0.0,
            bias: has("transformer.ln_f.bias"),
            tie_weights,
        })
    }
}

impl Gpt {
    /// Rebuild a saved GPT (nanoGPT's names) for inference, in eval mode: the
    /// configuration as [`GptConfig::from_checkpoint`] reads it, then the
    /// weights, strictly (a training checkpoint's `optim.*` entries are
    /// skipped). Before the model is built the file must hold its large
    /// tensors with their shapes, so that a crafted file cannot make it
    /// allocate a model far larger than itself. The notes say where the
    /// configuration came from.
    ///
    /// ```
    /// use tamer::checkpoint::fixture;
    /// use tamer::models::Gpt;
    /// let (gpt, notes) = Gpt::from_checkpoint(fixture("gpt_tiny.safetensors").unwrap(), Some(2)).unwrap();
    /// assert_eq!(gpt.config.n_layer, 2);
    /// assert!(notes[0].contains("no model_config metadata"));
    /// ```
    pub fn from_checkpoint(ckpt: Checkpoint, n_head: Option<usize>) -> Result<(Gpt, Vec<String>)> {
        const OP: &str = "Gpt::from_checkpoint";
        let from_metadata = ckpt.metadata.contains_key(crate::checkpoint::MODEL_CONFIG_KEY);
        let config = GptConfig::from_checkpoint(&ckpt, n_head)?;
        let (c, v) = (config.n_embd, config.vocab_size);
        let file = FileHoldsModel::new(OP, &ckpt, &config);
        let (c3, c4) = (file.mul(c, 3)?, file.mul(c, 4)?);
        file.require("transformer.wte.weight", &[v, c])?;
        file.require("transformer.wpe.weight", &[config.block_size, c])?;
        for i in 0..config.n_layer {
            let h = format!("transformer.h.{i}");
            file.require(&format!("{h}.attn.c_attn.weight"), &[c3, c])?;
            file.require(&format!("{h}.attn.c_proj.weight"), &[c, c])?;
            file.require(&format!("{h}.mlp.c_fc.weight"), &[c4, c])?;
            file.require(&format!("{h}.mlp.c_proj.weight"), &[c, c4])?;
        }
        if !config.tie_weights {
            file.require("lm_head.weight", &[v, c])?;
        }
        let notes = vec![if from_metadata {
            format!("gpt: configuration from {}'s model_config metadata", ckpt.source)
        } else {
            format!(
                "gpt: {} has no model_config metadata: configuration read off the tensor shapes, {} heads",
                ckpt.source, config.n_head
            )
        }];
        let mut gpt = Gpt::new(config.clone(), &mut rng(0))?;
        gpt.set_training(false);
        let options = LoadOptions::strict().skip("optim.*");
        let options = if config.tie_weights { options.skip("lm_head.weight") } else { options };
        load_into(&gpt, ckpt, &options)?;
        Ok((gpt, notes))
    }
}
