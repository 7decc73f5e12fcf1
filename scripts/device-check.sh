#!/usr/bin/env bash
# The one script to run on the GPU machine: CUDA parity tests, two short
# training runs, and the training step side by side with PyTorch, then a
# summary table and a JSON summary.
#
#   scripts/device-check.sh [--stages LIST] [BIN_DIR]     # default: tests,train; target/device-bin
#
# One device call may run 10 minutes and a session has about 15 device minutes,
# so the stages are chosen per call; the limits below keep each default pair
# under 9 minutes:
#   first call:   scripts/device-check.sh --stages tests,train
#   second call:  scripts/device-check.sh --stages bench,steps,gpt2
# Stages (comma-separated, run in this order: tests, train, bench, steps, gpt2):
#   tests  BIN_DIR/cuda --test-threads 1 --nocapture, every CUDA-vs-CPU parity test
#          and NCCL over one rank, with TAMER_REQUIRE_CUDA=1: a missing GPU, NVRTC,
#          cuBLAS or NCCL fails the tests instead of skipping them; skips (SKIPPED
#          lines) are counted anyway.
#   train  train_gpt --model gpt-small --device cuda --steps 50 on a synthetic text file
#          (~400 KB of pseudo-random words), then train_vit --model vit-cifar --device
#          cuda on synthetic CIFAR-10 batches (one label byte, 3,072 random pixel bytes).
#   steps  scripts/bench_train_step.sh with BIN_DIR/train_step and this machine's
#          python3 (PyTorch): gpt-small and vit-cifar steps, tamer and PyTorch
#          interleaved, in f32 and under bf16 autocast.
#   gpt2   the same for GPT-2 124M's shape under bf16 autocast (tokens/s, model TFLOP/s).
#   nanogpt  nanoGPT's GPU character model (train_gpt --model gpt-small --batch-size 64
#          --steps 5000 --eval-iters 200 --autocast bf16: 6 layers, 6 heads, width 384,
#          context 256, dropout 0.2, lr 1e-3), on the text in NANOGPT_TEXT (default
#          .device-data/tinyshakespeare.txt: copy ../shared/data/tinyshakespeare.txt
#          there, an ignored folder, and carry it); target validation loss <= 1.50 in
#          <= 3 minutes. A call of its own (NANOGPT_TIMEOUT=420).
#   bench  BIN_DIR/cuda_bench: copy bandwidth, own products against cuBLAS (f32 and bf16
#          at 4096², bf16 at GPT-2's training shapes), softmax, layer_norm,
#          cross_entropy and AdamW against the copy.
# The GPU machine has the NVIDIA driver and the CUDA toolkit but no Rust and no
# data sets, so BIN_DIR holds binaries prebuilt by scripts/build-device-bin.sh
# and this script writes its own synthetic data.
# LD_LIBRARY_PATH gets the toolkit's libraries (/usr/local/cuda/lib64 and
# /usr/local/cuda/targets/x86_64-linux/lib, where libnvrtc lives: tamer compiles
# its kernels with NVRTC at first use), those of python3's nvidia wheels, and
# the libnccl.so link scripts/nccl-lib.sh makes.
# Every step has a time limit (seconds, overridable): TESTS_TIMEOUT=300,
# GPT_TIMEOUT=120, VIT_TIMEOUT=100, STEPS_TIMEOUT=130 (each of f32 and bf16),
# GPT2_TIMEOUT=120, BENCH_TIMEOUT=120 (call 2's three stages: at most 500 s);
# GPT_BATCH=32 sets train_gpt's --batch-size, VIT_IMAGES=256 the images per
# CIFAR batch file.
# Logs go to a temporary directory, with summary.json (date, commit, GPU,
# driver, parity counts and failed tests, throughput, every training-step and
# kernel line). When OUT is set (the device runner, which brings back at most
# 8 files), they end as two files there: OUT/summary-STAGES.json and
# OUT/logs-STAGES.tar.gz. The exit status is 0 only if every stage run passed.
set -uo pipefail

stages=tests,train
if [ "${1:-}" = "--stages" ]; then
    [ $# -ge 2 ] || { echo "device-check.sh: --stages needs a list (tests, train, bench, steps, gpt2)" >&2; exit 2; }
    stages=$2
    shift 2
fi
for st in ${stages//,/ }; do
    case "$st" in tests | train | steps | gpt2 | bench | nanogpt) ;; *) echo "device-check.sh: unknown stage '$st' (tests, train, bench, steps, gpt2, nanogpt)" >&2; exit 2 ;; esac
