#!/usr/bin/env python3
"""PyTorch's twin of benches/train_step.rs: the same four models, batches and optimizer,
the same JSON lines, so that tamer and PyTorch are compared step for step.

    python benches/torch_train_step.py                          # every config, all cores
    python benches/torch_train_step.py --config gpt-tiny --threads 1
    scripts/bench_train_step.sh                                 # interleaved with tamer's bench

PyTorch is not a dependency of tamer: run this with an interpreter that has torch
(`python3 -m venv /work/torchvenv && /work/torchvenv/bin/pip install torch numpy`).

The models are written out plainly with torch.nn, as benches/train_step.rs's docs describe
them: pre-LN blocks, LayerNorm eps 1e-5, every Linear with a bias except the GPT's head,
exact GELU (nn.GELU(approximate='none')), no dropout, float32. Attention is what PyTorch
users write today: F.scaled_dot_product_attention, with is_causal=True for the GPTs (its
fused CPU kernel; the score matrix is not kept for the backward). The optimizer is
torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8,
weight_decay=0.01) with its default (foreach) implementation. Initialisation follows
nanoGPT (GPT) and timm (ViT), as tamer's models do.

A step: zero_grad(set_to_none=True), forward, mean cross-entropy, loss.item(), backward
(which frees the graph), optimizer step. --warmup steps (3) untimed, then --steps (15)
timed one by one. With --device cuda the model and batch live on the GPU and each timed
step ends with torch.cuda.synchronize(); --autocast bf16 (or f16) runs the forward pass
and the loss under torch.autocast("cuda", dtype=...), as tamer's bench does. The gpt2
config (GPT-2 124M's shape, tied head) runs only when named. Prints first one line
about the build,

  {"bench":"torch_info","torch":..,"blas":..,"cpu_capability":..,"mkldnn":..,"omp_wait_policy":..,"gpu":..}

(OMP_WAIT_POLICY=PASSIVE keeps PyTorch's OpenMP threads from spinning at barriers: on a
loaded machine that makes its multi-threaded steps several times faster; see BENCHMARKS.md)

then one line per config and thread count (torch.set_num_threads):

  {"bench":"train_step","impl":"torch","config":..,"params":..,"threads":..,"batch":..,
   "step_ms":..,"min_ms":..,"tokens_or_images_per_s":..,"page_faults_per_step":..,
   "load_avg":..,"loss_first":..,"loss_last":..,"device":..,"autocast":..,
   "model_flops_per_step":..,"model_tflops":..}

with the fields meaning what they mean in benches/train_step.rs.
"""

import argparse
import math
import os
import resource
import signal
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# config -> (kind, architecture, batch, parameter count)
CONFIGS = {
    "gpt-tiny": ("gpt", dict(vocab=65, context=64, layers=4, heads=4, d=128), 32, 818_176),
    "gpt-small": ("gpt", dict(vocab=65, context=256, layers=6, heads=6, d=384), 16, 10_795_776),
    "vit-tiny": ("vit", dict(img=28, chans=1, patch=4, d=64, layers=4, heads=4, mlp=128, classes=10), 128, 139_018),
    "vit-cifar": ("vit", dict(img=32, chans=3, patch=4, d=192, layers=6, heads=3, mlp=384, classes=10), 64, 1_806_538),
    "gpt2": ("gpt", dict(vocab=50_304, context=1024, layers=12, heads=12, d=768, tied=True), 8, 124_475_904),
}
DEFAULT_CONFIGS = ["gpt-tiny", "gpt-small", "vit-tiny", "vit-cifar"]
EPS = 1e-5


class Attention(nn.Module):
    """Multi-head self-attention from one fused qkv projection."""

    def __init__(self, d, heads, causal):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # [B, H, T, d/H]
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-LN: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, d, heads, mlp, causal):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=EPS)
        self.attn = Attention(d, heads, causal)
        self.norm2 = nn.LayerNorm(d, eps=EPS)
        self.mlp = nn.Sequential(nn.Linear(d, mlp), nn.GELU(approximate="none"), nn.Linear(mlp, d))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Gpt(nn.Module):
    """nanoGPT's layout with an untied head: tokens + positions, causal blocks, LN, head."""

    def __init__(self, vocab, context, layers, heads, d, tied=False):
        super().__init__()
        self.layers, self.d = layers, d
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads, 4 * d, causal=True) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d, eps=EPS)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        # nanoGPT's initialisation: N(0, 0.02²), residual projections scaled by 1/√(2L), biases 0.
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("attn.proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        if tied:
            self.lm_head.weight = self.wte.weight  # GPT-2's head is its token embedding

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


class Vit(nn.Module):
    """timm's layout: conv patches, class token first, learned positions, blocks, LN, head on CLS."""

    def __init__(self, img, chans, patch, d, layers, heads, mlp, classes):
        super().__init__()
        n = (img // patch) ** 2
        self.layers, self.d = layers, d
        self.patch_embed = nn.Conv2d(chans, d, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, d))
        self.blocks = nn.ModuleList(Block(d, heads, mlp, causal=False) for _ in range(layers))
        self.norm = nn.LayerNorm(d, eps=EPS)
        self.head = nn.Linear(d, classes)
        # timm's initialisation: Linear weights and positions truncated N(0, 0.02²), CLS N(0, 1e-6²).
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, images, labels):
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # [B, N, D]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x)[:, 0])
        return F.cross_entropy(logits, labels)


