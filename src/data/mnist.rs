//! MNIST in the IDX format (LeCun's files, gzipped or raw).
//!
//! An IDX file is a 4-byte magic `00 00 <type> <rank>` (type `0x08` =
//! unsigned byte), `rank` big-endian u32 dimensions, then the values
//! row-major. Images are rank 3 `[N, rows, cols]`, labels rank 1 `[N]`.
//! Every header is checked against the file's actual length before anything
//! is allocated, so a corrupt count is an error, not a huge allocation.

use super::image::{ImageDataset, Split};
use super::io::{find_file, maybe_gunzip_idx, read_file};
use crate::{Error, Result};
use std::path::Path;

const OP: &str = "mnist";
pub const NUM_CLASSES: usize = 10;
/// The number of test images, also the size of `mnist10k`'s whole.
pub const TEST_LEN: usize = 10_000;
/// `mnist10k`: the first 8,000 t10k images train, the last 2,000 test.
pub const MNIST10K_TRAIN: usize = 8_000;

/// A parsed IDX header: dimensions and where the data starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxHeader {
    pub dims: Vec<usize>,
    pub data_offset: usize,
}

/// Parse and validate an unsigned-byte IDX header of the given rank against
/// the length of `bytes`: the data must be exactly `Π dims` bytes.
pub fn parse_idx_header(bytes: &[u8], rank: usize, name: &str) -> Result<IdxHeader> {
    if bytes.len() < 4 {
        return Err(Error::format(OP, format!("{name}: {} bytes, too short for an IDX header", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::format(
            OP,
            format!(
                "{name}: bad IDX magic {:02x} {:02x} {:02x} {:02x} (expected 00 00 08 {rank:02x})",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(Error::format(
            OP,
            format!("{name}: IDX data type 0x{:02x}, expected 0x08 (unsigned byte)", bytes[2]),
        ));
    }
    if bytes[3] as usize != rank {
        return Err(Error::format(OP, format!("{name}: IDX rank {}, expected {rank}", bytes[3])));
    }
    let data_offset = 4 + 4 * rank;
    if bytes.len() < data_offset {
        return Err(Error::format(
            OP,
            format!("{name}: truncated IDX header ({} bytes, expected at least {data_offset})", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes([bytes[4 + 4 * i], bytes[5 + 4 * i], bytes[6 + 4 * i], bytes[7 + 4 * i]]) as usize)
        .collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let have = bytes.len() - data_offset;
    match expected {
        Some(n) if n == have => Ok(IdxHeader { dims, data_offset }),
        Some(n) if n > have => Err(Error::format(
            OP,
            format!("{name}: truncated: the header promises {dims:?} = {n} data bytes, the file has {have}"),
        )),
        Some(n) => Err(Error::format(
            OP,
            format!("{name}: mis-sized: the header promises {dims:?} = {n} data bytes, the file has {have} (trailing bytes)"),
        )),
        None => Err(Error::format(OP, format!("{name}: header dimensions {dims:?} overflow"))),
    }
}

/// Parse IDX image bytes (raw, not gzip) into `[N, 1, rows, cols]` f32 in
/// `[0, 1]` (pixel / 255). Returns the pixels, N and (rows, cols).
pub fn parse_images(bytes: &[u8], name: &str) -> Result<(Vec<f32>, usize, (usize, usize))> {
    let h = parse_idx_header(bytes, 3, name)?;
    let (n, rows, cols) = (h.dims[0], h.dims[1], h.dims[2]);
    if n > 0 && (rows == 0 || cols == 0) {
        return Err(Error::format(OP, format!("{name}: images of {rows}x{cols} pixels")));
    }
    let pixels = bytes[h.data_offset..].iter().map(|&b| b as f32 / 255.0).collect();
    Ok((pixels, n, (rows, cols)))
}

/// Parse IDX label bytes (raw, not gzip); every label must be below `num_classes`.
pub fn parse_labels(bytes: &[u8], num_classes: usize, name: &str) -> Result<Vec<i64>> {
    let h = parse_idx_header(bytes, 1, name)?;
    let data = &bytes[h.data_offset..];
    if let Some((i, &l)) = data.iter().enumerate().find(|(_, &l)| l as usize >= num_classes) {
        return Err(Error::format(OP, format!("{name}: label {l} at index {i} is not a class 0..{num_classes}")));
    }
    Ok(data.iter().map(|&l| l as i64).collect())
}

/// Build the data set from raw (or gzip) image and label file contents.
pub fn from_bytes(images: Vec<u8>, labels: Vec<u8>, images_name: &str, labels_name: &str, dataset_name: &str) -> Result<ImageDataset> {
    // Inflated only up to the size each header declares: a gzip bomb stops early.
    let images = maybe_gunzip_idx(OP, images, images_name, 3)?;
    let labels = maybe_gunzip_idx(OP, labels, labels_name, 1)?;
    let (pixels, n, (rows, cols)) = parse_images(&images, images_name)?;
    let labels = parse_labels(&labels, NUM_CLASSES, labels_name)?;
    if labels.len() != n {
        return Err(Error::format(
            OP,
            format!("{images_name} has {n} images but {labels_name} has {} labels", labels.len()),
        ));
    }
    ImageDataset::new(dataset_name, pixels, labels, (1, rows, cols), NUM_CLASSES)
}

/// The file-name stem of a split: `train` or `t10k`.
fn stem(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "t10k",
    }
}

/// Accepted names for one file: the standard `-idx3-ubyte`, the `.idx3-ubyte`
/// variant some mirrors use, each raw or `.gz`.
fn candidates(prefix: &str, kind: &str, rank: u8) -> Vec<String> {
    let mut v = Vec::new();
    for sep in ['-', '.'] {
        for ext in [".gz", ""] {
            v.push(format!("{prefix}-{kind}{sep}idx{rank}-ubyte{ext}"));
        }
    }
    v
}

/// Load MNIST's training (`train-*`) or test (`t10k-*`) images and labels from
/// `dir`, e.g. `train-images-idx3-ubyte.gz` and `train-labels-idx1-ubyte.gz`
/// (gzipped or not, detected by content).
pub fn load(dir: impl AsRef<Path>, split: Split) -> Result<ImageDataset> {
    let dir = dir.as_ref();
    let p = stem(split);
    let images_path = find_file(OP, dir, &candidates(p, "images", 3))?;
    let labels_path = find_file(OP, dir, &candidates(p, "labels", 1))?;
    let images = read_file(OP, &images_path)?;
    let labels = read_file(OP, &labels_path)?;
    let name = match split {
        Split::Train => "mnist train",
        Split::Test => "mnist test",
    };
    from_bytes(images, labels, &images_path.display().to_string(), &labels_path.display().to_string(), name)
}

/// `mnist10k`: only the t10k files; the first 8,000 images are the training
/// set and the last 2,000 the test set. Returns (train, test).
pub fn mnist10k(dir: impl AsRef<Path>) -> Result<(ImageDataset, ImageDataset)> {
    let all = load(dir, Split::Test)?;
    if all.len() <= MNIST10K_TRAIN {
        return Err(Error::format(
            OP,
            format!("mnist10k needs more than {MNIST10K_TRAIN} t10k images, the files have {}", all.len()),
        ));
    }
    let (mut train, mut test) = all.split_at(MNIST10K_TRAIN)?;
    train.name = "mnist10k train".into();
    test.name = "mnist10k test".into();
    Ok((train, test))
}

/// Encode images (`[N, rows, cols]` bytes) and labels as IDX files: for tests
/// and for writing small synthetic data sets.
pub fn encode_idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let ok = encode_idx(&[2, 2, 3], &[0; 12]);
        assert_eq!(parse_idx_header(&ok, 3, "f").unwrap().dims, vec![2, 2, 3]);
        let e = parse_idx_header(&ok[..ok.len() - 1], 3, "f").unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("f:"), "{e}");
        let mut long = ok.clone();
        long.push(0);
        assert!(parse_idx_header(&long, 3, "f").unwrap_err().to_string().contains("mis-sized"));
        let mut bad = ok.clone();
        bad[2] = 0x0d;
        assert!(parse_idx_header(&bad, 3, "f").unwrap_err().to_string().contains("0x0d"));
        assert!(parse_idx_header(&ok, 1, "f").unwrap_err().to_string().contains("rank 3"));
        // A count promising terabytes is rejected before any allocation.
        let huge = encode_idx(&[u32::MAX, u32::MAX, u32::MAX], &[0; 4]);
        assert!(parse_idx_header(&huge, 3, "f").is_err());
    }

    #[test]
    fn images_and_labels() {
        let imgs = encode_idx(&[2, 1, 2], &[0, 255, 51, 0]);
        let (p, n, rc) = parse_images(&imgs, "i").unwrap();
        assert_eq!((n, rc), (2, (1, 2)));
        assert_eq!(p, vec![0.0, 1.0, 0.2, 0.0]);
        let labels = encode_idx(&[2], &[3, 10]);
        assert!(parse_labels(&labels, 10, "l").unwrap_err().to_string().contains("label 10"));
        let labels = encode_idx(&[3], &[3, 1, 2]);
        let e = from_bytes(imgs, labels, "i", "l", "x").unwrap_err().to_string();
        assert!(e.contains("2 images") && e.contains("3 labels"), "{e}");
    }
}
