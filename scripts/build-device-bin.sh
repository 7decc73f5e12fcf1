#!/usr/bin/env bash
# Build, on a machine without a GPU, every binary scripts/device-check.sh runs
# on the GPU machine (which has the CUDA driver and toolkit but no Rust).
#
#   scripts/build-device-bin.sh [OUT_DIR]        # default: target/device-bin
#
# Builds in release with `--features cuda,nccl` and copies into OUT_DIR:
#   cuda        the CUDA parity test binary (tests/cuda/main.rs; its hashed
#               path comes from `cargo test --no-run --message-format=json`)
#   cuda_bench  examples/cuda_bench.rs (skipped, with a note, if this checkout
#               has no such example yet)
#   train_gpt   examples/train_gpt.rs
#   train_vit   examples/train_vit.rs
#   train_step  benches/train_step.rs (the training-step bench, PyTorch's twin beside it)
#   COMMIT      the commit built (with "+dirty" when the tree had changes): the GPU
#               machine's copy of the tree has no git history
# The copies are stripped of symbols (they travel to the GPU machine, where
# the whole working tree plus carried folders must stay under 64 MiB).
# Kernel sources are compiled into the binaries (include_str!) and turned into
# PTX by NVRTC on the GPU at first use, so nothing else needs to travel.
#
# Honours CARGO_TARGET_DIR. Needs python3 (to read cargo's JSON messages).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/device-bin}
mkdir -p "$out"

examples=(train_gpt train_vit)
if [ -f examples/cuda_bench.rs ]; then
    examples+=(cuda_bench)
else
    echo "note: examples/cuda_bench.rs is not in this checkout; device-check.sh will skip the benchmark" >&2
fi

# `executable` of every artifact whose target name is in $1 (space-separated)
# and whose kind is in $2, one "name path" per line.
pick() {
    python3 -c '
import json, sys
names, kinds = set(sys.argv[1].split()), set(sys.argv[2].split())
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    if t["name"] in names and kinds & set(t["kind"]):
        print(t["name"], m["executable"])
' "$1" "$2"
}

copy() { # name path
    cp -f "$2" "$out/$1"
    if command -v strip >/dev/null 2>&1; then strip -s "$out/$1" 2>/dev/null || true; fi
    echo "  $out/$1 ($(du -h "$out/$1" | cut -f1))"
}

echo "building examples: ${examples[*]}"
ex_args=()
for e in "${examples[@]}"; do ex_args+=(--example "$e"); done
cargo build --release --features cuda,nccl "${ex_args[@]}" --message-format=json-render-diagnostics >"$out/.examples.json"
while read -r name path; do copy "$name" "$path"; done < <(pick "${examples[*]}" "example" <"$out/.examples.json")

echo "building the CUDA test binary"
cargo test --release --features cuda,nccl --test cuda --no-run --message-format=json-render-diagnostics >"$out/.tests.json"
found=$(pick "cuda" "test" <"$out/.tests.json")
if [ -z "$found" ]; then
    echo "error: cargo reported no executable for the 'cuda' test target" >&2
    exit 1
fi
while read -r name path; do copy "$name" "$path"; done <<<"$found"
echo "building the training-step bench"
cargo bench --features cuda,nccl --bench train_step --no-run --message-format=json-render-diagnostics >"$out/.bench.json"
while read -r name path; do copy "$name" "$path"; done < <(pick "train_step" "bench" <"$out/.bench.json")
rm -f "$out/.examples.json" "$out/.tests.json" "$out/.bench.json"

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit+dirty"
echo "$commit" >"$out/COMMIT"

for b in cuda train_gpt train_vit train_step; do
    [ -x "$out/$b" ] || { echo "error: $out/$b is missing" >&2; exit 1; }
done
echo "done: $(du -sh "$out" | cut -f1) in $out; on the GPU machine run: scripts/device-check.sh $out"
