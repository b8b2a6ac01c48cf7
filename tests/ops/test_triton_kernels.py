"""Triton-specific checks of the fused kernels (backend="triton"), beyond the shared per-backend op tests.

- attention dropout: the full gradient against an fp64 oracle that uses the kernel's own dropout mask
  (read back through v = identity), reproducibility from torch.manual_seed, the exact p = 0 path;
- tile boundaries: T and lengths at and around the interpreter's / GPU's 64-row tiles, D = 128, a
  non-power-of-two D; abs_probe without a head scale (Σ_t |r_t| with ξ = 1); lengths > T;
- residual LayerNorm: the backward's multi-block programs and per-program dweight/dbias partials, forced
  small, agree with the default launch, bit-identically on repeats.

Under TRITON_INTERPRET=1 (CPU) shapes stay tiny: every launch runs in Python.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from fastticket.ops import available, masked_attention, masked_residual_layernorm

from ._helpers import assert_close_ref, leaves, randn

pytestmark = pytest.mark.skipif(
    "triton" not in available("masked_attention"), reason="triton is not installed"
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="no GPU and TRITON_INTERPRET is not 1")


def _grads(out, inputs, g):
    return torch.autograd.grad(out, inputs, grad_outputs=g)


def _attn_case(batch, heads, seq, dim, seed):
    q, k, v, g = (randn((batch, heads, seq, dim), seed + i) for i in range(4))
    hs = 0.5 + torch.rand(batch, heads, generator=torch.Generator().manual_seed(seed + 9), dtype=torch.float64)
    return q, k, v, g, hs


def _run_triton(q, k, v, hs, lengths, g, **kw):
    ql, kl, vl = leaves(*(t.float().to(DEVICE) for t in (q, k, v)))
    (hsl,) = leaves(None if hs is None else hs.float().to(DEVICE))
    probe = torch.zeros(q.shape[:2], device=DEVICE, requires_grad=True)
    lengths = None if lengths is None else lengths.to(DEVICE)
    out = masked_attention(ql, kl, vl, hsl, lengths, backend="triton", abs_probe=probe, **kw)
    inputs = [ql, kl, vl] + ([hsl] if hsl is not None else []) + [probe]
    names = ["q", "k", "v"] + (["head_scale"] if hsl is not None else []) + ["probe"]
    return out.detach().cpu(), {n: d.cpu() for n, d in zip(names, _grads(out, inputs, g.float().to(DEVICE)))}


def _ref(q, k, v, hs, lengths, g, keep=None, p=0.0, softmax_scale=None):
    """fp64 oracle; `keep` [B, H, T, T] bool is a fixed dropout mask (the kernel's), scaled by 1/(1-p)."""
    batch, heads, seq, dim = q.shape
    ql, kl, vl = leaves(q, k, v)
    tok = (torch.ones(batch, heads, seq, dtype=torch.float64) if hs is None else hs[:, :, None].expand(batch, heads, seq).clone())
    tok.requires_grad_(True)
    scale = softmax_scale or 1.0 / math.sqrt(dim)
    s = ql @ kl.transpose(-1, -2) * scale
    if lengths is not None:
        s = s.masked_fill(~(torch.arange(seq)[None, :] < lengths[:, None])[:, None, None, :], float("-inf"))
    probs = torch.softmax(s, -1)
    if keep is not None:
        probs = probs * keep / (1.0 - p)
    out = (probs @ vl) * tok[..., None]
    dq, dk, dv, r = _grads(out, [ql, kl, vl, tok], g)
    grads = {"q": dq, "k": dk, "v": dv, "probe": r.abs().sum(-1)}
    if hs is not None:
        grads["head_scale"] = r.sum(-1)
    return out.detach(), grads


def _check(out, grads, out64, grads64):
    assert_close_ref(out, out64, "out")
    for name, d in grads.items():
        mag = grads64["probe"].max().item() if name == "head_scale" else 0.0
        assert_close_ref(d, grads64[name], name, mag=mag)


# ------------------------------------------------------------------------------------------- dropout


def _dropout_mask(batch, heads, seq, lengths, p, seed):
    """The kernel's keep mask for torch seed `seed`: q = k = 0, v = identity gives out = P_drop."""
    dim = max(16, 1 << (seq - 1).bit_length())
    eye = torch.zeros(batch, heads, seq, dim)
    eye[..., :seq] = torch.eye(seq)
    zero = torch.zeros(batch, heads, seq, dim)
    torch.manual_seed(seed)
    pd = masked_attention(zero.to(DEVICE), zero.to(DEVICE), eye.to(DEVICE), None,
                          None if lengths is None else lengths.to(DEVICE), dropout_p=p, backend="triton")
    return pd.cpu()[..., :seq] != 0


@pytest.mark.parametrize("heads,seq,lengths", [(3, 17, [17, 9]), (1, 70, [70, 65])], ids=["T17", "T70"])
def test_dropout_gradients_match_fp64_with_kernel_mask(heads, seq, lengths):
    """Every gradient under dropout equals the fp64 oracle run with the very mask the kernel drew: the
    backward regenerates the forward's mask (q/k/v grads, dξ = Σ r_t, Σ |r_t|), across tiles (T70)."""
    batch, dim, p = 2, 16, 0.2
    lengths = torch.tensor(lengths)
    keep = _dropout_mask(batch, heads, seq, lengths, p, seed=5)
    real = torch.arange(seq)[None, :] < lengths[:, None]
    dropped = (~keep) & real[:, None, None, :]
    rate = dropped.sum().item() / (real[:, None, None, :].expand_as(keep).sum().item())
    assert abs(rate - p) < 0.05, f"dropout rate {rate:.3f} far from {p}"
    q, k, v, g, hs = _attn_case(batch, heads, seq, dim, 100 + seq)
    torch.manual_seed(5)
    out, grads = _run_triton(q, k, v, hs, lengths, g, dropout_p=p)
    out64, grads64 = _ref(q, k, v, hs, lengths, g, keep=keep.double(), p=p)
    _check(out, grads, out64, grads64)
    # reproducible from the torch seed, down to the bit
    torch.manual_seed(5)
    out2, grads2 = _run_triton(q, k, v, hs, lengths, g, dropout_p=p)
    assert torch.equal(out, out2) and all(torch.equal(grads[n], grads2[n]) for n in grads)


def test_dropout_zero_is_the_exact_path():
    """dropout_p = 0.0 draws no random numbers: bit-identical to itself under any torch seed, and the
    global RNG state is left alone."""
    q, k, v, g, hs = _attn_case(2, 3, 17, 16, 7)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    out_a, grads_a = _run_triton(q, k, v, hs, None, g, dropout_p=0.0)
    assert torch.equal(state, torch.get_rng_state()), "p = 0 consumed random numbers"
    torch.manual_seed(123)
    out_b, grads_b = _run_triton(q, k, v, hs, None, g, dropout_p=0.0)
    assert torch.equal(out_a, out_b) and all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)
    out64, grads64 = _ref(q, k, v, hs, None, g)
    _check(out_a, grads_a, out64, grads64)


