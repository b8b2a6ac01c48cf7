"""masked_attention (fastticket/ops/attention.py): forward, backward, forward + backward with a per-example
head scale ξ [B, H] of ones that requires grad (as ft.importance runs it; the backward yields dξ), padding by
per-example lengths (uniform in [T/2, T], the first row full).

Providers, measured side by side (interleaved) in one test per shape and mode:
- eager:  fastticket.reference.masked_attention (materializes the B×H×T×T probabilities), ξ multiplied in
- sdpa:   torch SDPA + a separate mask-scale autograd Function that reduces dξ (fastticket backend "torch")
- flex:   FlexAttention (torch.compile'd on CUDA, eager on CPU) with a padding block mask, ξ multiplied in
- triton | cpp | cuda: the fastticket backends, when registered and runnable here
- on CUDA, the vendor kernels a user would pick, each + the same mask-scale reduction: sdpa_flash_dense
  (SDPA's flash kernel on the padded batch as if dense: flash takes no mask), sdpa_cudnn (cuDNN with the
  padding mask), varlen_flash (torch's varlen attention on the unpadded tokens, where torch has it)
A provider that cannot run here is recorded as missing with its reason.
Model families (#14), test_family_attention: fwd+bwd with dξ of DeBERTa-v3's disentangled bias ([B, H, T, T],
with its gradient; H12 D64 T128 / T512) and ModernBERT's local window (H12 D64 T512, window 64), against
SDPA with the bias / band as its mask and FlexAttention (score_mod adding the bias / a sliding-window
block mask), plus the fastticket backends that serve the feature.
P2's byte floor: `copy_bandwidth` (a measured device-to-device copy) and per shape `byte_floor`, the minimum
bytes an attention fwd+bwd moves (read q, k, v, write o; read q, k, v, o, dO, write dq, dk, dv: 12·B·H·T·D
elements) divided by that bandwidth.
Run:  pytest bench/bench_attention.py   (FASTTICKET_BENCH_SMOKE=1: tiny sizes, nothing recorded)."""

import math
import os

import pytest
import torch

from _record import (CUDA, DEVICE, DTYPE, SMOKE, checked, flex_attention_or_reason, interleaved, op_providers,
                     record, record_value, scale)
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
ROUNDS = scale(1, 7, int(os.environ.get("FASTTICKET_BENCH_ROUNDS", 30)))
MODES = os.environ.get("FASTTICKET_BENCH_MODES", "fwd,bwd,fwd_bwd").split(",")  # make gpu-check: fwd_bwd only


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
    if CUDA:
        _vendor_peers(fns, missing, q, lengths)
    else:
        for name in ("sdpa_flash_dense", "sdpa_cudnn", "varlen_flash"):
            missing[name] = "a CUDA kernel of SDPA (measured on GPU only)"
    return fns, missing


def _vendor_peers(fns, missing, q, lengths):
    """SDPA's flash (dense: it takes no mask) and cuDNN kernels, and varlen flash on the unpadded tokens; each
    with the mask-scale Function that reduces dξ (fastticket.ops.mask_scale), checked once by a trial call."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from fastticket.ops.mask_scale import apply_scale

    def forced(kernel, lens):
        def run(q, k, v, hs):
            with sdpa_kernel([kernel]):
                return masked_attention(q, k, v, hs, lens, backend="torch")
        return run

    for name, kernel, lens in (("sdpa_flash_dense", SDPBackend.FLASH_ATTENTION, None),
                               ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION, lengths)):
        fn = forced(kernel, lens)
        checked(fns, missing, name, lambda fn=fn: _trial(fn, q))
    checked(fns, missing, "varlen_flash", lambda: _trial(_varlen(lengths, apply_scale), q))


def _varlen(lengths, apply_scale):
    """torch's varlen attention over the real tokens only: gather, attend, scatter back, then ξ."""
    from torch.nn.attention.varlen import varlen_attn  # raises where this torch has none

    B = lengths.numel()
    keep = torch.arange(0, 1 << 20, device=lengths.device)[None, :]
    cu = torch.zeros(B + 1, dtype=torch.int32, device=lengths.device)
    cu[1:] = torch.cumsum(lengths, 0)
    max_len = int(lengths.max())

    def run(q, k, v, hs):
        b, h, t, d = q.shape
        real = (keep[:, :t] < lengths[:, None]).reshape(-1)
        pack = lambda x: x.transpose(1, 2).reshape(b * t, h, d)[real]  # noqa: E731
        out = varlen_attn(pack(q), pack(k), pack(v), cu, cu, max_len, max_len)
        full = out.new_zeros(b * t, h, d).index_put((real.nonzero().squeeze(1),), out)
        return apply_scale(full.view(b, t, h, d).transpose(1, 2), hs)

    return run


