//! A GPT's configuration read back from a nanoGPT-format checkpoint.

use super::gpt::GptConfig;
use crate::checkpoint::Checkpoint;
use crate::{Error, Result};

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
            return match n_head {
                Some(h) if h != cfg.n_head => Err(bad(format!(
                    "{h} heads were asked for but the file's model_config metadata says n_head {}",
                    cfg.n_head
                ))),
                _ => Ok(cfg),
            };
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
            (None, None) => return Err(bad("the head count is not in the shapes and the metadata has no n_head: pass it".into())),
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
