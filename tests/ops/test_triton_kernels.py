"""Triton-specific checks of the fused kernels (backend="triton"), beyond the shared per-backend op tests.

- attention dropout: the full gradient against an fp64 oracle that uses the kernel's own dropout mask
  (read back through v = identity), reproducibility from torch.manual_seed, the exact p = 0 path;
- tile boundaries: T and lengths at and around the tiles, D = 128, a non-power-of-two D; abs_probe without
  a head scale (Σ_t |r_t| with ξ = 1); lengths > T; padded query rows written as exact zeros;
- both backward paths: the fused one-kernel backward (T <= 256) and the three-kernel long path give the
  same answer on the same problem (the long path forced at a small T), the switch at T = 256 / 257;
- I/O: the output and dq/dk/dv live in [B, T, H, D] memory (the encoder's reshape is free), nothing of
  q/k/v/dout is copied; only the wanted gradients are computed;
- configurations: one per kernel under the interpreter, every T bucket has tuned configs, dropout drops
  the config that spills; bad input (a too-large grid) is one ValueError;
- residual LayerNorm: the backward's multi-block programs and per-program dweight/dbias partials, forced
  small, agree with the default launch, bit-identically on repeats; no bias; mixed dtypes.

Under TRITON_INTERPRET=1 (CPU) shapes stay tiny: every launch runs in Python.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from fastticket.ops import available, dispatch, masked_attention, masked_residual_layernorm

from ._helpers import assert_close_ref, leaves, randn

pytestmark = pytest.mark.skipif("triton" not in available("masked_attention"), reason="triton is not installed")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="no GPU and TRITON_INTERPRET is not 1")


def _attn_case(batch, heads, seq, dim, seed, lengths=None):
    q, k, v, g = (randn((batch, heads, seq, dim), seed + i) for i in range(4))
    if lengths is not None:  # nothing reads padded query rows
        g = g * (torch.arange(seq)[None, :] < lengths[:, None])[:, None, :, None]
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
    grads = torch.autograd.grad(out, inputs, grad_outputs=g.float().to(DEVICE))
    return out.detach().cpu(), {n: d.cpu() for n, d in zip(names, grads)}


def _ref(q, k, v, hs, lengths, g, keep=None, p=0.0, softmax_scale=None):
    """fp64 oracle; `keep` [B, H, T, T] bool is a fixed dropout mask (the kernel's), scaled by 1/(1-p)."""
    batch, heads, seq, dim = q.shape
    ql, kl, vl = leaves(q, k, v)
    tok = (torch.ones(batch, heads, seq, dtype=torch.float64) if hs is None else hs[:, :, None].expand(batch, heads, seq).clone())
    tok.requires_grad_(True)
    s = ql @ kl.transpose(-1, -2) * (softmax_scale or 1.0 / math.sqrt(dim))
    if lengths is not None:
        s = s.masked_fill(~(torch.arange(seq)[None, :] < lengths[:, None])[:, None, None, :], float("-inf"))
    probs = torch.softmax(s, -1)
    if keep is not None:
        probs = probs * keep / (1.0 - p)
    out = (probs @ vl) * tok[..., None]
    dq, dk, dv, r = torch.autograd.grad(out, [ql, kl, vl, tok], grad_outputs=g)
    grads = {"q": dq, "k": dk, "v": dv, "probe": r.abs().sum(-1)}
    if hs is not None:
        grads["head_scale"] = r.sum(-1)
    return out.detach(), grads


def _check(out, grads, out64, grads64, lengths=None):
    if lengths is not None:
        real = (torch.arange(out.shape[2])[None, :] < lengths[:, None])[:, None, :, None]
        out, out64 = out * real, out64 * real
    assert_close_ref(out, out64, "out")
    for name, d in grads.items():
        mag = grads64["probe"].max().item() if name == "head_scale" else 0.0
        assert_close_ref(d, grads64[name], name, mag=mag)


# ------------------------------------------------------------------------------------------- dropout


def _dropout_mask(batch, heads, seq, lengths, p, seed):
    """The kernel's keep mask for torch seed `seed`: q = k = 0, v = identity gives out = P_drop (real rows)."""
    dim = max(16, 1 << (seq - 1).bit_length())
    eye = torch.zeros(batch, heads, seq, dim)
    eye[..., :seq] = torch.eye(seq)
    zero = torch.zeros(batch, heads, seq, dim)
    torch.manual_seed(seed)
    pd = masked_attention(zero.to(DEVICE), zero.to(DEVICE), eye.to(DEVICE), None,
                          None if lengths is None else lengths.to(DEVICE), dropout_p=p, backend="triton")
    return pd.cpu()[..., :seq] != 0


@pytest.mark.parametrize("heads,seq,lengths", [(3, 17, [17, 9]), (1, 70, [70, 65]), (1, 260, [260, 131])],
                         ids=["T17", "T70", "T260-long-path"])
def test_dropout_gradients_match_fp64_with_kernel_mask(heads, seq, lengths):
    """Every gradient under dropout equals the fp64 oracle run with the very mask the kernel drew: the
    backward regenerates the forward's mask (q/k/v grads, dξ = Σ r_t, Σ |r_t|), across tiles (T70) and on
    the long backward path (T260)."""
    batch, dim, p = 2, 16, 0.2
    lengths = torch.tensor(lengths)
    keep = _dropout_mask(batch, heads, seq, lengths, p, seed=5)
    real = (torch.arange(seq)[None, :] < lengths[:, None])
    pairs = real[:, None, :, None] & real[:, None, None, :]  # real query x real key
    rate = ((~keep) & pairs).sum().item() / pairs.expand_as(keep).sum().item()
    assert abs(rate - p) < 0.05, f"dropout rate {rate:.3f} far from {p}"
    q, k, v, g, hs = _attn_case(batch, heads, seq, dim, 100 + seq, lengths)
    torch.manual_seed(5)
    out, grads = _run_triton(q, k, v, hs, lengths, g, dropout_p=p)
    out64, grads64 = _ref(q, k, v, hs, lengths, g, keep=keep.double(), p=p)
    _check(out, grads, out64, grads64, lengths)
    torch.manual_seed(5)  # reproducible from the torch seed, down to the bit
    out2, grads2 = _run_triton(q, k, v, hs, lengths, g, dropout_p=p)
    assert torch.equal(out, out2) and all(torch.equal(grads[n], grads2[n]) for n in grads)


def test_dropout_zero_is_the_exact_path():
    """dropout_p = 0.0 draws no random numbers: bit-identical under any torch seed, global RNG untouched."""
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
    [((1, 3, 64, 16), [64]), ((2, 1, 65, 32), [65, 64]), ((1, 2, 17, 128), [17]), ((2, 1, 19, 24), [19, 1]),
     ((1, 2, 129, 128), [100])],
    ids=["T64", "T65-len64", "D128", "D24", "T129-D128-long-path"],
)
def test_tile_boundaries(shape, lengths):
    batch, heads, seq, dim = shape
    lengths = torch.tensor(lengths)
    q, k, v, g, hs = _attn_case(batch, heads, seq, dim, 200 + seq + dim, lengths)
    out, grads = _run_triton(q, k, v, hs, lengths, g)
    out64, grads64 = _ref(q, k, v, hs, lengths, g)
    _check(out, grads, out64, grads64, lengths)