def _trial(fn, q):
    """fn(q, k, v, hs) once with gradients (the shape the timed calls use); returns fn."""
    x = q.detach().requires_grad_(True)
    hs = torch.ones(q.shape[:2], device=q.device, dtype=q.dtype, requires_grad=True)
    fn(x, x, x, hs).sum().backward()
    return fn


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


@pytest.mark.parametrize("mode", MODES)
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


# ------------------------------------------------------------------------------ model families (#14)

# name: (B, H, T, D, feature, window)
FAMILIES = scale(
    smoke={"deberta-tiny": (2, 3, 17, 16, "bias", None), "modernbert-tiny": (2, 3, 33, 16, "window", 4)},
    cpu={"deberta-v3-base-T128": (4, 12, 128, 64, "bias", None), "modernbert-base-T512": (2, 12, 512, 64, "window", 64)},
    gpu={"deberta-v3-base-T128": (32, 12, 128, 64, "bias", None), "deberta-v3-base-T512": (8, 12, 512, 64, "bias", None),
         "modernbert-base-T512": (8, 12, 512, 64, "window", 64)},
)


def _family_providers(q, lengths, feature, bias, window):
    """{provider: f(q, k, v, hs) -> out}: fastticket backends serving the feature, SDPA with it as its mask,
    FlexAttention (score_mod / sliding-window block mask), the eager oracle."""
    from fastticket.ops import dispatch

    kw = {"attn_bias": bias} if feature == "bias" else {"window": window}
    ok, missing = op_providers(OP)
    fns = {"eager": lambda q, k, v, hs: reference.masked_attention(q, k, v, hs, lengths, **kw),
           "sdpa_mask": lambda q, k, v, hs: masked_attention(q, k, v, hs, lengths, backend="torch", **kw)}
    needed = "attn_bias" if feature == "bias" else "window"
    for name, backend in ok.items():
        if backend == "torch":
            continue
        if needed not in dispatch._registry[OP][backend].features:
            missing[name] = f"backend {backend!r} does not serve {needed}"
            continue
        fns[name] = (lambda b: lambda q, k, v, hs: masked_attention(q, k, v, hs, lengths, backend=b, **kw))(backend)
    missing.pop("torch", None)  # measured as "sdpa_mask"
    flex, reason = _flex_family(q, lengths, feature, bias, window)
    if flex is not None:
        fns["flex"] = flex
    else:
        missing["flex"] = reason
    return fns, missing


def _flex_family(q, lengths, feature, bias, window):
    flex, reason = flex_attention_or_reason()
    if flex is None:
        return None, reason
    from torch.nn.attention.flex_attention import create_block_mask

    B, H, T, D = q.shape
    lens = lengths

    def keep(b, h, qi, kv):
        ok = kv < lens[b]
        return ok & ((qi - kv).abs() <= window) if feature == "window" else ok

    def add_bias(score, b, h, qi, kv):
        return score + bias[b, h, qi, kv]

    try:
        block = create_block_mask(keep, B, None, T, T, device=str(q.device))
        fn = torch.compile(flex) if CUDA else flex
    except Exception as exc:  # noqa: BLE001
        return None, f"FlexAttention unusable here: {type(exc).__name__}: {exc}"

    def run(q, k, v, hs):
        extra = {"score_mod": add_bias} if feature == "bias" else {}
        ctx = fn(q, k, v, block_mask=block, scale=1.0 / math.sqrt(D), **extra)
        return ctx * hs[:, :, None, None].to(ctx.dtype)

    return run, None


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_attention(benchmark, name):
    """fwd + bwd with dξ (and the bias gradient for DeBERTa) at the family's real shapes."""
    B, H, T, D, feature, window = FAMILIES[name]
    q, k, v, dout, lengths = _inputs(B, H, T, D)
    bias = None
    if feature == "bias":
        bias = torch.randn(B, H, T, T, generator=torch.Generator().manual_seed(1)).to(DEVICE, DTYPE).requires_grad_(True)
    fns, missing = _family_providers(q, lengths, feature, bias, window)
    calls = {}
    for provider, f in fns.items():
        try:
            calls[provider] = _call(f, q, k, v, dout, B, H, "fwd_bwd")
        except Exception as exc:  # noqa: BLE001  (a provider that cannot run this shape is reported)
            missing[provider] = f"{type(exc).__name__}: {str(exc)[:200]}"
    results = interleaved(benchmark, calls, rounds=ROUNDS, warmup=0 if SMOKE else 2)
    config = {"shape": name, "B": B, "H": H, "T": T, "D": D, "mode": "fwd_bwd", "feature": feature,
              "window": window, "bias_grad": feature == "bias", "lengths": "uniform[T/2, T], first full"}
    record("attention", results, config, missing)
