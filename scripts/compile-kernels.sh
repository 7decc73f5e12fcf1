#!/usr/bin/env bash
# Compile every CUDA kernel (cuda/*.cu) to PTX with NVRTC and assemble it with
# ptxas, for sm_90 (H100/H200) and sm_80 (A100), on a machine without a GPU.
#
# NVRTC and ptxas come from exactly pinned PyPI wheels in a venv (unpinned, pip
# mixes in 13.5, whose PTX a 13.0 driver rejects). The PTX is produced by the
# `cuda_ptx` example, i.e. by the same code path and options the CUDA backend
# uses at run time. Any kernel that fails either step fails the script.
#
#   bash scripts/compile-kernels.sh            # venv in target/cuda-venv, PTX in target/ptx
#   CUDA_VENV=/some/venv PTX_DIR=/tmp/ptx bash scripts/compile-kernels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${CUDA_VENV:-target/cuda-venv}"
PTX_DIR="${PTX_DIR:-target/ptx}"
ARCHS=(sm_90 sm_80)
WHEELS=(
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
)

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# pip is quick when the pinned wheels are already installed; no download cache
# (the wheels stay in the venv; a cache would only take CI disk).
"$VENV/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check "${WHEELS[@]}"

CU13="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
export LD_LIBRARY_PATH="$CU13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PTXAS="$CU13/bin/ptxas"
echo "== NVRTC and ptxas from $CU13"
"$PTXAS" --version | tail -1

echo "== NVRTC: cuda/*.cu -> PTX (${ARCHS[*]})"
rm -rf "$PTX_DIR"
# The test profile, so CI reuses the build of `cargo build --features cuda --all-targets --profile test`.
cargo run --quiet --profile "${CARGO_PROFILE:-test}" --features cuda --example cuda_ptx -- "$PTX_DIR" "${ARCHS[@]}"

echo "== ptxas: PTX -> SASS"
failed=0
for arch in "${ARCHS[@]}"; do
  for ptx in "$PTX_DIR/$arch"/*.ptx; do
    if ! "$PTXAS" -arch="$arch" -O3 --warn-on-spills -o "${ptx%.ptx}.cubin" "$ptx" 2> "${ptx%.ptx}.ptxas.log"; then
      echo "ptxas failed for $ptx:"; cat "${ptx%.ptx}.ptxas.log"; failed=1
    elif [ -s "${ptx%.ptx}.ptxas.log" ]; then
      echo "ptxas warnings for $ptx:"; cat "${ptx%.ptx}.ptxas.log"
    fi
  done
done
if [ "$failed" -ne 0 ]; then
  echo "compile-kernels: some kernels failed to assemble"; exit 1
fi
count=$(ls "$PTX_DIR"/*/*.cubin | wc -l)
echo "compile-kernels: $count modules compiled and assembled (${#ARCHS[@]} architectures)"
