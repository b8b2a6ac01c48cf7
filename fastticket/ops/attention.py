"""masked_attention: multi-head attention whose per-head output scale ξ gets its gradient.

ctx_h = softmax(Q_h K_hᵀ·softmax_scale + attn_bias + padding/window mask) V_h, times head_scale[..., h],
before W_O. The gradient of head_scale is the head-mask gradient ∂L/∂ξ (per example when head_scale is
[B, H]). Optional features, served by the backends that register them (dispatch falls back to one that
does): `attn_bias` (an additive score bias with its gradient, DeBERTa's disentangled terms) and `window`
(local attention: query t sees keys s with |t − s| ≤ window, ModernBERT's local layers).

Rows t ≥ lengths[b] (padded queries) are finite but otherwise unspecified: nothing real reads them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import dispatch
from .mask_scale import apply_scale

OP = "masked_attention"


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    head_scale: torch.Tensor | None,
    lengths: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    backend: str = "auto",
    abs_probe: torch.Tensor | None = None,
    *,
    attn_bias: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Masked attention over q, k, v [B, H, T, D] -> [B, H, T, D].

    head_scale: [H] (per model) or [B, H] (per example), or None for no mask. lengths: int [B], the number
    of real tokens of each row (right padding); None when nothing is padded. abs_probe: optional [B, H]
    tensor whose gradient receives Σ_t |⟨∂L/∂out_t, ctx_t⟩| (the `official` importance).
    attn_bias: [B or 1, H or 1, T, T], added to the scaled scores; its gradient flows. window: None (global)
    or an int >= 0, the largest |query − key| distance attended.
    """
    _check(q, k, v, head_scale, lengths, dropout_p, abs_probe)
    extras = _check_extras(q, attn_bias, window)
    impl = dispatch.resolve(OP, backend, q, k, v, attn_bias, features=tuple(extras),
                            mask_grad=needs_mask_grad(head_scale, abs_probe))
    return impl(q, k, v, head_scale, lengths, dropout_p, softmax_scale, abs_probe, **extras)


def needs_mask_grad(head_scale, abs_probe) -> bool:
    """Whether this call must produce a head-mask gradient or probe: then "auto" takes a fused kernel that
    computes it; otherwise the fastest plain attention serves (the mask is only a multiply)."""
    if abs_probe is not None:
        return True
    return head_scale is not None and head_scale.requires_grad and torch.is_grad_enabled()


def _check_extras(q, attn_bias, window) -> dict:
    """The optional features this call uses, checked: {name: value} for those that are not None."""
    batch, heads, seq, _ = q.shape
    extras = {}
    if attn_bias is not None:
        b = tuple(attn_bias.shape)
        if len(b) != 4 or b[0] not in (1, batch) or b[1] not in (1, heads) or b[2:] != (seq, seq):
            raise ValueError(f"attn_bias has shape {b}; allowed: [B or 1, H or 1, T, T] with B={batch}, H={heads}, T={seq}")
        if not attn_bias.is_floating_point():
            raise ValueError(f"attn_bias has dtype {attn_bias.dtype}; allowed: a floating-point tensor")
        extras["attn_bias"] = attn_bias
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"window={window!r}; allowed: None (global attention) or an integer >= 0")
        extras["window"] = window
    return extras


def _check(q, k, v, head_scale, lengths, dropout_p, abs_probe) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one shape [B, H, T, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise ValueError(f"q, k, v have dtypes {q.dtype}, {k.dtype}, {v.dtype}; allowed: one floating-point dtype for "
                         f"all three (under autocast, cast them to one dtype before the call)")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v are on {q.device}, {k.device}, {v.device}; allowed: one device")
    batch, heads = q.shape[:2]
    if head_scale is not None and tuple(head_scale.shape) not in ((heads,), (batch, heads)):
        raise ValueError(f"head_scale has shape {tuple(head_scale.shape)}; allowed: [H]=({heads},) or [B, H]=({batch}, {heads})")
    if lengths is not None and (tuple(lengths.shape) != (batch,) or lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool):
        raise ValueError(f"lengths must be an integer tensor of shape [B]=({batch},); got {lengths.dtype} {tuple(lengths.shape)}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p={dropout_p} is outside the allowed range [0, 1)")
    if abs_probe is not None and tuple(abs_probe.shape) != (batch, heads):
        raise ValueError(f"abs_probe has shape {tuple(abs_probe.shape)}; allowed: [B, H]=({batch}, {heads})")


def torch_masked_attention(q, k, v, head_scale, lengths, dropout_p, softmax_scale, abs_probe, attn_bias=None,
                           window=None):
    """The torch backend, and the vendor path on CUDA: SDPA (flash / cuDNN / memory-efficient, as torch picks
    for the mask) with head_scale applied as a multiply whose backward reduces the mask gradient."""
    mask = allowed_keys(lengths, window, q.shape[2], q.device)
    if attn_bias is not None:
        bias = attn_bias.to(q.dtype)
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=softmax_scale)
    return apply_scale(ctx, head_scale, abs_probe)


def allowed_keys(lengths, window, seq: int, device) -> torch.Tensor | None:
    """bool [B or 1, 1, T or 1, T]: which keys each query attends (right padding, local window); None: all.

    A padded query row that the window leaves without a real key attends every real key instead, so its
    (unused) output stays finite."""
    pos = torch.arange(seq, device=device)
    keep = None if lengths is None else (pos[None, :] < lengths.to(device)[:, None])[:, None, None, :]
    if window is None:
        return keep
    band = ((pos[:, None] - pos[None, :]).abs() <= window)[None, None]
    if keep is None:
        return band
    allowed = band & keep
    return allowed | (~allowed.any(-1, keepdim=True) & keep)


dispatch.register(OP, "torch", torch_masked_attention, features=("attn_bias", "window"))
