//! Data sets and the loader.
//!
//! - [`ImageDataset`]: images `[N, C, H, W]` in [0, 1] with labels, which every
//!   image format loads into: the vendored [`digits`] (8×8), [`mnist`] (IDX,
//!   gzipped or raw; also `mnist10k`, the t10k files split 8,000/2,000) and
//!   [`cifar`] (CIFAR-10 binary batches).
//! - [`text::CharDataset`]: character-level text as nanoGPT prepares it.
//! - [`DataLoader`]: seeded shuffling, batching, normalisation,
//!   [`augment`]ation and [`mix`]up on a background thread, with a
//!   serialisable [`LoaderState`] for exact resumption.
//!
//! Every loader validates what it reads: a truncated, mis-sized or
//! wrong-magic file is an [`Error`](crate::Error) naming the file and the
//! problem, and header counts are checked against the file's length before
//! anything is allocated. A gzipped file is inflated only up to the size its
//! format declares (an IDX header's dimensions, CIFAR-10's 10,000 records, the
//! gzip trailer's ISIZE), so a gzip bomb is refused after that many bytes
//! ([`io::maybe_gunzip_idx`], [`io::maybe_gunzip_bounded`]).

pub mod augment;
pub mod cifar;
pub mod digits;
pub mod image;
pub mod io;
pub mod loader;
pub mod mix;
pub mod mnist;
pub mod text;

pub use augment::{Augment, RandomErasing};
pub use image::{ImageDataset, Split};
pub use loader::{Batch, DataLoader, LoaderConfig, LoaderState, Normalization};
pub use mix::{mixed_cross_entropy, MixInfo, MixedBatch, Mixup};
pub use text::{CharDataset, TextSplit};
