"""masked_attention, every registered backend, against the fp64 eager oracle (fastticket.reference).

Checked: the output and every gradient (q, k, v, head_scale, and abs_probe's side-channel gradient
Σ_t |r_t|, whose oracle is the per-token head_scale of the reference), on odd shapes, with padding by
per-row lengths (length 1 and full length included), per-model [H] / per-example [B, H] / no head scale,
zero (pruned) heads; poisoned memory and an earlier run on other inputs before each run; bit-identical
repeats; padding invariance of each example's mask gradient; the fp16/bf16 FlashAttention error rule;
dropout (reproducible, scaled by 1/(1-p), same mask in forward and backward, never on padded keys).
"""

from __future__ import annotations

import os

import pytest
import torch

from fastticket import reference as ref
from fastticket.ops import available, masked_attention

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

OP = "masked_attention"
BACKENDS = available(OP)
# (backend, device): each backend on CPU and, where present, CUDA, wherever it runs fp32
CASES = backend_devices(OP, lambda dev: [torch.zeros(1, 1, 1, 8, device=dev)] * 3)

# (B, H, T, D): T over 1, 17, 97, 129; B x H = 15 or 6 or 7 (not a multiple of any tile)
SHAPES = [(3, 5, 1, 16), (3, 5, 17, 32), (3, 5, 97, 16), (3, 5, 129, 64), (1, 7, 129, 32), (2, 3, 97, 64)]


# Triton under TRITON_INTERPRET=1 (CPU CI) runs every program in Python: it gets B x H = 2 x 3 (still no
# multiple of any tile) and, for T >= 97, one scale/padding combination per shape (T = 129 once).
INTERP_LONG = {(3, 5, 97, 16): ("example", True), (3, 5, 129, 64): ("example", True), (2, 3, 97, 64): ("model", False)}


def interpreted(backend: str) -> bool:
    return backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1"


def test_some_backend_is_registered():
    assert "torch" in BACKENDS


# ----------------------------------------------------------------------------------------------- inputs


