#!/usr/bin/env python3
"""Regenerate the optimizer / schedule / clipping / label-smoothing fixtures.

The Rust tests (tests/integration/optim_reference.rs) only read the committed files; Python
is needed only to regenerate them. Usage, from the repository root, with an
interpreter that has torch, safetensors and numpy (e.g. the .venv-fixtures
that scripts/make_fixtures.py creates):

    .venv-fixtures/bin/python scripts/make_optim_fixtures.py

Everything runs on the CPU and is deterministic. What is made:

  tests/fixtures/optim_reference.safetensors
      init.<dtype>.<param>                    starting values of three parameters
      grad.<dtype>.<k>.<param>                the fixed fake gradient of step k
      <case>.<dtype>.param.<k>.<param>        parameter values after step k (torch.optim)
      <case>.<dtype>.state.<param>.<buffer>   the optimizer state after the last step
      <case>.lr, <case>.momentum              what a scheduler set before each step (cases with one)
      clip.<dtype>.<case>.{in,out}.<param>, clip.<dtype>.<case>.norm   torch.nn.utils.clip_grad_norm_
      ce.<dtype>.<case>.{logits,targets,loss,grad}                     F.cross_entropy with label smoothing
  tests/fixtures/optim_schedules.safetensors
      <case>.steps (i64), <case>.lr (f64) [, <case>.momentum, <case>.torch_lr]
  tests/fixtures/optim_fixtures.json
      versions, and the configuration of every case (the Rust tests build their side from it)

<dtype> is f32 or f64: each optimizer case runs in both.
"""

import json
import math
from pathlib import Path

import numpy as np
import safetensors
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures"
STEPS = 5
DTYPES = {"f32": torch.float32, "f64": torch.float64}
PARAMS = {"fc.weight": [3, 4], "fc.bias": [4], "wte.weight": [5, 3]}

