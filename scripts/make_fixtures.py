#!/usr/bin/env python3
"""Regenerate the PyTorch interop fixtures under tests/fixtures/.

The Rust tests only read the committed fixtures; Python is needed only to
regenerate them. Usage (from the repository root):

    python3 scripts/make_fixtures.py            # creates .venv-fixtures, installs, re-runs itself
    python3 scripts/make_fixtures.py --no-venv  # use the current interpreter (needs torch, timm, safetensors, numpy)

Packages come from PyPI: `pip install torch timm safetensors numpy` (the
default torch wheel; only its CPU side is used). Versions used are recorded in
tests/fixtures/fixtures.json.

Every file is deterministic given the seeds below (CPU, float32, deterministic
algorithms). What is made:

  vit_tiny.safetensors         timm VisionTransformer (class token, 'token' pool), state_dict, timm names
  vit_tiny_io.safetensors      its input x [2,1,8,8], logits, targets, loss and grad.<param> of a cross-entropy loss
  vit_tiny_avg.safetensors     same shapes, no class token, global_pool='avg' (timm adds fc_norm, drops norm)
  vit_tiny_avg_io.safetensors  its input, logits, targets, loss and gradients
  gpt_tiny.safetensors         nanoGPT-style GPT, nanoGPT names (lm_head.weight stored as a copy of the tied wte)
  gpt_tiny_hf.safetensors      the same weights in Hugging Face GPT2Model layout: no `transformer.` prefix,
                               Conv1D weights [in, out], attn.bias mask buffers, no lm_head
  gpt_tiny_io.safetensors      idx [2,8] (i64), targets, logits [2,8,11], loss and grad.<param>
  pos_embed_resize.safetensors pos_embed inputs and F.interpolate(bicubic) resizes as timm's resample_abs_pos_embed
  dtypes.safetensors           one tensor stored by torch as f16, bf16, f32, f64, i64, plus torch's f32 upcasts
  fixtures.json                versions, seeds, configurations and the list of files
"""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures"
VENV = ROOT / ".venv-fixtures"
PACKAGES = ["torch", "timm", "safetensors", "numpy"]


def ensure_venv():
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    probe = subprocess.run([str(py), "-c", "import torch, timm, safetensors, numpy"], capture_output=True)
    if probe.returncode != 0:
        subprocess.check_call([str(py), "-m", "pip", "install", "--progress-bar", "off", *PACKAGES])
    os.execv(str(py), [str(py), __file__, "--no-venv"])


# ---------------------------------------------------------------------------------------------
# The nanoGPT model, copied in structure from karpathy/nanoGPT model.py (dropout 0, eval mode).
# ---------------------------------------------------------------------------------------------


