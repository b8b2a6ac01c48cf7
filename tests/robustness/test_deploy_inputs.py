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
    for flag, allowed in (("--checkpoint", "allowed: a compact export"), ("--model", "allowed: a pre-trained")):
        for path, message in ((hf_compact, "is an hf-compact export"), (str(tmp_path / "onnx-like"), "has no ")):
            assert main(["ticket", flag, path, "--task", "local", "--data-dir", task_dir]) == 2
            one_error_line(capsys, f"{flag} {path!r}", message, allowed)


# ------------------------------------------------------------------------------------------------- export


def test_export_never_replaces_or_nests_into_the_runs_kept_models(run_dir, capsys):
    """--out naming a trial's kept model (an export itself) replaced it with this export (exit 0); --out under
    super_ticket_model/ nested a directory there, which the search's next replacement of it then refuses."""
    trials = os.path.join(run_dir, "trials")
    kept = next(os.path.join(trials, n) for n in sorted(os.listdir(trials)) if n.endswith(".model"))
    before = snapshot(kept), sorted(os.listdir(os.path.join(run_dir, "super_ticket_model")))
    for out in (kept, os.path.join(kept, "x"), os.path.join(run_dir, "super_ticket_model", "x"), trials):
        assert main(["export", run_dir, "--format", "hf", "--out", out]) == 2
        one_error_line(capsys, repr(out), "the run's own", "allowed: a new or empty directory")
    assert (snapshot(kept), sorted(os.listdir(os.path.join(run_dir, "super_ticket_model")))) == before


def test_export_to_an_empty_path_is_refused(run_dir, tmp_path, capsys, monkeypatch):
    """`--out ""` (an unset variable) silently wrote RUN/export-hf."""
    monkeypatch.chdir(tmp_path)
    assert main(["export", run_dir, "--out", ""]) == 2
    one_error_line(capsys, "--out ''; allowed")
    assert not os.path.exists(os.path.join(run_dir, "export-hf"))


def test_ft_export_to_an_empty_path_is_refused(run_dir, tmp_path, monkeypatch):
    """ft.export(model, "") replaced the working directory itself (the process was left in a deleted
    directory); None was a TypeError."""
    monkeypatch.chdir(tmp_path)
    model = ft.load_pruned(os.path.join(run_dir, "super_ticket_model"))
    for path in ("", "  ", None):
        with pytest.raises(ValueError, match="^export path .*; allowed: a directory path"):
            ft.export(model, path)
    assert os.listdir(tmp_path) == []


