"""backend="triton": autograd Functions around the fused Triton kernels (kernels/attention.py,
kernels/residual_layernorm.py), registered for masked_attention and masked_residual_layernorm.

Triton is imported lazily, on the first call: `import fastticket` works where triton is not installed
(nothing is registered then), and TRITON_INTERPRET may be set any time before the first call. The
backend runs CUDA tensors (fp32/fp16/bf16; "auto" picks it there) and, under TRITON_INTERPRET=1, CPU
tensors in fp32/fp16 (tests only: the interpreter mishandles bf16, and it is far too slow for "auto").

Semantics are the torch backend's (fastticket/ops/attention.py, residual_layernorm.py, mask_scale.py):
the mask gradient is Σ_t r_t per example (summed over the batch for a per-model mask), abs_probe's
gradient Σ_t |r_t|, both in fp32 before the cast to the mask's / probe's dtype. All reductions are
per-block partials summed in a fixed order, so repeated runs are bit-identical.
"""

from __future__ import annotations

import importlib.util
import math
import os

import torch

from . import dispatch

_HAS_TRITON = importlib.util.find_spec("triton") is not None
_GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INTERPRET_DTYPES = (torch.float32, torch.float16)


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _supports(*tensors) -> bool:
    ts = [t for t in tensors if t is not None]
    if not _HAS_TRITON or not ts:
        return False
    if all(t.is_cuda and t.dtype in _GPU_DTYPES for t in ts):
        return True
    return _interpret() and all(t.device.type == "cpu" and t.dtype in _INTERPRET_DTYPES for t in ts)


def _prefers(*tensors) -> bool:
    ts = [t for t in tensors if t is not None]
    return _HAS_TRITON and bool(ts) and all(t.is_cuda and t.dtype in _GPU_DTYPES for t in ts) and not _interpret()


def _kernels():
    # lazy: triton reads TRITON_INTERPRET when the kernels are defined
    try:
        from ..kernels import attention, residual_layernorm
    except ImportError:  # a source checkout that is not installed: kernels/ sits at the top level
        from kernels import attention, residual_layernorm
    return attention, residual_layernorm


def _draw_seed() -> int:
    """A dropout seed from torch's default generator: torch.manual_seed makes the run reproducible."""
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


# ------------------------------------------------------------------------------------------- attention