def test_padded_query_rows_are_exact_zeros():
    """Rows t >= L: out = 0 and dq = 0 exactly (whole padded tiles are skipped, partial tiles masked)."""
    lengths = torch.tensor([70, 3])
    q, k, v, g, hs = _attn_case(2, 2, 97, 16, 21)
    out, grads = _run_triton(q, k, v, hs, lengths, g)  # g nonzero on padded rows: they still get nothing
    pad = torch.arange(97)[None, :] >= lengths[:, None]
    assert (out.permute(0, 2, 1, 3)[pad] == 0).all() and (grads["q"].permute(0, 2, 1, 3)[pad] == 0).all()


def test_probe_without_head_scale_and_long_lengths():
    """abs_probe alone (ξ = 1, no mask tensor) gets Σ_t |r_t|; lengths beyond T mean "no padding"."""
    q, k, v, g, _ = _attn_case(2, 3, 17, 16, 300)
    out, grads = _run_triton(q, k, v, None, torch.tensor([40, 17]), g)
    out64, grads64 = _ref(q, k, v, None, None, g)
    assert set(grads) == {"q", "k", "v", "probe"}
    _check(out, grads, out64, grads64)


# ------------------------------------------------------------------------------------- backward paths


@pytest.mark.parametrize("window,bias", [(None, False), (4, True)], ids=["plain", "window+bias"])
def test_long_path_equals_fused_path(monkeypatch, window, bias):
    """The same problem through the fused backward and through the forced three-kernel path: one answer."""
    from fastticket.kernels import attention_backward

    lengths = torch.tensor([40, 23])
    q, k, v, g, hs = _attn_case(2, 2, 40, 16, 500, lengths)
    hs[1, 0] = 0.0  # a pruned head: r_t from the recomputed context on the long path
    kw = dict(window=window)
    if bias:
        kw["attn_bias"] = randn((2, 1, 40, 40), 501).float().to(DEVICE)
    fused = _run_triton(q, k, v, hs, lengths, g, **kw)
    monkeypatch.setattr(attention_backward, "use_fused", lambda seq, dim, dropout=False: False)
    long = _run_triton(q, k, v, hs, lengths, g, **kw)
    assert torch.equal(fused[0], long[0]), "the forward must not depend on the backward path"
    for name in fused[1]:
        torch.testing.assert_close(long[1][name], fused[1][name], rtol=2e-5, atol=2e-5, msg=name)


