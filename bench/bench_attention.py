"""masked_attention (fastticket/ops/attention.py): forward, backward, forward + backward with a per-example
head scale ξ [B, H] of ones that requires grad (as ft.importance runs it; the backward yields dξ), padding by
per-example lengths (uniform in [T/2, T], the first row full).

Providers, measured side by side (interleaved) in one test per shape and mode:
- eager:  fastticket.reference.masked_attention (materializes the B×H×T×T probabilities), ξ multiplied in
- sdpa:   torch SDPA + a separate mask-scale autograd Function that reduces dξ (fastticket backend "torch")
- flex:   FlexAttention (torch.compile'd on CUDA, eager on CPU) with a padding block mask, ξ multiplied in
- triton | cpp | cuda: the fastticket backends, when registered and runnable here
A provider that cannot run here is recorded as missing with its reason.
P2's byte floor: `copy_bandwidth` (a measured device-to-device copy) and per shape `byte_floor`, the minimum
bytes an attention fwd+bwd moves (read q, k, v, write o; read q, k, v, o, dO, write dq, dk, dv: 12·B·H·T·D
elements) divided by that bandwidth.
Run:  pytest bench/bench_attention.py   (FASTTICKET_BENCH_SMOKE=1: tiny sizes, nothing recorded)."""

import math

import pytest
import torch

from _record import (CUDA, DEVICE, DTYPE, SMOKE, flex_attention_or_reason, interleaved, op_providers, record,
                     record_value, scale)
from fastticket import reference
from fastticket.ops import masked_attention

OP = "masked_attention"
if CUDA:  # one compiled FlexAttention per shape × grad mode: keep dynamo from falling back to eager
    import torch._dynamo

    for _knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, _knob):
            setattr(torch._dynamo.config, _knob, 256)
# name: (B, H, T, D)
SHAPES = scale(
    smoke={"tiny": (2, 3, 17, 16)},
    cpu={"minilm": (32, 12, 128, 32), "bert-base": (8, 12, 128, 64)},
    gpu={"minilm": (32, 12, 128, 32), "bert-base": (32, 12, 128, 64), "bert-base-512": (32, 12, 512, 64),
         "bert-large": (8, 16, 128, 64), "bert-large-512": (8, 16, 512, 64)},
)
ROUNDS = scale(1, 7, 30)


def _inputs(B, H, T, D):
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(B, H, T, D, generator=g).to(DEVICE, DTYPE) for _ in range(4))
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    lengths[0] = T
    return q, k, v, dout, lengths.to(DEVICE)


def _flex_fn(q, lengths):
    flex, reason = flex_attention_or_reason()
    if flex is None:
        return None, reason
    from torch.nn.attention.flex_attention import create_block_mask

    B, H, T, D = q.shape
    lens = lengths

    def keep(b, h, qi, kv):
        return kv < lens[b]

    try:
        block = create_block_mask(keep, B, None, T, T, device=str(q.device))
        fn = torch.compile(flex) if CUDA else flex
    except Exception as exc:  # noqa: BLE001
        return None, f"FlexAttention unusable here: {type(exc).__name__}: {exc}"

    def run(q, k, v, hs):
        ctx = fn(q, k, v, block_mask=block, scale=1.0 / math.sqrt(D))
        return ctx * hs[:, :, None, None].to(ctx.dtype)

    return run, None


def _providers(q, lengths):
    """{provider: f(q, k, v, hs) -> out}, {provider: reason}."""
    ok, missing = op_providers(OP)
    fns = {"eager": lambda q, k, v, hs: reference.masked_attention(q, k, v, hs, lengths)}
    fns["sdpa"] = lambda q, k, v, hs: masked_attention(q, k, v, hs, lengths, backend="torch")
    flex, reason = _flex_fn(q, lengths)
    if flex is not None:
        fns["flex"] = flex
    else:
        missing["flex"] = reason
    for name, backend in ok.items():
        if backend != "torch":
            fns[name] = (lambda b: lambda q, k, v, hs: masked_attention(q, k, v, hs, lengths, backend=b))(backend)
    missing.pop("torch", None)  # measured as "sdpa"
    return fns, missing


@pytest.fixture(scope="module")
def copy_bandwidth():
    """Device copy bandwidth in GB/s (bytes read + written / time), median of a few copies."""
    n = scale(2**16, 2**24, 2**27)  # 64 MiB fp32 on CPU, 512 MiB on GPU
    x = torch.randn(n, device=DEVICE)
    y = torch.empty_like(x)
    import time

    times = []
    for _ in range(scale(1, 10, 20)):
        if CUDA:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        y.copy_(x)
        if CUDA:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    gbs = 2 * x.numel() * x.element_size() / times[len(times) // 2] / 1e9
    record_value("attention", "copy_bandwidth", {"bytes": 2 * x.numel() * x.element_size()}, bandwidth_gbs=gbs)
    return gbs


@pytest.mark.parametrize("mode", ["fwd", "bwd", "fwd_bwd"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_attention(benchmark, shape, mode, copy_bandwidth):
    B, H, T, D = SHAPES[shape]
    q, k, v, dout, lengths = _inputs(B, H, T, D)
    fns, missing = _providers(q, lengths)
    calls = {}
    for name, f in fns.items():
        try:
            calls[name] = _call(f, q, k, v, dout, B, H, mode)
        except Exception as exc:  # noqa: BLE001  (a provider that cannot run this shape is reported)
            missing[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
    results = interleaved(benchmark, calls, rounds=ROUNDS, warmup=0 if SMOKE else 2)
    config = {"shape": shape, "B": B, "H": H, "T": T, "D": D, "mode": mode, "lengths": "uniform[T/2, T], first full"}
    record("attention", results, config, missing)
    if mode == "fwd_bwd":
        moved = 12 * B * H * T * D * q.element_size()
        record_value("attention", "byte_floor", config, bytes=moved, bandwidth_gbs=copy_bandwidth,
                     byte_floor_ms=moved / (copy_bandwidth * 1e9) * 1e3)


def _call(f, q, k, v, dout, B, H, mode):
    """The timed callable of one provider (checked once here, so a failing provider is reported)."""
    if mode == "fwd":
        def fwd():
            with torch.no_grad():
                return f(q, k, v, torch.ones(B, H, device=q.device, dtype=q.dtype))
        fwd()
        return fwd

    def fwd_bwd():
        ql, kl, vl = (t.detach().requires_grad_(True) for t in (q, k, v))
        hs = torch.ones(B, H, device=q.device, dtype=q.dtype, requires_grad=True)
        f(ql, kl, vl, hs).backward(dout)
        return hs.grad

    if mode == "fwd_bwd":
        fwd_bwd()
        return fwd_bwd
    # bwd: one retained graph, backward timed alone
    ql, kl, vl = (t.detach().requires_grad_(True) for t in (q, k, v))
    hs = torch.ones(B, H, device=q.device, dtype=q.dtype, requires_grad=True)
    out = f(ql, kl, vl, hs)

    def bwd():
        torch.autograd.grad(out, (ql, kl, vl, hs), dout, retain_graph=True)

    bwd()
    return bwd
