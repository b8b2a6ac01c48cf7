"""head_projection: Q/K/V and output projections over a task's live heads of a shared weight.

In ticket sharing (docs/method.md §6) every task's ticket is a subset of the heads the shared encoder
holds; a batch of task i must compute only task i's heads and write weight gradients only to their
slices. `heads` is the head table: int [h], positions of the live heads in the weight's head layout.

    mode="in"  (Q, K, V):  y = x · W[r]ᵀ + b[r],       x [..., in]  -> y [..., h·D]; W [H·D, in], b [H·D]
    mode="out" (W_O):      y = x · W[:, r]ᵀ + b,       x [..., h·D] -> y [..., out]; W [out, H·D], b [out]

with r = the rows/columns of the live heads (head p -> p·D … p·D + D - 1, in table order). Gradients of W
(and of b in mode "in") are full-size and exactly zero outside the live slices.

Backends: torch (index_select forward, whose autograd backward is index_add: the baseline) and triton
(kernels/head_projection.py, one gathered-GEMM kernel for the forward and the three backward GEMMs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import dispatch

OP = "head_projection"
MODES = ("in", "out")


def head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """int64 [h·D]: the weight rows (mode "in") / columns (mode "out") of the heads in `heads`."""
    heads = heads.to(torch.long)
    return (heads[:, None] * head_dim + torch.arange(head_dim, device=heads.device)[None, :]).reshape(-1)


def head_projection(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    heads: torch.Tensor,
    head_dim: int,
    mode: str = "in",
    backend: str = "auto",
) -> torch.Tensor:
    """See the module docstring. heads: integer [h] head positions of `weight`'s layout, distinct."""
    _check(x, weight, bias, heads, head_dim, mode)
    impl = dispatch.resolve(OP, backend, x, weight)
    return impl(x, weight, bias, heads.to(device=weight.device), head_dim, mode)


def _check(x, weight, bias, heads, head_dim, mode) -> None:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is unknown; allowed: {MODES}")
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
        raise ValueError(f"head_dim={head_dim!r}; allowed: an integer >= 1")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [out, in]; got shape {tuple(weight.shape)}")
    if not isinstance(heads, torch.Tensor) or heads.dim() != 1 or heads.is_floating_point() or heads.dtype == torch.bool:
        raise ValueError(f"heads must be a 1-D integer tensor (the head table); got {heads!r}")
    width = weight.shape[0] if mode == "in" else weight.shape[1]
    if width % head_dim:
        raise ValueError(f"weight has {width} {'rows' if mode == 'in' else 'columns'}, not a multiple of head_dim {head_dim}")
    total = width // head_dim
    if heads.device.type == "cpu" and heads.numel():  # device tables are trusted (no host sync per call)
        if int(heads.min()) < 0 or int(heads.max()) >= total or heads.unique().numel() != heads.numel():
            raise ValueError(f"heads {heads.tolist()} must be distinct head positions in [0, {total})")
    live = heads.numel() * head_dim
    expect_in = weight.shape[1] if mode == "in" else live
    if x.shape[-1] != expect_in:
        raise ValueError(f"x has last dimension {x.shape[-1]}; mode {mode!r} with {heads.numel()} live heads needs {expect_in}")
    expect_bias = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (expect_bias,):
        raise ValueError(f"bias has shape {tuple(bias.shape)}; allowed: ({expect_bias},)")


def _torch_backend(x, weight, bias, heads, head_dim, mode):
    width = weight.shape[0] if mode == "in" else weight.shape[1]
    if heads.numel() * head_dim == width and heads.device.type == "cpu" and bool((heads == torch.arange(heads.numel())).all()):
        return F.linear(x, weight, bias)  # every head, in order: the plain projection
    rows = head_rows(heads, head_dim)
    if mode == "in":
        return F.linear(x, weight.index_select(0, rows), None if bias is None else bias.index_select(0, rows))
    return F.linear(x, weight.index_select(1, rows), bias)


dispatch.register(OP, "torch", _torch_backend)


# ---------------------------------------------------------------------------------------------- triton


def _kernel_module():
    try:
        from ..kernels import head_projection as kernel
    except ImportError:  # a source checkout that is not installed: kernels/ sits at the top level
        from kernels import head_projection as kernel
    return kernel