done
wants() { [[ ",$stages," == *",$1,"* ]]; }
bin=${1:-target/device-bin}
TESTS_TIMEOUT=${TESTS_TIMEOUT:-300}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-120}
GPT_TIMEOUT=${GPT_TIMEOUT:-120}
VIT_TIMEOUT=${VIT_TIMEOUT:-100}
STEPS_TIMEOUT=${STEPS_TIMEOUT:-130}
GPT2_TIMEOUT=${GPT2_TIMEOUT:-120}
NANOGPT_TIMEOUT=${NANOGPT_TIMEOUT:-420}
NANOGPT_TEXT=${NANOGPT_TEXT:-.device-data/tinyshakespeare.txt}
GPT_BATCH=${GPT_BATCH:-32}
GPT_BLOCK=256 # gpt-small's context
VIT_IMAGES=${VIT_IMAGES:-256}
VIT_BATCH=128 # the cifar10 recipe's batch

for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    if [ -d "$d" ]; then LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
done
# python3's nvidia wheels (nvrtc, cublas, nccl ...), after the toolkit's.
wheel_libs=$(python3 -c 'import glob, os, nvidia; print(":".join(sorted(d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "*", "lib")) + glob.glob(os.path.join(p, "*", "*", "lib")))))' 2>/dev/null || true)
[ -n "$wheel_libs" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$wheel_libs"
# NCCL as libnccl.so (the wheel ships libnccl.so.2 only; the nccl parity tests need it).
if nccl_dir=$(bash scripts/nccl-lib.sh 2>/dev/null); then
    LD_LIBRARY_PATH="$nccl_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
    echo "note: scripts/nccl-lib.sh found no NCCL; the NCCL tests will fail"
fi
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
export TAMER_REQUIRE_CUDA=1

logs=$(mktemp -d -t tamer-device-check.XXXXXX)
work=$(mktemp -d -t tamer-device-work.XXXXXX)
mkdir -p "$logs"
trap 'rm -rf "$work"' EXIT
status=0

section() { printf '\n==== %s ====\n' "$*"; }
# run NAME TIMEOUT CMD...: run with a time limit, output to the terminal and $logs/NAME.log.
run() {
    local name=$1 limit=$2
    shift 2
    timeout --signal=KILL "$limit" "$@" 2>&1 | tee "$logs/$name.log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        if [ "$rc" -eq 137 ]; then
            echo "!! $name was killed at its ${limit}s limit"
        else
            echo "!! $name exited with status $rc"
        fi
        status=1
    fi
    return "$rc"
}
# The value of numeric field $2 in the last {"event":"final",...} line of log $1.
final_field() {
    grep '"event":"final"' "$logs/$1.log" 2>/dev/null | tail -n 1 | sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p"
}

section "device"
gpu_line=$(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1)
echo "${gpu_line:-no nvidia-smi}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
echo "binaries: $bin (commit $(cat "$bin/COMMIT" 2>/dev/null || echo unknown)); logs: $logs; stages: $stages"
need=()
wants tests && need+=(cuda)
wants train && need+=(train_gpt train_vit)
wants nanogpt && need+=(train_gpt)
{ wants steps || wants gpt2; } && need+=(train_step)
for b in "${need[@]}"; do
    [ -x "$bin/$b" ] || { echo "error: $bin/$b is missing: build it with scripts/build-device-bin.sh"; exit 2; }
done

passed=0 failed=0 skipped=0 failed_names=""
if wants tests; then
    section "CUDA parity tests (TAMER_REQUIRE_CUDA=1)"
    run tests "$TESTS_TIMEOUT" "$bin/cuda" --test-threads 1 --nocapture
    # Counts from libtest's "test result: ok. N passed; M failed; ..." line (with
    # --nocapture a test's own output can split its "test name ... ok" line).
    passed=$(sed -n 's/^test result: .* \([0-9]*\) passed; .*/\1/p' "$logs/tests.log" | awk '{ s += $1 } END { print s + 0 }')
    failed=$(sed -n 's/^test result: .* \([0-9]*\) failed; .*/\1/p' "$logs/tests.log" | awk '{ s += $1 } END { print s + 0 }')
    # The names libtest lists under its final "failures:" heading.
    failed_names=$(awk '/^failures:$/ { list = 1; names = ""; next } list && /^    [A-Za-z0-9_:]+$/ { names = names $1 "\n" } /^test result:/ { list = 0 } END { printf "%s", names }' "$logs/tests.log")
    # Anywhere on a line: libtest prints "test name ... " before a test's own output.
    skipped=$(grep -c 'SKIPPED ' "$logs/tests.log")
    [ "$skipped" -gt 0 ] && { echo "!! $skipped tests skipped their work"; status=1; }
    [ "$failed" -gt 0 ] && status=1
fi

if wants train; then
    section "train_gpt gpt-small on cuda (synthetic text)"
    # ~400 KB of words drawn from a fixed list by a fixed LCG: the same file every run.
    awk 'BEGIN {
        n = split("the of and to in is was that he for it with as his on be at by had not are but from or have an they which one you were her all she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people mr how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three", w, " ")
        x = 12345
        while (bytes < 400000) {
            x = (x * 1103515245 + 12345) % 2147483648
            s = w[1 + int(x / 65536) % n]
            out = out s ((x % 13 == 0) ? ".\n" : " ")
            bytes += length(s) + 1
            if (length(out) > 4096) { printf "%s", out; out = "" }
        }
        printf "%s\n", out
    }' >"$work/text.txt"
    run train_gpt "$GPT_TIMEOUT" "$bin/train_gpt" --text "$work/text.txt" --model gpt-small --device cuda --steps 50 \
        --batch-size "$GPT_BATCH" --warmup 10 --eval-interval 50 --eval-iters 5 --log-interval 10 --sample-tokens 50 --out "$work/gpt"

    section "train_vit vit-cifar on cuda (synthetic CIFAR-10)"
    mkdir -p "$work/cifar"
    write_batch() { # FILE RECORDS: label bytes 0..9 in turn, random pixels
        local file=$1 records=$2 i
        for ((i = 0; i < records; i++)); do
            printf "\\x$(printf %02x $((i % 10)))"
            head -c 3072 /dev/urandom
        done >"$file"
    }
    for i in 1 2 3 4 5; do write_batch "$work/cifar/data_batch_$i.bin" "$VIT_IMAGES"; done
    write_batch "$work/cifar/test_batch.bin" "$VIT_IMAGES"
    run train_vit "$VIT_TIMEOUT" "$bin/train_vit" --dataset cifar10 --data-dir "$work/cifar" --model vit-cifar --device cuda \
        --epochs 2 --eval-every 2 --warmup 5 --out "$work/vit"
