//! Diagnostics: numbers that show why a transformer trains well or badly.
//!
//! Each diagnostic measures one effect from the literature on training
//! transformers; the documentation of its module ([`rank_collapse`],
//! [`perturbation`], [`training`]) and of each function gives its formula,
//! the paper and what the number says:
//!
//! - [`rank_collapse_residual`] and [`rank_collapse_by_depth`]: how close the
//!   tokens at each depth are to all being the same vector (Dong,
//!   Cordonnier and Loukas 2021, "Attention is not all you need"): pure
//!   attention collapses doubly exponentially with depth; skip connections
//!   stop it; MLPs slow it.
//! - [`output_change`] and [`blocks_output_change`]: how much the output moves
//!   under a random parameter perturbation of a given relative size (Liu et
//!   al. 2020, "Understanding the Difficulty of Training Transformers"):
//!   post-LN amplifies it with depth, pre-LN much less, Admin not at all.
//! - [`layer_grad_norms`], [`update_ratios`] (with [`ParamSnapshot`] or
//!   [`StepDiagnostics`]) and [`attention_entropy`] (of
//!   [`MultiHeadSelfAttention::attention_probs`](crate::nn::MultiHeadSelfAttention::attention_probs)),
//!   gathered per block by [`probe_blocks`] and the [`Probe`] trait: what
//!   the trainer logs every
//!   [`diagnostics_every`](crate::train::TrainConfig::diagnostics_every) steps.
//!
//! Everything here reads tensors to the host and computes in f64 without
//! recording a graph, so a diagnostic never changes training; the
//! perturbation measure writes to the parameters and restores them exactly.
//! Bad input (a wrong shape, a zero matrix whose relative residual is
//! undefined) is an [`Error`](crate::Error) naming the function.
//!
//! ```
//! use tamer::diagnostics::{rank_collapse_by_depth, Probe};
//! use tamer::models::{Pool, VisionTransformer, VitConfig};
//! use tamer::{no_grad, rng, DType, Tensor};
//! let vit = VisionTransformer::new(VitConfig { pool: Pool::Mean, ..VitConfig::new((8, 8), 4, 1, 10, 16, 2, 2, 2.0) }, &mut rng(0)).unwrap();
//! let x = Tensor::randn([4, 1, 8, 8], DType::F32, &mut rng(1)).unwrap();
//! let (_, hidden) = no_grad(|| vit.forward_with_hidden(&x)).unwrap();
//! let residuals = rank_collapse_by_depth(&hidden).unwrap(); // one per depth: embeddings, block 1, block 2
//! let probe = vit.probe(&x).unwrap(); // the same residuals, and each block's attention entropy
//! assert_eq!(probe.rank_collapse, residuals);
//! ```

// Public so that each module's documentation (the formula, the paper, the
// choices tamer makes) is published; the items are re-exported here.
pub mod perturbation;
pub mod rank_collapse;
pub mod training;

pub use perturbation::{blocks_output_change, output_change, OutputChange};
pub use rank_collapse::{composite_norm, rank_collapse_by_depth, rank_collapse_residual, rank_collapse_residual_per_sample};
pub use training::{attention_entropy, layer_grad_norms, layer_of, probe_blocks, update_ratios, LayerProbe, ParamSnapshot, Probe, StepDiagnostics};
