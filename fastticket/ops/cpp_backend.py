"""backend="cpp" (and "cuda" for masked_residual_layernorm): the compiled extension fastticket._C.

The ops are registered in C++ with torch.library (torch.ops.fastticket.attn_fwd / attn_bwd / rln_fwd /
rln_bwd); this module adds their fake (meta) implementations so torch.compile can trace them, wraps them in
autograd Functions with the public ops' semantics (mask gradient per example or per model, Σ_t|r_t| into
abs_probe's grad), and registers them with fastticket.ops.dispatch. Without the extension (built with
FASTTICKET_BUILD_EXT=0, or a failed build) nothing is registered and the torch backend serves every call.

Compute is fp32; bf16 inputs are upcast once and the results rounded once (ATen makes that cheap). A local
window masks the score block (served: cheap and exact; attn_bias is not, calls with it go elsewhere). Attention
dropout (dropout_p > 0, training only) is not in the C++ kernel: the cpp function hands such calls to the
torch backend (SDPA), so dropout behaves exactly as backend="torch".
"""

from __future__ import annotations

import math

import torch

from . import dispatch
from . import attention as _attention
from . import residual_layernorm as _rln

try:
    from fastticket import _C  # noqa: F401  (loading it registers torch.ops.fastticket.*)
except ImportError:  # not built (FASTTICKET_BUILD_EXT=0) or built against another torch
    _C = None

AVAILABLE = _C is not None and hasattr(torch.ops, "fastticket") and hasattr(torch.ops.fastticket, "attn_fwd")
WITH_CUDA = AVAILABLE and bool(getattr(_C, "with_cuda", False))
DTYPES = (torch.float32, torch.bfloat16)


def _f32(t: torch.Tensor) -> torch.Tensor:
    """fp32 with a contiguous last dim (views of a fused projection stay views)."""
    t = t.float()
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


# ------------------------------------------------------------------------------------------ attention


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, head_scale, abs_probe, lengths, softmax_scale, window):
        batch, heads = q.shape[:2]
        hs = None if head_scale is None else head_scale.detach().float().expand(batch, heads).contiguous()
        save = any(ctx.needs_input_grad[:5])
        q32, k32, v32 = _f32(q), _f32(k), _f32(v)
        out, c, lse = torch.ops.fastticket.attn_fwd(q32, k32, v32, hs, lengths, softmax_scale, save, window)
        ctx.set_materialize_grads(True)
        ctx.softmax_scale = softmax_scale
        ctx.window = window
        ctx.per_model = head_scale is not None and head_scale.dim() == 1
        ctx.scale_dtype = None if head_scale is None else head_scale.dtype
        ctx.dtype = q.dtype
        if save:
            ctx.save_for_backward(q32, k32, v32, c if hs is not None else out, lse, hs, lengths)
        return out if q.dtype == torch.float32 else out.to(q.dtype)

    @staticmethod
    def backward(ctx, dout):
        q32, k32, v32, c, lse, hs, lengths = ctx.saved_tensors
        need_qkv = any(ctx.needs_input_grad[:3])
        dq, dk, dv, r_sum, r_abs = torch.ops.fastticket.attn_bwd(
            _f32(dout), q32, k32, v32, c, lse, hs, lengths, ctx.softmax_scale, need_qkv, ctx.window)
        if not need_qkv:
            dq = dk = dv = None
        elif ctx.dtype != torch.float32:
            dq, dk, dv = dq.to(ctx.dtype), dk.to(ctx.dtype), dv.to(ctx.dtype)
        grad_scale = grad_probe = None
        if ctx.needs_input_grad[3]:
            grad_scale = (r_sum.sum(0) if ctx.per_model else r_sum).to(ctx.scale_dtype)
        if ctx.needs_input_grad[4]:
            grad_probe = r_abs
        return dq, dk, dv, grad_scale, grad_probe, None, None, None


def cpp_masked_attention(q, k, v, head_scale, lengths, dropout_p, softmax_scale, abs_probe, window=None):
    if dropout_p > 0.0:  # no dropout in the C++ kernel: the torch backend's (SDPA) dropout, same semantics
        return _attention.torch_masked_attention(q, k, v, head_scale, lengths, dropout_p, softmax_scale, abs_probe,
                                                 window=window)
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[-1])
    if lengths is not None:
        lengths = lengths.to(device=q.device, dtype=torch.int64).contiguous()
    return _Attention.apply(q, k, v, head_scale, abs_probe, lengths, float(softmax_scale), window)


# --------------------------------------------------------------------------------- residual layernorm


