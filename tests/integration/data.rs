//! Data set loaders: small synthetic MNIST/CIFAR/text files in a temp
//! directory, error messages for bad files, and the real files in
//! ../shared/data when present (a visible skip otherwise, a failure under
//! TAMER_REQUIRE_DATA=1).

use crate::common::shared_data;
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::{Path, PathBuf};
use tamer::data::mnist::{self, encode_idx};
use tamer::data::{cifar, digits, CharDataset, ImageDataset, Split, TextSplit};
use tamer::ErrorKind;

/// A fresh, empty temporary directory for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tamer-data-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `n` synthetic 4×3 images: pixel (i, k) = (7·i + k) mod 256; labels i mod 10.
fn synthetic_mnist(n: usize) -> (Vec<u8>, Vec<u8>) {
    let (rows, cols) = (4, 3);
    let pixels: Vec<u8> = (0..n * rows * cols)
        .map(|k| ((7 * (k / (rows * cols)) + k % (rows * cols)) % 256) as u8)
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    (encode_idx(&[n as u32, rows as u32, cols as u32], &pixels), encode_idx(&[n as u32], &labels))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn mnist_raw_and_gzip_load_the_same() {
    let (imgs, labels) = synthetic_mnist(12);
    let raw = temp_dir("mnist-raw");
    write(&raw, "train-images-idx3-ubyte", &imgs);
    write(&raw, "train-labels-idx1-ubyte", &labels);
    let zipped = temp_dir("mnist-gz");
    write(&zipped, "train-images-idx3-ubyte.gz", &gz(&imgs));
    write(&zipped, "train-labels-idx1-ubyte.gz", &gz(&labels));
    let a = mnist::load(&raw, Split::Train).unwrap();
    let b = mnist::load(&zipped, Split::Train).unwrap();
    assert_eq!(a.images, b.images);
    assert_eq!(a.len(), 12);
    assert_eq!(a.shape, (1, 4, 3));
    assert_eq!(a.labels[..3], [0, 1, 2]);
    // Image 1, pixel 2 = (7 + 2) / 255.
    assert!((a.image(1)[2] - 9.0 / 255.0).abs() < 1e-7);
    let (x, y) = a.tensors().unwrap();
    assert_eq!(x.dims(), &[12, 1, 4, 3]);
    assert_eq!(y.dims(), &[12]);
    // The test split is missing: the error names the directory and the files tried.
    let e = mnist::load(&raw, Split::Test).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(e.message.contains("t10k-images-idx3-ubyte.gz"), "{e}");
}

#[test]
fn mnist10k_splits_first_8000_and_last_2000() {
    let (imgs, labels) = synthetic_mnist(10_000);
    let d = temp_dir("mnist10k");
    write(&d, "t10k-images-idx3-ubyte.gz", &gz(&imgs));
    write(&d, "t10k-labels-idx1-ubyte", &labels);
    let (train, test) = mnist::mnist10k(&d).unwrap();
    assert_eq!((train.len(), test.len()), (8000, 2000));
    assert_eq!(test.labels[0], (8000 % 10) as i64);
    assert!((test.image(0)[0] - ((7 * 8000) % 256) as f32 / 255.0).abs() < 1e-7);
    // Too few images for the split.
    let (imgs, labels) = synthetic_mnist(100);
    let d = temp_dir("mnist10k-small");
    write(&d, "t10k-images-idx3-ubyte", &imgs);
    write(&d, "t10k-labels-idx1-ubyte", &labels);
    assert!(mnist::mnist10k(&d).unwrap_err().to_string().contains("8000"));
}

#[test]
fn mnist_bad_files_are_errors_naming_the_file() {
    let (imgs, labels) = synthetic_mnist(5);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", imgs[..imgs.len() - 3].to_vec(), "truncated"),
        ("trailing", [imgs.clone(), vec![0]].concat(), "mis-sized"),
        ("magic", [vec![1, 2, 3, 4], imgs[4..].to_vec()].concat(), "magic"),
        ("header", imgs[..6].to_vec(), "header"),
        ("badgz", [vec![0x1f, 0x8b, 8, 0], vec![7; 20]].concat(), "gzip"),
        ("huge", encode_idx(&[4_000_000_000, 28, 28], &[0; 16]), "truncated"),
    ];
    for (tag, bytes, expect) in cases {
        let d = temp_dir(&format!("mnist-bad-{tag}"));
        write(&d, "train-images-idx3-ubyte", &bytes);
        write(&d, "train-labels-idx1-ubyte", &labels);
        let e = mnist::load(&d, Split::Train).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Format, "{tag}: {e}");
        assert!(e.message.contains("train-images-idx3-ubyte"), "{tag}: {e}");
        assert!(e.message.contains(expect), "{tag}: expected {expect:?} in {e}");
    }
    // Labels that disagree with the images in count, or are not digits.
    let d = temp_dir("mnist-bad-labels");
    write(&d, "train-images-idx3-ubyte", &imgs);
    write(&d, "train-labels-idx1-ubyte", &encode_idx(&[4], &[0, 1, 2, 3]));
    assert!(mnist::load(&d, Split::Train).unwrap_err().to_string().contains("4 labels"));
    write(&d, "train-labels-idx1-ubyte", &encode_idx(&[5], &[0, 1, 2, 3, 200]));
    let e = mnist::load(&d, Split::Train).unwrap_err().to_string();
    assert!(e.contains("label 200") && e.contains("train-labels-idx1-ubyte"), "{e}");
}

