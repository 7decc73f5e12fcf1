//! GPT: a decoder-only language model in nanoGPT's shape and naming.
//!
//! ```text
//! idx [B, T] (i64) → wte(idx) + wpe(0..T) → dropout      [B, T, C]
//!   → h.0 .. h.{L−1}  (pre-LN causal blocks)             [B, T, C]
//!   → ln_f → lm_head                                     [B, T, V]
//! ```
//!
//! Parameter names are nanoGPT's (`transformer.wte.weight`,
//! `transformer.h.{i}.attn.c_attn.weight`, ...). The blocks are
//! [`TransformerBlock`]s (pre-LN, causal, MLP 4×) whose timm names are mapped to
//! nanoGPT's by [`gpt_block_name`]: `norm1 → ln_1`, `attn.qkv → attn.c_attn`,
//! `attn.proj → attn.c_proj`, `norm2 → ln_2`, `mlp.fc1 → mlp.c_fc`,
//! `mlp.fc2 → mlp.c_proj`.
//!
//! Weight tying: with `tie_weights`, `lm_head.weight` and
//! `transformer.wte.weight` are one [`Param`]. [`Module::named_params`] lists it
//! once, as `transformer.wte.weight` (as PyTorch's `named_parameters()` does, so
//! parameter counts and optimizers see it once); nanoGPT's `state_dict()` has
//! both keys, and [`Module::tied_aliases`] names the second so a checkpoint writer
//! can emit it.

use super::sampling::sample_token;
use crate::nn::init::gpt2_init;
use crate::nn::{adopt_weights, converted, prefixed, BlockConfig, Dropout, Embedding, KvCache, LayerNorm, Linear, Module, Param, TransformerBlock};
use crate::ops::nn::cross_entropy::CrossEntropyOptions;
use crate::tensor::Tensor;
use crate::types::DType;
use crate::{no_grad, Error, Result};
use rand::Rng;

/// nanoGPT's `GPTConfig`.
#[derive(Clone, Debug, PartialEq)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Context length: the longest sequence the model accepts (rows of `wpe`).
    pub block_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    /// Dropout after the embeddings, on the attention probabilities, and after each residual branch.
    pub dropout: f64,
    /// Biases in the linear layers and layer norms.
    pub bias: bool,
    /// Share the token embedding with the output projection (nanoGPT always does).
    pub tie_weights: bool,
}

impl GptConfig {
    /// gpt-tiny: vocab 65 (characters), context 64, 4 layers, 4 heads, width 128,
    /// MLP 512 (4×), biases, tied embeddings, no dropout. 809,856 parameters.
    ///
    /// Shapes: idx `[B, 64]` → logits `[B, 64, 65]`; per block `c_attn [384, 128]`,
    /// `attn.c_proj [128, 128]`, `c_fc [512, 128]`, `mlp.c_proj [128, 512]`; the
    /// issue's training batch is 32.
    pub fn gpt_tiny() -> Self {
        GptConfig {
            vocab_size: 65,
            block_size: 64,
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            dropout: 0.0,
            bias: true,
            tie_weights: true,
        }
    }
    /// gpt-small: nanoGPT's `train_shakespeare_char` (context 256, 6 layers,
    /// 6 heads of 64, width 384, MLP 1536, vocab 65, dropout 0.2, no biases as in
    /// nanoGPT's `train.py` default, tied embeddings). 10,745,088 parameters
    /// (nanoGPT prints 10.65M: it leaves out `wpe`'s 98,304).
    ///
    /// Shapes: idx `[B, 256]` → logits `[B, 256, 65]`; per block `c_attn [1152, 384]`,
    /// `c_fc [1536, 384]`, `mlp.c_proj [384, 1536]`.
    pub fn gpt_small() -> Self {
        GptConfig {
            vocab_size: 65,
            block_size: 256,
            n_layer: 6,
            n_head: 6,
            n_embd: 384,
            dropout: 0.2,
            bias: false,
            tie_weights: true,
        }
    }

