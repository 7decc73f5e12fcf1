//! ARCHITECTURE.md stays true: every path of its op → files table exists and
//! every file of the kernel contract is in the table; and the layers depend
//! one way: each module names only the modules below it (`MAY_USE`), the
//! layers below the ops call no op, and nothing above the backends names one.

use std::collections::{HashMap, HashSet};
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

/// A source file: its path relative to the crate, its code lines (comments
/// `//`, `///`, `//!`, so doc examples too, are dropped; the line numbers
/// kept) and the same lines with the text of string literals removed.
struct Source {
    rel: String,
    lines: Vec<(usize, String)>,
    code: Vec<(usize, String)>,
}

/// `line` without the contents of its string literals (`"a.b()"` → `""`),
/// so a message that quotes a method is not a call.
fn without_strings(line: &str) -> String {
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for c in line.chars() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    in_string = false;
                    out.push(c);
                }
                _ => {}
            }
        } else {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

fn sources(dir: &str) -> Vec<Source> {
    rust_files(&Path::new(ROOT).join(dir))
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).expect("source file");
            let rel = file.strip_prefix(ROOT).expect("under the crate").to_string_lossy().replace('\\', "/");
            // A unit-test module (`#[cfg(test)] mod tests { .. }`, at the end of
            // its file) is not part of the layers: tests may use any of them.
            let mut all: Vec<&str> = text.lines().collect();
            if let Some(at) = all
                .windows(2)
                .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_end().ends_with('{') && w[1].trim_start().starts_with("mod "))
            {
                all.truncate(at);
            }
            let lines: Vec<(usize, String)> = all
                .into_iter()
                .enumerate()
                .filter(|(_, l)| !l.trim_start().starts_with("//"))
                .map(|(i, l)| (i + 1, l.split(" //").next().unwrap_or(l).to_string()))
                .collect();
            let code = lines.iter().map(|(n, l): &(usize, String)| (*n, without_strings(l))).collect();
            Source { rel, lines, code }
        })
        .collect()
}

