"""Neuron-level FFN pruning: neuron masks, importance against a brute-force loop, the selection rule, tickets
with neurons (save/load, equality), rewinding into compact FFNs (== the masked model), a neuron-level search."""

from __future__ import annotations

import json

import pytest
import torch

import fastticket as ft
from fastticket.models import task_loss
from fastticket.tickets import Importance, Ticket
from fastticket.tickets.rewind import rewind, ticket_of
from fastticket.tickets.kept_models import SUPER_MODEL_DIR
from fastticket.tickets.select import round_width
from tests.helpers import tiny_model, tokenized_dataset

L, H, I = 3, 4, 37  # tests.helpers.tiny_config
FAMILIES = {  # post-norm BERT, pre-norm GeGLU ModernBERT without and with biases
    "bert": {},
    "modernbert": {"family": "modernbert", "type_vocab_size": 0, "layer_windows": [None, 2, None],
                   "rope_theta": 1000.0, "local_rope_theta": 100.0},
    "modernbert-bias": {"family": "modernbert", "type_vocab_size": 0, "attention_bias": True, "mlp_bias": True,
                        "norm_bias": True, "pooling": "mean"},
}


def make(family="bert", seed=0, **kw):
    return tiny_model(seed=seed, layers=L, heads=H, **{**FAMILIES[family], **kw})


