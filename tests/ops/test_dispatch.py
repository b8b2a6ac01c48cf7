"""Backend dispatch of the fused ops, and the argument checks every backend sits behind.

Checked: "auto" resolves (to the first registered backend in auto order that supports the tensors) and
matches that backend called by name; an unknown name, a known but unregistered name, and a registered
backend that does not support the tensors each raise one ValueError naming what is allowed / available;
register() rejects unknown backend names without touching the registry; wrong shapes of q/k/v,
head_scale, lengths, abs_probe, and of the LayerNorm op's x/residual/scale/weight/bias/abs_probe raise a
ValueError naming the bad shape, whatever the backend.
"""

from __future__ import annotations

import copy

import pytest
import torch

from fastticket.ops import BACKENDS, available, dispatch, masked_attention, masked_residual_layernorm, register

ATT, LN = "masked_attention", "masked_residual_layernorm"
B, H, T, D, C = 3, 5, 7, 8, 12


def att_inputs():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
    return q, k, v, torch.ones(H), torch.tensor([7, 1, 4])


def ln_inputs():
    g = torch.Generator().manual_seed(1)
    x, r = (torch.randn(B, T, C, generator=g) for _ in range(2))
    return x, r, torch.tensor(1.0), torch.ones(C), torch.zeros(C)


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, so fake backends never leak into other tests."""
    monkeypatch.setattr(dispatch, "_registry", copy.deepcopy(dispatch._registry))
    return dispatch._registry


# ----------------------------------------------------------------------------------------- resolution


def test_backend_names_and_torch_always_available():
    assert BACKENDS == dispatch.BACKENDS
    assert "torch" in BACKENDS
    for op in (ATT, LN):
        assert "torch" in available(op)
        assert set(available(op)) <= set(BACKENDS)
        assert list(available(op)) == [b for b in dispatch.AUTO_ORDER if b in available(op)]
    assert available("no_such_op") == ()


def _auto_name(op, *tensors):
    fn = dispatch.resolve(op, "auto", *tensors)
    names = [n for n, impl in dispatch._registry[op].items() if impl.fn is fn]
    assert names, "auto resolved to an unregistered function"
    return names[0]


def test_auto_resolves_and_matches_named_backend():
    q, k, v, hs, lengths = att_inputs()
    name = _auto_name(ATT, q, k, v)
    assert name in available(ATT)
    assert torch.equal(masked_attention(q, k, v, hs, lengths), masked_attention(q, k, v, hs, lengths, backend=name))
    x, r, s, w, b = ln_inputs()
    name = _auto_name(LN, x, r)
    assert name in available(LN)
    assert torch.equal(masked_residual_layernorm(x, r, s, w, b), masked_residual_layernorm(x, r, s, w, b, backend=name))


@pytest.mark.parametrize("bad", ["nonsense", "Torch", "", "cudnn"])
def test_unknown_backend_names_it_and_the_allowed(bad):
    q, k, v, hs, lengths = att_inputs()
    with pytest.raises(ValueError) as e:
        masked_attention(q, k, v, hs, lengths, backend=bad)
    msg = str(e.value)
    assert repr(bad) in msg and "auto" in msg and all(b in msg for b in BACKENDS)
    x, r, s, w, b = ln_inputs()
    with pytest.raises(ValueError) as e:
        masked_residual_layernorm(x, r, s, w, b, backend=bad)
    assert repr(bad) in str(e.value) and all(name in str(e.value) for name in BACKENDS)


@pytest.mark.parametrize("op", [ATT, LN])
@pytest.mark.parametrize("name", [b for b in BACKENDS if b not in available(ATT) or b not in available(LN)])
def test_known_but_unregistered_backend_lists_available(op, name):
    if name in available(op):
        pytest.skip(f"{name} is registered for {op} here")
    _expect_unavailable(op, name)


@pytest.mark.parametrize("op", [ATT, LN])
def test_unregistered_backend_with_only_torch(registry, op):
    """The same, made certain: a registry holding only the torch backend."""
    for other in [b for b in BACKENDS if b != "torch"]:
        registry[op].pop(other, None)
    assert available(op) == ("torch",)
    for name in BACKENDS:
        if name != "torch":
            _expect_unavailable(op, name)


def _expect_unavailable(op, name):
    if op == ATT:
        q, k, v, hs, lengths = att_inputs()
        call = lambda: masked_attention(q, k, v, hs, lengths, backend=name)  # noqa: E731
    else:
        x, r, s, w, b = ln_inputs()
        call = lambda: masked_residual_layernorm(x, r, s, w, b, backend=name)  # noqa: E731
    with pytest.raises(ValueError) as e:
        call()
    msg = str(e.value)
    assert repr(name) in msg and all(a in msg for a in available(op)), msg


@pytest.mark.parametrize("bad", ["nonsense", "auto", "TORCH", ""])
def test_register_rejects_unknown_backend(registry, bad):
    before = copy.deepcopy(registry)
    with pytest.raises(ValueError, match="backend"):
        register(ATT, bad, lambda *a: None)
    assert registry == before


def _counting_torch_backend(registry):
    """(calls, fn): the torch implementation of masked_attention that records each call in `calls`."""
    calls, torch_fn = [], registry[ATT]["torch"].fn

    def fake(*args):
        calls.append("fake")
        return torch_fn(*args)

    return calls, fake


def test_auto_order_and_supports(registry):
    """auto takes the first backend in auto order whose supports() accepts the tensors; explicit names must
    support them; available() follows auto order whatever the registration order."""
    q, k, v, hs, lengths = att_inputs()
    calls, fake = _counting_torch_backend(registry)

    # registered after torch, yet first in auto order
    register(ATT, "triton", fake, supports=lambda *t: False)
    assert available(ATT)[0] == "triton" and available(ATT)[-1] == "torch"
    masked_attention(q, k, v, hs, lengths)
    assert calls == [], "auto chose a backend that does not support the inputs"
    with pytest.raises(ValueError) as e:
        masked_attention(q, k, v, hs, lengths, backend="triton")
    assert "'triton'" in str(e.value) and "torch" in str(e.value)

    register(ATT, "triton", fake, supports=lambda *t: all(x.dtype == torch.float32 for x in t))
    out = masked_attention(q, k, v, hs, lengths)
    assert calls == ["fake"]
    masked_attention(q.double(), k.double(), v.double(), hs.double(), lengths)
    assert calls == ["fake"], "auto ignored supports()"
    assert torch.equal(out, masked_attention(q, k, v, hs, lengths, backend="torch"))


def test_auto_skips_a_backend_that_only_supports(registry):
    """A backend that can run the tensors (explicit name works) but does not prefer them is not auto's pick."""
    q, k, v, hs, lengths = att_inputs()
    calls, fake = _counting_torch_backend(registry)

    register(ATT, "triton", fake, supports=lambda *t: True, prefers=lambda *t: False)
    masked_attention(q, k, v, hs, lengths)
    assert calls == []
    masked_attention(q, k, v, hs, lengths, backend="triton")
    assert calls == ["fake"]


