"""Ticket sharing on the families with positions (DeBERTa's relative embeddings and pos_q/pos_k, ModernBERT's
rotary tables, GeGLU, pre-norm, final norm): the head-table forward equals the masked full model, and a
task's masked Adamax step changes nothing its ticket masks (every parameter that receives a gradient is in
live_slices, and only its live part moves)."""

from __future__ import annotations

import copy

import pytest
import torch

import fastticket as ft
from fastticket.data.task import Task
from fastticket.tickets.sharing import MaskedAdamax, build_shared, live_slices
from tests.helpers import tokenized_dataset

from .conftest import make_hf_model

FAMILIES = ["deberta-v3", "deberta-v2", "modernbert", "modernbert-mean-bias"]


def _setup(family):
    model = ft.load_model(make_hf_model(family, num_labels=2))
    L, H = model.num_layers, model.num_heads
    a, b = torch.ones(L, H, dtype=torch.bool), torch.zeros(L, H, dtype=torch.bool)
    a[0, 1] = False
    b[:, 0] = True
    b[L - 1, 2] = True
    ffn_b = torch.ones(L, dtype=torch.bool)
    ffn_b[0] = False
    tickets = {"a": ft.Ticket(a, torch.ones(L, dtype=torch.bool)), "b": ft.Ticket(b, ffn_b)}
    vocab = model.config.vocab_size
    tasks = {n: Task(name=n, train=tokenized_dataset(12, seed=i, num_labels=2, vocab=vocab),
                     dev=tokenized_dataset(6, seed=i + 9, num_labels=2, vocab=vocab), metric="accuracy", num_labels=2)
             for i, n in enumerate(tickets)}
    return model, tasks, tickets


def _batch(task):
    batch = next(iter(ft.data.batching.iterate_batches(task.train.select(range(5)), 5)))
    batch.pop("token_type_ids", None)
    return batch


@pytest.mark.parametrize("family", FAMILIES)
def test_head_table_forward_equals_the_masked_model(family):
    model, tasks, tickets = _setup(family)
    shared = build_shared(model, tasks, tickets).eval()
    for name, ticket in tickets.items():
        batch = _batch(tasks[name])
        batch.pop("labels")
        logits, _ = shared(name, **batch)
        compat, _ = shared(name, **batch, compat="mtdnn")
        full = copy.deepcopy(model)
        full.head = shared.task_model(name, ticket=False).head
        masked = full(**batch, head_mask=ticket.head_mask(), ffn_mask=ticket.ffn_mask()).logits
        standalone = shared.task_model(name)(**batch).logits
        for other in (compat, masked, standalone):
            torch.testing.assert_close(logits, other, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_task_step_moves_only_its_live_slices(family):
    model, tasks, tickets = _setup(family)
    shared = build_shared(model, tasks, tickets)
    shared.train()
    _, loss = shared("b", **_batch(tasks["b"]))
    loss.backward()
    live = {id(s.param): s for s in live_slices(shared, "b")}
    for n, p in shared.named_parameters():
        if p.grad is not None and p.grad.abs().sum() > 0:
            assert id(p) in live, f"{n} receives a gradient but is not in live_slices"
    before = {n: p.detach().clone() for n, p in shared.named_parameters()}
    MaskedAdamax(lr=1e-2, weight_decay=0.1).step(list(live.values()))
    for n, p in shared.named_parameters():
        s = live.get(id(p))
        dead = torch.ones_like(p, dtype=torch.bool)
        if s is not None:
            dead[...] = False if s.dim is None else dead.index_fill_(s.dim, s.index, False)
        assert torch.equal(p.detach()[dead], before[n][dead]), f"{n}: a value task b masks changed"
    att = shared.encoder.layers[0].attention
    positions = [lin for lin in (att.pos_q, att.pos_k) if lin is not None]
    for lin in positions:  # DeBERTa's own position projections: only b's head rows are live
        assert lin.weight.grad is not None and any(s.param is lin.weight and s.dim == 0 for s in live.values())