def batch(model, lengths=(9, 4, 1, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, model.config.vocab_size, (len(lengths), max(lengths)), generator=g)
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    ids[mask == 0] = model.config.pad_token_id
    return {"input_ids": ids, "attention_mask": mask}


def neuron_ticket(seed=1, pruned_ffn=1):
    """Random heads and neurons (about half kept); layer `pruned_ffn`'s FFN pruned."""
    g = torch.Generator().manual_seed(seed)
    heads = torch.rand(L, H, generator=g) > 0.3
    heads[:, 0] = True
    neurons = torch.rand(L, I, generator=g) > 0.5
    neurons[:, 0] = True
    ffn = torch.ones(L, dtype=torch.bool)
    if pruned_ffn is not None:
        ffn[pruned_ffn] = False
    return Ticket(heads, ffn, {}, neurons)


def masked_logits(model, ticket, inputs, neuron_mask=None):
    mask = ticket.neuron_mask() if neuron_mask is None else neuron_mask * ticket.neuron_mask()
    with torch.no_grad():
        return model(**inputs, head_mask=ticket.head_mask(), ffn_mask=ticket.ffn_mask(), neuron_mask=mask).logits


# --------------------------------------------------------------------------------------------- masks


def test_neuron_mask_zeroes_what_the_down_projection_sees():
    model, inputs = make(), batch(make())
    mask = torch.ones(L, I)
    mask[0, :5] = 0
    seen = []
    hook = model.layers[0].ffn.down.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    with torch.no_grad():
        model(**inputs, neuron_mask=mask)
    hook.remove()
    assert (seen[0][..., :5] == 0).all() and (seen[0][..., 5:] != 0).any()
    with torch.no_grad():  # all ones = no mask; a per-example mask equals the per-model one row by row
        torch.testing.assert_close(model(**inputs, neuron_mask=torch.ones(L, I)).logits, model(**inputs).logits)
        per_example = model(**inputs, neuron_mask=mask.expand(4, L, I)).logits
    torch.testing.assert_close(per_example, model(**inputs, neuron_mask=mask).logits)


def test_bad_neuron_mask_and_probe_shapes():
    model, inputs = make(), batch(make())
    with pytest.raises(ValueError, match=r"neuron_mask has shape \(3, 36\); allowed: \[L, I\]=\(3, 37\) or \[B, L, I\]"):
        model(**inputs, neuron_mask=torch.ones(L, I - 1))
    with pytest.raises(ValueError, match=r"neuron_probe has shape \(3, 37\); allowed: \(4, 3, 37\)"):
        model(**inputs, neuron_probe=torch.ones(L, I))


# --------------------------------------------------------------------------------------------- importance


def single_example_neuron_grads(model, dataset):
    """Per example alone (no padding): ∂L(x)/∂m [L, I] and Σ_t |∂L/∂h_t,i · h_t,i| (from the inner activation
    itself, not the probe), one forward + backward each."""
    inner = {}
    originals = [layer.ffn.inner for layer in model.layers]
    for l, layer in enumerate(model.layers):
        def capture(x, l=l, original=originals[l]):
            h = original(x)
            h.retain_grad()
            inner[l] = h
            return h
        layer.ffn.inner = capture
    grads, official = [], []
    try:
        for row in dataset:
            mask = torch.ones(L, I, requires_grad=True)
            ids, types = torch.tensor([row["input_ids"]]), torch.tensor([row["token_type_ids"]])
            logits = model(ids, token_type_ids=types, neuron_mask=mask, backend="torch").logits
            task_loss(logits, torch.tensor([row["labels"]])).backward()
            grads.append(mask.grad.double())
            official.append(torch.stack([(inner[l].grad * inner[l]).abs().sum((0, 1)) for l in range(L)]).double())
    finally:
        for layer in model.layers:
            del layer.ffn.inner
    return torch.stack(grads), torch.stack(official)


def close(a, b, rtol=1e-5):
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
    assert (a - b).abs().max().item() <= rtol * scale, ((a - b).abs().max().item(), scale)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_neuron_importance_equals_a_brute_force_single_example_loop(family):
    model = make(family)
    data = tokenized_dataset(n=9, pairs=family == "bert")
    grads, official = single_example_neuron_grads(model, data)
    for estimator, expected in [("paper", grads.abs().mean(0)), ("official", official.mean(0))]:
        scores = ft.importance(model, data, estimator=estimator, batch_size=4, progress=False, granularity="neuron")
        assert scores.neurons.shape == (L, I) and scores.num_examples == 9
        close(scores.neurons, expected)
        assert (scores.neurons > 0).all()
        plain = ft.importance(model, data, estimator=estimator, batch_size=4, progress=False)  # heads/FFNs unchanged
        assert plain.neurons is None
        close(scores.heads, plain.heads, 1e-6)
        close(scores.ffn, plain.ffn, 1e-6)
    sizes = [(0, 4), (4, 8), (8, 9)]  # the batches of 4: the gradient of each batch's mean loss
    means = torch.stack([grads[a:b].mean(0) for a, b in sizes])
    batch = ft.importance(model, data, estimator="batch", batch_size=4, progress=False, granularity="neuron")
    fisher = ft.importance(model, data, estimator="fisher", batch_size=4, progress=False, granularity="neuron")
    close(batch.neurons, means.abs().mean(0))
    close(fisher.neurons, means.square().sum(0))


def test_neuron_importance_of_a_compact_model_scores_only_what_it_holds():
    model = make()
    ticket = neuron_ticket()
    compact = rewind(model, ticket)
    data = tokenized_dataset(n=6)
    scores = ft.importance(compact, data, batch_size=3, progress=False, granularity="neuron")
    held = compact.kept_neurons_mask()
    assert (scores.neurons[~held] == 0).all() and (scores.neurons[held] > 0).all()
    with pytest.raises(ValueError, match="granularity 'head' is unknown"):
        ft.importance(model, data, granularity="head", progress=False)


def test_importance_with_neurons_saves_and_loads(tmp_path):
    scores = ft.importance(make(), tokenized_dataset(n=5), progress=False, granularity="neuron")
    scores.save(tmp_path / "imp.json")
    back = Importance.load(tmp_path / "imp.json")
    assert torch.equal(back.neurons, scores.neurons) and torch.equal(back.heads, scores.heads)
    old = {k: v for k, v in json.loads((tmp_path / "imp.json").read_text()).items() if k != "neurons"}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert Importance.load(tmp_path / "old.json").neurons is None
    with pytest.raises(ValueError, match=r"Importance neurons must be \[L, I\] with L=3"):
        Importance(scores.heads, scores.ffn, neurons=torch.ones(2, I))


# --------------------------------------------------------------------------------------------- selection


def layered_scores(neurons):
    return Importance(torch.rand(L, H, generator=torch.Generator().manual_seed(0)), torch.ones(L), neurons=neurons)


def test_global_selection_keeps_the_best_neurons_with_rounded_widths():
    # layer 0 best, layer 1 middle, layer 2 worst; within a layer higher index = better
    neurons = torch.arange(L * I, dtype=torch.float64).reshape(L, I).flip(0)
    ticket = ft.select(layered_scores(neurons), 0.5, normalize=False, granularity="neuron", neuron_multiple=8)
    # keep 111 - round(55.5) = 55 best: all 37 of layer 0 (width 37), 18 of layer 1 (-> 16), none of layer 2
    assert ticket.neurons.sum(1).tolist() == [37, 16, 0] and ticket.ffn.tolist() == [True, True, False]
    assert ticket.neurons[1, I - 16:].all() and not ticket.neurons[1, :I - 16].any()
    assert ticket.meta["granularity"] == "neuron" and ticket.meta["neuron_multiple"] == 8
    assert int(ticket.heads.sum()) == 12 - 6  # heads follow the level as always
    losing = ft.select(layered_scores(neurons), 0.5, kind="losing", normalize=False, granularity="neuron", neuron_multiple=8)
    assert losing.neurons.sum(1).tolist() == [0, 16, 37] and losing.neurons[1, :16].all()


def test_global_neuron_ranking_normalizes_each_layer_like_heads():
    pattern = torch.rand(I, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.1
    neurons = torch.stack([100 * pattern, pattern, 10 * pattern])  # one pattern at three scales
    normalized = ft.select(layered_scores(neurons), 0.5, granularity="neuron", neuron_multiple=1)
    assert normalized.neurons.sum(1).tolist() in ([19, 18, 18], [18, 19, 18], [18, 18, 19])
    raw = ft.select(layered_scores(neurons), 0.5, normalize=False, granularity="neuron", neuron_multiple=1)
    assert raw.neurons[0].all() and not raw.neurons[1].any() and raw.ffn.tolist() == [True, False, True]


def test_per_layer_selection_and_width_rounding():
    neurons = torch.rand(L, I, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ticket = ft.select(layered_scores(neurons), 0.3, granularity="neuron", neuron_multiple=8, per_layer=True)
    # per layer keep 37 - round(11.1) = 26 -> 24, the 24 best of each layer
    assert ticket.neurons.sum(1).tolist() == [24, 24, 24] and ticket.ffn.all()
    for l in range(L):
        assert set(ticket.neurons[l].nonzero().flatten().tolist()) == set(neurons[l].argsort(descending=True)[:24].tolist())
    assert [round_width(n, 8, 37) for n in (0, 3, 4, 12, 33, 34, 35, 37)] == [0, 0, 8, 16, 32, 32, 37, 37]
    assert [round_width(n, 64, 3072) for n in (3000, 3040, 3071)] == [3008, 3072, 3072]
    a = ft.select(layered_scores(neurons), 0.5, kind="random", seed=4, granularity="neuron", neuron_multiple=4)
    b = ft.select(layered_scores(neurons), 0.5, kind="random", seed=4, granularity="neuron", neuron_multiple=4)
    c = ft.select(layered_scores(neurons), 0.5, kind="random", seed=5, granularity="neuron", neuron_multiple=4)
    assert a == b and a != c and all(n % 4 == 0 or n == I for n in a.neurons.sum(1).tolist())


def test_default_selection_is_unchanged_by_neuron_scores():
    neurons = torch.rand(L, I, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with_neurons, without = layered_scores(neurons), layered_scores(None)
    assert ft.select(with_neurons, 0.4) == ft.select(without, 0.4)
    assert ft.select(with_neurons, 0.4).neurons is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(granularity="neuron", neuron_multiple=64), r"neuron_multiple=64 does not fit the FFN's 37 neurons; allowed: an integer in \[1, 37\]"),
    (dict(granularity="neuron", neuron_multiple=0), r"neuron_multiple=0; allowed: a positive integer"),
    (dict(granularity="neuron", neuron_multiple=8.0), r"neuron_multiple=8.0; allowed: a positive integer"),
    (dict(granularity="layer"), "granularity 'layer' is unknown"),
])
def test_bad_selection_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ft.select(layered_scores(torch.ones(L, I)), 0.5, **kwargs)


def test_numpy_integers_are_integers():
    """np.int64(8) (from a config or a numpy sweep) was refused as "not a positive integer"."""
    np = pytest.importorskip("numpy")
    neurons = torch.rand(L, I, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = ft.select(layered_scores(neurons), 0.5, granularity="neuron", neuron_multiple=8, min_heads_per_layer=1)
    got = ft.select(layered_scores(neurons), 0.5, granularity="neuron", neuron_multiple=np.int64(8),
                    min_heads_per_layer=np.int64(1))
    assert got == expected and got.meta["neuron_multiple"] == 8
    with pytest.raises(ValueError, match="neuron_multiple=True; allowed: a positive integer"):
        ft.select(layered_scores(neurons), 0.5, granularity="neuron", neuron_multiple=True)


def test_neuron_selection_needs_neuron_scores():
    with pytest.raises(ValueError, match=r"needs neuron scores: ft.importance\(..., granularity='neuron'\)"):
        ft.select(layered_scores(None), 0.5, granularity="neuron", neuron_multiple=8)


# --------------------------------------------------------------------------------------------- tickets


def test_ticket_with_neurons_saves_loads_and_compares(tmp_path):
    ticket = neuron_ticket()
    ticket.save(tmp_path / "t.json")
    d = json.loads((tmp_path / "t.json").read_text())
    assert len(d["neurons"]) == L and len(d["neurons"][0]) == I and set("".join(d["neurons"])) == {"0", "1"}
    back = Ticket.load(tmp_path / "t.json")
    assert back == ticket and torch.equal(back.neurons, ticket.neurons)
    old = Ticket.from_dict({k: v for k, v in d.items() if k != "neurons"})  # a ticket from before neurons
    assert old.neurons is None and old != ticket
    assert old == Ticket(old.heads, old.ffn, {}, torch.ones(L, I))  # None = every neuron kept
    other = ticket.neurons.clone()
    other[1] = ~other[1]  # layer 1's FFN is pruned: its neuron row does not matter
    assert Ticket(ticket.heads, ticket.ffn, {}, other) == ticket
    other[0, 0] = ~other[0, 0]
    assert Ticket(ticket.heads, ticket.ffn, {}, other) != ticket
    assert "neurons kept per layer" in repr(ticket)


@pytest.mark.parametrize("neurons, message", [
    (["1" * I] * 2, "'neurons' must be a list of 3 strings"),
    (["1" * I, "1" * I, "1" * (I - 1)], "of one length"),
    (["1" * I, "2" * I, "1" * I], "strings of 0/1"),
    ([[1] * I] * 3, "strings of 0/1"),
])
def test_bad_ticket_neurons(neurons, message):
    d = {**neuron_ticket().to_dict(), "neurons": neurons}
    with pytest.raises(ValueError, match=message):
        Ticket.from_dict(d)


def test_a_kept_ffn_needs_a_neuron():
    neurons = torch.ones(L, I, dtype=torch.bool)
    neurons[2] = False
    with pytest.raises(ValueError, match=r"keeps the FFN of layers \[2\] but none of their neurons"):
        Ticket(torch.ones(L, H), torch.ones(L), {}, neurons)


# --------------------------------------------------------------------------------------------- rewind


@pytest.mark.parametrize("pruned_ffn", [1, None])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_compact_neuron_rewind_equals_the_masked_model(family, pruned_ffn):
    model, ticket = make(family), neuron_ticket(pruned_ffn=pruned_ffn)
    compact = rewind(model, ticket)
    inputs = batch(model)
    kept = ticket.kept_neurons()
    assert compact.config.kept_neurons == [kept[l].nonzero().flatten().tolist() for l in range(L)]
    for l in range(L):
        ffn = compact.layers[l].ffn
        width = int(kept[l].sum())
        assert compact.config.layer_ffn_width(l) == width
        assert (ffn.up is None) if width == 0 else (ffn.up.weight.shape[0] == width and ffn.down.weight.shape[1] == width)
        assert ffn.gate is None or ffn.gate.weight.shape[0] == width
    with torch.no_grad():
        torch.testing.assert_close(compact(**inputs).logits, masked_logits(model, ticket, inputs), atol=1e-5, rtol=0)
    assert ticket_of(compact) == ticket
    assert sum(p.numel() for p in compact.parameters()) < sum(p.numel() for p in model.parameters())
    # masks in the original layout on the compact model: the same as the product of masks on the full model
    g = torch.Generator().manual_seed(7)
    mask = torch.rand(4, L, I, generator=g)
    with torch.no_grad():
        got = compact(**inputs, neuron_mask=mask).logits
    torch.testing.assert_close(got, masked_logits(model, ticket, inputs, neuron_mask=mask), atol=1e-5, rtol=0)


def test_rewinding_a_compact_model_again_keeps_what_both_keep():
    model = make("modernbert")
    first, second = neuron_ticket(seed=1, pruned_ffn=None), neuron_ticket(seed=2, pruned_ffn=2)
    twice = rewind(rewind(model, first), second)
    both = Ticket(first.heads & second.heads, first.ffn & second.ffn, {}, first.neurons & second.neurons)
    assert ticket_of(twice) == both
    inputs = batch(model)
    with torch.no_grad():
        torch.testing.assert_close(twice(**inputs).logits, masked_logits(model, both, inputs), atol=1e-5, rtol=0)
    # a whole-FFN ticket on a neuron-compact model keeps its neurons
    again = rewind(twice, Ticket(torch.ones(L, H), torch.ones(L)))
    assert again.config.kept_neurons == twice.config.kept_neurons


def test_rewind_refuses_a_ticket_that_keeps_an_ffn_but_none_of_its_held_neurons():
    model = make()
    neurons = torch.zeros(L, I, dtype=torch.bool)
    neurons[:, :4] = True
    compact = rewind(model, Ticket(torch.ones(L, H), torch.ones(L), {}, neurons))
    elsewhere = torch.zeros(L, I, dtype=torch.bool)
    elsewhere[:, 10:] = True
    with pytest.raises(ValueError, match="ticket keeps layer 0's FFN but none of the neurons the model holds there"):
        rewind(compact, Ticket(torch.ones(L, H), torch.ones(L), {}, elsewhere))
    with pytest.raises(ValueError, match=r"ticket has neurons \(3, 36\); the model has \[L, I\]=\(3, 37\)"):
        rewind(model, Ticket(torch.ones(L, H), torch.ones(L), {}, torch.ones(L, I - 1)))


def test_compact_neuron_model_trains_with_gradients_only_on_what_it_holds():
    model = make("modernbert-bias").train()
    compact = rewind(model, neuron_ticket())
    inputs = batch(compact)
    out = compact(**inputs, labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    ffn = compact.layers[0].ffn
    assert ffn.up.weight.grad.shape == ffn.up.weight.shape and ffn.down.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------- search


def tiny_task():
    from fastticket.data.task import Task

    return Task(name="tiny", train=tokenized_dataset(n=24, seed=1, num_labels=2),
                dev=tokenized_dataset(n=30, seed=2, num_labels=2), metric="accuracy", num_labels=2)


def test_search_with_neuron_granularity_end_to_end(tmp_path):
    options = dict(levels=(0.25, 0.5), kinds=("winning", "random"), epochs=1, batch_size=4, patience=None, progress=False)
    result = ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path), granularity="neuron",
                       neuron_multiple=8, **options)
    assert [r["id"] for r in result.rows] == ["seed0-full", "seed0-winning-25", "seed0-random-25",
                                              "seed0-winning-50", "seed0-random-50"]
    assert result.config["granularity"] == "neuron" and result.config["neuron_multiple"] == 8
    scores = Importance.load(tmp_path / "importance-seed0.json")
    assert scores.neurons is not None and scores.neurons.shape == (3, 37)
    full = result.rows[0]
    for row in result.rows[1:]:
        ticket = Ticket.from_dict(row["ticket"])
        widths = ticket.kept_neurons().sum(1).tolist()
        assert ticket.neurons is not None and all(w % 8 == 0 or w == 37 for w in widths)
        assert row["neurons_kept"] == sum(widths) < 3 * 37 and row["ffn_kept"] == sum(w > 0 for w in widths)
        assert row["params"] < full["params"]
    assert result.super_ticket.neurons is not None
    back = ft.load_pruned(tmp_path / SUPER_MODEL_DIR)  # the exported super ticket: compact FFNs
    assert ticket_of(back) == result.super_ticket
    resumed = ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path), granularity="neuron",
                        neuron_multiple=8, resume=True, **options)
    assert [r["id"] for r in resumed.rows] == [r["id"] for r in result.rows] and resumed.super_ticket == result.super_ticket