fn cifar_bytes(n: usize, first_label: u8) -> Vec<u8> {
    let mut b = Vec::with_capacity(n * cifar::RECORD_BYTES);
    for i in 0..n {
        b.push((first_label as usize + i) as u8 % 10);
        b.extend((0..cifar::IMAGE_BYTES).map(|k| ((i + k) % 256) as u8));
    }
    b
}

#[test]
fn cifar_batches_load() {
    let root = temp_dir("cifar");
    let d = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    for i in 1..=5 {
        write(&d, &format!("data_batch_{i}.bin"), &cifar_bytes(3, i as u8));
    }
    write(&d, "test_batch.bin", &cifar_bytes(2, 0));
    // The archive's parent folder and the batches folder both work.
    let train = cifar::load(&root, Split::Train).unwrap();
    assert_eq!(train.len(), 15);
    assert_eq!(train.shape, (3, 32, 32));
    assert_eq!(train.labels[..4], [1, 2, 3, 2]);
    assert_eq!(train.class_names.as_ref().unwrap()[3], "cat");
    // Record 1 of batch 1: red channel pixel 0 is byte 1, green pixel 0 is byte 1 + 1024.
    assert!((train.image(1)[0] - 1.0 / 255.0).abs() < 1e-7);
    assert!((train.image(1)[1024] - (1025 % 256) as f32 / 255.0).abs() < 1e-7);
    let test = cifar::load(&d, Split::Test).unwrap();
    assert_eq!(test.labels, vec![0, 1]);
    // A truncated batch names the file.
    write(&d, "test_batch.bin", &cifar_bytes(2, 0)[..5000]);
    let e = cifar::load(&d, Split::Test).unwrap_err();
    assert!(e.message.contains("test_batch.bin") && e.message.contains("3073-byte records"), "{e}");
    std::fs::remove_file(d.join("data_batch_4.bin")).unwrap();
    let e = cifar::load(&d, Split::Train).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(e.message.contains("data_batch_4.bin"), "{e}");
}

#[test]
fn char_dataset_as_nanogpt() {
    let text = "abcabcabcd".repeat(10); // 100 characters
    let ds = CharDataset::from_text(&text, "t").unwrap();
    assert_eq!(ds.chars, vec!['a', 'b', 'c', 'd']);
    assert_eq!((ds.train.len(), ds.val.len()), (90, 10));
    assert_eq!(ds.decode(&ds.encode("dcba").unwrap()).unwrap(), "dcba");
    assert!(ds.encode("abz").unwrap_err().to_string().contains("'z'"));
    assert!(ds.decode(&[4]).is_err());
    // Seeded batches: same (seed, step) → same batch, y = x shifted by one.
    let (x, y) = ds.batch_at(TextSplit::Train, 3, 8, 5, 11).unwrap();
    let (x2, _) = ds.batch_at(TextSplit::Train, 3, 8, 5, 11).unwrap();
    let (x3, _) = ds.batch_at(TextSplit::Train, 3, 8, 5, 12).unwrap();
    let (xv, yv) = (x.to_vec::<i64>().unwrap(), y.to_vec::<i64>().unwrap());
    assert_eq!(xv, x2.to_vec::<i64>().unwrap());
    assert_ne!(xv, x3.to_vec::<i64>().unwrap());
    for r in 0..3 {
        assert_eq!(xv[r * 8 + 1..r * 8 + 8], yv[r * 8..r * 8 + 7]);
    }
    // Windows must fit: the validation split has 10 characters.
    assert!(ds.batch_at(TextSplit::Val, 1, 10, 0, 0).unwrap_err().to_string().contains("block_size 10"));
    assert!(ds.batch_at(TextSplit::Val, 1, 9, 0, 0).is_ok());
    // Files: UTF-8 (optionally gzip) or an error naming the file.
    let d = temp_dir("text");
    write(&d, "a.txt.gz", &gz("héllo wörld".as_bytes()));
    assert_eq!(CharDataset::load(d.join("a.txt.gz")).unwrap().vocab_size(), 9);
    write(&d, "bad.txt", &[0x66, 0xff, 0xfe]);
    let e = CharDataset::load(d.join("bad.txt")).unwrap_err().to_string();
    assert!(e.contains("bad.txt") && e.contains("UTF-8"), "{e}");
    write(&d, "empty.txt", b"");
    assert!(CharDataset::load(d.join("empty.txt")).unwrap_err().to_string().contains("empty"));
}