class _ResidualLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, scale, weight, bias, abs_probe, eps):
        batch = x.shape[0]
        s = None if scale is None else scale.detach().float().expand(batch).contiguous()
        x32, r32 = _f32(x), _f32(residual)
        w32 = weight.detach().float().contiguous()
        b32 = torch.zeros_like(w32) if bias is None else bias.detach().float().contiguous()  # no bias: zeros
        y, mean, rstd = torch.ops.fastticket.rln_fwd(x32, r32, s, w32, b32, eps)
        ctx.set_materialize_grads(True)
        ctx.dtypes = (x.dtype, residual.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.scale_shape = None if scale is None else scale.shape
        ctx.scale_dtype = None if scale is None else scale.dtype
        if any(ctx.needs_input_grad[:6]):
            ctx.save_for_backward(x32, r32, s, w32, mean, rstd)
        out_dtype = torch.promote_types(x.dtype, residual.dtype)
        return y if out_dtype == torch.float32 else y.to(out_dtype)

    @staticmethod
    def backward(ctx, dy):
        x32, r32, s, w32, mean, rstd = ctx.saved_tensors
        dx, dres, dw, db, r_sum, r_abs = torch.ops.fastticket.rln_bwd(_f32(dy), x32, r32, s, w32, mean, rstd)
        need = ctx.needs_input_grad
        dtx, dtr, dtw, dtb = ctx.dtypes
        grads = [dx.to(dtx) if need[0] else None, dres.to(dtr) if need[1] else None, None,
                 dw.to(dtw) if need[3] else None, db.to(dtb) if need[4] else None, None, None]
        if need[2]:
            grads[2] = (r_sum if len(ctx.scale_shape) == 1 else r_sum.sum()).to(ctx.scale_dtype)
        if need[5]:
            grads[5] = r_abs
        return tuple(grads)


def cpp_masked_residual_layernorm(x, residual, scale, weight, bias, eps, abs_probe):
    return _ResidualLayerNorm.apply(x, residual, scale, weight, bias, abs_probe, float(eps))


# ---------------------------------------------------------------------------------- fake (meta) impls

if AVAILABLE:

    def _bthd(q):
        """[B, H, T, D] view of [B, T, H, D] memory: the layout the C++ kernels return (as SDPA on CPU)."""
        b, h, t, d = q.shape
        return q.new_empty((b, t, h, d), dtype=torch.float32).permute(0, 2, 1, 3)

    @torch.library.register_fake("fastticket::attn_fwd")
    def _attn_fwd_fake(q, k, v, head_scale, lengths, softmax_scale, save_for_backward, window=None):
        out = _bthd(q)
        ctx = q.new_empty(q.shape if (save_for_backward and head_scale is not None) else (0,), dtype=torch.float32)
        lse = q.new_empty(q.shape[:3] if save_for_backward else (0,), dtype=torch.float32)
        return out, ctx, lse

    @torch.library.register_fake("fastticket::attn_bwd")
    def _attn_bwd_fake(dout, q, k, v, ctx, lse, head_scale, lengths, softmax_scale, need_qkv, window=None):
        mk = lambda s: q.new_empty(s, dtype=torch.float32)  # noqa: E731
        if need_qkv:
            return _bthd(q), _bthd(q), _bthd(q), mk(q.shape[:2]), mk(q.shape[:2])
        return mk((0,)), mk((0,)), mk((0,)), mk(q.shape[:2]), mk(q.shape[:2])

    @torch.library.register_fake("fastticket::rln_fwd")
    def _rln_fwd_fake(x, residual, scale, weight, bias, eps):
        return x.new_empty(x.shape, dtype=torch.float32), x.new_empty(x.shape[:2], dtype=torch.float32), x.new_empty(x.shape[:2], dtype=torch.float32)

    @torch.library.register_fake("fastticket::rln_bwd")
    def _rln_bwd_fake(dy, x, residual, scale, weight, mean, rstd):
        mk = lambda s: x.new_empty(s, dtype=torch.float32)  # noqa: E731
        c = x.shape[-1]
        return mk(x.shape), mk(x.shape), mk((c,)), mk((c,)), mk(x.shape[:1]), mk(x.shape[:1])


# ---------------------------------------------------------------------------------------- registration


def _on(device_type: str):
    def supports(*tensors) -> bool:
        ts = [t for t in tensors if t is not None]
        return bool(ts) and all(t.device.type == device_type and t.dtype in DTYPES for t in ts)
    return supports


if AVAILABLE:
    dispatch.register(_attention.OP, "cpp", cpp_masked_attention, supports=_on("cpu"), features=("window",))
    dispatch.register(_rln.OP, "cpp", cpp_masked_residual_layernorm, supports=_on("cpu"))
    if WITH_CUDA:  # the CUDA residual LayerNorm (+ per-example mask-gradient reduction) of csrc/cuda
        dispatch.register(_rln.OP, "cuda", cpp_masked_residual_layernorm, supports=_on("cuda"))