class _TritonAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, head_scale, lengths, dropout_p, softmax_scale, abs_probe):
        attn, _ = _kernels()
        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        batch, heads, seq, dim = q.shape
        sm_scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(dim)
        xi = None if head_scale is None else head_scale.detach().to(device=q.device, dtype=torch.float32).expand(batch, heads).contiguous()
        lens = None if lengths is None else lengths.to(device=q.device, dtype=torch.int32).contiguous()
        dropout_p = float(dropout_p)
        seed = _draw_seed() if dropout_p > 0.0 else 0
        cfg = attn.block_sizes(seq, dim, q.device.type == "cpu")
        ctx_buf = torch.empty((batch, heads, seq, dim), device=q.device, dtype=q.dtype)
        out = torch.empty_like(ctx_buf) if xi is not None else ctx_buf
        lse = torch.empty((batch, heads, seq), device=q.device, dtype=torch.float32)
        prec = "ieee" if q.dtype == torch.float32 else "tf32"
        attn._attn_fwd[attn.grid(seq, cfg["fwd_m"], batch * heads)](
            q, k, v, ctx_buf, out, lse, xi, lens, sm_scale, seed, dropout_p,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], heads, seq, dim,
            HAS_SCALE=xi is not None, HAS_LENS=lens is not None, WRITE_OUT=xi is not None, DROPOUT=dropout_p > 0.0,
            PREC=prec, BLOCK_M=cfg["fwd_m"], BLOCK_N=cfg["fwd_n"], BLOCK_D=cfg["block_d"],
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
        ctx.save_for_backward(q, k, v, ctx_buf, lse, xi, lens)
        ctx.meta = (sm_scale, seed, dropout_p, prec, cfg, head_scale is not None and head_scale.dim() == 1,
                    None if head_scale is None else head_scale.dtype, None if abs_probe is None else abs_probe.dtype)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        attn, _ = _kernels()
        q, k, v, ctx_buf, lse, xi, lens = ctx.saved_tensors
        sm_scale, seed, dropout_p, prec, cfg, per_model, scale_dtype, probe_dtype = ctx.meta
        batch, heads, seq, dim = q.shape
        bh = batch * heads
        dout = dout.contiguous()
        num_m = triton_cdiv(seq, cfg["bwd_m"])
        r = torch.empty((batch, heads, seq), device=q.device, dtype=torch.float32)
        rsum = torch.empty((bh, num_m), device=q.device, dtype=torch.float32)
        rabs = torch.empty((bh, num_m), device=q.device, dtype=torch.float32)
        attn._attn_bwd_pre[(num_m, bh)](
            dout, ctx_buf, r, rsum, rabs, seq, dim, num_m, BLOCK_M=cfg["bwd_m"], BLOCK_D=cfg["block_d"],
            num_warps=cfg["num_warps"],
        )
        dq = dk = dv = grad_scale = grad_probe = None
        common = dict(HAS_SCALE=xi is not None, HAS_LENS=lens is not None, DROPOUT=dropout_p > 0.0, PREC=prec,
                      BLOCK_M=cfg["bwd_m"], BLOCK_N=cfg["bwd_n"], BLOCK_D=cfg["block_d"],
                      num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], heads, seq, dim)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            dk = torch.empty((batch, heads, seq, dim), device=q.device, dtype=k.dtype)
            dv = torch.empty((batch, heads, seq, dim), device=q.device, dtype=v.dtype)
            attn._attn_bwd_dkdv[attn.grid(seq, cfg["bwd_n"], bh)](
                q, k, v, dout, lse, r, dk, dv, xi, lens, sm_scale, seed, dropout_p, *strides, **common)
        if ctx.needs_input_grad[0]:
            dq = torch.empty((batch, heads, seq, dim), device=q.device, dtype=q.dtype)
            attn._attn_bwd_dq[attn.grid(seq, cfg["bwd_m"], bh)](
                q, k, v, dout, lse, r, dq, xi, lens, sm_scale, seed, dropout_p, *strides, **common)
        if ctx.needs_input_grad[3]:
            grad_scale = rsum.sum(-1).view(batch, heads)
            if per_model:
                grad_scale = grad_scale.sum(0)
            grad_scale = grad_scale.to(scale_dtype)
        if ctx.needs_input_grad[7]:
            grad_probe = rabs.sum(-1).view(batch, heads).to(probe_dtype)
        return (dq, dk if ctx.needs_input_grad[1] else None, dv if ctx.needs_input_grad[2] else None,
                grad_scale, None, None, None, grad_probe)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _attention(q, k, v, head_scale, lengths, dropout_p, softmax_scale, abs_probe):
    if q.numel() == 0:
        from .attention import _torch_backend

        return _torch_backend(q, k, v, head_scale, lengths, dropout_p, softmax_scale, abs_probe)
    return _TritonAttention.apply(q, k, v, head_scale, lengths, dropout_p, softmax_scale, abs_probe)


# ------------------------------------------------------------------------------- residual + LayerNorm


def _rows(t: torch.Tensor) -> torch.Tensor:
    """[B, T, C] with C contiguous and rows at one stride: a [B·T, C] view (copied only if needed)."""
    batch, seq, channels = t.shape
    if t.stride(2) != 1 or (batch > 1 and seq > 1 and t.stride(0) != seq * t.stride(1)):
        t = t.contiguous()
    return t


def _row_stride(t: torch.Tensor) -> int:
    return t.stride(1) if t.shape[1] > 1 else t.stride(0) if t.shape[0] > 1 else t.shape[2]


