//! ARCHITECTURE.md stays true: every path of its op → files table exists and
//! every file of the kernel contract is in the table; and the layers depend
//! one way (the backends name no op, no op, layer, model, optimizer or
//! trainer names a backend, only `dispatch!` lists them).

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The rows of the table under the `## Op → files` heading, as cells.
fn op_table() -> Vec<Vec<String>> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let section = doc.split("\n## Op → files").nth(1).expect("ARCHITECTURE.md has an '## Op → files' section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| family"))
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// The backticked paths (anything with a `/`) of a cell.
fn paths(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).filter(|s| s.contains('/')).collect()
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The code lines (comments and doc comments dropped) of every file under
/// `dir` that contain one of `needles`, as `file:line: text`.
fn code_lines_containing(dir: &str, needles: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for file in rust_files(&Path::new(ROOT).join(dir)) {
        let text = std::fs::read_to_string(&file).expect("source file");
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if needles.iter().any(|n| code.contains(n)) {
                hits.push(format!("{}:{}: {}", file.strip_prefix(ROOT).unwrap_or(&file).display(), i + 1, code));
            }
        }
    }
    hits
}

#[test]
fn every_path_in_the_op_table_exists() {
    let rows = op_table();
    assert!(rows.len() >= 14, "the op → files table has {} rows", rows.len());
    let mut checked = 0;
    for row in &rows {
        assert_eq!(row.len(), 8, "row {row:?} should have 8 cells");
        for cell in &row[1..] {
            for path in paths(cell) {
                assert!(
                    Path::new(ROOT).join(path).is_file(),
                    "ARCHITECTURE.md names {path} (family {}), which does not exist",
                    row[0]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 7 * rows.len(), "only {checked} paths in {} rows", rows.len());
}

#[test]
fn every_contract_file_is_in_the_op_table() {
    let rows = op_table();
    let listed: Vec<&str> = rows.iter().flat_map(|r| paths(&r[2])).collect();
    for file in rust_files(&Path::new(ROOT).join("src/backend/contract")) {
        if file.file_name().is_some_and(|n| n == "mod.rs") {
            continue;
        }
        let rel = file.strip_prefix(ROOT).expect("under the crate").to_string_lossy().replace('\\', "/");
        assert!(
            listed.contains(&rel.as_str()),
            "{rel} is a family of the kernel contract but has no row in ARCHITECTURE.md's op → files table"
        );
    }
}

#[test]
fn the_layers_depend_one_way() {
    // The value types depend on nothing but Error.
    let types = code_lines_containing("src/types", &["crate::"]);
    let upward: Vec<&String> = types
        .iter()
        .filter(|l| {
            l.replace("crate::Error", "")
                .replace("crate::Result", "")
                .replace("crate::{Error, Result}", "")
                .contains("crate::")
        })
        .collect();
    assert!(upward.is_empty(), "src/types must depend only on crate::Error:\n{upward:#?}");
    // The backends see layouts and storages, never the ops, the handle or autograd.
    let backend = code_lines_containing(
        "src/backend",
        &["crate::ops", "crate::tensor", "crate::autograd", "crate::Tensor", "crate::nn", "crate::optim"],
    );
    assert!(backend.is_empty(), "src/backend must not depend on the layers above it:\n{backend:#?}");
    // Nothing above the backends names one: they go through dispatch!.
    for dir in ["src/ops", "src/optim", "src/nn", "src/models", "src/train"] {
        let named = code_lines_containing(dir, &["backend::cpu", "backend::cuda", "simd::", "CpuStorage", "CudaStorage"]);
        assert!(named.is_empty(), "{dir} names a backend:\n{named:#?}");
    }
    // dispatch! (src/backend/mod.rs) is the one place that lists the backends.
    let cuda_arms: Vec<String> = [
        "src/ops",
        "src/optim",
        "src/nn",
        "src/models",
        "src/train",
        "src/tensor",
        "src/autograd",
        "src/testing",
        "src/checkpoint",
        "src/data",
    ]
    .iter()
    .flat_map(|d| code_lines_containing(d, &["Storage::Cuda"]))
    .collect();
    assert!(
        cuda_arms.is_empty(),
        "only dispatch! may match Storage::Cuda outside src/backend:\n{cuda_arms:#?}"
    );
}
