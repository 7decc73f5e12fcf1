//! Character-level text, as nanoGPT's `shakespeare_char/prepare.py`: the
//! vocabulary is the sorted set of characters in the text, the first 90% of
//! the characters train and the last 10% validate, and a batch is `B` random
//! windows of `T` characters with targets shifted by one.

use super::io::{derive_seed, maybe_gunzip, read_file};
use crate::tensor::rng;
use crate::{Error, Result, Tensor};
use rand::Rng;
use std::collections::BTreeSet;
use std::path::Path;

const OP: &str = "text";
/// Tags the batch stream of `batch_at` apart from other seeded streams.
const BATCH_TAG: u64 = 0x7e47;

/// Which half of the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextSplit {
    Train,
    Val,
}

/// A text encoded as character ids, split 90/10.
///
/// ```
/// use tamer::data::text::{CharDataset, TextSplit};
/// let ds = CharDataset::from_text("hello world, hello text", "toy").unwrap();
/// assert_eq!(ds.vocab_size(), 11); // " ,dehlortwx"
/// assert_eq!(ds.decode(&ds.encode("hold").unwrap()).unwrap(), "hold");
/// let (x, y) = ds.batch_at(TextSplit::Train, 2, 4, 0, 0).unwrap();
/// assert_eq!(x.dims(), &[2, 4]);
/// let (x, y) = (x.to_vec::<i64>().unwrap(), y.to_vec::<i64>().unwrap());
/// assert_eq!(x[1..4], y[0..3]); // y is x shifted by one
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CharDataset {
    /// The vocabulary: sorted unique characters; id = position.
    pub chars: Vec<char>,
    /// The first 90% of the text, as ids.
    pub train: Vec<u32>,
    /// The last 10%.
    pub val: Vec<u32>,
}

impl CharDataset {
    /// Build from text; `name` is used in error messages.
    pub fn from_text(text: &str, name: &str) -> Result<Self> {
        if text.is_empty() {
            return Err(Error::format(OP, format!("{name}: empty text")));
        }
        let chars: Vec<char> = text.chars().collect::<BTreeSet<char>>().into_iter().collect();
        let ids: Vec<u32> = text.chars().map(|c| chars.binary_search(&c).map(|i| i as u32).unwrap_or(0)).collect();
        // nanoGPT: n = len(data); train = data[:int(n*0.9)].
        let n_train = (ids.len() as f64 * 0.9) as usize;
        Ok(CharDataset {
            chars,
            val: ids[n_train..].to_vec(),
            train: ids[..n_train].to_vec(),
        })
    }

    /// Build from a file's bytes (UTF-8, optionally gzip).
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<Self> {
        let bytes = maybe_gunzip(OP, bytes, name)?;
        let text = String::from_utf8(bytes).map_err(|e| Error::format(OP, format!("{name}: not valid UTF-8 text: {}", e.utf8_error())))?;
        Self::from_text(&text, name)
    }

    /// Read a UTF-8 text file (e.g. tinyshakespeare's `input.txt`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_bytes(read_file(OP, path)?, &path.display().to_string())
    }

    pub fn vocab_size(&self) -> usize {
        self.chars.len()
    }
    /// The whole text's length in characters.
    pub fn len(&self) -> usize {
        self.train.len() + self.val.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn split(&self, split: TextSplit) -> &[u32] {
        match split {
            TextSplit::Train => &self.train,
            TextSplit::Val => &self.val,
        }
    }

    /// An error unless both splits are longer than `block_size` (the
    /// context): a training example is `block_size` characters and the one
    /// after each, so a shorter split has no window. The error names the
    /// split, its length and the context.
    ///
    /// ```
    /// use tamer::data::text::CharDataset;
    /// let ds = CharDataset::from_text(&"abcdefghij".repeat(10), "toy").unwrap(); // 90 + 10 characters
    /// assert!(ds.check_windows(9).is_ok());
    /// let e = ds.check_windows(10).unwrap_err().to_string();
    /// assert!(e.contains("the validation split has 10 characters") && e.contains("block_size 10"), "{e}");
    /// ```
    pub fn check_windows(&self, block_size: usize) -> Result<()> {
        for (split, len) in [("training", self.train.len()), ("validation", self.val.len())] {
            if len <= block_size {
                return Err(Error::value(
                    OP,
                    format!(
                        "the {split} split has {len} characters, needs more than block_size {block_size} (the context): \
                         no window fits; use a longer text or a smaller block_size"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Character ids of `text`; a character outside the vocabulary is an error naming it.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        text.chars()
            .map(|c| {
                self.chars
                    .binary_search(&c)
                    .map(|i| i as i64)
                    .map_err(|_| Error::value(OP, format!("character {c:?} is not in the vocabulary of {} characters", self.chars.len())))
            })
            .collect()
    }

    /// The text of character ids; an id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        ids.iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.chars.get(i).copied())
                    .ok_or_else(|| Error::index(OP, format!("id {i} is outside the vocabulary 0..{}", self.chars.len())))
            })
            .collect()
    }

    /// A random batch, nanoGPT's `get_batch`: `batch_size` windows starting
    /// uniformly in `0..len − block_size`; returns x and y (x shifted by one),
    /// both i64 `[batch_size, block_size]`.
    pub fn batch(&self, split: TextSplit, batch_size: usize, block_size: usize, rng: &mut impl Rng) -> Result<(Tensor, Tensor)> {
        let data = self.split(split);
        if block_size == 0 || batch_size == 0 {
            return Err(Error::value(
                OP,
                format!("batch_size {batch_size} and block_size {block_size} must be positive"),
            ));
        }
        if data.len() <= block_size {
            return Err(Error::value(
                OP,
                format!("the {split:?} split has {} characters, needs more than block_size {block_size}", data.len()),
            ));
        }
        let mut x = Vec::with_capacity(batch_size * block_size);
        let mut y = Vec::with_capacity(batch_size * block_size);
        for _ in 0..batch_size {
            let i = rng.random_range(0..data.len() - block_size);
            x.extend(data[i..i + block_size].iter().map(|&c| c as i64));
            y.extend(data[i + 1..i + 1 + block_size].iter().map(|&c| c as i64));
        }
        Ok((Tensor::from_vec(x, [batch_size, block_size])?, Tensor::from_vec(y, [batch_size, block_size])?))
    }

    /// [`batch`](Self::batch) with its randomness a function of `(seed, step)`
    /// alone, so a resumed run draws exactly the batches an uninterrupted one would.
    pub fn batch_at(&self, split: TextSplit, batch_size: usize, block_size: usize, seed: u64, step: u64) -> Result<(Tensor, Tensor)> {
        let tag = match split {
            TextSplit::Train => 0,
            TextSplit::Val => 1,
        };
        self.batch(split, batch_size, block_size, &mut rng(derive_seed(seed, &[BATCH_TAG, tag, step])))
    }
}