def test_auto_with_no_supporting_backend(registry):
    q, k, v, hs, lengths = att_inputs()
    torch_fn = registry[ATT]["torch"].fn
    registry[ATT] = {}
    register(ATT, "torch", torch_fn, supports=lambda *t: False)
    with pytest.raises(ValueError, match="no backend"):
        masked_attention(q, k, v, hs, lengths)


# ------------------------------------------------------------------------- auto's mask-gradient rule


def test_mask_grad_only_backend_serves_auto_only_when_a_mask_gradient_is_needed(registry):
    """A backend registered only_with_mask_grad (the fused Triton attention on CUDA) is auto's pick for a
    head_scale that requires grad or an abs_probe; without either (full fine-tuning, compact tickets,
    evaluation, no_grad) auto takes the next backend (the vendor path)."""
    q, k, v, hs, lengths = att_inputs()
    calls, fake = _counting_torch_backend(registry)
    register(ATT, "triton", fake, supports=lambda *t: True, prefers=lambda *t: True, only_with_mask_grad=True)
    masked_attention(q, k, v, hs, lengths)  # head_scale needs no grad
    masked_attention(q, k, v, None, lengths)
    with torch.no_grad():
        masked_attention(q, k, v, hs.requires_grad_(True), lengths)
    assert calls == []
    masked_attention(q, k, v, hs.requires_grad_(True), lengths)
    masked_attention(q, k, v, None, lengths, abs_probe=torch.zeros(B, H, requires_grad=True))
    assert calls == ["fake", "fake"]
    masked_attention(q, k, v, None, lengths, backend="triton")  # a named backend is always honoured
    assert calls == ["fake"] * 3


