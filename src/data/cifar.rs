//! CIFAR-10's binary version (`cifar-10-binary.tar.gz`, extracted): five
//! training batches `data_batch_{1..5}.bin` and `test_batch.bin`, each a
//! sequence of 3,073-byte records: the label byte, then 1,024 red, 1,024
//! green and 1,024 blue bytes of a 32×32 image, row-major (already `[C, H, W]`).

use super::image::{ImageDataset, Split};
use super::io::{maybe_gunzip_bounded, read_file, SizeBound};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

const OP: &str = "cifar10";
pub const NUM_CLASSES: usize = 10;
pub const SIDE: usize = 32;
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Records per batch file in the official release.
pub const RECORDS_PER_FILE: usize = 10_000;
pub const CLASS_NAMES: [&str; NUM_CLASSES] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Append the records of one batch file's bytes to `images` / `labels`.
pub fn parse_batch(bytes: &[u8], name: &str, images: &mut Vec<f32>, labels: &mut Vec<i64>) -> Result<()> {
    if bytes.is_empty() {
        return Err(Error::format(OP, format!("{name}: empty file")));
    }
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(Error::format(
            OP,
            format!(
                "{name}: {} bytes is not a whole number of {RECORD_BYTES}-byte records ({} records and {} bytes left over: truncated or not a CIFAR-10 binary batch)",
                bytes.len(),
                bytes.len() / RECORD_BYTES,
                bytes.len() % RECORD_BYTES
            ),
        ));
    }
    let n = bytes.len() / RECORD_BYTES;
    // Validate every label before allocating the pixels.
    for (i, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        if rec[0] as usize >= NUM_CLASSES {
            return Err(Error::format(OP, format!("{name}: record {i} has label {}, expected 0..{NUM_CLASSES}", rec[0])));
        }
    }
    images.reserve(n * IMAGE_BYTES);
    labels.reserve(n);
    for rec in bytes.chunks_exact(RECORD_BYTES) {
        labels.push(rec[0] as i64);
        images.extend(rec[1..].iter().map(|&b| b as f32 / 255.0));
    }
    Ok(())
}

/// The data set from the contents of one or more batch files (`(name, bytes)`).
pub fn from_batches(files: Vec<(String, Vec<u8>)>, dataset_name: &str) -> Result<ImageDataset> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for (name, bytes) in files {
        let bound = SizeBound::new(
            (RECORDS_PER_FILE * RECORD_BYTES) as u64,
            format!("a CIFAR-10 batch file holds ({RECORDS_PER_FILE} records of {RECORD_BYTES} bytes)"),
        );
        let bytes = maybe_gunzip_bounded(OP, bytes, &name, bound)?;
        parse_batch(&bytes, &name, &mut images, &mut labels)?;
    }
    ImageDataset::new(dataset_name, images, labels, (3, SIDE, SIDE), NUM_CLASSES)?.with_class_names(&CLASS_NAMES)
}

/// The batch files of a split.
pub fn file_names(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    }
}

/// `dir` itself, or its `cifar-10-batches-bin` folder (what the archive extracts to).
fn batches_dir(dir: &Path) -> PathBuf {
    let inner = dir.join("cifar-10-batches-bin");
    if !dir.join("test_batch.bin").exists() && !dir.join("data_batch_1.bin").exists() && inner.is_dir() {
        inner
    } else {
        dir.to_path_buf()
    }
}

/// Load CIFAR-10's training (50,000 images) or test (10,000) split from
/// `dir` (the extracted `cifar-10-batches-bin` folder or its parent).
pub fn load(dir: impl AsRef<Path>, split: Split) -> Result<ImageDataset> {
    let dir = batches_dir(dir.as_ref());
    let mut files = Vec::new();
    for name in file_names(split) {
        let path = dir.join(&name);
        files.push((path.display().to_string(), read_file(OP, &path)?));
    }
    let name = match split {
        Split::Train => "cifar10 train",
        Split::Test => "cifar10 test",
    };
    from_batches(files, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records() {
        let mut bytes = vec![0u8; 2 * RECORD_BYTES];
        bytes[0] = 3;
        bytes[1] = 255;
        bytes[RECORD_BYTES] = 9;
        let ds = from_batches(vec![("b".into(), bytes.clone())], "t").unwrap();
        assert_eq!(ds.labels, vec![3, 9]);
        assert_eq!(ds.images[0], 1.0);
        assert_eq!(ds.shape, (3, 32, 32));
        let e = from_batches(vec![("b.bin".into(), bytes[..RECORD_BYTES + 5].to_vec())], "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.bin") && e.contains("whole number"), "{e}");
        bytes[RECORD_BYTES] = 10;
        assert!(from_batches(vec![("b".into(), bytes)], "t").unwrap_err().to_string().contains("label 10"));
    }
}
