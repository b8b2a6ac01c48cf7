"""Loading by hub name resolves through the local Hugging Face cache (offline here)."""

import pytest
import torch

import fastticket as ft


def test_hub_name_loads_from_the_local_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    hf = BertForSequenceClassification(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                  intermediate_size=20, num_labels=2)).eval()
    revision = "0" * 40
    repo = tmp_path / "models--someone--tiny-bert"
    hf.save_pretrained(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    model = ft.load_model("someone/tiny-bert")
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, hf(input_ids=ids).logits, atol=1e-6)
    assert model.name_or_path == "someone/tiny-bert"
    with pytest.raises(ValueError, match="someone/other"):
        ft.load_model("someone/other")