/// The code lines of every file under `dir` that contain one of `needles`,
/// as `file:line: text`.
fn code_lines_containing(dir: &str, needles: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for src in sources(dir) {
        for (n, code) in &src.lines {
            if needles.iter().any(|needle| code.contains(needle)) {
                hits.push(format!("{}:{n}: {}", src.rel, code.trim()));
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

// ---- the direction of dependency ---------------------------------------------

/// What models and optim (one layer) may use.
const BELOW_MODELS_AND_OPTIM: &[&str] = &[
    "error",
    "types",
    "profile",
    "backend",
    "tensor",
    "autograd",
    "autocast",
    "ops",
    "dist",
    "nn",
    "checkpoint",
];

/// The crate's modules (the first path segment under `src/`) and the modules
/// each may name. This is ARCHITECTURE.md's layer diagram, written out:
/// everything a module may use sits below it.
const MAY_USE: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("types", &["error"]),
    ("profile", &["error", "types"]),
    ("plot", &["error", "types"]),
    ("backend", &["error", "types", "profile"]),
    ("autocast", &["error", "types"]),
    ("tensor", &["error", "types", "profile", "backend", "autograd"]),
    ("autograd", &["error", "types", "profile", "backend", "tensor"]),
    ("ops", &["error", "types", "profile", "backend", "tensor", "autograd", "autocast"]),
    ("dist", &["error", "types", "profile", "backend", "tensor", "autograd", "autocast", "ops"]),
    ("testing", &["error", "types", "profile", "backend", "tensor", "autograd", "autocast", "ops"]),
    ("nn", &["error", "types", "profile", "backend", "tensor", "autograd", "autocast", "ops"]),
    ("data", &["error", "types", "profile", "backend", "tensor", "autograd", "autocast", "ops"]),
    (
        "checkpoint",
        &["error", "types", "profile", "backend", "tensor", "autograd", "autocast", "ops", "nn"],
    ),
    ("models", BELOW_MODELS_AND_OPTIM),
    ("optim", BELOW_MODELS_AND_OPTIM),
    (
        "diagnostics",
        &[
            "error",
            "types",
            "profile",
            "backend",
            "tensor",
            "autograd",
            "autocast",
            "ops",
            "nn",
            "checkpoint",
            "models",
            "optim",
        ],
    ),
    (
        "train",
        &[
            "error",
            "types",
            "profile",
            "backend",
            "tensor",
            "autograd",
            "autocast",
            "ops",
            "nn",
            "checkpoint",
            "models",
            "optim",
            "data",
            "diagnostics",
            "dist",
        ],
    ),
];

/// The module a source file belongs to: `src/tensor/view.rs` → `tensor`,
/// `src/autocast.rs` → `autocast`.
fn module_of(rel: &str) -> &str {
    let under_src = rel.strip_prefix("src/").expect("a file under src/");
    let first = under_src.split('/').next().expect("a path");
    first.strip_suffix(".rs").unwrap_or(first)
}

/// What a name at the crate root stands for: a module itself, an item
/// re-exported by `src/lib.rs` (`crate::Tensor` is `tensor`'s), or an
/// exported macro (`crate::dispatch!` is `backend`'s).
fn root_names() -> HashMap<String, String> {
    let mut names: HashMap<String, String> = MAY_USE.iter().map(|(m, _)| (m.to_string(), m.to_string())).collect();
    let lib = std::fs::read_to_string(Path::new(ROOT).join("src/lib.rs")).expect("src/lib.rs");
    for line in lib.lines().filter_map(|l| l.trim().strip_prefix("pub use ")) {
        let line = line.trim_end_matches(';');
        let module = line.split("::").next().expect("a path").to_string();
        let items = match line.find('{') {
            Some(i) => line[i + 1..].trim_end_matches('}').to_string(),
            None => line.rsplit("::").next().expect("an item").to_string(),
        };
        for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            names.insert(item.to_string(), module.clone());
        }
    }
    for src in sources("src") {
        let mut exported = false;
        for (_, code) in &src.lines {
            if code.contains("#[macro_export]") {
                exported = true;
            } else if let Some(rest) = code.trim().strip_prefix("macro_rules! ") {
                if exported {
                    let name = rest.split(|c: char| !c.is_alphanumeric() && c != '_').next().expect("a macro name");
                    names.insert(name.to_string(), module_of(&src.rel).to_string());
                }
                exported = false;
            }
        }
    }
    names
}

/// The first path segments after each `crate::` (or `$crate::`) of a line,
/// with groups expanded: `use crate::{tensor::Tensor, Error}` names `tensor`
/// and `Error`.
fn crate_paths(code: &str, root: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(root) {
        if root == "super::" && code[..at].ends_with("::") {
            continue; // `super::super::` is counted once, and `x::super` is not a root
        }
        let rest = &code[at + root.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item) = (0usize, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.push(first_segment(&item));
        } else {
            out.push(first_segment(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn first_segment(path: &str) -> String {
    path.trim().split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or("").to_string()
}

/// The files of unit-test modules declared out of line (`#[cfg(test)] mod
/// tests;`): like the inline ones, they may use any layer.
fn test_module_files(all: &[Source]) -> HashSet<String> {
    let mut files = HashSet::new();
    for src in all {
        // The directory a file's child modules live in.
        let dir = match src.rel.strip_suffix("/mod.rs").or_else(|| src.rel.strip_suffix("/lib.rs")) {
            Some(dir) => dir.to_string(),
            None => src.rel.trim_end_matches(".rs").to_string(),
        };
        for pair in src.lines.windows(2) {
            let declared = pair[1]
                .1
                .trim()
                .trim_start_matches("pub ")
                .strip_prefix("mod ")
                .and_then(|m| m.strip_suffix(';'));
            if let (true, Some(name)) = (pair[0].1.trim() == "#[cfg(test)]", declared) {
                files.insert(format!("{dir}/{name}.rs"));
                files.insert(format!("{dir}/{name}/mod.rs"));
            }
        }
    }
    files
}

/// Every module names only modules below it. Checked on `use crate::...`,
/// fully qualified `crate::x::` paths, `$crate::` in macros and the root's
/// re-exports and macros. What it cannot see is a method call: `x.add(y)` in
/// `src/autograd` reaches `ops` without naming it (see the next test).
#[test]
fn each_module_names_only_the_modules_below_it() {
    let allowed: HashMap<&str, &[&str]> = MAY_USE.iter().copied().collect();
    let names = root_names();
    let all = sources("src");
    let tests = test_module_files(&all);
    let mut violations = Vec::new();
    let mut checked = 0;
    for src in all.iter().filter(|s| !tests.contains(&s.rel)) {
        let module = module_of(&src.rel);
        if module == "lib" {
            continue; // the root declares and re-exports every module
        }
        let may = allowed
            .get(module)
            .unwrap_or_else(|| panic!("{} is in a module ({module}) missing from MAY_USE", src.rel));
        // In a module's top file, `super::` is the crate root.
        let top_file = src.rel == format!("src/{module}.rs") || src.rel == format!("src/{module}/mod.rs");
        for (n, code) in &src.code {
            let mut named = crate_paths(code, "crate::");
            if top_file {
                named.extend(crate_paths(code, "super::"));
            }
            for name in named {
                let target = names
                    .get(&name)
                    .unwrap_or_else(|| panic!("{}:{n}: crate::{name} is neither a module nor a root re-export or macro", src.rel));
                checked += 1;
                if target != module && !may.contains(&target.as_str()) {
                    violations.push(format!("{}:{n}: {module} names {target} ({})", src.rel, code.trim()));
                }
            }
        }
    }
    assert!(checked > 500, "only {checked} crate paths found: is the scan broken?");
    assert!(violations.is_empty(), "dependencies that point up the layers:\n{}", violations.join("\n"));
}

/// The methods the ops add to `Tensor` are not called by the layers below
/// them (the tensor handle, autograd, autocast). A name is matched as
/// `.name(`, so a method of a number or a `Vec` with an op's name (`max`)
/// is a false alarm, listed here with its line; a call through a variable
/// of another name is not seen at all.
#[test]
fn the_layers_below_the_ops_call_no_op() {
    const NOT_A_TENSOR: &[(&str, &str)] = &[
        ("src/tensor/create.rs", "((end - start) / step).ceil().max(0.0)"),
        ("src/tensor/host.rs", "self.dims()[1].max(1)"),
    ];
    let mut op_methods = HashSet::new();
    for src in sources("src/ops") {
        for (_, code) in &src.lines {
            if let Some(rest) = code.trim().strip_prefix("pub fn ").or_else(|| code.trim().strip_prefix("pub(crate) fn ")) {
                op_methods.insert(first_segment(rest));
            }
        }
    }
    assert!(op_methods.len() > 50, "found only {} op methods", op_methods.len());
    let mut calls = Vec::new();
    for src in ["src/tensor", "src/autograd"]
        .into_iter()
        .flat_map(sources)
        .chain(sources("src").into_iter().filter(|s| s.rel == "src/autocast.rs"))
    {
        for (n, code) in &src.code {
            for (at, _) in code.match_indices('.') {
                let name = first_segment(&code[at + 1..]);
                let is_call = code[at + 1 + name.len()..].starts_with('(');
                let excused = NOT_A_TENSOR.iter().any(|(file, text)| *file == src.rel && code.contains(text));
                if is_call && op_methods.contains(&name) && !excused {
                    calls.push(format!("{}:{n}: .{name}( ({})", src.rel, code.trim()));
                }
            }
        }
    }
    assert!(calls.is_empty(), "the layers below the ops call an op:\n{}", calls.join("\n"));
}

/// Nothing outside the backends names one: the layers above reach them
/// through `dispatch!` and `Storage`'s methods, and only `src/types/device.rs`
/// (which defines `Device`) spells out `Device::Cuda`.
#[test]
fn only_the_backends_name_a_backend() {
    // The backends see layouts and storages, never the ops, the handle or autograd.
    let backend = code_lines_containing(
        "src/backend",
        &["crate::ops", "crate::tensor", "crate::autograd", "crate::Tensor", "crate::nn", "crate::optim"],
    );
    assert!(backend.is_empty(), "src/backend must not depend on the layers above it:\n{backend:#?}");
    const BACKEND_NAMES: &[&str] = &[
        "backend::cpu",
        "backend::cuda",
        "simd::",
        "CpuStorage",
        "CudaStorage",
        "CpuElem",
        "Storage::Cpu",
        "Storage::Cuda",
        "Device::Cuda",
        "feature = \"cuda\"",
    ];
    let mut named = Vec::new();
    for src in sources("src").iter().filter(|s| !s.rel.starts_with("src/backend/")) {
        for (n, code) in &src.lines {
            for name in BACKEND_NAMES.iter().filter(|name| code.contains(**name)) {
                if !(src.rel == "src/types/device.rs" && *name == "Device::Cuda") {
                    named.push(format!("{}:{n}: {name} ({})", src.rel, code.trim()));
                }
            }
        }
    }
    assert!(named.is_empty(), "only src/backend may name a backend:\n{}", named.join("\n"));
}

/// `Storage`'s methods do not match on the backends themselves: they go
/// through `dispatch!` (the storage's backend) or `on_device!` (a device's),
/// so those macros, the `Storage` enum and its `BackendRef` impls are where
/// the backends are listed. The host's storage is the CPU backend's, which
/// `from_vec` and `from_f64s` may say.
#[test]
fn storage_methods_go_through_the_dispatch_macros() {
    let src = sources("src/backend")
        .into_iter()
        .find(|s| s.rel == "src/backend/mod.rs")
        .expect("src/backend/mod.rs");
    let start = src
        .lines
        .iter()
        .position(|(_, l)| l.starts_with("impl Storage {"))
        .expect("an `impl Storage` block");
    let end = start + src.lines[start..].iter().position(|(_, l)| l == "}").expect("the end of `impl Storage`");
    let mut function = String::new();
    let mut listed = Vec::new();
    for (n, code) in &src.lines[start..end] {
        if let Some(rest) = code.trim().strip_prefix("pub fn ") {
            function = first_segment(rest);
        }
        let names_cuda = ["Storage::Cuda", "CudaStorage", "Device::Cuda", "cfg(feature"].iter().any(|x| code.contains(x));
        let names_cpu = code.contains("Storage::Cpu");
        if names_cuda || (names_cpu && !["from_vec", "from_f64s"].contains(&function.as_str())) {
            listed.push(format!("src/backend/mod.rs:{n}: in Storage::{function}: {}", code.trim()));
        }
    }
    assert!(end > start + 20, "impl Storage spans only {} lines", end - start);
    assert!(listed.is_empty(), "Storage's methods list the backends themselves:\n{}", listed.join("\n"));
}

/// Inside the crate the value types come from `crate::types`, where they
/// live, not through the tensor module's re-exports (which are for users).
#[test]
fn value_types_are_imported_from_types() {
    const VALUE_TYPES: &[&str] = &[
        "DType",
        "Device",
        "Element",
        "Float",
        "Layout",
        "Shape",
        "StridedOffsets",
        "normalize_axis",
        "erf_f64",
    ];
    let mut through_tensor = Vec::new();
    for src in sources("src") {
        for (n, code) in &src.code {
            for (at, _) in code.match_indices("crate::tensor::") {
                let rest = &code[at + "crate::tensor::".len()..];
                let items: Vec<String> = match rest.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or("").split(',').map(first_segment).collect(),
                    None => vec![first_segment(rest)],
                };
                if items.iter().any(|i| VALUE_TYPES.contains(&i.as_str())) {
                    through_tensor.push(format!("{}:{n}: {}", src.rel, code.trim()));
                }
            }
        }
    }
    assert!(
        through_tensor.is_empty(),
        "value types imported through crate::tensor:\n{}",
        through_tensor.join("\n")
    );
}

/// tests/cuda mirrors tests/integration: each CUDA test module (other than
/// its harness) has the CPU module of the same name, so a family's tests are
/// found under one name on both sides.
#[test]
fn every_cuda_test_module_has_a_cpu_counterpart() {
    let modules = |dir: &str| -> HashSet<String> {
        let main = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join("main.rs")).expect("test main.rs");
        main.lines()
            .filter_map(|l| l.trim().strip_prefix("mod "))
            .map(|m| m.trim_end_matches(';').to_string())
            .collect()
    };
    let cpu = modules("tests/integration");
    let cuda = modules("tests/cuda");
    assert!(cuda.len() > 10, "tests/cuda/main.rs declares only {cuda:?}");
    let unmatched: Vec<&String> = cuda.iter().filter(|m| *m != "harness" && !cpu.contains(*m)).collect();
    assert!(
        unmatched.is_empty(),
        "tests/cuda modules without a tests/integration counterpart: {unmatched:?}"
    );
}

/// Every `cuda/*.cu` file is in the kernel list of
/// `src/backend/cuda/kernels.rs` (what NVRTC compiles at first use and CI
/// compiles with scripts/compile-kernels.sh), and every listed name is a file.
#[test]
fn every_cuda_source_is_in_the_kernel_list() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let kernels = std::fs::read_to_string(root.join("src/backend/cuda/kernels.rs")).expect("kernels.rs");
    let block = kernels
        .split("sources! {")
        .nth(1)
        .and_then(|b| b.split('}').next())
        .expect("a `sources! { .. }` list in kernels.rs");
    let listed: HashSet<String> = block.split(',').filter_map(|entry| entry.split('"').nth(1)).map(str::to_string).collect();
    let files: HashSet<String> = std::fs::read_dir(root.join("cuda"))
        .expect("cuda/")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".cu").map(str::to_string))
        .collect();
    assert!(files.len() > 10, "cuda/ holds only {files:?}");
    let unlisted: Vec<&String> = files.difference(&listed).collect();
    let missing: Vec<&String> = listed.difference(&files).collect();
    assert!(unlisted.is_empty(), "cuda/*.cu files not in kernels.rs's sources! list: {unlisted:?}");
    assert!(missing.is_empty(), "kernels.rs lists sources with no cuda/<name>.cu: {missing:?}");
}
