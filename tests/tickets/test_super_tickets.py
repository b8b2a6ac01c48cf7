"""ft.search's protocol on a tiny model (CPU): per-seed super tickets and their statistics in results.json,
the kept models (one per seed, race-free), the exported one, the paper's weights remaining, FFN levels,
extra dev splits, and the TrainConfig checked before anything is written."""

import json
import os

import pytest
import torch

import fastticket as ft
from fastticket.data.task import Task
from fastticket.report import chosen_super_ticket, paired_p_value, seed_super_tickets
from fastticket.tickets import kept_models
from fastticket.tickets.store import ResultStore
from tests.helpers import tiny_model, tokenized_dataset

OPTIONS = dict(levels=(0.25, 0.5), kinds=("winning",), epochs=1, batch_size=4, patience=None, progress=False)


def tiny_task(extra=False):
    task = Task(name="tiny", train=tokenized_dataset(n=24, seed=1, num_labels=2),
                dev=tokenized_dataset(n=30, seed=2, num_labels=2), metric="accuracy", num_labels=2)
    if extra:
        task.extra_dev = {"dev_mismatched": tokenized_dataset(n=9, seed=3, num_labels=2)}
    return task


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = ft.search(tiny_model(num_labels=2), tiny_task(extra=True), seeds=(0, 1), out_dir=str(out), **OPTIONS)
    return result, out


def test_each_seed_has_its_super_ticket_in_results_json(two_seeds):
    result, out = two_seeds
    doc = json.loads((out / "results.json").read_text())
    rows = doc["rows"]
    assert doc["rows"] == result.rows and len(doc["super_tickets"]) == 2
    for entry in doc["super_tickets"]:
        mine = [r for r in rows if r["kind"] == "winning" and r["seed"] == entry["seed"]]
        best = max(mine, key=lambda r: (r["selection_score"], r["level"]))
        assert entry["id"] == best["id"] and entry["selection_score"] == best["selection_score"]
        assert entry["heldout_score"] == best["heldout_score"] and entry["level"] == best["level"]
    summary = doc["super_ticket_summary"]
    held = [e["heldout_score"] for e in doc["super_tickets"]]
    full = [next(r["heldout_score"] for r in rows if r["kind"] == "full" and r["seed"] == s) for s in (0, 1)]
    assert summary["heldout_mean"] == pytest.approx(sum(held) / 2)
    assert summary["full_heldout_mean"] == pytest.approx(sum(full) / 2)
    assert summary["p_value"] == paired_p_value(held, full)
    assert set(summary["extra"]) == {"dev_mismatched"}
    assert doc["super_ticket"] == chosen_super_ticket(seed_super_tickets(rows))["id"] == result.super_row["id"]
    assert result.super_tickets() == doc["super_tickets"] and "super tickets per seed" in result.table()


def test_one_model_per_seed_is_kept_and_the_chosen_one_exported(two_seeds, capsys):
    result, out = two_seeds
    kept = sorted(p.name for p in (out / "trials").iterdir() if p.name.endswith(".model"))
    assert kept == sorted(e["id"] + ".model" for e in result.super_tickets())
    chosen = ft.load_pruned(out / "super_ticket_model")
    source = ft.load_pruned(out / "trials" / f"{result.super_row['id']}.model")
    assert ft.ticket_of(chosen) == result.super_ticket
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in chosen.state_dict().items())
    super_json = json.loads((out / "super_ticket.json").read_text())
    assert super_json["row"] == result.super_row
    # the trained model scores what its row says
    held = [r for r in result.rows if r["id"] == result.super_row["id"]][0]
    assert held["ticket"] == result.super_ticket.to_dict()
    from fastticket.cli import main

    assert main(["export", str(out), "--format", "compact", "--out", str(out / "exported")]) == 0
    assert ft.ticket_of(ft.load_pruned(out / "exported")) == result.super_ticket


def test_rows_carry_the_papers_weights_remaining_and_extra_splits(two_seeds):
    result, _ = two_seeds
    full = next(r for r in result.rows if r["kind"] == "full")
    for r in result.rows:
        assert r["weights_remaining"] == pytest.approx(100.0 * r["params"] / full["params"])
        assert r["encoder_weights_remaining"] == pytest.approx(100.0 * r["encoder_params"] / full["encoder_params"])
        if r["kind"] != "full":
            assert r["encoder_weights_remaining"] < r["weights_remaining"] < 100.0  # embeddings count in the paper's
        assert set(r["extra"]["dev_mismatched"]) >= {"accuracy", "loss"}
        assert r["extra_scores"]["dev_mismatched"] == r["extra"]["dev_mismatched"]["accuracy"]
    assert result.config["extra_dev_examples"] == {"dev_mismatched": 9}
    assert "dev_mismatched" in result.table()


def test_ffn_levels_are_independent_of_head_levels(tmp_path):
    result = ft.search(tiny_model(num_labels=2), tiny_task(), ffn_levels=(0.0, 0.34), out_dir=str(tmp_path), **OPTIONS)
    winners = [r for r in result.rows if r["kind"] == "winning"]
    assert [r["id"] for r in winners] == ["seed0-winning-25-ffn00", "seed0-winning-50-ffn34"]
    assert [(r["heads_kept"], r["ffn_kept"], r["ffn_level"]) for r in winners] == [(9, 3, 0.0), (6, 2, 0.34)]
    assert result.config["ffn_levels"] == [0.0, 0.34]
    same = ft.search(tiny_model(num_labels=2), tiny_task(), ffn_levels=(0.25, 0.5), **OPTIONS)
    assert [r["id"] for r in same.rows] == ["seed0-full", "seed0-winning-25", "seed0-winning-50"]  # ids unchanged