# Each case: the optimizer, its hyperparameters, how parameters are grouped
# ("all": one group with the case's weight decay; "default_rule": weight decay
# only on fc.weight, as tamer's DecayRule::Timm(["wte.weight"]) splits these names), an
# optional (step, param) whose gradient is None at that step, and an optional
# OneCycleLR driving the optimizer.
OPT_CASES = [
    {"name": "sgd_plain", "kind": "sgd", "lr": 0.1, "momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0, "groups": "all"},
    {"name": "sgd_momentum", "kind": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": False, "weight_decay": 0.01, "groups": "all"},
    {"name": "sgd_nesterov", "kind": "sgd", "lr": 0.05, "momentum": 0.9, "dampening": 0.0, "nesterov": True, "weight_decay": 0.05, "groups": "all",
     "frozen": [2, "fc.bias"]},
    {"name": "adam", "kind": "adam", "lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "groups": "all"},
    {"name": "adam_l2", "kind": "adam", "lr": 1e-2, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1, "amsgrad": False, "groups": "all",
     "frozen": [2, "fc.bias"]},
    {"name": "adam_amsgrad", "kind": "adam", "lr": 3e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": True, "groups": "all"},
    {"name": "adamw", "kind": "adamw", "lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1, "amsgrad": False, "groups": "all"},
    {"name": "adamw_groups", "kind": "adamw", "lr": 5e-2, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1, "amsgrad": True,
     "groups": "default_rule"},
    {"name": "adam_onecycle", "kind": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "groups": "all",
     "onecycle": {"max_lr": 0.05, "total_steps": STEPS, "pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4, "anneal": "cos",
                  "three_phase": False, "momentum": [0.85, 0.95]}},
    {"name": "sgd_onecycle", "kind": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.0, "nesterov": True, "weight_decay": 0.0, "groups": "all",
     "onecycle": {"max_lr": 0.2, "total_steps": STEPS + 1, "pct_start": 0.4, "div_factor": 10.0, "final_div_factor": 100.0, "anneal": "linear",
                  "three_phase": True, "momentum": [0.8, 0.9]}},
]

ONECYCLE_CASES = [
    {"name": "onecycle_default", "optimizer": "sgd", "max_lr": 0.1, "total_steps": 100, "pct_start": 0.3, "div_factor": 25.0,
     "final_div_factor": 1e4, "anneal": "cos", "three_phase": False, "momentum": [0.85, 0.95]},
    {"name": "onecycle_three_phase", "optimizer": "sgd", "max_lr": 0.05, "total_steps": 50, "pct_start": 0.3, "div_factor": 25.0,
     "final_div_factor": 1e4, "anneal": "cos", "three_phase": True, "momentum": [0.85, 0.95]},
    {"name": "onecycle_linear", "optimizer": "sgd", "max_lr": 1.0, "total_steps": 40, "pct_start": 0.25, "div_factor": 10.0,
     "final_div_factor": 100.0, "anneal": "linear", "three_phase": False, "momentum": [0.85, 0.95]},
    {"name": "onecycle_adam_betas", "optimizer": "adam", "max_lr": 3e-3, "total_steps": 30, "pct_start": 0.3, "div_factor": 25.0,
     "final_div_factor": 1e4, "anneal": "cos", "three_phase": True, "momentum": [0.8, 0.9]},
    {"name": "onecycle_no_momentum", "optimizer": "adam", "max_lr": 0.01, "total_steps": 20, "pct_start": 0.5, "div_factor": 25.0,
     "final_div_factor": 1e4, "anneal": "cos", "three_phase": False, "momentum": None},
    {"name": "onecycle_odd", "optimizer": "sgd", "max_lr": 0.3, "total_steps": 7, "pct_start": 0.3, "div_factor": 25.0,
     "final_div_factor": 1e4, "anneal": "cos", "three_phase": True, "momentum": [0.85, 0.95]},
]

WARMUP_COSINE_CASES = [
    # nanoGPT's shakespeare_char config and its default (GPT-2) config, scaled down.
    {"name": "nanogpt_char", "peak_lr": 1e-3, "warmup_steps": 100, "decay_steps": 5000, "min_lr": 1e-4, "last_step": 6000},
    {"name": "nanogpt_small", "peak_lr": 6e-4, "warmup_steps": 20, "decay_steps": 300, "min_lr": 6e-5, "last_step": 400},
]
WARMUP_LINEAR_CASES = [
    {"name": "warmup_linear", "peak_lr": 6e-4, "warmup_steps": 20, "total_steps": 200, "final_lr": 6e-5, "last_step": 260},
    {"name": "warmup_linear_to_zero", "peak_lr": 1.0, "warmup_steps": 7, "total_steps": 50, "final_lr": 0.0, "last_step": 60},
]
INVERSE_SQRT_CASES = [
    {"name": "inverse_sqrt_fairseq", "peak_lr": 5e-4, "warmup_steps": 4000, "warmup_init_lr": 1e-7, "last_step": 20000},
    {"name": "inverse_sqrt_short", "peak_lr": 1e-3, "warmup_steps": 10, "warmup_init_lr": 0.0, "last_step": 100},
]


def sampled_steps(last, dense=160, every=37):
    """Every step up to `dense`, then every `every`-th, and the last."""
    steps = list(range(0, min(dense, last) + 1)) + list(range(dense + every, last, every)) + [last]
    return sorted(set(steps))


def nanogpt_get_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    # karpathy/nanoGPT train.py, verbatim apart from the arguments.
    # 1) linear warmup for warmup_iters steps
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    # 2) if it > lr_decay_iters, return min learning rate
    if it > lr_decay_iters:
        return min_lr
    # 3) in between, use cosine decay down to min learning rate
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # coeff ranges 0..1
    return min_lr + coeff * (learning_rate - min_lr)


class FairseqInverseSqrt:
    """fairseq/optim/lr_scheduler/inverse_square_root_schedule.py, without the config plumbing."""

    def __init__(self, lr, warmup_updates, warmup_init_lr):
        warmup_end_lr = lr
        if warmup_init_lr < 0:
            warmup_init_lr = 0 if warmup_updates > 0 else warmup_end_lr
        self.warmup_init_lr = warmup_init_lr
        self.warmup_updates = warmup_updates
        self.lr_step = (warmup_end_lr - warmup_init_lr) / warmup_updates
        self.decay_factor = warmup_end_lr * warmup_updates**0.5

    def step_update(self, num_updates):
        if num_updates < self.warmup_updates:
            return self.warmup_init_lr + num_updates * self.lr_step
        return self.decay_factor * num_updates**-0.5


def torch_linear_phases(peak, warmup, total, final, steps):
    """Warmup and decay as two torch LinearLR schedulers, each on its own optimizer."""
    out = {}
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=peak)
    s = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / (warmup + 1), end_factor=warmup / (warmup + 1), total_iters=warmup - 1)
    for k in range(warmup):
        out[k] = opt.param_groups[0]["lr"]
        opt.step()
        s.step()
    opt = torch.optim.SGD([p], lr=peak)
    s = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=final / peak, total_iters=total - warmup)
    for k in range(warmup, max(steps) + 1):
        out[k] = opt.param_groups[0]["lr"]
        opt.step()
        s.step()
    return [out[k] for k in steps]


def torch_cosine_phases(peak, warmup, decay, min_lr, steps):
    """nanoGPT's schedule from torch: LinearLR warmup, then CosineAnnealingLR(T_max = decay - warmup)."""
    out = {}
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=peak)
    s = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / (warmup + 1), end_factor=warmup / (warmup + 1), total_iters=warmup - 1)
    for k in range(warmup):
        out[k] = opt.param_groups[0]["lr"]
        opt.step()
        s.step()
    opt = torch.optim.SGD([p], lr=peak)
    s = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=decay - warmup, eta_min=min_lr)
    for k in range(warmup, decay + 1):
        out[k] = opt.param_groups[0]["lr"]
        opt.step()
        s.step()
    # Past T_max torch's cosine rises again (it is periodic); nanoGPT holds min_lr.
    return [out.get(k, float("nan")) for k in steps]