# -------------------------------------------------------------------------------------- tile boundaries


@pytest.mark.parametrize(
    "shape,lengths",
    [((1, 3, 64, 16), [64]), ((2, 1, 65, 32), [65, 64]), ((1, 2, 17, 128), [17]), ((2, 1, 19, 24), [19, 1])],
    ids=["T64", "T65-len64", "D128", "D24"],
)
def test_tile_boundaries(shape, lengths):
    batch, heads, seq, dim = shape
    q, k, v, g, hs = _attn_case(batch, heads, seq, dim, 200 + seq + dim)
    lengths = torch.tensor(lengths)
    out, grads = _run_triton(q, k, v, hs, lengths, g)
    out64, grads64 = _ref(q, k, v, hs, lengths, g)
    _check(out, grads, out64, grads64)


def test_probe_without_head_scale_and_long_lengths():
    """abs_probe alone (ξ = 1, no mask tensor) gets Σ_t |r_t|; lengths beyond T mean "no padding"."""
    q, k, v, g, _ = _attn_case(2, 3, 17, 16, 300)
    out, grads = _run_triton(q, k, v, None, torch.tensor([40, 17]), g)
    out64, grads64 = _ref(q, k, v, None, None, g)
    assert set(grads) == {"q", "k", "v", "probe"}
    _check(out, grads, out64, grads64)


def test_auto_never_picks_the_interpreter():
    """backend="auto" runs Triton on CUDA tensors only; CPU tensors under the interpreter go elsewhere."""
    from fastticket.ops import dispatch

    from fastticket.ops import triton_backend

    x = torch.zeros(1, 1, 2, 16)
    assert dispatch.resolve("masked_attention", "auto", x, x, x) is not triton_backend._attention
    assert dispatch.resolve("masked_attention", "triton", x, x, x) is triton_backend._attention
    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        xc = x.cuda()
        assert dispatch.resolve("masked_attention", "auto", xc, xc, xc) is triton_backend._attention


# ---------------------------------------------------------------------------------- residual LayerNorm


def _ln_run(x, residual, scale, weight, bias, g):
    xl, rl, wl, bl, sl = leaves(*(t.float().to(DEVICE) for t in (x, residual, weight, bias, scale)))
    probe = torch.zeros(x.shape[0], device=DEVICE, requires_grad=True)
    out = masked_residual_layernorm(xl, rl, sl, wl, bl, backend="triton", abs_probe=probe)
    grads = _grads(out, [xl, rl, wl, bl, sl, probe], g.float().to(DEVICE))
    return [out.detach().cpu()] + [d.cpu() for d in grads]


def test_layernorm_backward_partials_forced_small(monkeypatch):
    """Small row tiles, few programs, several row blocks each (the GPU's layout for long inputs) give
    the default launch's answer, and repeat bit-identically."""
    from fastticket.kernels import residual_layernorm as ln

    batch, seq, channels = 3, 11, 40
    x, residual, g = (randn((batch, seq, channels), 400 + i) for i in range(3))
    weight, bias = 1.0 + 0.3 * randn((channels,), 410), 0.3 * randn((channels,), 411)
    scale = torch.tensor([0.7, 0.0, 1.3], dtype=torch.float64)
    default = _ln_run(x, residual, scale, weight, bias, g)
    real = ln.launch_config
    monkeypatch.setattr(ln, "launch_config", lambda rows, channels, interpret: real(rows, channels, False, max_programs=3)
                        | {"block_r": 2, "n_blocks": -(-rows // 2), "bwd_programs": 3, "blocks_per_prog": -(-rows // 6)})
    forced = _ln_run(x, residual, scale, weight, bias, g)
    forced2 = _ln_run(x, residual, scale, weight, bias, g)
    for name, a, b, c in zip(["out", "x", "residual", "weight", "bias", "scale", "probe"], default, forced, forced2):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=name)
        assert torch.equal(b, c), f"{name} differs between identical runs"