    /// GPT-2 small's shape (124M): vocab 50,304 (GPT-2's 50,257 padded to a
    /// multiple of 64, as nanoGPT and llm.c do), context 1024, 12 layers, 12
    /// heads of 64, width 768, MLP 3072, biases, tied embeddings, no dropout.
    /// 124,475,904 parameters.
    ///
    /// ```
    /// use tamer::models::GptConfig;
    /// assert_eq!(GptConfig::gpt2().num_params_closed_form(), 124_475_904);
    /// ```
    pub fn gpt2() -> Self {
        GptConfig {
            vocab_size: 50_304,
            block_size: 1024,
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            dropout: 0.0,
            bias: true,
            tie_weights: true,
        }
    }

    /// The parameter count in closed form (every parameter once, `wpe` included):
    /// per layer `12C²` of weights plus `13C` of biases and norm shifts (`2C` of
    /// norm scales without biases), then `V·C + T·C` of embeddings, the final
    /// norm, and `V·C` more when the head is not tied.
    pub fn num_params_closed_form(&self) -> usize {
        let (c, v, t, l) = (self.n_embd, self.vocab_size, self.block_size, self.n_layer);
        let per_layer = 12 * c * c + if self.bias { 13 * c } else { 2 * c };
        let ln_f = if self.bias { 2 * c } else { c };
        let head = if self.tie_weights { 0 } else { v * c };
        l * per_layer + v * c + t * c + ln_f + head
    }

    fn validate(&self) -> Result<()> {
        let c = self;
        if c.vocab_size == 0 || c.block_size == 0 || c.n_layer == 0 || c.n_head == 0 || c.n_embd == 0 {
            return Err(Error::value("Gpt", format!("every size in the config must be positive: {c:?}")));
        }
        if !c.n_embd.is_multiple_of(c.n_head) {
            return Err(Error::value("Gpt", format!("n_embd {} must be a multiple of n_head {}", c.n_embd, c.n_head)));
        }
        Ok(())
    }

    fn block_config(&self) -> BlockConfig {
        BlockConfig::gpt(self.n_head, self.dropout, self.bias)
    }
}

/// nanoGPT's name for a parameter of a [`TransformerBlock`] (timm names).
pub fn gpt_block_name(timm_name: &str) -> String {
    const MAP: [(&str, &str); 6] = [
        ("norm1.", "ln_1."),
        ("norm2.", "ln_2."),
        ("attn.qkv.", "attn.c_attn."),
        ("attn.proj.", "attn.c_proj."),
        ("mlp.fc1.", "mlp.c_fc."),
        ("mlp.fc2.", "mlp.c_proj."),
    ];
    for (from, to) in MAP {
        if let Some(rest) = timm_name.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    timm_name.to_string()
}

/// Per-layer KV caches for [`Gpt::forward_with_cache`].
#[derive(Clone, Default)]
pub struct GptCache {
    layers: Vec<KvCache>,
}

impl GptCache {
    /// Number of cached positions (the position of the next token).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, KvCache::len)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(KvCache::clear);
    }
}

/// The GPT language model. See the module docs for the structure and names.
///
/// ```
/// use tamer::models::{Gpt, GptConfig};
/// use tamer::nn::Module;
/// use tamer::{rng, Tensor};
/// let cfg = GptConfig { vocab_size: 11, block_size: 8, n_layer: 2, n_head: 2, n_embd: 16, ..GptConfig::gpt_tiny() };
/// let gpt = Gpt::new(cfg.clone(), &mut rng(0)).unwrap();
/// assert_eq!(gpt.num_params(), cfg.num_params_closed_form());
/// let idx = Tensor::from_vec(vec![1i64, 2, 3, 4, 5, 6], [2, 3]).unwrap();
/// let targets = Tensor::from_vec(vec![2i64, 3, 4, 5, 6, 7], [2, 3]).unwrap();
/// let (logits, loss) = gpt.forward(&idx, Some(&targets)).unwrap();
/// assert_eq!(logits.dims(), &[2, 3, 11]);
/// assert!((loss.unwrap().to_scalar().unwrap() - 11f64.ln()).abs() < 0.1); // near-uniform at init
/// let out = gpt.generate(&idx, 4, 0.0, None, &mut rng(1)).unwrap();
/// assert_eq!(out.dims(), &[2, 7]);
/// ```
pub struct Gpt {
    pub config: GptConfig,
    pub wte: Embedding,
    pub wpe: Embedding,
    pub drop: Dropout,
    pub h: Vec<TransformerBlock>,
    pub ln_f: LayerNorm,
    pub lm_head: Linear,
}

