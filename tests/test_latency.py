"""fastticket latency: FLOP counts against torch's own counter, the command on a tiny run and on an export
(runs, writes latency.json, prints the measured and FLOP-ideal speed-ups), bad input. No timing assertions."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fastticket as ft
from fastticket import latency
from fastticket.cli import main
from fastticket.models.exporting import hf_config_dict
from fastticket.models.hf_compact import plain_torch_model
from fastticket.tickets import Ticket
from fastticket.tickets.rewind import rewind
from tests.helpers import tiny_model
from tests.models.conftest import make_hf_model


def ticket(layers, heads=4):
    kept = torch.ones(layers, heads, dtype=torch.bool)
    kept[0, 1:] = False
    kept[1] = False
    ffn = torch.ones(layers, dtype=torch.bool)
    ffn[-1] = False
    return Ticket(kept, ffn)


@pytest.mark.parametrize("family", ["bert", "electra-project", "deberta-v2", "deberta-v3", "modernbert"])
def test_flops_equal_torch_flop_counter(family):
    model = ft.load_model(make_hf_model(family))
    for m in (model, rewind(model, ticket(model.num_layers))):
        batch = latency.example_batch(m.config, 3, 9, "cpu")
        counter = FlopCounterMode(display=False)
        with counter:
            plain_torch_model(m, hf_config_dict(m.config))(**batch)
        assert latency.model_flops(m.config, 3, 9) == counter.get_total_flops()


def write_model_dir(tmp_path):
    compact = rewind(tiny_model(layers=3), ticket(3))
    return ft.export(compact, tmp_path / "model", format="compact")


def test_latency_of_an_exported_model(tmp_path, capsys):
    model_dir = write_model_dir(tmp_path)
    before = sorted(os.listdir(model_dir))
    assert main(["latency", model_dir, "--batch-size", "2", "--seq-len", "5", "--repeats", "3", "--warmup", "1",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "measured" in out and "FLOP-ideal" in out and f"wrote {model_dir}-latency.json" in out
    report = json.loads(open(f"{model_dir}-latency.json").read())
    (r,) = report["results"]
    assert report["format"] == "fastticket.latency" and report["engine"] == "torch" and report["repeats"] == 3
    assert r["heads_kept"] == 5 and r["ffn_kept"] == 2 and r["ticket_ms"] > 0 and r["full_ms"] > 0
    assert r["ideal_speedup"] == pytest.approx(r["full_flops"] / r["ticket_flops"]) and r["ideal_speedup"] > 1
    assert f"{r['measured_speedup']:8.2f}x" in out and f"{r['ideal_speedup']:9.2f}x" in out
    assert sorted(os.listdir(model_dir)) == before  # the report lies next to the export, which stays as it was


@pytest.mark.parametrize("argv, message", [
    (["/no/such/dir"], "'/no/such/dir' is not a directory"),
    (["MODEL", "--seq-len", "65"], "sequence length 65; allowed: 1..64"),
    (["MODEL", "--batch-size", "0"], "batch size 0; allowed: an integer >= 1"),
    (["MODEL", "--repeats", "0"], "repeats 0; allowed: an integer >= 1"),
    (["MODEL", "--all-levels"], "--all-levels needs a search run directory"),
    (["MODEL", "--out", "USERFILE"], "is not a fastticket latency report; refusing to overwrite it"),
    (["MODEL", "--device", "cuda:7"], "cuda:7"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    model_dir = write_model_dir(tmp_path)
    (tmp_path / "user.json").write_text("{}")
    argv = [model_dir if a == "MODEL" else str(tmp_path / "user.json") if a == "USERFILE" else a for a in argv]
    assert main(["latency", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not os.path.exists(f"{model_dir}-latency.json") and (tmp_path / "user.json").read_text() == "{}"


def test_onnxruntime_engine_without_onnx_is_one_line(tmp_path, capsys, monkeypatch):
    model_dir = write_model_dir(tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("onnx") else real(name, *a))
    assert main(["latency", model_dir, "--engine", "onnxruntime", "--device", "cpu"]) == 2
    assert "pip install 'fastticket[onnx]'" in capsys.readouterr().err
    assert not os.path.exists(f"{model_dir}-latency.json")


@pytest.mark.slow
def test_search_latency_run_levels_exports_and_engines(tmp_path, capsys):
    """A tiny real search with --latency, then `latency RUN --all-levels`, the super ticket under compile and
    onnxruntime, and `export --format hf-compact / onnx` of the run."""
    from transformers import AutoModelForSequenceClassification

    from tests.robustness.tiny import write_checkpoint, write_task

    model, data = write_checkpoint(tmp_path / "model"), write_task(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["search", "--model", model, "--task", "local", "--data-dir", data, "--levels", "0.3,0.6", "--epochs",
                 "1", "--batch-size", "4", "--max-length", "16", "--out", str(run), "--latency", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("kind "))
    assert header.endswith("measured FLOP-ideal")
    winning = [line for line in out.splitlines() if line.startswith("winning ")]
    assert len(winning) == 2 and all(line.endswith("x") and line.count("x") >= 2 for line in winning)
    report = json.loads((run / "latency.json").read_text())
    assert [(r["kind"], r["level"]) for r in report["results"]] == [("winning", 0.3), ("winning", 0.6)]

    small = ["--batch-size", "2", "--seq-len", "8", "--repeats", "2", "--warmup", "1", "--device", "cpu"]
    assert main(["latency", str(run), "--all-levels", *small]) == 0
    out = capsys.readouterr().out
    assert out.count("winning 0.") == 2 and "measured" in out and "FLOP-ideal" in out
    for engine in ("compile", "onnxruntime"):
        if engine == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
            continue  # CI installs the onnx extra; asserted there by tests/models/test_onnx.py as well
        assert main(["latency", str(run), "--engine", engine, *small]) == 0
        assert "super ticket" in capsys.readouterr().out
        assert json.loads((run / "latency.json").read_text())["engine"] == engine

    assert main(["export", str(run), "--format", "hf-compact", "--out", str(tmp_path / "hfc")]) == 0
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hfc", trust_remote_code=True).eval()
    compact = ft.load_pruned(run / "super_ticket_model")
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, compact(ids).logits, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in loaded.parameters()) < sum(p.numel() for p in latency.full_model_of(compact.config).parameters())
    if importlib.util.find_spec("onnxscript") is not None:
        assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
        assert (tmp_path / "onnx" / "model.onnx").stat().st_size > 0
