"""ft.rewind: a physically compact copy that computes exactly what the masked model computes."""

from __future__ import annotations

import pytest
import torch

from fastticket.models import TicketModel
from fastticket.tickets import Ticket, importance
from fastticket.tickets.rewind import rewind, ticket_of
from tests.helpers import tiny_model

L, H, D, HIDDEN, INTER = 3, 4, 8, 32, 37  # tests.helpers.tiny_config: hidden = 8 * heads, intermediate 37
FAMILIES = {"bert": {}, "roberta": {"pad_token_id": 1}, "distilbert": {"type_vocab_size": 0},
            "electra-project": {"family": "electra", "embedding_size": 16},
            # DeBERTa-v3 style (shared keys, buckets) and v2 style (own pos_q / pos_k projections: sliced per head)
            "deberta-v3": {"family": "deberta-v2", "type_vocab_size": 0, "relative_attention": True, "position_buckets": 4,
                           "max_relative_positions": 16, "pos_att_type": ["c2p", "p2c"], "share_att_key": True,
                           "absolute_positions": False, "norm_rel_ebd": True},
            "deberta-v2": {"family": "deberta-v2", "relative_attention": True, "max_relative_positions": 4,
                           "pos_att_type": ["c2p", "p2c"], "embedding_size": 16},
            # pre-norm, no biases, GeGLU, rotary, layer 1 local (window 2)
            "modernbert": {"family": "modernbert", "type_vocab_size": 0, "layer_windows": [None, 2, None],
                           "rope_theta": 1000.0, "local_rope_theta": 100.0},
            "modernbert-bias": {"family": "modernbert", "type_vocab_size": 0, "layer_windows": [2, None, 2],
                                "attention_bias": True, "mlp_bias": True, "norm_bias": True, "pooling": "mean"}}


def make(family, seed=0):
    kw = dict(FAMILIES[family])
    kw.setdefault("family", family)
    return tiny_model(seed=seed, layers=L, heads=H, **kw)


def tickets():
    """name -> Ticket over [L, H]: a random one, one with an empty layer and every FFN pruned, the extremes."""
    g = torch.Generator().manual_seed(1)
    random = torch.rand(L, H, generator=g) > 0.4
    random[:, 0] = True
    empty_layer = torch.ones(L, H, dtype=torch.bool)
    empty_layer[1] = False
    empty_layer[0, [1, 3]] = False
    empty_layer[2, 2] = False
    return {
        "random": Ticket(random, torch.tensor([True, False, True])),
        "empty-layer-no-ffn": Ticket(empty_layer, torch.zeros(L, dtype=torch.bool)),
        "all-kept": Ticket(torch.ones(L, H, dtype=torch.bool), torch.ones(L, dtype=torch.bool)),
        "nothing-kept": Ticket(torch.zeros(L, H, dtype=torch.bool), torch.zeros(L, dtype=torch.bool)),
    }


TICKETS = tickets()


