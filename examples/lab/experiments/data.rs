//! Where the lab finds the data sets that are not vendored: MNIST's t10k files
//! and tinyshakespeare.
//!
//! `--data-dir DIR` names the folder (holding `mnist/` and
//! `tinyshakespeare.txt`); without it the lab looks in `../shared/data` beside
//! the repository, then in `datasets/`, where `scripts/download_data.sh` puts
//! them. An experiment whose data is missing is skipped with the reason and
//! the command that fetches it.

use std::path::PathBuf;
use std::sync::OnceLock;

static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Use `dir` for the rest of the process (the first call wins: the runner
/// calls it once, from `--data-dir`).
pub fn set_data_dir(dir: PathBuf) {
    let _ = DATA_DIR.set(dir);
}

/// The folder holding `mnist/` and `tinyshakespeare.txt`.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = DATA_DIR.get() {
        return dir.clone();
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = repo.join("..").join("shared").join("data");
    if shared.is_dir() {
        shared
    } else {
        repo.join("datasets")
    }
}

/// The MNIST folder (the t10k files are the ones the lab reads).
pub fn mnist_dir() -> PathBuf {
    data_dir().join("mnist")
}

/// tinyshakespeare.
pub fn shakespeare_path() -> PathBuf {
    data_dir().join("tinyshakespeare.txt")
}

/// Why the MNIST experiments cannot run here, if so.
pub fn missing_mnist() -> Option<String> {
    missing_mnist_in(&mnist_dir())
}

/// Why MNIST's t10k files cannot be read from `dir` (gzipped or not), if so.
fn missing_mnist_in(dir: &std::path::Path) -> Option<String> {
    let present = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
        .iter()
        .all(|name| dir.join(format!("{name}.gz")).exists() || dir.join(name).exists());
    (!present).then(|| {
        format!(
            "MNIST's t10k files are not in {} (`scripts/download_data.sh --only mnist` fetches them into datasets/mnist; \
             --data-dir names another folder)",
            dir.display()
        )
    })
}

/// Why the text experiments cannot run here, if so.
pub fn missing_shakespeare() -> Option<String> {
    missing_shakespeare_at(&shakespeare_path())
}

fn missing_shakespeare_at(path: &std::path::Path) -> Option<String> {
    (!path.exists()).then(|| {
        format!(
            "tinyshakespeare is not at {} (`scripts/download_data.sh --only shakespeare` fetches it into datasets/; \
             --data-dir names another folder)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named_with_the_command_that_fetches_them() {
        let dir = std::env::temp_dir().join(format!("tamer-lab-data-{}", std::process::id()));
        let mnist = dir.join("mnist");
        std::fs::create_dir_all(&mnist).unwrap();
        let reason = missing_mnist_in(&mnist).unwrap();
        assert!(
            reason.contains(&mnist.display().to_string()) && reason.contains("download_data.sh --only mnist"),
            "{reason}"
        );
        // One of the two files is not enough; both (gzipped or not) are.
        std::fs::write(mnist.join("t10k-images-idx3-ubyte.gz"), b"").unwrap();
        assert!(missing_mnist_in(&mnist).is_some());
        std::fs::write(mnist.join("t10k-labels-idx1-ubyte"), b"").unwrap();
        assert_eq!(missing_mnist_in(&mnist), None);

        let text = dir.join("tinyshakespeare.txt");
        let reason = missing_shakespeare_at(&text).unwrap();
        assert!(reason.contains("download_data.sh --only shakespeare"), "{reason}");
        std::fs::write(&text, b"to be").unwrap();
        assert_eq!(missing_shakespeare_at(&text), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
