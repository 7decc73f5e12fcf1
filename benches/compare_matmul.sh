#!/usr/bin/env bash
# tamer vs numpy matrix multiplication on this machine, back to back, same cases.
#
#   benches/compare_matmul.sh                 # every case, 1 and 2 threads
#   benches/compare_matmul.sh --size 1024     # only 1024² (arguments go to both benchmarks)
#   ROUNDS=3 benches/compare_matmul.sh ...    # alternate tamer/numpy 3 times; per case the
#                                             # median over rounds is compared (noisy hosts)
#
# numpy runs with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (see benches/numpy_matmul.py),
# from .venv/bin/python when present (pip install numpy threadpoolctl there), else python3.
# Ratio = tamer GFLOP/s ÷ numpy GFLOP/s (above 1: tamer is faster).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
ROUNDS=${ROUNDS:-1}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo bench --bench matmul --no-run >/dev/null 2>&1 || cargo bench --bench matmul --no-run
for r in $(seq 1 "$ROUNDS"); do
    cargo bench --bench matmul -q -- "$@" 2>/dev/null | tee -a "$out/tamer.jsonl"
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" benches/numpy_matmul.py "$@" | tee -a "$out/numpy.jsonl"
done

"$PY" - "$out/tamer.jsonl" "$out/numpy.jsonl" <<'PYEOF'
import json, statistics, sys

def load(path):
    runs = {}
    for line in open(path):
        d = json.loads(line)
        if d.get("bench") != "matmul":
            continue
        key = (d["dtype"], d["batch"], d["m"], d["n"], d["k"], d["threads"])
        runs.setdefault(key, []).append(d["gflops"])
    return {k: statistics.median(v) for k, v in runs.items()}

tamer, numpy = load(sys.argv[1]), load(sys.argv[2])
print()
print(f"{'dtype':>5} {'batch':>5} {'m':>5} {'n':>5} {'k':>5} {'thr':>3} {'tamer GF/s':>10} {'numpy GF/s':>10} {'tamer/numpy':>11}")
for key in sorted(tamer):
    if key in numpy:
        print(f"{key[0]:>5} {key[1]:>5} {key[2]:>5} {key[3]:>5} {key[4]:>5} {key[5]:>3} {tamer[key]:>10.1f} {numpy[key]:>10.1f} {tamer[key] / numpy[key]:>11.2f}")
headline = ("f32", 1, 1024, 1024, 1024, 2)
if headline in tamer and headline in numpy:
    print(f"\nf32 1024² on 2 threads: tamer/numpy = {tamer[headline] / numpy[headline]:.2f} (target >= 0.8)")
PYEOF
