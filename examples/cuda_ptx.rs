//! Compile every CUDA kernel source to PTX with NVRTC, exactly as the CUDA
//! backend does at first use, and write `<dir>/<arch>/<family>.ptx`.
//!
//! `scripts/compile-kernels.sh` runs this for sm_80 and sm_90 and then
//! assembles each PTX with ptxas, so CI proves every kernel compiles without
//! a GPU. Needs the `cuda` feature and NVRTC on `LD_LIBRARY_PATH`.
//!
//! ```sh
//! cargo run --features cuda --example cuda_ptx -- target/ptx sm_90 sm_80
//! ```

#[cfg(feature = "cuda")]
#[path = "cli/pipe.rs"]
mod pipe;

#[cfg(feature = "cuda")]
fn main() -> std::process::ExitCode {
    use tamer::backend::cuda::kernels;
    pipe::exit_quietly_on_broken_pipe();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dir, archs)) = args.split_first() else {
        eprintln!("usage: cuda_ptx OUT_DIR ARCH [ARCH ...]   (e.g. target/ptx sm_90 sm_80)");
        return std::process::ExitCode::from(2);
    };
    if archs.is_empty() {
        eprintln!("cuda_ptx: name at least one architecture, e.g. sm_90");
        return std::process::ExitCode::from(2);
    }
    let mut failures = 0;
    for arch in archs {
        let out = std::path::Path::new(dir).join(arch);
        if let Err(e) = std::fs::create_dir_all(&out) {
            eprintln!("cuda_ptx: cannot create {}: {e}", out.display());
            return std::process::ExitCode::FAILURE;
        }
        for src in kernels::ALL {
            let started = std::time::Instant::now();
            match kernels::compile_ptx(src, arch) {
                Ok(ptx) => {
                    let path = out.join(format!("{}.ptx", src.name));
                    if let Err(e) = std::fs::write(&path, ptx) {
                        eprintln!("cuda_ptx: cannot write {}: {e}", path.display());
                        failures += 1;
                        continue;
                    }
                    let entries = std::fs::read_to_string(&path).map(|p| p.matches(".entry ").count()).unwrap_or(0);
                    println!("{arch} {:<14} {entries:>4} kernels  {:>6.2}s", src.name, started.elapsed().as_secs_f64());
                }
                Err(e) => {
                    eprintln!("{e}");
                    failures += 1;
                }
            }
        }
    }
    if failures > 0 {
        eprintln!("cuda_ptx: {failures} source(s) failed to compile");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!("cuda_ptx needs the `cuda` feature: cargo run --features cuda --example cuda_ptx -- OUT_DIR sm_90");
    std::process::exit(2);
}
