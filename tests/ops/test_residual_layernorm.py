"""masked_residual_layernorm = LayerNorm(scale·x + residual), every registered backend, against the fp64
eager oracle (fastticket.reference).

Checked: the output and every gradient (x, residual, weight, bias, scale, and abs_probe's side-channel
gradient Σ_t |⟨∂L/∂z_t, x_t⟩|, whose oracle is the reference's per-token [B, T] scale), on odd shapes,
with no / scalar (per-model) / [B] (per-example) scales, zero (pruned) FFN scales; an earlier run on
other inputs and poisoned memory before each run; bit-identical repeats; eps honoured; padding
invariance of each example's mask gradient; the fp16/bf16 error rule.
"""

from __future__ import annotations

import pytest
import torch

from fastticket import reference as ref
from fastticket.ops import available, masked_residual_layernorm

from ._helpers import (
    assert_close_ref,
    assert_flash_rule,
    backend_devices,
    gen,
    leaves,
    mask_grad_mag,
    poison,
    randn,
    skip_unless_supported,
)

OP = "masked_residual_layernorm"
BACKENDS = available(OP)
# (backend, device): each backend on CPU and, where present, CUDA, wherever it runs fp32
CASES = backend_devices(OP, lambda dev: [torch.zeros(1, 1, 8, device=dev)] * 2)

# (B, T, C): T over 1, 17, 97, 129; C odd or not a power of two included
SHAPES = [(3, 1, 16), (3, 17, 37), (3, 97, 64), (2, 129, 768), (5, 129, 48)]
SCALE_KINDS = ["none", "model", "model_zero", "example"]


def test_some_backend_is_registered():
    assert "torch" in BACKENDS


def make_scale(kind: str, batch: int, seed: int) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "model":
        return torch.tensor(0.8, dtype=torch.float64)
    if kind == "model_zero":
        return torch.tensor(0.0, dtype=torch.float64)
    s = 0.5 + torch.rand(batch, generator=gen(seed), dtype=torch.float64)
    s[1 % batch] = 0.0
    return s


def make_case(batch, seq, channels, scale_kind, seed):
    x = randn((batch, seq, channels), seed)
    residual = randn((batch, seq, channels), seed + 1)
    weight = 1.0 + 0.3 * randn((channels,), seed + 2)
    bias = 0.3 * randn((channels,), seed + 3)
    g = randn((batch, seq, channels), seed + 4)
    return x, residual, make_scale(scale_kind, batch, seed + 5), weight, bias, g


def run_op(backend, device, x, residual, scale, weight, bias, g, dtype=torch.float32, probe=True, eps=1e-12):
    """Runs the op on `dtype` copies on `device`; returns the output and the gradients by name (on the CPU)."""
    xl, rl, wl, bl = leaves(*(t.to(device, dtype) for t in (x, residual, weight, bias)))
    (sl,) = leaves(None if scale is None else scale.to(device, torch.float32))
    pr = torch.zeros(x.shape[0], device=device, requires_grad=True) if probe else None
    poison(device, x.shape, x.shape, x.shape, x.shape[:2])
    out = masked_residual_layernorm(xl, rl, sl, wl, bl, eps=eps, backend=backend, abs_probe=pr)
    names = ["x", "residual", "weight", "bias"] + (["scale"] if sl is not None else []) + (["probe"] if probe else [])
    inputs = [xl, rl, wl, bl] + ([sl] if sl is not None else []) + ([pr] if probe else [])
    grads = torch.autograd.grad(out, inputs, grad_outputs=g.to(device, out.dtype))
    return out.detach().cpu(), {n: d.cpu() for n, d in zip(names, grads)}


