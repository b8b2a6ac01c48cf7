"""Tiny random Hugging Face models of every supported family, and padded batches for them."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

VOCAB, MAX_POS = 99, 64
COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)

# name -> (config class, sequence-classification class, base class, config kwargs)
FAMILIES = {
    "bert": ("BertConfig", "BertForSequenceClassification", "BertModel", dict(COMMON, max_position_embeddings=MAX_POS)),
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification", "RobertaModel",
                dict(COMMON, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, max_position_embeddings=MAX_POS + 2)),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaForSequenceClassification", "XLMRobertaModel",
                    dict(COMMON, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, max_position_embeddings=MAX_POS + 2)),
    "electra": ("ElectraConfig", "ElectraForSequenceClassification", "ElectraModel",
                dict(COMMON, embedding_size=32, max_position_embeddings=MAX_POS)),
    # ELECTRA-small style: narrower embeddings, then `embeddings_project`
    "electra-project": ("ElectraConfig", "ElectraForSequenceClassification", "ElectraModel",
                        dict(COMMON, embedding_size=16, max_position_embeddings=MAX_POS)),
    "distilbert": ("DistilBertConfig", "DistilBertForSequenceClassification", "DistilBertModel",
                   dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=MAX_POS)),
    "distilbert-sinusoidal": ("DistilBertConfig", "DistilBertForSequenceClassification", "DistilBertModel",
                              dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                   max_position_embeddings=MAX_POS, sinusoidal_pos_embds=True)),
}
# DeBERTa-v3 style: relative attention only, log buckets (8 < the longest test row: the log range is used),
# shared attention keys, LayerNorm-ed relative embeddings
DEBERTA_V3 = dict(COMMON, max_position_embeddings=MAX_POS, relative_attention=True, position_buckets=8,
                  pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
                  type_vocab_size=0)
MODERNBERT = dict(COMMON, num_hidden_layers=3, max_position_embeddings=MAX_POS, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2, cls_token_id=1, sep_token_id=2, global_attn_every_n_layers=2, local_attention=4,
                  global_rope_theta=1000.0, local_rope_theta=100.0)
FAMILIES.update({
    "deberta-v3": ("DebertaV2Config", "DebertaV2ForSequenceClassification", "DebertaV2Model", DEBERTA_V3),
    # DeBERTa-v2 style: absolute positions too, unbucketed relative positions clamped at 5, own pos_key_proj /
    # pos_query_proj, token types, a narrower embedding projected, a tanh pooler with its own dropout
    "deberta-v2": ("DebertaV2Config", "DebertaV2ForSequenceClassification", "DebertaV2Model",
                   dict(COMMON, max_position_embeddings=MAX_POS, relative_attention=True, max_relative_positions=5,
                        pos_att_type=["c2p", "p2c"], position_biased_input=True, type_vocab_size=2, embedding_size=16,
                        pooler_dropout=0.1, pooler_hidden_act="tanh")),
    # c2p only (scale sqrt(2d)), own pos_key_proj, buckets
    "deberta-c2p": ("DebertaV2Config", "DebertaV2ForSequenceClassification", "DebertaV2Model",
                    dict(DEBERTA_V3, pos_att_type=["c2p"], share_att_key=False, position_buckets=6, norm_rel_ebd="none")),
    # layers 0 and 2 global, layer 1 local with window 2 (rows are longer)
    "modernbert": ("ModernBertConfig", "ModernBertForSequenceClassification", "ModernBertModel", MODERNBERT),
    "modernbert-mean-bias": ("ModernBertConfig", "ModernBertForSequenceClassification", "ModernBertModel",
                             dict(MODERNBERT, classifier_pooling="mean", attention_bias=True, mlp_bias=True, norm_bias=True,
                                  classifier_bias=True, classifier_activation="silu", hidden_activation="gelu_pytorch_tanh",
                                  layer_types=["sliding_attention", "full_attention", "sliding_attention"])),
})
WITH_TOKEN_TYPES = ("bert", "electra", "electra-project")


def requires(family: str) -> None:
    """Skips when the installed transformers lacks the family (ModernBERT arrived in transformers 4.48)."""
    config_cls = FAMILIES[family][0]
    if not hasattr(transformers, config_cls):
        pytest.skip(f"transformers {transformers.__version__} has no {config_cls} ({family})")


def make_hf_model(family: str, num_labels: int = 3, base: bool = False, seed: int = 0, **overrides):
    """A tiny random HF model in eval mode, fp32, eager attention; every parameter (biases and LayerNorms too) is
    perturbed so that no weight keeps a trivial init value."""
    requires(family)
    config_cls, task_cls, base_cls, kwargs = FAMILIES[family]
    config = getattr(transformers, config_cls)(**{**kwargs, "num_labels": num_labels, **overrides})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, base_cls if base else task_cls)(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.float().eval()


def make_batch(model, lengths=(7, 5, 2, 6), seed=0, num_labels=None):
    """Right-padded inputs (different lengths per row), BERT-style pair token types where the family has them,
    and labels (class ids, or floats for regression). Returns a dict of HF forward kwargs."""
    config = model.config
    pad = config.pad_token_id
    gen = torch.Generator().manual_seed(seed)
    batch, seq = len(lengths), max(lengths)
    ids = torch.randint(3, VOCAB, (batch, seq), generator=gen)
    mask = (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids[mask == 0] = pad
    out = {"input_ids": ids, "attention_mask": mask}
    if getattr(config, "type_vocab_size", 0) and config.type_vocab_size > 1:
        types = torch.zeros_like(ids)
        for b, n in enumerate(lengths):
            types[b, n // 2 : n] = 1  # second segment of a pair; padding keeps type 0
        out["token_type_ids"] = types
    num_labels = config.num_labels if num_labels is None else num_labels
    if num_labels == 1:
        out["labels"] = torch.randn(batch, generator=gen)
    else:
        out["labels"] = torch.randint(0, num_labels, (batch,), generator=gen)
    return out


@pytest.fixture
def hf_model():
    return make_hf_model


@pytest.fixture
def hf_batch():
    return make_batch
