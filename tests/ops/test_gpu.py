"""GPU checks (marked `gpu`; skipped without CUDA; `make gpu-check` runs them on a lent H100/H200): every op and
backend at production shapes in bf16/fp16 against an fp64 reference computed on the GPU, FlashAttention's
rule (error <= 2x the eager same-precision error + slack), bit-identical repeats, the auto rule on real CUDA
tensors, dropout reproducibility, the long backward path, window and bias, the fp32 (TF32) path.

Shapes: MiniLM (H12 D32), BERT-base (H12 D64), BERT-large (H16 D64) at T = 128; T = 512 (the long path);
DeBERTa's bias and ModernBERT's window at their shapes. Batches are kept small enough for an fp64 reference.
"""

from __future__ import annotations

import math

import pytest
import torch

from fastticket import reference as ref
from fastticket.ops import available, dispatch, head_projection, masked_attention, masked_residual_layernorm

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
DEV = "cuda"

# name: (B, H, T, D, extras)
ATTENTION = {
    "minilm-T128": (8, 12, 128, 32, {}), "bert-base-T128": (8, 12, 128, 64, {}), "bert-large-T128": (4, 16, 128, 64, {}),
    "bert-base-T512": (2, 12, 512, 64, {}), "bert-base-T200": (4, 12, 200, 64, {}),
    "deberta-T128-bias": (4, 12, 128, 64, {"bias": True}), "modernbert-T512-window": (2, 12, 512, 64, {"window": 64}),
    "head-dim-128": (2, 4, 96, 128, {}),
}


