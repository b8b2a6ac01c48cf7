"""Launch and copy budget: what one encoder layer and one fused op cost in kernel launches and full-tensor
copies, counted with a TorchDispatchMode (aten ops that launch a kernel: neither views nor allocations) plus
the triton backend's own launches (its `launch` function), on a model built through the public API
(ft.load_model of a tiny random BertForSequenceClassification, importance mode: per-example masks that
require grad, frozen weights, right padding).

Per layer = the counts of a 3-layer model minus those of a 2-layer one (embeddings, head and loss cancel).
A full-tensor copy is a copy-like op (copy_, clone, _to_copy, cat, stack) writing at least B·T·C elements.

Budgets (the design): no full-tensor copy in any backend, forward or backward (q/k/v and dout are read in
place through their strides, outputs are written in the layout the model reshapes for free); the fused
attention is ONE launch forward and ONE backward (T <= 256: dξ and Σ|r_t| come out of the kernel, no
reduction launch), the fused residual LayerNorm one each plus the mask-gradient sum. The layer totals
also hold what the encoder does around the ops (six projections, GELU, the attention sublayer's unfused
residual + LayerNorm, the mask slices' select_backward); they are upper bounds.
"""

from __future__ import annotations

import collections
import contextlib
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastticket as ft
from fastticket.ops import available, masked_attention, masked_residual_layernorm
from fastticket.ops import triton_backend as tb

NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach", "alias", "lift_fresh",
             "_local_scalar_dense", "set_", "resize_"}
COPIES = {"copy_", "clone", "_to_copy", "cat", "stack"}
B, T, H, C = 2, 16, 4, 64

# per layer: (backend, phase) -> (max launches incl. triton's, full-tensor copies)
LAYER_BUDGET = {("torch", "fwd"): (19, 0), ("torch", "bwd"): (26, 0), ("triton", "fwd"): (11, 0),
                ("triton", "bwd"): (19, 0), ("cpp", "fwd"): (13, 0), ("cpp", "bwd"): (18, 0)}


@pytest.fixture(autouse=True)
def poisoned_triton_buffers():
    """Overrides tests/ops/conftest.py: poisoning fills buffers, which would count as launches here."""


class Counter(TorchDispatchMode):
    """Kernel-launching aten ops by name, and the full-tensor copies among them; paused inside triton
    launches (the interpreter copies arguments around, a GPU does not)."""

    def __init__(self, big: int):
        super().__init__()
        self.big, self.paused = big, False
        self.ops, self.copies, self.triton = collections.Counter(), collections.Counter(), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = [o for o in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(o, torch.Tensor)]
        name = func.overloadpacket.__name__
        if self.paused or func.is_view or name in NO_KERNEL or not outs:
            return out
        self.ops[name] += 1
        if name in COPIES and any(o.numel() >= self.big for o in outs):
            self.copies[name] += 1
        return out

    def launches(self) -> int:
        return sum(self.ops.values()) + self.triton


@contextlib.contextmanager
def counting(monkeypatch, big=B * T * C):
    counter = Counter(big)
    real = tb.launch

    def counted(kernel, grid, *args, **meta):
        counter.triton += 1
        counter.paused = True
        try:
            real(kernel, grid, *args, **meta)
        finally:
            counter.paused = False

    monkeypatch.setattr(tb, "launch", counted)
    with counter:
        yield counter


def _model(layers: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=C, num_hidden_layers=layers, num_attention_heads=H,
                        intermediate_size=2 * C, max_position_embeddings=64)
    model = ft.load_model(BertForSequenceClassification(config), num_labels=2).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _layer_counts(monkeypatch, layers, backend, phase):
    model = _model(layers)
    ids = torch.randint(1, 100, (B, T), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 9:] = 0
    head_mask = torch.ones(B, layers, H, requires_grad=True)
    ffn_mask = torch.ones(B, layers, requires_grad=True)
    run = lambda: model(ids, mask, head_mask=head_mask, ffn_mask=ffn_mask, backend=backend, labels=torch.tensor([0, 1]))  # noqa: E731
    if phase == "fwd":
        with counting(monkeypatch) as c:
            run()
    else:
        loss = run().loss
        with counting(monkeypatch) as c:
            loss.backward()
    return c