def test_exports_of_a_hub_model_carry_its_cached_tokenizer(checkpoint, tmp_path, monkeypatch):
    """A model loaded by hub name (`search --model bert-base-uncased`) or from "~/..." was exported without its
    tokenizer (name_or_path was not a directory as written): the run's kept models, super_ticket_model/ and
    every export then lacked it, and pipeline() / AutoTokenizer on the export failed."""
    import shutil

    import huggingface_hub.constants
    from transformers import AutoTokenizer

    repo = tmp_path / "hub" / "models--tiny-org--tiny-bert"
    shutil.copytree(checkpoint, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    shutil.copytree(checkpoint, tmp_path / "home" / "ckpt")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    model = ft.load_model(checkpoint)
    for name in ("tiny-org/tiny-bert", "~/ckpt"):
        model.name_or_path = name
        for fmt in ("compact", "hf-compact"):
            out = ft.export(model, tmp_path / f"{fmt}-{name[:2]}", format=fmt)
            assert {"tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(out)), (name, fmt)
            assert AutoTokenizer.from_pretrained(out)("good film")["input_ids"][0] == 2  # [CLS]
    model.name_or_path = "not-cached/anywhere"
    assert "tokenizer.json" not in os.listdir(ft.export(model, tmp_path / "none"))


# ------------------------------------------------------------------------------------------------ latency

QUICK = ["--batch-size", "2", "--seq-len", "4", "--repeats", "1", "--warmup", "0", "--device", "cpu"]


@pytest.fixture
def model_dir(run_dir, tmp_path):
    """A compact export of the run's super ticket."""
    return ft.export(ft.load_pruned(os.path.join(run_dir, "super_ticket_model")), tmp_path / "model", format="compact")


def test_latency_of_dot_writes_the_report_beside_the_model_not_into_it(model_dir, capsys, monkeypatch):
    """`cd MODEL_DIR && fastticket latency .` wrote a hidden `.-latency.json` into the export (which then
    could no longer be replaced by an export: it held a file the export did not write)."""
    before = sorted(os.listdir(model_dir))
    monkeypatch.chdir(model_dir)
    assert main(["latency", ".", *QUICK]) == 0
    assert f"wrote {model_dir}-latency.json" in capsys.readouterr().out
    assert sorted(os.listdir(model_dir)) == before
    assert json.loads(open(f"{model_dir}-latency.json").read())["results"][0]["label"] == "model"


def no_loading(monkeypatch):
    import fastticket.models

    monkeypatch.setattr(fastticket.models, "load_pruned", lambda *a, **k: pytest.fail("loaded a model first"))


@pytest.mark.parametrize("argv, message", [
    (["--out", "FILE/report.json"], "is not a directory"),
    (["--out", ""], "--out ''; allowed: a report file path"),
    (["--batch-size", "0"], "batch size 0; allowed: an integer >= 1"),
    (["--repeats", "-1"], "repeats -1; allowed: an integer >= 1"),
    (["--device", "bogus"], "device 'bogus' is not a device"),
])
def test_latency_options_and_report_path_are_checked_before_loading(model_dir, tmp_path, capsys, monkeypatch, argv, message):
    """A report under a file was an OSError (status 1) after the timing; the other options were checked only
    after the model was loaded."""
    (tmp_path / "file").write_text("x")
    argv = [a.replace("FILE", str(tmp_path / "file")) for a in argv]
    no_loading(monkeypatch)
    assert main(["latency", model_dir, *QUICK, *argv]) == 2
    one_error_line(capsys, message)
    assert (tmp_path / "file").read_text() == "x" and not os.path.exists(f"{model_dir}-latency.json")


def test_latency_of_an_unfinished_run_says_so(run_dir, tmp_path, capsys):
    """A run without results.json yet was taken for a model directory: "checkpoint ... has model_type None"."""
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("fastticket_run.json", "config.json"):
        (partial / name).write_bytes(open(os.path.join(run_dir, name), "rb").read())
    assert main(["latency", str(partial), *QUICK]) == 2
    one_error_line(capsys, "is not a fastticket search run directory (no results.json)")
    assert sorted(os.listdir(partial)) == ["config.json", "fastticket_run.json"]


def test_onnxruntime_engine_without_onnx_names_the_engine(model_dir, capsys, monkeypatch):
    """The message said "format 'onnx' needs ..." to a user who asked for --engine onnxruntime."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("onnx") else real(name, *a))
    assert main(["latency", model_dir, *QUICK, "--engine", "onnxruntime"]) == 2
    one_error_line(capsys, "engine 'onnxruntime' needs onnx, onnxscript, onnxruntime (not installed)")


def test_compile_engine_never_times_the_compilation(model_dir, monkeypatch):
    """With --warmup 0 the first timed forward of each model compiled it: seconds of compilation were reported
    as latency (and as a speed-up). A stand-in compile whose first call takes 0.5 s must not show up."""
    import time

    import torch

    from fastticket import latency

    def slow_first_call(module):
        calls = []

        def run(**batch):
            if not calls:
                time.sleep(0.5)
            calls.append(1)
            return module(**batch)
        return run

    monkeypatch.setattr(torch, "compile", slow_first_call)
    ticket = ft.load_pruned(model_dir)
    report = latency.measure(latency.full_model_of(ticket.config), [({"label": "t"}, ticket)], engine="compile",
                             batch_size=2, seq_len=4, repeats=1, warmup=0, device="cpu")
    (r,) = report["results"]
    assert r["full_ms"] < 400 and r["ticket_ms"] < 400, r


def test_a_batch_that_does_not_fit_in_memory_is_one_line(model_dir, capsys, monkeypatch):
    """--batch-size 1000000000 was a traceback from the allocator (simulated: a real one may take the machine)."""
    from fastticket import latency

    def refuse(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 256000000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(latency, "example_batch", refuse)
    assert main(["latency", model_dir, *QUICK, "--batch-size", "1000000000"]) == 2
    one_error_line(capsys, "batch size 1000000000 x sequence length 4 does not fit in memory on cpu",
                   "allowed: a smaller --batch-size or --seq-len")
    assert not os.path.exists(f"{model_dir}-latency.json")


def test_load_pruned_with_a_bad_backend_does_not_blame_the_export(model_dir):
    """The message was "compact export ... is not valid: ValueError: backend 'bogus' is unknown"."""
    with pytest.raises(ValueError, match=r"^backend 'bogus' is unknown; allowed: 'auto' or one of"):
        ft.load_pruned(model_dir, backend="bogus")


def test_latency_report_is_never_written_into_an_export(run_dir, model_dir, capsys, monkeypatch):
    """--out MODEL_DIR/latency.json (or RUN/super_ticket_model/...) put a file into the export; a later export
    to it, or the search's next replacement of super_ticket_model/, then refused to replace it."""
    no_loading(monkeypatch)
    before = sorted(os.listdir(model_dir))
    for target, out in ((model_dir, os.path.join(model_dir, "latency.json")),
                        (run_dir, os.path.join(run_dir, "super_ticket_model", "latency.json"))):
        assert main(["latency", target, *QUICK, "--out", out]) == 2
        one_error_line(capsys, repr(out), "would lie inside an export")
    assert sorted(os.listdir(model_dir)) == before


def test_latency_of_a_folder_that_is_neither_a_run_nor_a_model_says_what_is_allowed(task_dir, capsys):
    """The message was "export ... has neither fastticket_config.json ... nor config.json": no word of runs."""
    assert main(["latency", task_dir, *QUICK]) == 2
    one_error_line(capsys, f"{task_dir!r} is neither a search run", "allowed: a search run directory or an exported model")
    assert sorted(os.listdir(task_dir)) == ["dev.csv", "train.csv"] and not os.path.exists(f"{task_dir}-latency.json")
