"""masked_residual_layernorm: LayerNorm(scale·x + residual), the FFN mask ν applied before the residual.

The gradient of `scale` is the FFN-mask gradient ∂L/∂ν = Σ_t ⟨∂L/∂z_t, x_t⟩ (z the LayerNorm input), per
example when scale is [B].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import dispatch
from .mask_scale import apply_scale

OP = "masked_residual_layernorm"


def masked_residual_layernorm(
    x: torch.Tensor,
    residual: torch.Tensor,
    scale: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float = 1e-12,
    backend: str = "auto",
    abs_probe: torch.Tensor | None = None,
) -> torch.Tensor:
    """x, residual: [B, T, C]; scale: scalar tensor (per model), [B] (per example) or None; weight: [C]; bias:
    [C] or None (no bias, as ModernBERT's LayerNorm). x and residual may differ in dtype (autocast: a half
    FFN output and an fp32 residual); the result has their promoted dtype, as scale·x + residual would.

    abs_probe: optional [B] tensor whose gradient receives Σ_t |⟨∂L/∂z_t, x_t⟩| (the `official` importance).
    """
    _check(x, residual, scale, weight, bias, abs_probe)
    impl = dispatch.resolve(OP, backend, x, residual)
    return impl(x, residual, scale, weight, bias, eps, abs_probe)


def _check(x, residual, scale, weight, bias, abs_probe) -> None:
    if x.dim() != 3 or residual.shape != x.shape:
        raise ValueError(f"x and residual must share one shape [B, T, C]; got {tuple(x.shape)} and {tuple(residual.shape)}")
    batch, _, channels = x.shape
    if scale is not None and tuple(scale.shape) not in ((), (batch,)):
        raise ValueError(f"scale has shape {tuple(scale.shape)}; allowed: a scalar tensor () or [B]=({batch},)")
    bias_shape = None if bias is None else tuple(bias.shape)
    if tuple(weight.shape) != (channels,) or bias_shape not in (None, (channels,)):
        raise ValueError(f"weight and bias must have shape [C]=({channels},) (bias may be None); got "
                         f"{tuple(weight.shape)}, {bias_shape}")
    if not (x.is_floating_point() and residual.is_floating_point()) or x.device != residual.device:
        raise ValueError(f"x and residual are {x.dtype} on {x.device} and {residual.dtype} on {residual.device}; "
                         f"allowed: floating-point tensors on one device")
    if abs_probe is not None and tuple(abs_probe.shape) != (batch,):
        raise ValueError(f"abs_probe has shape {tuple(abs_probe.shape)}; allowed: [B]=({batch},)")


def torch_masked_residual_layernorm(x, residual, scale, weight, bias, eps, abs_probe):
    dtype = torch.promote_types(x.dtype, residual.dtype)  # mixed (autocast): scale·x in the wider dtype
    z = apply_scale(x.to(dtype), scale, abs_probe) + residual.to(dtype)
    if z.device.type == "cpu" and z.dtype in (torch.float16, torch.bfloat16):
        # CPU layer_norm's backward sums dweight/dbias over B·T in half precision (errors of several % at
        # B·T ~ 1000); compute in fp32 and round once, as the GPU kernels effectively do.
        return F.layer_norm(z.float(), (x.shape[-1],), weight.float(), None if bias is None else bias.float(),
                            eps).to(z.dtype)
    return F.layer_norm(z, (x.shape[-1],), weight.to(z.dtype), None if bias is None else bias.to(z.dtype), eps)


dispatch.register(OP, "torch", torch_masked_residual_layernorm)