def make_onecycle(opt, cfg):
    return torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=cfg["max_lr"],
        total_steps=cfg["total_steps"],
        pct_start=cfg["pct_start"],
        anneal_strategy=cfg["anneal"],
        cycle_momentum=cfg["momentum"] is not None,
        base_momentum=(cfg["momentum"] or [0.85, 0.95])[0],
        max_momentum=(cfg["momentum"] or [0.85, 0.95])[1],
        div_factor=cfg["div_factor"],
        final_div_factor=cfg["final_div_factor"],
        three_phase=cfg["three_phase"],
    )


def current_momentum(opt):
    g = opt.param_groups[0]
    return g["betas"][0] if "betas" in g else g["momentum"]


def onecycle_values(cfg):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9) if cfg["optimizer"] == "sgd" else torch.optim.Adam([p], lr=0.1)
    s = make_onecycle(opt, cfg)
    lrs, moms = [], []
    for _ in range(cfg["total_steps"]):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(current_momentum(opt))
        opt.step()
        s.step()
    return lrs, moms


def make_optimizer(case, params):
    names = list(PARAMS)
    if case["groups"] == "all":
        groups = [{"params": [params[n] for n in names], "weight_decay": case["weight_decay"]}]
    else:
        groups = [
            {"params": [params["fc.weight"]], "weight_decay": case["weight_decay"]},
            {"params": [params["fc.bias"], params["wte.weight"]], "weight_decay": 0.0},
        ]
    if case["kind"] == "sgd":
        return torch.optim.SGD(groups, lr=case["lr"], momentum=case["momentum"], dampening=case["dampening"], nesterov=case["nesterov"])
    cls = torch.optim.Adam if case["kind"] == "adam" else torch.optim.AdamW
    return cls(groups, lr=case["lr"], betas=tuple(case["betas"]), eps=case["eps"], amsgrad=case["amsgrad"], foreach=False)


