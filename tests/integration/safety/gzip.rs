//! A gzip bomb is refused as soon as it inflates past the size its format
//! declares (the IDX header's dimensions, CIFAR-10's records per file, the
//! gzip trailer's ISIZE), with the declaration named in the error; it is not
//! read up to the 2 GiB limit first.

use flate2::write::GzEncoder;
use std::io::Write;
use tamer::data::mnist::{self, encode_idx};
use tamer::data::{cifar, digits, CharDataset};

/// The error's message; a bomb that was accepted fails the test (without printing the data set).
fn message<T>(r: tamer::Result<T>) -> String {
    match r {
        Ok(_) => panic!("the bomb was accepted"),
        Err(e) => e.to_string(),
    }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `gz(bytes)` with its trailer's ISIZE (the last 4 bytes) replaced.
fn gz_claiming(bytes: &[u8], isize: u32) -> Vec<u8> {
    let mut g = gz(bytes);
    let n = g.len();
    g[n - 4..].copy_from_slice(&isize.to_le_bytes());
    g
}

#[test]
fn an_idx_file_that_inflates_past_its_header_is_refused_early() {
    // The header says one 2×2 image (20 bytes in all); 32 MiB of zeros follow.
    let mut bomb = encode_idx(&[1, 2, 2], &[0; 4]);
    bomb.resize(32 << 20, 0);
    let labels = gz(&encode_idx(&[1], &[3]));
    let e = message(mnist::from_bytes(gz(&bomb), labels.clone(), "bomb-images.gz", "labels.gz", "t"));
    assert!(
        e.contains("bomb-images.gz") && e.contains("20 bytes its IDX header declares") && e.contains("stopped after 21 bytes"),
        "{e}"
    );
    // The honest file reads.
    let ok = mnist::from_bytes(gz(&encode_idx(&[1, 2, 2], &[0, 51, 102, 255])), labels, "i.gz", "l.gz", "t").unwrap();
    assert_eq!(ok.images, vec![0.0, 0.2, 0.4, 1.0]);
}

#[test]
fn a_cifar_batch_past_10000_records_is_refused_early() {
    let bomb = vec![0u8; (cifar::RECORDS_PER_FILE + 1) * cifar::RECORD_BYTES];
    let e = message(cifar::from_batches(vec![("data_batch_1.bin.gz".into(), gz(&bomb))], "t"));
    assert!(
        e.contains("data_batch_1.bin.gz") && e.contains("10000 records") && e.contains("stopped after 30730001 bytes"),
        "{e}"
    );
}

#[test]
fn a_gzip_that_inflates_past_its_trailer_is_refused_early() {
    // The trailer claims 10 bytes; the stream holds 4 MiB.
    let text = "to be or not to be\n".repeat(220_000);
    let e = message(CharDataset::from_bytes(gz_claiming(text.as_bytes(), 10), "bomb.txt.gz"));
    assert!(
        e.contains("bomb.txt.gz") && e.contains("10 bytes its gzip trailer declares") && e.contains("stopped after 11 bytes"),
        "{e}"
    );
    let csv = format!("{}3\n", "0,".repeat(64)).repeat(50_000);
    let e = message(digits::parse_gz(&gz_claiming(csv.as_bytes(), 64), "digits.csv.gz"));
    assert!(e.contains("64 bytes its gzip trailer declares"), "{e}");
    // Honest files read.
    assert_eq!(CharDataset::from_bytes(gz(b"hello world"), "ok.gz").unwrap().len(), 11);
    assert_eq!(digits::parse_gz(&gz(&csv.as_bytes()[..130]), "d").unwrap().len(), 1);
}

#[test]
fn a_large_gzip_is_bounded_by_its_trailer_too() {
    // Stored (uncompressed) blocks make a stream past 4.16 MB, where 1032 · n
    // (DEFLATE's largest ratio) no longer fits below 4 GiB; anything the loaders
    // accept is under 2 GiB, so the trailer's ISIZE is still the exact size.
    let text = "to be or not to be\n".repeat(250_000);
    let stored = |bytes: &[u8]| {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::none());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    let mut bomb = stored(text.as_bytes());
    assert!(bomb.len() > 4_200_000, "{} bytes", bomb.len());
    let n = bomb.len();
    bomb[n - 4..].copy_from_slice(&1000u32.to_le_bytes());
    let e = message(CharDataset::from_bytes(bomb, "big-bomb.txt.gz"));
    assert!(
        e.contains("big-bomb.txt.gz") && e.contains("1000 bytes its gzip trailer declares") && e.contains("stopped after 1001 bytes"),
        "{e}"
    );
    // The honest file of that size reads.
    assert_eq!(CharDataset::from_bytes(stored(text.as_bytes()), "big.txt.gz").unwrap().len(), text.len());
}
