#!/usr/bin/env python3
"""Regenerate the attention-mask fixtures: PyTorch's two causal alignments.

The Rust test (tests/integration/attention.rs, `matches_pytorch_*`) only reads
the committed files; Python is needed only to regenerate them. Usage, from the
repository root, with an interpreter that has torch and safetensors (e.g. the
.venv-fixtures that scripts/make_fixtures.py creates):

    .venv-fixtures/bin/python scripts/make_attention_fixtures.py

F.scaled_dot_product_attention on the CPU in float64, deterministic. For each
case (Tq, Tk) with Tq < Tk, Tq == Tk and Tq > Tk, over q [2, 2, Tq, 4],
k [2, 2, Tk, 4], v [2, 2, Tk, 3]:

  tests/fixtures/attention_masks.safetensors
      <case>.q, <case>.k, <case>.v        the inputs (f64)
      <case>.w                            the output weighting: loss = (out * w).sum()
      <case>.<mask>.out                   the attention output [2, 2, Tq, 3]
      <case>.<mask>.dq, .dk, .dv          the loss's gradients
    <mask> is
      none         no attn_mask, is_causal=False
      upper_left   is_causal=True                              (= tamer's CausalAlign::TopLeft)
      lower_right  attn_mask=causal_lower_right(Tq, Tk)        (= tamer's CausalAlign::BottomRight)
  tests/fixtures/attention_fixtures.json
      versions, cases, and what PyTorch returned for the rows that see no key
"""

import json
from pathlib import Path

import safetensors
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.nn.attention.bias import causal_lower_right

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures"
CASES = [(3, 5), (4, 4), (5, 3)]
B, H, D, DV = 2, 2, 4, 3


def attend(q, k, v, w, mask):
    q, k, v = (x.detach().clone().requires_grad_(True) for x in (q, k, v))
    tq, tk = q.shape[-2], k.shape[-2]
    if mask == "none":
        out = F.scaled_dot_product_attention(q, k, v)
    elif mask == "upper_left":
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    elif mask == "lower_right":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(tq, tk))
    else:
        raise ValueError(mask)
    (out * w).sum().backward()
    return {"out": out.detach(), "dq": q.grad, "dk": k.grad, "dv": v.grad}


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(7)
    tensors, blind = {}, {}
    for tq, tk in CASES:
        case = f"tq{tq}_tk{tk}"
        q = torch.randn((B, H, tq, D), generator=gen, dtype=torch.float64)
        k = torch.randn((B, H, tk, D), generator=gen, dtype=torch.float64)
        v = torch.randn((B, H, tk, DV), generator=gen, dtype=torch.float64)
        w = torch.randn((B, H, tq, DV), generator=gen, dtype=torch.float64)
        tensors.update({f"{case}.q": q, f"{case}.k": k, f"{case}.v": v, f"{case}.w": w})
        for mask in ["none", "upper_left", "lower_right"]:
            for name, t in attend(q, k, v, w, mask).items():
                tensors[f"{case}.{mask}.{name}"] = t.contiguous()
        if tq > tk:
            rows = tensors[f"{case}.lower_right.out"][..., : tq - tk, :]
            blind[case] = "zeros" if bool((rows == 0).all()) else ("nan" if bool(rows.isnan().any()) else "other")
    meta = {
        "generator": "scripts/make_attention_fixtures.py",
        "versions": {"torch": torch.__version__, "safetensors": safetensors.__version__},
        "cases": [{"name": f"tq{tq}_tk{tk}", "tq": tq, "tk": tk, "batch": B, "heads": H, "d": D, "dv": DV} for tq, tk in CASES],
        "masks": {
            "none": "F.scaled_dot_product_attention(q, k, v)",
            "upper_left": "F.scaled_dot_product_attention(q, k, v, is_causal=True)",
            "lower_right": "F.scaled_dot_product_attention(q, k, v, attn_mask=torch.nn.attention.bias.causal_lower_right(Tq, Tk))",
        },
        "loss": "(out * w).sum(), float64, CPU",
        "lower_right_rows_without_keys": blind,
        "notes": "causal_lower_right warns that it 'will produce NaNs' when Tq > Tk (some fused GPU kernels do); "
        "the CPU math path (its _safe_softmax) returns zero rows and zero gradients there, recorded above",
    }
    save_file(tensors, str(OUT / "attention_masks.safetensors"), metadata={"generator": f"scripts/make_attention_fixtures.py with torch {torch.__version__}"})
    (OUT / "attention_fixtures.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    for f in ["attention_masks.safetensors", "attention_fixtures.json"]:
        print(f, (OUT / f).stat().st_size, "bytes")
    print("lower-right rows without keys:", blind)


if __name__ == "__main__":
    main()
