"""masked_attention: multi-head attention whose per-head output scale ξ gets its gradient.

ctx_h = softmax(Q_h K_hᵀ·softmax_scale + padding) V_h, times head_scale[..., h], before W_O. The gradient
of head_scale is the head-mask gradient ∂L/∂ξ (per example when head_scale is [B, H]).
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
) -> torch.Tensor:
    """Masked attention over q, k, v [B, H, T, D] -> [B, H, T, D].

    head_scale: [H] (per model) or [B, H] (per example), or None for no mask. lengths: int [B], the number
    of real tokens of each row (right padding); None when nothing is padded. abs_probe: optional [B, H]
    tensor whose gradient receives Σ_t |⟨∂L/∂out_t, ctx_t⟩| (the `official` importance).
    """
    _check(q, k, v, head_scale, lengths, dropout_p, abs_probe)
    impl = dispatch.resolve(OP, backend, q, k, v)
    return impl(q, k, v, head_scale, lengths, dropout_p, softmax_scale, abs_probe)


def _check(q, k, v, head_scale, lengths, dropout_p, abs_probe) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one shape [B, H, T, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    batch, heads = q.shape[:2]
    if head_scale is not None and tuple(head_scale.shape) not in ((heads,), (batch, heads)):
        raise ValueError(f"head_scale has shape {tuple(head_scale.shape)}; allowed: [H]=({heads},) or [B, H]=({batch}, {heads})")
    if lengths is not None and (tuple(lengths.shape) != (batch,) or lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool):
        raise ValueError(f"lengths must be an integer tensor of shape [B]=({batch},); got {lengths.dtype} {tuple(lengths.shape)}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p={dropout_p} is outside the allowed range [0, 1)")
    if abs_probe is not None and tuple(abs_probe.shape) != (batch, heads):
        raise ValueError(f"abs_probe has shape {tuple(abs_probe.shape)}; allowed: [B, H]=({batch}, {heads})")


def _torch_backend(q, k, v, head_scale, lengths, dropout_p, softmax_scale, abs_probe):
    mask = None
    if lengths is not None:
        mask = (torch.arange(q.shape[2], device=q.device)[None, :] < lengths[:, None])[:, None, None, :]
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=softmax_scale)
    return apply_scale(ctx, head_scale, abs_probe)


dispatch.register(OP, "torch", _torch_backend)
