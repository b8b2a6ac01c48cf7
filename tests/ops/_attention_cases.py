"""Inputs and runners shared by the masked_attention tests: seeded cases, the op on a backend, the fp64 oracle
(with r_t from a per-token head scale), and the real-row masks that padded-query comparisons need.

Padded query rows (t >= lengths[b]) are unspecified by the contract (the triton backend writes zeros, SDPA
attends the real keys): outputs are compared on real rows, and the upstream gradient is zero on padded
rows, as in a model (nothing reads them)."""

from __future__ import annotations

import os

import torch

from fastticket import reference as ref
from fastticket.ops import masked_attention

from ._helpers import gen, leaves, poison, randn

OP = "masked_attention"


def interpreted(backend: str) -> bool:
    return backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1"


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


def real_rows(lengths: torch.Tensor | None, batch: int, seq: int) -> torch.Tensor:
    """[B, 1, T, 1] float mask of real query rows (all ones without lengths)."""
    if lengths is None:
        return torch.ones(batch, 1, seq, 1, dtype=torch.float64)
    return (torch.arange(seq)[None, :] < lengths[:, None]).to(torch.float64)[:, None, :, None]


def make_case(batch, heads, seq, dim, scale_kind, padded, seed):
    """q, k, v, head_scale, lengths, and an upstream gradient that is zero on padded query rows."""
    q = randn((batch, heads, seq, dim), seed)
    k = randn((batch, heads, seq, dim), seed + 1)
    v = randn((batch, heads, seq, dim), seed + 2)
    hs = make_head_scale(scale_kind, batch, heads, seed + 4)
    lengths = make_lengths(batch, seq) if padded else None
    g = randn((batch, heads, seq, dim), seed + 3) * real_rows(lengths, batch, seq)
    return q, k, v, hs, lengths, g


def run_op(backend, device, q, k, v, hs, lengths, g, dtype=torch.float32, probe=True, scale_dtype=torch.float32, **kw):
    """Runs the op on `dtype` copies on `device`; returns the output and the gradients by name (fresh
    tensors, on the CPU). kw: dropout_p, softmax_scale, window, attn_bias (its gradient is returned too)."""
    ql, kl, vl = leaves(q.to(device, dtype), k.to(device, dtype), v.to(device, dtype))
    (hsl,) = leaves(None if hs is None else hs.to(device, scale_dtype))
    pr = torch.zeros(q.shape[:2], dtype=torch.float32, device=device, requires_grad=True) if probe else None
    bias = kw.pop("attn_bias", None)
    (bl,) = leaves(None if bias is None else bias.to(device, dtype))
    lengths = None if lengths is None else lengths.to(device)
    poison(device, q.shape, q.shape, q.shape, q.shape, q.shape[:3])
    out = masked_attention(ql, kl, vl, hsl, lengths, backend=backend, abs_probe=pr, attn_bias=bl, **kw)
    named = [("q", ql), ("k", kl), ("v", vl), ("head_scale", hsl), ("probe", pr), ("attn_bias", bl)]
    named = [(n, t) for n, t in named if t is not None]
    grads = torch.autograd.grad(out, [t for _, t in named], grad_outputs=g.to(device, out.dtype))
    return out.detach().cpu(), {n: d.cpu() for (n, _), d in zip(named, grads)}


def run_ref(q, k, v, hs, lengths, g, dtype=torch.float64, softmax_scale=None, **kw):
    """The eager oracle at `dtype`: output, gradients (attn_bias's too), and r_t / the probe from a per-token
    head scale."""
    batch, heads, seq, _ = q.shape
    ql, kl, vl = leaves(q.to(dtype), k.to(dtype), v.to(dtype))
    (hsl,) = leaves(None if hs is None else hs.to(dtype))
    bias = kw.pop("attn_bias", None)
    (bl,) = leaves(None if bias is None else bias.to(dtype))
    out = ref.masked_attention(ql, kl, vl, hsl, lengths, softmax_scale=softmax_scale, attn_bias=bl, **kw)
    named = [(n, t) for n, t in [("q", ql), ("k", kl), ("v", vl), ("head_scale", hsl), ("attn_bias", bl)] if t is not None]
    grads = dict(zip([n for n, _ in named], torch.autograd.grad(out, [t for _, t in named], grad_outputs=g.to(dtype))))
    if hs is None:
        tok = torch.ones(batch, heads, seq, dtype=dtype)
    elif hs.dim() == 1:
        tok = hs.to(dtype)[None, :, None].expand(batch, heads, seq).clone()
    else:
        tok = hs.to(dtype)[:, :, None].expand(batch, heads, seq).clone()
    tok.requires_grad_(True)
    out_tok = ref.masked_attention(q.to(dtype), k.to(dtype), v.to(dtype), tok, lengths, softmax_scale=softmax_scale,
                                   attn_bias=None if bias is None else bias.to(dtype), **kw)
    (r,) = torch.autograd.grad(out_tok, tok, grad_outputs=g.to(dtype))  # r_t = <dL/dctx_t, ctx_t>
    grads["probe"] = r.abs().sum(-1)
    grads["r"] = r
    return out.detach(), grads


