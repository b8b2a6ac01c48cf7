"""Pure-PyTorch oracle of every fused op.

Written for clarity, not speed: eager math with the full B×H×T×T score matrix, usable in fp64. Tests
compare every backend against these; nothing on a hot path calls them.
"""

from __future__ import annotations

import math

import torch


def key_padding_mask(lengths: torch.Tensor | None, batch: int, seq: int, device) -> torch.Tensor | None:
    """[B, T] bool, True for real (unpadded) key positions; None when nothing is padded."""
    if lengths is None:
        return None
    return torch.arange(seq, device=device)[None, :] < lengths.to(device)[:, None]


def _broadcast_scale(scale: torch.Tensor, x: torch.Tensor, group_dims: int) -> torch.Tensor:
    """Views a per-model [*G], per-example [B, *G] or per-token [B, *G, T] scale against x [B, *G, T, D]."""
    if scale.dim() == group_dims:  # per model
        return scale.reshape((1,) + tuple(scale.shape) + (1, 1))
    if scale.dim() == group_dims + 1:  # per example
        return scale.reshape(tuple(scale.shape) + (1, 1))
    return scale.unsqueeze(-1)  # per token


def masked_attention(q, k, v, head_scale=None, lengths=None, dropout_p=0.0, softmax_scale=None, generator=None,
                     attn_bias=None, window=None):
    """ctx_h = softmax(Q_h K_hᵀ·scale + attn_bias + padding/window mask) V_h, multiplied by head_scale before W_O.

    q, k, v: [B, H, T, D]; head_scale: [H], [B, H] or per token [B, H, T] (the per-token form is the oracle
    of the `official` estimator: its gradient is r_t = ⟨∂L/∂ctx_t, ctx_t⟩); lengths: int [B], right padding;
    attn_bias: [B|1, H|1, T, T]; window: query t attends keys s with |t − s| <= window. A (padded) query
    row left with no key gives a zero context.
    """
    batch, _, seq, dim = q.shape
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(dim)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if attn_bias is not None:
        scores = scores + attn_bias.to(scores.dtype)
    allowed = torch.ones(seq, seq, dtype=torch.bool, device=q.device)[None, None]
    keep = key_padding_mask(lengths, batch, seq, q.device)
    if keep is not None:
        allowed = allowed & keep[:, None, None, :]
    if window is not None:
        pos = torch.arange(seq, device=q.device)
        allowed = allowed & ((pos[:, None] - pos[None, :]).abs() <= window)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no key: zero context
    if dropout_p > 0.0:
        drop = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=probs.dtype) < dropout_p
        probs = probs.masked_fill(drop, 0.0) / (1.0 - dropout_p)
    ctx = torch.matmul(probs, v)
    if head_scale is None:
        return ctx
    return ctx * _broadcast_scale(head_scale.to(ctx.dtype), ctx, group_dims=1)


def masked_residual_layernorm(x, residual, scale, weight, bias, eps=1e-12):
    """LayerNorm(scale·x + residual) over the last dim; x, residual: [B, T, C]; scale: scalar, [B] or [B, T]."""
    s = scale.to(x.dtype)
    if s.dim() == 1:
        s = s[:, None, None]
    elif s.dim() == 2:
        s = s[:, :, None]
    z = s * x + residual
    mean = z.mean(-1, keepdim=True)
    var = ((z - mean) ** 2).mean(-1, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps) * weight + bias