def build_gpt_classes(torch):
    nn = torch.nn
    F = torch.nn.functional

    class LayerNorm(nn.Module):
        def __init__(self, ndim, bias):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

        def forward(self, x):
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)

    class CausalSelfAttention(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c_attn = nn.Linear(c["n_embd"], 3 * c["n_embd"], bias=c["bias"])
            self.c_proj = nn.Linear(c["n_embd"], c["n_embd"], bias=c["bias"])
            self.n_head = c["n_head"]
            self.n_embd = c["n_embd"]

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
            k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            # The explicit (non-flash) path of nanoGPT, for bit-stable reference values.
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
            att = att.masked_fill(~mask, float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.c_proj(y)

    class MLP(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c_fc = nn.Linear(c["n_embd"], 4 * c["n_embd"], bias=c["bias"])
            self.gelu = nn.GELU()  # exact (erf) GELU, as nanoGPT
            self.c_proj = nn.Linear(4 * c["n_embd"], c["n_embd"], bias=c["bias"])

        def forward(self, x):
            return self.c_proj(self.gelu(self.c_fc(x)))

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.ln_1 = LayerNorm(c["n_embd"], bias=c["bias"])
            self.attn = CausalSelfAttention(c)
            self.ln_2 = LayerNorm(c["n_embd"], bias=c["bias"])
            self.mlp = MLP(c)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            x = x + self.mlp(self.ln_2(x))
            return x

    class GPT(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c
            self.transformer = nn.ModuleDict(
                dict(
                    wte=nn.Embedding(c["vocab_size"], c["n_embd"]),
                    wpe=nn.Embedding(c["block_size"], c["n_embd"]),
                    h=nn.ModuleList([Block(c) for _ in range(c["n_layer"])]),
                    ln_f=LayerNorm(c["n_embd"], bias=c["bias"]),
                )
            )
            self.lm_head = nn.Linear(c["n_embd"], c["vocab_size"], bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT

        def forward(self, idx):
            b, t = idx.size()
            pos = torch.arange(0, t, dtype=torch.long)
            x = self.transformer.wte(idx) + self.transformer.wpe(pos)
            for block in self.transformer.h:
                x = block(x)
            x = self.transformer.ln_f(x)
            return self.lm_head(x)  # logits for every position: [B, T, vocab]

    return GPT


def randomize_(torch, model, gen, weight_std=0.3):
    """Replace every parameter by seeded random values well away from the default
    initialisation (LayerNorm gains near 1, biases non-zero), so that a loader
    that drops or transposes a tensor cannot go unnoticed."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("weight") and p.dim() == 1:  # norm gains
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(weight_std * noise)


def state_dict_f32(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def grads_of(model, names):
    params = dict(model.named_parameters())
    return {f"grad.{n}": params[n].grad.detach().clone().contiguous() for n in names}


def main():
    import numpy
    import safetensors
    import timm
    import torch
    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer import VisionTransformer

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    F = torch.nn.functional
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {
        "generator": "scripts/make_fixtures.py",
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "timm": timm.__version__,
            "safetensors": safetensors.__version__,
            "numpy": numpy.__version__,
        },
        "files": {},
    }
    # One entry only: safetensors writes this map in hash order, so more would make the files non-deterministic.
    st_meta = {"generator": f"scripts/make_fixtures.py with torch {torch.__version__}, timm {timm.__version__}"}

    def save(name, tensors, info):
        path = OUT / name
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=st_meta)
        info = dict(info)
        info["bytes"] = path.stat().st_size
        info["tensors"] = {k: f"{str(v.dtype).replace('torch.', '')} {list(v.shape)}" for k, v in sorted(tensors.items())}
        meta["files"][name] = info

    # ------------------------------------------------------------------ ViT (timm)
    vit_grad_names = ["head.weight", "head.bias", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight", "pos_embed", "patch_embed.proj.weight"]
    for variant, seed, kwargs, extra_grads in [
        ("vit_tiny", 1, dict(class_token=True, global_pool="token"), ["cls_token", "norm.weight"]),
        ("vit_tiny_avg", 2, dict(class_token=False, global_pool="avg"), ["fc_norm.weight"]),
    ]:
        config = dict(img_size=8, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0, **kwargs)
        torch.manual_seed(seed)
        model = VisionTransformer(**config).eval()
        gen = torch.Generator().manual_seed(seed)
        randomize_(torch, model, gen)
        x = torch.randn((2, 1, 8, 8), generator=gen)
        targets = torch.tensor([3, 7], dtype=torch.long)
        logits = model(x)
        loss = F.cross_entropy(logits, targets)
        model.zero_grad()
        loss.backward()
        names = vit_grad_names + extra_grads
        info = {
            "model": "timm.models.vision_transformer.VisionTransformer",
            "config": config,
            "seed": seed,
            "notes": "eval mode; timm defaults: qkv_bias=True, LayerNorm eps=1e-6, exact GELU, pre-LN; "
            "all parameters re-drawn: matrices N(0, 0.3^2), norm gains 1 + N(0, 0.2^2), biases N(0, 0.1^2)",
        }
        save(f"{variant}.safetensors", state_dict_f32(model), info)
        io = {"x": x, "targets": targets, "logits": logits.detach(), "loss": loss.detach().reshape(())}
        io.update(grads_of(model, names))
        save(f"{variant}_io.safetensors", io, {"model": variant, "loss": "F.cross_entropy(logits, targets), mean over the batch"})

    # ------------------------------------------------------------------ GPT (nanoGPT)
    GPT = build_gpt_classes(torch)
    gcfg = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=True, dropout=0.0)
    torch.manual_seed(3)
    gpt = GPT(gcfg).eval()
    gen = torch.Generator().manual_seed(3)
    randomize_(torch, gpt, gen)
    idx = torch.randint(0, gcfg["vocab_size"], (2, 8), generator=gen)
    targets = torch.randint(0, gcfg["vocab_size"], (2, 8), generator=gen)
    logits = gpt(idx)
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
    gpt.zero_grad()
    loss.backward()
    sd = state_dict_f32(gpt)  # nanoGPT's state_dict lists both the tied wte and lm_head
    sd["lm_head.weight"] = sd["lm_head.weight"].clone()  # safetensors stores no shared memory
    gpt_info = {
        "model": "nanoGPT GPT (copied in scripts/make_fixtures.py)",
        "config": gcfg,
        "seed": 3,
        "notes": "LayerNorm eps=1e-5, exact GELU, lm_head tied to transformer.wte (both names stored); "
        "parameters re-drawn as for the ViT",
    }
    save("gpt_tiny.safetensors", sd, gpt_info)
    gpt_grads = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_proj.weight", "transformer.h.1.ln_2.bias", "transformer.ln_f.weight"]
    io = {"idx": idx, "targets": targets, "logits": logits.detach(), "loss": loss.detach().reshape(())}
    io.update(grads_of(gpt, gpt_grads))
    save("gpt_tiny_io.safetensors", io, {"model": "gpt_tiny", "loss": "F.cross_entropy over all B*T positions, mean; grad of the tied wte includes the lm_head use"})

    # The same weights as the Hugging Face GPT2Model checkpoint on the hub stores them.
    hf = {}
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    for k, v in sd.items():
        if k == "lm_head.weight":
            continue
        name = k[len("transformer."):]
        hf[name] = v.t().contiguous() if name.endswith(conv1d) else v
    for i in range(gcfg["n_layer"]):
        n = gcfg["block_size"]
        hf[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        hf[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save("gpt_tiny_hf.safetensors", hf, {"layout": "HF GPT2Model: no transformer. prefix, Conv1D weights [in, out], attn.bias/masked_bias buffers, no lm_head"})

    # ------------------------------------------------------------------ pos_embed resizing
    gen = torch.Generator().manual_seed(4)
    pe = {
        "pe_2x2": torch.randn((1, 1 + 4, 6), generator=gen),
        "pe_4x4": torch.randn((1, 1 + 16, 6), generator=gen),
        "pe_2x3_noprefix": torch.randn((1, 6, 5), generator=gen),
    }
    cases = [
        # name, source, new grid, old grid (None = square), prefix tokens
        ("2x2_to_3x3", "pe_2x2", (3, 3), None, 1),
        ("4x4_to_2x3", "pe_4x4", (2, 3), None, 1),
        ("4x4_to_7x5", "pe_4x4", (7, 5), None, 1),
        ("2x3_to_4x5_noprefix", "pe_2x3_noprefix", (4, 5), (2, 3), 0),
    ]
    resized = dict(pe)
    for case, src, new, old, npre in cases:
        for aa in (False, True):
            out = resample_abs_pos_embed(pe[src], new_size=list(new), old_size=list(old) if old else None, num_prefix_tokens=npre, antialias=aa)
            resized[f"{case}.{'aa' if aa else 'noaa'}"] = out
    save(
        "pos_embed_resize.safetensors",
        resized,
        {
            "function": "timm.layers.resample_abs_pos_embed (F.interpolate mode='bicubic', align_corners=False)",
            "cases": [dict(name=c, source=s, new_grid=list(n), old_grid=list(o) if o else None, num_prefix_tokens=p) for c, s, n, o, p in cases],
            "keys": "<case>.noaa (antialias=False) and <case>.aa (antialias=True, timm's checkpoint default)",
        },
    )

    # ------------------------------------------------------------------ dtypes
    gen = torch.Generator().manual_seed(5)
    base = torch.randn((3, 4), generator=gen) * 3.0
    dt = {
        "x_f32": base,
        "x_f64": base.double(),
        "x_f16": base.half(),
        "x_bf16": base.bfloat16(),
        "x_f16_as_f32": base.half().float(),
        "x_bf16_as_f32": base.bfloat16().float(),
        "i_i64": torch.arange(-5, 7, dtype=torch.long).reshape(3, 4),
        "i_i32": torch.arange(-5, 7, dtype=torch.int32).reshape(3, 4),
        "i_u8": torch.arange(0, 12, dtype=torch.uint8).reshape(3, 4),
        "b_bool": torch.tensor([True, False, True]),
        "scalar_f32": torch.tensor(2.5),
        "empty_f32": torch.zeros((0, 3)),
    }
    save("dtypes.safetensors", dt, {"notes": "torch's own f16/bf16 encodings and their f32 upcasts; integer and bool tensors widen to i64 in tamer"})

    total = sum(info["bytes"] for info in meta["files"].values())
    meta["total_bytes"] = total
    with open(OUT / "fixtures.json", "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(meta['files'])} fixtures to {OUT} ({total} bytes)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-venv", action="store_true", help="run with the current interpreter")
    args = parser.parse_args()
    if not args.no_venv:
        ensure_venv()
    main()