def _backends():
    out = ["torch"] + [b for b in ("cpp",) if b in available("masked_attention")]
    if "triton" in available("masked_attention") and os.environ.get("TRITON_INTERPRET") == "1":
        out.append("triton")
    return out


@pytest.mark.parametrize("phase", ["fwd", "bwd"])
@pytest.mark.parametrize("backend", _backends())
def test_layer_budget(monkeypatch, backend, phase):
    two, three = (_layer_counts(monkeypatch, n, backend, phase) for n in (2, 3))
    launches = three.launches() - two.launches()
    copies = three.copies - two.copies
    max_launches, max_copies = LAYER_BUDGET[(backend, phase)]
    detail = dict(sorted((three.ops - two.ops).items()))
    assert sum(copies.values()) <= max_copies, f"full-tensor copies per layer: {dict(copies)}"
    assert launches <= max_launches, f"{launches} launches per layer > {max_launches}: {detail}, triton {three.triton - two.triton}"


@pytest.mark.skipif("triton" not in _backends(), reason="triton under TRITON_INTERPRET only")
@pytest.mark.parametrize("seq,launches_bwd,sums_bwd", [(17, 1, 0), (257, 3, 2)], ids=["fused", "long-path"])
def test_attention_op_budget(monkeypatch, seq, launches_bwd, sums_bwd):
    """The triton attention as the encoder calls it: one launch forward; backward one (T <= 256: dξ comes out
    of the kernel) or three plus the two partial-sum reductions (T > 256); no other kernel, no copy."""
    heads, dim = 2, 16
    proj = [torch.randn(B, seq, heads * dim, requires_grad=True) for _ in range(3)]
    q, k, v = (p.view(B, seq, heads, dim).transpose(1, 2) for p in proj)
    hs = torch.ones(B, heads, requires_grad=True)
    lengths = torch.tensor([seq, seq // 2])
    with counting(monkeypatch, big=B * seq * heads * dim) as fwd:
        out = masked_attention(q, k, v, hs, lengths, backend="triton")
        ctx = out.transpose(1, 2).reshape(B, seq, heads * dim)
    assert (fwd.triton, sum(fwd.ops.values()), sum(fwd.copies.values())) == (1, 0, 0), (fwd.triton, fwd.ops)
    dout = torch.randn(B, seq, heads * dim)
    with counting(monkeypatch, big=B * seq * heads * dim) as bwd:
        ctx.backward(dout)
    assert bwd.triton == launches_bwd and sum(bwd.copies.values()) == 0, (bwd.triton, bwd.ops)
    assert sum(bwd.ops.values()) == sums_bwd and set(bwd.ops) <= {"sum"}, bwd.ops


@pytest.mark.skipif("triton" not in _backends(), reason="triton under TRITON_INTERPRET only")
def test_residual_layernorm_op_budget(monkeypatch):
    """The triton residual LayerNorm: one launch forward; backward one plus the dν sum, no copy."""
    x, residual = (torch.randn(B, T, C, requires_grad=True) for _ in range(2))
    scale = torch.empty_strided((B,), (3,)).fill_(1.0).requires_grad_(True)  # strided, as a mask column
    weight, bias = torch.ones(C), torch.zeros(C)
    dy = torch.randn(B, T, C)
    with counting(monkeypatch) as fwd:
        y = masked_residual_layernorm(x, residual, scale, weight, bias, backend="triton")
    assert (fwd.triton, sum(fwd.ops.values()), sum(fwd.copies.values())) == (1, 0, 0), (fwd.triton, fwd.ops)
    with counting(monkeypatch) as bwd:
        y.backward(dy)
    assert bwd.triton == 1 and sum(bwd.copies.values()) == 0 and set(bwd.ops) <= {"sum"}, (bwd.triton, bwd.ops)
