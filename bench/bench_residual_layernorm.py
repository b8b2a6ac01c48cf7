"""masked_residual_layernorm (fastticket/ops/residual_layernorm.py): LayerNorm(ν·x + residual), forward,
backward, forward + backward with a per-example FFN scale ν [B] of ones that requires grad (the backward
yields dν per example, as ft.importance runs it).

Providers, measured side by side (interleaved) in one test per shape and mode:
- eager:  fastticket.reference.masked_residual_layernorm (plain tensor ops, autograd)
- torch:  F.layer_norm + the mask-scale autograd Function (fastticket backend "torch")
- triton | cpp | cuda: the fastticket backends, when registered and runnable here (else recorded missing)
Run:  pytest bench/bench_residual_layernorm.py   (FASTTICKET_BENCH_SMOKE=1: tiny sizes, nothing recorded)."""

import pytest
import torch

from _record import DEVICE, DTYPE, SMOKE, interleaved, op_providers, record, scale
from fastticket import reference
from fastticket.ops import masked_residual_layernorm

OP = "masked_residual_layernorm"
# name: (B, T, C)
SHAPES = scale(
    smoke={"tiny": (2, 17, 48)},
    cpu={"minilm": (32, 128, 384), "bert-base": (8, 128, 768)},
    gpu={"minilm": (32, 128, 384), "bert-base": (32, 128, 768), "bert-base-512": (32, 512, 768),
         "bert-large": (8, 128, 1024), "bert-large-512": (8, 512, 1024)},
)
ROUNDS = scale(1, 15, 50)
EPS = 1e-12


def _providers():
    ok, missing = op_providers(OP)
    fns = {"eager": lambda x, r, s, w, b: reference.masked_residual_layernorm(x, r, s, w, b, EPS)}
    for name, backend in ok.items():
        fns[name] = (lambda bk: lambda x, r, s, w, b: masked_residual_layernorm(x, r, s, w, b, EPS, backend=bk))(backend)
    return fns, missing


@pytest.mark.parametrize("mode", ["fwd", "bwd", "fwd_bwd"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_residual_layernorm(benchmark, shape, mode):
    B, T, C = SHAPES[shape]
    g = torch.Generator().manual_seed(0)
    x, res, dy = (torch.randn(B, T, C, generator=g).to(DEVICE, DTYPE) for _ in range(3))
    w, b = (torch.randn(C, generator=g).to(DEVICE, DTYPE) for _ in range(2))
    fns, missing = _providers()
    calls = {}
    for name, f in fns.items():
        try:
            calls[name] = _call(f, x, res, dy, w, b, mode)
        except Exception as exc:  # noqa: BLE001  (reported, not dropped)
            missing[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
    results = interleaved(benchmark, calls, rounds=ROUNDS, warmup=0 if SMOKE else 3)
    record("residual_layernorm", results, {"shape": shape, "B": B, "T": T, "C": C, "mode": mode}, missing)


def _call(f, x, res, dy, w, b, mode):
    B = x.shape[0]
    if mode == "fwd":
        def fwd():
            with torch.no_grad():
                return f(x, res, torch.ones(B, device=x.device, dtype=x.dtype), w, b)
        fwd()
        return fwd

    def graph():
        leaves = [t.detach().requires_grad_(True) for t in (x, res, w, b)]
        s = torch.ones(B, device=x.device, dtype=x.dtype, requires_grad=True)
        xl, rl, wl, bl = leaves
        return f(xl, rl, s, wl, bl), (*leaves, s)

    if mode == "fwd_bwd":
        def fwd_bwd():
            out, leaves = graph()
            torch.autograd.grad(out, leaves, dy)
        fwd_bwd()
        return fwd_bwd
    out, leaves = graph()

    def bwd():
        torch.autograd.grad(out, leaves, dy, retain_graph=True)

    bwd()
    return bwd
