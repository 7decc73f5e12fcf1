//! Models built from the `nn` layers: GPT (nanoGPT naming), a transformer
//! encoder for sequence classification, and the Vision Transformer (timm
//! naming) with its hybrid CNN-stem variant.

mod config;
mod encoder;
mod gpt;
mod gpt_pretrained;
mod hybrid;
mod patch_embed;
mod sampling;
mod vit;
mod vit_pretrained;

pub(crate) use config::canonical_model_config;
pub use encoder::{EncoderConfig, PositionKind, TransformerEncoder};
pub use gpt::{gpt_block_name, Gpt, GptCache, GptConfig};
pub use hybrid::{CnnStem, StemConfig};
pub use patch_embed::{PatchEmbed, PatchEmbedConfig};
pub use sampling::sample_token;
pub use vit::{Pool, PosEmbed, VisionTransformer, VitConfig};
pub use vit_pretrained::{CheckpointSource, PretrainedOptions};
