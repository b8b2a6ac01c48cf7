"""masked_attention, every registered backend, against the fp64 eager oracle (fastticket.reference).

Checked: the output (on real query rows) and every gradient (q, k, v, head_scale, and abs_probe's
side-channel gradient Σ_t |r_t|, whose oracle is the per-token head_scale of the reference), on odd shapes
(T = 1, 17, 97, 129, 257: the triton backend's fused and long backward paths), with padding by per-row
lengths (length 1 and full length included), per-model [H] / per-example [B, H] / no head scale, zero
(pruned) heads; poisoned buffers and an earlier run on other inputs before each run; bit-identical
repeats; padding invariance of each example's mask gradient; the fp16/bf16 FlashAttention error rule;
dropout (reproducible, scaled by 1/(1-p), same mask in forward and backward, never on padded keys).
Optional features (attn_bias, window): test_attention_features.py; argument checks: test_dispatch.py.
"""

from __future__ import annotations

import pytest
import torch

from fastticket.ops import available, masked_attention

from ._attention_cases import OP, interpreted, make_case, make_head_scale, make_lengths, real_rows, run_op, run_ref
from ._helpers import assert_close_ref, assert_flash_rule, backend_devices, gen, leaves, mask_grad_mag, randn, \
    skip_unless_supported

BACKENDS = available(OP)
# (backend, device): each backend on CPU and, where present, CUDA, wherever it runs fp32
CASES = backend_devices(OP, lambda dev: [torch.zeros(1, 1, 1, 8, device=dev)] * 3)

# (B, H, T, D): T over 1, 17, 97, 129, 257; B x H = 15, 7, 6 (not a multiple of any tile)
SHAPES = [(3, 5, 1, 16), (3, 5, 17, 32), (3, 5, 97, 16), (3, 5, 129, 64), (1, 7, 129, 32), (2, 3, 97, 64),
          (2, 3, 257, 32)]

# Triton under TRITON_INTERPRET=1 (CPU CI) runs every program in Python: it gets B x H = 2 x 3 (still no
# multiple of any tile) and, for T >= 97, one scale/padding combination per shape.
INTERP_LONG = {(3, 5, 97, 16): ("example", True), (3, 5, 129, 64): ("example", True), (2, 3, 97, 64): ("model", False),
               (2, 3, 257, 32): ("example", True)}


def test_some_backend_is_registered():
    assert "torch" in BACKENDS


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
    elif seq == 257 and (scale_kind, padded) != ("example", True):
        pytest.skip("T = 257 (the triton long path) once per backend")
    seed = 1000 * seq + 10 * dim + batch
    q, k, v, hs, lengths, g = make_case(batch, heads, seq, dim, scale_kind, padded, seed)

    # an earlier run on other inputs (other lengths, other scales) leaves its state behind
    other = make_case(batch, heads, seq, dim, scale_kind, padded, seed + 77)
    other_lengths = None if lengths is None else torch.clamp(lengths.flip(0), min=1)
    run_op(backend, device, *other[:4], other_lengths, other[5])

    out, grads = run_op(backend, device, q, k, v, hs, lengths, g)
    out64, grads64 = run_ref(q, k, v, hs, lengths, g)

    real = real_rows(lengths, batch, seq)
    assert out.dtype == torch.float32 and out.shape == q.shape and torch.isfinite(out).all()
    assert_close_ref(out * real, out64 * real, "out")
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
    real = real_rows(lengths, batch, seq)
    assert_close_ref(out * real, out64 * real, "out")
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
    g = randn((batch, heads, seq, dim), 13) * real_rows(lengths, batch, seq)
    qkv32 = qkv.to(device, torch.float32).requires_grad_(True)
    hs32 = hs.to(device, torch.float32).requires_grad_(True)
    q32, k32, v32 = (qkv32[:, :, i].permute(0, 2, 1, 3) for i in range(3))
    out = masked_attention(q32, k32, v32, hs32, lengths.to(device), backend=backend)
    # dout as a model hands it back: the transpose of a [B, T, H·D] gradient, never made contiguous
    g_model = g.to(device, torch.float32).transpose(1, 2).contiguous().transpose(1, 2)
    dqkv, dhs = (d.cpu() for d in torch.autograd.grad(out, [qkv32, hs32], grad_outputs=g_model))
    real = real_rows(lengths, batch, seq)
    out = out.detach().cpu()
    out64, grads64 = run_ref(q.contiguous(), k.contiguous(), v.contiguous(), hs, lengths, g)
    assert_close_ref(out * real, out64 * real, "out")
    for i, name in enumerate("qkv"):
        assert_close_ref(dqkv[:, :, i].permute(0, 2, 1, 3), grads64[name], name)
    assert_close_ref(dhs, grads64["head_scale"], "head_scale", mag=grads64["probe"].max().item())


