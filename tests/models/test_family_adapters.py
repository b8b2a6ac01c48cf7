"""The family adapters: registry, config round trips, the pooler rule, and what each family refuses."""

from __future__ import annotations

import json
import pathlib
import re
import warnings

import pytest
import torch

import fastticket as ft
from fastticket.models import EncoderConfig
from fastticket.models.families import FAMILIES, MODEL_TYPES, REGISTRY, get_family

from .conftest import FAMILIES as HF_FAMILIES
from .conftest import make_hf_model

transformers = pytest.importorskip("transformers")
ALL = list(HF_FAMILIES)


def test_registry_covers_every_family_and_model_type():
    assert FAMILIES == ("bert", "roberta", "electra", "distilbert", "deberta-v2", "modernbert")
    assert {"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "deberta-v2", "modernbert"} == set(MODEL_TYPES)
    for name, family in REGISTRY.items():
        assert family.name == name and set(family.architectures) == set(family.model_types)
    with pytest.raises(ValueError, match=r"family 'gpt2' is not supported; allowed: \('bert'"):
        get_family("gpt2")


def test_no_family_name_branches_outside_the_adapters():
    """The family object is the one place that knows a family: no `family ==` / `family in` tests elsewhere."""
    root = pathlib.Path(ft.__file__).parent
    pattern = re.compile(r"family\s*(==|!=|in\s*\(|not in\s*\()|\.family\s*(==|!=)")
    offenders = [f"{path.relative_to(root)}:{i}" for path in root.rglob("*.py") if "families" not in path.parts
                 for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


@pytest.mark.parametrize("family", ALL)
def test_hf_config_round_trips_through_the_family(family):
    hf = make_hf_model(family, num_labels=3)
    config = EncoderConfig.from_hf(hf.config)
    adapter = config.family_adapter
    again = EncoderConfig.from_hf({**hf.config.to_dict(), **adapter.hf_config(config)})
    mine = lambda c: {k: v for k, v in c.to_dict().items() if k != "hf_config"}  # noqa: E731
    assert mine(again) == mine(config)


@pytest.mark.parametrize("family, max_length", [("bert", 64), ("roberta", 64), ("deberta-v3", 64), ("modernbert", 64)])
def test_max_length_is_the_familys(family, max_length):
    ours = ft.load_model(make_hf_model(family))
    assert ours.config.max_length == max_length
    with pytest.raises(ValueError, match=f"{max_length + 1}.*{max_length}"):
        ours(torch.randint(3, 90, (1, max_length + 1)))


# ---- the pooler rule: pre-trained when the checkpoint has it (BERT, DeBERTa, ModernBERT), else task layer ----

@pytest.mark.parametrize("family, pooler", [("deberta-v3", "pooler.dense"), ("modernbert", "head.dense")])
def test_a_checkpoints_pooler_is_pretrained_and_kept(family, pooler):
    hf = make_hf_model(family, num_labels=2)
    with pytest.warns(UserWarning, match="kept the pre-trained pooler"):
        ours = ft.load_model(hf, num_labels=3, seed=1)
    assert ours.config.pooler_is_pretrained and ours.head.out.weight.shape[0] == 3
    torch.testing.assert_close(ours.head.dense.weight, hf.state_dict()[f"{pooler}.weight"], atol=0, rtol=0)
    before = {k: v.clone() for k, v in ours.head.state_dict().items()}
    ours.reset_head(5, keep_pooler=True)
    after = ours.head.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("out."))
    assert not torch.equal(before["out.weight"], after["out.weight"])


@pytest.mark.parametrize("family", ["deberta-v3", "modernbert"])
def test_a_bare_encoder_has_no_pretrained_pooler(family):
    base = make_hf_model(family, base=True)
    with pytest.warns(UserWarning, match="initialized a new task head from seed 0$"):
        ours = ft.load_model(base, num_labels=2)
    assert not ours.config.pooler_is_pretrained
    dense = ours.head.dense.weight.clone()
    ours.reset_head(7, keep_pooler=True)  # nothing pre-trained to keep: the pooler is re-initialized too
    assert not torch.equal(dense, ours.head.dense.weight)
    if ours.head.norm is not None:
        assert torch.equal(ours.head.norm.weight, torch.ones_like(ours.head.norm.weight))


def test_sharing_asks_the_family_about_the_pooler():
    """The shared pooler lives in the encoder (MT-DNN): kept when pre-trained (BERT), re-drawn otherwise (RoBERTa)."""
    from fastticket.tickets.sharing import build_shared

    class TinyTask:
        num_labels, train, dev = 2, [0], [0]

    ours = ft.load_model(make_hf_model("roberta", num_labels=2))
    ticket = ft.Ticket(torch.ones(2, 4, dtype=torch.bool), torch.ones(2, dtype=torch.bool))
    shared = build_shared(ours, {"a": TinyTask()}, {"a": ticket})
    assert not torch.equal(shared.encoder.head.dense.weight, ours.head.dense.weight)  # RoBERTa: task layer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bert = ft.load_model(make_hf_model("bert", base=True), num_labels=2)
    shared = build_shared(bert, {"a": TinyTask()}, {"a": ticket})
    torch.testing.assert_close(shared.encoder.head.dense.weight, bert.head.dense.weight, atol=0, rtol=0)  # pre-trained


# ---- what the families refuse ----

def _config(family, **edits):
    c = make_hf_model(family).config.to_dict()
    c.update(edits)
    return c


@pytest.mark.parametrize("family, edits, message", [
    ("deberta-v3", dict(conv_kernel_size=3), r"conv_kernel_size=3 is not supported; allowed: 0"),
    ("deberta-v3", dict(pos_att_type=["c2p", "p2p"]), r"pos_att_type=\['c2p', 'p2p'\] is not supported; allowed: distinct"),
    ("deberta-v3", dict(relative_attention=False, position_biased_input=False), r"relative_attention=False.*no positions"),
    ("deberta-v3", dict(attention_head_size=4), r"attention_head_size=4 is not supported; allowed: .* 8"),
    ("deberta-v3", dict(pooler_hidden_size=16), r"pooler_hidden_size=16 is not supported; allowed: hidden_size=32"),
    ("deberta-v3", dict(norm_rel_ebd="layer_norm|batch_norm"), r"norm_rel_ebd='layer_norm\|batch_norm'"),
    ("deberta-v3", dict(hidden_act="mish"), r"activation 'mish' is not supported"),
    ("modernbert", dict(layer_types=["full_attention", "chunked_attention", "full_attention"]),
     r"layer_types entry='chunked_attention' is not supported; allowed: one of \('full_attention', 'sliding_attention'\)"),
    ("modernbert", dict(layer_types=["full_attention"]), r"layer_types=.*one entry per layer \(3\)"),
    ("modernbert", dict(rope_parameters={"full_attention": {"rope_type": "yarn", "rope_theta": 10.0}}),
     r"rope_parameters\['full_attention'\]\['rope_type'\]='yarn' is not supported; allowed: 'default'"),
    ("modernbert", dict(classifier_pooling="max"), r"classifier_pooling='max' is not supported; allowed: one of \('cls', 'mean'\)"),
    ("modernbert", dict(head_dim=16), r"head_dim=16 is not supported"),
    ("bert", dict(position_embedding_type="relative_key"), r"position_embedding_type='relative_key'.*'absolute'"),
])
def test_unsupported_options_are_refused_by_name(family, edits, message):
    config = _config(family, **edits)
    with pytest.raises(ValueError, match=message):
        ft.TicketModel(EncoderConfig.from_hf(config))


@pytest.mark.parametrize("edits, message", [
    (dict(family="modernbert", pre_norm=False), r"pre_norm \(family 'modernbert'\)=False is not supported; allowed: True"),
    (dict(family="bert", glu=True), r"glu \(family 'bert'\)=True"),
    (dict(family="bert", rope_theta=10.0), r"rope_theta/layer_windows \(family 'bert'\)"),
    (dict(family="roberta", relative_attention=True), r"relative_attention \(family 'roberta'\)=True"),
    (dict(family="modernbert", type_vocab_size=2), r"type_vocab_size \(family 'modernbert'\)=2.*0"),
    (dict(family="deberta-v2", pooling="max"), r"pooling"),
    (dict(family="modernbert", type_vocab_size=0, layer_windows=[1, None]), r"layer_windows=\[1, None\]; allowed: one entry per layer \(3\)"),
])
def test_hand_built_configs_a_family_cannot_express_are_refused(edits, message):
    kw = dict(vocab_size=50, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=37, **edits)
    with pytest.raises(ValueError, match=message):
        EncoderConfig(**kw)


def test_hand_built_new_family_configs_get_the_familys_defaults():
    modern = EncoderConfig("modernbert", 50, 32, 2, 4, 37, type_vocab_size=0)
    assert (modern.pre_norm, modern.glu, modern.attention_bias, modern.absolute_positions) == (True, True, False, False)
    assert (modern.rope_theta, modern.local_rope_theta, modern.layer_windows) == (160_000.0, 10_000.0, None)
    deberta = EncoderConfig("deberta-v2", 50, 32, 2, 4, 37, relative_attention=True, max_relative_positions=8,
                            pos_att_type=["c2p", "p2c"], absolute_positions=False)
    model = ft.TicketModel(deberta).eval()
    assert model(torch.randint(1, 50, (2, 11))).logits.shape == (2, 2)


def test_checkpoint_weights_disagreeing_with_a_fused_config(tmp_path):
    hf = make_hf_model("modernbert")
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 40
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"mlp\.Wi\.weight has shape \(74, 32\); the config implies \(80, 32\)"):
        ft.load_model(tmp_path)