def _mm(a, b, c, bias, heads, head_dim, m, n, k, a_strides, b_strides, c_strides, *, gather_k=False, gather_n=False,
        scatter_m=False, scatter_n=False):
    from . import triton_backend as tb

    kernel = _kernel_module()
    cfg = kernel.block_sizes(tb.interpreting())
    prec = tb.matmul_precision(a)
    tb.launch(kernel.gathered_mm, kernel.grid(m, n, cfg),
        a, b, c, bias, heads, m, n, k, *a_strides, *b_strides, *c_strides,
        HEAD_DIM=head_dim, GATHER_K=gather_k, GATHER_N=gather_n, SCATTER_M=scatter_m, SCATTER_N=scatter_n,
        HAS_BIAS=bias is not None, PREC=prec, **cfg)
    return c


class _TritonHeadProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, heads, head_dim, mode):
        shape = x.shape
        x2 = x.reshape(math.prod(shape[:-1]), shape[-1])
        x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
        table = heads.to(device=x.device, dtype=torch.int32).contiguous()
        m, live = x2.shape[0], table.numel() * head_dim
        if mode == "in":
            n, k = live, weight.shape[1]
            y = torch.empty((m, n), device=x.device, dtype=x.dtype)
            if m and n:  # B[k, n] = W[g(n), k]
                _mm(x2, weight, y, bias, table, head_dim, m, n, k, x2.stride(), (weight.stride(1), weight.stride(0)),
                    y.stride(), gather_n=True)
        else:
            n, k = weight.shape[0], live
            y = torch.empty((m, n), device=x.device, dtype=x.dtype)
            if m and n:  # B[k, n] = W[n, g(k)]
                if k:
                    _mm(x2, weight, y, bias, table, head_dim, m, n, k, x2.stride(), (weight.stride(1), weight.stride(0)),
                        y.stride(), gather_k=True)
                else:
                    y.copy_((bias if bias is not None else y.new_zeros(n)).to(y.dtype).expand(m, n))
        ctx.save_for_backward(x2, weight, table)
        ctx.meta = (shape, head_dim, mode, bias is not None)
        return y.reshape(*shape[:-1], n)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x2, weight, table = ctx.saved_tensors
        shape, head_dim, mode, has_bias = ctx.meta
        dy = dy.reshape(x2.shape[0], dy.shape[-1]).contiguous()
        m, live = x2.shape[0], table.numel() * head_dim
        dx = dw = db = None
        if mode == "in":
            if ctx.needs_input_grad[0]:  # dX[m, k] = Σ_n dY[m, n] W[g(n), k]
                dx = torch.zeros((m, weight.shape[1]), device=dy.device, dtype=x2.dtype)
                if m and live:
                    _mm(dy, weight, dx, None, table, head_dim, m, weight.shape[1], live, dy.stride(),
                        (weight.stride(0), weight.stride(1)), dx.stride(), gather_k=True)
            if ctx.needs_input_grad[1]:  # dW[g(n), k] = Σ_m dY[m, n] X[m, k], live rows only
                dw = torch.zeros_like(weight)
                if m and live:
                    _mm(dy, x2, dw, None, table, head_dim, live, weight.shape[1], m, (dy.stride(1), dy.stride(0)),
                        x2.stride(), dw.stride(), scatter_m=True)
            if has_bias and ctx.needs_input_grad[2]:
                db = torch.zeros(weight.shape[0], device=dy.device, dtype=weight.dtype)
                if live:
                    db.index_copy_(0, head_rows(table, head_dim), dy.float().sum(0).to(db.dtype))
        else:
            n = weight.shape[0]
            if ctx.needs_input_grad[0]:  # dX[m, k'] = Σ_j dY[m, j] W[j, g(k')]
                dx = torch.zeros((m, live), device=dy.device, dtype=x2.dtype)
                if m and live:
                    _mm(dy, weight, dx, None, table, head_dim, m, live, n, dy.stride(),
                        (weight.stride(0), weight.stride(1)), dx.stride(), gather_n=True)
            if ctx.needs_input_grad[1]:  # dW[j, g(k')] = Σ_m dY[m, j] X[m, k'], live columns only
                dw = torch.zeros_like(weight)
                if m and live:
                    _mm(dy, x2, dw, None, table, head_dim, n, live, m, (dy.stride(1), dy.stride(0)),
                        x2.stride(), dw.stride(), scatter_n=True)
            if has_bias and ctx.needs_input_grad[2]:
                db = dy.float().sum(0).to(weight.dtype)
        if dx is not None:
            dx = dx.reshape(shape)
        return dx, dw, db, None, None, None


def triton_head_projection(x, weight, bias, heads, head_dim, mode):
    return _TritonHeadProjection.apply(x, weight, bias, heads, head_dim, mode)


def _register_triton() -> None:
    from . import triton_backend as tb

    if tb.HAS_TRITON:
        dispatch.register(OP, "triton", triton_head_projection, supports=tb.supports, prefers=tb.prefers)


_register_triton()
