"""masked_attention alone on CPU, forward + backward as the importance pass runs it: per-example head scale
[B, H] of ones with requires_grad, abs_probe, padding by lengths. Providers: cpp (fastticket._C) vs torch
(SDPA + mask-scale). Run:  pytest bench/bench_attention.py   (FASTTICKET_BENCH_SMOKE=1: tiny sizes)."""

import pytest
import torch

from _record import SMOKE, cpu_providers, record, run
from fastticket.ops import masked_attention

OP = "masked_attention"
# MiniLM (all-MiniLM-L6-v2): 12 heads of 32 at batch 32, sequence 128
B, H, T, D = (2, 3, 17, 16) if SMOKE else (32, 12, 128, 32)


def _inputs():
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(B, H, T, D, generator=g) for _ in range(4))
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    lengths[0] = T
    return q, k, v, dout, lengths


@pytest.mark.parametrize("provider", cpu_providers(OP))
@pytest.mark.parametrize("mode", ["fwd_bwd", "fwd"])
def test_attention(benchmark, provider, mode):
    q, k, v, dout, lengths = _inputs()

    def fwd_bwd():
        ql, kl, vl = (t.detach().requires_grad_(True) for t in (q, k, v))
        hs = torch.ones(B, H, requires_grad=True)
        probe = torch.zeros(B, H, requires_grad=True)
        out = masked_attention(ql, kl, vl, hs, lengths, backend=provider, abs_probe=probe)
        out.backward(dout)

    def fwd():
        with torch.no_grad():
            masked_attention(q, k, v, None, lengths, backend=provider)

    run(benchmark, fwd_bwd if mode == "fwd_bwd" else fwd, rounds=15, warmup=2)
    record(benchmark, "attention", provider, {"B": B, "H": H, "T": T, "D": D, "dtype": "float32", "mode": mode,
                                              "lengths": "uniform[T/2, T], first full"})