def run_ref(x, residual, scale, weight, bias, g, dtype=torch.float64, eps=1e-12):
    batch, seq, _ = x.shape
    xl, rl, wl, bl = leaves(x.to(dtype), residual.to(dtype), weight.to(dtype), bias.to(dtype))
    s = torch.tensor(1.0, dtype=torch.float64) if scale is None else scale
    (sl,) = leaves(s.to(dtype))
    out = ref.masked_residual_layernorm(xl, rl, sl, wl, bl, eps=eps)
    grads = dict(zip(["x", "residual", "weight", "bias", "scale"], torch.autograd.grad(out, [xl, rl, wl, bl, sl], grad_outputs=g.to(dtype))))
    tok = (s.expand(batch) if s.dim() == 0 else s)[:, None].expand(batch, seq).to(dtype).clone().requires_grad_(True)
    out_tok = ref.masked_residual_layernorm(x.to(dtype), residual.to(dtype), tok, weight.to(dtype), bias.to(dtype), eps=eps)
    (r,) = torch.autograd.grad(out_tok, tok, grad_outputs=g.to(dtype))  # <dL/dz_t, x_t>
    grads["probe"] = r.abs().sum(-1)
    return out.detach(), grads


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("scale_kind", SCALE_KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}C{}".format(*s))
def test_fp32_matches_fp64_reference(backend, device, shape, scale_kind):
    batch, seq, channels = shape
    seed = 100 * seq + channels + batch
    x, residual, scale, weight, bias, g = make_case(batch, seq, channels, scale_kind, seed)

    run_op(backend, device, *make_case(batch, seq, channels, scale_kind, seed + 50))  # leaves state behind
    out, grads = run_op(backend, device, x, residual, scale, weight, bias, g)
    out64, grads64 = run_ref(x, residual, scale, weight, bias, g)

    assert out.dtype == torch.float32 and out.shape == x.shape
    assert_close_ref(out, out64, "out")
    for name in grads:
        assert_close_ref(grads[name], grads64[name], name, mag=mask_grad_mag(grads64["probe"], scale) if name == "scale" else 0.0)
    if scale is not None:
        assert grads["scale"].shape == scale.shape and grads["scale"].dtype == torch.float32

    # pruned FFN: x gets exactly zero gradient, the mask still gets its gradient and probe
    if scale is not None and (scale == 0).any():
        zero = (scale == 0).expand(batch) if scale.dim() == 0 else scale == 0
        assert (grads["x"][zero] == 0).all(), "pruned FFN input has nonzero gradient"
        assert (grads["scale"][scale == 0] != 0).all(), "pruned FFN got no mask gradient"
        assert (grads["probe"][zero] > 0).all(), "pruned FFN got no probe"

    out2, grads2 = run_op(backend, device, x, residual, scale, weight, bias, g)
    assert torch.equal(out, out2), "output differs between identical runs"
    for name in grads:
        assert torch.equal(grads[name], grads2[name]), f"d{name} differs between identical runs"