@pytest.mark.parametrize("backend,device", CASES)
def test_without_grad_or_probe(backend, device):
    """Inference path: no probe, a head_scale that needs no grad, and under torch.no_grad."""
    batch, heads, seq, dim = 3, 5, 17, 32
    q, k, v, hs, lengths, g = make_case(batch, heads, seq, dim, "model", True, 21)
    real = real_rows(lengths, batch, seq)
    out64, grads64 = run_ref(q, k, v, hs, lengths, g)
    f32 = lambda t: t.to(device, torch.float32)  # noqa: E731
    q32, k32, v32 = leaves(f32(q), f32(k), f32(v))
    out = masked_attention(q32, k32, v32, f32(hs), lengths.to(device), backend=backend)
    assert_close_ref(out.detach().cpu() * real, out64 * real, "out")
    dq, dk, dv = torch.autograd.grad(out, [q32, k32, v32], grad_outputs=f32(g))
    for name, d in zip("qkv", (dq, dk, dv)):
        assert_close_ref(d.cpu(), grads64[name], name)
    with torch.no_grad():
        out_ng = masked_attention(f32(q), f32(k), f32(v), f32(hs), lengths.to(device), backend=backend)
    assert not out_ng.requires_grad
    assert_close_ref(out_ng.cpu() * real, out64 * real, "out (no_grad)")
    out_none = masked_attention(f32(q), f32(k), f32(v), None, lengths.to(device), backend=backend).cpu()
    out64_none, _ = run_ref(q, k, v, None, lengths, g)
    assert_close_ref(out_none * real, out64_none * real, "out (no head_scale)")


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
        assert_close_ref(hs32.grad.cpu(), step * grads64["head_scale"], f"head_scale after {step} backward",
                         mag=step * grads64["probe"].max().item())


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
@pytest.mark.parametrize("shape,scale_kind", [((3, 5, 97, 32), "example"), ((3, 5, 17, 64), "model"), ((3, 5, 1, 16), "example"),
                                              ((2, 3, 257, 32), "example")])
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
    real = real_rows(lengths, batch, seq)
    slack = 1e-3 if dtype == torch.float16 else 8e-3
    assert_flash_rule(out.double() * real, out_lo.double() * real, out64 * real, "out", slack)
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
    real = real_rows(lengths, batch, seq)
    assert_close_ref(out_0 * real, out64 * real, "out (p=0)")


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
    assert_close_ref(grads["head_scale"], r.sum(-1), "head_scale (dropout)", mag=r.abs().sum(-1).max().item())
    assert_close_ref(grads["probe"], r.abs().sum(-1), "probe (dropout)")
    # <g, out> = <dv, v> per (b, h) since out is linear in v with the dropped P
    lhs = (g64 * out64).sum((-1, -2))
    rhs = (grads["v"].double() * v64).sum((-1, -2))
    assert_close_ref(rhs, lhs, "<dv, v> vs <g, out> (dropout)", mag=(g64 * out64).abs().sum((-1, -2)).max().item())


@pytest.mark.parametrize("backend,device", CASES)
def test_dropout_semantics(backend, device):
    """q = k = 0 gives uniform probabilities 1/len; v = identity exposes them: zeros at rate p, the rest
    scaled by 1/(1-p), padded keys never attended (on the real query rows)."""
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
        probs = out[b, :, :n, :n]
        assert (out[b, :, :n, n:] == 0).all(), "a padded key was attended under dropout"
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