@pytest.mark.parametrize("head_scale,probe,grad,expected", [
    (None, False, True, False), ("plain", False, True, False), ("grad", False, True, True),
    ("grad", False, False, False), (None, True, True, True), (None, True, False, True)])
def test_needs_mask_grad(head_scale, probe, grad, expected):
    from fastticket.ops.attention import needs_mask_grad

    hs = None if head_scale is None else torch.ones(H, requires_grad=head_scale == "grad")
    with torch.set_grad_enabled(grad):
        assert needs_mask_grad(hs, torch.zeros(B, H) if probe else None) is expected


def test_triton_prefers_cuda_half_precision_only(monkeypatch):
    """auto's device rule for the Triton kernels: CUDA fp16/bf16; fp32 on CUDA goes to SDPA (exact, where the
    kernels would compute in TF32), CPU tensors never (the interpreter is for tests)."""
    from types import SimpleNamespace

    from fastticket.ops import triton_backend as tb

    monkeypatch.setattr(tb, "interpreting", lambda: False)
    cuda = lambda dtype: SimpleNamespace(is_cuda=True, dtype=dtype, device=SimpleNamespace(type="cuda"))  # noqa: E731
    assert tb.prefers(cuda(torch.bfloat16), cuda(torch.float16)) == tb.HAS_TRITON
    assert not tb.prefers(cuda(torch.float32)) and not tb.prefers(torch.zeros(1, dtype=torch.float16))
    assert tb.supports(cuda(torch.float32)) == tb.HAS_TRITON  # named: served, in TF32
    monkeypatch.setattr(tb, "interpreting", lambda: True)
    assert not tb.prefers(cuda(torch.bfloat16))


def test_cpu_rule_cpp_with_or_without_mask_grad():
    """On CPU auto takes the compiled cpp attention whether or not a mask gradient is needed (measured no
    slower than SDPA forward, faster forward + backward: README design notes); torch for what cpp lacks."""
    from fastticket.ops import cpp_backend

    if not cpp_backend.AVAILABLE:
        pytest.skip("fastticket._C is not built")
    q, k, v, hs, lengths = att_inputs()
    for mask_grad in (True, False):
        assert dispatch.resolve(ATT, "auto", q, k, v, mask_grad=mask_grad) is cpp_backend.cpp_masked_attention
    half = q.half()
    assert dispatch.resolve(ATT, "auto", half, half, half, mask_grad=True) is dispatch._registry[ATT]["torch"].fn


# ------------------------------------------------------------------------------- argument checks


def _raises_naming(fn, *bad_shapes):
    with pytest.raises(ValueError) as e:
        fn()
    msg = str(e.value)
    for shape in bad_shapes:
        assert str(tuple(shape)) in msg, f"message does not name {tuple(shape)}: {msg}"
    return msg


BACKEND_ARGS = ["auto", *available(ATT)]


