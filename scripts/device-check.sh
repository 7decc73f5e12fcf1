#!/usr/bin/env bash
# The one script to run on the GPU machine: CUDA parity tests, the kernel
# benchmark, and two short training runs on the GPU, then a summary table.
#
#   scripts/device-check.sh [BIN_DIR]            # default: target/device-bin
#
# The GPU machine has the NVIDIA driver and the CUDA toolkit but no Rust and
# no data sets, so BIN_DIR holds binaries prebuilt elsewhere by
# scripts/build-device-bin.sh (cuda, cuda_bench, train_gpt, train_vit) and
# this script writes its own synthetic data. Steps:
#   1. LD_LIBRARY_PATH gets the toolkit's libraries (/usr/local/cuda/lib64 and
#      /usr/local/cuda/targets/x86_64-linux/lib, where libnvrtc lives: tamer
#      compiles its kernels with NVRTC at first use).
#   2. BIN_DIR/cuda --test-threads 1 --nocapture: every CUDA-vs-CPU parity test.
#   3. BIN_DIR/cuda_bench (if present): the kernel benchmark, output as it prints it.
#   4. train_gpt --model gpt-small --device cuda --steps 50 on a synthetic
#      text file (~400 KB of pseudo-random words).
#   5. train_vit --model vit-cifar --device cuda on synthetic CIFAR-10 binary
#      batches (data_batch_{1..5}.bin, test_batch.bin: records of one label
#      byte and 3,072 random pixel bytes, the format of src/data/cifar.rs).
#   6. A table: parity tests passed/failed/skipped, the benchmark's last lines,
#      steps/s and tokens/s (samples/s) of both runs.
# Every step has a time limit (seconds, overridable): TESTS_TIMEOUT=300,
# BENCH_TIMEOUT=120, GPT_TIMEOUT=180, VIT_TIMEOUT=150; GPT_BATCH=32 sets
# train_gpt's --batch-size, VIT_IMAGES=256 the images per CIFAR batch file.
# Logs go to $OUT/device-check (OUT is set by the device runner) or a
# temporary directory. The exit status is 0 only if every step passed.
set -uo pipefail

bin=${1:-target/device-bin}
TESTS_TIMEOUT=${TESTS_TIMEOUT:-300}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-120}
GPT_TIMEOUT=${GPT_TIMEOUT:-180}
VIT_TIMEOUT=${VIT_TIMEOUT:-150}
GPT_BATCH=${GPT_BATCH:-32}
GPT_BLOCK=256 # gpt-small's context
VIT_IMAGES=${VIT_IMAGES:-256}
VIT_BATCH=128 # the cifar10 recipe's batch

for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    if [ -d "$d" ]; then LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
done
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}

logs=${OUT:+$OUT/device-check}
logs=${logs:-$(mktemp -d -t tamer-device-check.XXXXXX)}
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
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
echo "binaries: $bin; logs: $logs"
for b in cuda train_gpt train_vit; do
    [ -x "$bin/$b" ] || { echo "error: $bin/$b is missing: build it with scripts/build-device-bin.sh"; exit 2; }
done

section "CUDA parity tests"
run tests "$TESTS_TIMEOUT" "$bin/cuda" --test-threads 1 --nocapture
# Counts from libtest's "test result: ok. N passed; M failed; ..." line (with
# --nocapture a test's own output can split its "test name ... ok" line).
passed=$(sed -n 's/^test result: .* \([0-9]*\) passed; .*/\1/p' "$logs/tests.log" | awk '{ s += $1 } END { print s + 0 }')
failed=$(sed -n 's/^test result: .* \([0-9]*\) failed; .*/\1/p' "$logs/tests.log" | awk '{ s += $1 } END { print s + 0 }')
# The names libtest lists under its final "failures:" heading.
failed_names=$(awk '/^failures:$/ { list = 1; names = ""; next } list && /^    [A-Za-z0-9_:]+$/ { names = names $1 "\n" } /^test result:/ { list = 0 } END { printf "%s", names }' "$logs/tests.log")
skipped=$(grep -c 'skipped: no usable CUDA device' "$logs/tests.log")
[ "$skipped" -gt 0 ] && { echo "!! $skipped skip notices: the tests found no usable CUDA device, nothing ran on the GPU"; status=1; }
[ "$failed" -gt 0 ] && status=1

section "kernel benchmark"
if [ -x "$bin/cuda_bench" ]; then
    run bench "$BENCH_TIMEOUT" "$bin/cuda_bench"
else
    echo "no $bin/cuda_bench: skipped" | tee "$logs/bench.log"
fi

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

section "summary"
gpt_tok=$(final_field train_gpt tokens_per_s)
gpt_steps=$(final_field train_gpt steps)
vit_samples=$(final_field train_vit samples_per_s)
vit_steps=$(final_field train_vit steps)
per_step() { [ -n "$1" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' || echo "-"; }
printf '%-34s %s\n' "parity tests" "$passed passed, $failed failed, $skipped skip notices"
printf '%b' "$failed_names" | sed 's/^/    failed: /'
[ -s "$logs/tests.log" ] && ! grep -q '^test result:' "$logs/tests.log" && echo "    (no test result line: the test binary crashed or hit its limit; see $logs/tests.log)"
grep -E 'bit-identical' "$logs/tests.log" | sed 's/^/    /'
printf '%-34s %s\n' "gpt-small (batch $GPT_BATCH x $GPT_BLOCK)" "${gpt_steps:-?} steps, $(per_step "$gpt_tok" $((GPT_BATCH * GPT_BLOCK))) steps/s, ${gpt_tok:-?} tokens/s"
printf '%-34s %s\n' "vit-cifar (batch $VIT_BATCH)" "${vit_steps:-?} steps, $(per_step "$vit_samples" "$VIT_BATCH") steps/s, ${vit_samples:-?} samples/s"
echo "benchmark (last lines of $logs/bench.log):"
tail -n 15 "$logs/bench.log" | sed 's/^/    /'
[ "$status" -eq 0 ] && echo "device check: PASS" || echo "device check: FAIL"
exit "$status"
