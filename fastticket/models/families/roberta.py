"""RoBERTa (and XLM-R, CamemBERT): BERT's blocks; positions counted from padding_idx + 1 over non-padding
tokens; the head (dropout, dense, tanh, dropout, out_proj) is all task layer, nothing pre-trained."""

from __future__ import annotations

import torch

from .base import WeightNames, linear_names
from .bert import BertFamily


class RobertaFamily(BertFamily):
    name = "roberta"
    model_types = ("roberta", "xlm-roberta", "camembert")
    architectures = {"roberta": "RobertaForSequenceClassification", "xlm-roberta": "XLMRobertaForSequenceClassification",
                     "camembert": "CamembertForSequenceClassification"}
    base_prefix = "roberta"
    has_pretrained_pooler = False
    transformers_class = "RobertaConfig"

    def defaults(self, config) -> dict:
        # the classification head's first dropout is its task dropout, applied before the dense layer too
        return {**super().defaults(config), "pooler_dropout": "task"}

    def position_ids(self, input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
        real = input_ids.ne(pad_token_id).long()
        return torch.cumsum(real, dim=1) * real + pad_token_id

    def max_length(self, config) -> int:
        return config.max_position_embeddings - config.pad_token_id - 1

    def pooler_weights(self, config, prefix: str) -> WeightNames:
        return linear_names("head.dense", "classifier.dense")

    def classifier_weights(self, config, prefix: str) -> WeightNames:
        return linear_names("head.out", "classifier.out_proj")


ROBERTA = RobertaFamily()