fi

if wants bench; then
    section "kernel benchmark"
    if [ -x "$bin/cuda_bench" ]; then
        run bench "$BENCH_TIMEOUT" "$bin/cuda_bench"
    else
        echo "no $bin/cuda_bench: skipped" | tee "$logs/bench.log"
    fi
fi

if wants nanogpt; then
    section "nanoGPT's GPU character model, bf16 autocast"
    if [ -f "$NANOGPT_TEXT" ]; then
        run nanogpt "$NANOGPT_TIMEOUT" "$bin/train_gpt" --text "$NANOGPT_TEXT" --model gpt-small --device cuda --autocast bf16 \
            --batch-size 64 --steps 5000 --eval-iters 200 --sample-tokens 200 --out "$work/nanogpt"
    else
        echo "!! no $NANOGPT_TEXT: copy ../shared/data/tinyshakespeare.txt there and carry .device-data" | tee "$logs/nanogpt.log"
        status=1
    fi
fi

# steps_run NAME LIMIT ARGS...: tamer's training step against PyTorch's on this GPU.
steps_run() {
    local name=$1 limit=$2
    shift 2
    TORCH_PYTHON=${TORCH_PYTHON:-python3} run "$name" "$limit" bash scripts/bench_train_step.sh --bin "$bin/train_step" \
        --threads 8 --device cuda --out "$logs/$name.jsonl" "$@"
}
if wants steps; then
    section "training step, tamer vs PyTorch on this GPU: f32"
    steps_run steps_f32 "$STEPS_TIMEOUT" --rounds 2 --config gpt-small,vit-cifar --steps 10 --warmup 3
    section "training step, tamer vs PyTorch on this GPU: bf16 autocast"
    steps_run steps_bf16 "$STEPS_TIMEOUT" --rounds 2 --config gpt-small,vit-cifar --steps 10 --warmup 3 --autocast bf16
fi
if wants gpt2; then
    section "GPT-2 124M's shape, bf16 autocast, tamer vs PyTorch"
    steps_run gpt2 "$GPT2_TIMEOUT" --rounds 1 --config gpt2 --steps 5 --warmup 2 --autocast bf16
