"""masked_residual_layernorm alone on CPU, forward + backward with a per-example FFN scale [B] and abs_probe
(as the importance pass runs it), and forward only. Providers: cpp (fastticket._C) vs torch.
Run:  pytest bench/bench_residual_layernorm.py   (FASTTICKET_BENCH_SMOKE=1: tiny sizes)."""

import pytest
import torch

from _record import SMOKE, cpu_providers, record, run
from fastticket.ops import masked_residual_layernorm

OP = "masked_residual_layernorm"
B, T, C = (2, 17, 48) if SMOKE else (32, 128, 384)  # MiniLM hidden size 384


@pytest.mark.parametrize("provider", cpu_providers(OP))
@pytest.mark.parametrize("mode", ["fwd_bwd", "fwd"])
def test_residual_layernorm(benchmark, provider, mode):
    g = torch.Generator().manual_seed(0)
    x, res, dy = (torch.randn(B, T, C, generator=g) for _ in range(3))
    w, b = torch.randn(C, generator=g), torch.randn(C, generator=g)

    def fwd_bwd():
        xl, rl, wl, bl = (t.detach().requires_grad_(True) for t in (x, res, w, b))
        s = torch.ones(B, requires_grad=True)
        probe = torch.zeros(B, requires_grad=True)
        masked_residual_layernorm(xl, rl, s, wl, bl, backend=provider, abs_probe=probe).backward(dy)

    def fwd():
        with torch.no_grad():
            masked_residual_layernorm(x, res, None, w, b, backend=provider)

    run(benchmark, fwd_bwd if mode == "fwd_bwd" else fwd, rounds=30, warmup=3)
    record(benchmark, "residual_layernorm", provider, {"B": B, "T": T, "C": C, "dtype": "float32", "mode": mode})
