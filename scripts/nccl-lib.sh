#!/usr/bin/env bash
# Make NCCL loadable by tamer (feature `nccl`): cudarc opens `libnccl.so`,
# but the nvidia-nccl-cu13 wheel (and some system packages) ship only
# `libnccl.so.2`. This finds that library (the system's loader cache first,
# then the nvidia wheels of python3, or of $PYTHON), links it as libnccl.so
# in DIR, and prints DIR for LD_LIBRARY_PATH:
#
#   export LD_LIBRARY_PATH="$(scripts/nccl-lib.sh)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
#
#   scripts/nccl-lib.sh [DIR]      # default: ${TMPDIR:-/tmp}/tamer-nccl
#
# Exits 1, with the reason on stderr, when no NCCL is found.
set -euo pipefail
dir=${1:-${TMPDIR:-/tmp}/tamer-nccl}

found=$(ldconfig -p 2>/dev/null | awk '$1 ~ /^libnccl\.so(\.2)?$/ { print $NF; exit }' || true)
py=${PYTHON:-python3}
if [ -z "$found" ] && command -v "$py" >/dev/null 2>&1; then
    found=$("$py" - <<'PY' 2>/dev/null || true
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except ImportError:
    roots = []
libs = sorted(f for r in roots for f in glob.glob(os.path.join(r, "nccl", "lib", "libnccl.so*")))
print(libs[0] if libs else "")
PY
)
fi
if [ -z "$found" ]; then
    echo "nccl-lib.sh: no libnccl.so.2 in the loader cache or in python3's nvidia wheels (pip install nvidia-nccl-cu13)" >&2
    exit 1
fi
mkdir -p "$dir"
ln -sfn "$found" "$dir/libnccl.so"
echo "$dir"
