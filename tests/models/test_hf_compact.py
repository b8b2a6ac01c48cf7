"""format="hf-compact": every family round-trips through plain transformers (trust_remote_code) at the compact
shapes with fastticket's logits; the modeling file needs torch + transformers only; bad input; atomicity."""

from __future__ import annotations

import ast
import json
import os

import pytest
import torch

import fastticket as ft
from fastticket.models import TicketModel, export, exporting, hf_compact
from fastticket.tickets import Ticket
from fastticket.tickets.rewind import rewind
from tests.models.conftest import FAMILIES

transformers = pytest.importorskip("transformers")


def pruned_ticket(layers, heads=4):
    """Layer 0 drops head 1 and its FFN; layer 1 keeps no head (only W_O's bias remains) but its FFN."""
    kept = torch.ones(layers, heads, dtype=torch.bool)
    kept[0, 1] = False
    kept[1] = False
    ffn = torch.ones(layers, dtype=torch.bool)
    ffn[0] = False
    return Ticket(kept, ffn)


def inputs_of(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


def load_remote(path):
    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        path, trust_remote_code=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_round_trip_through_plain_transformers(family, hf_model, hf_batch, tmp_path):
    hf = hf_model(family)
    model = ft.load_model(hf)
    ticket = pruned_ticket(model.num_layers)
    compact = rewind(model, ticket)
    batch = hf_batch(hf)
    with torch.no_grad():
        expected = model(**inputs_of(batch), head_mask=ticket.head_mask(), ffn_mask=ticket.ffn_mask()).logits

    export(compact, tmp_path / "out", format="hf-compact")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "fastticket_encoder" and config["source_family"] == model.config.family
    assert config["kept_heads"][:2] == [[0, 2, 3], []]
    assert config["ffn_widths"][:2] == [0, model.config.intermediate_size]
    loaded = load_remote(tmp_path / "out")
    assert type(loaded).__name__ == "FastTicketForSequenceClassification"
    with torch.no_grad():
        out = loaded(**batch)
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(out.loss, compact(**batch).loss, atol=1e-5, rtol=0)
    assert n_params(loaded) == n_params(compact) < n_params(model)
    with pytest.raises(ValueError, match="is an hf-compact export: load it with transformers"):
        ft.load_pruned(tmp_path / "out")


def neuron_pruned(model: TicketModel, keep: list[list[int]]) -> TicketModel:
    """`model` rewound (ft.rewind) to a ticket keeping every head and only the neurons `keep[l]` of each FFN."""
    neurons = torch.zeros(model.num_layers, model.config.intermediate_size, dtype=torch.bool)
    for l, rows in enumerate(keep):
        neurons[l, rows] = True
    ticket = ft.Ticket(torch.ones(model.num_layers, model.num_heads, dtype=torch.bool),
                       torch.ones(model.num_layers, dtype=torch.bool), neurons=neurons)
    pruned = ft.rewind(model, ticket).eval()
    assert [pruned.config.layer_neurons(l) for l in range(model.num_layers)] == keep
    return pruned


@pytest.mark.parametrize("family", ["bert", "modernbert-mean-bias"])
def test_per_layer_ffn_widths(family, hf_model, hf_batch, tmp_path):
    hf = hf_model(family)
    model = ft.load_model(hf)
    keep = [list(range(0, 37, 2)), [3, 5, 36]] + [list(range(37))] * (model.num_layers - 2)
    pruned = neuron_pruned(model, keep)
    batch = inputs_of(hf_batch(hf))
    export(pruned, tmp_path / "out", format="hf-compact")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["ffn_widths"][:2] == [19, 3]
    with torch.no_grad():
        torch.testing.assert_close(load_remote(tmp_path / "out")(**batch).logits, pruned(**batch).logits, atol=1e-5, rtol=0)


def test_modeling_file_imports_torch_and_transformers_only():
    tree = ast.parse(open(hf_compact.TEMPLATE, encoding="utf-8").read())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports would need more files"
            roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "math", "torch", "transformers"}, roots


def write_tokenizer(directory) -> str:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(94)]
    os.makedirs(directory)
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(os.path.join(directory, "vocab.txt"))
    tokenizer.save_pretrained(directory)
    return os.fspath(directory)


def test_pipeline_loads_the_export_with_its_tokenizer(hf_model, tmp_path):
    model = ft.load_model(hf_model("bert", id2label={0: "neg", 1: "neu", 2: "pos"}))
    compact = rewind(model, pruned_ticket(model.num_layers))
    compact.name_or_path = write_tokenizer(tmp_path / "tok")
    export(compact, tmp_path / "out", format="hf-compact")
    assert (tmp_path / "out" / "vocab.txt").is_file() and (tmp_path / "out" / "tokenizer_config.json").is_file()
    classify = transformers.pipeline("text-classification", model=os.fspath(tmp_path / "out"), trust_remote_code=True,
                                     top_k=None)
    scores = {r["label"]: r["score"] for r in classify("w3 w17 w42")[0]}
    encoded = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")("w3 w17 w42", return_tensors="pt")
    with torch.no_grad():
        probs = compact(**encoded).logits.softmax(-1)[0]
    torch.testing.assert_close(torch.tensor([scores["neg"], scores["neu"], scores["pos"]]), probs, atol=1e-5, rtol=0)


def test_a_ticket_that_does_not_match_the_model_is_refused_before_writing(hf_model, tmp_path):
    compact = rewind(ft.load_model(hf_model("bert")), pruned_ticket(2))
    export(compact, tmp_path / "out", format="hf-compact")
    before = {p: (tmp_path / "out" / p).read_bytes() for p in os.listdir(tmp_path / "out")}
    compact.config.kept_heads = [[0, 1, 2, 3], []]  # weights hold 3 heads in layer 0
    with pytest.raises(ValueError, match=r"layers\.0\.attention\.q\.weight.*\(24, 32\).*\(32, 32\).*does not match"):
        export(compact, tmp_path / "out", format="hf-compact")
    with pytest.raises(ValueError, match="does not match"):
        export(compact, tmp_path / "new", format="hf-compact")
    assert not (tmp_path / "new").exists()
    assert {p: (tmp_path / "out" / p).read_bytes() for p in os.listdir(tmp_path / "out")} == before


def test_a_failed_export_leaves_the_previous_one(hf_model, tmp_path, monkeypatch):
    compact = rewind(ft.load_model(hf_model("bert")), pruned_ticket(2))
    export(compact, tmp_path / "out", format="hf-compact")
    before = {p: (tmp_path / "out" / p).read_bytes() for p in os.listdir(tmp_path / "out")}

    def fail(directory):
        raise OSError("disk full")

    monkeypatch.setattr(hf_compact, "copy_template", fail)
    with pytest.raises(OSError, match="disk full"):
        export(compact, tmp_path / "out", format="hf-compact")
    assert {p: (tmp_path / "out" / p).read_bytes() for p in os.listdir(tmp_path / "out")} == before
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert exporting.FORMATS == ("compact", "hf", "hf-compact", "onnx")
