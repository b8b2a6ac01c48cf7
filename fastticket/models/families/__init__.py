"""The registry of model families, keyed by our family name and by Hugging Face model_type."""

from __future__ import annotations

from .base import Family, WeightNames
from .bert import BERT
from .deberta_v2 import DEBERTA_V2
from .distilbert import DISTILBERT
from .electra import ELECTRA
from .modernbert import MODERNBERT
from .roberta import ROBERTA

REGISTRY: dict[str, Family] = {f.name: f for f in (BERT, ROBERTA, ELECTRA, DISTILBERT, DEBERTA_V2, MODERNBERT)}
FAMILIES = tuple(REGISTRY)
# Hugging Face model_type -> our family name (MiniLM checkpoints are BERT; XLM-R and CamemBERT are RoBERTa)
MODEL_TYPES = {model_type: f.name for f in REGISTRY.values() for model_type in f.model_types}


def get_family(name: str) -> Family:
    """The family object of our family name (EncoderConfig.family)."""
    if name not in REGISTRY:
        raise ValueError(f"family {name!r} is not supported; allowed: {FAMILIES}")
    return REGISTRY[name]


def family_of_model_type(model_type) -> Family:
    """The family object that reads HF configs of `model_type`."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} is not supported; allowed: {sorted(MODEL_TYPES)}")
    return REGISTRY[MODEL_TYPES[model_type]]


__all__ = ["Family", "WeightNames", "REGISTRY", "FAMILIES", "MODEL_TYPES", "get_family", "family_of_model_type"]