#[test]
fn image_dataset_helpers() {
    let (train, test) = digits::load_images().unwrap();
    assert_eq!(train.len() + test.len(), 1797);
    assert_eq!(train.shape, (1, 8, 8));
    let hist = test.label_histogram();
    assert_eq!(hist.iter().sum::<usize>(), test.len());
    let sub = train.subset(&[5, 0, 5]).unwrap();
    assert_eq!(sub.labels, vec![train.labels[5], train.labels[0], train.labels[5]]);
    assert_eq!(sub.image(2), train.image(5));
    assert!(train.subset(&[train.len()]).unwrap_err().to_string().contains("out of range"));
    let (a, b) = train.random_split(0.25, 3).unwrap();
    assert_eq!(a.len() + b.len(), train.len());
    assert_eq!(a.len(), (0.25 * train.len() as f64).round() as usize);
    assert_eq!(train.random_split(0.25, 3).unwrap().0.labels, a.labels);
    let (mean, std) = train.channel_stats();
    let n = train.images.len() as f64;
    let m: f64 = train.images.iter().map(|&v| v as f64).sum::<f64>() / n;
    let s = (train.images.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n).sqrt();
    assert!((mean[0] as f64 - m).abs() < 1e-5 && (std[0] as f64 - s).abs() < 1e-5);
    // Inconsistent buffers are errors.
    assert!(ImageDataset::new("x", vec![0.0; 7], vec![0, 1], (1, 2, 2), 2).is_err());
    assert!(ImageDataset::new("x", vec![0.0; 8], vec![0, 2], (1, 2, 2), 2)
        .unwrap_err()
        .to_string()
        .contains("label 2"));
}

#[test]
fn shared_mnist_t10k() {
    let Some(dir) = shared_data("mnist/t10k-images-idx3-ubyte.gz").and_then(|p| p.parent().map(Path::to_path_buf)) else {
        return;
    };
    let test = mnist::load(&dir, Split::Test).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.shape, (1, 28, 28));
    assert_eq!(test.labels[0], 7);
    // MNIST's published test label histogram.
    assert_eq!(test.label_histogram(), vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    assert!(test.images.iter().all(|v| (0.0..=1.0).contains(v)));
    let (mean, std) = test.channel_stats();
    println!("mnist t10k mean {:.4} std {:.4}", mean[0], std[0]);
    assert!((mean[0] - 0.1325).abs() < 0.002 && (std[0] - 0.3105).abs() < 0.002, "{mean:?} {std:?}");
    let (train, test) = mnist::mnist10k(&dir).unwrap();
    assert_eq!((train.len(), test.len()), (8000, 2000));
    assert_eq!(train.labels[0], 7);
}

#[test]
fn shared_tinyshakespeare() {
    let Some(path) = shared_data("tinyshakespeare.txt") else {
        return;
    };
    let ds = CharDataset::load(&path).unwrap();
    assert_eq!(ds.len(), 1_115_394);
    assert_eq!(ds.vocab_size(), 65);
    // nanoGPT's prepare.py prints these.
    assert_eq!((ds.train.len(), ds.val.len()), (1_003_854, 111_540));
    assert_eq!(
        ds.chars.iter().collect::<String>(),
        "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    );
    assert_eq!(ds.decode(&ds.encode("First Citizen").unwrap()).unwrap(), "First Citizen");
    assert_eq!(
        ds.decode(&ds.train.iter().take(14).map(|&c| c as i64).collect::<Vec<_>>()).unwrap(),
        "First Citizen:"
    );
}

#[test]
fn shared_digits_file_matches_the_embedded_copy() {
    let Some(path) = shared_data("digits.csv.gz") else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let d = digits::parse_gz(&bytes, "shared digits.csv.gz").unwrap();
    assert_eq!(d.len(), 1797);
    assert_eq!(d.pixels, digits::load().unwrap().pixels);
}
