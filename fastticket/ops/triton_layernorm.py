"""masked_residual_layernorm on backend="triton": the autograd Function around kernels/residual_layernorm.py.
Helpers, dtype rules and registration: ops/triton_backend.py."""

from __future__ import annotations

import torch

from . import triton_backend as tb


def _rows(t: torch.Tensor) -> torch.Tensor:
    """[B, T, C] with C contiguous and rows at one stride: a [B·T, C] view (copied only if needed)."""
    batch, seq, channels = t.shape
    if t.stride(2) != 1 or (batch > 1 and seq > 1 and t.stride(0) != seq * t.stride(1)):
        t = t.contiguous()
    return t


def _stride0(t: torch.Tensor | None) -> int:
    return 0 if t is None or t.dim() == 0 else t.stride(0)


def _row_stride(t: torch.Tensor) -> int:
    return t.stride(1) if t.shape[1] > 1 else t.stride(0) if t.shape[0] > 1 else t.shape[2]


class _TritonResidualLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, scale, weight, bias, eps, abs_probe):
        _, _, ln = tb.kernels()
        x, residual = _rows(x), _rows(residual)
        batch, seq, channels = x.shape
        rows = batch * seq
        mode = 0 if scale is None else (1 if scale.dim() == 0 else 2)
        s = None if scale is None else scale.detach().reshape(-1)  # read through its stride: no copy
        weight_c = weight.contiguous()
        bias_c = None if bias is None else bias.contiguous()
        cfg = ln.launch_config(rows, channels, x.device.type == "cpu")
        y = tb.empty((batch, seq, channels), x.device, torch.promote_types(x.dtype, residual.dtype))
        mean = tb.empty((rows,), x.device, torch.float32)
        rstd = tb.empty((rows,), x.device, torch.float32)
        tb.launch(ln.ln_fwd, (cfg["n_blocks"],),
                  x, residual, y, weight_c, bias_c, s, mean, rstd, _row_stride(x), _row_stride(residual), _stride0(s),
                  rows, seq, channels, float(eps), SCALE_MODE=mode, HAS_BIAS=bias is not None, BLOCK_R=cfg["block_r"],
                  BLOCK_C=cfg["block_c"], num_warps=cfg["num_warps"])
        ctx.save_for_backward(x, residual, weight_c, s, mean, rstd)
        ctx.meta = (mode, cfg, None if scale is None else scale.dtype, None if abs_probe is None else abs_probe.dtype,
                    weight.dtype, None if bias is None else bias.dtype)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        _, _, ln = tb.kernels()
        x, residual, weight, s, mean, rstd = ctx.saved_tensors
        mode, cfg, scale_dtype, probe_dtype, w_dtype, b_dtype = ctx.meta
        batch, seq, channels = x.shape
        rows = batch * seq
        dy = _rows(dy)
        need = ctx.needs_input_grad
        need_dwb = need[3] or need[4]
        need_r = need[2] or need[6]
        dx = tb.empty((batch, seq, channels), x.device, x.dtype) if need[0] else None
        dres = tb.empty((batch, seq, channels), x.device, residual.dtype) if need[1] else None
        r = tb.empty((rows,), x.device, torch.float32) if need_r else None
        programs = cfg["bwd_programs"]
        dw_part = tb.empty((programs, channels), x.device, torch.float32) if need_dwb else None
        db_part = tb.empty((programs, channels), x.device, torch.float32) if need_dwb else None
        tb.launch(ln.ln_bwd, (programs,),
                  x, residual, dy, weight, s, mean, rstd, dx, dres, r, dw_part, db_part,
                  _row_stride(x), _row_stride(residual), _row_stride(dy), _stride0(s), rows, seq, channels,
                  cfg["blocks_per_prog"],
                  SCALE_MODE=mode, NEED_DX=need[0], NEED_DRES=need[1], NEED_R=need_r, NEED_DWB=need_dwb,
                  BLOCK_R=cfg["block_r"], BLOCK_C=cfg["block_c"], num_warps=cfg["num_warps"])
        grad_scale = grad_probe = dw = db = None
        if need_r:
            r = r.view(batch, seq)
        if need[2]:
            grad_scale = r.sum(1)
            if mode == 1:
                grad_scale = grad_scale.sum(0)
            grad_scale = grad_scale.to(scale_dtype)
        if need[6]:
            grad_probe = r.abs().sum(1).to(probe_dtype)
        if need[3]:
            dw = dw_part.sum(0).to(w_dtype)
        if need[4]:
            db = db_part.sum(0).to(b_dtype)
        return dx, dres, grad_scale, dw, db, None, grad_probe


def triton_masked_residual_layernorm(x, residual, scale, weight, bias, eps, abs_probe):
    if x.numel() == 0:
        from .residual_layernorm import torch_masked_residual_layernorm

        return torch_masked_residual_layernorm(x, residual, scale, weight, bias, eps, abs_probe)
    return _TritonResidualLayerNorm.apply(x, residual, scale, weight, bias, eps, abs_probe)