def test_search_refuses_a_bad_neuron_multiple_before_training(monkeypatch):
    import sys

    monkeypatch.setattr(sys.modules["fastticket.tickets.trial_runner"], "fine_tune", None)
    with pytest.raises(ValueError, match=r"neuron_multiple=64 does not fit the FFN's 37 neurons"):
        ft.search(tiny_model(num_labels=2), tiny_task(), levels=(0.5,), granularity="neuron", progress=False)
    with pytest.raises(ValueError, match="granularity 'heads' is unknown"):
        ft.search(tiny_model(num_labels=2), tiny_task(), levels=(0.5,), granularity="heads", progress=False)


def test_cli_search_with_neuron_granularity(tmp_path, capsys):
    from fastticket.cli import main
    from tests.robustness.tiny import write_checkpoint, write_task

    model, data = write_checkpoint(tmp_path / "model"), write_task(tmp_path / "data")
    args = ["search", "--model", model, "--task", "local", "--data-dir", data, "--levels", "0.5", "--epochs", "1",
            "--batch-size", "4", "--max-length", "16", "--granularity", "neuron"]
    assert main([*args, "--neuron-multiple", "8", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "/24 neurons)" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["granularity"] == "neuron" and config["neuron_multiple"] == 8
    assert main([*args, "--out", str(tmp_path / "bad")]) == 2  # the default 64 exceeds the FFN's 24 neurons
    assert "neuron_multiple=64 does not fit the FFN's 24 neurons" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_ticket_sharing_refuses_neuron_tickets():
    from fastticket.data.task import Task

    model = tiny_model(num_labels=2)
    tasks = {n: Task(name=n, train=tokenized_dataset(n=8, seed=s, num_labels=2), dev=tokenized_dataset(n=8, seed=s + 1, num_labels=2),
                     metric="accuracy", num_labels=2) for n, s in (("a", 1), ("b", 3))}
    whole = Ticket(torch.ones(L, H), torch.ones(L))
    with pytest.raises(ValueError, match="ticket of task 'b' prunes FFN neurons; ticket sharing takes head and whole-FFN"):
        ft.share_tickets(model, tasks, {"a": whole, "b": neuron_ticket()}, epochs=1, progress=False)
