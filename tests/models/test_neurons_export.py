"""Exports of neuron-pruned (compact FFN) models: the compact format round trip, and the "hf" format, which
zero-fills pruned neurons' up/gate rows and down columns and loads in plain transformers with the same logits."""

from __future__ import annotations

import os

import pytest
import torch

import fastticket as ft
from fastticket.models import export, load_pruned
from fastticket.models.exporting import expanded_state_dict
from fastticket.tickets import Ticket
from fastticket.tickets.rewind import rewind, ticket_of

transformers = pytest.importorskip("transformers")

# post-norm (BERT, DistilBERT's lin1/lin2, DeBERTa), and the GeGLU family whose up/gate are fused in HF (ModernBERT)
FAMILIES = ["bert", "distilbert", "deberta-v3", "modernbert", "modernbert-mean-bias"]


def neuron_ticket(model, seed=0):
    """About half the neurons of every FFN but the last (pruned), some heads; I = the model's FFN width."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    heads = torch.rand(cfg.num_layers, cfg.num_heads, generator=g) > 0.3
    heads[:, 0] = True
    neurons = torch.rand(cfg.num_layers, cfg.intermediate_size, generator=g) > 0.5
    neurons[:, 0] = True
    ffn = torch.ones(cfg.num_layers, dtype=torch.bool)
    ffn[-1] = False
    return Ticket(heads, ffn, {}, neurons)


def inputs_of(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.mark.parametrize("family", FAMILIES)
def test_neuron_ticket_exports_compact_and_hf(family, hf_model, hf_batch, tmp_path):
    hf = hf_model(family)
    model = ft.load_model(hf)
    ticket = neuron_ticket(model)
    compact = rewind(model, ticket)
    batch = hf_batch(hf)
    with torch.no_grad():
        expected = model(**inputs_of(batch), head_mask=ticket.head_mask(), ffn_mask=ticket.ffn_mask(),
                         neuron_mask=ticket.neuron_mask()).logits

    export(compact, tmp_path / "compact")
    back = load_pruned(tmp_path / "compact")
    assert back.config.kept_neurons == compact.config.kept_neurons and ticket_of(back) == ticket
    with torch.no_grad():
        torch.testing.assert_close(back(**inputs_of(batch)).logits, expected, atol=1e-5, rtol=0)

    export(compact, tmp_path / "hf", format="hf")
    hf_back, info = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    with torch.no_grad():
        torch.testing.assert_close(hf_back.eval()(**inputs_of(batch)).logits, expected, atol=1e-5, rtol=0)
    assert os.path.getsize(tmp_path / "compact" / "model.safetensors") < os.path.getsize(tmp_path / "hf" / "model.safetensors")


def test_expanded_state_dict_zero_fills_pruned_neurons(hf_model):
    model = ft.load_model(hf_model("modernbert-mean-bias"))
    ticket = neuron_ticket(model, seed=3)
    full, state = model.state_dict(), expanded_state_dict(rewind(model, ticket))
    for l in range(model.num_layers - 1):
        kept = ticket.neurons[l]
        for name in ("up.weight", "up.bias", "gate.weight", "gate.bias"):
            key = f"layers.{l}.ffn.{name}"
            assert torch.equal(state[key][kept], full[key][kept]) and (state[key][~kept] == 0).all()
        key = f"layers.{l}.ffn.down.weight"
        assert torch.equal(state[key][:, kept], full[key][:, kept]) and (state[key][:, ~kept] == 0).all()
        assert torch.equal(state[f"layers.{l}.ffn.down.bias"], full[f"layers.{l}.ffn.down.bias"])
