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
WITH_TOKEN_TYPES = ("bert", "electra", "electra-project")


def make_hf_model(family: str, num_labels: int = 3, base: bool = False, seed: int = 0, **overrides):
    """A tiny random HF model in eval mode, fp32, eager attention; every parameter (biases and LayerNorms too) is
    perturbed so that no weight keeps a trivial init value."""
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