@pytest.mark.parametrize("ffn_levels, message", [
    ((0.1,), "ffn_levels has 1 values but levels has 2"),
    ((0.1, 1.0), r"ffn_levels value 1.0 is outside the allowed range \[0, 1\)"),
    ((0.1, -0.2), "ffn_levels value -0.2"),
    ("authors", "ffn_levels='authors' prunes 3 FFNs at level 0.25, but the model has 3 layers"),
    ("pairs", "ffn_levels='pairs'; allowed"),
])
def test_bad_ffn_levels(ffn_levels, message, tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys.modules["fastticket.tickets.trial_runner"], "fine_tune", None)  # fails before training
    with pytest.raises(ValueError, match=message):
        ft.search(tiny_model(num_labels=2), tiny_task(), ffn_levels=ffn_levels, out_dir=str(tmp_path / "run"), **OPTIONS)
    assert not (tmp_path / "run").exists()


def test_authors_pairing_prunes_k_ffns_at_level_k_over_10():
    from fastticket.tickets.trials import resolve_ffn_levels

    levels = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    ffn = resolve_ffn_levels(levels, "authors", 12)
    from fastticket.tickets.select import round_half_up

    assert [round_half_up(f * 12) for f in ffn] == [1, 2, 3, 4, 5, 6, 7, 8]  # the authors' mask_k_ffn at h0.k
    assert [round_half_up(l * 12) for l in levels] == [1, 2, 4, 5, 6, 7, 8, 10]  # the default pairing
    assert resolve_ffn_levels(levels, None, 12) == levels == resolve_ffn_levels(levels, "levels", 12)


@pytest.mark.parametrize("options, message", [
    ({"lr": 0}, "lr=0; allowed: a positive float"), ({"epochs": 0}, "epochs=0"),
    ({"max_eval_examples": 0}, "max_eval_examples=0"), ({"warmup": 2.0}, "warmup=2.0"),
    ({"learning_rate": 1e-4}, "unknown training option 'learning_rate'"),
    ({"config": "fast"}, "preset 'fast' is unknown"),
])
def test_train_config_is_checked_before_anything_is_written(options, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path / "run"), **{**OPTIONS, **options})
    assert not (tmp_path / "run").exists()


def test_search_takes_a_train_config(tmp_path):
    config = ft.TrainConfig(epochs=1, lr=1e-3, batch_size=4, patience=None, max_train_examples=16)
    result = ft.search(tiny_model(num_labels=2), tiny_task(), levels=(0.5,), config=config, progress=False)
    assert result.config["lr"] == 1e-3 and result.config["train_examples"] == 16
    assert result.rows[0]["steps"] == 4  # 16 examples / batch 4, one epoch


def _store_with_rows(tmp_path, *rows):
    store = ResultStore(str(tmp_path))
    store.start({"x": 1}, resume=False)
    for r in rows:
        store.write_row(r["id"], r)
    return store


def _winner(rid, sel, seed=0, level=0.5):
    return {"id": rid, "kind": "winning", "seed": seed, "level": level, "ffn_level": level, "selection_score": sel}


def test_kept_models_under_concurrent_finishes(tmp_path):
    """Two workers finish winning trials of one seed at once: whatever the interleaving, one model remains."""
    net = ft.rewind(tiny_model(num_labels=2), ft.Ticket(torch.ones(3, 4, dtype=torch.bool), torch.ones(3, dtype=torch.bool)))
    a, b = _winner("seed0-winning-50", 0.9), _winner("seed0-winning-25", 0.8, level=0.25)
    # both check before either row exists: both export; b writes and prunes first, then a
    store = _store_with_rows(tmp_path / "one")
    assert kept_models.keep_if_best(store, a, net) and kept_models.keep_if_best(store, b, net)
    store.write_row(b["id"], b)
    kept_models.prune(store, 0)
    assert os.path.isdir(kept_models.model_dir(store, b["id"]))  # a's row is not written yet: b is best so far
    store.write_row(a["id"], a)
    kept_models.prune(store, 0)
    assert [p for p in os.listdir(store.trials_dir) if p.endswith(".model")] == [a["id"] + ".model"]
    # a finished first: b sees it and does not export
    store = _store_with_rows(tmp_path / "two", a)
    assert not kept_models.keep_if_best(store, b, net)
    # both exported and wrote rows, nobody pruned (a crash): settle removes the loser, copies the winner
    store = _store_with_rows(tmp_path / "three")
    kept_models.keep_if_best(store, a, net), kept_models.keep_if_best(store, b, net)
    store.write_row(a["id"], a), store.write_row(b["id"], b)
    assert kept_models.settle(store, [a, b])["id"] == a["id"]
    assert [p for p in os.listdir(store.trials_dir) if p.endswith(".model")] == [a["id"] + ".model"]
    assert ft.ticket_of(ft.load_pruned(store.path(kept_models.SUPER_MODEL_DIR))) == ft.ticket_of(net)


def test_settle_leaves_directories_it_does_not_own(tmp_path):
    a, b = _winner("seed0-winning-50", 0.9), _winner("seed0-winning-25", 0.8, level=0.25)
    store = _store_with_rows(tmp_path, a, b)
    mine = kept_models.model_dir(store, b["id"])
    os.makedirs(mine)
    (tmp_path / "trials" / (b["id"] + ".model") / "notes.txt").write_text("a user's file")
    kept_models.settle(store, [a, b])
    assert (tmp_path / "trials" / (b["id"] + ".model") / "notes.txt").exists()  # no compact export: not ours
    assert not (tmp_path / kept_models.SUPER_MODEL_DIR).exists()  # the chosen model is missing: nothing copied