def main():
    torch.manual_seed(0)
    gen = np.random.default_rng(1234)
    out = {}
    init64 = {n: torch.from_numpy(gen.normal(0.0, 1.0, size=s)) for n, s in PARAMS.items()}
    # Gradients spanning four decades per element, so eps and the second moment both matter.
    grads64 = [
        {n: torch.from_numpy(gen.normal(0.0, 1.0, size=s) * 10.0 ** gen.uniform(-3, 1, size=s)) for n, s in PARAMS.items()}
        for _ in range(STEPS)
    ]
    for dt, dtype in DTYPES.items():
        for n in PARAMS:
            out[f"init.{dt}.{n}"] = init64[n].to(dtype)
            for k in range(STEPS):
                out[f"grad.{dt}.{k}.{n}"] = grads64[k][n].to(dtype)

    for case in OPT_CASES:
        for dt, dtype in DTYPES.items():
            params = {n: torch.nn.Parameter(init64[n].to(dtype).clone()) for n in PARAMS}
            opt = make_optimizer(case, params)
            sched = make_onecycle(opt, case["onecycle"]) if "onecycle" in case else None
            lrs, moms = [], []
            for k in range(STEPS):
                for n, p in params.items():
                    frozen = case.get("frozen")
                    p.grad = None if frozen and frozen[0] == k and frozen[1] == n else grads64[k][n].to(dtype).clone()
                lrs.append(opt.param_groups[0]["lr"])
                moms.append(current_momentum(opt))
                opt.step()
                if sched is not None:
                    sched.step()
                for n, p in params.items():
                    out[f"{case['name']}.{dt}.param.{k}.{n}"] = p.detach().clone()
            for n, p in params.items():
                for key, v in opt.state[p].items():
                    if key == "step":
                        out[f"{case['name']}.{dt}.state.{n}.step"] = torch.tensor([float(v)], dtype=torch.float64)
                    elif v is not None:
                        out[f"{case['name']}.{dt}.state.{n}.{key}"] = v.detach().clone()
            if sched is not None and dt == "f64":
                out[f"{case['name']}.lr"] = torch.tensor(lrs, dtype=torch.float64)
                out[f"{case['name']}.momentum"] = torch.tensor(moms, dtype=torch.float64)

    # Clipping: one set of gradients, a max_norm that clips and one that does not.
    clip_grads = {n: torch.from_numpy(gen.normal(0.0, 1.0, size=s)) for n, s in PARAMS.items()}
    for dt, dtype in DTYPES.items():
        for cname, max_norm in [("clipped", 1.0), ("unclipped", 100.0)]:
            params = [torch.nn.Parameter(torch.zeros(s, dtype=dtype)) for s in PARAMS.values()]
            for p, n in zip(params, PARAMS):
                p.grad = clip_grads[n].to(dtype).clone()
                out[f"clip.{dt}.{cname}.in.{n}"] = p.grad.clone()
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
            out[f"clip.{dt}.{cname}.norm"] = torch.tensor([float(norm)], dtype=torch.float64)
            for p, n in zip(params, PARAMS):
                out[f"clip.{dt}.{cname}.out.{n}"] = p.grad.clone()

    # Cross-entropy with label smoothing (mean over non-ignored rows), logits gradient.
    ce_cases = [
        ("rows", [6, 5], [0, 4, -100, 2, 1, 3], 0.1),
        ("seq", [2, 3, 4], [[0, 3, 1], [2, -100, 3]], 0.2),
        ("strong", [4, 7], [6, 0, 3, 3], 0.9),
    ]
    for dt, dtype in DTYPES.items():
        for cname, shape, targets, eps in ce_cases:
            logits = torch.from_numpy(gen.normal(0.0, 2.0, size=shape)).to(dtype).requires_grad_()
            t = torch.tensor(targets, dtype=torch.int64)
            loss = F.cross_entropy(logits.reshape(-1, shape[-1]), t.reshape(-1), ignore_index=-100, label_smoothing=eps)
            loss.backward()
            out[f"ce.{dt}.{cname}.logits"] = logits.detach().clone()
            out[f"ce.{dt}.{cname}.targets"] = t
            out[f"ce.{dt}.{cname}.loss"] = loss.detach().reshape(1).to(torch.float64)
            out[f"ce.{dt}.{cname}.grad"] = logits.grad.clone()

    sched_out = {}
    for cfg in ONECYCLE_CASES:
        lrs, moms = onecycle_values(cfg)
        sched_out[f"{cfg['name']}.steps"] = torch.arange(cfg["total_steps"], dtype=torch.int64)
        sched_out[f"{cfg['name']}.lr"] = torch.tensor(lrs, dtype=torch.float64)
        sched_out[f"{cfg['name']}.momentum"] = torch.tensor(moms, dtype=torch.float64)
    for cfg in WARMUP_COSINE_CASES:
        steps = sampled_steps(cfg["last_step"])
        args = (cfg["peak_lr"], cfg["warmup_steps"], cfg["decay_steps"], cfg["min_lr"])
        sched_out[f"{cfg['name']}.steps"] = torch.tensor(steps, dtype=torch.int64)
        sched_out[f"{cfg['name']}.lr"] = torch.tensor([nanogpt_get_lr(s, *args) for s in steps], dtype=torch.float64)
        sched_out[f"{cfg['name']}.torch_lr"] = torch.tensor(torch_cosine_phases(*args, steps), dtype=torch.float64)
    for cfg in WARMUP_LINEAR_CASES:
        steps = sampled_steps(cfg["last_step"])
        sched_out[f"{cfg['name']}.steps"] = torch.tensor(steps, dtype=torch.int64)
        sched_out[f"{cfg['name']}.lr"] = torch.tensor(
            torch_linear_phases(cfg["peak_lr"], cfg["warmup_steps"], cfg["total_steps"], cfg["final_lr"], steps), dtype=torch.float64
        )
    for cfg in INVERSE_SQRT_CASES:
        steps = sampled_steps(cfg["last_step"])
        f = FairseqInverseSqrt(cfg["peak_lr"], cfg["warmup_steps"], cfg["warmup_init_lr"])
        sched_out[f"{cfg['name']}.steps"] = torch.tensor(steps, dtype=torch.int64)
        sched_out[f"{cfg['name']}.lr"] = torch.tensor([f.step_update(s) for s in steps], dtype=torch.float64)

    OUT.mkdir(parents=True, exist_ok=True)
    out = {k: v.contiguous() for k, v in out.items()}
    save_file(out, str(OUT / "optim_reference.safetensors"))
    save_file({k: v.contiguous() for k, v in sched_out.items()}, str(OUT / "optim_schedules.safetensors"))
    meta = {
        "generator": "scripts/make_optim_fixtures.py",
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "safetensors": safetensors.__version__},
        "steps": STEPS,
        "params": PARAMS,
        "optimizers": OPT_CASES,
        "clip": {"clipped": 1.0, "unclipped": 100.0},
        "cross_entropy": [{"name": n, "shape": s, "label_smoothing": e, "ignore_index": -100} for n, s, _, e in ce_cases],
        "onecycle": ONECYCLE_CASES,
        "warmup_cosine": WARMUP_COSINE_CASES,
        "warmup_linear": WARMUP_LINEAR_CASES,
        "inverse_sqrt": INVERSE_SQRT_CASES,
    }
    (OUT / "optim_fixtures.json").write_text(json.dumps(meta, indent=1) + "\n")
    for f in ["optim_reference.safetensors", "optim_schedules.safetensors", "optim_fixtures.json"]:
        print(f, (OUT / f).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