def _inputs(B, H, T, D, dtype, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    q, k, v, dout = (torch.randn(B, H, T, D, device=DEV, generator=g).to(dtype) for _ in range(4))
    lengths = torch.randint(T // 2, T + 1, (B,), device=DEV, generator=g)
    lengths[0] = T
    dout = dout * (torch.arange(T, device=DEV)[None, :] < lengths[:, None])[:, None, :, None]
    hs = (0.5 + torch.rand(B, H, device=DEV, generator=g))
    hs[-1, 1] = 0.0  # a pruned head
    return q, k, v, dout, lengths, hs


def _run(fn, q, k, v, dout, hs, bias, dtype):
    ql, kl, vl = (t.detach().to(dtype).requires_grad_(True) for t in (q, k, v))
    hsl = hs.detach().float().requires_grad_(True)
    bl = None if bias is None else bias.detach().to(dtype).requires_grad_(True)
    out = fn(ql, kl, vl, hsl, bl)
    inputs = [ql, kl, vl, hsl] + ([bl] if bl is not None else [])
    grads = torch.autograd.grad(out, inputs, dout.to(out.dtype))
    return [out.detach()] + [g.detach() for g in grads]


def _flash_rule(got, low, exact, real, name, slack):
    errs = []
    for i, (a, l, e) in enumerate(zip(got, low, exact)):
        mask = real if i == 0 else 1.0
        err = ((a.double() - e) * mask).abs().max().item()
        err_low = ((l.double() - e) * mask).abs().max().item()
        bound = 2 * err_low + slack * max((e * mask).abs().max().item(), 0.01)
        if not err <= bound:
            errs.append(f"{name}[{i}] {err:.3g} > {bound:.3g} (eager {err_low:.3g})")
    assert not errs, "; ".join(errs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", list(ATTENTION))
@pytest.mark.parametrize("backend", ["triton", "torch", "auto"])
def test_attention_flash_rule_and_repeats(backend, name, dtype):
    B, H, T, D, extra = ATTENTION[name]
    if backend == "triton" and "triton" not in available("masked_attention"):
        pytest.skip("triton is not installed")
    q, k, v, dout, lengths, hs = _inputs(B, H, T, D, dtype)
    bias = torch.randn(B, H, T, T, device=DEV) if extra.get("bias") else None
    window = extra.get("window")

    def op(q, k, v, hs, b):
        return masked_attention(q, k, v, hs, lengths, backend=backend, attn_bias=b, window=window)

    def oracle(q, k, v, hs, b):
        return ref.masked_attention(q, k, v, hs, lengths, attn_bias=b, window=window)

    got = _run(op, q, k, v, dout, hs, bias, dtype)
    exact = _run(oracle, q, k, v, dout.double(), hs, bias, torch.float64)
    low = _run(oracle, q, k, v, dout, hs, bias, dtype)
    real = (torch.arange(T, device=DEV)[None, :] < lengths[:, None])[:, None, :, None]
    _flash_rule(got, low, exact, real, f"{backend} {name}", 1e-3 if dtype == torch.float16 else 8e-3)
    again = _run(op, q, k, v, dout, hs, bias, dtype)
    assert all(torch.equal(a, b) for a, b in zip(got, again)), "repeat is not bit-identical"


def test_attention_fp32_tf32_path():
    """fp32 named triton computes in TF32: within TF32's error of the fp64 reference; auto sends fp32 to SDPA."""
    if "triton" not in available("masked_attention"):
        pytest.skip("triton is not installed")
    q, k, v, dout, lengths, hs = _inputs(4, 12, 128, 64, torch.float32)
    got = _run(lambda q, k, v, h, b: masked_attention(q, k, v, h, lengths, backend="triton"), q, k, v, dout, hs, None, torch.float32)
    exact = _run(lambda q, k, v, h, b: ref.masked_attention(q, k, v, h, lengths), q, k, v, dout.double(), hs, None, torch.float64)
    real = (torch.arange(128, device=DEV)[None, :] < lengths[:, None])[:, None, :, None]
    for i, (a, e) in enumerate(zip(got, exact)):
        m = real if i == 0 else 1.0
        assert ((a.double() - e) * m).abs().max() <= 5e-3 * max((e * m).abs().max().item(), 1.0), i
    x = q.requires_grad_(False)
    assert dispatch.resolve("masked_attention", "auto", x, x, x, mask_grad=True) is dispatch._registry["masked_attention"]["torch"].fn


def test_auto_rule_on_cuda():
    """bf16 on CUDA: the fused triton attention for a mask gradient, the vendor path (torch/SDPA) without."""
    if "triton" not in available("masked_attention"):
        pytest.skip("triton is not installed")
    x = torch.zeros(2, 3, 16, 64, device=DEV, dtype=torch.bfloat16)
    reg = dispatch._registry["masked_attention"]
    assert dispatch.resolve("masked_attention", "auto", x, x, x, mask_grad=True) is reg["triton"].fn
    assert dispatch.resolve("masked_attention", "auto", x, x, x, mask_grad=False) is reg["torch"].fn


def test_dropout_reproducible_on_gpu():
    q, k, v, dout, lengths, hs = _inputs(4, 12, 128, 64, torch.bfloat16)
    fn = lambda q, k, v, h, b: masked_attention(q, k, v, h, lengths, dropout_p=0.1, backend="triton")  # noqa: E731
    torch.manual_seed(3)
    a = _run(fn, q, k, v, dout, hs, None, torch.bfloat16)
    torch.manual_seed(3)
    b = _run(fn, q, k, v, dout, hs, None, torch.bfloat16)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("channels", [384, 768, 1024])
def test_residual_layernorm_every_backend(channels, dtype):
    g = torch.Generator(device=DEV).manual_seed(1)
    x, residual, dy = (torch.randn(16, 128, channels, device=DEV, generator=g) for _ in range(3))
    weight, bias = 1 + 0.1 * torch.randn(channels, device=DEV, generator=g), 0.1 * torch.randn(channels, device=DEV, generator=g)
    scale = 0.5 + torch.rand(16, device=DEV, generator=g)

    def run(backend, dt):
        xs = [t.detach().to(dt).requires_grad_(True) for t in (x, residual)]
        ws = [t.detach().to(dt if dt == torch.float64 else torch.float32).requires_grad_(True) for t in (weight, bias, scale)]
        fn = ref.masked_residual_layernorm if backend is None else \
            (lambda a, r, s, w, b: masked_residual_layernorm(a, r, s, w, b, backend=backend))
        y = fn(xs[0], xs[1], ws[2], ws[0], ws[1])
        return [y.detach()] + [d.detach() for d in torch.autograd.grad(y, xs + ws, dy.to(y.dtype))]

    exact, low = run(None, torch.float64), run(None, dtype)
    for backend in [b for b in available("masked_residual_layernorm") if b != "cpp"]:
        if backend == "cuda" and dtype == torch.float16:
            continue  # the CUDA extension computes fp32 / bf16 only
        got = run(backend, dtype)
        _flash_rule(got, low, exact, 1.0, f"{backend} C{channels}", 1e-3 if dtype == torch.float16 else 8e-3)
        assert all(torch.equal(a, b) for a, b in zip(got, run(backend, dtype))), f"{backend}: repeat differs"


def test_head_projection_triton_matches_torch():
    if "triton" not in available("head_projection"):
        pytest.skip("triton is not installed")
    x = torch.randn(8, 128, 768, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(768, 768, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    heads = torch.tensor([0, 3, 7, 11], device=DEV)
    outs = {}
    for backend in ("triton", "torch"):
        y = head_projection(x, w, None, heads, 64, "in", backend=backend)
        outs[backend] = [y.detach()] + list(torch.autograd.grad(y, [x, w], torch.ones_like(y)))
    for a, b in zip(outs["triton"], outs["torch"]):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=math.sqrt(768) * 2e-2)
