"""backend="triton": autograd Functions around the fused Triton kernels (kernels/attention*.py,
kernels/residual_layernorm.py), registered for masked_attention and masked_residual_layernorm.

Triton is imported lazily, on the first call: `import fastticket` works where triton is not installed
(nothing is registered then), and TRITON_INTERPRET may be set any time before the first call. The
backend runs CUDA tensors (fp32/fp16/bf16) and, under TRITON_INTERPRET=1, CPU tensors in fp32/fp16 (tests
only: the interpreter mishandles bf16, and it is far too slow for "auto"). On CUDA, "auto" takes it for
fp16/bf16 only, and the attention kernel only for calls that need a mask gradient or probe
(ops/attention.py). fp32 on CUDA (backend="triton" named) runs its dots in TF32 on the tensor cores: plain
fp32 dots compile to FMA code that spills, 3×TF32 spills in the backward; "auto" sends fp32 to SDPA.

Attention I/O makes no full-tensor copy: q/k/v/dout are read through their strides (only a
non-contiguous last dim is copied), out and dq/dk/dv are allocated [B, T, H, D] and returned as [B, H, T, D]
views, so the encoder's transpose + reshape is free. Semantics are the torch backend's on every real
query row; padded query rows are exact zeros (and carry no gradient). The mask gradient is Σ_t r_t per
example (summed over the batch for a per-model mask), abs_probe's gradient Σ_t |r_t|, in fp32 before the
cast; every reduction has a fixed order, so repeated runs are bit-identical.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from . import dispatch

HAS_TRITON = importlib.util.find_spec("triton") is not None
GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
HALF_DTYPES = (torch.float16, torch.bfloat16)
INTERPRET_DTYPES = (torch.float32, torch.float16)
MAX_GRID_Y = 65535  # CUDA's limit on grid axis 1 (query tiles); axis 0 (B·H) allows 2^31 − 1
INT32_MAX = 2**31 - 1


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def supports(*tensors) -> bool:
    ts = [t for t in tensors if t is not None]
    if not HAS_TRITON or not ts:
        return False
    if all(t.is_cuda and t.dtype in GPU_DTYPES for t in ts):
        return True
    return interpreting() and all(t.device.type == "cpu" and t.dtype in INTERPRET_DTYPES for t in ts)


def prefers(*tensors) -> bool:
    """auto's rule: CUDA fp16/bf16 (fp32 goes to the vendor path, exact where TF32 would not be)."""
    ts = [t for t in tensors if t is not None]
    return HAS_TRITON and bool(ts) and all(t.is_cuda and t.dtype in HALF_DTYPES for t in ts) and not interpreting()


def kernels():
    """(attention, attention_backward, residual_layernorm) kernel modules, imported on first use."""
    try:
        from ..kernels import attention, attention_backward, residual_layernorm
    except ImportError:  # a source checkout that is not installed: kernels/ sits at the top level
        from kernels import attention, attention_backward, residual_layernorm
    return attention, attention_backward, residual_layernorm


def launch(kernel, grid, *args, **meta) -> None:
    """Every Triton launch of this backend goes through here (tests count them)."""
    kernel[grid](*args, **meta)


def precision(t: torch.Tensor) -> str:
    """tl.dot's input precision: TF32 for fp32 on a GPU, exact fp32 in the interpreter; 16-bit ignores it."""
    return "ieee" if t.dtype == torch.float32 and interpreting() else "tf32"


def matmul_precision(t: torch.Tensor) -> str:
    """For plain GEMMs (head tables): fp32 as nn.Linear computes it, TF32 only if torch allows it for matmuls."""
    if t.dtype != torch.float32 or interpreting():
        return precision(t)
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def draw_seed() -> int:
    """A dropout seed from torch's default generator: torch.manual_seed makes the run reproducible."""
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def empty(shape, device, dtype) -> torch.Tensor:
    """Every buffer this backend's kernels write (tests poison them through here)."""
    return torch.empty(shape, device=device, dtype=dtype)


def bthd_empty(batch, heads, seq, dim, like: torch.Tensor) -> torch.Tensor:
    """A [B, H, T, D] view of fresh [B, T, H, D] memory."""
    return empty((batch, seq, heads, dim), like.device, like.dtype).permute(0, 2, 1, 3)


def check_launchable(q, k, v, attn_bias) -> None:
    """One ValueError, before any work, for a problem the kernels' grid or 32-bit offsets cannot address."""
    batch, heads, seq, _ = q.shape
    if batch * heads > INT32_MAX or -(-seq // 16) > MAX_GRID_Y:
        raise ValueError(f"masked_attention (triton): B·H = {batch * heads}, T = {seq} exceed the grid "
                         f"(allowed: B·H <= {INT32_MAX}, T <= {16 * MAX_GRID_Y}); use backend='torch'")
    extents = [seq * heads * q.shape[3]] + [seq * abs(t.stride(2)) for t in (q, k, v)]  # within one head
    if attn_bias is not None:
        extents.append(seq * (abs(attn_bias.stride(2)) + abs(attn_bias.stride(3))))
    if max(extents) > INT32_MAX:
        raise ValueError(f"masked_attention (triton): one head spans {max(extents)} elements (T = {seq}); allowed: "
                         f"< 2^31 (32-bit offsets); use backend='torch'")


from .triton_attention import triton_masked_attention  # noqa: E402  (uses the helpers above)
from .triton_layernorm import triton_masked_residual_layernorm  # noqa: E402

if HAS_TRITON:
    dispatch.register("masked_attention", "triton", triton_masked_attention, supports=supports, prefers=prefers,
                      features=("attn_bias", "window"), only_with_mask_grad=True)
    dispatch.register("masked_residual_layernorm", "triton", triton_masked_residual_layernorm, supports=supports,
                      prefers=prefers)