fi

section "summary"
gpt_tok=$(final_field train_gpt tokens_per_s)
gpt_steps=$(final_field train_gpt steps)
vit_samples=$(final_field train_vit samples_per_s)
vit_steps=$(final_field train_vit steps)
per_step() { [ -n "$1" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' || echo "-"; }
if wants tests; then
    printf '%-34s %s\n' "parity tests" "$passed passed, $failed failed, $skipped skipped"
    printf '%b' "$failed_names" | sed 's/^/    failed: /'
    [ -s "$logs/tests.log" ] && ! grep -q '^test result:' "$logs/tests.log" && echo "    (no test result line: the test binary crashed or hit its limit; see $logs/tests.log)"
    grep -E 'bit-identical' "$logs/tests.log" | sed 's/^/    /'
fi
if wants train; then
    printf '%-34s %s\n' "gpt-small (batch $GPT_BATCH x $GPT_BLOCK)" "${gpt_steps:-?} steps, $(per_step "$gpt_tok" $((GPT_BATCH * GPT_BLOCK))) steps/s, ${gpt_tok:-?} tokens/s"
    printf '%-34s %s\n' "vit-cifar (batch $VIT_BATCH)" "${vit_steps:-?} steps, $(per_step "$vit_samples" "$VIT_BATCH") steps/s, ${vit_samples:-?} samples/s"
fi
for name in steps_f32 steps_bf16 gpt2; do
    [ -f "$logs/$name.log" ] && sed -n '/^| config/,/^$/p' "$logs/$name.log"
done
[ -f "$logs/bench.log" ] && { echo "benchmark (last lines of $logs/bench.log):"; tail -n 15 "$logs/bench.log" | sed 's/^/    /'; }

# The same in one JSON file, for docs/gpu/RESULTS.md.
printf '%b' "$failed_names" >"$logs/failed_names.txt"
python3 - "$logs" "$stages" "$status" "$(cat "$bin/COMMIT" 2>/dev/null || echo unknown)" "$gpu_line" \
    "$passed" "$failed" "$skipped" "${gpt_steps:-}" "${gpt_tok:-}" "${vit_steps:-}" "${vit_samples:-}" <<'PYEOF' || status=1
import datetime, json, os, sys
logs, stages, status, commit, gpu_line, passed, failed, skipped, gpt_steps, gpt_tok, vit_steps, vit_samples = sys.argv[1:]
num = lambda s: float(s) if s else None
gpu = [part.strip() for part in gpu_line.split(",")] if gpu_line else []
summary = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "commit": commit,
    "gpu": gpu[0] if gpu else None,
    "driver": gpu[1] if len(gpu) > 1 else None,
    "memory": gpu[2] if len(gpu) > 2 else None,
    "stages": stages.split(","),
    "pass": status == "0",
}
if "tests" in summary["stages"]:
    names = open(os.path.join(logs, "failed_names.txt")).read().split()
    summary["parity"] = {"passed": int(passed), "failed": int(failed), "skipped": int(skipped), "failed_tests": names}
if "train" in summary["stages"]:
    summary["train_gpt"] = {"steps": num(gpt_steps), "tokens_per_s": num(gpt_tok)}
    summary["train_vit"] = {"steps": num(vit_steps), "samples_per_s": num(vit_samples)}
steps = []
for name in ("steps_f32", "steps_bf16", "gpt2"):
    path = os.path.join(logs, name + ".jsonl")
    if os.path.exists(path):
        steps += [json.loads(line) for line in open(path) if '"bench":"train_step"' in line]
if steps:
    summary["train_step"] = steps
bench = os.path.join(logs, "bench.log")
if os.path.exists(bench):
    lines = []
    for line in open(bench):
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    summary["kernels"] = lines
with open(os.path.join(logs, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
print("summary:", os.path.join(logs, "summary.json"))
PYEOF
if [ -n "${OUT:-}" ]; then
    tag=${stages//,/-}
    cp "$logs/summary.json" "$OUT/summary-$tag.json" 2>/dev/null
    tar czf "$OUT/logs-$tag.tar.gz" -C "$logs" . && echo "logs: $OUT/logs-$tag.tar.gz, summary: $OUT/summary-$tag.json"
fi
[ "$status" -eq 0 ] && echo "device check: PASS" || echo "device check: FAIL"
exit "$status"