impl Gpt {
    /// An f32 model initialised as nanoGPT: every linear weight and embedding
    /// `N(0, 0.02²)`, the residual projections (`attn.c_proj`, `mlp.c_proj`)
    /// `N(0, (0.02/√(2·n_layer))²)`, biases zero, layer norms (1, 0).
    pub fn new(config: GptConfig, rng: &mut impl Rng) -> Result<Gpt> {
        config.validate()?;
        let c = config.n_embd;
        let wte = Embedding::new(config.vocab_size, c, rng)?;
        let wpe = Embedding::new(config.block_size, c, rng)?;
        let block_cfg = config.block_config();
        let h = (0..config.n_layer)
            .map(|_| TransformerBlock::new(c, &block_cfg, rng))
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if config.tie_weights {
            Linear {
                weight: wte.weight.clone(),
                bias: None,
            }
        } else {
            Linear::new(c, config.vocab_size, false, rng)?
        };
        let gpt = Gpt {
            drop: Dropout::new(config.dropout, rng.next_u64())?,
            ln_f: LayerNorm::new(c, 1e-5, config.bias)?,
            wte,
            wpe,
            h,
            lm_head,
            config,
        };
        gpt2_init(&gpt, gpt.config.n_layer, &["*c_proj.weight"], rng)?;
        Ok(gpt)
    }

    /// [`new`](Self::new) in `dtype` (any float dtype; the CPU computes in
    /// f32 and f64): the same draws, converted, so an f64 model's logits are
    /// the f32 model's to f32 rounding. For gradient checks and f64 references.
    ///
    /// ```
    /// use tamer::models::{Gpt, GptConfig};
    /// use tamer::{rng, DType, Tensor};
    /// let cfg = GptConfig { vocab_size: 11, block_size: 8, n_layer: 1, n_head: 2, n_embd: 8, ..GptConfig::gpt_tiny() };
    /// let gpt = Gpt::with_dtype(cfg, DType::F64, &mut rng(0)).unwrap();
    /// let idx = Tensor::from_vec(vec![1i64, 2, 3], [1, 3]).unwrap();
    /// assert_eq!(gpt.forward(&idx, None).unwrap().0.dtype(), DType::F64);
    /// ```
    pub fn with_dtype(config: GptConfig, dtype: DType, rng: &mut impl Rng) -> Result<Gpt> {
        converted("Gpt::with_dtype", Self::new(config, rng)?, dtype)
    }

    /// A model whose parameters are the given tensors, by nanoGPT's names
    /// (a state dict: `transformer.wte.weight`, `transformer.h.0.attn.c_attn.weight`,
    /// ...; a tied `lm_head.weight` may be given too, with the embedding's
    /// values, or instead of it). The tensors are adopted, not copied, and
    /// their dtype is the model's: see [`adopt_weights`] for the rules and
    /// the checks (every name, shape and dtype, in one error). No model is
    /// initialised first: the structure is built with placeholders (no
    /// memory, no random draws) that the given tensors replace. Dropout RNGs
    /// start from a fixed seed.
    ///
    /// ```
    /// use tamer::checkpoint::module_tensors;
    /// use tamer::models::{Gpt, GptConfig};
    /// use tamer::{rng, Tensor};
    /// let cfg = GptConfig { vocab_size: 11, block_size: 8, n_layer: 1, n_head: 2, n_embd: 8, ..GptConfig::gpt_tiny() };
    /// let source = Gpt::new(cfg.clone(), &mut rng(0)).unwrap();
    /// let gpt = Gpt::from_weights(cfg, module_tensors(&source)).unwrap(); // shares source's storage
    /// let idx = Tensor::from_vec(vec![1i64, 2, 3], [1, 3]).unwrap();
    /// let logits = |m: &Gpt| m.forward(&idx, None).unwrap().0.to_vec::<f32>().unwrap();
    /// assert_eq!(logits(&gpt), logits(&source));
    /// ```
    pub fn from_weights(config: GptConfig, weights: impl IntoIterator<Item = (String, Tensor)>) -> Result<Gpt> {
        const OP: &str = "Gpt::from_weights";
        // Every parameter is about to be replaced: build placeholders, not a random model.
        let gpt = crate::nn::init::skeleton(|| Self::new(config, &mut crate::rng(0))).map_err(|e| Error::new(OP, e.kind, e.message))?;
        adopt_weights(OP, &gpt, weights)?;
        Ok(gpt)
    }

