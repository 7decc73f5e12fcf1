#!/usr/bin/env bash
# tamer's training step against PyTorch's, interleaved on this machine (see BENCHMARKS.md).
#
#   TORCH_PYTHON=/work/torchvenv/bin/python scripts/bench_train_step.sh
#   scripts/bench_train_step.sh --rounds 5 --threads 2 --config gpt-small,vit-cifar
#   scripts/bench_train_step.sh --out target/bench/baseline.jsonl
#
# Builds benches/train_step.rs once, then for each round, thread count and config runs
# tamer's bench binary and benches/torch_train_step.py back to back (which goes first
# alternates from round to round), so both see the same load. Every JSON line goes to
# --out (default target/bench/train_step-<date>-<commit>.jsonl); at the end a table of the
# best median per config and thread count (the lowest step_ms over the rounds), the
# ratio tamer/torch (below 1: tamer is faster), minor page faults per step, and the load
# averages the runs saw.
#
# Options: --rounds R (3), --threads "2 1" (space- or comma-separated), --config LIST
# (default: the four small ones; gpt2 on a GPU), --steps N, --warmup N, --device D (cpu,
# cuda, cuda:N), --autocast none|bf16|f16 (passed to both benches), --out FILE, --bin
# PATH (a train_step binary built elsewhere, as on the GPU machine, which has no cargo:
# scripts/build-device-bin.sh makes one; the commit is then read from COMMIT beside it).
# TORCH_PYTHON is an interpreter with torch (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
threads="2 1"
configs="gpt-tiny,gpt-small,vit-tiny,vit-cifar"
out=""
bin=""
pass=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --threads) threads=${2//,/ }; shift 2 ;;
        --config) configs=$2; shift 2 ;;
        --steps | --warmup | --device | --autocast) pass+=("$1" "$2"); shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench_train_step.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$rounds" in '' | *[!0-9]* | 0) echo "bench_train_step.sh: --rounds must be a positive integer, got '$rounds'" >&2; exit 2 ;; esac

PY=${TORCH_PYTHON:-python3}
if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "bench_train_step.sh: '$PY' cannot import torch; set TORCH_PYTHON to an interpreter that can" >&2
    echo "  (python3 -m venv /work/torchvenv && /work/torchvenv/bin/pip install torch numpy)" >&2
    exit 1
fi

if [ -n "$bin" ]; then
    [ -x "$bin" ] || { echo "bench_train_step.sh: --bin $bin is not an executable" >&2; exit 1; }
    commit=$(cat "$(dirname "$bin")/COMMIT" 2>/dev/null || echo unknown)
else
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    git diff --quiet HEAD 2>/dev/null || commit="$commit+dirty"
fi
if [ -z "$out" ]; then
    out="target/bench/train_step-$(date -u +%Y%m%dT%H%M%SZ)-$commit.jsonl"
fi
if [ -e "$out" ]; then
    echo "bench_train_step.sh: $out exists; give another --out (nothing is overwritten)" >&2
    exit 1
fi
mkdir -p "$(dirname "$out")"

# Build once and run the binary itself, so that cargo adds nothing between the two benches.
[ -n "$bin" ] || bin=$(cargo bench --bench train_step --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "train_step" and m.get("executable"):
        print(m["executable"])')
if [ -z "$bin" ]; then
    cargo bench --bench train_step --no-run # show the build error
    exit 1
fi

echo "{\"bench\":\"train_step_run\",\"commit\":\"$commit\",\"date\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"host_cpu\":\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')\",\"cores\":$(nproc)}" >>"$out"
echo "writing $out (commit $commit, $rounds rounds, threads $threads, configs $configs)"
run_tamer() { "$bin" --config "$1" --threads "$2" "${pass[@]}" | tee -a "$out"; }
run_torch() { "$PY" benches/torch_train_step.py --config "$1" --threads "$2" "${pass[@]}" | tee -a "$out"; }
for r in $(seq 1 "$rounds"); do
    echo "-- round $r of $rounds, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    for t in $threads; do
        for c in ${configs//,/ }; do
            if [ $((r % 2)) -eq 1 ]; then
                run_tamer "$c" "$t"
                run_torch "$c" "$t"
            else
                run_torch "$c" "$t"
                run_tamer "$c" "$t"
            fi
        done
    done
done

python3 - "$out" <<'PYEOF'
import json, sys

runs = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get("bench") == "train_step":
        key = (d["config"], d["threads"], d.get("device", "cpu"), d.get("autocast", "none"))
        runs.setdefault(key, {}).setdefault(d["impl"], []).append(d)

order = {"gpt-tiny": 0, "gpt-small": 1, "vit-tiny": 2, "vit-cifar": 3, "gpt2": 4}
print()
print("best median step time over the rounds (ms); ratio = tamer / torch (target: gpt-small, vit-cifar <= 0.5; gpt-tiny, vit-tiny <= 0.8)")
print()
print("| config | threads | device | autocast | tamer ms | torch ms | tamer/torch | tamer TFLOP/s | torch TFLOP/s | tamer faults/step | torch faults/step | load avg |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(runs, key=lambda k: (k[2], k[3], -k[1], order.get(k[0], 9), k[0])):
    by = runs[key]
    best = {impl: min(lines, key=lambda d: d["step_ms"]) for impl, lines in by.items()}
    loads = [d["load_avg"] for lines in by.values() for d in lines if d.get("load_avg") is not None]
    cell = lambda impl, field, fmt: format(best[impl][field], fmt) if impl in best and best[impl].get(field) is not None else "-"
    ratio = f"{best['tamer']['step_ms'] / best['torch']['step_ms']:.2f}" if {"tamer", "torch"} <= best.keys() else "-"
    load = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "-"
    print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {cell('tamer', 'step_ms', '.1f')} | {cell('torch', 'step_ms', '.1f')} | {ratio} | "
          f"{cell('tamer', 'model_tflops', '.2f')} | {cell('torch', 'model_tflops', '.2f')} | "
          f"{cell('tamer', 'page_faults_per_step', '.0f')} | {cell('torch', 'page_faults_per_step', '.0f')} | {load} |")
print()
print(f"all lines: {sys.argv[1]}")
PYEOF
