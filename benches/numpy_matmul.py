#!/usr/bin/env python3
"""numpy reference for benches/matmul.rs: the same cases (benches/matmul_cases.json), the same JSON lines.

Run it as

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benches/numpy_matmul.py

This environment sets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which make OpenBLAS pick
a slower kernel and blocking (about half its speed); unset them, as above, to compare
against what numpy does by default. (With the project's venv: .venv/bin/python instead
of python3; benches/compare_matmul.sh does this.)

Prints one line per case:
  {"bench":"matmul","impl":"numpy","case":..,"dtype":"f32","batch":B,"m":M,"n":N,"k":K,"ta":..,"tb":..,
   "threads":T,"clock":"wall","median_ms":..,"gflops":..,"loadavg":..}
and first a {"bench":"blas_info",...} line saying which BLAS library and kernel
(core type) numpy uses, from threadpoolctl. Threads are set with threadpoolctl when it
is installed, otherwise through OPENBLAS_NUM_THREADS (then this script re-runs itself
once per thread count, because OpenBLAS reads the variable at load time).

Options: --size N (only the N x N square case), --model NAME (only cases whose name starts
with NAME), --batched (only the batched cases), --threads T, --dtype f32|f64, --secs S (timed seconds per
case, default 0.3).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # fall back to the environment variable
    threadpool_info = None
    threadpool_limits = None

CASES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "matmul_cases.json")


def cases(size, model, batched_only):
    """The cases of benches/matmul_cases.json (the list benches/matmul.rs runs), filtered."""
    with open(CASES_FILE) as f:
        out = json.load(f)
    if size is not None:
        out = [c for c in out if c["batch"] == 1 and c["m"] == c["n"] == c["k"] == size]
    if model is not None:
        out = [c for c in out if c["case"].startswith(model)]
    if batched_only:
        out = [c for c in out if c["batch"] > 1]
    return out


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return -1.0


def time_case(a, b, secs):
    """Median seconds of a @ b after warm-up; about `secs` seconds of runs (5 to 50)."""
    start = time.perf_counter()
    warm = 0
    while warm < 3 or time.perf_counter() - start < secs / 5:
        a @ b
        warm += 1
    per_run = (time.perf_counter() - start) / warm
    runs = min(50, max(5, int(secs / per_run)))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def blas_info():
    info = {"bench": "blas_info", "impl": "numpy", "numpy": np.__version__}
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS"):
        if var in os.environ:
            info[var] = os.environ[var]
    if threadpool_info is not None:
        info["threadpools"] = [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "threading_layer", "num_threads")}
            for p in threadpool_info()
            if p.get("user_api") == "blas"
        ]
    else:
        info["threadpools"] = "threadpoolctl not installed"
        info["openblas_corename"] = openblas_corename()
    return info


def openblas_corename():
    """The OpenBLAS kernel name asked of the library numpy loaded (no threadpoolctl)."""
    import ctypes
    import glob

    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in glob.glob(os.path.join(libs, "*openblas*")):
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return "unknown"


def operands(case, dtype, rng):
    """A and B as the case reads them: transposed views of row-major arrays where ta/tb."""
    batch, m, n, k = case["batch"], case["m"], case["n"], case["k"]
    lead = () if batch == 1 else (batch,)
    a = rng.standard_normal(lead + ((k, m) if case["ta"] else (m, k))).astype(dtype)
    b = rng.standard_normal(lead + ((n, k) if case["tb"] else (k, n))).astype(dtype)
    if case["ta"]:
        a = a.swapaxes(-1, -2)
    if case["tb"]:
        b = b.swapaxes(-1, -2)
    return a, b


def run(args, thread_counts):
    dtype = np.float64 if args.dtype == "f64" else np.float32
    rng = np.random.default_rng(0)
    for case in cases(args.size, args.model, args.batched):
        a, b = operands(case, dtype, rng)
        batch, m, n, k = case["batch"], case["m"], case["n"], case["k"]
        for threads in thread_counts:
            if threadpool_limits is not None:
                with threadpool_limits(limits=threads, user_api="blas"):
                    secs = time_case(a, b, args.secs)
            else:
                secs = time_case(a, b, args.secs)
            line = {
                "bench": "matmul",
                "impl": "numpy",
                "case": case["case"],
                "dtype": args.dtype,
                "batch": batch,
                "m": m,
                "n": n,
                "k": k,
                "ta": case["ta"],
                "tb": case["tb"],
                "threads": threads,
                "clock": "wall",
                "median_ms": round(secs * 1e3, 4),
                "gflops": round(2.0 * batch * m * n * k / secs / 1e9, 2),
                "loadavg": round(load_average(), 2),
            }
            print(json.dumps(line, separators=(",", ":")), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int)
    p.add_argument("--model", help="only cases whose name starts with this (e.g. gpt-small)")
    p.add_argument("--batched", action="store_true", help="only the batched (attention) cases")
    p.add_argument("--threads", type=int)
    p.add_argument("--secs", type=float, default=0.3, help="seconds of timed runs per case (default 0.3)")
    p.add_argument("--dtype", default="f32", choices=["f32", "f64"])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"warning: {var}={os.environ[var]} is set and slows OpenBLAS down; "
                  f"run with env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE", file=sys.stderr)
    thread_counts = [args.threads] if args.threads else [1, 2]
    if threadpool_limits is not None or args.child:
        if not args.child:
            print(json.dumps(blas_info(), separators=(",", ":")), flush=True)
        run(args, thread_counts)
        return
    # No threadpoolctl: one child process per thread count, each with OPENBLAS_NUM_THREADS set.
    print(json.dumps(blas_info(), separators=(",", ":")), flush=True)
    for t in thread_counts:
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(t))
        cmd = [sys.executable, __file__, "--child", "--threads", str(t), "--dtype", args.dtype, "--secs", str(args.secs)]
        if args.size:
            cmd += ["--size", str(args.size)]
        if args.model:
            cmd += ["--model", args.model]
        if args.batched:
            cmd += ["--batched"]
        subprocess.run(cmd, env=env, check=True)


if __name__ == "__main__":
    main()
