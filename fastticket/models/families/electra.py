"""ELECTRA (the discriminator): BERT's blocks; embeddings may be narrower than the hidden size and are then
projected (`embeddings_project`, after LayerNorm and dropout); a gelu classification head, all task layer."""

from __future__ import annotations

from .base import WeightNames, linear_names
from .roberta import RobertaFamily
from .bert import BertFamily


class ElectraFamily(BertFamily):
    name = "electra"
    model_types = ("electra",)
    architectures = {"electra": "ElectraForSequenceClassification"}
    base_prefix = "electra"
    has_pretrained_pooler = False
    transformers_class = "ElectraConfig"

    def defaults(self, config) -> dict:
        return {**super().defaults(config), "pooler_act": "gelu", "pooler_dropout": "task"}

    def config_kwargs(self, c: dict) -> dict:
        return {**super().config_kwargs(c), "embedding_size": c.get("embedding_size")}

    def hf_config(self, config) -> dict:
        return {**super().hf_config(config), "embedding_size": config.embedding_size or config.hidden_size}

    def encoder_weights(self, config) -> WeightNames:
        names = super().encoder_weights(config)
        if config.embedding_size and config.embedding_size != config.hidden_size:
            names += linear_names("embeddings.project", "embeddings_project")
        return names

    pooler_weights = RobertaFamily.pooler_weights
    classifier_weights = RobertaFamily.classifier_weights


ELECTRA = ElectraFamily()
