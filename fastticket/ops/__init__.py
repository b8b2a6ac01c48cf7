"""The fused ops behind the masked encoder, dispatched over backends (triton | cuda | cpp | torch)."""

from .attention import masked_attention
from .dispatch import BACKENDS, available, check_backend_name, register
from .residual_layernorm import masked_residual_layernorm
from . import cpp_backend  # noqa: F401,E402  (registers backend="cpp" when fastticket._C is built)
from . import triton_backend  # noqa: F401,E402  (registers backend="triton" when triton is installed)
from .head_projection import head_projection  # noqa: F401,E402  (ticket sharing: live heads of a shared weight)

__all__ = ["masked_attention", "masked_residual_layernorm", "register", "available", "BACKENDS", "check_backend_name"]
