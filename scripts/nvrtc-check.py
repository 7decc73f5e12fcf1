#!/usr/bin/env python3
"""Compile cuda/*.cu with NVRTC (and optionally ptxas) without building Rust.

A quick loop for kernel authors: the same header splicing and NVRTC options
as src/backend/cuda/kernels.rs (keep the two in step), driven through ctypes.
The authoritative check is scripts/compile-kernels.sh, which uses the Rust
code path itself.

    python3 scripts/nvrtc-check.py cuda/unary.cu [cuda/binary.cu ...] [--arch sm_90] [--ptxas]
"""
import ctypes, os, subprocess, sys, tempfile, glob

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
venv = os.environ.get("CUDA_VENV", os.path.join(ROOT, "target", "cuda-venv"))
cu13 = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages", "nvidia", "cu13"))
if not cu13:
    sys.exit(f"no NVRTC wheel under {venv}: run scripts/compile-kernels.sh once")
cu13 = cu13[0]
ctypes.CDLL(os.path.join(cu13, "lib", "libnvrtc-builtins.so.13.0"), mode=ctypes.RTLD_GLOBAL)
nvrtc = ctypes.CDLL(os.path.join(cu13, "lib", "libnvrtc.so.13"))

args = sys.argv[1:]
arch = "sm_90"
if "--arch" in args:
    i = args.index("--arch"); arch = args[i + 1]; del args[i:i + 2]
run_ptxas = "--ptxas" in args
args = [a for a in args if a != "--ptxas"]
common = open(os.path.join(ROOT, "cuda", "common.cuh")).read()
opts = [f"--gpu-architecture={arch}", "--std=c++17", "--prec-div=true", "--prec-sqrt=true", "--fmad=true", "-default-device"]
failed = 0
for path in args:
    src = "\n".join(common if l.strip() == '#include "common.cuh"' else l for l in open(path).read().splitlines()) + "\n"
    prog = ctypes.c_void_p()
    nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), os.path.basename(path).encode(), 0, None, None)
    copts = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), copts)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if log.value.strip():
        print(log.value.decode())
    if rc != 0:
        print(f"FAILED {path}"); failed += 1; continue
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(prog, ptx)
    text = ptx.value.decode()
    print(f"ok {path}: {text.count('.entry ')} kernels for {arch}")
    if run_ptxas:
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
            f.write(text)
        r = subprocess.run([os.path.join(cu13, "bin", "ptxas"), f"-arch={arch}", "-O3", "-v", "-o", os.devnull, f.name], capture_output=True, text=True)
        print(r.stderr.strip())
        if r.returncode != 0:
            failed += 1
sys.exit(1 if failed else 0)
