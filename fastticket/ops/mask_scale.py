"""Mask multiplication whose backward yields the mask gradient and, optionally, Σ_t |r_t|.

x has shape [B, *G, T, D] (G = (H,) for attention heads, () for the FFN); the mask `scale` is per model
[*G] or per example [B, *G]. With r_t = ⟨∂L/∂y_t, x_t⟩ for y = scale·x, the gradient of the scale is
Σ_t r_t (summed over the batch too for a per-model scale). `abs_probe` ([B, *G], values unused) receives
Σ_t |r_t| as its "gradient": the side channel the `official` estimator reads (no true gradient has it).
This is the torch backend's piece; the fused kernels compute the same in their backward pre-pass.
"""

from __future__ import annotations

import torch


def _view(scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    per_example = scale.dim() == x.dim() - 2
    shape = tuple(scale.shape) if per_example else (1,) + tuple(scale.shape)
    return scale.reshape(shape + (1, 1))


class _ScaleWithProbe(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, abs_probe):
        ctx.save_for_backward(x, scale)
        ctx.has_probe = abs_probe is not None
        return x * _view(scale, x).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, scale = ctx.saved_tensors
        grad_x = grad_scale = grad_probe = None
        if ctx.needs_input_grad[0]:
            grad_x = grad * _view(scale, x).to(grad.dtype)
        if ctx.needs_input_grad[1] or ctx.has_probe:
            r = (grad.float() * x.float()).sum(-1)  # [B, *G, T]: r_t in fp32
            if ctx.needs_input_grad[1]:
                grad_scale = r.sum(-1)
                if scale.dim() == x.dim() - 3:  # per-model scale: sum over the batch
                    grad_scale = grad_scale.sum(0)
                grad_scale = grad_scale.to(scale.dtype)
            if ctx.has_probe:
                grad_probe = r.abs().sum(-1)
        return grad_x, grad_scale, grad_probe


def apply_scale(x: torch.Tensor, scale: torch.Tensor | None, abs_probe: torch.Tensor | None = None) -> torch.Tensor:
    """scale·x with the mask gradient (and Σ_t|r_t| into abs_probe's grad) on the way back."""
    if scale is None and abs_probe is None:
        return x
    if scale is None:
        scale = x.new_ones(abs_probe.shape[1:])
    return _ScaleWithProbe.apply(x, scale, abs_probe)