@pytest.mark.parametrize("backend", BACKEND_ARGS)
@pytest.mark.parametrize(
    "which,shape",
    [("q", (B, H, T)), ("q", (B, H, T, D, 1)), ("k", (B, H, T + 1, D)), ("v", (B, H, T, D + 1)), ("k", (B, H + 1, T, D)), ("v", (B + 1, H, T, D))],
)
def test_attention_qkv_shapes(backend, which, shape):
    q, k, v, hs, lengths = att_inputs()
    args = {"q": q, "k": k, "v": v}
    args[which] = torch.randn(shape)
    _raises_naming(lambda: masked_attention(args["q"], args["k"], args["v"], None, None, backend=backend), shape)


@pytest.mark.parametrize("backend", BACKEND_ARGS)
@pytest.mark.parametrize("shape", [(H + 1,), (B, H + 1), (B + 1, H), (B, H, T), (1, H), (), (H, B)])
def test_attention_head_scale_shapes(backend, shape):
    q, k, v, _, lengths = att_inputs()
    _raises_naming(lambda: masked_attention(q, k, v, torch.ones(shape), lengths, backend=backend), shape)


@pytest.mark.parametrize("backend", BACKEND_ARGS)
@pytest.mark.parametrize("shape", [(B + 1,), (B, 1), (1,), (), (B, T)])
def test_attention_lengths_shapes(backend, shape):
    q, k, v, hs, _ = att_inputs()
    _raises_naming(lambda: masked_attention(q, k, v, hs, torch.ones(shape, dtype=torch.int64), backend=backend), shape)


@pytest.mark.parametrize("backend", BACKEND_ARGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bool])
def test_attention_lengths_must_be_integer(backend, dtype):
    q, k, v, hs, _ = att_inputs()
    with pytest.raises(ValueError, match="lengths"):
        masked_attention(q, k, v, hs, torch.ones(B, dtype=dtype), backend=backend)


@pytest.mark.parametrize("backend", BACKEND_ARGS)
@pytest.mark.parametrize("shape", [(H,), (B, H + 1), (B + 1, H), (B, H, 1), (B,)])
def test_attention_abs_probe_shapes(backend, shape):
    q, k, v, hs, lengths = att_inputs()
    probe = torch.zeros(shape, requires_grad=True)
    _raises_naming(lambda: masked_attention(q, k, v, hs, lengths, backend=backend, abs_probe=probe), shape)


@pytest.mark.parametrize("backend", ["auto", *available(LN)])
@pytest.mark.parametrize(
    "which,shape",
    [
        ("x", (B, T)),
        ("x", (B, T, C, 1)),
        ("residual", (B, T, C + 1)),
        ("residual", (B, T + 1, C)),
        ("scale", (B + 1,)),
        ("scale", (B, 1)),
        ("scale", (B, T)),
        ("scale", (1,)),
        ("weight", (C + 1,)),
        ("weight", (1, C)),
        ("bias", (C - 1,)),
        ("abs_probe", (B, 1)),
        ("abs_probe", (B + 1,)),
        ("abs_probe", ()),
    ],
)
def test_layernorm_shapes(backend, which, shape):
    x, r, s, w, b = ln_inputs()
    args = {"x": x, "residual": r, "scale": s, "weight": w, "bias": b, "abs_probe": None}
    args[which] = torch.randn(shape) if which != "abs_probe" else torch.zeros(shape, requires_grad=True)
    _raises_naming(lambda: masked_residual_layernorm(**args, backend=backend), shape)


@pytest.mark.parametrize("backend", BACKEND_ARGS)
@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_attention_mixed_dtypes_are_one_value_error(backend, which):
    """A mixed-dtype call (e.g. half q/k/v from autocast next to an fp32 one) is one ValueError naming the
    dtypes, whatever the backend: never a kernel's compile assertion."""
    q, k, v, hs, lengths = att_inputs()
    args = {"q": q, "k": k, "v": v}
    args[which] = args[which].half()
    with pytest.raises(ValueError, match=r"dtypes .*float16.*allowed: one floating-point dtype"):
        masked_attention(args["q"], args["k"], args["v"], hs, lengths, backend=backend)