class _TritonResidualLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, scale, weight, bias, eps, abs_probe):
        _, ln = _kernels()
        x, residual = _rows(x), _rows(residual)
        batch, seq, channels = x.shape
        rows = batch * seq
        mode = 0 if scale is None else (1 if scale.dim() == 0 else 2)
        s = None if scale is None else scale.detach().to(device=x.device, dtype=torch.float32).reshape(-1).contiguous()
        weight_c, bias_c = weight.contiguous(), bias.contiguous()
        cfg = ln.launch_config(rows, channels, x.device.type == "cpu")
        y = torch.empty((batch, seq, channels), device=x.device, dtype=x.dtype)
        mean = torch.empty(rows, device=x.device, dtype=torch.float32)
        rstd = torch.empty(rows, device=x.device, dtype=torch.float32)
        ln._ln_fwd[(cfg["n_blocks"],)](
            x, residual, y, weight_c, bias_c, s, mean, rstd, _row_stride(x), _row_stride(residual), rows, seq, channels,
            float(eps), SCALE_MODE=mode, BLOCK_R=cfg["block_r"], BLOCK_C=cfg["block_c"], num_warps=cfg["num_warps"],
        )
        ctx.save_for_backward(x, residual, weight_c, s, mean, rstd)
        ctx.meta = (mode, cfg, None if scale is None else scale.dtype, None if abs_probe is None else abs_probe.dtype,
                    weight.dtype, bias.dtype)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        _, ln = _kernels()
        x, residual, weight, s, mean, rstd = ctx.saved_tensors
        mode, cfg, scale_dtype, probe_dtype, w_dtype, b_dtype = ctx.meta
        batch, seq, channels = x.shape
        rows = batch * seq
        dy = dy.contiguous()
        need_dx, need_dres = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_dwb = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        need_r = ctx.needs_input_grad[2] or ctx.needs_input_grad[6]
        dx = torch.empty((batch, seq, channels), device=x.device, dtype=x.dtype) if need_dx else None
        dres = torch.empty((batch, seq, channels), device=x.device, dtype=residual.dtype) if need_dres else None
        r = torch.empty(rows, device=x.device, dtype=torch.float32) if need_r else None
        programs = cfg["bwd_programs"]
        dw_part = torch.empty((programs, channels), device=x.device, dtype=torch.float32) if need_dwb else None
        db_part = torch.empty((programs, channels), device=x.device, dtype=torch.float32) if need_dwb else None
        ln._ln_bwd[(programs,)](
            x, residual, dy, weight, s, mean, rstd, dx, dres, r, dw_part, db_part,
            _row_stride(x), _row_stride(residual), rows, seq, channels, cfg["blocks_per_prog"],
            SCALE_MODE=mode, NEED_DX=need_dx, NEED_DRES=need_dres, NEED_R=need_r, NEED_DWB=need_dwb,
            BLOCK_R=cfg["block_r"], BLOCK_C=cfg["block_c"], num_warps=cfg["num_warps"],
        )
        grad_scale = grad_probe = dw = db = None
        if need_r:
            r = r.view(batch, seq)
        if ctx.needs_input_grad[2]:
            grad_scale = r.sum(1)
            if mode == 1:
                grad_scale = grad_scale.sum(0)
            grad_scale = grad_scale.to(scale_dtype)
        if ctx.needs_input_grad[6]:
            grad_probe = r.abs().sum(1).to(probe_dtype)
        if ctx.needs_input_grad[3]:
            dw = dw_part.sum(0).to(w_dtype)
        if ctx.needs_input_grad[4]:
            db = db_part.sum(0).to(b_dtype)
        return dx, dres, grad_scale, dw, db, None, grad_probe


def _residual_layernorm(x, residual, scale, weight, bias, eps, abs_probe):
    if x.numel() == 0:
        from .residual_layernorm import _torch_backend

        return _torch_backend(x, residual, scale, weight, bias, eps, abs_probe)
    return _TritonResidualLayerNorm.apply(x, residual, scale, weight, bias, eps, abs_probe)


if _HAS_TRITON:
    dispatch.register("masked_attention", "triton", _attention, supports=_supports, prefers=_prefers)
    dispatch.register("masked_residual_layernorm", "triton", _residual_layernorm, supports=_supports, prefers=_prefers)