def batch(model, lengths=(9, 4, 1, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    pad = model.config.pad_token_id
    ids = torch.randint(2, model.config.vocab_size, (len(lengths), max(lengths)), generator=g)
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    ids[mask == 0] = pad
    out = {"input_ids": ids, "attention_mask": mask}
    if model.config.type_vocab_size > 1:
        out["token_type_ids"] = (torch.arange(max(lengths))[None, :] >= torch.tensor(lengths)[:, None] // 2).long() * mask
    return out


def num_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("ticket_name", list(TICKETS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_rewound_equals_masked(family, ticket_name):
    model, ticket = make(family), TICKETS[ticket_name]
    compact = rewind(model, ticket)
    inputs = batch(model)
    with torch.no_grad():
        expected = model(**inputs, head_mask=ticket.head_mask(), ffn_mask=ticket.ffn_mask()).logits
        got = compact(**inputs).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # per-example masks in the original layout: the compact model computes the full one's with mask * ticket
    g = torch.Generator().manual_seed(2)
    head_mask, ffn_mask = torch.rand(4, L, H, generator=g), torch.rand(4, L, generator=g)
    with torch.no_grad():
        expected = model(**inputs, head_mask=head_mask * ticket.head_mask(), ffn_mask=ffn_mask * ticket.ffn_mask()).logits
        got = compact(**inputs, head_mask=head_mask, ffn_mask=ffn_mask).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert ticket_of(compact) == ticket and compact.is_compact


def test_parameters_drop_by_exactly_the_pruned_structures():
    model = make("bert")
    for name, ticket in TICKETS.items():
        compact = rewind(model, ticket)
        pruned_heads = int((~ticket.heads).sum())
        pruned_ffn = int((~ticket.ffn).sum())
        per_head = 4 * D * HIDDEN + 3 * D  # Q/K/V rows and W_O columns; Q/K/V biases (W_O's bias stays)
        per_ffn = 2 * INTER * HIDDEN + INTER + HIDDEN
        assert num_params(model) - num_params(compact) == pruned_heads * per_head + pruned_ffn * per_ffn, name
        for l, layer in enumerate(compact.layers):
            kept = int(ticket.heads[l].sum())
            att = layer.attention
            assert att.num_heads == kept
            if kept:
                assert att.q.weight.shape == (kept * D, HIDDEN) and att.o.weight.shape == (HIDDEN, kept * D)
            else:
                assert att.q is None and att.k is None and att.v is None and not hasattr(att.o, "weight")
            assert (layer.ffn.up is None) == (not bool(ticket.ffn[l]))
        assert not any(p.numel() == 0 for p in compact.parameters())  # nothing is kept as an empty tensor


@pytest.mark.parametrize("family, per_head, per_ffn", [
    ("deberta-v2", 6 * D * HIDDEN + 5 * D, 2 * INTER * HIDDEN + INTER + HIDDEN),  # + pos_q / pos_k rows and biases
    ("modernbert", 4 * D * HIDDEN, 3 * INTER * HIDDEN),  # no biases; GeGLU: up, gate, down
])
def test_parameters_drop_by_exactly_the_pruned_structures_of_new_families(family, per_head, per_ffn):
    model = make(family)
    for name, ticket in TICKETS.items():
        compact = rewind(model, ticket)
        pruned_heads, pruned_ffn = int((~ticket.heads).sum()), int((~ticket.ffn).sum())
        assert num_params(model) - num_params(compact) == pruned_heads * per_head + pruned_ffn * per_ffn, name
        assert not any(p.numel() == 0 for p in compact.parameters())


def test_weights_are_copies_of_the_surviving_slices():
    model = make("roberta")
    ticket = TICKETS["random"]
    compact = rewind(model, ticket)
    for l in range(L):
        kept = ticket.heads[l].nonzero().flatten()
        rows = (kept[:, None] * D + torch.arange(D)).flatten()
        src, dst = model.layers[l].attention, compact.layers[l].attention
        torch.testing.assert_close(dst.v.weight, src.v.weight[rows], atol=0, rtol=0)
        torch.testing.assert_close(dst.q.bias, src.q.bias[rows], atol=0, rtol=0)
        torch.testing.assert_close(dst.o.weight, src.o.weight[:, rows], atol=0, rtol=0)
        torch.testing.assert_close(dst.o.bias, src.o.bias, atol=0, rtol=0)
    torch.testing.assert_close(compact.head.out.weight, model.head.out.weight, atol=0, rtol=0)  # head copied, not reset
    with torch.no_grad():
        compact.head.out.weight.zero_()
        compact.embeddings.word.weight.zero_()
    assert model.head.out.weight.abs().sum() > 0 and model.embeddings.word.weight.abs().sum() > 0


def test_gradients_match_the_masked_model_and_adamax_holds_state_only_for_live_weights():
    model, ticket = make("bert"), TICKETS["empty-layer-no-ffn"]
    ticket = Ticket(ticket.heads, torch.tensor([True, False, False]))
    compact = rewind(model, ticket)
    inputs, labels = batch(model), torch.tensor([0, 2, 1, 1])
    model(**inputs, labels=labels, head_mask=ticket.head_mask(), ffn_mask=ticket.ffn_mask()).loss.backward()
    compact(**inputs, labels=labels).loss.backward()
    assert all(p.grad is not None for p in compact.parameters())
    kept = ticket.heads[0].nonzero().flatten()
    rows = (kept[:, None] * D + torch.arange(D)).flatten()
    full, small = model.layers[0].attention, compact.layers[0].attention
    torch.testing.assert_close(small.q.weight.grad, full.q.weight.grad[rows], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(small.o.weight.grad, full.o.weight.grad[:, rows], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(compact.layers[1].attention.o.bias.grad, model.layers[1].attention.o.bias.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(compact.embeddings.word.weight.grad, model.embeddings.word.weight.grad, atol=1e-6, rtol=1e-5)

    opt = torch.optim.Adamax(compact.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in compact.named_parameters()}
    opt.step()
    state_numel = sum(s["exp_avg"].numel() for s in opt.state.values())
    assert len(opt.state) == len(list(compact.parameters())) and state_numel == num_params(compact)
    assert state_numel < num_params(model)
    moved = [n for n, p in compact.named_parameters() if not torch.equal(before[n], p)]
    assert "layers.1.attention.o.bias" in moved and "layers.0.attention.q.weight" in moved


def test_rewinding_a_rewound_model_keeps_what_both_tickets_keep():
    model = make("distilbert")
    first, second = TICKETS["random"], TICKETS["empty-layer-no-ffn"]
    once = rewind(model, first)
    twice = rewind(once, second)
    both = Ticket(first.heads & second.heads, first.ffn & second.ffn)
    assert ticket_of(twice) == both
    inputs = batch(model)
    with torch.no_grad():
        expected = model(**inputs, head_mask=both.head_mask(), ffn_mask=both.ffn_mask()).logits
        torch.testing.assert_close(twice(**inputs).logits, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(once(**inputs, head_mask=second.head_mask(), ffn_mask=second.ffn_mask()).logits,
                                   expected, atol=1e-5, rtol=0)
    assert num_params(twice) == num_params(rewind(model, both))


def test_ticket_of_a_full_model_keeps_everything_and_full_tickets_change_nothing():
    model = make("bert")
    t = ticket_of(model)
    assert t.heads.all() and t.ffn.all() and not model.is_compact
    same = rewind(model, t)
    assert num_params(same) == num_params(model)
    for (n, a), (m, b) in zip(model.state_dict().items(), same.state_dict().items()):
        assert n == m
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_mode_dtype_backend_and_requires_grad_carry_over():
    model = make("bert").double().train()
    model.backend = "torch"
    model.embeddings.word.weight.requires_grad_(False)
    model.name_or_path = "somewhere"
    compact = rewind(model, TICKETS["random"])
    assert compact.training and compact.backend == "torch" and compact.name_or_path == "somewhere"
    assert all(p.dtype == torch.float64 for p in compact.parameters())
    assert not compact.embeddings.word.weight.requires_grad and compact.head.out.weight.requires_grad
    assert isinstance(compact, TicketModel) and not any(p.is_meta for p in compact.parameters())


def test_compact_masks_use_the_original_layout():
    model = make("bert")
    compact = rewind(model, TICKETS["random"])
    inputs = batch(model)
    with pytest.raises(ValueError, match="head_mask"):  # a compact layout is not accepted
        compact(**inputs, head_mask=torch.ones(L, H - 1))
    # entries of pruned heads multiply nothing: changing them changes nothing
    mask = torch.rand(L, H)
    other = torch.where(TICKETS["random"].heads, mask, torch.full_like(mask, 7.0))
    with torch.no_grad():
        torch.testing.assert_close(compact(**inputs, head_mask=mask).logits, compact(**inputs, head_mask=other).logits,
                                   atol=0, rtol=0)


def test_importance_on_a_compact_model_scores_pruned_heads_zero(dataset):
    model = make("bert")
    ticket = TICKETS["random"]
    compact = rewind(model, ticket)
    scores = importance(compact, dataset, batch_size=4, progress=False)
    full = importance(model, dataset, batch_size=4, progress=False)
    assert torch.all(scores.heads[~ticket.heads] == 0) and torch.all(scores.ffn[~ticket.ffn] == 0)
    assert torch.all(scores.heads[ticket.heads] > 0)
    assert scores.heads.shape == full.heads.shape


def test_bad_inputs():
    model = make("bert")
    with pytest.raises(ValueError, match=r"\[L, H\]"):
        rewind(model, Ticket(torch.ones(L, H + 1, dtype=torch.bool), torch.ones(L, dtype=torch.bool)))
    with pytest.raises(ValueError, match="Ticket"):
        rewind(model, torch.ones(L, H))
    with pytest.raises(ValueError, match="TicketModel"):
        rewind(torch.nn.Linear(2, 2), TICKETS["random"])