def test_fused_up_to_256_then_long():
    from fastticket.kernels import attention_backward as ab

    assert ab.use_fused(256, 64) and ab.use_fused(1, 32) and ab.use_fused(128, 64, dropout=True)
    assert ab.use_fused(256, 32, dropout=True) and not ab.use_fused(256, 64, dropout=True)
    assert not ab.use_fused(257, 64) and not ab.use_fused(17, 128) and not ab.use_fused(1024, 16)


def test_layout_no_copies_and_only_wanted_grads(monkeypatch):
    """out and dq/dk/dv are [B, H, T, D] views of [B, T, H, D] memory; strided q/k/v/dout are read in place
    (no .contiguous()); a call needing only the mask gradient computes no q/k/v gradients."""
    from fastticket.ops import triton_backend as tb

    batch, heads, seq, dim = 2, 3, 17, 16
    qkv = torch.randn(batch, seq, 3, heads, dim, device=DEVICE, requires_grad=True)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    copies = []
    real = tb.last_dim_contiguous
    monkeypatch.setattr(tb, "last_dim_contiguous", lambda t: copies.append(real(t) is not t) or real(t))
    hs = torch.ones(batch, heads, device=DEVICE, requires_grad=True)
    out = masked_attention(q, k, v, hs, torch.tensor([17, 5], device=DEVICE), backend="triton")
    assert out.transpose(1, 2).is_contiguous(), "out is not [B, T, H, D] memory"
    dout = torch.randn(batch, seq, heads * dim, device=DEVICE).view(batch, seq, heads, dim).transpose(1, 2)
    dq, dhs = torch.autograd.grad(out, [qkv, hs], dout)
    assert copies and not any(copies), "a strided input or dout was copied"
    launches = []
    real_launch = tb.launch
    monkeypatch.setattr(tb, "launch", lambda kernel, grid, *a, **meta: launches.append(meta) or real_launch(kernel, grid, *a, **meta))
    x = torch.randn(batch, heads, seq, dim, device=DEVICE)
    (dhs,) = torch.autograd.grad(masked_attention(x, x, x, hs, backend="triton").sum(), [hs])
    assert [m.get("NEED_QKV") for m in launches] == [None, False]  # forward, then a backward without q/k/v grads
    assert torch.isfinite(dhs).all()


# ----------------------------------------------------------------------------------- configs and checks


def test_interpreter_runs_one_config_per_kernel():
    from fastticket.kernels import attention as fwd, attention_backward as bwd

    for kernel in (fwd.attn_fwd, bwd.attn_bwd_fused, bwd.attn_bwd_dkdv, bwd.attn_bwd_dq):
        assert len(kernel.configs) == 1  # no tuning runs under TRITON_INTERPRET


