//! Reading data files: whole-file reads whose errors name the file, gzip
//! detected by its magic bytes, and decompression bounded by the size the
//! file declares, so that a corrupt or hostile archive (a gzip bomb) is
//! refused as soon as it inflates past its declaration instead of being read
//! up to the overall cap.

use crate::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest decompressed file the loaders accept (the biggest real one,
/// MNIST's training images, is 47 MB).
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 31;

/// The two bytes every gzip stream starts with.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether `bytes` start like a gzip stream.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[..2] == GZIP_MAGIC
}

/// Read a whole file; the error names the file and the OS reason.
pub fn read_file(op: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(op, format!("{}: cannot read: {e}", path.display())))
}

/// An upper bound on a decompressed size and who declared it, for the error
/// message ("its IDX header declares", "its gzip trailer declares" ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeBound {
    pub bytes: u64,
    pub declared_by: String,
}

impl SizeBound {
    pub fn new(bytes: u64, declared_by: impl Into<String>) -> SizeBound {
        SizeBound {
            bytes,
            declared_by: declared_by.into(),
        }
    }
    /// The smaller of two bounds.
    pub fn min(self, other: SizeBound) -> SizeBound {
        if other.bytes < self.bytes {
            other
        } else {
            self
        }
    }
}

/// The largest compression ratio DEFLATE can reach (258-byte matches in
/// 2-bit codes): a stream of `n` bytes inflates to at most about `1032·n`.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// What the gzip trailer of `compressed` declares: ISIZE, the last four
/// bytes, is the decompressed size modulo 2^32. Everything the loaders
/// accept is smaller than [`MAX_DECOMPRESSED_BYTES`] (2 GiB < 2^32), so for
/// an acceptable stream ISIZE is its exact size, however long the
/// compressed file: a stream that inflates past ISIZE is either lying or
/// too large to accept, and is refused either way. The bound is also at
/// most `1032·n` (DEFLATE's largest ratio for `n` compressed bytes). (A
/// file of several gzip members carries the last member's size there; the
/// loaders read the first member.)
pub fn gzip_trailer_bound(compressed: &[u8]) -> SizeBound {
    let n = compressed.len();
    let by_ratio = SizeBound::new(
        (n as u64).saturating_mul(MAX_DEFLATE_RATIO),
        format!("a DEFLATE stream of {n} bytes can inflate to at most"),
    );
    if n < 18 {
        // Too short for a header and a trailer: the decoder will say what is wrong.
        return by_ratio;
    }
    let isize = u32::from_le_bytes([compressed[n - 4], compressed[n - 3], compressed[n - 2], compressed[n - 1]]);
    SizeBound::new(isize as u64, "its gzip trailer declares (ISIZE)").min(by_ratio)
}

/// Decompress the gzip stream `compressed`, reading no more than `bound`
/// (and [`MAX_DECOMPRESSED_BYTES`]) allows plus one byte: a stream that goes
/// on is an error naming the bound and who declared it, found after reading
/// only that much. `prefix` is what the caller already read from `decoder`.
fn inflate_bounded(op: &'static str, decoder: &mut impl Read, mut prefix: Vec<u8>, name: &str, bound: &SizeBound) -> Result<Vec<u8>> {
    let bound = bound.clone().min(SizeBound::new(MAX_DECOMPRESSED_BYTES, "the loaders accept at most"));
    let room = bound.bytes.saturating_sub(prefix.len() as u64);
    decoder
        .take(room + 1)
        .read_to_end(&mut prefix)
        .map_err(|e| Error::format(op, format!("{name}: starts with the gzip magic but is not a valid gzip stream: {e}")))?;
    if prefix.len() as u64 > bound.bytes {
        return Err(Error::format(
            op,
            format!(
                "{name}: decompresses to more than the {} bytes {} (stopped after {} bytes: a corrupt or hostile file)",
                bound.bytes,
                bound.declared_by,
                prefix.len()
            ),
        ));
    }
    Ok(prefix)
}

/// `bytes` decompressed if they are gzip (bounded by `bound`, and by the
/// gzip trailer's declared size), else unchanged. `name` (a file name) is
/// used in error messages.
pub fn maybe_gunzip_bounded(op: &'static str, bytes: Vec<u8>, name: &str, bound: SizeBound) -> Result<Vec<u8>> {
    if !is_gzip(&bytes) {
        return Ok(bytes);
    }
    let bound = bound.min(gzip_trailer_bound(&bytes));
    inflate_bounded(op, &mut GzDecoder::new(&bytes[..]), Vec::new(), name, &bound)
}

