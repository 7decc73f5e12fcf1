#!/usr/bin/env bash
# tamer vs matrixmultiply vs numpy (OpenBLAS) matrix multiplication on this machine, same cases
# (benches/matmul_cases.json), in alternating rounds.
#
#   benches/compare_matmul.sh                       # every case, 1 and 2 threads
#   benches/compare_matmul.sh --size 1024           # only 1024² (arguments go to both benchmarks)
#   benches/compare_matmul.sh --model gpt-small     # only one model's shapes
#   ROUNDS=3 benches/compare_matmul.sh ...          # alternate the two benchmarks 3 times; per case
#                                                   # the best median over rounds is compared
#
# numpy runs with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (see benches/numpy_matmul.py), from
# .venv/bin/python when present (pip install numpy threadpoolctl there), else python3.
# Columns: GFLOP/s of each, tamer's as a percentage of the FMA peak measured in the same round,
# and tamer ÷ numpy (above 1: tamer is faster). The load average is printed per round: timings
# taken while other jobs run are noisy, which is why rounds alternate and the best is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
ROUNDS=${ROUNDS:-1}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo bench --bench matmul --no-run >/dev/null 2>&1 || cargo bench --bench matmul --no-run
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    cargo bench --bench matmul -q -- "$@" 2>/dev/null | tee -a "$out/tamer.jsonl"
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" benches/numpy_matmul.py "$@" | tee -a "$out/numpy.jsonl"
done

"$PY" - "$out/tamer.jsonl" "$out/numpy.jsonl" <<'PYEOF'
import json, sys

def load(path):
    """Best GFLOP/s over rounds per (impl, dtype, case, threads); best FMA peak per threads."""
    best, peak = {}, {}
    for line in open(path):
        d = json.loads(line)
        if d.get("bench") == "fma_peak":
            peak[d["threads"]] = max(peak.get(d["threads"], 0.0), d["gflops"])
        if d.get("bench") != "matmul":
            continue
        key = (d["impl"], d["dtype"], d["case"], d["threads"])
        best[key] = max(best.get(key, 0.0), d["gflops"])
    return best, peak

tamer, peak = load(sys.argv[1])
numpy, _ = load(sys.argv[2])
print()
print(f"{'case':<24} {'dtype':>5} {'thr':>3} {'tamer':>7} {'%peak':>6} {'mm':>7} {'numpy':>7} {'tamer/numpy':>11}")
for (imp, dtype, case, threads) in sorted(k for k in tamer if k[0] == "tamer"):
    t = tamer[(imp, dtype, case, threads)]
    mm = tamer.get(("matrixmultiply", dtype, case, threads))
    np_ = numpy.get(("numpy", dtype, case, threads))
    pct = f"{100 * t / peak[threads]:6.1f}" if threads in peak else "     -"
    mm_s = f"{mm:7.1f}" if mm else "      -"
    np_s = f"{np_:7.1f}" if np_ else "      -"
    ratio = f"{t / np_:11.2f}" if np_ else "          -"
    print(f"{case:<24} {dtype:>5} {threads:>3} {t:7.1f} {pct} {mm_s} {np_s} {ratio}")
print("\nGFLOP/s, best over rounds; %peak: of the best FMA peak measured for that thread count.")
headline = ("f32", "square 1024", 2)
if ("tamer",) + headline in tamer and ("numpy",) + headline in numpy:
    ratio = tamer[("tamer",) + headline] / numpy[("numpy",) + headline]
    print(f"f32 1024² on 2 threads: tamer/numpy = {ratio:.2f} (target >= 0.95)")
PYEOF