def test_every_bucket_has_configs_and_heavy_variants_skip_the_lean_one():
    """Each T bucket keeps tiles no larger than itself; the fused kernel's lean-only config (it spills with
    dropout, a window, a bias or fp32) serves the plain 16-bit call only."""
    import triton

    from fastticket.kernels import attention as fwd, attention_backward as bwd

    fused = [triton.Config({"BLOCK_M": m}, num_warps=w) for m, w in sorted({p for t in bwd.FUSED_TABLE.values() for p in t})]
    tiles = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}) for m in (16, 32, 64, 128) for n in (16, 32, 64, 128)]
    for bucket in (16, 32, 64, 128, 256, 512, 4096):
        kept = fwd.prune(tiles, {"T_BUCKET": bucket})
        assert kept and all(max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) <= bucket for c in kept)
        if bucket <= 256:
            assert bwd.prune_fused(fused, {"T_BUCKET": bucket})
    lean = {(c.kwargs["BLOCK_M"], c.num_warps) for c in bwd.prune_fused(fused, {"T_BUCKET": 128, "Q": torch.empty(0, dtype=torch.bfloat16)})}
    assert (64, 8) in lean
    for heavy in (dict(DROPOUT=True), dict(WINDOWED=True), dict(HAS_BIAS=True)):
        kept = {(c.kwargs["BLOCK_M"], c.num_warps) for c in bwd.prune_fused(fused, {"T_BUCKET": 128}, **heavy)}
        assert kept and (64, 8) not in kept
    fp32 = bwd.prune_fused(fused, {"T_BUCKET": 128, "Q": torch.empty(0)})
    assert (64, 8) not in {(c.kwargs["BLOCK_M"], c.num_warps) for c in fp32}


def test_too_large_grid_is_one_value_error(monkeypatch):
    from fastticket.ops import triton_backend as tb

    monkeypatch.setattr(tb, "MAX_GRID_Y", 2)  # 2 query tiles of 16 rows at most
    x = torch.zeros(1, 1, 33, 16, device=DEVICE)
    with pytest.raises(ValueError, match=r"T = 33 exceed the grid"):
        masked_attention(x, x, x, None, backend="triton")
    monkeypatch.setattr(tb, "INT32_MAX", 100)
    with pytest.raises(ValueError, match="32-bit offsets"):
        masked_attention(torch.zeros(1, 1, 17, 16, device=DEVICE), *(torch.zeros(1, 1, 17, 16, device=DEVICE),) * 2,
                         None, backend="triton")


def test_auto_never_picks_the_interpreter():
    """backend="auto" runs Triton on CUDA tensors only; CPU tensors under the interpreter go elsewhere."""
    from fastticket.ops import triton_backend

    fn = dispatch._registry["masked_attention"]["triton"].fn
    assert fn is triton_backend.triton_masked_attention
    x = torch.zeros(1, 1, 2, 16)
    assert dispatch.resolve("masked_attention", "auto", x, x, x) is not fn
    assert dispatch.resolve("masked_attention", "triton", x, x, x) is fn


# ---------------------------------------------------------------------------------- residual LayerNorm


def _ln_run(x, residual, scale, weight, bias, g, dtypes=(torch.float32,) * 2):
    xl, rl = leaves(x.to(DEVICE, dtypes[0]), residual.to(DEVICE, dtypes[1]))
    wl, bl, sl = leaves(*(None if t is None else t.float().to(DEVICE) for t in (weight, bias, scale)))
    probe = torch.zeros(x.shape[0], device=DEVICE, requires_grad=True)
    out = masked_residual_layernorm(xl, rl, sl, wl, bl, backend="triton", abs_probe=probe)
    inputs = [t for t in (xl, rl, wl, bl, sl, probe) if t is not None]
    grads = torch.autograd.grad(out, inputs, grad_outputs=g.to(DEVICE, out.dtype))
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


def test_layernorm_mixed_dtypes_like_autocast():
    """x fp16 (an autocast FFN output) + residual fp32: the result is fp32, as scale·x + residual is; each
    gradient comes back in its input's dtype; values match the torch backend on the same inputs."""
    batch, seq, channels = 2, 5, 24
    x, residual, g = (randn((batch, seq, channels), 600 + i) for i in range(3))
    weight, bias, scale = 1.0 + 0.3 * randn((channels,), 610), None, torch.tensor([0.5, 1.0], dtype=torch.float64)
    got = _ln_run(x, residual, scale, weight, bias, g, dtypes=(torch.float16, torch.float32))
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float16 and got[2].dtype == torch.float32
    xl, rl = leaves(x.to(torch.float16).float(), residual.float())
    wl, sl = leaves(weight.float(), scale.float())
    ref = masked_residual_layernorm(xl, rl, sl, wl, None, backend="torch")
    ref_grads = torch.autograd.grad(ref, [xl, rl, wl, sl], grad_outputs=g.float())
    torch.testing.assert_close(got[0], ref.detach(), rtol=1e-5, atol=1e-5)
    for a, b in zip(got[1:5], ref_grads):
        torch.testing.assert_close(a.float(), b, rtol=2e-3, atol=2e-3)
