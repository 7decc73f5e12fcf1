//! The kernel sources and their compilation to PTX by NVRTC.
//!
//! Each op family's kernels live in one `cuda/<family>.cu`, embedded in the
//! binary with `include_str!`. At first use on a device the family's source
//! is compiled for that device's compute capability and loaded as a module
//! (see `device.rs`, which caches modules per device). `compile_ptx` is also
//! what `scripts/compile-kernels.sh` runs in CI, through the `cuda_ptx`
//! example, so CI compiles exactly what a GPU would.

use crate::{Error, Result};

/// One `.cu` file: the module name kernels are looked up in, and its text.
#[derive(Debug)]
pub struct KernelSource {
    pub name: &'static str,
    pub source: &'static str,
}

/// The shared header, spliced into every source in place of `#include "common.cuh"`.
pub const COMMON: &str = include_str!("../../../cuda/common.cuh");

macro_rules! sources {
    ($($id:ident = $file:literal),* $(,)?) => {
        $(pub const $id: KernelSource = KernelSource { name: $file, source: include_str!(concat!("../../../cuda/", $file, ".cu")) };)*
        /// Every kernel source, in the order CI compiles them.
        pub const ALL: &[&KernelSource] = &[$(&$id),*];
    };
}

sources! {
    COPY = "copy",
    UNARY = "unary",
    BINARY = "binary",
    REDUCE = "reduce",
    SOFTMAX = "softmax",
    LAYER_NORM = "layer_norm",
    CROSS_ENTROPY = "cross_entropy",
    INDEX = "index",
    CONV = "conv",
    POOL = "pool",
    DROPOUT = "dropout",
    MATMUL = "matmul",
    ATTENTION = "attention",
    OPTIM = "optim",
}

/// The source with the shared header spliced in (NVRTC has no include path
/// for our header, and splicing keeps the runtime free of file lookups).
pub fn expand(src: &KernelSource) -> String {
    let mut out = String::with_capacity(COMMON.len() + src.source.len());
    for line in src.source.lines() {
        if line.trim() == "#include \"common.cuh\"" {
            out.push_str(COMMON);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The NVRTC options every kernel is compiled with.
pub fn nvrtc_options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        // Precise division and square roots: the CPU reference kernels are
        // IEEE, and the parity tests compare against them.
        "--prec-div=true".into(),
        "--prec-sqrt=true".into(),
        "--fmad=true".into(),
        "-default-device".into(),
    ]
}

/// `sm_XY` for a compute capability.
pub fn arch_name(major: i32, minor: i32) -> String {
    format!("sm_{major}{minor}")
}

/// Whether NVRTC's library can be loaded (checked before any call: a missing
/// library would otherwise make cudarc panic).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library; no NVRTC function is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compile one source to PTX for `arch` (e.g. `sm_90`). The error carries
/// NVRTC's log, which names the file and line.
pub fn compile_ptx(src: &KernelSource, arch: &str) -> Result<String> {
    if !nvrtc_available() {
        return Err(Error::device(
            "cuda compile",
            "NVRTC (libnvrtc.so) was not found: install the CUDA toolkit or put its lib directory on LD_LIBRARY_PATH",
        ));
    }
    let opts = cudarc::nvrtc::CompileOptions {
        options: nvrtc_options(arch),
        name: Some(format!("{}.cu", src.name)),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(expand(src), opts).map_err(|e| {
        let detail = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        };
        Error::device("cuda compile", format!("cuda/{}.cu for {arch}: {detail}", src.name))
    })?;
    Ok(ptx.to_src())
}
