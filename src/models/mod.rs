//! Models built from the `nn` layers: GPT (nanoGPT naming) and a transformer
//! encoder for sequence classification.

mod encoder;
mod gpt;
mod sampling;

pub use encoder::{EncoderConfig, PositionKind, TransformerEncoder};
pub use gpt::{gpt_block_name, Gpt, GptCache, GptConfig};
pub use sampling::sample_token;
