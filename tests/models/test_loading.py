"""ft.load_model: new task heads on bare encoders, and clear errors on everything it cannot load."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import fastticket as ft

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

BARE = ["bert", "roberta", "electra-project", "distilbert"]


def head_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}


def encoder_state(model):
    return {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)


@pytest.mark.parametrize("family", BARE)
def test_bare_encoder_gets_a_seeded_head(family, hf_model, tmp_path):
    base = hf_model(family, base=True)
    base.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="seed 5"):
        first = ft.load_model(tmp_path, num_labels=3, seed=5)
    with pytest.warns(UserWarning, match="seed 5"):
        again = ft.load_model(tmp_path, num_labels=3, seed=5)
    with pytest.warns(UserWarning, match="seed 6"):
        other = ft.load_model(tmp_path, num_labels=3, seed=6)
    assert first.config.num_labels == 3 and first.head.out.weight.shape == (3, 32)
    assert_same_state(head_state(first), head_state(again))
    assert not torch.equal(first.head.out.weight, other.head.out.weight)
    assert_same_state(encoder_state(first), encoder_state(other))  # only the head depends on the seed
    # the new head follows HF's init: normal(0, initializer_range), zero bias
    assert torch.count_nonzero(first.head.out.bias) == 0
    assert 0.005 < first.head.out.weight.std().item() < 0.05


def test_bert_keeps_its_pooler_and_matches_hf_from_pretrained(hf_model, hf_batch, tmp_path):
    base = hf_model("bert", base=True)
    base.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="seed 0"):
        ours = ft.load_model(tmp_path, num_labels=3)
    torch.testing.assert_close(ours.head.dense.weight, base.pooler.dense.weight, atol=0, rtol=0)
    torch.testing.assert_close(ours.head.dense.bias, base.pooler.dense.bias, atol=0, rtol=0)
    # HF's task model from the same directory, with our (new) classifier copied in: same logits
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=3, attn_implementation="eager").eval()
    with torch.no_grad():
        hf.classifier.weight.copy_(ours.head.out.weight)
        hf.classifier.bias.copy_(ours.head.out.bias)
    batch = hf_batch(hf)
    with torch.no_grad():
        expected = hf(**batch)
        got = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], labels=batch["labels"])
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)


def test_num_labels_other_than_the_checkpoints_reinitializes_only_the_classifier(hf_model):
    hf = hf_model("bert", num_labels=3)
    with pytest.warns(UserWarning, match="2 labels"):
        ours = ft.load_model(hf, num_labels=2, seed=1)
    assert ours.head.out.weight.shape == (2, 32)
    torch.testing.assert_close(ours.head.dense.weight, hf.bert.pooler.dense.weight, atol=0, rtol=0)
    hf = hf_model("roberta", num_labels=3)
    with pytest.warns(UserWarning):
        ours = ft.load_model(hf, num_labels=1)
    assert ours.config.is_regression and not torch.equal(ours.head.dense.weight, hf.classifier.dense.weight)


@pytest.mark.parametrize("num_labels", [None, 3])
def test_checkpoint_head_is_kept_without_warning(num_labels, hf_model):
    hf = hf_model("electra", num_labels=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = ft.load_model(hf, num_labels=num_labels, seed=123)
    assert ours.config.num_labels == 3
    torch.testing.assert_close(ours.head.out.weight, hf.classifier.out_proj.weight, atol=0, rtol=0)


def test_tf_style_layernorm_names_load(hf_model, hf_batch, tmp_path):
    hf = hf_model("bert")
    hf.save_pretrained(tmp_path)
    state = safetensors_torch.load_file(tmp_path / "model.safetensors")
    renamed = {}
    for name, tensor in state.items():
        if "LayerNorm" in name:
            name = name.replace(".weight", ".gamma").replace(".bias", ".beta")
        renamed[name] = tensor
    safetensors_torch.save_file(renamed, tmp_path / "model.safetensors")
    batch = hf_batch(hf)
    with torch.no_grad():
        torch.testing.assert_close(
            ft.load_model(tmp_path)(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits,
            hf(**{k: v for k, v in batch.items() if k != "labels"}).logits, atol=1e-5, rtol=0)


def test_roberta_length_limit_accounts_for_the_padding_offset(hf_model):
    hf = hf_model("roberta")  # max_position_embeddings 66, pad 1: at most 64 tokens
    ours = ft.load_model(hf)
    ids = torch.randint(3, 90, (1, 64))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(input_ids=ids).logits, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="65.*64"):
        ours(torch.randint(3, 90, (1, 65)))


# ---- what load_model refuses ----

def test_unknown_model_type_in_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4}))
    with pytest.raises(ValueError, match=r"'gpt2'.*allowed:.*bert.*distilbert.*electra.*roberta"):
        ft.load_model(tmp_path)


def test_unknown_model_type_in_a_model_object():
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=50, n_positions=16))
    with pytest.raises(ValueError, match=r"'gpt2'.*allowed:.*bert"):
        ft.load_model(gpt2)


def test_relative_position_embeddings_are_refused(tmp_path, hf_model):
    hf = hf_model("bert")
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["position_embedding_type"] = "relative_key"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="relative_key.*absolute"):
        ft.load_model(tmp_path)


@pytest.mark.parametrize("src", ["/nonexistent/dir", "./no/such/dir", "no/such/nested/path"])
def test_nonexistent_path(src):
    with pytest.raises(ValueError, match="not a directory"):
        ft.load_model(src)


def test_unknown_hub_name_offline_or_online():
    with pytest.raises(ValueError, match="fastticket-no-such-org/no-such-model"):
        ft.load_model("fastticket-no-such-org/no-such-model")


def test_a_file_is_not_a_checkpoint(tmp_path):
    file = tmp_path / "config.json"
    file.write_text("{}")
    with pytest.raises(ValueError, match="not a directory"):
        ft.load_model(file)


@pytest.mark.parametrize("src", [42, None, {"model_type": "bert"}, torch.nn.Linear(2, 2), [1, 2]],
                         ids=["int", "None", "dict", "module", "list"])
def test_non_model_objects(src):
    with pytest.raises(ValueError, match="not supported|not a transformers model"):
        ft.load_model(src)


def test_directory_without_config_or_weights(tmp_path, hf_model):
    with pytest.raises(ValueError, match="config.json"):
        ft.load_model(tmp_path)
    hf_model("bert").config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no weights"):
        ft.load_model(tmp_path)


def test_checkpoint_missing_encoder_weights(tmp_path, hf_model):
    hf = hf_model("bert")
    hf.save_pretrained(tmp_path)
    state = safetensors_torch.load_file(tmp_path / "model.safetensors")
    del state["bert.encoder.layer.1.attention.self.query.weight"]
    safetensors_torch.save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing encoder weights.*encoder\.layer\.1\.attention\.self\.query\.weight"):
        ft.load_model(tmp_path)

    safetensors_torch.save_file({"classifier.weight": torch.zeros(3, 32)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="word_embeddings"):
        ft.load_model(tmp_path)


def test_checkpoint_weights_disagreeing_with_config(tmp_path, hf_model):
    hf = hf_model("bert")
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 40
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"intermediate\.dense\.weight has shape \(37, 32\).*\(40, 32\)"):
        ft.load_model(tmp_path)