    /// An empty cache for [`forward_with_cache`](Self::forward_with_cache).
    pub fn new_cache(&self) -> GptCache {
        GptCache {
            layers: vec![KvCache::default(); self.h.len()],
        }
    }

    /// `idx` i64 `[B, T]` (T ≤ block_size) → logits `[B, T, V]`, and with
    /// `targets` (i64 `[B, T]`, -1 ignored as in nanoGPT) the mean cross-entropy.
    pub fn forward(&self, idx: &Tensor, targets: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let x = self.hidden(idx, None)?;
        let logits = self.lm_head.forward(&x)?;
        let loss = match targets {
            None => None,
            Some(t) => {
                if t.dims() != idx.dims() {
                    return Err(Error::shape("Gpt", format!("targets shape {} must equal idx shape {}", t.shape(), idx.shape())));
                }
                let v = self.config.vocab_size;
                let flat = logits.reshape([logits.numel() / v, v])?;
                Some(flat.cross_entropy(&t.flatten_all()?, CrossEntropyOptions::default().with_ignore_index(-1))?)
            }
        };
        Ok((logits, loss))
    }

    /// Incremental form of [`forward`](Self::forward): `idx` `[B, T_new]` holds
    /// the tokens after the `cache.len()` already seen; they take positions
    /// `cache.len()..cache.len() + T_new`, which must stay within block_size.
    /// Returns their logits `[B, T_new, V]`.
    pub fn forward_with_cache(&self, idx: &Tensor, cache: &mut GptCache) -> Result<Tensor> {
        let x = self.hidden(idx, Some(cache))?;
        self.lm_head.forward(&x)
    }

    /// The logits `[B, T, V]` and the residual stream at every depth:
    /// `hidden[0]` the embedded tokens ([`embed`](Self::embed)), `hidden[l]`
    /// the output of block `l − 1`, each `[B, T, C]` before `ln_f` (for
    /// rank-collapse and signal-propagation diagnostics, as
    /// [`VisionTransformer::forward_with_hidden`](super::VisionTransformer::forward_with_hidden)).
    ///
    /// ```
    /// use tamer::models::{Gpt, GptConfig};
    /// use tamer::{rng, Tensor};
    /// let cfg = GptConfig { vocab_size: 11, block_size: 8, n_layer: 2, n_head: 2, n_embd: 16, ..GptConfig::gpt_tiny() };
    /// let gpt = Gpt::new(cfg, &mut rng(0)).unwrap();
    /// let idx = Tensor::from_vec(vec![1i64, 2, 3, 4, 5, 6], [2, 3]).unwrap();
    /// let (logits, hidden) = gpt.forward_with_hidden(&idx).unwrap();
    /// assert_eq!(logits.dims(), &[2, 3, 11]);
    /// assert_eq!(hidden.len(), 3); // embeddings + one per block
    /// assert_eq!(hidden[2].dims(), &[2, 3, 16]);
    /// ```
    pub fn forward_with_hidden(&self, idx: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut h = self.embed(idx)?;
        let mut hidden = Vec::with_capacity(self.h.len() + 1);
        hidden.push(h.clone());
        for block in &self.h {
            h = block.forward(&h)?;
            hidden.push(h.clone());
        }
        let logits = self.lm_head.forward(&self.ln_f.forward(&h)?)?;
        Ok((logits, hidden))
    }

    /// `idx` i64 `[B, T]` (T ≤ block_size) → token + position embeddings,
    /// after dropout, `[B, T, C]`: the input of the first block.
    ///
    /// ```
    /// use tamer::models::{Gpt, GptConfig};
    /// use tamer::{rng, Tensor};
    /// let cfg = GptConfig { vocab_size: 11, block_size: 8, n_layer: 1, n_head: 2, n_embd: 16, ..GptConfig::gpt_tiny() };
    /// let gpt = Gpt::new(cfg, &mut rng(0)).unwrap();
    /// let idx = Tensor::from_vec(vec![1i64, 2, 3], [1, 3]).unwrap();
    /// assert_eq!(gpt.embed(&idx).unwrap().dims(), &[1, 3, 16]);
    /// assert!(gpt.embed(&Tensor::from_vec(vec![0i64; 9], [1, 9]).unwrap()).is_err()); // longer than block_size
    /// ```
    pub fn embed(&self, idx: &Tensor) -> Result<Tensor> {
        self.embed_from(idx, 0)
    }