/// `bytes` decompressed if they are gzip, else unchanged; the size is bounded
/// by the gzip trailer (see [`gzip_trailer_bound`]). `name` (a file name) is
/// used in error messages.
pub fn maybe_gunzip(op: &'static str, bytes: Vec<u8>, name: &str) -> Result<Vec<u8>> {
    maybe_gunzip_bounded(op, bytes, name, SizeBound::new(MAX_DECOMPRESSED_BYTES, "the loaders accept at most"))
}

/// [`maybe_gunzip`] for an IDX file of `rank` dimensions: the header is
/// inflated first, and the rest is read only up to the `4 + 4·rank + Π dims`
/// bytes it declares (or the gzip trailer's size, if smaller). A stream that does not start like such a header is
/// inflated as [`maybe_gunzip`] does, for the IDX parser to name what is wrong.
pub fn maybe_gunzip_idx(op: &'static str, bytes: Vec<u8>, name: &str, rank: usize) -> Result<Vec<u8>> {
    if !is_gzip(&bytes) {
        return Ok(bytes);
    }
    let mut decoder = GzDecoder::new(&bytes[..]);
    let mut header = vec![0u8; 4 + 4 * rank];
    let looks_like_idx = decoder.read_exact(&mut header).is_ok() && header[..4] == [0, 0, 0x08, rank as u8];
    if !looks_like_idx {
        return maybe_gunzip(op, bytes, name);
    }
    let dims: Vec<u64> = header[4..]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64)
        .collect();
    let data = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).unwrap_or(u64::MAX);
    let total = data.saturating_add(header.len() as u64);
    let bound = SizeBound::new(
        total,
        format!("its IDX header declares (dimensions {dims:?} and the {}-byte header)", header.len()),
    );
    inflate_bounded(op, &mut decoder, header, name, &bound.min(gzip_trailer_bound(&bytes)))
}

/// Read a file and decompress it if it is gzip.
pub fn read_maybe_gz(op: &'static str, path: &Path) -> Result<Vec<u8>> {
    let bytes = read_file(op, path)?;
    maybe_gunzip(op, bytes, &path.display().to_string())
}

/// The first of `names` that exists in `dir`; the error lists every name tried.
pub fn find_file(op: &'static str, dir: &Path, names: &[String]) -> Result<PathBuf> {
    for name in names {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::io(op, format!("{}: none of {} found", dir.display(), names.join(", "))))
}

/// A stable 64-bit mix of a seed and tags (SplitMix64's finaliser applied per
/// word), so every (seed, epoch, index) gets its own independent stream.
pub fn derive_seed(seed: u64, tags: &[u64]) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let mut h = mix(seed);
    for &t in tags {
        h = mix(h ^ mix(t));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    #[test]
    fn gunzip_roundtrip_and_errors() {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"hello").unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(maybe_gunzip("t", gz.clone(), "f").unwrap(), b"hello");
        assert_eq!(maybe_gunzip("t", b"plain".to_vec(), "f").unwrap(), b"plain");
        let err = maybe_gunzip("t", gz[..gz.len() - 6].to_vec(), "f.gz").unwrap_err().to_string();
        assert!(err.contains("f.gz") && err.contains("gzip"), "{err}");
    }

    #[test]
    fn derived_seeds_differ() {
        assert_ne!(derive_seed(0, &[0]), derive_seed(0, &[1]));
        assert_ne!(derive_seed(0, &[1, 0]), derive_seed(0, &[0, 1]));
    }

    #[test]
    fn derived_seeds_are_splitmix64_and_so_the_same_on_every_platform_and_version() {
        // SplitMix64's published outputs for the state sequence 0, γ, 2γ
        // (γ = 0x9e37_79b9_7f4a_7c15): a resumed run depends on these staying put.
        assert_eq!(derive_seed(0, &[]), 0xe220_a839_7b1d_cdaf);
        assert_eq!(derive_seed(0x9e37_79b9_7f4a_7c15, &[]), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(derive_seed(0x3c6e_f372_fe94_f82a, &[]), 0x06c4_5d18_8009_454f);
    }
}