def test_a_transformers_without_the_family_is_named(tmp_path, monkeypatch):
    """transformers 4.46 (CI's compat venv) has no ModernBERT: load_model says so instead of failing inside it."""
    from fastticket.models import loading

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "modernbert", "hidden_size": 32}))
    if hasattr(transformers, "ModernBertConfig"):
        monkeypatch.setattr(loading, "transformers_has", lambda name: name != "ModernBertConfig")
    with pytest.raises(ValueError, match=r"'modernbert' needs transformers\.ModernBertConfig, which the installed "
                                         r"transformers .* does not have"):
        ft.load_model(tmp_path)


def test_a_new_task_head_keeps_the_whole_pretrained_pooler():
    """ModernBERT's pooler has a norm too: ft.adapt's fresh head keeps dense and norm, replaces out."""
    from fastticket.tickets.adapt import with_task_head

    ours = ft.load_model(make_hf_model("modernbert-mean-bias", num_labels=2))
    net = with_task_head(ours, num_labels=5, seed=3)
    for name in ("dense.weight", "dense.bias", "norm.weight", "norm.bias"):
        torch.testing.assert_close(net.head.state_dict()[name], ours.head.state_dict()[name], atol=0, rtol=0)
    assert net.head.out.weight.shape == (5, 32) and net.head.pooling == "mean"
