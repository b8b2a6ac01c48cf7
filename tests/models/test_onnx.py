"""format="onnx": onnxruntime's logits equal fastticket's on compact tickets (dynamic batch and sequence axes);
without onnx installed one clear error before anything is written."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

import fastticket as ft
from fastticket.models import export, onnx_export
from fastticket.tickets.rewind import rewind
from tests.models.test_hf_compact import inputs_of, pruned_ticket

transformers = pytest.importorskip("transformers")


# bert: absolute positions and token types; deberta-v3: relative c2p/p2c with buckets; modernbert: rotary,
# a local window, pre-norm GeGLU
@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "deberta-v3", "modernbert"])
def test_onnxruntime_matches_fastticket(family, hf_model, hf_batch, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    hf = hf_model(family)
    compact = rewind(ft.load_model(hf), pruned_ticket(hf.config.num_hidden_layers))
    export(compact, tmp_path / "onnx", format="onnx")
    meta = json.loads((tmp_path / "onnx" / "fastticket_onnx.json").read_text())
    with_types = family == "bert"
    assert meta["inputs"] == ["input_ids", "attention_mask"] + (["token_type_ids"] if with_types else [])
    session, names = onnx_export.onnx_session(os.fspath(tmp_path / "onnx"))
    assert [i.name for i in session.get_inputs()] == names
    for lengths, seed in (((7, 5, 2, 6), 0), ((11,), 1), ((1, 3), 2)):  # other batch sizes and lengths than exported
        batch = inputs_of(hf_batch(hf, lengths=lengths, seed=seed))
        with torch.no_grad():
            expected = compact(**batch).logits
        torch.testing.assert_close(onnx_export.onnx_logits(session, names, batch), expected, atol=1e-4, rtol=0)


def test_onnx_without_onnx_is_one_error_before_writing(hf_model, tmp_path, monkeypatch):
    compact = rewind(ft.load_model(hf_model("bert")), pruned_ticket(2))
    export(compact, tmp_path / "out", format="compact")
    before = sorted(os.listdir(tmp_path / "out"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("onnx") else real(name, *a))
    for target in ("out", "new"):
        with pytest.raises(ValueError, match=r"^format 'onnx' needs onnx, onnxscript \(not installed\).*fastticket\[onnx\]"):
            export(compact, tmp_path / target, format="onnx")
    assert not (tmp_path / "new").exists() and sorted(os.listdir(tmp_path / "out")) == before


def test_onnx_logits_without_an_attention_mask_treats_every_token_as_real(hf_model, tmp_path):
    """A batch of input_ids alone was fed an all-zero attention mask (every key masked): logits unlike the
    model's, with no error; transformers and fastticket take a missing mask as all ones."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    compact = rewind(ft.load_model(hf_model("bert")), pruned_ticket(2))
    export(compact, tmp_path / "onnx", format="onnx")
    session, names = onnx_export.onnx_session(os.fspath(tmp_path / "onnx"))
    ids = torch.arange(2, 12).reshape(2, 5)
    with torch.no_grad():
        expected = compact(input_ids=ids).logits
    torch.testing.assert_close(onnx_export.onnx_logits(session, names, {"input_ids": ids}), expected, atol=1e-4, rtol=0)
