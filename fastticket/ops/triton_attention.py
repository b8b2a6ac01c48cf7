"""masked_attention on backend="triton": the autograd Function and its launches (kernels/attention.py,
kernels/attention_backward.py). Helpers, dtype rules and registration: ops/triton_backend.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import triton_backend as tb


@dataclass(frozen=True)
class _Problem:
    """What every launch of one call shares: sizes, scalars and the compile-time variant."""

    batch: int
    heads: int
    seq: int
    dim: int
    sm_scale: float
    seed: int
    dropout_p: float
    window: int | None
    precision: str

    def scalars(self) -> tuple:
        return (self.sm_scale, self.seed, self.dropout_p, 0 if self.window is None else self.window)

    def flags(self, xi, lens, bias) -> dict:
        return dict(HAS_SCALE=xi is not None, HAS_LENS=lens is not None, HAS_BIAS=bias is not None,
                    WINDOWED=self.window is not None, DROPOUT=self.dropout_p > 0.0, PREC=self.precision)


def _strides(t: torch.Tensor | None, n: int = 3) -> tuple:
    """The first n strides ([B, H, T] of a [B, H, T, D] tensor; all four of a bias); zeros for None."""
    return (0,) * n if t is None else tuple(t.stride()[:n])


class _TritonAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, head_scale, attn_bias, abs_probe, lengths, dropout_p, softmax_scale, window):
        attn, _, _ = tb.kernels()
        q, k, v = (tb.last_dim_contiguous(t) for t in (q, k, v))
        batch, heads, seq, dim = q.shape
        sm_scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(dim)
        dropout_p = float(dropout_p)
        pb = _Problem(batch, heads, seq, dim, sm_scale, tb.draw_seed() if dropout_p > 0.0 else 0, dropout_p,
                      window, tb.precision(q))
        # read in place through their strides: no copy, no launch (per-model [H] expands with stride 0)
        xi = None if head_scale is None else head_scale.detach().expand(batch, heads)
        lens = None if lengths is None else lengths.to(q.device)
        bias = None if attn_bias is None else attn_bias.detach().expand(batch, heads, seq, seq)
        save = any(ctx.needs_input_grad)
        out = tb.bthd_empty(batch, heads, seq, dim, q)
        lse = tb.empty((batch * heads, seq), q.device, torch.float32) if save else None
        tb.launch(attn.attn_fwd, attn.fwd_grid(batch * heads, seq),
                  q, k, v, out, lse, xi, lens, bias, *pb.scalars(), *_strides(xi, 2), *_strides(q), *_strides(k), *_strides(v),
                  *_strides(out), *_strides(bias, 4), heads, seq, dim, attn.t_bucket(seq),
                  **pb.flags(xi, lens, bias), STORE_LSE=save, BLOCK_D=attn.block_d(dim))
        if save:
            ctx.save_for_backward(q, k, v, out, lse, xi, lens, bias)
            ctx.problem = pb
            ctx.grad_meta = (head_scale is not None and head_scale.dim() == 1,
                             None if head_scale is None else head_scale.dtype,
                             None if abs_probe is None else abs_probe.dtype,
                             None if attn_bias is None else (tuple(attn_bias.shape), attn_bias.dtype))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v, out, lse, xi, lens, bias = ctx.saved_tensors
        pb = ctx.problem
        per_model, scale_dtype, probe_dtype, bias_meta = ctx.grad_meta
        need = ctx.needs_input_grad
        dout = tb.last_dim_contiguous(dout.to(q.dtype))
        need_bias = need[4]
        need_qkv = any(need[:3]) or need_bias
        dq, dk, dv = (tb.bthd_empty(*q.shape, q) for _ in range(3)) if need_qkv else (None, None, None)
        dbias = None
        if need_bias:
            full = bias_meta[0] == (pb.batch, pb.heads, pb.seq, pb.seq)
            dbias = torch.zeros((pb.batch, pb.heads, pb.seq, pb.seq), device=q.device,
                                dtype=bias_meta[1] if full else torch.float32)
        args = (q, k, v, out, dout, lse, xi, lens, bias)
        rsum, rabs = (_backward_fused if _use_fused(pb) else _backward_long)(pb, args, dq, dk, dv, dbias, need_qkv)
        grad_scale = grad_probe = grad_bias = None
        if need[3]:
            grad_scale = rsum.view(pb.batch, pb.heads)
            grad_scale = (grad_scale.sum(0) if per_model else grad_scale).to(scale_dtype)
        if need[5]:
            grad_probe = rabs.view(pb.batch, pb.heads).to(probe_dtype)
        if need_bias:
            grad_bias = _reduce_to(dbias, bias_meta[0]).to(bias_meta[1])
        return (dq if need[0] else None, dk if need[1] else None, dv if need[2] else None, grad_scale, grad_bias,
                grad_probe, None, None, None, None)


def _use_fused(pb: _Problem) -> bool:
    _, attn_bwd, _ = tb.kernels()
    return attn_bwd.use_fused(pb.seq, pb.dim, pb.dropout_p > 0.0)


def _reduce_to(grad: torch.Tensor, shape: tuple) -> torch.Tensor:
    """The [B, H, T, T] bias gradient summed over the dims the bias broadcast (size 1 in `shape`)."""
    dims = [i for i in (0, 1) if shape[i] == 1 and grad.shape[i] != 1]
    return grad.sum(dims, keepdim=True) if dims else grad


def _backward_fused(pb, args, dq, dk, dv, dbias, need_qkv):
    """T ≤ 256: one program per (b, h); Σ_t r_t and Σ_t |r_t| come back per (b, h)."""
    attn, attn_bwd, _ = tb.kernels()
    q, k, v, out, dout, lse, xi, lens, bias = args
    rsum = tb.empty((pb.batch * pb.heads,), q.device, torch.float32)
    rabs = tb.empty((pb.batch * pb.heads,), q.device, torch.float32)
    tb.launch(attn_bwd.attn_bwd_fused, (pb.batch * pb.heads,),
              q, k, v, dout, lse, dq, dk, dv, dbias, rsum, rabs, xi, lens, bias, *pb.scalars(), *_strides(xi, 2),
              *_strides(q), *_strides(k), *_strides(v), *_strides(dout), *_strides(dq),
              *_strides(bias, 4), *_strides(dbias, 4), pb.heads, pb.seq, pb.dim, attn.t_bucket(pb.seq),
              **pb.flags(xi, lens, bias), BIAS_GRAD=dbias is not None, NEED_QKV=need_qkv,
              BLOCK_N=attn.t_bucket(pb.seq), BLOCK_D=attn.block_d(pb.dim))
    return rsum, rabs


def _backward_long(pb, args, dq, dk, dv, dbias, need_qkv):
    """T > 256: the pre-pass (Δ, per-tile partial sums of r_t), then dK/dV and dQ (+ d bias) kernels."""
    attn, attn_bwd, _ = tb.kernels()
    q, k, v, out, dout, lse, xi, lens, bias = args
    bh = pb.batch * pb.heads
    grid = attn_bwd.prep_grid(bh, pb.seq)
    delta = tb.empty((bh, pb.seq), q.device, torch.float32)
    rsum = tb.empty((bh, grid[1]), q.device, torch.float32)
    rabs = tb.empty((bh, grid[1]), q.device, torch.float32)
    flags = pb.flags(xi, lens, bias)
    qkv_strides = (*_strides(q), *_strides(k), *_strides(v))
    tb.launch(attn_bwd.attn_bwd_prep, grid,
              q, k, v, out, dout, lse, delta, rsum, rabs, xi, lens, bias, *pb.scalars(), *_strides(xi, 2), *qkv_strides,
              *_strides(out), *_strides(dout), *_strides(bias, 4), pb.heads, pb.seq, pb.dim, grid[1],
              **flags, BLOCK_D=attn.block_d(pb.dim), **attn_bwd.PREP)
    if need_qkv:
        common = (pb.heads, pb.seq, pb.dim, attn.t_bucket(pb.seq))
        tb.launch(attn_bwd.attn_bwd_dkdv, attn_bwd.dkdv_grid(bh, pb.seq),
                  q, k, v, dout, lse, delta, dk, dv, xi, lens, bias, *pb.scalars(), *_strides(xi, 2), *qkv_strides, *_strides(dout),
                  *_strides(dk), *_strides(bias, 4), *common, **flags, BLOCK_D=attn.block_d(pb.dim))
        tb.launch(attn_bwd.attn_bwd_dq, attn_bwd.dq_grid(bh, pb.seq),
                  q, k, v, dout, lse, delta, dq, dbias, xi, lens, bias, *pb.scalars(), *_strides(xi, 2), *qkv_strides, *_strides(dout),
                  *_strides(dq), *_strides(bias, 4), *_strides(dbias, 4), *common, **flags,
                  BIAS_GRAD=dbias is not None, BLOCK_D=attn.block_d(pb.dim))
    return rsum.sum(-1), rabs.sum(-1)


def triton_masked_attention(q, k, v, head_scale, lengths, dropout_p, softmax_scale, abs_probe, attn_bias=None,
                            window=None):
    if q.numel() == 0:
        from .attention import torch_masked_attention

        return torch_masked_attention(q, k, v, head_scale, lengths, dropout_p, softmax_scale, abs_probe,
                                      attn_bias=attn_bias, window=window)
    tb.check_launchable(q, k, v, attn_bias)
    return _TritonAttention.apply(q, k, v, head_scale, attn_bias, abs_probe, lengths, dropout_p, softmax_scale, window)