def model_flops_per_step(model, inputs, kind):
    """PaLM's formula, as benches/train_step.rs: 6·N + 12·L·d·T per token, N without positions."""
    if kind == "gpt":
        sequences, seq = inputs[0].shape
        positions = model.wpe.weight.numel()
    else:
        sequences, seq = inputs[0].shape[0], model.pos_embed.shape[1]
        positions = model.pos_embed.numel()
    n = sum(p.numel() for p in model.parameters()) - positions
    return (6 * n + 12 * model.layers * model.d * seq) * seq * sequences


def workload(name):
    """The model, its fixed random batch (as forward's arguments) and what one step processes."""
    kind, arch, batch, expected = CONFIGS[name]
    torch.manual_seed(0)
    if kind == "gpt":
        model = Gpt(**arch)
        shape = (batch, arch["context"])
        inputs = (torch.randint(0, arch["vocab"], shape), torch.randint(0, arch["vocab"], shape))
        items = batch * arch["context"]
    else:
        model = Vit(**arch)
        inputs = (torch.randn(batch, arch["chans"], arch["img"], arch["img"]), torch.randint(0, arch["classes"], (batch,)))
        items = batch
    params = sum(p.numel() for p in model.parameters())
    if params != expected:
        sys.exit(f"torch_train_step: {name} has {params} parameters, expected {expected}: the model no longer matches benches/train_step.rs")
    return model, inputs, items, params, batch, model_flops_per_step(model, inputs, kind)


AUTOCAST = {"none": None, "bf16": torch.bfloat16, "f16": torch.float16}


def train_step(model, opt, inputs, autocast):
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=AUTOCAST[autocast], enabled=autocast != "none"):
        loss = model(*inputs)
    value = loss.item()
    if not math.isfinite(value):
        sys.exit(f"torch_train_step: the loss is {value}: the benchmark would time a diverged run")
    loss.backward()
    opt.step()
    return value


def run(name, threads, args):
    torch.set_num_threads(threads)
    model, inputs, items, params, batch, flops = workload(name)
    device = torch.device(args.device)
    model.to(device)
    inputs = tuple(t.to(device) for t in inputs)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    losses = [train_step(model, opt, inputs, args.autocast) for _ in range(args.warmup)]
    sync()
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        losses.append(train_step(model, opt, inputs, args.autocast))
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    median = statistics.median(times)
    line = (
        f'{{"bench":"train_step","impl":"torch","config":"{name}","params":{params},"threads":{torch.get_num_threads()},'
        f'"batch":{batch},"step_ms":{median:.2f},"min_ms":{min(times):.2f},"tokens_or_images_per_s":{items / (median / 1e3):.1f},'
        f'"page_faults_per_step":{faults / args.steps:.1f},"load_avg":{os.getloadavg()[0]:.2f},'
        f'"loss_first":{losses[0]:.5f},"loss_last":{losses[-1]:.5f},"device":"{device}","autocast":"{args.autocast}",'
        f'"model_flops_per_step":{flops:.4e},"model_tflops":{flops / (median / 1e3) / 1e12:.3f}}}'
    )
    print(line, flush=True)


def comma_list(convert):
    return lambda text: [convert(part) for part in text.split(",") if part]


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # piped into head: end quietly
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", type=comma_list(str), default=[], help="configs, repeated or comma-separated [default: all four]")
    parser.add_argument("--threads", action="append", type=comma_list(int), default=[], help="thread counts, repeated or comma-separated [default: all cores]")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per config")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--autocast", default="none", choices=list(AUTOCAST), help="16-bit forward products (CUDA only)")
    args = parser.parse_args()
    configs = [c for group in args.config for c in group] or DEFAULT_CONFIGS
    if not (args.device == "cpu" or args.device == "cuda" or args.device.startswith("cuda:")):
        parser.error(f"--device {args.device}: expected cpu, cuda or cuda:N")
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch finds no CUDA device")
    if args.autocast != "none" and args.device == "cpu":
        parser.error(f"--autocast {args.autocast} needs --device cuda")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown --config {', '.join(unknown)}; expected some of {', '.join(CONFIGS)}")
    threads = [t for group in args.threads for t in group] or [os.cpu_count() or 1]
    if any(t < 1 for t in threads) or args.steps < 1 or args.warmup < 0:
        parser.error("--threads and --steps must be at least 1, --warmup at least 0")

    config = torch.__config__.show()
    blas = "mkl" if "BLAS_INFO=mkl" in config else next((p.split("=")[1] for p in config.split(", ") if p.startswith("BLAS_INFO=")), "unknown")
    print(
        f'{{"bench":"torch_info","torch":"{torch.__version__}","blas":"{blas}",'
        f'"cpu_capability":"{torch.backends.cpu.get_cpu_capability()}","mkldnn":{str(torch.backends.mkldnn.is_available()).lower()},'
        f'"omp_wait_policy":"{os.environ.get("OMP_WAIT_POLICY", "default")}",'
        f'"gpu":"{torch.cuda.get_device_name(torch.device(args.device)) if args.device != "cpu" else ""}"}}',
        flush=True,
    )
    for t in threads:
        for name in configs:
            run(name, t, args)


if __name__ == "__main__":
    main()
