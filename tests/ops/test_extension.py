"""The compiled extension fastticket._C: importable after install, torch.library ops with fake impls
(opcheck, torch.compile fullgraph), dispatch ("auto" prefers cpp on CPU fp32/bf16, torch for the rest),
thread-count independence, and FASTTICKET_BUILD_EXT=0 / a missing extension leaving the torch backend.
Numerical checks against the fp64 oracles run in test_attention.py / test_residual_layernorm.py, which
include "cpp" automatically once it is built."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastticket.ops import available, cpp_backend, dispatch, masked_attention, masked_residual_layernorm

ROOT = Path(__file__).resolve().parents[2]
built = pytest.mark.skipif(not cpp_backend.AVAILABLE, reason="fastticket._C is not built (FASTTICKET_BUILD_EXT=0?)")


def _attn_inputs(B=2, H=3, T=9, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
    return q, k, v, torch.tensor([T, 4][:B] + [T] * (B - 2), dtype=torch.int64)


def _rln_inputs(B=2, T=5, C=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, r = torch.randn(B, T, C, generator=g), torch.randn(B, T, C, generator=g)
    return x, r, torch.randn(C, generator=g), torch.randn(C, generator=g)


@built
def test_extension_is_importable_and_registers_ops():
    import fastticket._C as C

    assert isinstance(C.with_cuda, bool)
    for name in ("attn_fwd", "attn_bwd", "rln_fwd", "rln_bwd"):
        assert hasattr(torch.ops.fastticket, name)
    assert "cpp" in available("masked_attention") and "cpp" in available("masked_residual_layernorm")


@built
def test_auto_prefers_cpp_on_cpu_and_falls_back_to_torch():
    q, k, v, _ = _attn_inputs()
    for dtype in (torch.float32, torch.bfloat16):
        assert dispatch.resolve("masked_attention", "auto", q.to(dtype), k.to(dtype), v.to(dtype)) is cpp_backend.cpp_masked_attention
    for dtype in (torch.float64, torch.float16):  # not implemented in C++: the torch backend
        assert dispatch.resolve("masked_attention", "auto", q.to(dtype), k.to(dtype), v.to(dtype)) is not cpp_backend.cpp_masked_attention
        with pytest.raises(ValueError):
            dispatch.resolve("masked_attention", "cpp", q.to(dtype), k.to(dtype), v.to(dtype))
    x, r, _, _ = _rln_inputs()
    assert dispatch.resolve("masked_residual_layernorm", "auto", x, r) is cpp_backend.cpp_masked_residual_layernorm


@built
def test_opcheck_attention_ops():
    q, k, v, lengths = _attn_inputs()
    hs = torch.rand(2, 3) + 0.5
    scale = 8 ** -0.5
    for head_scale, save in ((hs, True), (None, True), (hs, False)):
        torch.library.opcheck(torch.ops.fastticket.attn_fwd.default, (q, k, v, head_scale, lengths, scale, save))
    out, ctx, lse = torch.ops.fastticket.attn_fwd(q, k, v, hs, lengths, scale, True)
    dout = torch.randn_like(q)
    for need in (True, False):
        torch.library.opcheck(torch.ops.fastticket.attn_bwd.default, (dout, q, k, v, ctx, lse, hs, lengths, scale, need))


@built
def test_opcheck_residual_layernorm_ops():
    x, r, w, b = _rln_inputs()
    s = torch.rand(2) + 0.5
    for scale in (s, None):
        torch.library.opcheck(torch.ops.fastticket.rln_fwd.default, (x, r, scale, w, b, 1e-5))
        _, mean, rstd = torch.ops.fastticket.rln_fwd(x, r, scale, w, b, 1e-5)
        torch.library.opcheck(torch.ops.fastticket.rln_bwd.default, (torch.randn_like(x), x, r, scale, w, mean, rstd))


@built
def test_torch_compile_fullgraph_matches_eager():
    q, k, v, lengths = _attn_inputs()
    x, r, w, b = _rln_inputs(B=2, T=9, C=24)

    def f(q, hs, x, s):
        ctx = masked_attention(q, k, v, hs, lengths, backend="cpp")  # [B, H, T, D] -> [B, T, H*D]
        h = ctx.transpose(1, 2).reshape(2, 9, 24)
        return masked_residual_layernorm(h, x, s, w, b, backend="cpp").square().sum()

    def grads(fn):
        ql, hs, sl = q.clone().requires_grad_(), torch.ones(2, 3, requires_grad=True), torch.ones(2, requires_grad=True)
        loss = fn(ql, hs, x, sl)
        return (loss.detach(), *torch.autograd.grad(loss, [ql, hs, sl]))

    torch._dynamo.reset()
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for a, e in zip(grads(compiled), grads(f)):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


@built
def test_results_do_not_depend_on_thread_count():
    q, k, v, lengths = _attn_inputs(B=3, H=4, T=33, D=16)
    x, r, w, b = _rln_inputs(B=3, T=70, C=40)
    dout, dy = torch.randn_like(q), torch.randn_like(x)

    def run():
        ql = q.clone().requires_grad_()
        hs, pr = torch.ones(3, 4, requires_grad=True), torch.zeros(3, 4, requires_grad=True)
        xl, wl = x.clone().requires_grad_(), w.clone().requires_grad_()
        s, ps = torch.ones(3, requires_grad=True), torch.zeros(3, requires_grad=True)
        out = masked_attention(ql, k, v, hs, lengths, backend="cpp", abs_probe=pr)
        y = masked_residual_layernorm(xl, r, s, wl, b, backend="cpp", abs_probe=ps)
        res = [out, y, *torch.autograd.grad(out, [ql, hs, pr], dout), *torch.autograd.grad(y, [xl, wl, s, ps], dy)]
        return [t.detach() for t in res]

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(max(2, threads))
        many = run()
    finally:
        torch.set_num_threads(threads)
    for a, m in zip(one, many):
        assert torch.equal(a, m)


@built
def test_dropout_falls_back_to_the_torch_backend():
    q, k, v, lengths = _attn_inputs()
    hs = torch.ones(2, 3)
    torch.manual_seed(5)
    a = masked_attention(q, k, v, hs, lengths, dropout_p=0.2, backend="cpp")
    torch.manual_seed(5)
    b = masked_attention(q, k, v, hs, lengths, dropout_p=0.2, backend="torch")
    assert torch.equal(a, b)


def test_without_extension_the_torch_backend_serves():
    """What FASTTICKET_BUILD_EXT=0 leaves: no fastticket._C (an import blocked here) -> no "cpp", torch works."""
    code = (
        "import sys; sys.modules['fastticket._C'] = None\n"
        "import torch, fastticket as ft\n"
        "from fastticket.ops import available, masked_attention, masked_residual_layernorm\n"
        "assert 'cpp' not in available('masked_attention'), available('masked_attention')\n"
        "assert 'cpp' not in available('masked_residual_layernorm')\n"
        "q = torch.randn(2, 3, 5, 8, requires_grad=True); hs = torch.ones(2, 3, requires_grad=True)\n"
        "masked_attention(q, q, q, hs, torch.tensor([5, 2])).sum().backward()\n"
        "x = torch.randn(2, 5, 8, requires_grad=True)\n"
        "masked_residual_layernorm(x, x, torch.ones(2), torch.ones(8), torch.zeros(8)).sum().backward()\n"
        "assert hs.grad is not None and x.grad is not None\n"
        "print('ok')\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