    /// Embeddings of `idx` at positions `start..start + T`.
    fn embed_from(&self, idx: &Tensor, start: usize) -> Result<Tensor> {
        self.check_idx(idx, start)?;
        let t = idx.dims()[1];
        let pos: Vec<i64> = (start..start + t).map(|p| p as i64).collect();
        let tok = self.wte.forward(idx)?; // [B, T, C]
        let pos = self.wpe.forward(&Tensor::from_indices(&pos).to_device(idx.device())?)?; // [T, C]
        self.drop.forward(&tok.add(&pos)?)
    }

    /// `[B, T] → ln_f(blocks(wte + wpe))` `[B, T, C]`.
    fn hidden(&self, idx: &Tensor, cache: Option<&mut GptCache>) -> Result<Tensor> {
        let start = cache.as_ref().map_or(0, |c| c.len());
        let mut x = self.embed_from(idx, start)?;
        match cache {
            Some(cache) => {
                if cache.layers.len() != self.h.len() {
                    return Err(Error::value(
                        "Gpt",
                        format!("cache has {} layers, the model {}", cache.layers.len(), self.h.len()),
                    ));
                }
                for (block, kv) in self.h.iter().zip(cache.layers.iter_mut()) {
                    x = block.forward_with_cache(&x, kv)?;
                }
            }
            None => {
                for block in &self.h {
                    x = block.forward(&x)?;
                }
            }
        }
        self.ln_f.forward(&x)
    }

    fn check_idx(&self, idx: &Tensor, start: usize) -> Result<()> {
        if idx.dtype() != DType::I64 || idx.rank() != 2 || idx.dims()[1] == 0 {
            return Err(Error::shape(
                "Gpt",
                format!("idx must be i64 token ids of shape [B, T] with T >= 1, got {} {}", idx.dtype(), idx.shape()),
            ));
        }
        let t = idx.dims()[1];
        let bs = self.config.block_size;
        if start + t > bs {
            return Err(Error::shape(
                "Gpt",
                if start == 0 {
                    format!("cannot forward a sequence of length {t}: block_size is only {bs}")
                } else {
                    format!("{t} new tokens after {start} cached positions exceed block_size {bs}: crop the context and re-prefill")
                },
            ));
        }
        Ok(())
    }

    /// Sample `max_new_tokens` continuations of `idx` `[B, T]`, returning
    /// `[B, T + max_new_tokens]`, with a KV cache: the prompt is run once
    /// (prefill), then each step feeds only the newest token, at O(context) cost.
    ///
    /// Each step divides the last position's logits by `temperature` (0 means
    /// greedy: the arg-max, first on ties), keeps the `top_k` largest (ties with
    /// the k-th kept, as nanoGPT), and draws from the softmax with `rng` (one
    /// uniform draw per row, rows in order).
    ///
    /// Context longer than block_size: as nanoGPT, the model only ever sees the
    /// last block_size tokens. With learned absolute positions a cropped window
    /// shifts every position, so the cache cannot be slid: once it is full,
    /// each step clears it and re-prefills the last block_size tokens (a full
    /// forward over the window, as [`generate_without_cache`](Self::generate_without_cache)
    /// does). Both therefore give the same tokens.
    ///
    /// Runs without gradients in the model's current mode: call
    /// `set_training(false)` first, or dropout stays on.
    pub fn generate(&self, idx: &Tensor, max_new_tokens: usize, temperature: f64, top_k: Option<usize>, rng: &mut impl Rng) -> Result<Tensor> {
        self.generate_impl(idx, max_new_tokens, temperature, top_k, rng, true)
    }

    /// [`generate`](Self::generate) by full recomputation: every step runs the
    /// model over the last block_size tokens (nanoGPT's `generate`).
    pub fn generate_without_cache(&self, idx: &Tensor, max_new_tokens: usize, temperature: f64, top_k: Option<usize>, rng: &mut impl Rng) -> Result<Tensor> {
        self.generate_impl(idx, max_new_tokens, temperature, top_k, rng, false)
    }