def make_lengths(batch: int, seq: int) -> torch.Tensor:
    """Different lengths per row: full, 1, about half, then a spread."""
    pattern = [seq, 1, (seq + 1) // 2, max(1, seq - 3), max(1, seq // 3)]
    return torch.tensor([pattern[i % len(pattern)] for i in range(batch)], dtype=torch.int64)


def make_head_scale(kind: str, batch: int, heads: int, seed: int) -> torch.Tensor | None:
    """Values in [0.5, 1.5) with some exact zeros (pruned heads); None for kind 'none'."""
    if kind == "none":
        return None
    shape = (heads,) if kind == "model" else (batch, heads)
    hs = 0.5 + torch.rand(shape, generator=gen(seed), dtype=torch.float64)
    if kind == "model":
        hs[min(1, heads - 1)] = 0.0
    else:
        for b in range(batch):
            hs[b, (2 * b + 1) % heads] = 0.0
    return hs


def make_case(batch, heads, seq, dim, scale_kind, padded, seed):
    q = randn((batch, heads, seq, dim), seed)
    k = randn((batch, heads, seq, dim), seed + 1)
    v = randn((batch, heads, seq, dim), seed + 2)
    g = randn((batch, heads, seq, dim), seed + 3)
    hs = make_head_scale(scale_kind, batch, heads, seed + 4)
    lengths = make_lengths(batch, seq) if padded else None
    return q, k, v, hs, lengths, g


# ------------------------------------------------------------------------------------------- runners


def run_op(backend, device, q, k, v, hs, lengths, g, dtype=torch.float32, probe=True, scale_dtype=torch.float32, **kw):
    """Runs the op on `dtype` copies on `device`; returns the output and the gradients by name (fresh
    tensors, on the CPU)."""
    ql, kl, vl = leaves(q.to(device, dtype), k.to(device, dtype), v.to(device, dtype))
    (hsl,) = leaves(None if hs is None else hs.to(device, scale_dtype))
    pr = torch.zeros(q.shape[:2], dtype=torch.float32, device=device, requires_grad=True) if probe else None
    lengths = None if lengths is None else lengths.to(device)
    poison(device, q.shape, q.shape, q.shape, q.shape, q.shape[:3])
    out = masked_attention(ql, kl, vl, hsl, lengths, backend=backend, abs_probe=pr, **kw)
    names = ["q", "k", "v"] + (["head_scale"] if hsl is not None else []) + (["probe"] if pr is not None else [])
    inputs = [ql, kl, vl] + ([hsl] if hsl is not None else []) + ([pr] if pr is not None else [])
    grads = torch.autograd.grad(out, inputs, grad_outputs=g.to(device, out.dtype))
    return out.detach().cpu(), {n: d.cpu() for n, d in zip(names, grads)}


def run_ref(q, k, v, hs, lengths, g, dtype=torch.float64, softmax_scale=None):
    """The eager oracle at `dtype`: output, gradients, and the probe from a per-token head scale."""
    batch, heads, seq, _ = q.shape
    ql, kl, vl = leaves(q.to(dtype), k.to(dtype), v.to(dtype))
    (hsl,) = leaves(None if hs is None else hs.to(dtype))
    out = ref.masked_attention(ql, kl, vl, hsl, lengths, softmax_scale=softmax_scale)
    inputs = [ql, kl, vl] + ([hsl] if hsl is not None else [])
    names = ["q", "k", "v"] + (["head_scale"] if hsl is not None else [])
    grads = dict(zip(names, torch.autograd.grad(out, inputs, grad_outputs=g.to(dtype))))
    if hs is None:
        tok = torch.ones(batch, heads, seq, dtype=dtype)
    elif hs.dim() == 1:
        tok = hs.to(dtype)[None, :, None].expand(batch, heads, seq).clone()
    else:
        tok = hs.to(dtype)[:, :, None].expand(batch, heads, seq).clone()
    tok.requires_grad_(True)
    out_tok = ref.masked_attention(q.to(dtype), k.to(dtype), v.to(dtype), tok, lengths, softmax_scale=softmax_scale)
    (r,) = torch.autograd.grad(out_tok, tok, grad_outputs=g.to(dtype))  # r_t = <dL/dctx_t, ctx_t>
    grads["probe"] = r.abs().sum(-1)
    grads["r"] = r
    return out.detach(), grads


# -------------------------------------------------------------------------------------------- fp32


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("padded", [False, True], ids=["dense", "padded"])
@pytest.mark.parametrize("scale_kind", ["none", "model", "example"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}H{}T{}D{}".format(*s))
def test_fp32_matches_fp64_reference(backend, device, shape, scale_kind, padded):
    batch, heads, seq, dim = shape
    if interpreted(backend):
        if shape[2] >= 97 and INTERP_LONG.get(shape) != (scale_kind, padded):
            pytest.skip("Triton interpreter: one combination per long shape (see INTERP_LONG)")
        batch, heads = min(batch, 2), min(heads, 3)
    seed = 1000 * seq + 10 * dim + batch
    q, k, v, hs, lengths, g = make_case(batch, heads, seq, dim, scale_kind, padded, seed)

    # an earlier run on other inputs (other lengths, other scales) leaves its state behind
    other = make_case(batch, heads, seq, dim, scale_kind, padded, seed + 77)
    other_lengths = None if lengths is None else torch.clamp(lengths.flip(0), min=1)
    run_op(backend, device, *other[:4], other_lengths, other[5])

    out, grads = run_op(backend, device, q, k, v, hs, lengths, g)
    out64, grads64 = run_ref(q, k, v, hs, lengths, g)

    assert out.dtype == torch.float32 and out.shape == q.shape
    assert_close_ref(out, out64, "out")
    for name in ["q", "k", "v"] + (["head_scale"] if hs is not None else []) + ["probe"]:
        assert_close_ref(grads[name], grads64[name], name, mag=mask_grad_mag(grads64["probe"], hs) if name == "head_scale" else 0.0)
    if hs is not None:
        assert grads["head_scale"].dtype == torch.float32

    # pruned heads: exactly zero output and q/k/v gradients, but a nonzero mask gradient and probe
    if hs is not None:
        zero = (hs == 0) if hs.dim() == 2 else (hs == 0)[None, :].expand(batch, heads)
        assert zero.any()
        assert (out[zero] == 0).all(), "pruned head has nonzero output"
        for name in "qkv":
            assert (grads[name][zero] == 0).all(), f"pruned head has nonzero d{name}"
        gz = grads["head_scale"][hs == 0]
        assert (gz != 0).all(), "pruned head got no mask gradient"
        assert (grads["probe"][zero] > 0).all(), "pruned head got no probe"

    # padded keys get exactly zero dk, dv (they never enter any softmax)
    if lengths is not None:
        pad = torch.arange(seq)[None, :] >= lengths[:, None]  # [B, T]
        for name in "kv":
            assert (grads[name].permute(0, 2, 1, 3)[pad] == 0).all(), f"padded keys have nonzero d{name}"

    # repeated run, same inputs: bit-identical output and gradients
    out2, grads2 = run_op(backend, device, q, k, v, hs, lengths, g)
    assert torch.equal(out, out2), "output differs between identical runs"
    for name in grads:
        assert torch.equal(grads[name], grads2[name]), f"d{name} differs between identical runs"


@pytest.mark.parametrize("backend,device", CASES)
def test_softmax_scale_and_int32_lengths(backend, device):
    batch, heads, seq, dim = 3, 5, 17, 16
    q, k, v, hs, lengths, g = make_case(batch, heads, seq, dim, "example", True, 5)
    out, grads = run_op(backend, device, q, k, v, hs, lengths.to(torch.int32), g, softmax_scale=0.3)
    out64, grads64 = run_ref(q, k, v, hs, lengths, g, softmax_scale=0.3)
    assert_close_ref(out, out64, "out")
    for name in ("q", "k", "v", "head_scale", "probe"):
        assert_close_ref(grads[name], grads64[name], name, mag=mask_grad_mag(grads64["probe"], hs) if name == "head_scale" else 0.0)
    # the default scale is 1/sqrt(D): a different answer
    out_default, _ = run_op(backend, device, q, k, v, hs, lengths, g)
    assert not torch.allclose(out, out_default)


@pytest.mark.parametrize("backend,device", CASES)
def test_non_contiguous_inputs(backend, device):
    """q, k, v as a model makes them: views of a [B, T, 3, H, D] projection, permuted to [B, H, T, D]."""
    batch, heads, seq, dim = 3, 5, 17, 16
    qkv = randn((batch, seq, 3, heads, dim), 11)
    q, k, v = (qkv[:, :, i].permute(0, 2, 1, 3) for i in range(3))
    assert not q.is_contiguous()
    hs = make_head_scale("example", batch, heads, 12)
    lengths = make_lengths(batch, seq)
    g = randn((batch, heads, seq, dim), 13)
    qkv32 = qkv.to(device, torch.float32).requires_grad_(True)
    hs32 = hs.to(device, torch.float32).requires_grad_(True)
    q32, k32, v32 = (qkv32[:, :, i].permute(0, 2, 1, 3) for i in range(3))
    out = masked_attention(q32, k32, v32, hs32, lengths.to(device), backend=backend)
    dqkv, dhs = (d.cpu() for d in torch.autograd.grad(out, [qkv32, hs32], grad_outputs=g.to(device, torch.float32)))
    out = out.detach().cpu()
    out64, grads64 = run_ref(q.contiguous(), k.contiguous(), v.contiguous(), hs, lengths, g)
    assert_close_ref(out, out64, "out")
    for i, name in enumerate("qkv"):
        assert_close_ref(dqkv[:, :, i].permute(0, 2, 1, 3), grads64[name], name)
    assert_close_ref(dhs, grads64["head_scale"], "head_scale")


@pytest.mark.parametrize("backend,device", CASES)
def test_without_grad_or_probe(backend, device):
    """Inference path: no probe, a head_scale that needs no grad, and under torch.no_grad."""
    batch, heads, seq, dim = 3, 5, 17, 32
    q, k, v, hs, lengths, g = make_case(batch, heads, seq, dim, "model", True, 21)
    out64, grads64 = run_ref(q, k, v, hs, lengths, g)
    f32 = lambda t: t.to(device, torch.float32)  # noqa: E731
    q32, k32, v32 = leaves(f32(q), f32(k), f32(v))
    out = masked_attention(q32, k32, v32, f32(hs), lengths.to(device), backend=backend)
    assert_close_ref(out.detach().cpu(), out64, "out")
    dq, dk, dv = torch.autograd.grad(out, [q32, k32, v32], grad_outputs=f32(g))
    for name, d in zip("qkv", (dq, dk, dv)):
        assert_close_ref(d.cpu(), grads64[name], name)
    with torch.no_grad():
        out_ng = masked_attention(f32(q), f32(k), f32(v), f32(hs), lengths.to(device), backend=backend)
    assert not out_ng.requires_grad
    assert_close_ref(out_ng.cpu(), out64, "out (no_grad)")
    out_none = masked_attention(f32(q), f32(k), f32(v), None, lengths.to(device), backend=backend).cpu()
    out64_none, _ = run_ref(q, k, v, None, lengths, g)
    assert_close_ref(out_none, out64_none, "out (no head_scale)")


@pytest.mark.parametrize("backend,device", CASES)
def test_probe_gradient_accumulates_like_any_grad(backend, device):
    """abs_probe.grad behaves as a .grad: set by the first backward, added to by the next."""
    batch, heads, seq, dim = 3, 5, 17, 16
    q, k, v, hs, lengths, g = make_case(batch, heads, seq, dim, "example", True, 31)
    _, grads64 = run_ref(q, k, v, hs, lengths, g)
    probe = torch.zeros(batch, heads, device=device, requires_grad=True)
    hs32 = hs.to(device, torch.float32).requires_grad_(True)
    q32, k32, v32, g32 = (t.to(device, torch.float32) for t in (q, k, v, g))
    for step in (1, 2):
        out = masked_attention(q32, k32, v32, hs32, lengths.to(device), backend=backend, abs_probe=probe)
        out.backward(g32)
        assert_close_ref(probe.grad.cpu(), step * grads64["probe"], f"probe after {step} backward")
        assert_close_ref(hs32.grad.cpu(), step * grads64["head_scale"], f"head_scale after {step} backward")


# ------------------------------------------------------------------------------------ padding invariance


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("seq,lengths", [(17, [5, 17, 1]), (129, [129, 1, 64]), (97, [2, 96, 97, 50])])
def test_padding_invariance(backend, device, seq, lengths):
    """Each example's mask gradient (and probe, output, input grads) is what it gets alone, unpadded.

    The padded positions hold large garbage; the upstream gradient is zero there (a loss never reads them).
    """
    if interpreted(backend) and seq == 129:
        pytest.skip("Triton interpreter: T = 97 covers the multi-tile case")
    batch, heads, dim = len(lengths), (2 if interpreted(backend) else 5), 32
    lengths_t = torch.tensor(lengths)
    real = torch.arange(seq)[None, :] < lengths_t[:, None]  # [B, T]
    real4 = real[:, None, :, None]
    q, k, v = (torch.where(real4, randn((batch, heads, seq, dim), s), randn((batch, heads, seq, dim), s + 9, 100.0)) for s in (41, 42, 43))
    g = randn((batch, heads, seq, dim), 44) * real4
    hs = make_head_scale("example", batch, heads, 45)
    out, grads = run_op(backend, device, q, k, v, hs, lengths_t, g)
    for b, n in enumerate(lengths):
        sl = (slice(b, b + 1), slice(None), slice(0, n))
        out_b, grads_b = run_op(backend, device, q[sl], k[sl], v[sl], hs[b : b + 1], None, g[sl])
        for name in ("head_scale", "probe"):
            assert_close_ref(grads[name][b], grads_b[name][0], f"{name}[{b}] padded vs alone", rtol=1e-6, atol=1e-6)
        assert_close_ref(out[sl], out_b, f"out[{b}] padded vs alone", rtol=1e-6, atol=1e-6)
        for name in "qkv":
            assert_close_ref(grads[name][sl], grads_b[name], f"d{name}[{b}] padded vs alone", rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------- fp16 / bf16


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape,scale_kind", [((3, 5, 97, 32), "example"), ((3, 5, 17, 64), "model"), ((3, 5, 1, 16), "example")])
def test_low_precision_flash_rule(backend, device, dtype, shape, scale_kind):
    """Error vs fp64 <= 2x the error of the eager reference at the same precision (+ small slack)."""
    batch, heads, seq, dim = shape
    if interpreted(backend):
        batch, heads = min(batch, 2), min(heads, 3)
    q, k, v, hs, lengths, g = make_case(batch, heads, seq, dim, scale_kind, True, 51 + seq)
    # the fp64 oracle sees the low-precision inputs exactly
    q, k, v, g = (t.to(dtype).double() for t in (q, k, v, g))
    skip_unless_supported(pytest, OP, backend, *(t.to(device, dtype) for t in (q, k, v)))
    out, grads = run_op(backend, device, q, k, v, hs, lengths, g, dtype=dtype)
    assert out.dtype == dtype
    out64, grads64 = run_ref(q, k, v, hs, lengths, g)
    out_lo, grads_lo = run_ref(q, k, v, hs, lengths, g, dtype=dtype)
    slack = 1e-3 if dtype == torch.float16 else 8e-3
    assert_flash_rule(out, out_lo, out64, "out", slack)
    for name in ("q", "k", "v", "head_scale", "probe"):
        assert_flash_rule(grads[name], grads_lo[name], grads64[name], name, slack)


# ------------------------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("backend,device", CASES)
def test_dropout_reproducible_and_effective(backend, device):
    batch, heads, seq, dim = (2, 3, 17, 16) if interpreted(backend) else (3, 5, 17, 16)
    q, k, v, hs, lengths, g = make_case(batch, heads, seq, dim, "example", True, 61)

    def run(seed, p):
        torch.manual_seed(seed)
        return run_op(backend, device, q, k, v, hs, lengths, g, dropout_p=p)

    out_a, grads_a = run(0, 0.3)
    out_b, grads_b = run(0, 0.3)
    assert torch.equal(out_a, out_b), "same seed, different dropout output"
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), f"same seed, different d{name}"
    out_c, _ = run(1, 0.3)
    assert not torch.equal(out_a, out_c), "another seed gives the same dropout"
    out_0, _ = run(0, 0.0)
    assert not torch.allclose(out_a, out_0), "dropout_p=0.3 changed nothing"
    out64, _ = run_ref(q, k, v, hs, lengths, g)
    assert_close_ref(out_0, out64, "out (p=0)")


@pytest.mark.parametrize("backend,device", CASES)
def test_dropout_backward_uses_forward_mask(backend, device):
    """With dropout, out = ξ·P_drop(q, k)·v is linear in v and in ξ; the gradients must use the same mask."""
    batch, heads, seq, dim = 3, 5, 17, 16
    q, k, v, _, lengths, g = make_case(batch, heads, seq, dim, "none", True, 71)
    hs = 0.5 + torch.rand(batch, heads, generator=gen(72), dtype=torch.float64)  # nonzero
    torch.manual_seed(3)
    out, grads = run_op(backend, device, q, k, v, hs, lengths, g, dropout_p=0.25)
    out64, g64, v64 = out.double(), g, v.to(torch.float32).double()
    ctx = out64 / hs[:, :, None, None]
    r = (g64 * ctx).sum(-1)  # [B, H, T]
    assert_close_ref(grads["head_scale"], r.sum(-1), "head_scale (dropout)")
    assert_close_ref(grads["probe"], r.abs().sum(-1), "probe (dropout)")
    # <g, out> = <dv, v> per (b, h) since out is linear in v with the dropped P
    lhs = (g64 * out64).sum((-1, -2))
    rhs = (grads["v"].double() * v64).sum((-1, -2))
    assert_close_ref(rhs, lhs, "<dv, v> vs <g, out> (dropout)")


@pytest.mark.parametrize("backend,device", CASES)
def test_dropout_semantics(backend, device):
    """q = k = 0 gives uniform probabilities 1/len; v = identity exposes them: zeros at rate p, the rest
    scaled by 1/(1-p), padded keys never attended."""
    batch, heads, seq, dim, p = 3, 5, 17, 32, 0.3
    lengths = torch.tensor([17, 1, 9])
    q = torch.zeros(batch, heads, seq, dim)
    eye = torch.zeros(seq, dim)
    eye[:, :seq] = torch.eye(seq)
    v = eye.expand(batch, heads, seq, dim).clone()
    v[torch.arange(seq)[None, None, :].expand(batch, heads, seq) >= lengths[:, None, None]] *= 1e6
    torch.manual_seed(4)
    out = masked_attention(q.to(device), q.to(device), v.to(device), None, lengths.to(device), dropout_p=p, backend=backend).cpu()
    assert torch.isfinite(out).all()
    kept = total = 0
    for b, n in enumerate(lengths.tolist()):
        probs = out[b, :, :, :n]
        assert (out[b, :, :, n:] == 0).all(), "a padded key was attended under dropout"
        nz = probs[probs != 0]
        torch.testing.assert_close(nz, torch.full_like(nz, 1.0 / (n * (1 - p))), rtol=1e-5, atol=0)
        kept += nz.numel()
        total += probs.numel()
    assert abs(1 - kept / total - p) < 0.05, f"dropout rate {1 - kept / total:.3f} far from {p}"


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_out_of_range(backend, device, p):
    q = torch.randn(2, 3, 5, 8, device=device)
    with pytest.raises(ValueError, match="dropout"):
        masked_attention(q, q, q, None, dropout_p=p, backend=backend)


# ------------------------------------------------------------------------ optional features: bias, window


def serves(backend: str, feature: str) -> bool:
    from fastticket.ops import dispatch

    return feature in dispatch._registry[OP][backend].features


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("feature", ["attn_bias", "window", "both"])
@pytest.mark.parametrize("bias_shape", ["BHTT", "1HTT", "B1TT"])
def test_bias_and_window_match_reference(backend, device, feature, bias_shape):
    """Output and every gradient (attn_bias's too) against the fp64 oracle on real query rows; padded rows
    finite. A backend that does not serve the feature refuses it by name."""
    batch, heads, seq, dim = (2, 3, 17, 16) if interpreted(backend) else (3, 5, 37, 16)
    if feature == "window" and bias_shape != "BHTT":
        pytest.skip("the bias shape does not matter without a bias")
    q, k, v, hs, _, g = make_case(batch, heads, seq, dim, "example", True, seed=70)
    lengths = torch.tensor([seq, 9, 1][:batch])
    shape = {"BHTT": (batch, heads), "1HTT": (1, heads), "B1TT": (batch, 1)}[bias_shape] + (seq, seq)
    kw = {}
    if feature in ("attn_bias", "both"):
        kw["attn_bias"] = randn(shape, seed=71)
    if feature in ("window", "both"):
        kw["window"] = 3
    if not all(serves(backend, f) for f in kw):
        with pytest.raises(ValueError, match="does not serve"):
            masked_attention(q.float(), k.float(), v.float(), None, lengths, backend=backend, **kw)
        return
    skip_unless_supported(pytest, OP, backend, q.to(device))
    dev_kw = {n: (t.to(device).requires_grad_(True) if torch.is_tensor(t) else t) for n, t in kw.items()}
    qd, kd, vd = leaves(q.to(device), k.to(device), v.to(device))
    (hsd,) = leaves(hs.to(device))
    out = masked_attention(qd, kd, vd, hsd, lengths.to(device), backend=backend, **dev_kw)
    inputs = [qd, kd, vd, hsd] + ([dev_kw["attn_bias"]] if "attn_bias" in kw else [])
    real = (torch.arange(seq)[None, :] < lengths[:, None])[:, None, :, None]
    gm = g * real  # nothing reads padded query rows
    grads = torch.autograd.grad(out, inputs, grad_outputs=gm.to(device))
    ref_kw = {n: (t.double().requires_grad_(True) if torch.is_tensor(t) else t) for n, t in kw.items()}
    rq, rk, rv, rhs = leaves(q.double(), k.double(), v.double(), hs.double())
    rout = ref.masked_attention(rq, rk, rv, rhs, lengths, **ref_kw)
    rinputs = [rq, rk, rv, rhs] + ([ref_kw["attn_bias"]] if "attn_bias" in kw else [])
    rgrads = torch.autograd.grad(rout, rinputs, grad_outputs=gm.double())
    assert torch.isfinite(out).all()
    assert_close_ref(out.detach().cpu() * real, rout.detach() * real, "out")
    for name, a, e in zip(["q", "k", "v", "head_scale", "attn_bias"], grads, rgrads):
        assert_close_ref(a.cpu(), e, name, mag=mask_grad_mag(e, None) if name == "head_scale" else 0.0)


def test_window_semantics():
    """window=w: query t sees keys |t - s| <= w; w=0 returns v itself; w >= T is global attention."""
    q, k, v, _, _, _ = make_case(1, 2, 9, 8, "none", False, seed=80)
    assert torch.allclose(masked_attention(q, k, v, None, window=0, backend="torch"), v, atol=1e-6)
    full = masked_attention(q, k, v, None, backend="torch")
    assert torch.allclose(masked_attention(q, k, v, None, window=8, backend="torch"), full, atol=1e-6)
    # moving a key outside every window of query 0 does not change query 0's output
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 5], v2[:, :, 5] = 7.0, -3.0
    a = masked_attention(q, k, v, None, window=2, backend="torch")[:, :, 0]
    b = masked_attention(q, k2, v2, None, window=2, backend="torch")[:, :, 0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("kw,match", [
    (dict(attn_bias=torch.zeros(2, 3, 5, 5)), "attn_bias has shape"),
    (dict(attn_bias=torch.zeros(1, 1, 5, 4)), "attn_bias has shape"),
    (dict(attn_bias=torch.zeros(1, 1, 5, 5, dtype=torch.long)), "attn_bias has dtype"),
    (dict(window=-1), "window=-1"),
    (dict(window=2.5), "window=2.5"),
    (dict(window=True), "window=True"),
])
def test_bias_and_window_bad_input(kw, match):
    q = torch.zeros(1, 3, 5, 4)
    with pytest.raises(ValueError, match=match):
        masked_attention(q, q, q, None, **kw)
