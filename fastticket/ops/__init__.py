"""The fused ops behind the masked encoder, dispatched over backends (triton | cuda | cpp | torch)."""

from .attention import masked_attention
from .dispatch import BACKENDS, available, register
from .residual_layernorm import masked_residual_layernorm

__all__ = ["masked_attention", "masked_residual_layernorm", "register", "available", "BACKENDS"]
