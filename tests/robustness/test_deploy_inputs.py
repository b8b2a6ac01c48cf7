"""The deployment commands (export, latency, ticket) on bad or odd input, as a user would give it: one line on
stderr and status 2 before any work, nothing of the user's overwritten, messages that say what happened."""

from __future__ import annotations

import json
import os

import pytest

import fastticket as ft
from fastticket.cli import main
from tests.robustness.conftest import TINY_SEARCH


@pytest.fixture(scope="module")
def run_dir(checkpoint, tmp_path_factory):
    """A finished tiny search run (one level, one seed) with its super_ticket_model/."""
    from tests.robustness.tiny import write_task

    base = tmp_path_factory.mktemp("deploy")
    data = write_task(base / "data")
    run = base / "run"
    assert main(["search", "--model", checkpoint, "--task", "local", "--data-dir", data, *TINY_SEARCH,
                 "--device", "cpu", "--out", str(run)]) == 0
    return str(run)


def one_error_line(capsys, *needles) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def snapshot(directory) -> dict:
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))
            if os.path.isfile(os.path.join(directory, name))}


# ------------------------------------------------------------------------------------------------- ticket


def test_ticket_out_never_writes_into_the_users_files_or_other_runs(run_dir, tmp_path, capsys):
    """--out used to be written into whatever it named: a user's importance.json was overwritten, a search
    run or an export got two more files (an export holding them can no longer be replaced)."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "importance.json").write_text("mine")
    export_dir = ft.export(ft.load_pruned(os.path.join(run_dir, "super_ticket_model")), tmp_path / "exp")
    for target, why in ((user, "is not empty and has no fastticket_run.json"), (run_dir, "`fastticket search` run"),
                        (export_dir, "`fastticket export` run")):
        before = snapshot(target)
        assert main(["ticket", "--from", run_dir, "--sparsity", "0.5", "--out", str(target)]) == 2
        one_error_line(capsys, repr(str(target)), why)
        assert snapshot(target) == before


def test_ticket_out_is_marked_as_a_ticket_output(run_dir, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["ticket", "--from", run_dir, "--sparsity", "0.5", "--out", str(out)]) == 0
    capsys.readouterr()
    assert json.loads((out / "fastticket_run.json").read_text())["command"] == "ticket"
    assert {"importance.json", "ticket.json"} <= set(os.listdir(out))
    assert main(["export", run_dir, "--out", str(out)]) == 2  # now an export cannot take it for the user's
    one_error_line(capsys, "`fastticket ticket` run")


@pytest.mark.parametrize("argv, message", [
    (["--device", "bogus"], "device 'bogus' is not a device"),
    (["--device", "cuda:9"], "device 'cuda:9'"),
    (["--backend", "bogus"], "--backend 'bogus' is unknown; allowed: 'auto' or one of"),
    (["--out", ""], "--out ''; allowed: a directory path"),
    (["--out", "FILE"], "exists and is not a directory"),
])
def test_ticket_options_are_checked_before_fine_tuning(checkpoint, task_dir, tmp_path, capsys, monkeypatch, argv, message):
    """A bad device was a traceback after the task was loaded; a bad backend an error after fine-tuning."""
    def no_work(*a, **k):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(ft, "fine_tune", no_work)
    monkeypatch.setattr(ft, "load_task", no_work)
    (tmp_path / "file").write_text("x")
    argv = [str(tmp_path / "file") if a == "FILE" else a for a in argv]
    assert main(["ticket", "--model", checkpoint, "--task", "local", "--data-dir", task_dir, *argv]) == 2
    one_error_line(capsys, message)


def test_ticket_refuses_an_hf_compact_or_onnx_export_as_checkpoint(run_dir, task_dir, tmp_path, capsys, monkeypatch):
    """An hf-compact export used to make transformers ask on stdin whether to run its code, then fail."""
    model = ft.load_pruned(os.path.join(run_dir, "super_ticket_model"))
    hf_compact = ft.export(model, tmp_path / "hfc", format="hf-compact")
    os.makedirs(tmp_path / "onnx-like")
    (tmp_path / "onnx-like" / "tokenizer_config.json").write_text("{}")
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("asked the user on stdin"))
    for path, message in ((hf_compact, "is an hf-compact export"), (str(tmp_path / "onnx-like"), "has neither")):
        assert main(["ticket", "--checkpoint", path, "--task", "local", "--data-dir", task_dir]) == 2
        one_error_line(capsys, repr(path), message, "allowed: a compact export")
