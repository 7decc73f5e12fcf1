//! Corrupted bytes never panic the loaders: truncations, flipped bytes (the
//! header's especially), appended garbage and plain noise, raw and gzipped,
//! give an error or a data set that is internally consistent.

use flate2::write::GzEncoder;
use proptest::prelude::*;
use std::io::Write;
use tamer::data::mnist::{self, encode_idx};
use tamer::data::{cifar, digits, CharDataset, ImageDataset};
use tamer::testing::proptest_config;

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// How to damage a file.
#[derive(Clone, Debug)]
enum Damage {
    /// Keep this fraction of the bytes.
    Truncate(f64),
    /// XOR bytes at (fraction of the header region, value); header bytes are the interesting ones.
    FlipHeader(Vec<(usize, u8)>),
    /// XOR bytes anywhere.
    Flip(Vec<(f64, u8)>),
    Append(Vec<u8>),
    /// Replace everything with noise.
    Noise(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0f64..1.0).prop_map(Damage::Truncate),
        prop::collection::vec((0usize..16, 1u8..=255), 1..4).prop_map(Damage::FlipHeader),
        prop::collection::vec((0.0f64..1.0, 1u8..=255), 1..6).prop_map(Damage::Flip),
        prop::collection::vec(any::<u8>(), 1..40).prop_map(Damage::Append),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Damage::Noise),
    ]
}

fn apply(bytes: &[u8], d: &Damage) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match d {
        Damage::Truncate(f) => b.truncate((f * b.len() as f64) as usize),
        Damage::FlipHeader(v) => {
            for &(i, x) in v {
                if i < b.len() {
                    b[i] ^= x;
                }
            }
        }
        Damage::Flip(v) => {
            for &(f, x) in v {
                let i = ((f * b.len() as f64) as usize).min(b.len().saturating_sub(1));
                if !b.is_empty() {
                    b[i] ^= x;
                }
            }
        }
        Damage::Append(g) => b.extend_from_slice(g),
        Damage::Noise(n) => b = n.clone(),
    }
    b
}

/// Damage the raw bytes, or gzip then damage (a broken archive), or damage then gzip (a valid archive of broken data).
fn damaged(bytes: &[u8], d: &Damage, mode: u8) -> Vec<u8> {
    match mode % 3 {
        0 => apply(bytes, d),
        1 => apply(&gz(bytes), d),
        _ => gz(&apply(bytes, d)),
    }
}

fn consistent(ds: &ImageDataset) {
    assert_eq!(ds.images.len(), ds.len() * ds.image_len());
    assert!(ds.labels.iter().all(|&l| l >= 0 && (l as usize) < ds.num_classes));
    assert!(ds.images.iter().all(|v| (0.0..=1.0).contains(v)));
}

fn mnist_files() -> (Vec<u8>, Vec<u8>) {
    let n = 6;
    let pixels: Vec<u8> = (0..n * 5 * 4).map(|k| (k * 13 % 256) as u8).collect();
    (encode_idx(&[n as u32, 5, 4], &pixels), encode_idx(&[n as u32], &[0, 1, 2, 3, 4, 9]))
}

proptest! {
    #![proptest_config(proptest_config(256))]

    #[test]
    fn idx_images_survive_corruption(d in damage(), mode in any::<u8>()) {
        let (imgs, labels) = mnist_files();
        match mnist::from_bytes(damaged(&imgs, &d, mode), labels, "imgs", "labels", "t") {
            Ok(ds) => consistent(&ds),
            Err(e) => prop_assert!(e.message.contains("imgs") || e.message.contains("labels"), "{}", e),
        }
    }

    #[test]
    fn idx_labels_survive_corruption(d in damage(), mode in any::<u8>()) {
        let (imgs, labels) = mnist_files();
        match mnist::from_bytes(imgs, damaged(&labels, &d, mode), "imgs", "labels", "t") {
            Ok(ds) => consistent(&ds),
            Err(e) => prop_assert!(e.message.contains("labels") || e.message.contains("imgs"), "{}", e),
        }
    }

    #[test]
    fn cifar_survives_corruption(d in damage(), mode in any::<u8>()) {
        let mut rec = vec![0u8; 2 * cifar::RECORD_BYTES];
        rec[0] = 4;
        rec[cifar::RECORD_BYTES] = 7;
        match cifar::from_batches(vec![("batch.bin".into(), damaged(&rec, &d, mode))], "t") {
            Ok(ds) => consistent(&ds),
            Err(e) => prop_assert!(e.message.contains("batch.bin") || e.message.contains("t:"), "{}", e),
        }
    }

    #[test]
    fn text_survives_corruption(d in damage(), mode in any::<u8>()) {
        let text = "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind";
        match CharDataset::from_bytes(damaged(text.as_bytes(), &d, mode), "t.txt") {
            Ok(ds) => {
                prop_assert!(!ds.is_empty());
                prop_assert!(ds.train.iter().chain(&ds.val).all(|&c| (c as usize) < ds.vocab_size()));
                prop_assert!(ds.chars.windows(2).all(|w| w[0] < w[1]));
            }
            Err(e) => prop_assert!(e.message.contains("t.txt"), "{}", e),
        }
    }

    #[test]
    fn digits_csv_survives_corruption(d in damage(), mode in any::<u8>()) {
        let text: String = (0..3).map(|r| format!("{}{}\n", "3,".repeat(64), r)).collect();
        if let Ok(ds) = digits::parse_gz(&damaged(text.as_bytes(), &d, mode | 1), "d.csv.gz") {
            prop_assert_eq!(ds.pixels.len(), ds.len() * digits::NUM_PIXELS);
            prop_assert!(ds.labels.iter().all(|&l| (0..10).contains(&l)));
        }
    }

    #[test]
    fn absurd_idx_counts_are_rejected_without_allocating(
        n in prop_oneof![any::<u32>(), 0u32..4], r in prop_oneof![any::<u32>(), 0u32..4], c in prop_oneof![any::<u32>(), 0u32..4], extra in 0usize..64,
    ) {
        // Whatever the header promises, only the actual bytes decide; the parse is
        // instant even when n·r·c is terabytes.
        let bytes = encode_idx(&[n, r, c], &vec![1u8; extra]);
        let ok = (n as u128) * (r as u128) * (c as u128) == extra as u128 && (n == 0 || (r > 0 && c > 0));
        let res = mnist::parse_images(&bytes, "f");
        prop_assert_eq!(res.is_ok(), ok);
    }
}
