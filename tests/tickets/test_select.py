"""ft.select and ft.Ticket: exact counts, global ranking after normalization, constraints, JSON."""

import json
import math

import pytest
import torch

import fastticket as ft

LEVELS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


def _scores(layers=6, heads=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ft.Importance(torch.rand(layers, heads, generator=g), torch.rand(layers, generator=g))


@pytest.mark.parametrize("shape", [(6, 12), (5, 7), (12, 12), (24, 16)])
@pytest.mark.parametrize("kind", ["winning", "random", "losing"])
def test_exact_counts_and_min_heads(shape, kind):
    layers, heads = shape
    scores = _scores(layers, heads)
    for s in LEVELS:
        t = ft.select(scores, s, kind=kind)
        assert int((~t.heads).sum()) == math.floor(s * layers * heads + 0.5)
        assert int((~t.ffn).sum()) == math.floor(s * layers + 0.5)
        assert (t.heads.sum(1) >= 1).all()
        assert t.meta["kind"] == kind and t.meta["sparsity"] == s


def test_round_half_up_on_float_noise():
    # 0.15 * 10 = 1.4999999999999998 in floating point; the level means 1.5 -> 2
    t = ft.select(_scores(10, 1), 0.15, min_heads_per_layer=0)
    assert int((~t.heads).sum()) == 2 and int((~t.ffn).sum()) == 2


def test_winning_ranks_globally_after_layer_l2_normalization():
    heads = torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.4, 0.1, 0.3, 0.2]])  # layer 1 is tiny in raw scale
    scores = ft.Importance(heads, torch.tensor([2.0, 1.0]))
    # normalized: layer0 = [1,2,3,4]/sqrt(30); layer1 = [4,1,3,2]/sqrt(30): the two lowest are (0,0), (1,1)
    t = ft.select(scores, 0.25)
    assert (~t.heads).nonzero().tolist() == [[0, 0], [1, 1]]
    assert t.ffn.tolist() == [True, False]
    raw = ft.select(scores, 0.25, normalize=False)  # raw: layer 1's heads are all smaller
    assert (~raw.heads).nonzero().tolist() == [[1, 1], [1, 3]]


def test_min_heads_per_layer_redirects_pruning():
    heads = torch.ones(3, 4)
    heads[0] = torch.tensor([0.01, 0.02, 0.03, 0.04])
    scores = ft.Importance(heads, torch.ones(3))
    t = ft.select(scores, 0.5, normalize=False, min_heads_per_layer=1)  # 6 heads pruned; layer 0 keeps 1
    assert t.heads[0].tolist() == [False, False, False, True]
    assert int((~t.heads).sum()) == 6
    t2 = ft.select(scores, 0.5, normalize=False, min_heads_per_layer=2)
    assert t2.heads[0].tolist() == [False, False, True, True] and int((~t2.heads).sum()) == 6
    zero = ft.select(scores, 0.34, normalize=False, min_heads_per_layer=0)
    assert not zero.heads[0].any()


def test_losing_is_winning_on_negated_scores():
    scores = _scores(6, 12, seed=3)
    negated = ft.Importance(-scores.heads, -scores.ffn)
    for s in LEVELS:
        assert ft.select(scores, s, "losing") == ft.select(negated, s, "winning")


def test_winning_and_losing_prune_the_extremes():
    scores = _scores(4, 6, seed=5)
    norm = scores.heads / scores.heads.norm(dim=1, keepdim=True)
    win, lose = ft.select(scores, 0.25), ft.select(scores, 0.25, "losing")
    # with a low level the layer constraint does not bind: pruned heads are exactly the extremes
    assert norm[~win.heads].max() < norm[win.heads].min()
    assert norm[~lose.heads].min() > norm[lose.heads].max()
    assert scores.ffn[~win.ffn].max() < scores.ffn[win.ffn].min()