    fn generate_impl(&self, idx: &Tensor, max_new: usize, temperature: f64, top_k: Option<usize>, rng: &mut impl Rng, use_cache: bool) -> Result<Tensor> {
        if idx.dtype() != DType::I64 || idx.rank() != 2 || idx.dims()[0] == 0 || idx.dims()[1] == 0 {
            return Err(Error::shape(
                "Gpt::generate",
                format!(
                    "the prompt must be i64 token ids of shape [B, T] with B, T >= 1, got {} {}",
                    idx.dtype(),
                    idx.shape()
                ),
            ));
        }
        if !(temperature >= 0.0 && temperature.is_finite()) {
            return Err(Error::value(
                "Gpt::generate",
                format!("temperature {temperature} must be finite and >= 0 (0 = greedy)"),
            ));
        }
        if top_k == Some(0) {
            return Err(Error::value("Gpt::generate", "top_k must be at least 1"));
        }
        let (b, t0) = (idx.dims()[0], idx.dims()[1]);
        let mut tokens = idx.to_vec2::<i64>()?;
        let bs = self.config.block_size;
        // The model runs where its weights are; the result goes where the prompt was.
        let model_device = self.wte.weight.tensor().device();
        let window = |tokens: &[Vec<i64>], len: usize, device: crate::Device| -> Result<Tensor> {
            let flat: Vec<i64> = tokens.iter().flat_map(|row| row[row.len() - len..].iter().copied()).collect();
            Tensor::from_vec(flat, [b, len])?.to_device(device)
        };
        no_grad(|| {
            let mut cache = self.new_cache();
            for _ in 0..max_new {
                let len = tokens[0].len();
                let logits = if use_cache {
                    if cache.is_empty() || cache.len() >= bs {
                        cache.clear();
                        self.last_logits(&window(&tokens, len.min(bs), model_device)?, Some(&mut cache))?
                    } else {
                        self.last_logits(&window(&tokens, 1, model_device)?, Some(&mut cache))?
                    }
                } else {
                    self.last_logits(&window(&tokens, len.min(bs), model_device)?, None)?
                };
                let v = self.config.vocab_size;
                for (row, l) in tokens.iter_mut().zip(logits.chunks(v)) {
                    row.push(sample_token(l, temperature, top_k, rng));
                }
            }
            window(&tokens, t0 + max_new, idx.device())
        })
    }

    /// Logits of the last position of each row, `[B·V]` on the host (only that
    /// position goes through `lm_head`).
    fn last_logits(&self, idx: &Tensor, cache: Option<&mut GptCache>) -> Result<Vec<f64>> {
        let x = self.hidden(idx, cache)?;
        let t = x.dims()[1];
        self.lm_head.forward(&x.narrow(1, t - 1, 1)?)?.to_f64_vec()
    }

    /// nanoGPT's `get_num_params()` (default `non_embedding=True`): the count
    /// without the position embedding. [`Module::num_params`] is the full count.
    pub fn num_params_non_embedding(&self) -> usize {
        self.num_params() - self.wpe.weight.numel()
    }
}

impl Module for Gpt {
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut v = prefixed("transformer.wte", self.wte.named_params());
        v.extend(prefixed("transformer.wpe", self.wpe.named_params()));
        for (i, block) in self.h.iter().enumerate() {
            let named = block.named_params().into_iter().map(|(n, p)| (gpt_block_name(&n), p)).collect();
            v.extend(prefixed(&format!("transformer.h.{i}"), named));
        }
        v.extend(prefixed("transformer.ln_f", self.ln_f.named_params()));
        if !self.config.tie_weights {
            v.extend(prefixed("lm_head", self.lm_head.named_params()));
        }
        v
    }
    /// `lm_head.weight` is `transformer.wte.weight` when tied: nanoGPT's
    /// state_dict lists both, so checkpoints do too.
    fn tied_aliases(&self) -> Vec<(String, String)> {
        if self.config.tie_weights {
            vec![("lm_head.weight".into(), "transformer.wte.weight".into())]
        } else {
            Vec::new()
        }
    }
    fn set_training(&mut self, training: bool) {
        self.drop.set_training(training);
        self.h.iter_mut().for_each(|b| b.set_training(training));
    }
}
