"""head_projection (ticket sharing's head tables), every registered backend, against an fp64 oracle.

Checked: outputs and the gradients of x, W and b for modes "in" (Q/K/V: live rows) and "out" (W_O: live
columns), odd shapes (rows 1, 17, 97, 129; widths not multiples of the tiles), head tables in any order,
with gaps, one head, no head at all; weight gradients exactly zero outside the live slices (bit-for-bit);
poisoned memory before each run; bit-identical repeats; the fp16 error rule; bad input.
"""

from __future__ import annotations

import pytest
import torch

from fastticket.ops import available, head_projection
from fastticket.ops.head_projection import head_rows

from ._helpers import assert_close_ref, assert_flash_rule, backend_devices, leaves, poison, randn, skip_unless_supported

OP = "head_projection"
CASES = backend_devices(OP, lambda dev: [torch.zeros(2, 8, device=dev), torch.zeros(8, 8, device=dev)])

# (rows, hidden, total heads, head dim, live heads)
SHAPES = [
    (1, 16, 4, 4, [2]),
    (17, 24, 6, 4, [5, 0, 3]),
    (97, 37, 3, 8, [0, 1, 2]),
    (129, 20, 5, 3, [4, 1]),
    (7, 12, 4, 5, []),
]


def test_backends_registered():
    assert "torch" in available(OP)


def oracle(x, w, b, heads, d, mode):
    rows = head_rows(torch.tensor(heads, dtype=torch.long), d)
    if mode == "in":
        return x @ w[rows].T + (b[rows] if b is not None else 0)
    return x @ w[:, rows].T + (b if b is not None else 0)


def make(rows, hidden, total, d, heads, mode, seed=0, leading=()):
    live = len(heads) * d
    if mode == "in":
        x = randn(leading + (rows, hidden), seed)
        w, b = randn((total * d, hidden), seed + 1, 0.3), randn((total * d,), seed + 2)
        g = randn(leading + (rows, live), seed + 3)
    else:
        x = randn(leading + (rows, live), seed)
        w, b = randn((hidden, total * d), seed + 1, 0.3), randn((hidden,), seed + 2)
        g = randn(leading + (rows, hidden), seed + 3)
    return x, w, b, g


def run(backend, device, x, w, b, g, heads, d, mode, dtype=torch.float32):
    xl, wl, bl = leaves(*(t.to(device, dtype) for t in (x, w, b)))
    poison(device, g.shape, w.shape, x.shape)
    out = head_projection(xl, wl, bl, torch.tensor(heads, dtype=torch.long), d, mode=mode, backend=backend)
    grads = torch.autograd.grad(out, [xl, wl, bl], grad_outputs=g.to(device, out.dtype), allow_unused=True)
    return out.detach().cpu(), [None if t is None else t.cpu() for t in grads]


def run_ref(x, w, b, g, heads, d, mode):
    xl, wl, bl = leaves(x, w, b)
    out = oracle(xl, wl, bl, heads, d, mode)
    grads = torch.autograd.grad(out, [xl, wl, bl], grad_outputs=g, allow_unused=True)
    return out.detach(), [torch.zeros_like(t) if gr is None else gr for t, gr in zip((x, w, b), grads)]


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("mode", ["in", "out"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-H{s[2]}-D{s[3]}-live{len(s[4])}")
def test_matches_fp64_reference_and_writes_only_live_slices(backend, device, mode, shape):
    rows, hidden, total, d, heads = shape
    x, w, b, g = make(rows, hidden, total, d, heads, mode, seed=rows)
    skip_unless_supported(pytest, OP, backend, x.float().to(device), w.float().to(device))
    out, grads = run(backend, device, x, w, b, g, heads, d, mode)
    ref_out, ref_grads = run_ref(x, w, b, g, heads, d, mode)
    assert_close_ref(out, ref_out, "out", mag=(float(x.abs().max()) if x.numel() else 0.0) * float(w.abs().max()) * max(x.shape[-1], 1))
    for name, actual, expected in zip(("dx", "dW", "db"), grads, ref_grads):
        assert_close_ref(actual, expected, name, mag=rows * 4.0)
    dead = torch.ones(w.shape[0] if mode == "in" else w.shape[1], dtype=torch.bool)
    dead[head_rows(torch.tensor(heads, dtype=torch.long), d)] = False
    dw = grads[1]
    assert torch.equal(dw[dead] if mode == "in" else dw[:, dead], torch.zeros_like(dw[dead] if mode == "in" else dw[:, dead]))
    if mode == "in":
        assert torch.equal(grads[2][dead], torch.zeros_like(grads[2][dead]))


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("mode", ["in", "out"])
def test_leading_dims_and_repeat_bit_identical(backend, device, mode):
    x, w, b, g = make(5, 20, 4, 4, [3, 1], mode, seed=7, leading=(3,))
    first = run(backend, device, x, w, b, g, [3, 1], 4, mode)
    second = run(backend, device, x, w, b, g, [3, 1], 4, mode)
    assert first[0].shape == g.shape
    assert torch.equal(first[0], second[0])
    assert all(torch.equal(a, c) for a, c in zip(first[1], second[1]))


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("mode", ["in", "out"])
def test_fp16_error_rule(backend, device, mode):
    x, w, b, g = make(33, 40, 5, 8, [4, 0, 2], mode, seed=3)
    skip_unless_supported(pytest, OP, backend, x.half().to(device), w.half().to(device))
    out, grads = run(backend, device, x, w, b, g, [4, 0, 2], 8, mode, dtype=torch.float16)
    # eager low-precision reference: the oracle evaluated in fp16 on fp16-rounded inputs (fp32 accumulate on CPU)
    xh, wh, bh = (t.half().double() for t in (x, w, b))
    ref_out, ref_grads = run_ref(x, w, b, g, [4, 0, 2], 8, mode)
    eager_out, eager_grads = run_ref(xh, wh, bh, g.half().double(), [4, 0, 2], 8, mode)
    eager_out, eager_grads = eager_out.half(), [t.half() for t in eager_grads]
    assert_flash_rule(out, eager_out, ref_out, "out", slack=2e-3)
    for name, a, e, r in zip(("dx", "dW", "db"), grads, eager_grads, ref_grads):
        assert_flash_rule(a, e, r, name, slack=2e-3)


@pytest.mark.parametrize("args, message", [
    (dict(mode="sideways"), "mode 'sideways'"),
    (dict(heads=torch.tensor([0, 0])), "distinct"),
    (dict(heads=torch.tensor([4])), "[0, 4)"),
    (dict(heads=torch.tensor([0.5])), "integer"),
    (dict(head_dim=3), "multiple of head_dim"),
    (dict(x=torch.zeros(2, 7)), "last dimension 7"),
])
def test_bad_input(args, message):
    kw = dict(x=torch.zeros(2, 8), weight=torch.zeros(16, 8), bias=torch.zeros(16), heads=torch.tensor([1, 3]),
              head_dim=4, mode="in")
    kw.update(args)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)").replace("(", r"\(")):
        head_projection(**kw)
