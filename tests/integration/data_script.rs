//! scripts/download_data.sh without a network: argument handling and the
//! checksum verification (`--verify-only`) on local files.

use crate::common::{shared_data_files, skip};
use std::path::PathBuf;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/download_data.sh");

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tamer-script-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// (exit code, stdout + stderr), or None when bash is unavailable.
fn run(args: &[&str]) -> Option<(i32, String)> {
    let out = match Command::new("bash").arg(SCRIPT).args(args).output() {
        Ok(o) => o,
        Err(e) => {
            skip(&format!("cannot run bash: {e}"));
            return None;
        }
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some((out.status.code().unwrap_or(-1), text))
}

#[test]
fn arguments() {
    let Some((code, out)) = run(&["--help"]) else { return };
    assert_eq!(code, 0);
    assert!(out.contains("--verify-only") && out.contains("--only"), "{out}");
    let (code, out) = run(&["--bogus"]).unwrap();
    assert_eq!(code, 2);
    assert!(out.contains("unknown argument '--bogus'"), "{out}");
    let (code, out) = run(&["--only", "mnist,imagenet", "--verify-only"]).unwrap();
    assert_eq!(code, 2);
    assert!(out.contains("unknown data set 'imagenet'"), "{out}");
    let (code, out) = run(&["--dir"]).unwrap();
    assert_eq!(code, 2);
    assert!(out.contains("--dir needs a directory"), "{out}");
}

#[test]
fn verify_only_reports_missing_and_mismatched_files() {
    let d = temp_dir("fake");
    let dir = d.to_str().unwrap();
    let Some((code, out)) = run(&["--dir", dir, "--verify-only"]) else { return };
    assert_eq!(code, 1, "{out}");
    for f in [
        "mnist/train-images-idx3-ubyte.gz",
        "mnist/t10k-labels-idx1-ubyte.gz",
        "cifar-10-binary.tar.gz",
        "tinyshakespeare.txt",
    ] {
        assert!(out.contains(&format!("missing   {}", d.join(f).display())), "{f}: {out}");
    }
    // A fake file with the right name but the wrong bytes.
    std::fs::write(d.join("tinyshakespeare.txt"), "To be or not to be").unwrap();
    let (code, out) = run(&["--dir", dir, "--verify-only", "--only=shakespeare"]).unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("MISMATCH") && out.contains("expected 86c4e6aa"), "{out}");
    // A fake gzip file: neither the archive nor its content matches.
    std::fs::create_dir_all(d.join("mnist")).unwrap();
    let gz = Command::new("gzip").arg("-c").arg(d.join("tinyshakespeare.txt")).output().unwrap().stdout;
    std::fs::write(d.join("mnist/t10k-labels-idx1-ubyte.gz"), gz).unwrap();
    let (_, out) = run(&["--dir", dir, "--verify-only", "--only", "mnist"]).unwrap();
    assert!(out.contains("MISMATCH") && out.contains("t10k-labels-idx1-ubyte.gz: sha256"), "{out}");
    // Extracted CIFAR batches without the archive are checked by size.
    let b = d.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("test_batch.bin"), vec![0u8; 30_730_000]).unwrap();
    std::fs::write(b.join("data_batch_1.bin"), vec![0u8; 3073]).unwrap();
    let (code, out) = run(&["--dir", dir, "--verify-only", "--only", "cifar10"]).unwrap();
    assert_eq!(code, 1);
    assert!(out.contains("test_batch.bin (size)"), "{out}");
    assert!(out.contains("data_batch_1.bin: 3073 bytes, expected 30730000"), "{out}");
    assert!(out.contains(&format!("missing   {}", b.join("data_batch_2.bin").display())), "{out}");
}

#[test]
fn verify_only_accepts_the_shared_copies() {
    let Some([shakespeare, mnist_images, mnist_labels]) =
        shared_data_files(&["tinyshakespeare.txt", "mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz"])
            .and_then(|found| <[PathBuf; 3]>::try_from(found).ok())
    else {
        return;
    };
    let d = temp_dir("shared");
    std::fs::create_dir_all(d.join("mnist")).unwrap();
    std::fs::copy(shakespeare, d.join("tinyshakespeare.txt")).unwrap();
    for source in [mnist_images, mnist_labels] {
        std::fs::copy(&source, d.join("mnist").join(source.file_name().unwrap())).unwrap();
    }
    let dir = d.to_str().unwrap();
    let Some((code, out)) = run(&["--dir", dir, "--verify-only", "--only", "shakespeare"]) else {
        return;
    };
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("all requested data verified"), "{out}");
    // The shared MNIST copies are re-compressed: they pass on their content's checksum.
    let (code, out) = run(&["--dir", dir, "--verify-only", "--only", "mnist"]).unwrap();
    assert_eq!(code, 1, "the train files are absent: {out}");
    assert!(out.contains("t10k-images-idx3-ubyte.gz (re-compressed copy; content sha256 matches)"), "{out}");
    assert!(out.contains("t10k-labels-idx1-ubyte.gz (re-compressed copy"), "{out}");
    assert!(out.contains("missing") && out.contains("train-images-idx3-ubyte.gz"), "{out}");
}