@pytest.mark.parametrize("backend,device", CASES)
def test_eps_is_honoured(backend, device):
    batch, seq, channels = 3, 17, 37
    x, residual, scale, weight, bias, g = make_case(batch, seq, channels, "example", 7)
    x, residual = 0.1 * x, 0.1 * residual  # variance ~0.02, so eps = 0.01 matters
    out, grads = run_op(backend, device, x, residual, scale, weight, bias, g, eps=1e-2)
    out64, grads64 = run_ref(x, residual, scale, weight, bias, g, eps=1e-2)
    assert_close_ref(out, out64, "out")
    for name in grads:
        assert_close_ref(grads[name], grads64[name], name, mag=mask_grad_mag(grads64["probe"], scale) if name == "scale" else 0.0)
    out_default, _ = run_op(backend, device, x, residual, scale, weight, bias, g)
    assert not torch.allclose(out, out_default, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("backend,device", CASES)
def test_non_contiguous_and_no_probe(backend, device):
    batch, seq, channels = 3, 17, 48
    x, residual, scale, weight, bias, g = make_case(batch, seq, channels, "example", 9)
    out64, grads64 = run_ref(x, residual, scale, weight, bias, g)
    f32 = lambda t: t.to(device, torch.float32)  # noqa: E731
    xt = f32(x).transpose(0, 1).contiguous().requires_grad_(True)  # [T, B, C] storage
    rt = f32(residual).transpose(0, 1).contiguous().requires_grad_(True)
    s32 = f32(scale).requires_grad_(True)
    out = masked_residual_layernorm(xt.transpose(0, 1), rt.transpose(0, 1), s32, f32(weight), f32(bias), backend=backend)
    assert_close_ref(out.detach().cpu(), out64, "out")
    dx, dr, ds = (d.cpu() for d in torch.autograd.grad(out, [xt, rt, s32], grad_outputs=f32(g)))
    assert_close_ref(dx.transpose(0, 1), grads64["x"], "x")
    assert_close_ref(dr.transpose(0, 1), grads64["residual"], "residual")
    assert_close_ref(ds, grads64["scale"], "scale")
    with torch.no_grad():
        out_ng = masked_residual_layernorm(f32(x), f32(residual), f32(scale), f32(weight), f32(bias), backend=backend)
    assert_close_ref(out_ng.cpu(), out64, "out (no_grad)")


@pytest.mark.parametrize("backend,device", CASES)
def test_probe_gradient_accumulates_like_any_grad(backend, device):
    batch, seq, channels = 3, 17, 37
    x, residual, scale, weight, bias, g = make_case(batch, seq, channels, "example", 13)
    _, grads64 = run_ref(x, residual, scale, weight, bias, g)
    probe = torch.zeros(batch, device=device, requires_grad=True)
    s32 = scale.to(device, torch.float32).requires_grad_(True)
    x32, r32, w32, b32, g32 = (t.to(device, torch.float32) for t in (x, residual, weight, bias, g))
    for step in (1, 2):
        out = masked_residual_layernorm(x32, r32, s32, w32, b32, backend=backend, abs_probe=probe)
        out.backward(g32)
        assert_close_ref(probe.grad.cpu(), step * grads64["probe"], f"probe after {step} backward")
        assert_close_ref(s32.grad.cpu(), step * grads64["scale"], f"scale after {step} backward")


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("seq,lengths", [(17, [5, 17, 1]), (129, [129, 1, 64, 100])])
def test_padding_invariance(backend, device, seq, lengths):
    """Each example's scale gradient and probe in a padded batch equal those it gets alone, unpadded."""
    batch, channels = len(lengths), 37
    real = (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None])[:, :, None]
    x = torch.where(real, randn((batch, seq, channels), 21), randn((batch, seq, channels), 22, 100.0))
    residual = torch.where(real, randn((batch, seq, channels), 23), randn((batch, seq, channels), 24, 100.0))
    weight, bias = 1.0 + 0.3 * randn((channels,), 25), 0.3 * randn((channels,), 26)
    g = randn((batch, seq, channels), 27) * real
    scale = make_scale("example", batch, 28)
    out, grads = run_op(backend, device, x, residual, scale, weight, bias, g)
    for b, n in enumerate(lengths):
        sl = (slice(b, b + 1), slice(0, n))
        out_b, grads_b = run_op(backend, device, x[sl], residual[sl], scale[b : b + 1], weight, bias, g[sl])
        for name in ("scale", "probe"):
            assert_close_ref(grads[name][b], grads_b[name][0], f"{name}[{b}] padded vs alone", rtol=1e-6, atol=1e-6)
        assert_close_ref(out[sl], out_b, f"out[{b}] padded vs alone", rtol=1e-6, atol=1e-6)
        assert_close_ref(grads["x"][sl], grads_b["x"], f"dx[{b}] padded vs alone", rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape,scale_kind", [((3, 97, 64), "example"), ((3, 17, 768), "model"), ((3, 1, 37), "example")])
def test_low_precision_flash_rule(backend, device, dtype, shape, scale_kind):
    """Error vs fp64 <= 2x the error of the eager reference at the same precision (+ small slack)."""
    batch, seq, channels = shape
    x, residual, scale, weight, bias, g = make_case(batch, seq, channels, scale_kind, 31 + seq)
    x, residual, weight, bias, g = (t.to(dtype).double() for t in (x, residual, weight, bias, g))
    skip_unless_supported(pytest, OP, backend, x.to(device, dtype), residual.to(device, dtype))
    out, grads = run_op(backend, device, x, residual, scale, weight, bias, g, dtype=dtype)
    assert out.dtype == dtype
    out64, grads64 = run_ref(x, residual, scale, weight, bias, g)
    out_lo, grads_lo = run_ref(x, residual, scale, weight, bias, g, dtype=dtype)
    slack = 1e-3 if dtype == torch.float16 else 8e-3
    assert_flash_rule(out, out_lo, out64, "out", slack)
    for name in grads:
        assert_flash_rule(grads[name], grads_lo[name], grads64[name], name, slack)


@pytest.mark.parametrize("backend,device", CASES)
def test_without_bias(backend, device):
    """bias=None (ModernBERT's LayerNorm): the reference with a zero bias, and no bias gradient asked for."""
    batch, seq, channels = 3, 17, 37
    x, residual, scale, weight, _, g = make_case(batch, seq, channels, "example", 41)
    zero = torch.zeros(channels, dtype=torch.float64)
    out64, grads64 = run_ref(x, residual, scale, weight, zero, g)
    xl, rl, wl = leaves(*(t.to(device, torch.float32) for t in (x, residual, weight)))
    (sl,) = leaves(scale.to(device, torch.float32))
    out = masked_residual_layernorm(xl, rl, sl, wl, None, backend=backend)
    grads = torch.autograd.grad(out, [xl, rl, wl, sl], grad_outputs=g.to(device, torch.float32))
    assert_close_ref(out.detach().cpu(), out64, "out")
    for name, d in zip(["x", "residual", "weight", "scale"], grads):
        assert_close_ref(d.cpu(), grads64[name], name, mag=mask_grad_mag(grads64["probe"], scale) if name == "scale" else 0.0)


@pytest.mark.parametrize("backend,device", CASES)
def test_mixed_dtypes_promote(backend, device):
    """x in a half dtype (an autocast FFN output) + an fp32 residual: the result has the promoted dtype (as
    scale·x + residual) and each gradient its input's dtype."""
    half = torch.float16 if device == "cpu" and backend == "triton" else torch.bfloat16
    batch, seq, channels = 2, 5, 24
    x, residual, scale, weight, bias, g = make_case(batch, seq, channels, "example", 43)
    skip_unless_supported(pytest, OP, backend, x.to(device, half), residual.to(device, torch.float32))
    xl, rl = leaves(x.to(device, half), residual.to(device, torch.float32))
    out = masked_residual_layernorm(xl, rl, scale.to(device), weight.to(device, torch.float32),
                                    bias.to(device, torch.float32), backend=backend)
    assert out.dtype == torch.float32
    dx, dr = torch.autograd.grad(out, [xl, rl], grad_outputs=g.to(device, torch.float32))
    assert dx.dtype == half and dr.dtype == torch.float32
    out64, _ = run_ref(x.to(half).double(), residual, scale, weight, bias, g)
    assert_close_ref(out.detach().cpu(), out64, "out", rtol=1e-4, atol=1e-4)