def test_random_is_seeded_and_covers_every_head():
    scores = _scores(4, 6)
    assert ft.select(scores, 0.5, "random", seed=7) == ft.select(scores, 0.5, "random", seed=7)
    tickets = [ft.select(scores, 0.5, "random", seed=s) for s in range(40)]
    assert len({tuple(t.heads.flatten().tolist()) for t in tickets}) > 30
    pruned_sometime = torch.stack([~t.heads for t in tickets]).any(0)
    assert pruned_sometime.all()
    # independent of the scores' values
    other = ft.Importance(torch.rand(4, 6), torch.rand(4))
    assert ft.select(other, 0.5, "random", seed=7) == tickets[7]


@pytest.mark.parametrize("sparsity", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan"), "0.3", None, True])
def test_bad_sparsity(sparsity):
    with pytest.raises(ValueError, match=r"sparsity=.* allowed range \(0, 1\)"):
        ft.select(_scores(), sparsity)


def test_bad_kind_and_impossible_constraint():
    with pytest.raises(ValueError, match="kind 'best' is unknown; allowed: .*winning.*random.*losing"):
        ft.select(_scores(), 0.3, kind="best")
    with pytest.raises(ValueError, match="min_heads_per_layer"):
        ft.select(_scores(2, 4), 0.9, min_heads_per_layer=1)
    with pytest.raises(ValueError, match="min_heads_per_layer=5"):
        ft.select(_scores(2, 4), 0.3, min_heads_per_layer=5)
    with pytest.raises(ValueError, match="ft.Importance"):
        ft.select({"heads": [[1.0]]}, 0.3)


def test_ticket_json_round_trip_and_masks(tmp_path):
    t = ft.select(_scores(), 0.4, seed=2)
    path = tmp_path / "t.json"
    t.save(path)
    back = ft.Ticket.load(path)
    assert back == t and back.meta == t.meta
    assert json.loads(path.read_text())["format"] == "fastticket.ticket"
    assert back.head_mask().dtype == torch.float32 and back.head_mask().shape == (6, 12)
    assert torch.equal(back.ffn_mask(), t.ffn.float())


@pytest.mark.parametrize("content, message", [
    ("{not json", "Expecting"),
    ('[1, 2]', "format"),
    ('{"format": "other"}', "format"),
    ('{"format": "fastticket.ticket", "heads": [[1, 0], [1]], "ffn": [1, 1]}', "different lengths"),
    ('{"format": "fastticket.ticket", "heads": [[1, 0], [1, 2]], "ffn": [1, 1]}', "0/1"),
    ('{"format": "fastticket.ticket", "heads": [[1, 0], [1, 1]], "ffn": [1]}', "ffn"),
    ('{"format": "fastticket.ticket", "heads": [[1, 0.5]], "ffn": [1]}', "0/1"),
    ('{"format": "fastticket.ticket", "heads": [], "ffn": []}', "non-empty"),
    ('{"format": "fastticket.ticket", "ffn": [1]}', "heads"),
])
def test_corrupt_ticket_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"bad.json.*{message}"):
        ft.Ticket.load(path)


def test_ticket_values_must_be_bool_or_0_1():
    with pytest.raises(ValueError, match="bool or 0/1"):
        ft.Ticket(torch.rand(2, 3), torch.ones(2))
    assert ft.Ticket(torch.tensor([[1, 0]]), torch.tensor([0.0])).heads.tolist() == [[True, False]]


def test_numpy_sparsity_is_a_number():
    import numpy as np

    assert ft.select(_scores(), np.float32(0.5)) == ft.select(_scores(), 0.5)


def test_missing_ticket_file(tmp_path):
    with pytest.raises(ValueError, match="nope.json"):
        ft.Ticket.load(tmp_path / "nope.json")


def test_save_is_atomic_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    t = ft.select(_scores(), 0.3)
    path = tmp_path / "t.json"
    t.save(path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", broken_fsync)  # fails after the new content went to the temp file
    with pytest.raises(OSError, match="disk full"):
        ft.select(_scores(seed=1), 0.5).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]
