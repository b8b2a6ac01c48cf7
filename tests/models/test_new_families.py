"""DeBERTa-v2/v3 and ModernBERT against Hugging Face on tiny random configs (fp32, eval, right padding):
logits, loss and every parameter gradient; masks against hand-edited HF models; importance against a
single-example loop; rewind compact == masked; hf / compact exports; search end to end."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import fastticket as ft
from fastticket.models.convert import hf_tensors
from fastticket.tickets import Ticket
from fastticket.tickets.rewind import rewind
from tests.helpers import tokenized_dataset

from .conftest import make_batch, make_hf_model, requires

transformers = pytest.importorskip("transformers")

NEW = ["deberta-v3", "deberta-v2", "deberta-c2p", "modernbert", "modernbert-mean-bias"]
ATOL = 1e-5
H, D = 4, 8
LENGTHS = (9, 5, 2, 7)  # longer than the relative buckets and the local window


def load(hf, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a new task head: tested in test_loading
        return ft.load_model(hf, **kw)


def inputs(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


def hf_layers(hf):
    base = hf.base_model
    return base.encoder.layer if hasattr(base, "encoder") else base.layers


def w_o(layer):  # the attention output projection W_O
    return layer.attn.Wo if hasattr(layer, "attn") else layer.attention.output.dense


def ffn_down(layer):  # the FFN's last linear layer (its output is what ν scales)
    return layer.mlp.Wo if hasattr(layer, "mlp") else layer.output.dense


@pytest.mark.parametrize("family", NEW)
@pytest.mark.parametrize("num_labels", [3, 1])
def test_logits_and_loss_match_hf(family, num_labels):
    hf = make_hf_model(family, num_labels=num_labels)
    ours = load(hf)
    batch = make_batch(hf, lengths=LENGTHS)
    with torch.no_grad():
        expected, got = hf(**batch), ours(**batch)
    # HF's DeBERTa returns regression logits flattened to [B]; ours are [B, 1] like every family's
    torch.testing.assert_close(got.logits, expected.logits.reshape(len(LENGTHS), num_labels), atol=ATOL, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=ATOL, rtol=1e-6)


@pytest.mark.parametrize("family", ["deberta-v3", "modernbert"])
def test_directory_matches_hf(family, tmp_path):
    hf = make_hf_model(family)
    hf.save_pretrained(tmp_path)
    ours = ft.load_model(tmp_path)
    batch = make_batch(hf, lengths=LENGTHS, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, hf(**batch).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", NEW)
def test_every_parameter_gradient_matches_hf(family):
    hf = make_hf_model(family)
    ours = load(hf)
    batch = make_batch(hf, lengths=LENGTHS)
    hf(**batch).loss.backward()
    ours(**batch).loss.backward()
    mine = hf_tensors({n: p.grad for n, p in ours.named_parameters()}, ours.config)  # fused like HF's
    theirs = {n: p.grad for n, p in hf.named_parameters()}
    assert set(mine) == set(theirs)
    for name, grad in theirs.items():
        torch.testing.assert_close(mine[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert all(g.abs().sum() > 0 for n, g in theirs.items() if "embeddings" not in n)


@pytest.mark.parametrize("family", NEW)
def test_zero_head_mask_equals_zeroed_wo_columns(family):
    hf = make_hf_model(family)
    batch = make_batch(hf, lengths=LENGTHS)
    ours = load(hf)
    layers = len(hf_layers(hf))
    pruned = {(0, 1), (1, 0), (1, 3), (layers - 1, 2)}
    head_mask = torch.ones(layers, H)
    edited = copy.deepcopy(hf)
    with torch.no_grad():
        for l, h in pruned:
            head_mask[l, h] = 0
            w_o(hf_layers(edited)[l]).weight[:, h * D: (h + 1) * D] = 0  # the bias (if any) stays
        expected = edited(**batch)
        got = ours(**batch, head_mask=head_mask)
        unmasked = ours(**batch).logits
    torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=ATOL, rtol=0)
    assert (got.logits - unmasked).abs().max() > 1e-4  # the mask does something


@pytest.mark.parametrize("family", NEW)
def test_zero_ffn_mask_equals_zeroed_ffn_output(family):
    hf = make_hf_model(family)
    batch = make_batch(hf, lengths=LENGTHS)
    ours = load(hf)
    layers = len(hf_layers(hf))
    edited = copy.deepcopy(hf)
    with torch.no_grad():
        down = ffn_down(hf_layers(edited)[1])
        down.weight.zero_()
        if down.bias is not None:
            down.bias.zero_()  # post-norm: LayerNorm(x); pre-norm: x
        expected = edited(**batch).logits
        ffn_mask = torch.ones(len(LENGTHS), layers)
        ffn_mask[0, 1] = 0  # per example: only row 0 has the FFN of layer 1 pruned
        got = ours(**batch, ffn_mask=ffn_mask).logits
        full = hf(**batch).logits
    torch.testing.assert_close(got[0], expected[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[1:], full[1:], atol=ATOL, rtol=0)
    assert (expected[0] - full[0]).abs().max() > 1e-4


@pytest.mark.parametrize("family", ["deberta-v2", "modernbert-mean-bias"])
def test_fractional_mask_gradients_match_hooked_hf(family):
    """ξ scales W_O's input per head, ν the FFN output: hooks on the HF model do the same, gradients agree."""
    hf = make_hf_model(family)
    batch = make_batch(hf, lengths=LENGTHS)
    ours = load(hf)
    layers = len(hf_layers(hf))
    gen = torch.Generator().manual_seed(1)
    head_mask, ffn_mask = torch.rand(len(LENGTHS), layers, H, generator=gen), torch.rand(layers, generator=gen)
    xi, nu = head_mask.clone().requires_grad_(), ffn_mask.clone().requires_grad_()
    handles = []
    for l, layer in enumerate(hf_layers(hf)):
        handles.append(w_o(layer).register_forward_pre_hook(
            lambda m, args, l=l: (args[0] * xi[:, l].repeat_interleave(D, dim=-1)[:, None, :],)))
        handles.append(ffn_down(layer).register_forward_hook(lambda m, args, out, l=l: out * nu[l]))
    try:
        expected = hf(**batch)
    finally:
        for handle in handles:
            handle.remove()
    expected.loss.backward()
    head, ffn = head_mask.clone().requires_grad_(), ffn_mask.clone().requires_grad_()
    got = ours(**batch, head_mask=head, ffn_mask=ffn)
    got.loss.backward()
    torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(head.grad, xi.grad, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(ffn.grad, nu.grad, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("family", ["deberta-v3", "deberta-v2", "modernbert", "modernbert-mean-bias"])
def test_importance_equals_single_example_loop(family):
    ours = load(make_hf_model(family), num_labels=2)
    cfg = ours.config
    data = tokenized_dataset(n=7, num_labels=2, min_len=3, max_len=12, pairs=cfg.type_vocab_size > 1)
    heads, ffn = [], []
    for row in data:  # one example alone, unpadded: the definition
        head_mask = torch.ones(cfg.num_layers, cfg.num_heads, requires_grad=True)
        ffn_mask = torch.ones(cfg.num_layers, requires_grad=True)
        out = ours(torch.tensor([row["input_ids"]]), token_type_ids=torch.tensor([row["token_type_ids"]]),
                   labels=torch.tensor([row["labels"]]), head_mask=head_mask, ffn_mask=ffn_mask, backend="torch")
        out.loss.backward()
        heads.append(head_mask.grad.abs().double())
        ffn.append(ffn_mask.grad.abs().double())
    scores = ft.importance(ours, data, batch_size=3, progress=False)  # padded batches
    torch.testing.assert_close(scores.heads, torch.stack(heads).mean(0), atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(scores.ffn, torch.stack(ffn).mean(0), atol=1e-7, rtol=1e-5)
    assert (scores.heads > 0).all() and (scores.ffn > 0).all()


def ticket_for(layers):
    """Layer 0 keeps heads 0 and 3, layer 1 keeps none, later layers keep 1 and 2; only layer 0 keeps its FFN."""
    kept = torch.zeros(layers, H, dtype=torch.bool)
    kept[0, [0, 3]] = True
    kept[2:, 1:3] = True
    ffn = torch.zeros(layers, dtype=torch.bool)
    ffn[0] = True
    return Ticket(kept, ffn)


@pytest.mark.parametrize("family", NEW)
def test_rewind_compact_equals_masked(family):
    ours = load(make_hf_model(family))
    ticket = ticket_for(ours.num_layers)
    compact = rewind(ours, ticket)
    batch = make_batch(ours, lengths=LENGTHS)  # reads pad_token_id, type_vocab_size, num_labels
    masked = ours(**batch, head_mask=ticket.head_mask(), ffn_mask=ticket.ffn_mask())
    small = compact(**batch)
    torch.testing.assert_close(small.logits, masked.logits, atol=ATOL, rtol=0)
    masked.loss.backward()
    small.loss.backward()
    full_att, small_att = ours.layers[0].attention, compact.layers[0].attention
    rows = torch.cat([torch.arange(h * D, (h + 1) * D) for h in (0, 3)])
    for name in ("q", "k", "v", "pos_q", "pos_k"):
        if getattr(full_att, name) is not None:
            torch.testing.assert_close(getattr(small_att, name).weight.grad, getattr(full_att, name).weight.grad[rows],
                                       atol=1e-6, rtol=1e-5)
    assert sum(p.numel() for p in compact.parameters()) < sum(p.numel() for p in ours.parameters())
    assert compact.layers[1].attention.q is None and compact.layers[1].ffn.up is None


@pytest.mark.parametrize("family", NEW)
def test_hf_and_compact_exports(family, tmp_path):
    hf = make_hf_model(family)
    ours = load(hf)
    ticket = ticket_for(ours.num_layers)
    compact = rewind(ours, ticket)
    batch = inputs(make_batch(hf, lengths=LENGTHS))
    with torch.no_grad():
        expected = ours(**batch, head_mask=ticket.head_mask(), ffn_mask=ticket.ffn_mask()).logits
    ft.export(compact, tmp_path / "hf", format="hf")
    back, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "hf", output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert type(back).__name__ == type(hf).__name__
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(**batch).logits, expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(ft.load_pruned(tmp_path / "hf")(**batch).logits, expected, atol=ATOL, rtol=0)
    ft.export(compact, tmp_path / "compact")
    again = ft.load_pruned(tmp_path / "compact")
    same = lambda cfg: {k: v for k, v in cfg.to_dict().items() if k != "hf_config"}  # noqa: E731 (JSON keys differ)
    assert same(again.config) == same(compact.config) and again.is_compact
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["deberta-v3", "modernbert"])
def test_search_runs_end_to_end(family, tmp_path):
    from fastticket.data.task import Task

    model = load(make_hf_model(family), num_labels=2)
    task = Task(name="tiny", train=tokenized_dataset(n=16, seed=1, num_labels=2, pairs=False),
                dev=tokenized_dataset(n=20, seed=2, num_labels=2, pairs=False), metric="accuracy", num_labels=2)
    result = ft.search(model, task, levels=(0.5,), kinds=("winning",), epochs=1, batch_size=4, patience=None,
                       progress=False, out_dir=str(tmp_path))
    assert [r["id"] for r in result.rows] == ["seed0-full", "seed0-winning-50"]
    assert result.rows[1]["heads_kept"] == model.num_layers * H // 2
    assert isinstance(ft.load_pruned(tmp_path / "super_ticket_model"), ft.TicketModel)


@pytest.mark.parametrize("family", ["deberta-v2", "modernbert-mean-bias"])
def test_head_tables_run_only_the_tables_heads(family):
    """encode(head_tables=, ffn_present=) (ticket sharing's path) equals the masked model, weight gradients
    of the heads outside the table are zero."""
    ours = load(make_hf_model(family))
    batch = make_batch(ours, lengths=LENGTHS)
    ticket = ticket_for(ours.num_layers)
    lengths = torch.tensor(LENGTHS)
    tables = [ticket.heads[l].nonzero().flatten() for l in range(ours.num_layers)]
    hidden = ours.encode(batch["input_ids"], lengths, batch.get("token_type_ids"), head_tables=tables,
                         ffn_present=ticket.ffn.tolist(), projection_backend="torch")
    logits = ours.head(hidden, lengths)
    with torch.no_grad():
        expected = ours(**inputs(batch), head_mask=ticket.head_mask(), ffn_mask=ticket.ffn_mask()).logits
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)
    logits.sum().backward()
    att = ours.layers[0].attention
    pruned_rows = torch.cat([torch.arange(h * D, (h + 1) * D) for h in (1, 2)])
    for lin in (att.q, att.k, att.v, att.pos_q, att.pos_k):
        if lin is not None:
            assert lin.weight.grad[pruned_rows].abs().sum() == 0 and lin.weight.grad.abs().sum() > 0


def test_official_estimator_runs_on_pre_and_post_norm_families():
    for family in ("deberta-v3", "modernbert"):
        ours = load(make_hf_model(family), num_labels=2)
        data = tokenized_dataset(n=5, num_labels=2, pairs=False)
        paper = ft.importance(ours, data, batch_size=2, progress=False)
        official = ft.importance(ours, data, estimator="official", batch_size=2, progress=False)
        assert (official.heads >= paper.heads - 1e-7).all() and (official.ffn >= paper.ffn - 1e-7).all()
        assert (official.heads > 0).all() and not torch.allclose(official.heads, paper.heads)


@pytest.mark.parametrize("family", ["deberta-v2", "modernbert"])
def test_hf_export_of_a_hand_built_model(family, tmp_path):
    """No source config: config.json is written by the family from our config alone."""
    requires(family)  # plain transformers must have the family to load the export
    extra = {"deberta-v2": dict(relative_attention=True, position_buckets=4, max_relative_positions=16,
                                pos_att_type=["p2c", "c2p"], absolute_positions=False, type_vocab_size=0),
             "modernbert": dict(type_vocab_size=0, layer_windows=[None, 1, None], pooling="mean")}[family]
    torch.manual_seed(0)
    model = ft.TicketModel(ft.EncoderConfig(family, 99, 32, 3, 4, 37, max_position_embeddings=64, num_labels=2,
                                            **extra)).eval()
    ft.export(model, tmp_path / "hf", format="hf")
    back = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf", attn_implementation="eager")
    batch = inputs(make_batch(model, lengths=LENGTHS))
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(**batch).logits, model(**batch).logits, atol=ATOL, rtol=0)
